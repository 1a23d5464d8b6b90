"""Applying a widening plan (widen.py) to a store: PostgreSQL in one transaction whose lock
waits are bounded and retried; MariaDB one ALTER at a time, online when the server can.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import DatabaseError, OperationalError, transaction
from django.db.migrations.recorder import MigrationRecorder

from .errors import Refused, SmtmigrateError
from .locations import Store
from .schema import LAYOUT_08, SUMATRA_APP, Inspection
from .widen import (
    ColumnChange,
    WideningPlan,
    apply_migration,
    build_migration,
    mariadb_statements,
    plan_widening,
)

# A widening waits at most this long for its lock before it gives way to running jobs,
# and is retried a few times: a queued ACCESS EXCLUSIVE lock would block every new
# `smt run` behind it.
LOCK_TIMEOUT = 5.0  # seconds
LOCK_ATTEMPTS = 5
LOCK_NOT_AVAILABLE = "55P03"  # SQLSTATE of a lock_timeout


# -- applying ------------------------------------------------------------------------------


@dataclass
class ApplyResult:
    plan: WideningPlan
    before: dict[tuple[str, str], str]  # (table, column) → type before
    after: dict[tuple[str, str], str]
    applied: bool  # False: already widened, nothing done
    attempts: int = 0
    migration_name: str = ""
    # MariaDB: each ALTER as run (table, algorithm and lock it ran with, seconds), its
    # DDL committing by itself, not in one transaction
    alters: list[AlterTiming] | None = None


@dataclass
class AlterTiming:
    table: str
    how: str  # "ALGORITHM=INPLACE, LOCK=NONE", or the server's choice when it refused that
    seconds: float
    rows: int


def check_widen_target(store: Store) -> None:
    """Only PostgreSQL and MariaDB stores are widened: a usage error (exit 2) for any
    other, whatever its file holds."""
    if store.engine.is_file:
        raise SmtmigrateError(
            f"{store.display}: widening applies to PostgreSQL stores and MariaDB stores "
            "(SQLite never enforces column lengths)"
        )


def check_widenable(target: Inspection) -> None:
    check_widen_target(target.store)
    if target.layout != LAYOUT_08:
        raise Refused(
            f"{target.store.display}: a {target.layout} store; copy it into a fresh store "
            "with smtmigrate copy first"
        )


def apply_widening(
    plan: WideningPlan,
    target: Inspection,
    *,
    lock_timeout: float = LOCK_TIMEOUT,
    lock_attempts: int = LOCK_ATTEMPTS,
) -> ApplyResult:
    """Widen the target's columns in one transaction and record the migration.

    Each attempt waits at most `lock_timeout` seconds for its locks, then rolls back and
    lets the jobs queued behind it through before trying again.
    """
    check_widenable(target)
    store = target.store
    before = column_types(store, plan.columns)
    if not plan.changes:
        return ApplyResult(plan, before, before, applied=False)
    if not store.engine.can_rollback_ddl:  # MariaDB: one online ALTER at a time
        return _apply_mariadb(plan, store, before, lock_timeout, lock_attempts)
    migration = build_migration(plan, from_current=True)
    connection = store.connection
    attempts = 0
    while True:
        attempts += 1
        try:
            with transaction.atomic(using=store.alias):
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL lock_timeout = %s", [f"{lock_timeout * 1000:.0f}ms"])
                with connection.schema_editor(atomic=False) as editor:
                    apply_migration(migration, editor)
                recorder = MigrationRecorder(connection)
                if (SUMATRA_APP, migration.name) not in recorder.applied_migrations():
                    recorder.record_applied(SUMATRA_APP, migration.name)
            break
        except OperationalError as exc:
            if getattr(exc.__cause__, "pgcode", None) != LOCK_NOT_AVAILABLE:
                raise store.read_error(exc) from exc
            if attempts >= lock_attempts:
                raise Refused(
                    f"{store.display}: could not lock the tables within {lock_timeout:g} s in "
                    f"{attempts} attempts (long-running transactions?); nothing was changed"
                ) from exc
            time.sleep(min(attempts, 5))  # let the queued jobs through, then try again
        except DatabaseError as exc:
            raise SmtmigrateError(
                f"widening {store.display} failed, nothing was changed: {store.describe_error(exc)}"
            ) from exc
    after = column_types(store, plan.columns)
    return ApplyResult(plan, before, after, True, attempts, migration.name)


def column_types(store: Store, columns: Iterable[ColumnChange]) -> dict[tuple[str, str], str]:
    """The real types of the planned columns, as the engine spells them."""
    connection = store.connection
    tables = sorted({c.table for c in columns})
    with connection.cursor() as cursor:
        types = store.engine.column_types(cursor, tables)
    return {(c.table, c.column): types.get((c.table, c.column), "?") for c in columns}


# -- MariaDB -------------------------------------------------------------------------------

# What the server says when it cannot run an ALTER with the algorithm or lock asked for.
MARIADB_NOT_ONLINE = {1845, 1846}  # ER_ALTER_OPERATION_NOT_SUPPORTED(_REASON)
MARIADB_LOCK_WAIT = 1205  # ER_LOCK_WAIT_TIMEOUT: lock_wait_timeout ran out (metadata lock)
ONLINE = "ALGORITHM=INPLACE, LOCK=NONE"
COPY = "ALGORITHM=COPY, LOCK=SHARED"  # the table rebuilt: reads go on, writes wait
SERVER_CHOICE = "the server's choice"


def _apply_mariadb(
    plan: WideningPlan,
    store: Store,
    before: dict[tuple[str, str], str],
    lock_timeout: float,
    lock_attempts: int,
) -> ApplyResult:
    """MariaDB's DDL is not transactional and `MODIFY` to another type rebuilds the
    table: each ALTER is tried online (`ALGORITHM=INPLACE, LOCK=NONE`), else run as the
    server allows (a copy of the table, writes waiting for it), and timed. Every statement
    only widens, so a run stopped half-way leaves a store that works and is wider, and the
    next run finishes it; the migration is recorded last."""
    connection = store.connection
    statements, migration = mariadb_statements(plan, connection)
    alters: list[AlterTiming] = []
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET SESSION lock_wait_timeout = %s", [max(1, round(lock_timeout))])
            for statement in statements:
                match = re.match(r"ALTER TABLE `([^`]+)`", statement)
                table = match[1] if match else None
                rows = _table_rows(cursor, table) if table else 0
                try:
                    how, seconds = _run_alter(cursor, statement, table is not None, lock_attempts)
                except OperationalError as exc:
                    if not exc.args or exc.args[0] != MARIADB_LOCK_WAIT:
                        raise
                    raise Refused(
                        f"{store.display}: could not lock {table} within {lock_timeout:g} s "
                        f"in {lock_attempts} attempts; the columns widened so far stay "
                        "widened (run again to finish)"
                    ) from exc
                if table:
                    alters.append(AlterTiming(table, how, seconds, rows))
            recorder = MigrationRecorder(connection)
            if (SUMATRA_APP, migration.name) not in recorder.applied_migrations():
                recorder.record_applied(SUMATRA_APP, migration.name)
    except DatabaseError as exc:
        raise SmtmigrateError(
            f"widening {store.display} failed: {store.describe_error(exc)}; the columns "
            "widened so far stay widened (each ALTER commits by itself): run again to finish"
        ) from exc
    after = column_types(store, plan.columns)
    return ApplyResult(plan, before, after, True, len(statements), migration.name, alters=alters)


def _table_rows(cursor, table: str) -> int:
    """The exact count (information_schema's is InnoDB's estimate), for the timings."""
    cursor.execute(f"SELECT count(*) FROM `{table.replace('`', '``')}`")
    return int(cursor.fetchone()[0])


def _run_alter(cursor, statement: str, online: bool, lock_attempts: int) -> tuple[str, float]:
    """Run one ALTER online if the server can, else as it can; a metadata lock that does
    not come within lock_wait_timeout is waited for again (`lock_attempts` in all)."""
    tries = [(f"{statement}, {ONLINE}", ONLINE), (f"{statement}, {COPY}", COPY)] if online else []
    tries.append((statement, SERVER_CHOICE))
    for text, how in tries:
        for attempt in range(1, lock_attempts + 1):
            started = time.monotonic()
            try:
                cursor.execute(text)
            except DatabaseError as exc:
                code = exc.args[0] if exc.args else None
                if code in MARIADB_NOT_ONLINE and how != SERVER_CHOICE:
                    break  # not possible so: the next, more locking way
                if code == MARIADB_LOCK_WAIT and attempt < lock_attempts:
                    time.sleep(min(attempt, 5))  # let the queued jobs through
                    continue
                raise
            return how, time.monotonic() - started
    raise AssertionError("unreachable: the last try returns or raises")


def build_widened_schema(store: Store, *, widen: bool = True) -> Inspection:
    """Sumatra's schema by its own migrations, then the default widening (policy `text`,
    as the store's engine can carry it): how createdb, drop-recreate and merge build a new
    store (copy widens by its audit instead). Returns the store as built."""
    from django.core.management import call_command

    from .schema import inspect_store

    call_command("migrate", database=store.alias, interactive=False, verbosity=0)
    built = inspect_store(store)
    if widen:
        plan = store.engine.widening_plan(plan_widening("text", target=built))
        apply_widening(plan, built)
        built = inspect_store(store)
    return built

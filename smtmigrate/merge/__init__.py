"""`merge`: many Sumatra stores folded into one, exactly, again and again.

The target is PostgreSQL (locked against writers while it is written) or SQLite (the same
statements in its dialect, see sql.dialect). One transaction on the target (sources are
only read, each from one snapshot):
  1. an empty target database gets Sumatra's schema as `copy` builds it (Sumatra's own
     migrations and the `text` widening);
  2. every source (SQLite, or PostgreSQL in its snapshot) is streamed by COPY into TEMP
     staging tables (load.py);
  3. records' identity decided (plan.py: fingerprints in SQL, Sumatra for the rest) while
     writers go on;
  4. the target's Sumatra tables are locked against writers (SHARE ROW EXCLUSIVE: readers
     go on, `smt run`s wait to save) until commit; if a writer touched a record of a
     colliding key meanwhile, step 3 is done again, locked; with `refuse`, any conflict
     rolls everything back;
  5. projects merged by id (the target's row, else the first source's; differing names
     or descriptions are reported); shared rows, records, links, data keys and tags
     inserted set-based (load.py), ids from the target's sequences, then the sequences
     checked past max(id);
  6. every inserted record compared with its source (check.py: through Sumatra, or by
     fingerprint); record counts reconciled; then commit (or roll back: `dry_run`, a
     difference).
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import psycopg2
from django.core.management import call_command
from django.db import DatabaseError, transaction

from ..engines.sqlite_damage import COPY_READABLE, REFUSE
from ..errors import NotASumatraStore, Refused, SmtmigrateError
from ..identities import DuplicatesAppeared, build_in_transaction, identity_tables
from ..locations import Store, same_store, sqlite_settings
from ..schema import LAYOUT_08, inspect_store
from ..snapshot import source_snapshot
from ..widen_apply import build_widened_schema
from . import load, sql
from .check import MergeCheck, check_fingerprints, check_inserted
from .plan import POLICIES, TARGET, Conflict, Identity, classify

VERIFY = ("full", "rows", "none")
__all__ = ["POLICIES", "Conflict", "MergeCheck", "MergeResult", "merge_stores"]


@dataclass
class MergeResult:
    sources: list[dict[str, Any]]
    target: str
    policy: str
    dry_run: bool
    built_schema: bool = False
    records_before: int = 0
    records_after: int = 0
    incoming: int = 0  # records in all sources
    inserted: int = 0
    equal: int = 0  # taken once: already there, or in an earlier source
    compared: int = 0  # records read through Sumatra to decide identity
    conflicts: list[Conflict] = field(default_factory=list)
    projects: list[dict[str, Any]] = field(default_factory=list)  # differing project rows
    rows: dict[str, int] = field(default_factory=dict)  # new rows per table
    check: MergeCheck | None = None
    committed: bool = False
    lock_wait: float = 0.0  # seconds the merge waited for the target's lock
    locked: float = 0.0  # seconds the target's writers were held (lock to commit)
    identity_again: bool = False  # a writer touched a colliding key: decided again, locked
    # Data keys equal in content but output of different records, left as separate rows
    # (groups, rows) in the target after the merge: see docs/commands/merge.md, "Data keys".
    datakey_twins: tuple[int, int] = (0, 0)
    identities: list[str] = field(default_factory=list)  # built on a new target (identities.py)
    seconds: dict[str, float] = field(default_factory=dict)
    snapshots: list[Any] = field(default_factory=list, repr=False)  # the sources'

    @property
    def refused(self) -> bool:
        return any(c.action == "refused" for c in self.conflicts)

    @property
    def exit_code(self) -> int:
        return 1 if self.refused or (self.check is not None and not self.check.ok) else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "sources": self.sources,
            "target": self.target,
            "policy": self.policy,
            "dry_run": self.dry_run,
            "committed": self.committed,
            "refused": self.refused,
            "built_schema": self.built_schema,
            "records": {
                "incoming": self.incoming,
                "inserted": self.inserted,
                "equal": self.equal,
                "skipped": sum(c.action == "skipped" for c in self.conflicts),
                "renamed": sum(c.action == "renamed" for c in self.conflicts),
                "compared_for_identity": self.compared,
                "target_before": self.records_before,
                "target_after": self.records_after,
            },
            "conflicts": [c.to_dict() for c in self.conflicts],
            "datakey_twins": {"groups": self.datakey_twins[0], "rows": self.datakey_twins[1]},
            "identities": self.identities,
            "projects": self.projects,
            "new_rows": self.rows,
            "check": None if self.check is None else self.check.to_dict(),
            "lock": {
                "waited": round(self.lock_wait, 3),
                "held": round(self.locked, 3),
                "identity_again": self.identity_again,
            },
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


def merge_stores(
    sources: list[Store],
    target: Store,
    *,
    policy: str = "refuse",
    dry_run: bool = False,
    verify: str = "full",
    copy_readable: bool = False,
) -> MergeResult:
    """Merge `sources` into `target` (see the module docstring); returns what was done.
    `verify`: full (inserted records read back through Sumatra), rows (their stored
    content compared in SQL by fingerprint), none.
    `copy_readable`: a damaged SQLite source is read as far as it can be (else refused).
    Conflicts under `refuse` and failed checks roll back and are in the result (exit 1);
    errors raise SmtmigrateError (exit 2)."""
    if verify not in VERIFY:
        raise SmtmigrateError(f"unknown verification {verify!r} (choose {', '.join(VERIFY)})")
    if policy not in POLICIES:
        raise SmtmigrateError(f"unknown conflict policy {policy!r} (choose {', '.join(POLICIES)})")
    if target.engine.is_file:
        target = _writable(target)
    for n, source in enumerate(sources):
        if same_store(source, target):
            where = " (the same database of the same server)" * (not target.engine.is_file)
            raise SmtmigrateError(f"{source.display} is the TARGET itself{where}")
        if any(same_store(source, other) for other in sources[:n]):
            raise SmtmigrateError(f"{source.display} is named twice")
    started = time.perf_counter()
    with ExitStack() as stack:
        damaged = COPY_READABLE if copy_readable else REFUSE
        snapshots = [stack.enter_context(source_snapshot(s, damaged=damaged)) for s in sources]
        inspections = [inspect_store(s.store) for s in snapshots]
        for inspection in inspections:
            if not inspection.engine.merges:
                raise SmtmigrateError(
                    f"{inspection.store.display}: merge reads SQLite and PostgreSQL stores "
                    "and project directories"
                )
        result = MergeResult(
            [
                {
                    "store": s.live.display,
                    "layout": i.layout,
                    "records": s.total,
                    "damage": s.damage and s.damage.to_dict(),
                }
                for s, i in zip(snapshots, inspections, strict=True)
            ],
            target.display,
            policy,
            dry_run,
            incoming=sum(s.total for s in snapshots),
            seconds={"snapshots": time.perf_counter() - started},
            snapshots=snapshots,
        )
        created = target.engine.is_file and target.path is not None and not target.path.exists()
        try:
            with sql.dialect(target.engine):
                _merge(inspections, target, result, verify=verify)
        except (DatabaseError, psycopg2.Error) as exc:  # COPY runs on psycopg2's cursor
            detail = target.describe_error(exc)
            if "value too long" in detail:
                detail += (
                    " (the target's columns are narrower than the incoming values: widen "
                    f"them first, e.g. smtmigrate widen --apply {target.display})"
                )
            raise SmtmigrateError(
                f"merge into {target.display} failed, nothing was written: {detail}"
            ) from exc
        finally:
            if created and not result.committed:
                target.close()
                assert target.path is not None
                target.path.unlink(missing_ok=True)  # a new SQLite target: all or nothing
    result.seconds["total"] = time.perf_counter() - started
    return result


def _writable(target: Store) -> Store:
    """An SQLite target opened for writing (an existing one resolves read-only)."""
    assert target.path is not None
    return Store(
        "sqlite",
        target.display,
        sqlite_settings(target.path, read_only=False),
        path=target.path,
        project_dir=target.project_dir,
        project_name=target.project_name,
    )


def _target_state(target: Store) -> bool:
    """Whether the target database is empty (to be built); refuse anything but a Sumatra
    0.8 store otherwise."""
    connection = target.connection
    with connection.cursor() as cursor:
        if not connection.introspection.table_names(cursor):
            return True
    try:
        layout = inspect_store(target).layout
    except NotASumatraStore as exc:
        raise Refused(f"{target.display} is neither empty nor a Sumatra store") from exc
    if layout != LAYOUT_08:
        raise Refused(f"{target.display} holds a {layout} store; merge writes into 0.8 stores")
    return False


def _build_identities(inspection) -> list[str]:
    """The identities of a target the merge built, each in a savepoint: equal data keys of
    different records (`datakey_twins`, kept by the merge) leave DataKey without one."""
    built = []
    with inspection.store.connection.cursor() as cursor:
        # PostgreSQL builds no index on a table with pending (deferred) FK checks: run
        # them now rather than at commit
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    for name in identity_tables(inspection):
        try:
            with transaction.atomic(using=inspection.store.alias):
                built += build_in_transaction(inspection, [name]).tables
        except DuplicatesAppeared:
            continue
    return built


def _merge(sources, target: Store, result: MergeResult, *, verify: str) -> None:
    connection = target.connection
    engine = target.engine
    q = engine.quote_name
    build = _target_state(target)
    loaded = load.Loaded()
    seconds = result.seconds
    engine.register_merge_functions(connection.connection)
    # Django's SQLite schema editor cannot run inside a transaction; a new target file is
    # removed again if the merge does not commit (merge_stores)
    if sql.sqlite() and build:
        step = time.perf_counter()
        call_command("migrate", database=target.alias, interactive=False, verbosity=0)
        result.built_schema, build = True, False
        seconds["schema"] = time.perf_counter() - step
    with transaction.atomic(using=target.alias), connection.cursor() as cursor:
        if build:
            step = time.perf_counter()
            build_widened_schema(target)
            result.built_schema = True
            seconds["schema"] = time.perf_counter() - step
        inspection = inspect_store(target)
        step = time.perf_counter()
        load.create_stages(cursor, q)
        for src, source in enumerate(sources):
            load.stage_source(cursor, q, src, source, inspection, loaded)
        if not sql.sqlite():
            cursor.execute(sql.analyze(q, [sql.stage(t) for t in loaded.staged]))
        seconds["stage"] = time.perf_counter() - step
        cursor.execute(sql.content_type_id(), ["django_store", "record"])
        row = cursor.fetchone()
        record_type = row[0] if row else None
        origins = {TARGET: inspection, **dict(enumerate(sources))}
        names = {TARGET: target.display, **{i: s.store.display for i, s in enumerate(sources)}}

        def identify() -> Identity:
            return classify(
                cursor,
                q,
                origins,
                names,
                result.policy,
                lambda: load.fingerprint_collisions(cursor, q, record_type),
            )

        # Identity first, while writers go on; under the lock it is redone only if a
        # writer touched a record whose key an incoming record shares (rare).
        step = time.perf_counter()
        cursor.execute(sql.collision_state(q, load.RECORD))
        state = cursor.fetchone()
        identity = identify()
        seconds["identity"] = time.perf_counter() - step
        step = time.perf_counter()
        if not result.dry_run and not sql.sqlite():  # SQLite: one writer at a time anyway
            cursor.execute(sql.lock(q, sorted(load.sumatra_tables())))
        locked_at = time.perf_counter()
        result.lock_wait = locked_at - step
        cursor.execute(sql.collision_state(q, load.RECORD))
        if cursor.fetchone() != state:
            for statement in sql.drop_identity_tables():
                cursor.execute(statement)
            identity = identify()
            result.identity_again = True
        cursor.execute(sql.count(q, load.RECORD))
        result.records_before = cursor.fetchone()[0]
        cursor.execute(sql.insert_projects(q, load.PROJECT))
        result.rows[load.PROJECT] = cursor.rowcount
        cursor.execute(sql.differing_projects(q, load.PROJECT))
        result.projects = [
            {
                "project": pid,
                "source": sources[src].store.display,
                "source_name": name,
                "source_description": description,
                "kept_name": kept_name,
                "kept_description": kept_description,
            }
            for src, pid, name, description, kept_name, kept_description in cursor.fetchall()
        ]
        result.conflicts, result.equal = identity.conflicts, identity.equal
        result.compared = identity.compared
        if result.refused:
            transaction.set_rollback(True, using=target.alias)
            return
        cursor.execute(sql.defer_constraints())
        cursor.execute(sql.create_decisions())
        if identity.decisions:
            if sql.sqlite():
                cursor.executemany(sql.insert_decisions(), identity.decisions)
            else:
                from psycopg2.extras import execute_values

                execute_values(
                    cursor.cursor, sql.insert_decisions(), identity.decisions, page_size=5000
                )
        cursor.execute(
            sql.map_records(q, load.RECORD, "db_id"), sql.map_records_params(load.RECORD, "db_id")
        )
        load.apply(cursor, q, record_type, loaded)
        load.reset_sequences(cursor, q)
        seconds.update(loaded.seconds)
        result.rows.update({k: v for k, v in loaded.rows.items() if v})
        result.inserted = loaded.rows.get(load.RECORD, 0)
        cursor.execute(sql.count(q, load.RECORD))
        result.records_after = cursor.fetchone()[0]
        columns = [c.name for c in load.identity_columns(load.DATAKEY)]
        cursor.execute(
            sql.datakey_twins(q, load.DATAKEY, [c for c in columns if c != "output_from_record_id"])
        )
        groups, rows = cursor.fetchone()
        result.datakey_twins = (groups, rows)
        if result.built_schema and not sql.sqlite():  # a new server store: its identities
            result.identities = _build_identities(inspection)
        step = time.perf_counter()
        if verify == "full":
            check = check_inserted(cursor, q, sources, inspection)
        elif verify == "rows":
            check = check_fingerprints(
                cursor,
                q,
                lambda: load.fingerprint_collisions(cursor, q, record_type, inserted=True),
            )
        else:
            check = MergeCheck(method="none")
        check.counts = {
            "target_before": result.records_before,
            "inserted": result.inserted,
            "target_after": result.records_after,
            "missing": result.records_before + result.inserted - result.records_after,
        }
        result.check = check
        seconds["check"] = time.perf_counter() - step
        if result.dry_run or not check.ok:
            transaction.set_rollback(True, using=target.alias)
            return
    result.committed = True
    result.locked = time.perf_counter() - locked_at

"""Copies into MariaDB: built in a scratch database, loaded with `LOAD DATA LOCAL` through
a named pipe, verified there, then moved into the target by one atomic `RENAME TABLE`
(see mariadb.py's docstring for why)."""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from django.db import DatabaseError
from django.db.migrations.recorder import MigrationRecorder

from .. import interrupts
from ..canonical import Checksum, TableLayout, UnitHasher
from ..errors import SmtmigrateError
from ..tables import SUMATRA_APP
from ..threads import on_a_thread, on_own_connection, threads_read
from .base import CopyTarget, TableResult
from .mariadb_findings import COLLATION
from .mariadb_keys import restore_foreign_keys, restore_indexes, set_aside
from .mariadb_server import PARTIAL_PREFIX, server_store

if TYPE_CHECKING:
    from ..copy import CopyPlan
    from ..layout import Inspection
    from ..locations import Store
    from ..widen import WideningPlan
    from .mariadb import MariadbEngine

T = TypeVar("T")
R = TypeVar("R")

FETCH_ROWS = 2_000
LOAD_THREADS = 2  # tables loaded at once from a SQLite snapshot (one per core)
HASH_BESIDE_INDEXES = 100_000  # rows from which a table is hashed while it is indexed
ALTER_HEAD_START = 0.1  # seconds: the ALTER takes its brief exclusive lock meanwhile


@contextmanager
def copy_target(
    engine: MariadbEngine, plan: CopyPlan, events, phase
) -> Iterator[MariadbCopyTarget]:
    """Build in a scratch database, verify there, then RENAME every table into the
    target at once; on any error the scratch database is dropped."""
    final = plan.target
    name = final.settings["NAME"]
    q = engine.quote_name
    with server_store(final) as server:
        connection = server.connection
        try:
            with connection.cursor() as cursor:
                drop_stale_partials(cursor, engine)
                scratch = f"{PARTIAL_PREFIX}{_host_id()}_{os.getpid()}"
                cursor.execute(f"DROP DATABASE IF EXISTS {q(scratch)}")
                cursor.execute(
                    f"CREATE DATABASE {q(scratch)} CHARACTER SET utf8mb4 COLLATE {COLLATION}"
                )
        except DatabaseError as exc:
            raise _failed(final, exc) from exc
        created = False
        settings = {**final.settings, "NAME": scratch}
        try:
            with final.sibling(final.display, settings, private=True) as store:
                yield MariadbCopyTarget(engine, plan, store, phase)
                interrupts.check()
                tables = sorted(store.connection.introspection.table_names())
            with phase("rename"), connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM information_schema.schemata WHERE schema_name = %s",
                    [name],
                )
                if not cursor.fetchone()[0]:
                    with interrupts.deferred():  # made, and known to be made
                        cursor.execute(
                            f"CREATE DATABASE {q(name)} CHARACTER SET utf8mb4 COLLATE {COLLATION}"
                        )
                        created = True
                engine.check_new_target(final)
                events.phase("commit")
                interrupts.check()
                moves = ", ".join(f"{q(scratch)}.{q(t)} TO {q(name)}.{q(t)}" for t in tables)
                cursor.execute(f"RENAME TABLE {moves}")  # atomic: all tables or none
                created = False
        except DatabaseError as exc:
            raise _failed(final, exc) from exc
        finally:
            try:
                with connection.cursor() as cursor:
                    cursor.execute(f"DROP DATABASE IF EXISTS {q(scratch)}")
                    if created:  # made for this copy, still empty
                        cursor.execute(f"DROP DATABASE IF EXISTS {q(name)}")
            except DatabaseError:
                pass  # the server went away: the next copy drops the scratch database


def _failed(store: Store, exc: BaseException) -> SmtmigrateError:
    return SmtmigrateError(
        f"copy into {store.display} failed, nothing was written: {store.describe_error(exc)}"
    )


def _host_id() -> str:
    """Which machine made a scratch database: only its own can tell whether the process
    that made it is gone."""
    return hashlib.md5(socket.gethostname().encode()).hexdigest()[:8]


def drop_stale_partials(cursor, engine: MariadbEngine) -> list[str]:
    """Drop the scratch databases of copies from this host whose process is gone (killed);
    their names."""
    from .sqlite_load import alive

    prefix = f"{PARTIAL_PREFIX}{_host_id()}_"
    cursor.execute(
        "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE %s",
        [prefix.replace("_", "\\_") + "%"],
    )
    dropped = []
    for (name,) in cursor.fetchall():
        pid = name[len(prefix) :]
        if pid.isdigit() and not alive(int(pid)):
            cursor.execute(f"DROP DATABASE IF EXISTS {engine.quote_name(name)}")
            dropped.append(name)
    return dropped


class MariadbCopyTarget(CopyTarget):
    checksums_while_loading = True

    def __init__(self, engine: MariadbEngine, plan: CopyPlan, store: Store, phase) -> None:
        self.engine, self.plan, self.store, self.phase = engine, plan, store, phase
        self.stored_checksums: dict[str, Checksum] = {}

    @contextmanager
    def schema_store(self) -> Iterator[Store]:
        yield self.store

    @contextmanager
    def reading(
        self, prepared: Inspection, inspect: Callable[[Store], Inspection]
    ) -> Iterator[Inspection]:
        yield inspect(self.store)

    widens_itself = True

    def widen(self, widening: WideningPlan, prepared: Inspection) -> None:
        """Django's schema editor runs the AlterFields (each ALTER commits by itself: the
        scratch database is what makes it all or nothing) and the migration is recorded."""
        plan = self.engine.widening_plan(widening)
        if not plan.changes:
            return
        migration = plan.migration(from_current=True)
        connection = self.store.connection
        with connection.schema_editor(atomic=False) as editor:
            migration.apply(migration.initial_state.clone(), editor)
        MigrationRecorder(connection).record_applied(SUMATRA_APP, migration.name)

    def load(self, plan: CopyPlan, remaps, events) -> tuple[list[TableResult], dict]:
        """LOAD DATA of every table, foreign keys checked by the audit (orphans refused)
        rather than row by row, a table's secondary indexes built once its rows are in
        (mariadb_keys.py), its foreign keys added back at the end. The
        scratch database is no transaction, so tables load on connections of their own:
        from a SQLite snapshot two at a time, biggest first (a PostgreSQL snapshot is one
        connection's transaction: one at a time)."""
        cancel = threading.Event()  # set when one table fails: the others stop writing
        q = self.engine.quote_name
        biggest_first = sorted(plan.layouts, key=lambda t: -plan.row_counts[t.name])
        with tempfile.TemporaryDirectory(prefix="smtmigrate-load-") as directory:

            def load_one(layout: TableLayout) -> tuple[TableResult, Checksum]:
                pipe = Path(directory) / layout.name
                os.mkfifo(pipe, 0o600)
                with self.store.connection.cursor() as cursor:
                    cursor.execute("SET SESSION foreign_key_checks = 0")
                    try:
                        loaded = self._load_table(
                            plan, layout, cursor, pipe, remaps.get(layout.name, {}), events, cancel
                        )
                        # indexed now, while the other thread still loads, and hashed as
                        # stored (verify.py compares): nobody else writes the scratch
                        # database, the rename moves the table as it is
                        self.stored_checksums[layout.name] = self._index_and_hash(
                            cursor, layout, set_aside_keys[layout.name], loaded[0].rows
                        )
                        return loaded
                    except BaseException:
                        cancel.set()
                        raise
                    finally:
                        cursor.execute("SET SESSION foreign_key_checks = 1")

            with self.phase("load"):
                with self.store.connection.cursor() as cursor:
                    set_aside_keys = set_aside(cursor, q, [t.name for t in biggest_first])
                if threads_read(plan.source):
                    load = on_own_connection(load_one, self.store)
                    done = _on_threads(load, biggest_first, cancel)
                    by_name = {t.name: r for t, r in zip(biggest_first, done, strict=True)}
                    loaded = [by_name[layout.name] for layout in plan.layouts]
                else:
                    loaded = [load_one(layout) for layout in plan.layouts]
                with self.store.connection.cursor() as cursor:
                    restore_foreign_keys(cursor, q, list(set_aside_keys.values()))

        results = [result for result, _ in loaded]
        return results, {result.table: checksum for result, checksum in loaded}

    def _index_and_hash(self, cursor, layout: TableLayout, keys, rows: int) -> Checksum:
        """Build the table's set-aside indexes and hash its rows as verify.py reads them.
        A big table's hash runs beside its index build, on a connection of its own, once
        the ALTER has its head start: each reads the whole table (2.3 M rows: 6.2-7.4 s
        one after the other, 3.7-4.1 s together). A hash that started first would only
        hold the ALTER back until it ends (metadata locks), as if run one after the other."""
        stored = layout.in_store(layout.name)
        if not keys.indexes or rows < HASH_BESIDE_INDEXES:
            restore_indexes(cursor, self.engine.quote_name, keys)
            return self.engine.checksum(cursor, stored)

        def hash_rows(_: object) -> Checksum:
            time.sleep(ALTER_HEAD_START)
            with self.store.connection.cursor() as other:
                return self.engine.checksum(other, stored)

        hashed = on_a_thread(hash_rows, None, self.store, name="hash")
        restore_indexes(cursor, self.engine.quote_name, keys)
        return hashed.result()

    def _load_table(self, plan, layout, cursor, pipe: Path, remaps, events, cancel):

        started = time.perf_counter()
        events.table_start(layout.name, plan.row_counts[layout.name])
        reader = plan.source.engine  # SQLite or PostgreSQL (plan_copy)
        writer = _PipeWriter(
            pipe, lambda rows, n: events.table_progress(layout.name, rows, n), cancel
        )
        with reader.line_blocks(plan.source, layout, remaps, plan.skip(layout.name)) as blocks:
            writer.start(blocks)
            try:
                cursor.execute(self._load_statement(layout), [str(pipe)])
                loaded = cursor.rowcount
            finally:
                writer.stop()
            interrupts.check()  # a table cut short by a cancel is not a result
            if cancel.is_set():
                raise _Stopped(layout.name)
            warnings = cursor.connection.warning_count()
            if warnings:
                cursor.execute("SHOW WARNINGS LIMIT 1")
                level, code, message = cursor.fetchone()
                raise SmtmigrateError(
                    f"copy into {self.plan.target.display} failed, nothing was written: "
                    f"{layout.name}: MariaDB changed or skipped {warnings} value(s) on loading "
                    f"({level} {code}: {message})"
                )
        checksum = writer.hasher.result()
        if loaded != checksum.rows:
            raise SmtmigrateError(
                f"copy into {self.plan.target.display} failed, nothing was written: "
                f"{layout.name}: {checksum.rows} rows sent, {loaded} loaded"
            )
        result = TableResult(
            layout.name, checksum.rows, writer.bytes, time.perf_counter() - started
        )
        events.table_done(result)
        return result, checksum

    def _load_statement(self, layout: TableLayout) -> str:
        """LOAD DATA in COPY's text format (tab, `\\N`, backslash escapes: LOAD DATA's
        defaults); datetimes lose the canonical `+00` on the way in."""
        q = self.engine.quote_name
        targets, sets = [], []
        for i, name in enumerate(layout.column_names):
            column = layout.model.columns[name]
            if column.internal_type == "DateTimeField":
                targets.append(f"@v{i}")
                sets.append(f"{q(name)} = LEFT(@v{i}, 26)")
            else:
                targets.append(q(name))
        statement = (
            f"LOAD DATA LOCAL INFILE %s INTO TABLE {q(layout.name)} CHARACTER SET utf8mb4 "
            "FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' "
            f"({', '.join(targets)})"
        )
        if sets:
            statement += f" SET {', '.join(sets)}"
        return statement


class _Stopped(SmtmigrateError):
    """A table whose load was cut short because another one failed."""


def _on_threads(work: Callable[[T], R], items: list[T], cancel: threading.Event) -> list[R]:
    """`work(item)` for every item, LOAD_THREADS at a time; the results in item order. On
    the first failure, or ^C, `cancel` tells the running ones to stop, the others never
    start, and the error that stopped them is raised."""
    with ThreadPoolExecutor(LOAD_THREADS, thread_name_prefix="load") as pool:
        futures = [pool.submit(work, item) for item in items]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
        finally:
            if not all(future.done() for future in futures):  # one failed, or ^C
                cancel.set()
                for future in futures:
                    future.cancel()
        wait(futures)
        errors = [future.exception() for future in futures if not future.cancelled()]
        if any(errors):
            raise _first_cause(errors)
        return [future.result() for future in futures]


def _first_cause(errors: list[BaseException | None]) -> BaseException:
    """Of the tables' errors, the one that stopped the others (a Ctrl-C before all)."""
    found = [e for e in errors if e is not None]
    for error in found:
        if isinstance(error, KeyboardInterrupt):
            return error
    return next((e for e in found if not isinstance(e, _Stopped)), found[0])


class _PipeWriter:
    """Writes canonical lines into a named pipe that LOAD DATA LOCAL reads, in a thread,
    hashing them unit by unit on the way (as PostgreSQL's COPY stream does)."""

    def __init__(self, pipe: Path, progress, cancel: threading.Event) -> None:
        self.pipe, self.progress, self.cancel = pipe, progress, cancel
        self.hasher = UnitHasher()
        self.rows = self.bytes = 0
        self.error: BaseException | None = None
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, blocks) -> None:
        self._thread = threading.Thread(
            target=self._write, args=(blocks,), name="load-writer", daemon=True
        )
        self._thread.start()

    def _write(self, blocks) -> None:
        try:
            with open(self.pipe, "wb", buffering=1 << 20) as out:  # waits for the reader
                while not (self._stopped.is_set() or self.cancel.is_set()) and (
                    batch := blocks.fetch()
                ):
                    for block in batch:
                        out.write(block.loaded)
                        self.hasher.add(block)
                        self.rows += block.rows
                        self.bytes += len(block.loaded)
                    self.progress(self.rows, self.bytes)
        except BaseException as exc:  # raised in the main thread by stop()
            self.error = exc

    def stop(self) -> None:
        """Wait for the writer; if the reader never opened the pipe (LOAD DATA failed),
        open it ourselves so the writer's open returns and its writes fail."""
        self._stopped.set()
        assert self._thread is not None
        while self._thread.is_alive():
            try:
                fd = os.open(self.pipe, os.O_RDONLY | os.O_NONBLOCK)
                os.close(fd)
            except OSError:
                pass
            self._thread.join(0.05)
        if self.error is not None and not isinstance(self.error, BrokenPipeError):
            raise self.error

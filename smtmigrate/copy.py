"""plan → target schema → COPY streams → verification, all or nothing.

PostgreSQL targets get everything in one transaction: Sumatra's own migrations build the
schema (so `django_migrations` is what Sumatra expects), the widening runs, every table is
streamed through COPY, constraints and indexes are rebuilt, sequences reset and the result
verified — and only then committed. Any error, a failed verification or a killed process
leaves the database as it was.

SQLite targets are built in a hidden file beside the target and renamed into place once
verified, so the target path only ever holds a complete, checked store.
"""

from __future__ import annotations

import os
import queue
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timezone
from glob import escape as glob_escape
from pathlib import Path
from typing import Protocol
from urllib.parse import quote as url_quote

import psycopg2
from django.core.management import call_command
from django.core.management.color import no_style
from django.db import DatabaseError, transaction
from psycopg2 import sql

from . import interrupts
from .audit import AuditReport, Finding, audit
from .canonical import (
    Checksum,
    TableLayout,
    float_text,
    open_sqlite_bytes,
    row_hash,
    sqlite_line_sql,
    sqlite_quote,
    table_layout,
    when_clauses,
    where_not,
)
from .dedupe import DedupePlan, Group, merge_remaps, plan_dedupe
from .errors import NotASumatraStore, Refused, SmtmigrateError
from .generations import FOLDED_TABLES, attach_views
from .locations import Store, sqlite_settings
from .schema import LAYOUT_08, Inspection, inspect_store
from .snapshot import Snapshot
from .verify import Remaps, Verification, content_type_remap, verify_stores
from .widen import WideningPlan, apply_widening, plan_widening

COPY_CHUNK = 256 << 10  # bytes handed to COPY per read(): amortises calls, overlaps work
QUEUED_CHUNKS = 8
FETCH_ROWS = 2_000
CONTENT_TYPE_TABLE = "django_content_type"
# Tables Sumatra's migrations create that are not copied: the target has its own.
TARGET_OWNED = frozenset({"django_migrations", CONTENT_TYPE_TABLE, "sqlite_sequence"})


class CopyEvents(Protocol):
    """What the copy reports while it runs (render.py draws it)."""

    def phase(self, name: str) -> None: ...
    def table_start(self, table: str, rows: int) -> None: ...
    def table_progress(self, table: str, rows: int, nbytes: int) -> None: ...
    def table_done(self, result: TableResult) -> None: ...


class SilentEvents:
    def __enter__(self) -> SilentEvents:
        return self

    def __exit__(self, *exc_info) -> None:
        pass

    def phase(self, name: str) -> None:
        pass

    def table_start(self, table: str, rows: int) -> None:
        pass

    def table_progress(self, table: str, rows: int, nbytes: int) -> None:
        pass

    def table_done(self, result: TableResult) -> None:
        pass


@dataclass
class TableResult:
    table: str
    rows: int
    bytes: int
    seconds: float


@dataclass
class CopyPlan:
    source: Inspection
    target: Store
    target_inspection: Inspection | None  # an existing, empty Sumatra schema
    report: AuditReport  # the preflight audit, against the target's limits
    widening: WideningPlan | None
    layouts: list[TableLayout]
    row_counts: dict[str, int]  # by today's table name
    failing: list[Finding]  # what the target would reject even after the planned widening
    skipped: list[str]  # source tables that are not copied
    snapshot: Snapshot | None = None  # the state of the source that is read (see snapshot.py)
    # Sumatra 0.4-0.6: source table → where its rows go instead (generations.FOLDED_TABLES)
    folded: dict[str, str] = field(default_factory=dict)
    dedupe: DedupePlan | None = None  # with --dedupe: the duplicate rows merged on the way

    @property
    def build_schema(self) -> bool:
        return self.target_inspection is None

    @property
    def refused(self) -> bool:
        return bool(self.failing)

    def to_dict(self) -> dict:
        fields = ("table", "column", "kind", "limit", "max_length", "rows", "detail")
        return {
            "source": self.source.store.display,
            "layout": self.source.layout,
            "target": self.target.display,
            "failing": [{k: getattr(f, k) for k in fields} for f in self.failing],
            "plan": {
                "build_schema": self.build_schema,
                "tables": [
                    {
                        "source_table": layout.source_name,
                        "table": layout.name,
                        "rows": self.row_counts[layout.name],
                    }
                    for layout in self.layouts
                ],
                "widening": None
                if self.widening is None
                else [
                    {"table": c.table, "column": c.column, "from": c.current_type, "to": c.new_type}
                    for c in self.widening.changes
                ],
                "skipped": self.skipped,
                "folded": self.folded,
                "dedupe": None if self.dedupe is None else self.dedupe.to_dict(),
            },
            "snapshot": None if self.snapshot is None else self.snapshot.to_dict(),
        }

    def remaps(self, content_types: Remaps) -> Remaps:
        """Every id the copy rewrites: content types, and the dedupe's re-pointed keys."""
        if self.dedupe is None:
            return content_types
        return merge_remaps(content_types, self.dedupe.remaps)

    def skip(self, table: str) -> frozenset[int]:
        """Ids of the rows of `table` (today's name) that are not copied."""
        return self.dedupe.skip.get(table, frozenset()) if self.dedupe else frozenset()


@dataclass
class CopyResult:
    plan: CopyPlan
    tables: list[TableResult]
    verification: Verification
    phases: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def snapshot(self) -> Snapshot | None:
        return self.plan.snapshot

    def to_dict(self) -> dict:
        return {
            "snapshot": None if self.snapshot is None else self.snapshot.to_dict(),
            "tables": [
                {"table": t.table, "rows": t.rows, "bytes": t.bytes, "seconds": round(t.seconds, 3)}
                for t in self.tables
            ],
            "phases": {name: round(seconds, 3) for name, seconds in self.phases.items()},
            "seconds": round(self.seconds, 3),
            "verification": self.verification.to_dict(),
        }


class VerificationFailed(Refused):
    """The copy was rolled back because the target did not match the source."""

    def __init__(self, verification: Verification) -> None:
        super().__init__(f"verification failed, nothing was kept: {verification.problem}")
        self.verification = verification


# -- planning -----------------------------------------------------------------------------


def plan_copy(
    source: Store | Snapshot,
    target: Store,
    *,
    widen: bool = False,
    dedupe: bool = False,
    new_database: bool = False,
) -> CopyPlan:
    """Inspect both stores and audit the source against what the target will accept.

    Given a `Snapshot` (what the commands pass), everything — this audit, the copy, its
    verification — reads that one state of the source; given a Store, the live store.
    Duplicate rows Sumatra's lookups cannot tell apart are failing findings; with
    `dedupe` they are planned to be merged instead (dedupe.py). `new_database`: the target
    database is yet to be created (a plan only)."""
    snapshot = source if isinstance(source, Snapshot) else None
    if snapshot is not None:
        source = snapshot.store
        if snapshot.live.kind == target.kind and snapshot.live.path == target.path:
            raise SmtmigrateError("SOURCE and TARGET are the same store")
    if source.kind == target.kind and source.path == target.path:
        raise SmtmigrateError("SOURCE and TARGET are the same store")
    inspection = inspect_store(source)
    if inspection.vendor != "sqlite" and target.kind != "sqlite":
        raise SmtmigrateError(
            f"{source.display}: a PostgreSQL store can be copied into a new SQLite store "
            "(e.g. a backup), not into another PostgreSQL database"
        )
    existing = None if new_database else _check_target(target)
    limits = _target_limits(target, existing)
    report = audit(inspection, limits=limits)
    widening = None
    if widen and target.kind == "postgresql":
        widening = plan_widening("text", report=report, source=inspection, target=existing)
        limits = widening.limits()
    layouts = []
    for name, table in inspection.tables.items():
        layouts.append(table_layout(table.model, name, table.columns))
    missing = [
        f"{layout.name}.{column.name}"
        for layout, table in zip(layouts, inspection.tables.values(), strict=True)
        for column in table.model.columns.values()
        if column.name not in table.columns and not column.null
    ]
    if missing:
        raise Refused(f"{source.display}: the source lacks columns Sumatra needs: {missing}")
    copied = set(inspection.tables)
    failing = remaining_failures(report, inspection, limits)
    merge = None
    if dedupe:
        groups = {
            f.table: [Group(tuple(g["ids"]), g["values"]) for g in f.examples]
            for f in report.findings
            if f.kind == "duplicate"
        }
        merge = plan_dedupe(inspection, groups)
        failing = [f for f in failing if f.kind != "duplicate"]
    row_counts = {layout.name: report.row_counts[layout.source_name] for layout in layouts}
    if merge is not None:
        for name, ids in merge.skip.items():
            row_counts[name] -= len(ids)
    return CopyPlan(
        source=inspection,
        target=target,
        target_inspection=existing,
        report=report,
        widening=widening,
        layouts=layouts,
        row_counts=row_counts,
        failing=failing,
        skipped=sorted(inspection.table_names - copied - TARGET_OWNED - FOLDED_TABLES.keys()),
        folded={
            name: into
            for name, into in FOLDED_TABLES.items()
            if inspection.views and name in inspection.table_names
        },
        snapshot=snapshot,
        dedupe=merge,
    )


def remaining_failures(
    report: AuditReport, inspection: Inspection, limits: dict[tuple[str, str], int | None] | None
) -> list[Finding]:
    """Findings the target would still reject once its columns have `limits`."""
    failing = []
    for finding in report.failing:
        if finding.kind == "overflow" and limits is not None:
            model_table = inspection.tables[finding.table].model.name
            limit = limits.get((model_table, finding.column), finding.limit)
            if limit is None or (finding.max_length or 0) <= limit:
                continue
        failing.append(finding)
    return failing


def _check_target(target: Store) -> Inspection | None:
    """None for a target to build from scratch; an Inspection for an empty Sumatra store.

    Anything holding data is refused: merging is not what a copy does.
    """
    if target.kind == "sqlite":
        if target.path is not None and target.path.exists():
            raise Refused(f"{target.display} exists; copy writes a new SQLite store")
        return None
    connection = target.connection
    try:
        with connection.cursor() as cursor:
            tables = set(connection.introspection.table_names(cursor))
            if not tables:
                return None
            try:
                inspection = inspect_store(target)
            except NotASumatraStore as exc:
                raise Refused(
                    f"{target.display} is not empty ({len(tables)} tables, e.g. "
                    f"{sorted(tables)[0]}); copy into an empty database"
                ) from exc
            if inspection.layout != LAYOUT_08:
                raise Refused(f"{target.display} holds a {inspection.layout} store")
            for name in sorted(inspection.tables):
                cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {connection.ops.quote_name(name)})")
                if cursor.fetchone()[0]:
                    raise Refused(
                        f"{target.display} already holds Sumatra data ({name} is not empty); "
                        "copy only into an empty database or an empty Sumatra store"
                    )
    except DatabaseError as exc:
        raise target.read_error(exc) from exc
    return inspection


def _target_limits(target: Store, existing: Inspection | None):
    """The column sizes the rows must fit: none in SQLite; the real ones in a schema that
    exists; today's models' (the audit's default) for a schema yet to be built."""
    from .schema import sumatra_tables

    if target.kind == "sqlite":
        return {
            (table.name, name): None
            for table in sumatra_tables().values()
            for name in table.columns
        }
    if existing is None:
        return None
    limits = {}
    for table in existing.tables.values():
        for name, column in table.columns.items():
            limits[table.model.name, name] = column.max_length
    return limits


# -- PostgreSQL ---------------------------------------------------------------------------


def copy_store(plan: CopyPlan, events: CopyEvents | None = None, *, records: bool = True):
    """Run the plan. Returns a CopyResult; raises Refused/VerificationFailed/…"""
    if plan.refused:
        raise Refused(f"{len(plan.failing)} finding(s) would be rejected by the target")
    events = events or SilentEvents()
    if plan.target.kind == "postgresql":
        result = _copy_to_postgres(plan, events, records=records)
    else:
        result = _copy_to_sqlite(plan, events, records=records)
    if plan.snapshot is not None:
        # The target equals the snapshot; say whether the live source has moved on since.
        plan.snapshot.check_changes()
        result.phases["snapshot"] = plan.snapshot.seconds
    return result


class _Phases:
    def __init__(self, events: CopyEvents) -> None:
        self.events, self.seconds = events, {}

    @contextmanager
    def __call__(self, name: str):
        self.events.phase(name)
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started


def _copy_to_postgres(plan: CopyPlan, events: CopyEvents, *, records: bool) -> CopyResult:
    started = time.perf_counter()
    store = plan.target
    connection = store.connection
    phase = _Phases(events)
    results: list[TableResult] = []
    try:
        with transaction.atomic(using=store.alias):
            if plan.build_schema:
                with phase("schema"):
                    call_command("migrate", database=store.alias, interactive=False, verbosity=0)
            target = inspect_store(store)
            if plan.widening is not None:
                with phase("widen"):
                    widening = plan_widening(
                        "text", report=plan.report, source=plan.source, target=target
                    )
                    apply_widening(widening, target)
            remaps = plan.remaps(content_type_remap(plan.source, target, create=True))
            names = [layout.name for layout in plan.layouts]
            checksums: dict[str, Checksum] = {}
            with _without_constraints(connection, names, phase), phase("load"):
                for layout in plan.layouts:
                    result, checksums[layout.name] = _copy_table(
                        plan, layout, connection, remaps.get(layout.name, {}), events
                    )
                    results.append(result)
            with phase("sequences"), connection.cursor() as cursor:
                models = [layout.model.model for layout in plan.layouts]
                for statement in connection.ops.sequence_reset_sql(no_style(), models):
                    cursor.execute(statement)
                cursor.execute(
                    sql.SQL("ANALYZE {}")
                    .format(sql.SQL(", ").join(map(sql.Identifier, names)))
                    .as_string(connection.connection)
                )
            verification = verify_stores(
                plan.source,
                target,
                source_checksums=checksums,
                records=records,
                events=phase,
                dedupe=plan.dedupe,
            )
            if not verification.ok:
                raise VerificationFailed(verification)
            interrupts.check()  # a Ctrl-C whose exception was lost must not commit
            events.phase("commit")
    except (DatabaseError, psycopg2.Error) as exc:  # COPY runs on the raw psycopg2 cursor
        detail = store.describe_error(exc)
        if "permission denied for schema" in detail:
            detail += (
                " (the tables are created as the URL's role: make it the database's owner, "
                "as smtmigrate createdb does, or GRANT CREATE ON SCHEMA public TO it)"
            )
        raise SmtmigrateError(
            f"copy into {store.display} failed, nothing was written: {detail}"
        ) from exc
    return CopyResult(plan, results, verification, phase.seconds, time.perf_counter() - started)


@contextmanager
def _without_constraints(connection, tables: list[str], phase) -> Iterator[None]:
    """Drop foreign keys and non-unique indexes for the load; rebuild them after.

    Rows checked one by one by deferred FK triggers at commit, and index entries inserted
    one by one, cost more than one validating join and one sorted index build per table.
    All inside the copy's transaction: nobody ever sees the tables without them.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid) "
            "FROM pg_constraint c WHERE c.contype = 'f' "
            "AND c.conrelid = ANY(SELECT oid FROM pg_class WHERE relname = ANY(%s) "
            "AND pg_table_is_visible(oid))",
            [tables],
        )
        foreign_keys = cursor.fetchall()
        cursor.execute(
            "SELECT t.relname, ix.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i "
            "JOIN pg_class t ON t.oid = i.indrelid JOIN pg_class ix ON ix.oid = i.indexrelid "
            "WHERE t.relname = ANY(%s) AND pg_table_is_visible(t.oid) "
            "AND NOT i.indisprimary AND NOT i.indisunique "
            "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)",
            [tables],
        )
        indexes = cursor.fetchall()
        raw = connection.connection
        # `table` is regclass::text: PostgreSQL's own, already quoted, spelling of the name
        for table, name, _definition in foreign_keys:
            cursor.execute(
                sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}")
                .format(sql.SQL(table), sql.Identifier(name))
                .as_string(raw)
            )
        for _table, name, _definition in indexes:
            cursor.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)).as_string(raw))
    yield
    with phase("indexes"), connection.cursor() as cursor:
        for _table, _name, definition in indexes:
            cursor.execute(definition)  # PostgreSQL's own CREATE INDEX text for it
    with phase("constraints"), connection.cursor() as cursor:
        for table, name, definition in foreign_keys:
            cursor.execute(
                sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} ")
                .format(sql.SQL(table), sql.Identifier(name))
                .as_string(raw)
                + definition
            )


def _copy_table(plan, layout, connection, remaps, events) -> tuple[TableResult, Checksum]:
    """Stream one table from SQLite into COPY, hashing every row on the way."""
    started = time.perf_counter()
    expected = plan.row_counts[layout.name]
    events.table_start(layout.name, expected)
    assert plan.source.store.path is not None
    source = open_sqlite_bytes(plan.source.store.path)
    try:
        attach_views(source, plan.source.views)
        cursor = source.execute(
            sqlite_line_sql(layout, sqlite_quote, remaps, plan.skip(layout.name))
        )
        stream = _CopyStream(
            cursor, lambda rows, nbytes: events.table_progress(layout.name, rows, nbytes)
        )
        raw = connection.connection
        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(layout.name),
            sql.SQL(", ").join(map(sql.Identifier, layout.column_names)),
        )
        try:
            with connection.cursor() as django_cursor, _quiet_excepthook():
                django_cursor.cursor.copy_expert(statement.as_string(raw), stream, size=COPY_CHUNK)
        except psycopg2.Error:
            if stream.interrupted:
                raise KeyboardInterrupt from None
            raise
        finally:
            stream.close()
    finally:
        source.close()
    result = TableResult(
        layout.name, stream.checksum.rows, stream.bytes, time.perf_counter() - started
    )
    events.table_done(result)
    return result, stream.checksum


@contextmanager
def _quiet_excepthook() -> Iterator[None]:
    """When the server drops the connection in the middle of COPY, psycopg2 prints the
    error itself (PyErr_Print, through sys.excepthook) before raising it to us; the user
    must see only our one line, so the hook is silenced for the duration of the COPY."""
    hook = sys.excepthook
    sys.excepthook = lambda *exc_info: None
    try:
        yield
    finally:
        sys.excepthook = hook


class _CopyStream:
    """A file-like object COPY reads from: canonical lines, with the row checksum and the
    progress kept on the way.

    A producer thread reads and hashes the next chunks while the main thread hands the
    current one to PostgreSQL (SQLite and libpq release the GIL while they work), so the
    server never waits for us. The queue holds a few chunks: memory stays flat whatever
    the table's size.
    """

    def __init__(self, cursor, progress: Callable[[int, int], None]) -> None:
        self.cursor, self.progress = cursor, progress
        self.checksum = Checksum()
        self.bytes = 0
        self._chunks: queue.Queue[tuple[bytes, int] | None] = queue.Queue(QUEUED_CHUNKS)
        self._stopped = threading.Event()
        self._error: BaseException | None = None
        self.interrupted = False
        self._thread = threading.Thread(target=self._produce, name="copy-reader", daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        try:
            lines: list[bytes] = []
            size = rows = 0
            while batch := self.cursor.fetchmany(FETCH_ROWS):
                total = 0
                for line, *floats in batch:
                    if floats:
                        total += row_hash(line, tuple(floats))
                        line = b"\t".join([line, *map(float_text, floats)])
                    else:
                        total += row_hash(line, ())
                    lines.append(line)
                    size += len(line) + 1
                self.checksum.total += total
                rows += len(batch)
                if size >= COPY_CHUNK:
                    self._put(lines, rows)
                    lines, size, rows = [], 0, 0
            if lines:
                self._put(lines, rows)
        except BaseException as exc:  # handed to the main thread by read()
            self._error = exc
        finally:
            self._put(None, 0)

    def _put(self, lines: list[bytes] | None, rows: int) -> None:
        item = None if lines is None else (b"\n".join(lines) + b"\n", rows)
        while not self._stopped.is_set():
            try:
                self._chunks.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read(self, size: int = COPY_CHUNK) -> bytes:
        try:
            interrupts.check()
            item = self._chunks.get()
        except KeyboardInterrupt:
            # psycopg2 turns an exception in read() into a failed COPY; remember it was ^C
            self.interrupted = True
            raise
        if item is None:
            self._thread.join()
            if self._error is not None:
                raise self._error
            return b""
        chunk, rows = item
        self.checksum.rows += rows
        self.bytes += len(chunk)
        self.progress(self.checksum.rows, self.bytes)
        return chunk

    readline = read

    def close(self) -> None:
        """Stop the producer (after an error or ^C the queue may never be drained)."""
        self._stopped.set()
        self._thread.join()


# -- SQLite -------------------------------------------------------------------------------


def _copy_to_sqlite(plan: CopyPlan, events: CopyEvents, *, records: bool) -> CopyResult:
    """Build the new store beside the target, verify it, then rename it into place."""
    started = time.perf_counter()
    final = plan.target.path
    assert final is not None
    remove_stale_partials(final.parent, glob_escape(final.name))
    partial = final.with_name(f".{final.name}.smtmigrate-{os.getpid()}")
    phase = _Phases(events)
    results = []
    writable = sqlite_settings(partial, read_only=False)
    try:
        # The new store holds every record: create it 0600 before SQLite would create it
        # 0644 (its -journal and -wal files take the main file's mode). A file of this
        # name is a partial of this process id, not of a live copy: replace it.
        partial.unlink(missing_ok=True)
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        with phase("schema"), Store("sqlite", str(partial), writable, path=partial) as target:
            call_command("migrate", database=target.alias, interactive=False, verbosity=0)
            remaps = plan.remaps(
                content_type_remap(plan.source, inspect_store(target), create=True)
            )
        connection = sqlite3.connect(partial, isolation_level=None)
        from_postgres = plan.source.vendor == "postgresql"
        try:
            if not from_postgres:
                connection.execute(
                    "ATTACH DATABASE ? AS src",
                    [f"file:{url_quote(str(plan.source.store.path))}?mode=ro"],
                )
                attach_views(connection, plan.source.views, "src")  # 0.4-0.6: temp.<table>
            with phase("load"):
                connection.execute("BEGIN")
                for layout in plan.layouts:
                    remap = remaps.get(layout.name, {})
                    insert = _insert_from_postgres if from_postgres else _insert_table
                    results.append(insert(connection, layout, plan, remap, events))
                problems = connection.execute("PRAGMA main.foreign_key_check").fetchall()
                if problems:
                    raise Refused(f"foreign keys to missing rows, e.g. {problems[0]}")
                interrupts.check()
                connection.execute("COMMIT")
        finally:
            connection.close()
        with Store("sqlite", str(final), sqlite_settings(partial), path=partial) as target:
            verification = verify_stores(
                plan.source,
                inspect_store(target),
                records=records,
                events=phase,
                dedupe=plan.dedupe,
            )
        if not verification.ok:
            raise VerificationFailed(verification)
        interrupts.check()
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)
    return CopyResult(plan, results, verification, phase.seconds, time.perf_counter() - started)


def _insert_from_postgres(connection, layout, plan: CopyPlan, remap, events) -> TableResult:
    """Rows of a PostgreSQL store into the new SQLite one, through a server-side cursor
    (memory stays flat); datetimes as Django writes them in SQLite: naive UTC."""
    started = time.perf_counter()
    events.table_start(layout.name, plan.row_counts[layout.name])
    source = plan.source.store.connection
    q = source.ops.quote_name
    values = [
        f"CASE {q(name)} {when_clauses(remap[name])} ELSE {q(name)} END"
        if name in remap
        else q(name)
        for name in layout.column_names
    ]
    datetimes = [
        i
        for i, name in enumerate(layout.column_names)
        if layout.model.columns[name].internal_type == "DateTimeField"
    ]
    placeholders = ", ".join("?" * len(values))
    columns = ", ".join(sqlite_quote(name) for name in layout.column_names)
    insert = f"INSERT INTO main.{sqlite_quote(layout.name)} ({columns}) VALUES ({placeholders})"
    rows = 0
    with source.chunked_cursor() as cursor:
        where = where_not(q(layout.model.primary_key), plan.skip(layout.name))
        cursor.execute(f"SELECT {', '.join(values)} FROM {q(layout.source_name)}{where}")
        while batch := cursor.fetchmany(FETCH_ROWS):
            if datetimes:
                batch = [_naive_utc(row, datetimes) for row in batch]
            connection.executemany(insert, batch)
            rows += len(batch)
            events.table_progress(layout.name, rows, 0)
    result = TableResult(layout.name, rows, 0, time.perf_counter() - started)
    events.table_done(result)
    return result


def _naive_utc(row: tuple, positions: list[int]) -> tuple:
    values = list(row)
    for i in positions:
        if values[i] is not None:
            values[i] = values[i].astimezone(timezone.utc).replace(tzinfo=None).isoformat(" ")
    return tuple(values)


def remove_stale_partials(directory: Path, name_glob: str) -> None:
    """Partial files of copies that were killed (their process is gone) are removed:
    those of `name_glob` files in `directory`."""
    for partial in directory.glob(f".{name_glob}.smtmigrate-*"):
        pid = partial.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            partial.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _insert_table(connection, layout: TableLayout, plan: CopyPlan, remap, events) -> TableResult:
    """One INSERT … SELECT from the attached source: SQLite copies the values itself."""
    started = time.perf_counter()
    events.table_start(layout.name, plan.row_counts[layout.name])
    q = sqlite_quote
    values = []
    for name in layout.column_names:
        if name in remap:
            cases = when_clauses(remap[name])
            values.append(f"CASE CAST({q(name)} AS INTEGER) {cases} ELSE {q(name)} END")
        else:
            values.append(q(name))
    columns = ", ".join(q(name) for name in layout.column_names)
    schema = "temp" if layout.source_name in plan.source.views else "src"
    where = where_not(q(layout.model.primary_key), plan.skip(layout.name))
    cursor = connection.execute(
        f"INSERT INTO main.{q(layout.name)} ({columns}) "
        f"SELECT {', '.join(values)} FROM {schema}.{q(layout.source_name)}{where}"
    )
    result = TableResult(layout.name, cursor.rowcount, 0, time.perf_counter() - started)
    events.table_done(result)
    return result

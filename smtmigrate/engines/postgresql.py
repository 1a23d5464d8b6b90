"""PostgreSQL: quoting (psycopg2's, for statements built with psycopg2.sql), canonical
text in PostgreSQL's SQL, the checksum computed by the server, and copies into an
existing database in one transaction through COPY streams."""

from __future__ import annotations

import queue
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from itertools import pairwise
from typing import TYPE_CHECKING

import psycopg2
from django.core.management.color import no_style
from django.db import DatabaseError, transaction
from psycopg2 import sql

from .. import interrupts
from ..canonical import NULL, UNIT_BITS, Checksum, RowBlocks, TableLayout, UnitHasher
from ..errors import SmtmigrateError
from ..tables import ModelColumn
from .base import CopyTarget, Engine, Remap, TableFacts, TableResult, is_integer, where_not

if TYPE_CHECKING:
    from ..copy import CopyPlan
    from ..layout import Inspection
    from ..locations import Store

MAX_CHECKSUM_RANGES = 8
MIN_UNITS_PER_RANGE = 16  # a smaller table is one aggregate: splitting costs more than it gives
COPY_CHUNK = 256 << 10  # bytes handed to COPY per read(): amortises calls, overlaps work
QUEUED_CHUNKS = 8
FETCH_ROWS = 2_000


def put_unless_stopped(chunks: queue.Queue, item, stopped: threading.Event, *, poll: float) -> bool:
    """Hand `item` to the bounded queue of a COPY stream, waiting while it is full, until
    `stopped` is set (the other side is gone and will never drain it): then False."""
    while not stopped.is_set():
        try:
            chunks.put(item, timeout=poll)
            return True
        except queue.Full:
            continue
    return False


def unit_bounds(low: int | None, high: int | None, ranges: int) -> list[int]:
    """Keys that cut [low, high] into `ranges` ranges of whole units (canonical.py): a
    unit split between two aggregates would be hashed as two."""
    if low is None or high is None or ranges < 2:
        return []
    first, last = low >> UNIT_BITS, high >> UNIT_BITS
    units = last - first + 1
    ranges = min(ranges, units // MIN_UNITS_PER_RANGE)
    return [(first + units * i // ranges) << UNIT_BITS for i in range(1, ranges)]


class PostgresEngine(Engine):
    vendor = "postgresql"
    length_function = "char_length"

    def database_missing(self, exc: BaseException) -> bool:
        """libpq says so only in words (a failed connection has no SQLSTATE)."""
        return bool(re.search(r'database ".*" does not exist', str(exc)))

    has_pooler = True

    # The running server (its start time and port) and the database's oid.
    identity_sql = (
        "SELECT pg_postmaster_start_time(), current_setting('port'), d.oid "
        "FROM pg_database d WHERE d.datname = current_database()"
    )
    own_kind_refusal = (
        "a PostgreSQL store can be copied into a new SQLite store (e.g. a backup) or a "
        "MariaDB database, not into another PostgreSQL database"
    )

    def column_types(self, cursor, tables: list[str]) -> dict[tuple[str, str], str]:
        cursor.execute(
            "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) "
            "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "WHERE c.relname = ANY(%s) AND c.relkind = 'r' AND a.attnum > 0 "
            "AND NOT a.attisdropped AND pg_table_is_visible(c.oid)",
            [tables],
        )
        return {(table, column): type_ for table, column, type_ in cursor.fetchall()}

    def lock_timeout(self, seconds: float) -> tuple[str, list]:
        return "SET LOCAL lock_timeout = %s", [f"{seconds * 1000:.0f}ms"]

    def missing_write_privileges(self, cursor, tables: list[str]) -> list[tuple]:
        cursor.execute(
            "SELECT current_user, t.name, p.privilege "
            "FROM unnest(%s::text[]) AS t(name), "
            "unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']) AS p(privilege) "
            "WHERE NOT has_table_privilege(quote_ident(t.name), p.privilege) "
            "UNION ALL "  # a serial (not identity) id needs its sequence too
            "SELECT current_user, s.seq, 'USAGE' FROM (SELECT pg_get_serial_sequence("
            "quote_ident(t.name), a.attname) AS seq FROM unnest(%s::text[]) AS t(name) "
            "JOIN pg_attribute a ON a.attrelid = quote_ident(t.name)::regclass "
            "AND a.attnum > 0 AND NOT a.attisdropped AND a.attidentity = '') AS s "
            "WHERE s.seq IS NOT NULL AND NOT has_sequence_privilege(s.seq, 'USAGE')",
            [tables, tables],
        )
        return cursor.fetchall()

    temp_table_lifetime = " ON COMMIT DROP"
    binary_collation = '"C"'
    label_collation = "C"
    like_indexes = True
    defer_constraints = "SET CONSTRAINTS ALL DEFERRED"

    def identifier(self, name: str) -> sql.Identifier:
        """A name for statements composed with psycopg2.sql (roles, databases)."""
        return sql.Identifier(name)

    def id_list(self, column: str) -> str:
        return f"string_agg({self.text(self.quote_name(column))}, ',')"

    def sorted_join(self, expression: str, *, distinct: bool = False) -> str:
        unique = "DISTINCT " if distinct else ""
        return f"string_agg({unique}{expression}, chr(30) ORDER BY {expression})"

    def text_summary(self, expression: str) -> str:
        return f"hashtext({expression})::bigint"

    def text(self, expression: str) -> str:
        return f"{expression}::text"

    def preview(self, column: str, chars: int) -> str:
        return f"substr({self.text(self.quote_name(column))}, 1, {int(chars)})"

    def table_facts(self, connection, cursor, tables: Sequence[str]) -> dict[str, TableFacts]:
        """Three catalog queries for every table, not five per table (postgresql_catalog)."""
        from .postgresql_catalog import table_facts

        return table_facts(cursor, tables)

    def declared_types(self, cursor, table: str) -> dict[str, str]:
        cursor.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
            [self.quote_name(table)],
        )
        return dict(cursor.fetchall())

    # -- snapshots (snapshot.py) ---------------------------------------------------------

    def export_snapshot(self, cursor) -> tuple[str, datetime]:
        """Make the cursor's (new) transaction a read-only snapshot that other processes
        can join; its id, and when it was taken."""
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        cursor.execute("SELECT pg_export_snapshot(), now()")
        exported, taken_at = cursor.fetchone()
        return exported, taken_at

    def begin_snapshot(self, cursor) -> tuple[datetime, str | None]:
        exported, taken_at = self.export_snapshot(cursor)
        return taken_at.astimezone(timezone.utc), exported

    def join_snapshot(self, cursor, exported: str) -> None:
        """Make the cursor's (new) transaction read the snapshot `exported`."""
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        cursor.execute("SET TRANSACTION SNAPSHOT %s", [exported])

    # -- canonical text -------------------------------------------------------------------

    def canonical_expression(self, column: ModelColumn, remap: Remap | None = None) -> str:
        c = self.quote_name(column.name)
        null = f"'{NULL}'"
        if remap:
            return f"coalesce({self.text(f'({self.remap_case(c, remap)})')}, {null})"
        if column.internal_type == "DateTimeField":
            return (
                f"coalesce(to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00', "
                f"{null})"
            )
        if is_integer(column):
            return f"coalesce({self.text(c)}, {null})"
        if column.internal_type == "GenericIPAddressField":  # inet's text() adds /32
            return f"coalesce(abbrev({c}), {null})"  # abbrev() is its output form
        return f"coalesce({self.escaped(self.text(c))}, {null})"

    def checksum(self, cursor, layout: TableLayout, remaps=None, skip=None) -> Checksum:
        """`checksum_sql` split at unit boundaries into as many key ranges as the server
        may scan at once (its parallel workers and the leader): an ordered aggregate runs
        on one core, but PostgreSQL runs the ranges of a UNION ALL side by side (Parallel
        Append). 100k-record store: the biggest table's checksum 2.4 s -> 1.3 s on 2 cores."""
        key = self.quote_name(layout.model.primary_key)
        column = layout.model.columns.get(layout.model.primary_key)
        bounds: list[int] = []
        if column is not None and is_integer(column):
            cursor.execute(
                f"SELECT min({key}), max({key}), "
                "current_setting('max_parallel_workers_per_gather')::int "
                f"FROM {self.quote_name(layout.source_name)}"
            )
            low, high, workers = cursor.fetchone()
            bounds = unit_bounds(low, high, min(workers + 1, MAX_CHECKSUM_RANGES))
        cursor.execute(self.checksum_sql(layout, remaps, skip, bounds))
        rows, total = cursor.fetchone()
        return Checksum(int(rows), int(total))

    def checksum_sql(self, layout: TableLayout, remaps=None, skip=None, bounds=()) -> str:
        """count(*) and the sum of the units' md5s (canonical.py), by PostgreSQL; floats
        by their IEEE-754 bits (float8send), as Python hashes them. `bounds`: keys (first
        keys of units) where the table is split into ranges, each its own aggregate."""
        q = self.quote_name
        remaps = remaps or {}
        parts = [self.canonical_expression(c, remaps.get(c.name)) for c in layout.columns]
        parts += [
            f"coalesce(encode(float8send({q(c.name)}), 'hex'), '{NULL}')" for c in layout.floats
        ]
        key = q(layout.model.primary_key)
        skipped = where_not(key, skip).replace(" WHERE ", " AND ", 1)
        edges = [None, *bounds, None]
        ranges = []
        for low, high in pairwise(edges):
            conditions = [f"{key} >= {int(low)}" if low is not None else "TRUE"]
            if high is not None:
                conditions.append(f"{key} < {int(high)}")
            ranges.append(
                f"SELECT count(*) AS n, string_agg({self.line(parts)} || chr(10), '' "
                f"ORDER BY {key}) AS t FROM {q(layout.source_name)} "
                f"WHERE {' AND '.join(conditions)}{skipped} GROUP BY {self.unit_expression(layout)}"
            )
        return (
            "SELECT coalesce(sum(n), 0), "
            f"coalesce(sum(('x' || left(md5(t), 16))::bit(64)::bigint), 0) "
            f"FROM ({' UNION ALL '.join(ranges)}) AS u"
        )

    def line_select(self, layout: TableLayout, remaps, skip=None) -> str:
        """SELECT of (unit, canonical line as UTF-8 bytes, float columns…) in key order:
        the bytes SQLite's line_select gives for the same values; floats as doubles,
        printed and hashed by Python (a copy into MariaDB streams these)."""
        q = self.quote_name
        line = self.line([self.canonical_expression(c, remaps.get(c.name)) for c in layout.columns])
        floats = [q(c.name) for c in layout.floats]
        key = q(layout.model.primary_key)
        columns = ", ".join([self.unit_expression(layout), f"convert_to({line}, 'UTF8')", *floats])
        return f"SELECT {columns} FROM {q(layout.source_name)}{where_not(key, skip)} ORDER BY {key}"

    @contextmanager
    def line_blocks(self, inspection, layout: TableLayout, remaps, skip) -> Iterator:
        """A server-side cursor on the store's own connection, so in its snapshot's
        transaction: rows come in batches, memory stays flat."""
        with inspection.store.connection.chunked_cursor() as cursor:
            cursor.execute(self.line_select(layout, remaps, skip))
            yield RowBlocks(cursor, bool(layout.floats), FETCH_ROWS)

    # -- copies into PostgreSQL -----------------------------------------------------------

    @contextmanager
    def copy_target(self, plan: CopyPlan, events, phase) -> Iterator[PostgresCopyTarget]:
        """Everything in one transaction: any error, a failed verification or a killed
        process leaves the database as it was."""
        store = plan.target
        try:
            with transaction.atomic(using=store.alias):
                yield PostgresCopyTarget(self, plan, phase)
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


# Tables the record reader (records/reader.py) queries by record id, one chunk at a time.
RECORD_LOOKUPS = (
    "django_store_datakey",
    "django_store_record_dependencies",
    "django_store_record_input_data",
    "django_store_record_platforms",
    "django_store_taggeditem",
)


class PostgresCopyTarget(CopyTarget):
    def __init__(self, engine: PostgresEngine, plan: CopyPlan, phase) -> None:
        self.engine, self.store, self.phase = engine, plan.target, phase

    def schema_store(self):
        return nullcontext(self.store)

    def reading(self, prepared: Inspection, inspect: Callable[[Store], Inspection]):
        return nullcontext(prepared)  # the same transaction sees what was loaded

    def before_reading_records(self, prepared: Inspection) -> None:
        """ANALYZE the tables the record reader looks up by record id, chunk by chunk.

        Never analyzed, they have no column statistics in the copy's transaction: the
        planner takes `record_id IN (1,000 ids)` for the whole table and scans all of it
        for every chunk (100k records: 100 scans of 2.3 M dependency links)."""
        tables = [prepared.stored_name(name) for name in RECORD_LOOKUPS]
        tables = [name for name in tables if name in prepared.table_names]
        if tables:
            with prepared.store.connection.cursor() as cursor:
                cursor.execute(f"ANALYZE {', '.join(map(self.engine.quote_name, tables))}")

    def load(self, plan: CopyPlan, remaps, events) -> tuple[list[TableResult], dict]:
        """COPY every table without its foreign keys and indexes, rebuilt after; then the
        sequences."""
        connection = self.store.connection
        names = [layout.name for layout in plan.layouts]
        results, checksums = [], {}
        with self._without_constraints(connection, names), self.phase("load"):
            for layout in plan.layouts:
                result, checksums[layout.name] = self._copy_table(
                    plan, layout, connection, remaps.get(layout.name, {}), events
                )
                results.append(result)
        # No ANALYZE: the index builds set the tables' sizes for the planner, which reads
        # the size of a never-analyzed table from its file anyway (the row checks still
        # scan in parallel); autovacuum analyzes the new tables after the commit.
        with self.phase("sequences"), connection.cursor() as cursor:
            models = [layout.model.model for layout in plan.layouts]
            for statement in connection.ops.sequence_reset_sql(no_style(), models):
                cursor.execute(statement)
        return results, checksums

    @contextmanager
    def _without_constraints(self, connection, tables: list[str]) -> Iterator[None]:
        """Drop foreign keys and non-unique indexes for the load; rebuild them after.

        Rows checked one by one by deferred FK triggers at commit, and index entries
        inserted one by one, cost more than one validating join and one sorted index
        build per table. All inside the copy's transaction: nobody ever sees the tables
        without them.
        """
        q = self.engine.quote_name
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
            # `table` is regclass::text: PostgreSQL's own, already quoted, spelling of it
            for table, name, _definition in foreign_keys:
                cursor.execute(f"ALTER TABLE {table} DROP CONSTRAINT {q(name)}")
            for _table, name, _definition in indexes:
                cursor.execute(f"DROP INDEX {q(name)}")
        yield
        with self.phase("indexes"), connection.cursor() as cursor:
            for _table, _name, definition in indexes:
                cursor.execute(definition)  # PostgreSQL's own CREATE INDEX text for it
        with self.phase("constraints"), connection.cursor() as cursor:
            for table, name, definition in foreign_keys:
                cursor.execute(f"ALTER TABLE {table} ADD CONSTRAINT {q(name)} {definition}")

    def _copy_table(self, plan, layout, connection, remaps, events) -> tuple[TableResult, Checksum]:
        """Stream one table from the source (SQLite, MariaDB) into COPY, hashing every row
        on the way."""

        started = time.perf_counter()
        events.table_start(layout.name, plan.row_counts[layout.name])
        reader = plan.source.engine  # SQLite or MariaDB: plan_copy refuses the rest
        q = self.engine.quote_name
        with reader.line_blocks(plan.source, layout, remaps, plan.skip(layout.name)) as blocks:
            stream = _CopyStream(
                blocks, lambda rows, nbytes: events.table_progress(layout.name, rows, nbytes)
            )
            columns = ", ".join(map(q, layout.column_names))
            statement = f"COPY {q(layout.name)} ({columns}) FROM STDIN"
            try:
                with connection.cursor() as django_cursor, _quiet_excepthook():
                    django_cursor.cursor.copy_expert(statement, stream, size=COPY_CHUNK)
            except psycopg2.Error:
                if stream.interrupted:
                    raise KeyboardInterrupt from None
                raise
            finally:
                stream.close()
        checksum = stream.hasher.result()
        result = TableResult(
            layout.name, checksum.rows, stream.bytes, time.perf_counter() - started
        )
        events.table_done(result)
        return result, checksum


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
    """A file-like object COPY reads from: canonical lines, hashed unit by unit on the way
    (canonical.UnitHasher), with the progress kept.

    A producer thread reads and hashes the next chunks while the main thread hands the
    current one to PostgreSQL (SQLite and libpq release the GIL while they work), so the
    server never waits for us. The queue holds a few chunks: memory stays flat whatever
    the table's size.
    """

    def __init__(self, blocks, progress: Callable[[int, int], None]) -> None:
        self.blocks, self.progress = blocks, progress
        self.hasher = UnitHasher()  # the producer's: read by the main thread at the end
        self.rows = self.bytes = 0
        self._chunks: queue.Queue[tuple[bytes, int] | None] = queue.Queue(QUEUED_CHUNKS)
        self._stopped = threading.Event()
        self._error: BaseException | None = None
        self.interrupted = False
        self._thread = threading.Thread(target=self._produce, name="copy-reader", daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        try:
            parts: list[bytes] = []
            size = rows = 0
            while blocks := self.blocks.fetch():
                for block in blocks:
                    self.hasher.add(block)
                    parts.append(block.loaded)
                    size += len(block.loaded)
                    rows += block.rows
                if size >= COPY_CHUNK:
                    self._put(parts, rows)
                    parts, size, rows = [], 0, 0
            if parts:
                self._put(parts, rows)
        except BaseException as exc:  # handed to the main thread by read()
            self._error = exc
        finally:
            self._put(None, 0)

    def _put(self, parts: list[bytes] | None, rows: int) -> None:
        item = None if parts is None else (b"".join(parts), rows)
        put_unless_stopped(self._chunks, item, self._stopped, poll=0.1)

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
        self.rows += rows
        self.bytes += len(chunk)
        self.progress(self.rows, self.bytes)
        return chunk

    readline = read

    def close(self) -> None:
        """Stop the producer (after an error or ^C the queue may never be drained)."""
        self._stopped.set()
        self._thread.join()

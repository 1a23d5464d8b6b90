"""Set-based loading: sources into staging tables by COPY, then INSERT … SELECT.

Every source's tables are streamed into TEMP staging tables of the target's transaction
(the same canonical COPY lines `copy` sends, content-type ids already the target's), so
the identity check, the dedupe and the id remap are a few statements over all sources at
once, never a loop over records. Shared rows are matched by their canonical text (the
columns Sumatra's get_or_create compares, NULL and '' apart) and take the target's
existing row (its lowest id) when one is equal; new rows and records get their ids from
the target's own sequences, so concurrent `smt run`s never collide with them.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field

from ..canonical import float_text, table_layout
from ..engines import SQLITE
from ..engines.postgresql import COPY_CHUNK, FETCH_ROWS, QUEUED_CHUNKS, put_unless_stopped
from ..remaps import content_type_remap
from ..schema import Inspection, ModelColumn, sumatra_tables
from . import sql

RECORD = "django_store_record"
PROJECT = "django_store_project"
DATAKEY = "django_store_datakey"
TAG = "django_store_tag"
TAGGED = "django_store_taggeditem"
INPUT_LINKS = "django_store_record_input_data"


@dataclass
class Loaded:
    """What the load wrote: new rows per table, and the time each step took."""

    rows: dict[str, int] = field(default_factory=dict)
    staged: dict[str, int] = field(default_factory=dict)  # rows staged per table (all sources)
    seconds: dict[str, float] = field(default_factory=dict)


class _Lines:
    """A file-like object COPY reads from: canonical lines of one SQLite `line_select`."""

    def __init__(self, cursor) -> None:
        self.cursor, self.rows = cursor, 0

    def read(self, size: int = COPY_CHUNK) -> bytes:
        parts: list[bytes] = []
        total = 0
        while total < size and (batch := self.cursor.fetchmany(FETCH_ROWS)):
            for _unit, line, *floats in batch:
                if floats:
                    line = b"\t".join([line, *map(float_text, floats)])
                parts.append(line)
                total += len(line) + 1
            self.rows += len(batch)
        return b"".join(p + b"\n" for p in parts)

    readline = read


def link_tables() -> list[tuple[str, str, str]]:
    """(link table, record column, other column) of Record's many-to-many tables."""
    links = []
    for name, table in sumatra_tables().items():
        refs = {c.name: c.references[0] for c in table.columns.values() if c.references}
        if len(refs) == 2 and RECORD in refs.values() and name != DATAKEY:
            record_column = next(c for c, t in refs.items() if t == RECORD)
            other = next(c for c in refs if c != record_column)
            links.append((name, record_column, other))
    return sorted(links)


def record_foreign_keys() -> dict[str, str]:
    """Record column → the shared table it points at (the project aside)."""
    record = sumatra_tables()[RECORD]
    return {
        c.name: c.references[0]
        for c in record.columns.values()
        if c.references and c.references[0] != PROJECT
    }


def identity_columns(table: str) -> list[ModelColumn]:
    model = sumatra_tables()[table]
    return [c for c in model.columns.values() if c.name != model.primary_key]


def create_stages(cursor, q) -> None:
    """One staging table per Sumatra table, shaped like the target's."""
    for name in sumatra_tables():
        if sql.sqlite():
            cursor.execute(sql.create_stage_like(q, name))
            continue
        cursor.execute(sql.column_types(), [q(name)])
        cursor.execute(sql.create_stage(q, name, cursor.fetchall()))


def stage_source(cursor, q, src: int, source: Inspection, target: Inspection, loaded) -> None:
    """COPY every table of one source (SQLite, or PostgreSQL read in its snapshot's
    transaction) into the staging tables."""
    remaps = content_type_remap(source, target, create=True)
    if not source.engine.is_file:  # PostgreSQL, read in its snapshot's transaction
        if sql.sqlite():
            _postgres_into_sqlite(cursor, q, src, source, remaps, loaded)
        else:
            _postgres_into_postgres(cursor, q, src, source, remaps, loaded)
        return
    assert source.store.path is not None
    if sql.sqlite():
        _stage_into_sqlite(cursor, q, src, source, remaps, loaded)
        return
    sqlite = SQLITE
    reader = sqlite.open_bytes(source.store.path)
    try:
        sqlite.attach_views(reader, source.views)
        for stored, table in source.tables.items():
            layout = table_layout(table.model, stored, table.columns)
            cursor.execute(sql.stage_source(q, layout.name, src))
            lines = _Lines(reader.execute(sqlite.line_select(layout, remaps.get(layout.name, {}))))
            cursor.cursor.copy_expert(
                sql.copy_in(q, layout.name, layout.column_names), lines, size=COPY_CHUNK
            )
            loaded.staged[layout.name] = loaded.staged.get(layout.name, 0) + lines.rows
    finally:
        reader.close()


def _stage_into_sqlite(cursor, q, src: int, source: Inspection, remaps, loaded) -> None:
    """SQLite target: the source's rows as they are (SQLite to SQLite keeps every value's
    type and bytes), content-type ids mapped, inserted in batches."""
    assert source.store.path is not None
    sqlite = SQLITE
    reader = sqlite.open_bytes(source.store.path)
    reader.text_factory = str
    try:
        sqlite.attach_views(reader, source.views)
        for stored, table in source.tables.items():
            layout = table_layout(table.model, stored, table.columns)
            names = layout.column_names
            values = []
            for name in names:
                mapping = remaps.get(layout.name, {}).get(name)
                quoted = sqlite.quote_name(name)
                values.append(sqlite.remap_case(quoted, mapping) if mapping else quoted)
            rows = reader.execute(
                f"SELECT {src}, {', '.join(values)} FROM {sqlite.quote_name(stored)}"
            )
            statement = sql.insert_stage(q, layout.name, names)
            count = 0
            while batch := rows.fetchmany(FETCH_ROWS):
                cursor.executemany(statement, batch)
                count += len(batch)
            loaded.staged[layout.name] = loaded.staged.get(layout.name, 0) + count
    finally:
        reader.close()


def _postgres_select(source: Inspection, layout, remaps, *first: str) -> str:
    """The source table's rows as they are stored, content-type ids mapped (after the
    `first` expressions)."""
    reader = source.engine
    mapped = remaps.get(layout.name, {})
    values = [
        reader.remap_case(reader.quote_name(name), mapped[name])
        if name in mapped
        else reader.quote_name(name)
        for name in layout.column_names
    ]
    return f"SELECT {', '.join([*first, *values])} FROM {reader.quote_name(layout.source_name)}"


def _postgres_into_postgres(cursor, q, src: int, source: Inspection, remaps, loaded) -> None:
    """PostgreSQL to PostgreSQL: `COPY (SELECT …) TO STDOUT` on the source's snapshot
    connection piped into `COPY … FROM STDIN` on the target's, through a bounded queue
    (memory stays flat; both ends speak COPY's text format, timestamps with their
    offset, floats in their shortest exact form)."""
    with source.store.connection.cursor() as reading:
        for stored, table in source.tables.items():
            layout = table_layout(table.model, stored, table.columns)
            cursor.execute(sql.stage_source(q, layout.name, src))
            pipe = CopyPipe()
            copy_out = f"COPY ({_postgres_select(source, layout, remaps)}) TO STDOUT"
            pipe.run(
                lambda out=copy_out, p=pipe: reading.cursor.copy_expert(out, p, size=COPY_CHUNK),
                lambda name=layout.name, cols=layout.column_names, p=pipe: (
                    cursor.cursor.copy_expert(sql.copy_in(q, name, cols), p, size=COPY_CHUNK)
                ),
            )
            loaded.staged[layout.name] = loaded.staged.get(layout.name, 0) + pipe.rows


def _postgres_into_sqlite(cursor, q, src: int, source: Inspection, remaps, loaded) -> None:
    """PostgreSQL source, SQLite target: rows through a server-side cursor, in batches;
    datetimes as Django writes them in SQLite (naive UTC)."""
    from ..engines.sqlite_load import _naive_utc

    reader = source.engine
    for stored, table in source.tables.items():
        layout = table_layout(table.model, stored, table.columns)
        names = layout.column_names
        datetimes = [
            i + 1
            for i, name in enumerate(names)
            if layout.model.columns[name].internal_type == "DateTimeField"
        ]
        statement = sql.insert_stage(q, layout.name, names)
        count = 0
        with reader.streaming_cursor(source.store) as rows:
            rows.execute(_postgres_select(source, layout, remaps, str(int(src))))
            while batch := rows.fetchmany(FETCH_ROWS):
                if datetimes:
                    batch = [_naive_utc(row, datetimes) for row in batch]
                cursor.executemany(statement, batch)
                count += len(batch)
        loaded.staged[layout.name] = loaded.staged.get(layout.name, 0) + count


class CopyPipe:
    """The file object both COPYs of a PostgreSQL-to-PostgreSQL stage use: the source's
    COPY TO writes into it (in a thread), the target's COPY FROM reads from it. At most
    QUEUED_CHUNKS chunks wait; an error on either side stops the other (the target's COPY fails,
    so nothing half-staged is kept)."""

    def __init__(self) -> None:
        self.queue: queue.Queue[bytes | None] = queue.Queue(QUEUED_CHUNKS)
        self.buffer: list[bytes] = []
        self.size = 0
        self.rows = 0
        self.failed: BaseException | None = None
        self.stopped = threading.Event()

    # the source side (COPY TO calls write once per row)
    def write(self, data) -> int:
        data = bytes(data)
        self.buffer.append(data)
        self.size += len(data)
        self.rows += data.count(b"\n")
        if self.size >= COPY_CHUNK:
            self._put(b"".join(self.buffer))
            self.buffer, self.size = [], 0
        return len(data)

    def _put(self, chunk: bytes | None) -> None:
        if not put_unless_stopped(self.queue, chunk, self.stopped, poll=0.2):
            raise RuntimeError("the target's COPY stopped")

    # the target side
    def read(self, size: int = COPY_CHUNK) -> bytes:
        chunk = self.queue.get()
        if chunk is None:
            if self.failed is not None:
                raise RuntimeError(f"the source's COPY failed: {self.failed}")
            return b""
        return chunk

    readline = read

    def run(self, copy_out, copy_in) -> None:
        """copy_out() in a thread, copy_in() here; the first error raised."""

        def produce() -> None:
            try:
                copy_out()
                if self.buffer:
                    self._put(b"".join(self.buffer))
            except BaseException as exc:  # handed to the reading side
                self.failed = exc
            finally:
                if not self.stopped.is_set():
                    self._put(None)

        thread = threading.Thread(target=produce, name="merge-copy-out", daemon=True)
        thread.start()
        try:
            copy_in()
        finally:
            self.stopped.set()
            thread.join()
        if self.failed is not None:
            raise self.failed


def _timed(loaded: Loaded, name: str):
    started = time.perf_counter()

    class _Timer:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            loaded.seconds[name] = loaded.seconds.get(name, 0.0) + time.perf_counter() - started

    return _Timer()


def map_shared_table(cursor, q, table: str, refs: list[str], loaded: Loaded, remapped=None) -> None:
    """Needed staged rows of one shared table → the target's equal rows, made when missing."""
    columns = identity_columns(table)
    cursor.execute(sql.create_need(q, table, columns, refs, remapped))
    cursor.execute(sql.insert_missing_shared(q, table, columns))
    loaded.rows[table] = loaded.rows.get(table, 0) + max(cursor.rowcount, 0)
    cursor.execute(sql.map_shared(q, table, columns))


def apply(cursor, q, record_content_type: int | None, loaded: Loaded) -> None:
    """Everything after the records' identity is decided (`sql.map_records`): shared rows,
    records, links, data keys, tags, all by INSERT … SELECT."""
    with _timed(loaded, "shared rows"):
        by_table: dict[str, list[str]] = {}
        for column, table in record_foreign_keys().items():
            by_table.setdefault(table, []).append(
                sql.staged_refs(q, RECORD, column, RECORD, "db_id")
            )
        for table, refs in sorted(by_table.items()):
            map_shared_table(cursor, q, table, refs, loaded)
        links = link_tables()
        for link, record_column, other in links:
            target = sql.column_table(link, other)
            if target == DATAKEY:
                continue
            refs = [sql.staged_refs(q, link, other, RECORD, record_column)]
            map_shared_table(cursor, q, target, refs, loaded)
        # Data keys: a record's outputs (now pointing at its new id) and its inputs.
        refs = [sql.staged_refs(q, DATAKEY, "id", RECORD, "output_from_record_id")]
        refs += [
            sql.staged_refs(q, link, other, RECORD, rc)
            for link, rc, other in links
            if sql.column_table(link, other) == DATAKEY
        ]
        remapped = {"output_from_record_id": sql.mapping(RECORD)}
        map_shared_table(cursor, q, DATAKEY, refs, loaded, remapped)
    with _timed(loaded, "records"):
        model = sumatra_tables()[RECORD]
        columns = [c for c in model.columns if c not in (model.primary_key, "label")]
        fks = {c: sql.mapping(t) for c, t in record_foreign_keys().items()}
        cursor.execute(sql.insert_records(q, RECORD, model.primary_key, columns, fks))
        loaded.rows[RECORD] = cursor.rowcount
        for link, record_column, other in links:
            cursor.execute(sql.insert_links(q, link, record_column, other, RECORD))
            loaded.rows[link] = cursor.rowcount
        if record_content_type is not None:
            cursor.execute(sql.insert_tags(q, TAG, TAGGED, RECORD), [record_content_type])
            loaded.rows[TAG] = cursor.rowcount
            cursor.execute(sql.insert_tagged(q, TAG, TAGGED, RECORD), [record_content_type])
            loaded.rows[TAGGED] = cursor.rowcount


def reset_sequences(cursor, q) -> None:
    if sql.sqlite():
        return  # AUTOINCREMENT's sqlite_sequence follows the largest id inserted
    for name, model in sumatra_tables().items():
        if model.columns[model.primary_key].internal_type != "AutoField":
            continue  # the project: its id is its name
        cursor.execute(sql.reset_sequence(q, name, model.primary_key), [name, model.primary_key])


def fingerprint_collisions(
    cursor, q, record_content_type: int | None, *, inserted: bool = False
) -> None:
    """The fingerprint tables of the records of colliding keys, staged and in the target
    (`inserted`: of the inserted records, on both sides, to check them)."""
    record = sumatra_tables()[RECORD]
    fks = record_foreign_keys()
    plain = [
        c
        for c in record.columns.values()
        if c.name not in (record.primary_key, "label", "project_id") and c.name not in fks
    ]
    foreign_keys = [(c, t, identity_columns(t)) for c, t in sorted(fks.items())]
    content = [c for c in identity_columns(DATAKEY) if c.name != "output_from_record_id"]
    links = [
        (link, rc, other, table, content if table == DATAKEY else identity_columns(table))
        for link, rc, other in link_tables()
        for table in [sql.column_table(link, other)]
    ]
    for staged in (True, False):
        if inserted:
            cursor.execute(sql.inserted_candidates(q, RECORD, staged))
        else:
            cursor.execute(sql.candidates(q, RECORD, staged))
        if not sql.sqlite():
            cursor.execute(sql.analyze(q, [sql.candidate_table(staged)]))
        statement = sql.fingerprints(q, staged, plain, foreign_keys, links, content)
        cursor.execute(statement, [record_content_type if record_content_type is not None else -1])

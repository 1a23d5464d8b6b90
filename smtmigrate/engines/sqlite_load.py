"""Copies into SQLite: the new store is built in a hidden partial file next to the target
(0600, named for this process), in one transaction, and renamed into place only when the
copy verified; a killed copy's partial is removed by the next one."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timezone
from glob import escape as glob_escape
from pathlib import Path
from typing import TYPE_CHECKING

from .. import interrupts
from ..canonical import TableLayout
from ..errors import Refused
from .base import CopyTarget, TableResult, where_not

if TYPE_CHECKING:
    from ..copy import CopyPlan
    from ..layout import Inspection
    from ..locations import Store
    from .sqlite import SqliteEngine

SOURCE_SCHEMA = "src"  # the source store attached to the new store's connection


@contextmanager
def copy_target(engine: SqliteEngine, plan: CopyPlan, events, phase) -> Iterator[SqliteCopyTarget]:
    final = plan.target.path
    assert final is not None
    remove_stale_partials(final.parent, glob_escape(final.name))
    partial = final.with_name(f".{final.name}.smtmigrate-{os.getpid()}")
    try:
        # The new store holds every record: create it 0600 before SQLite would create
        # it 0644 (its -journal and -wal files take the main file's mode). A file of
        # this name is a partial of this process id, not of a live copy: replace it.
        partial.unlink(missing_ok=True)
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        yield SqliteCopyTarget(engine, plan.target, final, partial, phase)
        interrupts.check()
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)


class SqliteCopyTarget(CopyTarget):
    def __init__(
        self, engine: SqliteEngine, target: Store, final: Path, partial: Path, phase
    ) -> None:
        self.engine, self.final, self.partial, self.phase = engine, final, partial, phase
        self.target = target

    @contextmanager
    def schema_store(self) -> Iterator[Store]:
        partial = self.target.file_sibling(self.partial, str(self.partial), read_only=False)
        with partial as store:
            yield store

    @contextmanager
    def reading(
        self, prepared: Inspection, inspect: Callable[[Store], Inspection]
    ) -> Iterator[Inspection]:
        with self.target.file_sibling(self.partial, str(self.final)) as store:
            yield inspect(store)

    def load(self, plan: CopyPlan, remaps, events) -> tuple[list[TableResult], dict]:
        """INSERT … SELECT from the attached source file, or rows read from a PostgreSQL
        store, in one transaction; foreign keys checked before it commits."""
        results = []
        connection = sqlite3.connect(self.partial, isolation_level=None)
        from_postgres = plan.source.vendor != "sqlite"  # PostgreSQL or MariaDB: rows
        try:
            if not from_postgres:
                assert plan.source.store.path is not None  # a SQLite source is a file
                connection.execute(
                    f"ATTACH DATABASE ? AS {SOURCE_SCHEMA}",
                    [self.engine.read_only_uri(plan.source.store.path)],
                )
                self.engine.attach_views(
                    connection, plan.source.views, SOURCE_SCHEMA
                )  # 0.4-0.6: temp.*
            with self.phase("load"):
                connection.execute("BEGIN")
                for layout in plan.layouts:
                    remap = remaps.get(layout.name, {})
                    insert = self._from_postgres if from_postgres else self._from_sqlite
                    results.append(insert(connection, layout, plan, remap, events))
                problems = connection.execute("PRAGMA main.foreign_key_check").fetchall()
                if problems:
                    raise Refused(f"foreign keys to missing rows, e.g. {problems[0]}")
                interrupts.check()
                connection.execute("COMMIT")
        finally:
            connection.close()
        return results, {}

    def _from_sqlite(self, connection, layout: TableLayout, plan, remap, events) -> TableResult:
        """One INSERT … SELECT from the attached source: SQLite copies the values itself."""
        started = time.perf_counter()
        events.table_start(layout.name, plan.row_counts[layout.name])
        q = self.engine.quote_name
        values = [
            self.engine.remap_case(q(name), remap[name], otherwise=q(name))
            if name in remap
            else q(name)
            for name in layout.column_names
        ]
        columns = ", ".join(q(name) for name in layout.column_names)
        schema = "temp" if layout.source_name in plan.source.views else SOURCE_SCHEMA
        where = where_not(q(layout.model.primary_key), plan.skip(layout.name))
        cursor = connection.execute(
            f"INSERT INTO main.{q(layout.name)} ({columns}) "
            f"SELECT {', '.join(values)} FROM {schema}.{q(layout.source_name)}{where}"
        )
        result = TableResult(layout.name, cursor.rowcount, 0, time.perf_counter() - started)
        events.table_done(result)
        return result

    def _from_postgres(self, connection, layout: TableLayout, plan, remap, events) -> TableResult:
        """Rows of a PostgreSQL store into the new SQLite one, through a server-side cursor
        (memory stays flat); datetimes as Django writes them in SQLite: naive UTC."""

        started = time.perf_counter()
        events.table_start(layout.name, plan.row_counts[layout.name])
        reader = plan.source.engine
        q = reader.quote_name
        values = [
            reader.remap_case(q(name), remap[name]) if name in remap else q(name)
            for name in layout.column_names
        ]
        datetimes = [
            i
            for i, name in enumerate(layout.column_names)
            if layout.model.columns[name].internal_type == "DateTimeField"
        ]
        placeholders = ", ".join("?" * len(values))
        qs = self.engine.quote_name
        columns = ", ".join(qs(name) for name in layout.column_names)
        insert = f"INSERT INTO main.{qs(layout.name)} ({columns}) VALUES ({placeholders})"
        rows = 0
        with reader.streaming_cursor(plan.source.store) as cursor:
            where = where_not(q(layout.model.primary_key), plan.skip(layout.name))
            cursor.execute(f"SELECT {', '.join(values)} FROM {q(layout.source_name)}{where}")
            while batch := cursor.fetchmany(self.engine.fetch_rows):
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
            if values[i].tzinfo is not None:  # MariaDB's are naive, and UTC already
                values[i] = values[i].astimezone(timezone.utc).replace(tzinfo=None)
            values[i] = values[i].isoformat(" ")
    return tuple(values)


def remove_stale_partials(directory: Path, name_glob: str) -> None:
    """Partial files of copies that were killed (their process is gone) are removed:
    those of `name_glob` files in `directory`."""
    for partial in directory.glob(f".{name_glob}.smtmigrate-*"):
        pid = partial.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not alive(int(pid)):
            partial.unlink(missing_ok=True)


def alive(pid: int) -> bool:
    """Whether a process of this id exists (partial files and snapshots name theirs)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True

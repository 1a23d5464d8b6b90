"""SQLite: quoting, the read-only URI, canonical text in SQLite's SQL, and copies into a
new SQLite store (built in a hidden file beside the target, renamed into place once
verified, so the target path only ever holds a complete, checked store)."""

from __future__ import annotations

import ctypes
import shutil
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote as url_quote

from django.db import DatabaseError

from ..canonical import NULL, Checksum, RowBlocks, TableLayout, summed
from ..errors import SmtmigrateError
from ..tables import ModelColumn
from .base import (
    INTEGER_TYPES,
    Engine,
    Remap,
    is_integer,
    where_not,
)
from .sqlite_load import copy_target
from .sqlite_screen import SCREEN, RowScreen
from .sqlite_units import UnitChunks, keyed_by_rowid

if TYPE_CHECKING:
    from ..copy import CopyPlan
    from ..layout import Inspection

FETCH_ROWS = 2_000
# SQLite's primary result codes (the sqlite3 module names them from Python 3.11 on only).
SQLITE_BUSY, SQLITE_LOCKED, SQLITE_CORRUPT = 5, 6, 11
# The Python function, registered on an SQLite store's connection, that tells whether a
# value's bytes are valid UTF-8.
IS_UTF8 = "smtmigrate_is_utf8"


# sqlite3_config's option that turns the memory statistics off (sqlite3.h).
_SQLITE_CONFIG_MEMSTATUS = 9
_memory_statistics_off = False


def turn_memory_statistics_off() -> bool:
    """Stop SQLite counting its memory, before this process opens any SQLite database;
    whether it is off now.

    SQLite's memory statistics take one process-wide mutex on every allocation: threads
    reading at once (the audit, a copy's two loads) wait on each other. Two threads
    building the canonical lines of two tables took 3.7 s where one thread took 2.0 s,
    and 0.65 s with the statistics off. SQLite recommends building without them
    (SQLITE_DEFAULT_MEMSTATUS=0), but Python's module links the system's library, built
    with them; nothing here reads them. They can only be turned off while SQLite is shut
    down, which is safe only while it holds no memory: no connection is open."""
    global _memory_statistics_off
    if _memory_statistics_off:
        return True
    try:
        import _sqlite3

        library = ctypes.CDLL(_sqlite3.__file__)  # its symbols and its libsqlite3's
        library.sqlite3_memory_used.restype = ctypes.c_int64
        if library.sqlite3_memory_used() != 0:  # something is open: leave SQLite be
            return False
        if library.sqlite3_shutdown() != 0:
            return False
        turned_off = library.sqlite3_config(_SQLITE_CONFIG_MEMSTATUS, ctypes.c_int(0)) == 0
        if library.sqlite3_initialize() != 0:
            raise sqlite3.OperationalError("SQLite did not start again")
    except (ImportError, OSError, AttributeError):  # a build without a shared SQLite
        return False
    _memory_statistics_off = turned_off
    return turned_off


class SqliteEngine(Engine):
    vendor = "sqlite"
    is_file = True
    snapshot_shared_by_threads = True
    chr_function = "char"
    enforces_types = False
    temp_table_lifetime = ""
    binary_collation = "BINARY"
    defer_constraints = "PRAGMA defer_foreign_keys = ON"

    def integer(self, expression: str) -> str:
        return f"CAST({expression} AS INTEGER)"

    def blob(self, expression: str) -> str:
        """A value as its bytes: SQLite's text functions stop at a NUL, and a store may
        hold text that is not UTF-8, which Python's sqlite3 refuses to decode."""
        return f"CAST({expression} AS BLOB)"

    def preview(self, column: str, chars: int) -> str:
        return self.blob(super().preview(column, chars))

    def id_list(self, column: str) -> str:
        return f"group_concat({self.quote_name(column)})"

    def sorted_join(self, expression: str, *, distinct: bool = False) -> str:
        """`sorted_join`, an aggregate `register_merge_functions` adds."""
        unique = "DISTINCT " if distinct else ""
        return f"sorted_join({unique}{expression})"

    def text_summary(self, expression: str) -> str:
        return f"length({expression})"  # no hash function: the length will do

    def register_merge_functions(self, raw) -> None:
        """What SQLite lacks and the merge's statements use: md5(), and a sorted join of
        distinct values (PostgreSQL's string_agg(DISTINCT … ORDER BY …))."""
        import hashlib

        class SortedJoin:
            def __init__(self) -> None:
                self.values: list[str] = []

            def step(self, value) -> None:
                if value is not None:
                    self.values.append(str(value))

            def finalize(self) -> str | None:
                return chr(30).join(sorted(self.values)) if self.values else None

        raw.create_function(
            "md5",
            1,
            lambda text: (
                None
                if text is None
                else hashlib.md5(
                    text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
                ).hexdigest()
            ),
            deterministic=True,
        )
        raw.create_aggregate("sorted_join", 1, SortedJoin)

    def declared_types(self, cursor, table: str) -> dict[str, str]:
        """As declared at CREATE TABLE, lower case."""
        cursor.execute(f"PRAGMA table_info({self.quote_name(table)})")
        return {row[1]: row[2].lower() for row in cursor.fetchall()}

    def table_description(self, connection, cursor, table: str) -> list[Any]:
        """Django's `get_table_description` without the columns' collations, which no
        reader here uses: Django finds them by parsing the CREATE TABLE text with sqlparse,
        two thirds of inspecting a store (an inspection describes 18 tables; a move
        inspects its SQLite snapshot once, a `verify` each store). The rest is Django's
        code as it is."""
        from django.db.backends.sqlite3.introspection import FieldInfo, get_field_size

        cursor.execute(f"PRAGMA table_xinfo({self.quote_name(table)})")
        table_info = cursor.fetchall()
        if not table_info:
            raise DatabaseError(f"Table {table} does not exist (empty pragma).")
        json_columns = set()
        if connection.features.can_introspect_json_field:
            for line in table_info:
                column = line[1]
                cursor.execute(
                    "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = %s "
                    "AND sql LIKE %s",
                    [table, f'%json_valid("{column}")%'],
                )
                if cursor.fetchone():
                    json_columns.add(column)
        description = [
            FieldInfo(
                name,
                data_type,
                get_field_size(data_type),
                None,
                None,
                None,
                not notnull,
                default,
                None,
                bool(pk),
                name in json_columns,
            )
            for _, name, data_type, notnull, default, pk, hidden in table_info
            if hidden in (0, 2, 3)  # normal, virtual generated, stored generated columns
        ]
        primary_key = [index for index, info in enumerate(description) if info.pk]
        if len(primary_key) > 1:  # a composite key marks no single column as the key
            for index in primary_key:
                description[index] = description[index]._replace(pk=False)
        return description

    def unique_sets(self, connection, cursor, table: str) -> set[frozenset[str]]:
        """The primary key and every unique index, from SQLite's own PRAGMAs: an inline
        UNIQUE constraint is an index of its own there (`sqlite_autoindex_…`), which Django
        finds by parsing the CREATE TABLE text with sqlparse instead (slow). A TEMP view
        of a 0.4-0.6 store (generations.py) hides a table of the same name from the PRAGMAs
        but not from Django's parse: Django's answer stands there."""
        cursor.execute(
            "SELECT 1 FROM sqlite_temp_master WHERE type = 'view' AND name = %s", [table]
        )
        if cursor.fetchone():
            return super().unique_sets(connection, cursor, table)
        quoted = self.quote_name(table)
        cursor.execute(f"PRAGMA table_info({quoted})")
        key = frozenset(row[1] for row in cursor.fetchall() if row[5])
        sets = {key} if key else set()
        cursor.execute(f"PRAGMA index_list({quoted})")
        for index in [row[1] for row in cursor.fetchall() if row[2]]:
            cursor.execute(f"PRAGMA index_info({self.quote_name(index)})")
            sets.add(frozenset(row[2] for row in cursor.fetchall()))
        return sets

    # -- the audit: what SQLite let in that PostgreSQL would reject ------------------------

    def register_functions(self, connection) -> None:
        connection.connection.create_function(IS_UTF8, -1, _is_utf8, deterministic=True)

    def all_utf8(self, values: str) -> str:
        return f"{IS_UTF8}({values})"

    def value_bytes(self, expression: str) -> str:
        return self.blob(expression)

    def screen_key(self, column: str, declared: str) -> str:
        """A column of the identity as the row screen hashes it: text as its bytes (which
        Python's sqlite3 would refuse to decode if they are not UTF-8), numbers as numbers
        (1 and 1.0 are one group to GROUP BY). A column of TEXT affinity holds no numbers:
        its bytes, as the screen reads them anyway (a CASE per value costs a third more)."""
        c = self.quote_name(column)
        kind = declared.upper()
        if "INT" not in kind and any(text in kind for text in ("CHAR", "CLOB", "TEXT")):
            return self.blob(c)
        return f"CASE typeof({c}) WHEN 'text' THEN CAST({c} AS BLOB) ELSE {c} END"

    def row_screen(self, connection, keyed: str, width: int, values: list[str]):
        """The row screen (sqlite_screen.py) on this connection, and its call: `keyed`
        whether a row's first `width` values are hashed as its identity."""
        screen = RowScreen(width)
        connection.connection.create_function(SCREEN, -1, screen)
        return screen, f"{SCREEN}({keyed}, {', '.join(values)})"

    def plain_collation(self, cursor, table: str) -> bool:
        """Whether GROUP BY compares the table's text as bytes: no column declares a
        collation (the row screen's identity hashes bytes)."""
        cursor.execute("SELECT sql FROM sqlite_master WHERE name = %s", [table])
        row = cursor.fetchone()
        return row is not None and "COLLATE" not in (row[0] or "").upper()

    def invalid_value_checks(self, inspection: Inspection, table, column: ModelColumn):
        q, name = self.quote_name, column.name
        c = q(name)
        if column.is_text or column.internal_type == "GenericIPAddressField":
            # Both screened by the row's one Python call (sqlite_screen.py), which finds
            # a NUL faster than instr() does; counted in SQL only when the screen fails.
            screen = self.blob(c)
            yield (
                f"instr({c}, char(0)) > 0",
                "NUL character (PostgreSQL text cannot hold \\x00)",
                screen,
            )
            yield f"typeof({c}) = 'blob'", "binary value in a text column", None
            # SQLite stores whatever bytes it is given as TEXT (e.g. a lone surrogate, or
            # Latin-1); the copy passes them on as they are and PostgreSQL would reject the
            # whole copy half-way. SQL cannot tell, so a Python function does (fast for ASCII).
            yield (
                f"typeof({c}) = 'text' AND NOT {self.all_utf8(self.blob(c))}",
                "not valid UTF-8 (e.g. a lone surrogate): PostgreSQL rejects it",
                screen,
            )
        elif column.internal_type == "DateTimeField":
            # Django writes 'YYYY-MM-DD HH:MM:SS[.ffffff]', and the copy takes the value as
            # written. Anything else (a Julian day number, an offset, 24:00, February 30,
            # year 0) SQLite's date functions or PostgreSQL would read as another instant,
            # or not at all: refused. The date/time part is proven by a round trip through
            # julianday; the rest is a fraction of digits; string order bounds the range
            # (SQLite's date functions end at 9999-12-31 23:59:59.999).
            head = f"substr({c}, 1, 19)"
            django_format = (
                # (substr: a literal like '0001' would take the column's numeric affinity)
                f"typeof({c}) = 'text' AND substr({c}, 1, 4) <> '0000' "
                f"AND {c} < '9999-12-31 23:59:59.9995' "
                f"AND CASE length({c}) WHEN 19 THEN 1 "
                f"WHEN 26 THEN substr({c}, 20, 7) GLOB '.[0-9][0-9][0-9][0-9][0-9][0-9]' "
                f"ELSE substr({c}, 20, 1) = '.' AND length({c}) > 20 "
                f"AND NOT substr({c}, 21) GLOB '*[^0-9]*' END "
                f"AND datetime(julianday({head})) = {head}"
            )
            yield (
                f"{c} IS NOT NULL AND NOT coalesce({django_format}, 0)",
                "not a date/time PostgreSQL can read as written (YYYY-MM-DD HH:MM:SS[.ffffff])",
                None,
            )
            # PostgreSQL keeps microseconds: the copy would drop any further digits unseen
            # (and the verification, comparing the same canonical text, could not tell).
            yield (
                f"length({c}) > 26 AND substr({c}, 27) GLOB '*[1-9]*'",
                "fraction of a second finer than the microseconds PostgreSQL keeps",
                None,
            )
        elif column.internal_type == "FloatField":
            yield f"typeof({c}) NOT IN ('real', 'integer', 'null')", "not a number", None
        elif (
            column.internal_type in INTEGER_TYPES
            and not column.references  # the foreign-key check below catches non-integers too
            and name != table.model.primary_key  # an INTEGER PRIMARY KEY is SQLite's rowid
        ):
            yield f"typeof({c}) NOT IN ('integer', 'null')", "not an integer", None
        if column.internal_type == "PositiveIntegerField":
            yield f"{c} < 0", "negative value in a positive-integer column", None
        if not column.null and table.columns[name].null:
            yield f"{c} IS NULL", "NULL in a column that is NOT NULL today", None
        if column.references:
            parent_model, parent_column = column.references
            parent = inspection.stored_name(parent_model)
            if parent in inspection.table_names:
                yield (
                    f"{c} IS NOT NULL AND {c} NOT IN (SELECT {q(parent_column)} FROM {q(parent)})",
                    f"foreign key to a missing row of {parent}",
                    None,
                )

    # -- files ----------------------------------------------------------------------------

    def read_only_uri(self, path: Path | str) -> str:
        return f"file:{url_quote(str(path))}?mode=ro"

    def open_read_only(self, path: Path, **options: Any) -> sqlite3.Connection:
        """A read-only sqlite3 connection to a store file."""
        return sqlite3.connect(self.read_only_uri(path), uri=True, **options)

    def backup(self, source: Path, path: Path, *, timeout: float) -> None:
        """Copy the store at `source` into a new file `path` as of one read transaction: a
        snapshot (snapshot.py). Raises sqlite3.Error.

        A rollback-journal store (Sumatra's default) is copied by the kernel while a read
        transaction holds its SHARED lock: no writer can change the file meanwhile, and it
        is 4-5x faster than the backup API (2.4 s against 12.8 s for 3.4 GB), so writers
        wait that much less. A WAL store changes its file under readers (checkpoints):
        SQLite's backup API copies its pages in one step."""
        reader = self.open_read_only(source, timeout=timeout)
        try:
            if reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                _copy_pages(reader, path)
            else:
                reader.execute("BEGIN")
                reader.execute("SELECT count(*) FROM sqlite_master")  # takes SHARED
                try:
                    shutil.copyfile(source, path)
                except OSError as exc:  # e.g. the disk is full: said as SQLite says it
                    raise sqlite3.OperationalError(f"disk I/O error: {exc}") from exc
        finally:
            reader.close()  # ends the read transaction

    def open_bytes(self, path: Path) -> sqlite3.Connection:
        """A read-only connection that hands out a store's bytes as they are: no decoding,
        so what is hashed and what the target judges is exactly what the store holds."""
        connection = self.open_read_only(path, check_same_thread=False)
        connection.text_factory = bytes
        return connection

    # -- canonical text -------------------------------------------------------------------

    def canonical_expression(self, column: ModelColumn, remap: Remap | None = None) -> str:
        c = self.quote_name(column.name)
        null = f"'{NULL}'"
        if remap:
            return f"ifnull({self.remap_case(c, remap)}, {null})"
        if is_integer(column):
            return f"ifnull({self.integer(c)}, {null})"
        if column.internal_type == "DateTimeField":
            # As written: the audit admits only Django's 'YYYY-MM-DD HH:MM:SS[.ffffff]', and
            # SQLite's date functions would round through milliseconds on the way.
            fraction = f"CASE WHEN length({c}) > 20 THEN substr({c}, 21) ELSE '' END"
            return (
                f"ifnull(substr({c}, 1, 19) || '.' || "
                f"substr({fraction} || '000000', 1, 6) || '+00', {null})"
            )
        return f"ifnull({self.escaped(c)}, {null})"

    @contextmanager
    def line_blocks(self, inspection, layout: TableLayout, remaps, skip) -> Iterator[Any]:
        """The blocks from a read-only connection that hands out the store's bytes: a
        table keyed by its rowid, without floats, unit by unit joined by SQLite
        (`UnitChunks`); others row by row."""
        assert inspection.store.path is not None
        connection = self.open_bytes(inspection.store.path)
        try:
            self.attach_views(connection, inspection.views)
            view = layout.source_name in inspection.views
            if layout.floats or view or not keyed_by_rowid(connection, layout):
                cursor = connection.execute(self.line_select(layout, remaps, skip))
                yield RowBlocks(cursor, bool(layout.floats), FETCH_ROWS)
            else:
                select = self.chunk_select(layout, remaps, skip)
                yield UnitChunks(connection, self.quote_name(layout.source_name), select)
        finally:
            connection.close()

    def chunk_select(self, layout: TableLayout, remaps, skip) -> str:
        """`line_select` of a table without floats as (rowid, line) of the rows with
        rowid from ? to ?, at most ? of them, in rowid order (UnitChunks)."""
        q = self.quote_name
        line = self.line([self.canonical_expression(c, remaps.get(c.name)) for c in layout.columns])
        skipped = where_not(q(layout.model.primary_key), skip).replace(" WHERE ", " AND ", 1)
        return (
            f"SELECT rowid AS r, {line} AS line FROM {q(layout.source_name)} "
            f"WHERE rowid BETWEEN ? AND ?{skipped} ORDER BY rowid LIMIT ?"
        )

    def checksum(self, cursor, layout: TableLayout, remaps=None, skip=None) -> Checksum:
        """Checksum of a table of an open SQLite database, from the canonical lines."""
        cursor.execute(self.line_select(layout, remaps or {}, skip))
        return summed(RowBlocks(cursor, bool(layout.floats), FETCH_ROWS))

    def table_checksum(self, inspection, layout, remaps=None, skip=None) -> Checksum:
        """From the lines a copy would send (`line_blocks`: unit by unit where it can)."""
        store = inspection.store
        if store.path is None:
            raise SmtmigrateError(f"{store.display}: cannot checksum this store")
        try:
            with self.line_blocks(inspection, layout, remaps or {}, skip) as blocks:
                return summed(blocks)
        except sqlite3.Error as exc:
            raise store.read_error(exc) from exc

    # -- copies into SQLite (sqlite_load.py) ---------------------------------------------

    fetch_rows = FETCH_ROWS

    def copy_target(self, plan: CopyPlan, events, phase) -> AbstractContextManager[Any]:
        """A new store built in a hidden partial file, renamed into place only when the
        copy verified (sqlite_load.py)."""
        return copy_target(self, plan, events, phase)

    def attach_views(self, connection, statements: Mapping[str, str], schema: str = "main"):
        """A Sumatra 0.4-0.6 store's views in today's shape (generations.py) on a plain
        sqlite3 connection, over the store's tables in `schema` (e.g. "src" when it is
        attached to the target's connection)."""
        for statement in statements.values():
            connection.execute(statement.format(schema=self.quote_name(schema)))


def _copy_pages(reader: sqlite3.Connection, path: Path) -> None:
    """Every page `reader` sees, in one backup step (one read transaction), into `path`."""
    target = sqlite3.connect(path)
    # A throw-away file: no journal, no fsync (measured: several times faster on a
    # 337 MB store, and the source stays locked for that much less).
    target.execute("PRAGMA journal_mode = OFF")
    target.execute("PRAGMA synchronous = OFF")

    def give_up_when_locked(status: int, remaining: int, total: int) -> None:
        # The source's busy handler has already waited its timeout for the lock;
        # Python would otherwise retry for ever.
        if status in (SQLITE_BUSY, SQLITE_LOCKED):
            raise sqlite3.OperationalError("database is locked")

    try:
        reader.backup(target, pages=-1, progress=give_up_when_locked)
        target.close()
        # A copy of a WAL store says WAL in its header; it is only ever read, and a
        # read-only WAL database needs -shm files: make it a plain rollback-journal file.
        target = sqlite3.connect(path)
        target.execute("PRAGMA journal_mode = DELETE")
    finally:
        target.close()


def _is_utf8(*values: bytes | None) -> bool:
    """Whether every value's bytes are UTF-8 as PostgreSQL means it: Python's strict
    decoder has the same rules (no surrogates, no overlong forms, nothing above U+10FFFF)."""
    for value in values:
        if value is None or value.isascii():
            continue
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True

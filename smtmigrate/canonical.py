"""One spelling of every row, produced by SQL in SQLite and in PostgreSQL alike.

A row's canonical form is the line PostgreSQL's COPY text format would carry for it:
columns joined by tabs, `\\N` for NULL (so NULL and '' stay apart), backslash, tab,
newline and carriage return escaped, integers in decimal, datetimes as
`YYYY-MM-DD HH:MM:SS.ffffff+00` (UTC, whatever the session's TimeZone). Both engines
build it in SQL, so the copy sends it to COPY as it is and the verification can compare
`md5` sums of it computed on either side.

Floats are the exception: SQLite cannot print a double exactly, and PostgreSQL's shortest
form is not Python's. They are carried as Python's `repr` (shortest, exact) in COPY and
compared by their IEEE-754 bits (`float8send` on PostgreSQL, `struct` in Python).
"""

from __future__ import annotations

import hashlib
import sqlite3
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote as url_quote

from .schema import ModelColumn, ModelTable

NULL = "\\N"
INTEGER_TYPES = frozenset(
    {"AutoField", "BigAutoField", "IntegerField", "BigIntegerField", "PositiveIntegerField"}
)


@dataclass(frozen=True)
class TableLayout:
    """A table as copied: today's columns, its name in the store at hand, floats last."""

    model: ModelTable
    source_name: str
    columns: tuple[ModelColumn, ...]  # everything but floats, in model order
    floats: tuple[ModelColumn, ...]

    @property
    def name(self) -> str:
        return self.model.name

    def in_store(self, name: str) -> TableLayout:
        """The same table under its name in another store (e.g. a legacy tag table)."""
        return TableLayout(self.model, name, self.columns, self.floats)

    @property
    def column_names(self) -> list[str]:
        """In the order COPY receives them."""
        return [c.name for c in self.columns + self.floats]


def table_layout(model: ModelTable, source_name: str, present: Iterable[str]) -> TableLayout:
    present = set(present)
    columns = [c for name, c in model.columns.items() if name in present]
    return TableLayout(
        model,
        source_name,
        tuple(c for c in columns if c.internal_type != "FloatField"),
        tuple(c for c in columns if c.internal_type == "FloatField"),
    )


def _escaped(expr: str, char: str) -> str:
    """COPY text escaping of a text expression. `char` is the engine's chr(): SQLite's
    `char`, PostgreSQL's `chr`. The same literals parse alike in both engines
    (PostgreSQL's standard_conforming_strings keeps backslashes in '...' as they are)."""
    expr = f"replace({expr}, '\\', '\\\\')"
    for code, escape in ((9, "\\t"), (10, "\\n"), (13, "\\r")):
        expr = f"replace({expr}, {char}({code}), '{escape}')"
    return expr


def when_clauses(remap: Mapping[int, int]) -> str:
    """`WHEN old THEN new …` of a CASE that maps ids (integers only: nothing pasted)."""
    return " ".join(f"WHEN {int(old)} THEN {int(new)}" for old, new in remap.items())


def where_not(column: str, skip: Iterable[int] | None) -> str:
    """` WHERE column NOT IN (…)` leaving out rows by id (integers only), or ''."""
    if not skip:
        return ""
    return f" WHERE {column} NOT IN ({', '.join(str(int(i)) for i in sorted(skip))})"


def sqlite_expression(column: ModelColumn, quote, remap: Mapping[int, int] | None = None) -> str:
    """The canonical text of one column, in SQLite's SQL."""
    c = quote(column.name)
    if remap:
        cases = when_clauses(remap)
        return f"ifnull(CASE CAST({c} AS INTEGER) {cases} ELSE CAST({c} AS INTEGER) END, '{NULL}')"
    kind = column.internal_type
    if kind in INTEGER_TYPES or (column.references and not column.is_text):
        return f"ifnull(CAST({c} AS INTEGER), '{NULL}')"
    if kind == "DateTimeField":
        # As written: the audit admits only Django's 'YYYY-MM-DD HH:MM:SS[.ffffff]', and
        # SQLite's date functions would round through milliseconds on the way.
        fraction = f"CASE WHEN length({c}) > 20 THEN substr({c}, 21) ELSE '' END"
        return (
            f"ifnull(substr({c}, 1, 19) || '.' || "
            f"substr({fraction} || '000000', 1, 6) || '+00', '{NULL}')"
        )
    return f"ifnull({_escaped(c, 'char')}, '{NULL}')"


def postgres_expression(column: ModelColumn, quote, remap: Mapping[int, int] | None = None) -> str:
    """The canonical text of one column, in PostgreSQL's SQL (the same bytes as SQLite's)."""
    c = quote(column.name)
    if remap:
        return f"coalesce((CASE {c} {when_clauses(remap)} ELSE {c} END)::text, '{NULL}')"
    kind = column.internal_type
    if kind == "DateTimeField":
        return (
            f"coalesce(to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00', "
            f"'{NULL}')"
        )
    if kind in INTEGER_TYPES or (column.references and not column.is_text):
        return f"coalesce({c}::text, '{NULL}')"
    if kind == "GenericIPAddressField":  # inet's text() adds /32; abbrev() is its output form
        return f"coalesce(abbrev({c}), '{NULL}')"
    return f"coalesce({_escaped(f'{c}::text', 'chr')}, '{NULL}')"


def line_sql(expressions: list[str]) -> str:
    return " || char(9) || ".join(expressions) if expressions else "''"


def sqlite_line_sql(
    layout: TableLayout,
    quote,
    remaps: Mapping[str, Mapping[int, int]],
    skip: Iterable[int] | None = None,
) -> str:
    """SELECT of (canonical line, float columns…) from the source table, but the rows
    whose id is in `skip`."""
    line = line_sql([sqlite_expression(c, quote, remaps.get(c.name)) for c in layout.columns])
    floats = [quote(c.name) for c in layout.floats]
    where = where_not(quote(layout.model.primary_key), skip)
    return f"SELECT {', '.join([line, *floats])} FROM {quote(layout.source_name)}{where}"


def postgres_checksum_sql(
    layout: TableLayout,
    quote,
    remaps: Mapping[str, Mapping[int, int]] | None = None,
    skip: Iterable[int] | None = None,
) -> str:
    """count(*) and the order-independent sum of every row's md5, computed by PostgreSQL."""
    remaps = remaps or {}
    parts = [postgres_expression(c, quote, remaps.get(c.name)) for c in layout.columns]
    parts += [
        f"coalesce(encode(float8send({quote(c.name)}), 'hex'), '{NULL}')" for c in layout.floats
    ]
    line = " || chr(9) || ".join(parts) if parts else "''"
    return (
        f"SELECT count(*), coalesce(sum(('x' || left(md5({line}), 16))::bit(64)::bigint), 0) "
        f"FROM {quote(layout.source_name)}{where_not(quote(layout.model.primary_key), skip)}"
    )


def sqlite_quote(name: str) -> str:
    """SQLite's quoting of an identifier (for connections Django does not manage)."""
    return '"' + name.replace('"', '""') + '"'


def open_sqlite_bytes(path: Path) -> sqlite3.Connection:
    """A read-only connection that hands out a store's bytes as they are: no decoding, so
    what is hashed and what PostgreSQL judges is exactly what the store holds."""
    connection = sqlite3.connect(
        f"file:{url_quote(str(path))}?mode=ro", uri=True, check_same_thread=False
    )
    connection.text_factory = bytes
    return connection


def float_bits(value: float | None) -> bytes:
    return NULL.encode() if value is None else struct.pack(">d", value).hex().encode()


def float_text(value: float | None) -> bytes:
    """Python's repr is the shortest text that reads back as the same double."""
    return NULL.encode() if value is None else repr(float(value)).encode()


def row_hash(line: bytes, floats: tuple) -> int:
    """The row's contribution to its table's checksum: the first 8 bytes of an md5."""
    if isinstance(line, str):
        line = line.encode()
    if floats:
        line = b"\t".join([line, *(float_bits(f) for f in floats)])
    return int.from_bytes(hashlib.md5(line).digest()[:8], "big", signed=True)


class Checksum:
    """An order-independent checksum: a row count and a sum of row hashes."""

    __slots__ = ("rows", "total")

    def __init__(self, rows: int = 0, total: int = 0) -> None:
        self.rows, self.total = rows, total

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Checksum) and (self.rows, self.total) == (other.rows, other.total)

    def __repr__(self) -> str:
        return f"Checksum(rows={self.rows}, total={self.total})"

    @property
    def digest(self) -> str:
        return f"{self.total & (2**64 - 1):016x}"


def sqlite_checksum(cursor, layout: TableLayout, quote, remaps=None, skip=None) -> Checksum:
    """Checksum of a table in an SQLite database, computed from the same canonical lines."""
    cursor.execute(sqlite_line_sql(layout, quote, remaps or {}, skip))
    checksum = Checksum()
    while batch := cursor.fetchmany(10_000):
        checksum.rows += len(batch)
        checksum.total += sum(row_hash(line, tuple(floats)) for line, *floats in batch)
    return checksum

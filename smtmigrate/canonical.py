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

The SQL that builds the line lives with each engine (`engines/*.py`,
`canonical_expression`); this module holds what is the same everywhere: the layout of a
table as copied, and the hashing in Python.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from .tables import ModelColumn, ModelTable

NULL = "\\N"


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


def lines_hash(lines: list[bytes]) -> int:
    """The sum of `row_hash(line, ())` over lines without floats, in one comprehension:
    the hot loop of every copy (a call of `row_hash` per row costs twice as much)."""
    if lines and isinstance(lines[0], str):  # a connection that hands out text
        lines = [line.encode() for line in lines]
    md5, to_int = hashlib.md5, int.from_bytes
    return sum([to_int(md5(line).digest()[:8], "big", signed=True) for line in lines])


def batch_hash(batch: list[tuple], floats: bool) -> int:
    """The sum of the hashes of rows of an engine's `line_select` (the canonical line,
    then any floats)."""
    if not floats:
        return lines_hash([line for (line,) in batch])
    return sum(row_hash(line, tuple(values)) for line, *values in batch)


def load_lines(batch: list[tuple], floats: bool) -> tuple[list[bytes], int]:
    """Rows of an engine's `line_select` as the lines a bulk load sends (floats appended
    as Python's exact repr), and the sum of their hashes (`batch_hash`)."""
    if not floats:
        lines = [line for (line,) in batch]
        return lines, lines_hash(lines)
    lines = [b"\t".join([line, *map(float_text, values)]) for line, *values in batch]
    return lines, batch_hash(batch, floats)


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

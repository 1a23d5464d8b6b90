"""One spelling of every row, produced by SQL in SQLite and in PostgreSQL alike.

A row's canonical form is the line PostgreSQL's COPY text format would carry for it:
columns joined by tabs, `\\N` for NULL (so NULL and '' stay apart), backslash, tab,
newline and carriage return escaped, integers in decimal, datetimes as
`YYYY-MM-DD HH:MM:SS.ffffff+00` (UTC, whatever the session's TimeZone). Both engines
build it in SQL, so the copy sends it to COPY as it is and the verification can compare
checksums of it (the md5s of units of rows, below) computed on either side.

Floats are the exception: SQLite cannot print a double exactly, and PostgreSQL's shortest
form is not Python's. They are carried as Python's `repr` (shortest, exact) in COPY and
compared by their IEEE-754 bits (`float8send` on PostgreSQL, `struct` in Python).

The SQL that builds the line lives with each engine (`engines/*.py`,
`canonical_expression`, `checksum_sql`); this module holds what is the same everywhere:
the layout of a table as copied, and the hashing in Python.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from typing import Any, NamedTuple

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


# Rows are hashed in units of consecutive ids (`unit_expression`: the primary key >> 10),
# not one by one: an md5 per row cost more than reading the row (on PostgreSQL and in the
# copy's Python loop alike), an md5 per 1,024 ids costs next to nothing. A unit's bytes are
# its rows' hashed lines in primary-key order, each ended by a newline; a table's checksum
# is the row count and the sum of its units' hashes, so the order units are read in does
# not matter. A table whose key is not an integer is hashed row by row (its key is the unit).
UNIT_BITS = 10


class Block(NamedTuple):
    """Rows of one unit, in key order, as read: what is hashed and what a bulk load sends
    (the same bytes unless the table has floats), each line ended by a newline."""

    unit: object
    rows: int
    hashed: bytes
    loaded: bytes


def float_line(line: bytes, values, spell) -> bytes:
    return b"\t".join([line, *map(spell, values)])


def row_blocks(batch: list[tuple], floats: bool) -> list[Block]:
    """Rows of an engine's `line_select` (unit, canonical line, floats…), in key order,
    as blocks of one unit each: floats appended to the hashed line by their bits
    (`float_bits`) and to the loaded line as Python's exact repr (`float_text`)."""
    if batch and isinstance(batch[0][1], str):  # a connection that hands out text
        batch = [(unit, line.encode(), *values) for unit, line, *values in batch]
    blocks = []
    for unit, group in groupby(batch, key=itemgetter(0)):
        rows = list(group)
        if floats:
            hashed = b"\n".join([float_line(r[1], r[2:], float_bits) for r in rows]) + b"\n"
            loaded = b"\n".join([float_line(r[1], r[2:], float_text) for r in rows]) + b"\n"
        else:
            hashed = loaded = b"\n".join([r[1] for r in rows]) + b"\n"
        blocks.append(Block(unit, len(rows), hashed, loaded))
    return blocks


class RowBlocks:
    """`fetch()` of the blocks of a cursor over an engine's `line_select`."""

    def __init__(self, cursor: Any, floats: bool, rows: int = 2_000) -> None:
        self.cursor, self.floats, self.rows = cursor, floats, rows

    def fetch(self) -> list[Block]:
        return row_blocks(self.cursor.fetchmany(self.rows), self.floats)


def unit_hash(data: bytes) -> int:
    """A unit's contribution to its table's checksum: the first 8 bytes of its md5."""
    return _first_8_bytes(hashlib.md5(data))


def _first_8_bytes(md5: Any) -> int:
    return int.from_bytes(md5.digest()[:8], "big", signed=True)


class UnitHasher:
    """The checksum of blocks fed in key order: a unit may come in several blocks."""

    def __init__(self) -> None:
        self._checksum = Checksum()
        self._unit: object = _NO_UNIT
        self._md5: Any = None

    def add(self, block: Block) -> None:
        if block.unit != self._unit:
            self._close()
            self._unit, self._md5 = block.unit, hashlib.md5()
        self._md5.update(block.hashed)
        self._checksum.rows += block.rows

    def _close(self) -> None:
        if self._md5 is not None:
            self._checksum.total += _first_8_bytes(self._md5)
            self._md5 = None

    def result(self) -> Checksum:
        self._close()
        return self._checksum


_NO_UNIT = object()


def summed(blocks: Any) -> Checksum:
    """The checksum of what `blocks.fetch()` gives (RowBlocks, or an engine's own)."""
    hasher = UnitHasher()
    while batch := blocks.fetch():
        for block in batch:
            hasher.add(block)
    return hasher.result()


class Checksum:
    """An order-independent checksum: a row count and the sum of the units' hashes."""

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

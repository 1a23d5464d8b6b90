"""Reading an SQLite table's canonical lines as `canonical.Block`s: unit by unit, joined
by SQLite (`UnitChunks`) where the table is keyed by its rowid."""

from __future__ import annotations

import sqlite3

from ..canonical import UNIT_BITS, Block, TableLayout


def keyed_by_rowid(connection: sqlite3.Connection, layout: TableLayout) -> bool:
    """Whether the table's primary key is its rowid (an INTEGER PRIMARY KEY, as Django
    declares every id): then a range of rowids is a range of keys, and never NULL."""
    key = layout.model.primary_key
    keys = [
        (_text(name), _text(declared).upper())
        for name, declared, pk in connection.execute(
            "SELECT name, type, pk FROM pragma_table_info(?)", [layout.source_name]
        )
        if pk
    ]
    return keys == [(key, "INTEGER")]


def _text(value: str | bytes) -> str:
    """A name from a connection that hands out bytes (`open_bytes`)."""
    return value.decode() if isinstance(value, bytes) else value


class UnitChunks:
    """`fetch()` of the blocks of a table keyed by its rowid, without floats: the rows of
    one unit of keys (canonical.py) per query, their lines joined in C by SQLite.

    Python's sqlite3 lets go of the GIL for every row it steps to. Two threads reading
    rows one by one (a copy's two loads) then hand the GIL back and forth millions of
    times: 4.9 s where one thread alone took 3.6 s; in chunks, 2.5 s. The joined lines are
    at once what COPY is sent and what is hashed: no row is split or hashed by Python.
    group_concat joins the rows in the order the ORDER BY subquery gives them; were it
    ever not key order, the unit's hash would differ and the verification say so."""

    MAX_BYTES = 8 << 20  # a block's lines: fewer rows per query past this

    def __init__(self, connection: sqlite3.Connection, table: str, select: str) -> None:
        """`table`: its quoted name; `select`: the engine's `chunk_select` of it."""
        self.connection = connection
        self.chunk = f"SELECT max(r), count(*), group_concat(line, char(10)) FROM ({select})"
        self.next_row = f"SELECT min(rowid) FROM {table} WHERE rowid >= ?"
        (self.start,) = connection.execute(self.next_row, (-(2**63),)).fetchone()
        self.limit = 1 << UNIT_BITS

    def fetch(self) -> list[Block]:
        while self.start is not None:
            unit = self.start >> UNIT_BITS
            last_of_unit = min(((unit + 1) << UNIT_BITS) - 1, 2**63 - 1)
            try:
                last, rows, joined = self.connection.execute(
                    self.chunk, (self.start, last_of_unit, self.limit)
                ).fetchone()
            except sqlite3.DataError:  # longer than SQLite's longest string: fewer rows
                if self.limit == 1:
                    raise
                self.limit //= 2
                continue
            done = not rows or rows < self.limit or last == last_of_unit
            if done and last_of_unit == 2**63 - 1:
                self.start = None
            elif done:
                self.start = last_of_unit + 1
                if not rows:  # a gap in the keys (or skipped rows): on to the next row
                    (self.start,) = self.connection.execute(self.next_row, (self.start,)).fetchone()
            else:
                self.start = last + 1
            if not rows:
                continue
            if len(joined) > self.MAX_BYTES:
                self.limit = max(1, self.limit // 2)
            elif len(joined) < self.MAX_BYTES // 4:
                self.limit = min(1 << UNIT_BITS, self.limit * 2)
            data = joined + b"\n"
            return [Block(unit, rows, data, data)]
        return []

"""Canonical rows (canonical.py, the SQLite engine's line select): escaping, NULL and
datetimes spelled one way, id remaps, order-free checksums, floats compared by their bits.

Like every module of tests/unit/: no server, no process, exact values of one function's
observable output, so that a change of behaviour shows up here first.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest

from smtmigrate.canonical import NULL, Checksum, RowBlocks, float_bits, row_blocks, table_layout
from smtmigrate.engines import engine_for
from smtmigrate.engines.sqlite_units import UnitChunks, keyed_by_rowid
from smtmigrate.schema import sumatra_tables

# --------------------------------------------------------------------------- canonical rows

DATAKEY = "django_store_datakey"  # integer, text, datetime and foreign-key columns
SQLITE = engine_for("sqlite")


@pytest.fixture
def datakeys() -> Iterator[sqlite3.Connection]:
    """An in-memory table with the columns of Sumatra's DataKey (SQLite is no server)."""
    connection = sqlite3.connect(":memory:")
    columns = ", ".join(SQLITE.quote_name(name) for name in sumatra_tables()[DATAKEY].columns)
    connection.execute(f"CREATE TABLE {SQLITE.quote_name(DATAKEY)} ({columns})")
    yield connection
    connection.close()


def lines(connection: sqlite3.Connection, remaps=None, skip=None) -> list[str]:
    model = sumatra_tables()[DATAKEY]
    layout = table_layout(model, DATAKEY, model.columns)
    query = SQLITE.line_select(layout, remaps or {}, skip)
    return [line for (_unit, line) in connection.execute(query)]


def test_canonical_line_escapes_text_and_spells_null_and_datetimes(datakeys):
    datakeys.execute(
        f"INSERT INTO {DATAKEY} VALUES (7, ?, '', '2024-01-02 03:04:05.5', NULL, '12')",
        ("a\tb\nc\\d\re",),
    )
    datakeys.execute(f"INSERT INTO {DATAKEY} VALUES (8, 'x', NULL, '2024-01-02 03:04:05', '', 3)")
    assert lines(datakeys) == [
        "7\ta\\tb\\nc\\\\d\\re\t\t2024-01-02 03:04:05.500000+00\t\\N\t12",
        "8\tx\t\\N\t2024-01-02 03:04:05.000000+00\t\t3",
    ]


def test_canonical_line_remaps_ids_and_skips_rows(datakeys):
    for pk in (1, 2, 3):
        datakeys.execute(f"INSERT INTO {DATAKEY} VALUES (?, 'p', 'd', NULL, 'm', ?)", (pk, pk))
    remaps = {"output_from_record_id": {1: 10, 2: 20}}
    assert lines(datakeys, remaps, skip={2}) == [
        "1\tp\td\t\\N\tm\t10",
        "3\tp\td\t\\N\tm\t3",
    ]


def test_checksum_ignores_row_order_but_not_values(datakeys):
    model = sumatra_tables()[DATAKEY]
    layout = table_layout(model, DATAKEY, model.columns)
    rows = [(1, "a", "", None, "", None), (2, "b", "", None, "", None)]
    datakeys.executemany(f"INSERT INTO {DATAKEY} VALUES (?, ?, ?, ?, ?, ?)", rows)
    forward = SQLITE.checksum(datakeys.cursor(), layout)
    datakeys.execute(f"DELETE FROM {DATAKEY}")
    datakeys.executemany(f"INSERT INTO {DATAKEY} VALUES (?, ?, ?, ?, ?, ?)", rows[::-1])
    assert SQLITE.checksum(datakeys.cursor(), layout) == forward
    assert forward.rows == 2
    datakeys.execute(f"UPDATE {DATAKEY} SET path = 'B' WHERE id = 2")
    assert SQLITE.checksum(datakeys.cursor(), layout) != forward


def test_floats_are_compared_by_their_bits():
    assert float_bits(None) == NULL.encode()
    assert float_bits(1.0) == b"3ff0000000000000"
    assert float_bits(0.1) != float_bits(0.1000000000000001)
    (block,) = row_blocks([(0, b"x", 0.5)], floats=True)
    assert block.hashed == b"x\t3fe0000000000000\n" and block.loaded == b"x\t0.5\n"
    assert Checksum(1, -1).digest == "ffffffffffffffff"


def test_unit_chunks_are_the_blocks_row_by_row():
    """A copy reads an SQLite table keyed by its rowid, without floats, unit by unit
    joined by SQLite: the same bytes per unit as row by row, whatever the values, the gaps
    in the keys, the rows left out or SQLite's longest string."""
    connection = sqlite3.connect(":memory:")
    connection.text_factory = bytes
    model = sumatra_tables()[DATAKEY]
    names = [SQLITE.quote_name(name) for name in model.columns if name != "id"]
    connection.execute(f"CREATE TABLE {DATAKEY} (id INTEGER PRIMARY KEY, {', '.join(names)})")
    rows = [
        (i, f"p{i}\t\\{'é' * (i % 7)}", None, "2024-01-02 03:04:05", "m", i) for i in range(1, 6001)
    ]
    rows[10] = (11, "nul\x00inside", b"\xff\xfe not UTF-8", None, "", None)
    rows[4000] = (4001, "x", "d", "2024-01-02\n03:04:05", "", 1)  # a line with a newline
    del rows[2047:3072]  # ids 2048-3072: a whole unit missing
    connection.executemany(f"INSERT INTO {DATAKEY} VALUES (?, ?, ?, ?, ?, ?)", rows)
    layout = table_layout(model, DATAKEY, model.columns)
    assert keyed_by_rowid(connection, layout)
    skip = {5, 2500, 1024}

    def units(blocks) -> tuple[dict, int]:
        joined: dict = {}
        fetches = 0
        while batch := blocks.fetch():
            fetches += 1
            for block in batch:
                rows_so_far, data = joined.get(block.unit, (0, b""))
                joined[block.unit] = (rows_so_far + block.rows, data + block.hashed)
        return joined, fetches

    cursor = connection.execute(SQLITE.line_select(layout, {}, skip))
    expected, _ = units(RowBlocks(cursor, floats=False))
    assert sorted(expected) == [0, 1, 3, 4, 5]  # unit 2 is the gap
    assert sum(rows for rows, _ in expected.values()) == len(rows) - 2  # 2500 was deleted
    chunked = lambda: units(  # noqa: E731
        UnitChunks(connection, SQLITE.quote_name(DATAKEY), SQLITE.chunk_select(layout, {}, skip))
    )
    assert chunked() == (expected, 5)
    # SQLite's longest string cut to 20 kB: a unit in several blocks, the same bytes
    connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 20_000)
    joined, fetches = chunked()
    assert joined == expected and fetches > 5

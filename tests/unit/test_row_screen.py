"""The audit's row screen on SQLite (engines/sqlite_screen.py): one Python call per row
that finds NULs and text that is not UTF-8, and stands in for the duplicate pre-check's
GROUP BY, so it must see every duplicate GROUP BY sees."""

from __future__ import annotations

import sqlite3

from hypothesis import given, settings
from hypothesis import strategies as st

from smtmigrate.engines import sqlite_screen
from smtmigrate.engines.sqlite import SqliteEngine
from smtmigrate.engines.sqlite_screen import SCREEN, RowScreen, _clean

SQLITE = SqliteEngine()
# Values GROUP BY groups in ways bytes alone would not: 1 and 1.0 (one group in a column
# without affinity), '1' and x'31' (two groups), NULLs (one group).
VALUES = [None, 1, 1.0, 2, 2.5, "1", b"1", "a", "A", "é", b"\xff", "", b""]


def screened(rows: list[tuple], declared: tuple[str, str]) -> tuple[bool, bool]:
    """(the screen's `repeated`, whether GROUP BY finds a duplicate) for the rows."""
    db = sqlite3.connect(":memory:")
    db.execute(f"CREATE TABLE t (id integer PRIMARY KEY, a {declared[0]}, b {declared[1]})")
    db.executemany("INSERT INTO t (a, b) VALUES (?, ?)", rows)
    screen = RowScreen(2)
    db.create_function(SCREEN, -1, screen)
    keys = [SQLITE.screen_key(name, kind) for name, kind in zip("ab", declared, strict=True)]
    db.execute(f"SELECT count(CASE WHEN NOT {SCREEN}(1, {', '.join(keys)}) THEN 1 END) FROM t")
    grouped = db.execute("SELECT 1 FROM t GROUP BY a, b HAVING count(*) > 1").fetchone()
    return screen.repeated, grouped is not None


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(VALUES), st.sampled_from(VALUES)), max_size=8),
    st.tuples(*[st.sampled_from(["varchar(10)", "text", "", "datetime", "integer"])] * 2),
)
def test_the_screen_sees_every_duplicate_group_by_sees(rows, declared):
    repeated, grouped = screened(rows, declared)
    assert repeated or not grouped


def test_one_and_one_point_zero_repeat_in_a_column_without_affinity():
    # CAST(… AS BLOB) would read them as b'1' and b'1.0': a duplicate missed
    assert screened([(1, "x"), (1.0, "x")], ("", "text")) == (True, True)
    assert screened([(None, "x"), (None, "x")], ("", "text")) == (True, True)
    assert screened([(1, "x"), (2, "x")], ("", "text")) == (False, False)


def test_past_the_most_hashed_rows_the_group_by_decides(monkeypatch):
    monkeypatch.setattr(sqlite_screen, "MOST_HASHED", 3)  # a bound, not a behaviour: no mock
    screen = RowScreen(1)
    for value in (b"a", b"b", b"c"):
        screen(1, value)
    assert screen.repeated is False
    screen(1, b"d")
    assert screen.repeated is None and not screen.hashes
    screen(1, b"a")
    assert screen.repeated is None  # no longer known


def test_clean_values_hold_no_nul_and_only_utf8():
    assert _clean((None, 1, 2.5, b"plain", "é".encode(), b""))
    assert not _clean((b"a\x00b",))
    assert not _clean(("é".encode() + b"\x00",))
    assert not _clean((b"\xff",))
    assert not _clean(("\ud800".encode("utf-8", "surrogatepass"),))


class PyformatCursor(sqlite3.Cursor):
    """A cursor that takes Django's %s placeholders, as the engine's SQL has them."""

    def execute(self, sql, parameters=()):
        return super().execute(sql.replace("%s", "?"), parameters)


def test_a_declared_collation_keeps_the_group_by():
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE plain (a text)")
    db.execute("CREATE TABLE folded (a text COLLATE NOCASE)")
    cursor = db.cursor(PyformatCursor)
    assert SQLITE.plain_collation(cursor, "plain")
    assert not SQLITE.plain_collation(cursor, "folded")  # 'A' and 'a' are one group
    assert not SQLITE.plain_collation(cursor, "missing")

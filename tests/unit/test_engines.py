"""The engine seam's pure parts, exact strings, no server: quoting, the read-only URI, the
id-remap CASE, canonical text, and the one ~/.pgpass line."""

from __future__ import annotations

import os
import pwd
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from smtmigrate.canonical import Block, Checksum, row_blocks, table_layout, unit_hash
from smtmigrate.engines import engine_for
from smtmigrate.engines.postgresql import PostgresEngine
from smtmigrate.engines.sqlite import SqliteEngine
from smtmigrate.locations import Store
from smtmigrate.pgpass import pgpass_line
from smtmigrate.schema import ModelColumn, ModelTable

SQLITE, POSTGRES = SqliteEngine(), PostgresEngine()


def column(name: str, kind: str, *, references=None) -> ModelColumn:
    return ModelColumn("t", name, None, kind, None, True, references)


def pg_store(**settings) -> Store:
    return Store("postgresql", "pg", {"NAME": "db", **settings})


def test_engine_for_a_vendor_a_store_and_anything_with_a_vendor():
    assert engine_for("sqlite").vendor == "sqlite"
    assert engine_for(pg_store()).vendor == "postgresql"
    assert engine_for(type("Connection", (), {"vendor": "sqlite"})()).vendor == "sqlite"
    with pytest.raises(ValueError, match="no engine for 'oracle'"):
        engine_for("oracle")


@pytest.mark.parametrize("engine", [SQLITE, POSTGRES], ids=["sqlite", "postgresql"])
def test_quote_name_doubles_the_quote_character(engine):
    assert engine.quote_name("django_store_record") == '"django_store_record"'
    assert engine.quote_name('a"b') == '"a""b"'


def test_postgres_identifier_quotes_like_quote_name():
    assert POSTGRES.identifier('a"b').strings == ('a"b',)


def test_read_only_uri_escapes_the_path():
    uri = SQLITE.read_only_uri(Path("/tmp/a b?#%.sqlite"))
    assert uri == "file:/tmp/a%20b%3F%23%25.sqlite?mode=ro"


def test_read_only_uri_is_refused_for_a_server_engine():
    with pytest.raises(NotImplementedError, match="postgresql stores are not files"):
        POSTGRES.read_only_uri("/tmp/x")


def test_remap_case_sqlite_reads_the_column_as_an_integer():
    assert SQLITE.remap_case('"c"', {3: 1, 7: 2}) == (
        'CASE CAST("c" AS INTEGER) WHEN 3 THEN 1 WHEN 7 THEN 2 ELSE CAST("c" AS INTEGER) END'
    )
    assert SQLITE.remap_case('"c"', {3: 1}, otherwise='"c"') == (
        'CASE CAST("c" AS INTEGER) WHEN 3 THEN 1 ELSE "c" END'
    )


def test_remap_case_postgres_takes_the_typed_column_as_it_is():
    assert POSTGRES.remap_case('"c"', {3: 1}) == 'CASE "c" WHEN 3 THEN 1 ELSE "c" END'


def test_remap_case_pastes_integers_only():
    with pytest.raises(ValueError):
        SQLITE.remap_case('"c"', {"1; DROP TABLE x": 1})


def test_canonical_expressions_of_an_integer_column():
    c = column("n", "IntegerField")
    assert SQLITE.canonical_expression(c) == "ifnull(CAST(\"n\" AS INTEGER), '\\N')"
    assert POSTGRES.canonical_expression(c) == "coalesce(\"n\"::text, '\\N')"
    assert POSTGRES.canonical_expression(c, {1: 2}) == (
        'coalesce((CASE "n" WHEN 1 THEN 2 ELSE "n" END)::text, \'\\N\')'
    )


def test_sqlite_canonical_line_and_checksum_of_a_row():
    """The line SQLite builds is COPY's text format: tabs, \\N, escapes, remapped ids."""
    columns = {
        "id": column("id", "AutoField"),
        "name": column("name", "CharField"),
        "owner_id": column("owner_id", "IntegerField", references=("o", "id")),
        "at": column("at", "DateTimeField"),
    }
    model = ModelTable("t", None, columns, "id", ())
    layout = table_layout(model, "t", columns)
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, owner_id INTEGER, at TEXT)")
    db.execute("INSERT INTO t VALUES (1, 'a\tb\\c', 5, '2024-01-02 03:04:05.5')")
    db.execute("INSERT INTO t VALUES (2, NULL, NULL, NULL)")
    db.execute("INSERT INTO t VALUES (1024, 'z', NULL, NULL)")
    rows = db.execute(SQLITE.line_select(layout, {"owner_id": {5: 9}}, skip=[2])).fetchall()
    # (unit: the key >> 10, line), in key order
    assert rows == [
        (0, "1\ta\\tb\\\\c\t9\t2024-01-02 03:04:05.500000+00"),
        (1, "1024\tz\t\\N\t\\N"),
    ]
    checksum = SQLITE.checksum(db.cursor(), layout, {"owner_id": {5: 9}})
    # ids 1 and 2 hash as one unit (their lines in key order), id 1024 as the next
    first = f"{rows[0][1]}\n2\t\\N\t\\N\t\\N\n".encode()
    assert checksum == Checksum(3, unit_hash(first) + unit_hash(b"1024\tz\t\\N\t\\N\n"))


def test_pgpass_line_escapes_colon_and_backslash(monkeypatch):
    monkeypatch.setenv("PGUSER", "u:1")
    store = pg_store(NAME="d\\b", HOST="db.example", PORT="6543")
    assert pgpass_line(store) == "db.example:6543:d\\\\b:u\\:1:PASSWORD"
    assert pgpass_line(store, "p:w\\") == "db.example:6543:d\\\\b:u\\:1:p\\:w\\\\"


def test_pgpass_line_default_user_is_pguser_else_the_os_user(monkeypatch):
    monkeypatch.setenv("PGUSER", "alice")
    monkeypatch.setenv("USER", "someone-else")
    assert pgpass_line(pg_store()) == "localhost:5432:db:alice:PASSWORD"
    monkeypatch.delenv("PGUSER")
    os_user = pwd.getpwuid(os.geteuid()).pw_name
    assert pgpass_line(pg_store()) == f"localhost:5432:db:{os_user}:PASSWORD"
    assert pgpass_line(pg_store(USER="bob", HOST="/run/pg")) == "localhost:5432:db:bob:PASSWORD"


def test_sqlite_declared_types_as_written_lower_case():
    db = sqlite3.connect(":memory:")
    db.execute('CREATE TABLE "a""b" (id INTEGER PRIMARY KEY, label VARCHAR(100))')
    assert SQLITE.declared_types(db.cursor(), 'a"b') == {"id": "integer", "label": "varchar(100)"}


def test_sqlite_value_checks_of_a_positive_integer_column():
    c = ModelColumn("t", "n", None, "PositiveIntegerField", None, True)
    table = type("Table", (), {"model": type("Model", (), {"primary_key": "id"}), "columns": {}})
    checks = list(SQLITE.invalid_value_checks(None, table, c))
    assert checks == [
        ("typeof(\"n\") NOT IN ('integer', 'null')", "not an integer", None),
        ('"n" < 0', "negative value in a positive-integer column", None),
    ]
    assert list(POSTGRES.invalid_value_checks(None, table, c)) == []


def test_row_blocks_group_rows_by_unit_and_carry_floats_as_their_repr():
    plain = [(0, b"1\ta"), (0, b"2\t\\N"), (3, b"3075\tb")]
    assert row_blocks(plain, floats=False) == [
        Block(0, 2, b"1\ta\n2\t\\N\n", b"1\ta\n2\t\\N\n"),
        Block(3, 1, b"3075\tb\n", b"3075\tb\n"),
    ]
    # floats: hashed by their bits, loaded as Python's exact repr
    (block,) = row_blocks([(0, b"1", 0.1), (0, b"2", None)], floats=True)
    assert block == Block(0, 2, b"1\t3fb999999999999a\n2\t\\N\n", b"1\t0.1\n2\t\\N\n")


def test_of_parallel_table_loads_the_failure_that_stopped_the_others_is_told():
    from smtmigrate.engines.mariadb_load import _first_cause, _Stopped

    cause = ValueError("MariaDB changed or skipped 7 value(s)")
    assert _first_cause([_Stopped("a"), None, cause, _Stopped("b")]) is cause
    interrupted = KeyboardInterrupt()
    assert _first_cause([cause, interrupted]) is interrupted
    only = _Stopped("a")
    assert _first_cause([None, only]) is only


@pytest.mark.slow
def test_sqlite_memory_statistics_go_off_only_while_nothing_is_open():
    """Turned off in a fresh process (as a command does first), SQLite stops counting;
    with a connection open it is left as it is."""
    probe = """
import ctypes, sqlite3, sys, _sqlite3
from smtmigrate.engines.sqlite import turn_memory_statistics_off
used = ctypes.CDLL(_sqlite3.__file__).sqlite3_memory_used
used.restype = ctypes.c_int64
held = sqlite3.connect(":memory:") if sys.argv[1] == "open" else None
turned_off = turn_memory_statistics_off()
other = sqlite3.connect(":memory:")
print(turned_off, used() > 0)
"""
    for state, expected in (("closed", "True False"), ("open", "False True")):
        run = subprocess.run(
            [sys.executable, "-c", probe, state], capture_output=True, text=True, check=True
        )
        assert run.stdout.split() == expected.split(), (state, run.stderr)


def test_checksum_ranges_of_postgresql_cut_between_units():
    from smtmigrate.engines.postgresql import unit_bounds

    assert unit_bounds(None, None, 3) == [] and unit_bounds(1, 10**6, 1) == []
    assert unit_bounds(1, 5000, 3) == []  # 5 units: one aggregate
    bounds = unit_bounds(1, 2_300_525, 3)
    assert bounds == [749 << 10, 1498 << 10]  # 2,247 units in three ranges
    assert all(b % 1024 == 0 for b in bounds)
    assert unit_bounds(-(40 << 10), 40 << 10, 2) == [0]

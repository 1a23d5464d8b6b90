"""Unit tests of the pure parts: no PostgreSQL server, no process, no store on disk.

Part of the fast subset (`pytest -m "not pg and not mariadb and not slow"`): each test
asserts exact values of one function's observable output, so that a change of behaviour
shows up here first.
"""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from smtmigrate import interrupts
from smtmigrate.canonical import NULL, Checksum, float_bits, row_hash, table_layout
from smtmigrate.engines import engine_for
from smtmigrate.engines.sqlite import ChunkedLines
from smtmigrate.errors import (
    LocationError,
    RecordReadError,
    SmtmigrateError,
    StoreConnectionError,
    UnsupportedStore,
)
from smtmigrate.locations import (
    DEFAULT_CONNECT_TIMEOUT,
    postgres_settings,
    redact_text,
    redact_url,
    resolve,
)
from smtmigrate.records.comparison import (
    RecordComparison,
    RecordDifference,
    field_differences,
    previews,
)
from smtmigrate.render import console, render_verification
from smtmigrate.schema import sumatra_tables
from smtmigrate.stress.report import (
    CONNECTION,
    DEADLOCK,
    DUPLICATE_KEY,
    DUPLICATE_ROWS,
    LABEL_COLLISION,
    LOCKED,
    OTHER,
    TOO_LONG,
    classify,
)
from smtmigrate.verify import TableCheck, Verification

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
    return [line for (line,) in connection.execute(query)]


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
    assert row_hash(b"x", (0.5,)) == row_hash(b"x\t3fe0000000000000", ())
    assert Checksum(1, -1).digest == "ffffffffffffffff"


def test_chunked_lines_are_the_lines_row_by_row(datakeys):
    """A copy reads an SQLite table without floats in chunks of rows joined by SQLite: the
    same lines as row by row, whatever the values, the rows left out or the size limit."""
    datakeys.text_factory = bytes
    rows = [
        (i, f"p{i}\t\\{'é' * (i % 7)}", None, "2024-01-02 03:04:05", "m", i) for i in range(1, 5001)
    ]
    rows[10] = (11, "nul\x00inside", b"\xff\xfe not UTF-8", None, "", None)
    rows[4000] = (4001, "x", "d", "2024-01-02\n03:04:05", "", 1)  # a line with a newline
    datakeys.executemany(f"INSERT INTO {DATAKEY} VALUES (?, ?, ?, ?, ?, ?)", rows)
    model = sumatra_tables()[DATAKEY]
    layout = table_layout(model, DATAKEY, model.columns)
    skip = {5, 2500}
    expected = sorted(lines(datakeys, skip=skip))
    assert len(expected) == 4998 and any(b"\n" in line for line in expected)

    def chunked(connection) -> tuple[list[bytes], int]:
        reader = ChunkedLines(connection, SQLITE.chunk_select(layout, {}, skip))
        out, fetches = [], 0
        while batch := reader.fetchmany(2000):
            out += [line for (line,) in batch]
            fetches += 1
        return sorted(out), fetches

    assert chunked(datakeys) == (expected, 3)
    # SQLite's longest string cut to 20 kB: chunks of fewer rows, the same lines
    datakeys.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 20_000)
    lines_read, fetches = chunked(datakeys)
    assert lines_read == expected and fetches > 3


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


# --------------------------------------------------------------------------- stress errors


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (("OperationalError", "database is locked"), LOCKED),
        (("DataError", "value too long for type character varying(100)"), TOO_LONG),
        (("IntegrityError", 'duplicate key value violates unique constraint "k"'), DUPLICATE_KEY),
        (("IntegrityError", "UNIQUE constraint failed: django_store_tag.name"), DUPLICATE_KEY),
        (("Record.MultipleObjectsReturned", "get() returned more than one"), LABEL_COLLISION),
        (("FileNotFoundError", "[Errno 2] No such file: 'run.param'"), LABEL_COLLISION),
        (("FileNotFoundError", "[Errno 2] No such file: 'data.h5'"), OTHER),
        (("Tag.MultipleObjectsReturned", "get() returned more than one"), DUPLICATE_ROWS),
        (("OperationalError", "deadlock detected"), DEADLOCK),
        (("OperationalError", "FATAL: sorry, too many clients already"), CONNECTION),
        (("ValueError", "connection refused"), OTHER),  # not a database error
    ],
)
def test_stress_error_classification(error, kind):
    assert classify(error) == kind


def test_stress_classification_of_an_exception_ignores_case():
    assert classify(RuntimeError("Database Is Locked")) == LOCKED


# --------------------------------------------------------------------------- rendering


def rendered(verification: Verification) -> str:
    buffer = io.StringIO()
    render_verification(verification, console(buffer))
    return buffer.getvalue()


def test_render_verification_ok():
    verification = Verification(
        [TableCheck("django_store_tag", 3, 3, "aa", "aa")],
        records=RecordComparison(records=2, source_records=2, target_records=2),
    )
    assert rendered(verification) == (
        "Verified: 1 tables and 3 rows identical; 2 records identical through Sumatra.\n"
    )


def test_render_verification_failed_lists_every_problem():
    missing = RecordDifference("proj", "20240101-120000", "record", "present", "missing")
    verification = Verification(
        [
            TableCheck("django_store_tag", 3, 3, "aa", "aa"),
            TableCheck("django_store_record", 5, 4, "x", "y"),
            TableCheck("django_store_datakey", 2, 2, "x", "y"),
        ],
        records=RecordComparison(
            records=4, differing_records=1, total_differences=1, differences=[missing]
        ),
    )
    assert rendered(verification) == (
        "  django_store_record: 5 rows in the source, 4 in the target\n"
        "  django_store_datakey: same 2 rows, different values (checksums differ)\n"
        "  proj/20240101-120000: missing in the target\n"
        "Verification FAILED.\n"
    )


# --------------------------------------------------------------------------- locations


def test_postgres_host_and_port_from_the_query_string_win(monkeypatch):
    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    settings = postgres_settings("postgresql://bob@ignored:1/db?host=%2Frun%2Fpg&port=5433")
    assert settings["HOST"] == "/run/pg"
    assert settings["PORT"] == "5433"
    assert settings["USER"] == "bob"
    assert settings["PASSWORD"] == ""
    assert settings["OPTIONS"] == {"connect_timeout": DEFAULT_CONNECT_TIMEOUT}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://u:pw@h:5x/db", "postgresql://u:***@h:5x/db: port '5x' is not a number"),
        ("postgresql://u:pw@[::1/db", "postgresql://u:***@[::1/db: malformed IPv6 address"),
    ],
)
def test_bad_postgres_urls_say_why_without_the_password(url, message):
    with pytest.raises(LocationError) as caught:
        postgres_settings(url)
    assert str(caught.value) == message


def test_mysql_urls_are_refused_by_name():
    with pytest.raises(UnsupportedStore, match=r"^mysql://u:\*\*\*@h/db: MySQL/MariaDB stores"):
        resolve("mysql://u:pw@h/db")


def test_redaction():
    assert redact_url("postgresql://u:p%40ss@h/db") == "postgresql://u:***@h/db"
    assert redact_text("failed for p@ss and p%40ss", "p@ss") == "failed for *** and ***"
    assert redact_text("nothing to hide", "") == "nothing to hide"


# --------------------------------------------------------------------------- records


def test_field_differences_name_list_items_by_their_key():
    source = {"tags": ["a", "b"], "dependencies": [{"name": "numpy", "version": "1.0"}]}
    target = {"tags": ["a"], "dependencies": [{"name": "numpy", "version": "2.0"}]}
    assert list(field_differences(source, target)) == [
        ("tags", ["a", "b"], ["a"]),
        ("dependencies[name=numpy].version", "1.0", "2.0"),
    ]


def test_previews_show_where_long_values_differ():
    a, b = "x" * 200 + "A", "x" * 200 + "B"
    # 80 characters each (PREVIEW), ending just after the first difference
    assert previews(a, b) == ("…" + "x" * 77 + "A…", "…" + "x" * 77 + "B…")
    assert previews(["a", "b"], ["a"]) == ("2 items, only here: ['b']", "1 items, only here: []")


def test_record_difference_text():
    assert str(RecordDifference("p", "", "project", "missing", "present")) == (
        "project p: missing in the source"
    )
    assert str(RecordDifference("p", "L", "reason", "'a'", "'b'")) == "p/L: reason: 'a' != 'b'"


def test_record_read_errors_end_as_one_line_with_exit_code_2():
    assert issubclass(RecordReadError, StoreConnectionError)
    assert issubclass(RecordReadError, SmtmigrateError)
    assert RecordReadError("x").exit_code == 2


# -- Ctrl-C held for a step and its bookkeeping ---------------------------------------------


def test_ctrl_c_inside_deferred_waits_for_the_block_then_stops():
    done = []
    with pytest.raises(KeyboardInterrupt), interrupts.deferred():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the signal is handled by now: held, not raised
        done.append("made, and recorded")
    assert done == ["made, and recorded"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_error_inside_deferred_goes_on_as_it_is():
    with pytest.raises(ZeroDivisionError), interrupts.deferred():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        1 / 0  # noqa: B018
    with interrupts.deferred():  # nothing pressed: nothing raised
        pass

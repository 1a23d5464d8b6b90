"""Property-based tests of the copy: whatever a store holds is either copied exactly, or
named by the audit (right table, column and kind) and refused with nothing written. Never
copied with a changed value.

Values are planted with plain sqlite3 into a private copy of the bundled Sumatra 0.8.1
store: random text (NUL, lone surrogates and other invalid UTF-8, emoji, very long), floats
(subnormal, ±0.0, huge, ±inf, NaN), datetimes with and without fractions, NULL and ''. The
oracle owes nothing to smtmigrate: what sqlite3 reads back from the store, the store's
declared column sizes and NOT NULLs, Python's strict UTF-8 decoder (PostgreSQL's rules:
no surrogates, no overlong forms, nothing above U+10FFFF; NUL is refused on its own) and
what psycopg2 reads back from PostgreSQL.

An example costs a store, a database and a copy (about a second), so each one plants many
values at once and the example counts stay small; `@example`s pin the edge cases.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from ..conftest import FIXTURES, copy_fixture, fresh_database, pg_query, records_file
from ..helpers_tables import LOOKED_UP

COPY_ARGS = ("--widen", "--verify", "rows", "--format", "json")
RECORD = "django_store_record"
DATAKEY = "django_store_datakey"
Key = tuple[str, str]  # (table, column)

PROPERTY_SETTINGS = settings(
    deadline=None,
    database=None,  # no .hypothesis/ directory in the repository
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # `cli` only captures output: safe to reuse
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


# -- the store's own schema: the oracle's notion of sizes, NOT NULLs and foreign keys ------


@dataclass(frozen=True)
class Column:
    table: str
    name: str
    declared: str  # as in CREATE TABLE, lower case: "varchar(100)", "text", "real", …
    nullable: bool
    primary_key: bool
    foreign_key: bool

    @property
    def limit(self) -> int | None:
        match = re.fullmatch(r"varchar\((\d+)\)", self.declared)
        return int(match[1]) if match else None

    @property
    def is_text(self) -> bool:
        """Text PostgreSQL keeps as it is (char(39) is the inet column, not text)."""
        return self.declared == "text" or self.limit is not None


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def read_schema(path: Path) -> dict[Key, Column]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name LIKE 'django_store%' ORDER BY name"
            )
        ]
        columns = {}
        for table in tables:
            references = {row[3] for row in conn.execute(f"PRAGMA foreign_key_list({q(table)})")}
            for _, name, declared, notnull, _, pk in conn.execute(f"PRAGMA table_info({q(table)})"):
                columns[table, name] = Column(
                    table, name, declared.lower(), not notnull, bool(pk), name in references
                )
        return columns
    finally:
        conn.close()


SCHEMA = read_schema(records_file(FIXTURES / "sumatra-0.8"))
PRIMARY_KEY = {c.table: c.name for c in SCHEMA.values() if c.primary_key}
TEXT_COLUMNS = [key for key, c in SCHEMA.items() if c.is_text and not c.primary_key]
# What `copy --widen` keeps bounded (docs/commands/widen.md: "columns with a natural size (SHA-1
# digests, type names, the inet address) keep it"): an over-long value there is refused.
KEEP_SIZE = frozenset(
    {(DATAKEY, "digest"), ("django_store_dependency", "module")}
    | {(table, "type") for table, name in SCHEMA if name == "type"}
)
# Random text goes into every text column but the foreign keys (whose values must name a
# row); NULL and '' into every column but the primary keys.
TEXT_TARGETS = [key for key in TEXT_COLUMNS if not SCHEMA[key].foreign_key]
ALL_COLUMNS = [key for key, c in SCHEMA.items() if not c.primary_key]


# -- scratch stores and databases ----------------------------------------------------------


@contextmanager
def scratch_project() -> Iterator[Path]:
    """A private copy of the bundled 0.8 project per example (examples damage it)."""
    with tempfile.TemporaryDirectory(prefix="smtm-prop-") as tmp:
        yield copy_fixture("0.8", Path(tmp))


def primary_keys(conn: sqlite3.Connection, table: str) -> list[Any]:
    pk = q(PRIMARY_KEY[table])
    return [key for (key,) in conn.execute(f"SELECT {pk} FROM {q(table)} ORDER BY {pk}")]


def plant(conn: sqlite3.Connection, table: str, column: str, row: int, value: object) -> Any:
    """Set one cell of the row'th row (modulo the table's size); bytes become TEXT with
    exactly those bytes (how a broken store holds NUL or invalid UTF-8). Returns the row's
    primary key, or None when SQLite itself refuses the value (NOT NULL, UNIQUE)."""
    keys = primary_keys(conn, table)
    key = keys[row % len(keys)]
    placeholder = "CAST(? AS TEXT)" if isinstance(value, bytes) else "?"
    try:
        with conn:
            conn.execute(
                f"UPDATE {q(table)} SET {q(column)} = {placeholder} "
                f"WHERE {q(PRIMARY_KEY[table])} = ?",
                (value, key),
            )
    except sqlite3.IntegrityError:
        return None
    return key


def clone_records(conn: sqlite3.Connection, total: int) -> None:
    """More records to plant into: copies of the store's own, labels made distinct."""
    names = [name for (table, name), c in SCHEMA.items() if table == RECORD and not c.primary_key]
    values = [f"{q(n)} || '~' || ?" if n == "label" else q(n) for n in names]
    originals = primary_keys(conn, RECORD)
    with conn:
        for i in range(total - len(originals)):
            conn.execute(
                f"INSERT INTO {RECORD} ({', '.join(map(q, names))}) "
                f"SELECT {', '.join(values)} FROM {RECORD} WHERE db_id = ?",
                (i, originals[i % len(originals)]),
            )


def relax_not_null(conn: sqlite3.Connection, columns: set[Key]) -> None:
    """Declare NOT NULL columns nullable, as an older or hand-edited store may (SQLite
    enforces what a table declares, so that is how NULLs get into such columns)."""
    by_table: dict[str, list[str]] = {}
    for table, name in sorted(columns):
        by_table.setdefault(table, []).append(name)
    (version,) = conn.execute("PRAGMA schema_version").fetchone()
    conn.execute("PRAGMA writable_schema = ON")
    with conn:
        for table, names in by_table.items():
            (create,) = conn.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
            ).fetchone()
            for name in names:
                create, n = re.subn(rf"({re.escape(q(name))} [^,]*?) NOT NULL", r"\1", create)
                assert n == 1, (table, name, create)
            conn.execute(
                "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = ?",
                (create, table),
            )
        conn.execute(f"PRAGMA schema_version = {version + 1}")
    conn.execute("PRAGMA writable_schema = OFF")
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


# -- running the tool and judging it -------------------------------------------------------


@dataclass
class Run:
    audit: dict  # `audit --format json`
    code: int  # exit code of `copy`
    copy: dict | None  # `copy --format json`, when it got as far as printing one
    err: str
    tables: list[str]  # the target's tables afterwards
    duplicates: set[str]  # tables with rows Sumatra's get_or_create cannot tell apart

    def audited(self, kind: str) -> set[Key]:
        return {(f["table"], f["column"]) for f in self.audit["findings"] if f["kind"] == kind}

    def failing(self, kind: str) -> set[Key]:
        assert self.copy is not None
        return {(f["table"], f["column"]) for f in self.copy["failing"] if f["kind"] == kind}


def duplicate_tables(path: Path) -> set[str]:
    """Tables with two rows equal in every column but the id (as SQLite compares them: same
    type, same bytes; NULL equal to NULL, as Django's `field=None`): planted values can
    make two rows one to Sumatra, which a copy refuses (without --dedupe)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        found = set()
        for table in LOOKED_UP:
            columns = [n for (t, n), c in SCHEMA.items() if t == table and not c.primary_key]
            values = ", ".join(f"typeof({q(n)}), CAST({q(n)} AS BLOB)" for n in columns)
            rows = conn.execute(f"SELECT {values} FROM {q(table)}").fetchall()
            if len(set(rows)) < len(rows):
                found.add(table)
        return found
    finally:
        conn.close()


def audit_and_copy(cli, project: Path, url: str) -> Run:
    audited = cli("audit", project, "--format", "json")
    assert audited.code in (0, 1), audited
    copied = cli("copy", project, url, *COPY_ARGS)
    tables = pg_query(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return Run(
        json.loads(audited.out),
        copied.code,
        json.loads(copied.out) if copied.out.strip() else None,
        copied.err,
        sorted(name for (name,) in tables),
        duplicate_tables(records_file(project)),
    )


def copied_or_refused(run: Run, invalid: set[Key], too_long: set[Key] = frozenset()) -> bool:
    """The oracle shared by every property. `invalid`: the columns holding a value
    PostgreSQL cannot hold; `too_long`: columns with values longer than the target keeps
    even widened. True when the copy went through (the caller then compares values)."""
    assert run.audited("invalid") == invalid, run.audit["findings"]
    assert {table for table, _ in run.audited("duplicate")} == run.duplicates
    if invalid or too_long or run.duplicates:
        assert run.code == 1, run
        assert run.copy is not None and run.copy["refused"] is True
        assert run.failing("invalid") == invalid
        assert {table for table, _ in run.failing("duplicate")} == run.duplicates
        assert run.failing("overflow") - invalid == too_long - invalid
        assert run.tables == [], "a refused copy wrote to the target"
        event("refused")
        return False
    assert run.code == 0, run
    assert run.copy is not None and run.copy["verification"]["ok"] is True
    event("copied")
    return True


def pg_rows(url: str, table: str, columns: list[str], expression: str = "{}") -> dict:
    """primary key → the columns' values, as psycopg2 reads them from PostgreSQL."""
    selected = ", ".join(expression.format(q(c)) for c in columns)
    rows = pg_query(url, f"SELECT {q(PRIMARY_KEY[table])}, {selected} FROM {q(table)}")
    return {key: tuple(values) for key, *values in rows}


# -- text ------------------------------------------------------------------------------------

SPECIAL_TEXT = [
    "",
    "🧪",
    "é µ 中文",
    "\\",
    "\\N",
    "\\.",
    "\t",
    "\n",
    "\r\n",
    "\r",
    "'\";--",
    "\u2028",
    "\ufeff",
    "\U0010ffff",
    "\x7f\x01\x1b",
    ",",
]
SURROGATES = ["\ud800", "\udfff", "\ud83e\uddea"]  # lone high, lone low, a pair
BAD_UTF8 = [
    b"\x00",
    *(s.encode("utf-8", "surrogatepass") for s in SURROGATES),
    b"\xff",
    b"\xc0\x80",  # overlong NUL
    b"\x80",  # continuation byte with no start
    b"\xe2\x82",  # truncated sequence
    b"\xf4\x90\x80\x80",  # above U+10FFFF
]
pieces = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=20),
    st.sampled_from(SPECIAL_TEXT),
)
valid_text = st.builds(
    lambda parts, repeat: "".join(parts) * repeat,
    st.lists(pieces, max_size=5),
    st.one_of(st.just(1), st.integers(1, 500)),
).map(str.encode)
broken_text = st.builds(
    lambda before, bad, after: before + bad + after,
    valid_text,
    st.sampled_from(BAD_UTF8),
    valid_text,
)
text_cells = st.tuples(st.sampled_from(TEXT_TARGETS), st.integers(0, 30), valid_text)
broken_cells = st.tuples(st.sampled_from(TEXT_TARGETS), st.integers(0, 30), broken_text)


def decoded(value: object) -> str | None:
    """The text PostgreSQL stores for a value, or None when it rejects it."""
    if not isinstance(value, bytes):
        return None if value is None else str(value)
    if b"\x00" in value:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


def text_state(
    conn: sqlite3.Connection,
) -> tuple[set[Key], dict[Key, int], dict[str, tuple[list[str], dict]]]:
    """Every text column of the store read as bytes: the columns PostgreSQL would reject,
    the longest valid value of each (characters) and primary key → decoded row values."""
    conn.text_factory = bytes
    invalid, longest, rows = set(), {}, {}
    for table in PRIMARY_KEY:
        names = [name for t, name in TEXT_COLUMNS if t == table]
        if not names:
            continue
        selected = ", ".join(map(q, names))
        table_rows = {}
        for key, *values in conn.execute(
            f"SELECT {q(PRIMARY_KEY[table])}, {selected} FROM {q(table)}"
        ):
            texts = []
            for name, value in zip(names, values, strict=True):
                text = decoded(value)
                if value is not None and text is None:
                    invalid.add((table, name))
                elif text is not None:
                    longest[table, name] = max(longest.get((table, name), 0), len(text))
                texts.append(text)
            table_rows[key.decode() if isinstance(key, bytes) else key] = tuple(texts)
        rows[table] = (names, table_rows)
    conn.text_factory = str
    return invalid, longest, rows


@settings(PROPERTY_SETTINGS, max_examples=12)
@given(cells=st.lists(text_cells, max_size=30), broken=st.lists(broken_cells, max_size=1))
@example(
    cells=[
        ((RECORD, "stdout_stderr"), 0, ("🧪 done\n" * 1250).encode()),  # 10k characters
        ((RECORD, "label"), 1, ("x" * 10_000).encode()),
        ((RECORD, "reason"), 2, "tab\there \\N \\. \r\n é µ 中文 \U0010ffff".encode()),
        ((RECORD, "outcome"), 3, b""),
        ((RECORD, "repeats"), 4, b""),
        (("django_store_tag", "name"), 5, ("🧪" * 60).encode()),
        ((DATAKEY, "digest"), 0, b"d" * 40),  # exactly the limit that stays
    ],
    broken=[],
)
@example(
    cells=[((DATAKEY, "digest"), 1, b"d" * 41)],  # stays varchar(40): overflow
    broken=[
        ((RECORD, "reason"), 0, b"before\x00after"),
        ((RECORD, "stdout_stderr"), 1, "lone \ud800 surrogate".encode("utf-8", "surrogatepass")),
        (("django_store_tag", "name"), 2, "\udfff".encode("utf-8", "surrogatepass")),
    ],
)
@pytest.mark.pg
def test_text_is_copied_exactly_or_reported(
    cli, cells: list[tuple[Key, int, bytes]], broken: list[tuple[Key, int, bytes]]
) -> None:
    """Text travels as the bytes the store holds: what PostgreSQL can hold arrives intact
    (escapes, emoji, 10k characters), the rest (NUL, invalid UTF-8) is `invalid`, and too
    long for a column widening keeps bounded is `overflow`; either refuses the copy."""
    with scratch_project() as project:
        conn = sqlite3.connect(records_file(project))
        try:
            for (table, column), row, value in cells + broken:
                key = plant(conn, table, column, row, value)
                if key is not None:  # SQLite holds exactly those bytes
                    held = conn.execute(
                        f"SELECT CAST({q(column)} AS BLOB) FROM {q(table)} "
                        f"WHERE {q(PRIMARY_KEY[table])} = ?",
                        (key,),
                    ).fetchone()
                    assert held == (value,)
            invalid, longest, source = text_state(conn)
        finally:
            conn.close()
        too_long = {
            key
            for key, length in longest.items()
            if SCHEMA[key].limit is not None and length > SCHEMA[key].limit
        }
        with fresh_database() as url:
            run = audit_and_copy(cli, project, url)
            assert run.audited("overflow") - invalid == too_long - invalid
            if copied_or_refused(run, invalid, too_long & KEEP_SIZE):
                for table, (names, rows) in source.items():
                    assert pg_rows(url, table, names) == rows, table


# -- floats ----------------------------------------------------------------------------------

EDGE_FLOATS = [
    5e-324,
    -5e-324,
    2.225073858507201e-308,  # largest subnormal
    2.2250738585072014e-308,  # smallest normal
    -0.0,
    0.0,
    1.7976931348623157e308,
    -1.7976931348623157e308,
    math.inf,
    -math.inf,
    math.nan,
    0.1 + 0.2,
    1 / 3,
    2.0**53 + 2,
]
NOT_NUMBERS = ["", "fast", "NaN", "inf", "1.5 s"]


def float_bits(value: float | None) -> bytes | None:
    return None if value is None else struct.pack(">d", value)


@settings(PROPERTY_SETTINGS, max_examples=8)
@given(
    durations=st.lists(
        st.one_of(st.floats(), st.sampled_from(EDGE_FLOATS), st.none()), min_size=1, max_size=40
    ),
    not_numbers=st.lists(st.tuples(st.integers(0, 39), st.sampled_from(NOT_NUMBERS)), max_size=1),
)
@example(durations=[*EDGE_FLOATS, None], not_numbers=[])
@example(durations=EDGE_FLOATS, not_numbers=[(3, "fast")])
@pytest.mark.pg
def test_floats_are_copied_bit_for_bit_or_reported(
    cli, durations: list[float | None], not_numbers: list[tuple[int, str]]
) -> None:
    """A double arrives with the very bits SQLite holds (subnormals, ±inf, the largest
    double); a non-number in the float column is `invalid` and refuses the copy. SQLite
    itself keeps no NaN (it stores NULL) and no -0.0 (it stores 0.0): the oracle is what
    the store holds, and those two facts are asserted so a change in SQLite shows up."""
    with scratch_project() as project:
        conn = sqlite3.connect(records_file(project))
        try:
            clone_records(conn, 40)
            for row, value in enumerate(durations):
                plant(conn, RECORD, "duration", row, value)
            for row, value in not_numbers:
                plant(conn, RECORD, "duration", row, value)
            held = {
                key: (kind, value)
                for key, kind, value in conn.execute(
                    f"SELECT db_id, typeof(duration), duration FROM {RECORD}"
                )
            }
            keys = primary_keys(conn, RECORD)
        finally:
            conn.close()
        overwritten = {row for row, _ in not_numbers}
        for row, value in enumerate(durations):
            if row in overwritten:
                continue
            kind, stored = held[keys[row]]
            if value is None or math.isnan(value):
                assert kind == "null"
            elif value == 0:
                assert float_bits(stored) == float_bits(0.0)
            else:
                assert float_bits(stored) == float_bits(value)
        invalid = (
            {(RECORD, "duration")}
            if any(kind not in ("real", "integer", "null") for kind, _ in held.values())
            else set()
        )
        with fresh_database() as url:
            run = audit_and_copy(cli, project, url)
            if copied_or_refused(run, invalid):
                target = pg_rows(url, RECORD, ["duration"], "float8send({})")
                assert {k: (None if b is None else bytes(b),) for k, (b,) in target.items()} == {
                    k: (float_bits(v),) for k, (_, v) in held.items()
                }


# -- datetimes -------------------------------------------------------------------------------

DATETIME_RE = re.compile(r"(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d+))?")
# SQLite's date/time functions count milliseconds and stop at 9999-12-31 23:59:59.999;
# later instants (rounded up past it) are no date to them, and the audit says so.
SQLITE_END = datetime(9999, 12, 31, 23, 59, 59, 999500)
TIMEZONES = ["UTC", "Pacific/Chatham", "America/St_Johns", "Asia/Kathmandu"]
NOT_DATETIMES = [
    "",
    "yesterday",
    "2024-13-01 00:00:00",
    "2024-01-01 12:60:00",
    # SQLite's date functions take these, as other instants or not at all in PostgreSQL:
    "2024-02-30 10:00:00",
    "2024-01-01 24:00:00",
    "0000-01-01 00:00:00",
    "2024-01-01T10:00:00",
    "2024-01-01 10:00:00.5+02:00",
    "2024-01-01 10:00",
    2460000.5,  # a Julian day number
    1732550400,  # seconds since 1970
]


def datetime_text(moment: datetime, digits: int, beyond: int) -> str:
    """Django writes `YYYY-MM-DD HH:MM:SS[.ffffff]`; other writers use fewer or more
    fraction digits: `digits` of them, those past the sixth taken from `beyond`."""
    text = f"{moment.year:04d}-{moment:%m-%d %H:%M:%S}"
    fraction = f"{moment.microsecond:06d}{beyond:03d}"[:digits]
    return f"{text}.{fraction}" if digits else text


def utc_text(value: object) -> str | None:
    """What PostgreSQL must hold for a stored datetime string, read as UTC, in to_char's
    `YYYY-MM-DD HH24:MI:SS.US`; None when PostgreSQL cannot hold it exactly."""
    match = DATETIME_RE.fullmatch(value) if isinstance(value, str) else None
    if not match:
        return None
    fields = [int(part) for part in match.groups()[:6]]
    fraction = match[7] or ""
    if fraction[6:].strip("0"):  # finer than PostgreSQL's microseconds
        return None
    try:
        moment = datetime(*fields, int(fraction[:6].ljust(6, "0")))
    except ValueError:
        return None
    if moment >= SQLITE_END:  # SQLite's date functions cannot read it: reported, not copied
        return None
    return f"{moment.year:04d}-{moment:%m-%d %H:%M:%S.%f}"


# Django's two forms most often, any number of digits (past the sixth, zeros) otherwise.
datetimes = st.builds(
    datetime_text, st.datetimes(), st.one_of(st.sampled_from([0, 6]), st.integers(0, 9)), st.just(0)
)
# No datetime at all, or finer than microseconds.
not_datetimes = st.one_of(
    st.sampled_from(NOT_DATETIMES),
    st.builds(datetime_text, st.datetimes(), st.integers(7, 9), st.integers(1, 999)),
)
DATETIME_COLUMNS = [(RECORD, "timestamp"), (DATAKEY, "creation")]


@settings(PROPERTY_SETTINGS, max_examples=10)
@given(
    cells=st.lists(
        st.tuples(st.sampled_from(DATETIME_COLUMNS), st.integers(0, 29), datetimes),
        max_size=40,
    ),
    broken=st.lists(
        st.tuples(st.sampled_from(DATETIME_COLUMNS), st.integers(0, 29), not_datetimes),
        max_size=1,
    ),
    timezone=st.sampled_from(TIMEZONES),
)
@example(
    cells=[
        ((RECORD, "timestamp"), 0, "2026-11-25 17:37:55.586360"),
        ((RECORD, "timestamp"), 1, "2026-11-25 17:37:55"),
        ((RECORD, "timestamp"), 2, "0001-01-01 00:00:00"),
        ((RECORD, "timestamp"), 3, "9999-12-31 23:59:59.999"),
        ((RECORD, "timestamp"), 4, "2024-02-29 12:00:00.5"),
        ((RECORD, "timestamp"), 5, "2024-03-31 01:30:00.1234560"),
        ((DATAKEY, "creation"), 0, "1970-01-01 00:00:00.000001"),
    ],
    broken=[],
    timezone="Pacific/Chatham",
)
@example(
    cells=[
        ((RECORD, "timestamp"), 0, "2024-03-31 01:30:00.1234567"),
        ((DATAKEY, "creation"), 0, "9999-12-31 23:59:59.999999"),
    ],
    broken=[((DATAKEY, "creation"), 1, "")],
    timezone="UTC",
)
@pytest.mark.pg
def test_datetimes_are_copied_as_utc_or_reported(
    cli,
    cells: list[tuple[Key, int, str]],
    broken: list[tuple[Key, int, str]],
    timezone: str,
) -> None:
    """A stored datetime is naive UTC; it arrives as that instant to the microsecond,
    whatever the database's TimeZone and however many fraction digits (a fraction finer
    than microseconds, which PostgreSQL cannot keep, and a string that is no datetime at
    all are `invalid`)."""
    with scratch_project() as project:
        conn = sqlite3.connect(records_file(project))
        try:
            clone_records(conn, 30)
            for (table, column), row, value in cells + broken:
                plant(conn, table, column, row, value)
            source = {
                (table, column): dict(
                    conn.execute(f"SELECT {q(PRIMARY_KEY[table])}, {q(column)} FROM {q(table)}")
                )
                for table, column in DATETIME_COLUMNS
            }
        finally:
            conn.close()
        invalid = {
            key
            for key, values in source.items()
            if any(v is not None and utc_text(v) is None for v in values.values())
        }
        with fresh_database(timezone) as url:
            run = audit_and_copy(cli, project, url)
            if copied_or_refused(run, invalid):
                for (table, column), values in source.items():
                    target = pg_rows(
                        url,
                        table,
                        [column],
                        "to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')",
                    )
                    assert target == {k: (utc_text(v),) for k, v in values.items()}, column


@pytest.mark.parametrize("value", NOT_DATETIMES, ids=repr)
@pytest.mark.slow
def test_each_kind_of_non_datetime_is_reported(cli, value: object) -> None:
    """Every form in NOT_DATETIMES, alone in a store, is an `invalid` finding of exactly
    its column (the property above meets each of them only now and then)."""
    assert utc_text(value) is None  # the oracle agrees it is no Django datetime
    with scratch_project() as project:
        conn = sqlite3.connect(records_file(project))
        try:
            assert plant(conn, RECORD, "timestamp", 0, value) is not None
        finally:
            conn.close()
        audited = cli("audit", project, "--format", "json")
    assert audited.code == 1, audited
    findings = json.loads(audited.out)["findings"]
    invalid = {(f["table"], f["column"]) for f in findings if f["kind"] == "invalid"}
    assert invalid == {(RECORD, "timestamp")}


# -- NULL versus '' ----------------------------------------------------------------------


def empty_is_kept(column: Column) -> bool:
    """'' is a value only in a text column; in a number, datetime, inet or foreign-key
    column PostgreSQL (or the constraint) rejects it."""
    return column.is_text and not column.foreign_key


def is_kept(column: Column, value: str | None) -> bool:
    return column.nullable if value is None else empty_is_kept(column)


# Every (column, NULL or '') pair, split by the oracle: those a column can hold, the others.
PAIRS = [(key, value) for key in ALL_COLUMNS for value in (None, "")]
KEPT = [pair for pair in PAIRS if is_kept(SCHEMA[pair[0]], pair[1])]
REJECTED = [pair for pair in PAIRS if not is_kept(SCHEMA[pair[0]], pair[1])]


@settings(PROPERTY_SETTINGS, max_examples=12)
@given(
    cells=st.lists(st.tuples(st.sampled_from(KEPT), st.integers(0, 30)), max_size=25),
    broken=st.lists(st.tuples(st.sampled_from(REJECTED), st.integers(0, 30)), max_size=1),
)
@example(cells=[(pair, 0 if pair[1] is None else 1) for pair in KEPT], broken=[])
@example(  # two datastores made one to Sumatra's lookup: refused as `duplicate`
    cells=[((("django_store_datastore", "parameters"), ""), row) for row in (0, 1)],
    broken=[],
)
@example(
    cells=[(((RECORD, "repeats"), None), 4), (((RECORD, "repeats"), ""), 5)],
    broken=[
        (((RECORD, "label"), None), 0),  # NOT NULL in Sumatra: the store was relaxed
        (((RECORD, "timestamp"), ""), 1),
        (((RECORD, "duration"), ""), 2),
        (((RECORD, "executable_id"), ""), 3),
        ((("django_store_platforminformation", "ip_addr"), ""), 0),
    ],
)
@pytest.mark.pg
def test_null_and_empty_string_stay_apart_or_are_reported(
    cli,
    cells: list[tuple[tuple[Key, str | None], int]],
    broken: list[tuple[tuple[Key, str | None], int]],
) -> None:
    """NULL stays NULL and '' stays '' in every column that can hold them; NULL in a
    column that is NOT NULL in Sumatra's schema (from a store declaring it nullable) and
    '' where only numbers, datetimes, addresses or keys belong are `invalid`."""
    with scratch_project() as project:
        conn = sqlite3.connect(records_file(project))
        try:
            relax_not_null(
                conn,
                {key for (key, value), _ in broken if value is None and not SCHEMA[key].nullable},
            )
            planted = {}
            for ((table, column), value), row in cells + broken:
                key = plant(conn, table, column, row, value)
                if key is None:  # a second '' against a UNIQUE (tag name, M2M pair)
                    assert value == "", (table, column)
                    continue
                planted[table, column, key] = value
        finally:
            conn.close()
        invalid = {
            (table, column)
            for (table, column, _), value in planted.items()
            if not is_kept(SCHEMA[table, column], value)
        }
        with fresh_database() as url:
            run = audit_and_copy(cli, project, url)
            if copied_or_refused(run, invalid):
                for (table, column, key), value in planted.items():
                    got = pg_query(
                        url,
                        f"SELECT {q(column)} IS NULL, {q(column)}::text FROM {q(table)} "
                        f"WHERE {q(PRIMARY_KEY[table])} = %s",
                        (key,),
                    )
                    assert got == [(value is None, value)], (table, column)

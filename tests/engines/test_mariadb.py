"""MariaDB as a store engine: locations, checksums equal to SQLite's, `copy` SQLite →
MariaDB (both fixture generations read back through Sumatra over mysql://), collation
variants kept apart, a copy killed mid-load, and the commands that refuse MariaDB yet.

Tests marked `mariadb` need the server of SMTMIGRATE_TEST_MARIADB (conftest.py)."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import struct
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from smtmigrate.canonical import float_bits
from smtmigrate.engines import engine_for
from smtmigrate.engines.mariadb import MariadbEngine
from smtmigrate.engines.mariadb_findings import server_findings
from smtmigrate.engines.mariadb_server import PARTIAL_PREFIX
from smtmigrate.errors import LocationError, MariadbNotYet
from smtmigrate.locations import mariadb_settings, resolve, resolve_target

from ..conftest import (
    FIXTURES,
    MARIADB_URL,
    copy_fixture,
    drop_mariadb_database,
    generated_store,
    mariadb_databases,
    mariadb_execute,
    mariadb_url_for,
    needs_mariadb_driver,
    records_file,
    run_sumatra,
    sqlite_exec,
    sqlite_rows,
)
from ..storegen import generate_store

SMTMIGRATE = [sys.executable, "-m", "smtmigrate"]


# -- locations (no server) ----------------------------------------------------------------


@needs_mariadb_driver
def test_mariadb_url_parts_and_redaction():
    store = resolve("mysql://alice:S%40cret@db.example:3307/sumatra", mariadb=True)
    assert store.kind == "mariadb"
    assert store.display == "mysql://alice:***@db.example:3307/sumatra"
    settings = store.settings
    assert (settings["ENGINE"], settings["NAME"], settings["USER"]) == (
        "django.db.backends.mysql",
        "sumatra",
        "alice",
    )
    assert (settings["PASSWORD"], settings["HOST"], settings["PORT"]) == (
        "S@cret",
        "db.example",
        "3307",
    )
    assert settings["OPTIONS"]["charset"] == "utf8mb4"
    assert "STRICT" not in settings["OPTIONS"]["init_command"]  # TRADITIONAL is strict
    assert "TRADITIONAL" in settings["OPTIONS"]["init_command"]
    assert resolve("mariadb://localhost/x", mariadb=True).settings["USER"] == ""


def test_my_cnf_is_read_when_it_exists(home):
    assert "read_default_file" not in mariadb_settings("mysql://h/db")["OPTIONS"]
    (home / ".my.cnf").write_text("[client]\nuser=bob\n")
    assert mariadb_settings("mysql://h/db")["OPTIONS"]["read_default_file"] == str(home / ".my.cnf")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://h/", "the URL names no database"),
        ("mysql://h:port/db", "port 'port' is not a number"),
        ("mysql://h/db?ssl=1", r"\?parameters are not taken"),
    ],
)
def test_bad_mariadb_urls(url, message):
    with pytest.raises(LocationError, match=message):
        resolve(url, mariadb=True)


def test_commands_that_do_not_take_mariadb_refuse_it():
    with pytest.raises(MariadbNotYet, match=r"mysql://u:\*\*\*@h/db: MySQL/MariaDB stores"):
        resolve("mysql://u:pw@h/db")
    with pytest.raises(MariadbNotYet):
        resolve_target("mariadb://h/db")


def test_backtick_quoting():
    engine = engine_for("mysql")
    assert isinstance(engine, MariadbEngine) and engine is engine_for("mariadb")
    assert engine.quote_name("a`b") == "`a``b`"


@pytest.mark.parametrize(
    "args",
    [
        ("merge", "{sqlite}", "mysql://root@localhost/x"),
    ],
    ids=lambda a: "-".join(a[:2]),
)
def test_refusal_names_the_command(cli, store08, tmp_path, args):
    values = {
        "sqlite": str(records_file(store08)),
        "project": str(store08),
        "new": str(tmp_path / "new.sqlite"),
    }
    result = cli(*(a.format(**values) for a in args))
    assert result.code == 2, result
    command = args[0]
    assert f"MySQL/MariaDB stores are not supported by `smtmigrate {command}` yet" in result.err
    assert "pw" not in result.err
    assert len(result.err.strip().splitlines()) == 1


# -- checksums: MariaDB's SQL gives SQLite's canonical bytes --------------------------------


def _random_doubles(count: int) -> list[float]:
    rng = random.Random(17)
    values = [0.0, 1.0, 0.1, 1 / 3, 2.0**-1022, 5e-324, 2.0**-1074 * 12345, 1.7976931348623157e308]
    values += [-v for v in values if v]
    while len(values) < count:
        (value,) = struct.unpack(">d", rng.getrandbits(64).to_bytes(8, "big"))
        if value == value and abs(value) != float("inf") and abs(value) < 2.0**1023:
            values.append(value)
    values += [rng.uniform(0, 100) for _ in range(200)]  # durations
    return values


@pytest.mark.mariadb
def test_float_bits_are_exact(mariadb_database):
    """Every double reads back with the same 64 bits as Python's struct gives (the row
    checksum compares floats by their bits)."""
    name = mariadb_database.rsplit("/", 1)[1]
    values = _random_doubles(2_000)
    mariadb_execute("CREATE TABLE f (i int primary key, d double)", database=name)
    for start in range(0, len(values), 500):
        rows = list(enumerate(values))[start : start + 500]
        mariadb_execute(
            "INSERT INTO f VALUES " + ", ".join(["(%s, %s)"] * len(rows)),
            tuple(v for row in rows for v in row),
            database=name,
        )
    bits = MariadbEngine().float_bits("d")
    got = dict(mariadb_execute(f"SELECT i, {bits} FROM f", database=name))
    stored = dict(mariadb_execute("SELECT i, d FROM f", database=name))
    assert stored == dict(enumerate(values))  # the server kept every bit
    wrong = {i: (values[i], got[i]) for i in got if bytes(got[i]) != float_bits(values[i])}
    assert not wrong
    assert len(got) == len(values)


def _unit_table():
    """A table keyed by integers that span units both sides of zero, with a gap of a whole
    unit, a float, and text that needs every escape (canonical.py)."""
    from smtmigrate.canonical import table_layout
    from smtmigrate.tables import ModelColumn, ModelTable

    columns = {
        "id": ModelColumn("u", "id", None, "BigAutoField", None, False),
        "v": ModelColumn("u", "v", None, "TextField", None, True),
        "d": ModelColumn("u", "d", None, "FloatField", None, True),
    }
    layout = table_layout(ModelTable("u", None, columns, "id", ()), "u", columns)
    ids = [-2049, -1025, -1024, -1, 0, 1, 5, 1023, 1024, *range(3000, 3100), 2**40]
    rows = [(i, None if i == 5 else f"é\tline\n{i}\\", i / 7 if i % 3 else None) for i in ids]
    return layout, rows


@pytest.mark.mariadb
@pytest.mark.pg
def test_unit_checksums_agree_across_engines(mariadb_database, pg_database):
    """SQLite (both ways of reading), PostgreSQL and MariaDB hash the same rows to the same
    checksum: units of keys >> 10, negative keys too; one changed value changes it."""
    import MySQLdb
    import psycopg2

    from smtmigrate.canonical import summed
    from smtmigrate.engines.sqlite_units import UnitChunks

    layout, rows = _unit_table()
    sqlite, postgres, mariadb = engine_for("sqlite"), engine_for("postgresql"), MariadbEngine()
    lite = sqlite3.connect(":memory:")
    lite.text_factory = bytes
    lite.execute("CREATE TABLE u (id INTEGER PRIMARY KEY, v TEXT, d REAL)")
    lite.executemany("INSERT INTO u VALUES (?, ?, ?)", rows)
    expected = sqlite.checksum(lite.cursor(), layout)
    assert expected.rows == len(rows)
    plain = replace(layout, floats=())  # UnitChunks reads tables without floats
    chunks = UnitChunks(lite, '"u"', sqlite.chunk_select(plain, {}, None))
    assert summed(chunks) == sqlite.checksum(lite.cursor(), plain)

    pg = psycopg2.connect(pg_database)
    with pg, pg.cursor() as cursor:
        cursor.execute("CREATE TABLE u (id bigint PRIMARY KEY, v text, d double precision)")
        cursor.executemany("INSERT INTO u VALUES (%s, %s, %s)", rows)
        assert postgres.checksum(cursor, layout) == expected
        cursor.execute("UPDATE u SET v = 'x' WHERE id = -1")
        assert postgres.checksum(cursor, layout) != expected
    pg.close()

    name = mariadb_database.rsplit("/", 1)[1]
    maria = MySQLdb.connect(user="root", database=name, charset="utf8mb4")
    with maria.cursor() as cursor:
        cursor.execute("CREATE TABLE u (id bigint PRIMARY KEY, v longtext, d double)")
        cursor.executemany("INSERT INTO u VALUES (%s, %s, %s)", rows)
        assert mariadb.checksum(cursor, layout) == expected
        assert mariadb._checksum_in_python(cursor, layout, {}, None) == expected
        cursor.execute("UPDATE u SET d = 1.5 WHERE id = 1024")
        assert mariadb.checksum(cursor, layout) != expected
    maria.close()


@pytest.mark.mariadb
def test_a_unit_longer_than_mariadb_returns_is_hashed_by_python(mariadb_database):
    """GROUP_CONCAT cuts a unit at max_allowed_packet with only a warning: such a table is
    hashed from its lines by Python, and still equals SQLite's checksum of it."""
    import MySQLdb

    layout, _ = _unit_table()
    name = mariadb_database.rsplit("/", 1)[1]
    maria = MySQLdb.connect(user="root", database=name, charset="utf8mb4")
    with maria.cursor() as cursor:
        cursor.execute("SELECT @@max_allowed_packet")
        (packet,) = cursor.fetchone()
        value = "x" * (1 << 20)
        rows = [(i, value, None) for i in range(1, packet // len(value) + 3)]  # one unit
        cursor.execute("CREATE TABLE u (id bigint PRIMARY KEY, v longtext, d double)")
        for row in rows:
            cursor.execute("INSERT INTO u VALUES (%s, %s, %s)", row)
        cursor.execute(f"SET SESSION group_concat_max_len = {1 << 30}")
        cursor.execute(MariadbEngine().checksum_sql(layout))
        _, _, longest, cap = cursor.fetchone()
        assert longest == cap  # the server's own hash would be of a cut unit
        got = MariadbEngine().checksum(cursor, layout)
    maria.close()
    lite = sqlite3.connect(":memory:")
    lite.execute("CREATE TABLE u (id INTEGER PRIMARY KEY, v TEXT, d REAL)")
    lite.executemany("INSERT INTO u VALUES (?, ?, ?)", rows)
    assert got == engine_for("sqlite").checksum(lite.cursor(), layout)
    assert got.rows == len(rows)


# -- copy SQLite → MariaDB ----------------------------------------------------------------


def _whole_seconds(records: list[dict]) -> list[dict]:
    """`smt export` drops microseconds from timestamps; compare on what both hold."""
    for record in records:
        record["timestamp"] = record["timestamp"][:19]
    return sorted(records, key=lambda r: r["label"])


def _export(location: str) -> dict:
    result = run_sumatra("export", location)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


@pytest.mark.mariadb
@pytest.mark.parametrize("generation", ["0.8", "0.7"])
@pytest.mark.slow
def test_copy_then_sumatra_reads_every_record(cli, tmp_path, mariadb_name, generation):
    project = copy_fixture(generation, tmp_path)
    url = mariadb_url_for(mariadb_name)
    result = cli("copy", project, url, "--widen")
    assert result.code == 0, result
    assert "records identical through Sumatra" in result.out
    (copied,) = _export(url).values()
    # the reference: the store's own `smt export`, by the Sumatra that wrote it
    decoded = run_sumatra("decode", str(FIXTURES / f"sumatra-{generation}" / "records_export.json"))
    assert _whole_seconds(copied) == _whole_seconds(json.loads(decoded.stdout))
    count = sqlite_rows(records_file(project), "SELECT count(*) FROM django_store_record")
    assert [(len(copied),)] == count
    # the database the copy made, and every table in it: binary, no pad
    (collation,) = mariadb_execute(
        "SELECT default_collation_name FROM information_schema.schemata WHERE schema_name = %s",
        (mariadb_name,),
    )[0]
    tables = mariadb_execute(
        "SELECT DISTINCT table_collation FROM information_schema.tables WHERE table_schema = %s",
        (mariadb_name,),
    )
    assert (collation, tables) == ("utf8mb4_nopad_bin", [("utf8mb4_nopad_bin",)])
    assert not scratch_databases(os.getpid())


KEYS_QUERIES = {
    "indexes": "SELECT table_name, index_name, non_unique, seq_in_index, column_name "
    "FROM information_schema.statistics WHERE table_schema = %s",
    "foreign keys": "SELECT table_name, constraint_name, column_name, referenced_table_name, "
    "referenced_column_name FROM information_schema.key_column_usage "
    "WHERE table_schema = %s AND referenced_table_name IS NOT NULL",
}


def _keys(name: str) -> dict[str, list[tuple]]:
    return {what: sorted(mariadb_execute(query, (name,))) for what, query in KEYS_QUERIES.items()}


@pytest.mark.mariadb
@pytest.mark.parametrize("hash_beside_indexes", [False, True], ids=["in-turn", "side-by-side"])
def test_a_copy_has_the_keys_sumatra_migrations_make(
    cli, store08, mariadb_name, monkeypatch, hash_beside_indexes
):
    """The load sets secondary indexes and foreign keys aside and adds them back after:
    the copy ends with every one Sumatra's migrations and the widening make, unique ones
    still unique; whether a table is hashed after its index build or during it (big
    tables), the hashes are its rows' (the copy's verification compares them)."""
    from django.core.management import call_command

    from smtmigrate.engines import mariadb_load

    if hash_beside_indexes:
        monkeypatch.setattr(mariadb_load, "HASH_BESIDE_INDEXES", 0)

    reference = f"{mariadb_name}_ref"
    mariadb_execute(f"CREATE DATABASE `{reference}` COLLATE utf8mb4_nopad_bin")
    try:
        with resolve(mariadb_url_for(reference), mariadb=True) as store:
            call_command("migrate", database=store.alias, verbosity=0)
        assert cli("widen", "--apply", mariadb_url_for(reference)).code == 0
        expected = _keys(reference)
    finally:
        drop_mariadb_database(reference)
    assert cli("copy", store08, mariadb_url_for(mariadb_name), "--widen").code == 0
    copied = _keys(mariadb_name)
    identities = [row for row in copied["indexes"] if row[1].startswith("smtmigrate_identity_")]
    assert len(identities) == 8  # the copy's own, on top (identities.py)
    copied["indexes"] = [row for row in copied["indexes"] if row not in identities]
    assert any(row[1] == "PRIMARY" for row in expected["indexes"])
    assert any(not row[2] for row in expected["indexes"] if row[1] != "PRIMARY")  # a unique
    assert expected["foreign keys"]
    assert copied == expected
    with pytest.raises(Exception, match="Duplicate entry"):
        mariadb_execute(
            "INSERT INTO django_store_record_dependencies (record_id, dependency_id) "
            "SELECT record_id, dependency_id FROM django_store_record_dependencies LIMIT 1",
            database=mariadb_name,
        )


@pytest.mark.mariadb
@pytest.mark.parametrize("generation", ["0.6", "0.5", "0.4"])
def test_older_generations_copy_into_mariadb(cli, tmp_path, mariadb_name, generation):
    """0.4-0.6 stores, read through their views: verified row by row and record by record."""
    project = copy_fixture(generation, tmp_path)
    result = cli("copy", project, mariadb_url_for(mariadb_name), "--widen")
    assert result.code == 0, result
    assert "9 records identical through Sumatra" in result.out


@pytest.mark.mariadb
@pytest.mark.slow
def test_sumatra_saves_long_fields_after_widen(cli, store08, mariadb_database):
    assert cli("copy", store08, mariadb_database, "--widen").code == 0
    export = str(FIXTURES / "sumatra-0.8" / "records_export.json")
    saved = run_sumatra("long", mariadb_database, "after-copy", export, "3000")
    assert saved.returncode == 0, saved.stderr[-2000:]
    name = mariadb_database.rsplit("/", 1)[1]
    rows = mariadb_execute(
        "SELECT char_length(label) FROM django_store_record WHERE project_id = 'after-copy'",
        database=name,
    )
    assert rows == [(3000,)]


@pytest.mark.mariadb
def test_collation_variants_stay_distinct(cli, store08, mariadb_database):
    """Tag names equal under general_ci (case, accents, a trailing space) are distinct
    rows in the copy: its tables are utf8mb4_nopad_bin even in a general_ci database."""
    variants = ["Calibration", "calibration", "élevée", "elevee", "tag", "tag "]
    sqlite_exec(
        records_file(store08),
        *(f"INSERT INTO django_store_tag (name) VALUES ('{v}')" for v in variants),
    )
    result = cli("copy", store08, mariadb_database, "--widen")
    assert result.code == 0, result
    name = mariadb_database.rsplit("/", 1)[1]
    placeholders = ", ".join(["%s"] * len(variants))
    rows = mariadb_execute(
        f"SELECT name FROM django_store_tag WHERE name IN ({placeholders})",
        tuple(variants),
        database=name,
    )
    assert sorted(r[0] for r in rows) == sorted(variants)


@pytest.mark.mariadb
def test_a_value_load_data_changes_fails_the_copy(cli, store08, mariadb_name):
    """LOAD DATA LOCAL makes data errors warnings whatever the sql_mode: any warning
    fails the copy (here an infinite duration, which MariaDB cannot hold), nothing kept."""
    sqlite_exec(records_file(store08), "UPDATE django_store_record SET duration = 9e999")
    result = cli("copy", store08, mariadb_url_for(mariadb_name), "--widen")
    assert result.code == 2, result
    assert "nothing was written" in result.err
    assert "MariaDB changed or skipped 7 value(s) on loading" in result.err
    assert not scratch_databases(os.getpid())
    assert mariadb_name not in mariadb_databases()


@pytest.mark.mariadb
def test_a_database_with_tables_is_refused(cli, store08, mariadb_database):
    name = mariadb_database.rsplit("/", 1)[1]
    mariadb_execute("CREATE TABLE notes (x int)", database=name)
    result = cli("copy", store08, mariadb_database, "--widen")
    assert result.code == 1, result
    assert "is not empty (1 tables)" in result.err
    assert mariadb_execute("SHOW TABLES", database=name) == [("notes",)]


@pytest.fixture(scope="module")
def big_source(tmp_path_factory, django_db_blocker) -> Path:
    """A store big enough for a copy to be killed while it loads (10k records)."""
    return generated_store(tmp_path_factory, django_db_blocker, 10_000, seed=11)


def scratch_databases(pid: int) -> list[str]:
    """The scratch databases of copies run by the process `pid` (other tests' copies may
    be running at the same time)."""
    return [
        d for d in mariadb_databases() if d.startswith(PARTIAL_PREFIX) and d.endswith(f"_{pid}")
    ]


def _loading(pid: int) -> bool:
    """Whether the copy of process `pid` is running a LOAD DATA into its scratch database."""
    rows = mariadb_execute(
        "SELECT count(*) FROM information_schema.processlist WHERE info LIKE 'LOAD DATA%%' "
        "AND db LIKE %s",
        (f"{PARTIAL_PREFIX}%\\_{pid}",),
    )
    return rows[0][0] > 0


@pytest.mark.mariadb
@pytest.mark.slow
def test_kill_mid_load_leaves_the_target_untouched(big_source, mariadb_name):
    """SIGKILL during LOAD DATA: no database under the target's name (only the scratch
    one, named for the dead process); the next copy drops that and succeeds."""
    url = mariadb_url_for(mariadb_name)
    process = subprocess.Popen(
        [*SMTMIGRATE, "copy", str(big_source), url, "--widen", "--verify", "rows"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    try:
        while not _loading(process.pid):
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    assert scratch_databases(process.pid)
    assert mariadb_name not in mariadb_databases()
    done = subprocess.run(
        [*SMTMIGRATE, "copy", str(big_source), url, "--widen", "--verify", "rows"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert not scratch_databases(process.pid)
    rows = mariadb_execute("SELECT count(*) FROM django_store_record", database=mariadb_name)
    assert rows == [(10_000,)]


# -- audit: MariaDB's traps ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql_mode", "reported"),
    [
        ("STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION", False),
        ("STRICT_ALL_TABLES", False),
        ("TRADITIONAL", False),
        ("NO_ENGINE_SUBSTITUTION", True),
        ("", True),
    ],
)
def test_a_non_strict_server_default_is_reported(sql_mode, reported):
    findings = server_findings(sql_mode)
    assert bool(findings) == reported
    if reported:
        assert findings[0].kind == "server"
        assert "is not strict" in findings[0].detail


VARIANTS = ["Calibration", "calibration", "élevée", "elevee", "tag", "tag "]


@pytest.mark.mariadb
def test_copy_plan_lists_collisions_under_a_general_ci_target(cli, store08, mariadb_database):
    sqlite_exec(
        records_file(store08),
        *(f"INSERT INTO django_store_tag (name) VALUES ('{v}')" for v in VARIANTS),
    )
    result = cli("copy", store08, mariadb_database, "--widen", "--dry-run")
    assert result.code == 0, result
    assert "About the target" in result.out
    assert "3 group(s) of values equal under" in result.out
    assert "utf8mb4_general_ci" in result.out
    for pair in ("['Calibration', 'calibration']", "['elevee', 'élevée']", "['tag', 'tag ']"):
        assert pair in result.out


@pytest.mark.mariadb
def test_audit_of_a_mariadb_store(cli, store08, mariadb_name):
    """A store whose label column is general_ci (as Sumatra makes it on a server with
    that default) and whose tag names are utf8mb3: both reported, each group listed."""
    url = mariadb_url_for(mariadb_name)
    assert cli("copy", store08, url, "--widen").code == 0
    mariadb_execute(
        "ALTER TABLE django_store_record MODIFY label longtext "
        "CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NOT NULL",
        database=mariadb_name,
    )
    for db_id, label in ((1, "Run"), (3, "run "), (5, "élevée"), (6, "elevee")):
        mariadb_execute(
            "UPDATE django_store_record SET label = %s WHERE db_id = %s",
            (label, db_id),
            database=mariadb_name,
        )
    mariadb_execute(
        "ALTER TABLE django_store_tag MODIFY name varchar(100) CHARACTER SET utf8mb3 NOT NULL",
        database=mariadb_name,
    )
    result = cli("audit", url, "--format", "json")
    findings = {f["kind"]: f for f in json.loads(result.out)["findings"]}
    assert findings["collision"]["examples"] == [
        {"ids": [1, 3], "values": {"label": ["Run", "run "]}},
        {"ids": [5, 6], "values": {"label": ["elevee", "élevée"]}},
    ]
    assert (findings["charset"]["table"], findings["charset"]["column"]) == (
        "django_store_tag",
        "name",
    )
    assert "drift" not in findings  # MariaDB's spelling of Sumatra's types is understood


# -- verify -------------------------------------------------------------------------------


@pytest.mark.mariadb
@pytest.mark.pg
def test_verify_across_engines(cli, store08, mariadb_name, pg_database):
    """Checksums computed by MariaDB, SQLite and PostgreSQL agree, both ways round; a
    double changed in its last bits is found."""
    sqlite_exec(  # non-ASCII that latin1 and utf8mb3 can hold, for the check below
        records_file(store08),
        "UPDATE django_store_record SET main_file = 'simulations/température.py', "
        "user = 'Anaïs Müller <am@example.org>' WHERE db_id = 1",
    )
    url = mariadb_url_for(mariadb_name)
    assert cli("copy", store08, url, "--widen", "--quiet").code == 0
    assert cli("copy", store08, pg_database, "--widen", "--quiet").code == 0
    for source, target in ((store08, url), (url, store08), (pg_database, url), (url, pg_database)):
        result = cli("verify", source, target)
        assert result.code == 0, (source, target, result)
        assert "7 records identical through Sumatra" in result.out
    # a column in another character set (older stores) is hashed as UTF-8 all the same
    mariadb_execute(
        "ALTER TABLE django_store_record MODIFY main_file longtext CHARACTER SET latin1 "
        "NOT NULL, MODIFY user longtext CHARACTER SET utf8mb3 NOT NULL",
        database=mariadb_name,
    )
    assert cli("verify", store08, url).code == 0
    mariadb_execute(
        "UPDATE django_store_record SET duration = duration + 1e-12 WHERE db_id = 2",
        database=mariadb_name,
    )
    result = cli("verify", store08, url)
    assert result.code == 1, result
    assert "django_store_record: same 7 rows, different values" in result.out


# -- copy out of MariaDB ------------------------------------------------------------------


@pytest.mark.mariadb
@pytest.mark.pg
@pytest.mark.slow
def test_copy_out_of_mariadb(cli, store08, mariadb_name, pg_database, tmp_path):
    """MariaDB → PostgreSQL (its canonical lines into COPY) and → a new SQLite store
    (rows, datetimes naive UTC): verified, and Sumatra reads the same records."""
    url = mariadb_url_for(mariadb_name)
    assert cli("copy", store08, url, "--widen", "--quiet").code == 0
    to_pg = cli("copy", url, pg_database, "--widen")
    assert to_pg.code == 0, to_pg
    assert "7 records identical through Sumatra" in to_pg.out
    back = tmp_path / "back.sqlite"
    to_sqlite = cli("copy", url, back)
    assert to_sqlite.code == 0, to_sqlite
    assert "7 records identical through Sumatra" in to_sqlite.out
    expected = _export(url)
    assert _export(pg_database) == expected
    assert _export(str(back)) == expected
    assert cli("verify", store08, back).code == 0


@pytest.mark.mariadb
def test_copy_from_mariadb_into_mariadb_is_refused(cli, store08, mariadb_name):
    url = mariadb_url_for(mariadb_name)
    assert cli("copy", store08, url, "--widen", "--quiet").code == 0
    result = cli("copy", url, mariadb_url_for(f"{mariadb_name}_2"))
    assert result.code == 2, result
    assert "copying from MariaDB into MariaDB is not supported yet" in (result.err)
    assert f"{mariadb_name}_2" not in mariadb_databases()


# -- switch -------------------------------------------------------------------------------


@pytest.mark.mariadb
@pytest.mark.slow
def test_copy_switch_then_smt_uses_mariadb(cli, store08, mariadb_name):
    """`copy --switch`: the project names the MariaDB store (no password in it) and `smt`
    reads and writes it there."""
    url = mariadb_url_for(mariadb_name)
    result = cli("copy", store08, url, "--widen", "--switch", store08)
    assert result.code == 0, result
    project = json.loads((store08 / ".smt" / "project").read_text())
    assert project["record_store"]["db_file"] == url
    export = str(FIXTURES / "sumatra-0.8" / "records_export.json")
    saved = run_sumatra("long", url, "fixture08", export, "300")  # a record only MariaDB has
    assert saved.returncode == 0, saved.stderr[-2000:]
    listed = subprocess.run(
        [str(Path(sys.executable).parent / "smt"), "list"],
        cwd=store08,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert listed.returncode == 0, listed.stderr
    labels = listed.stdout.split()
    assert len(labels) == 8 and saved.stdout.strip() in " ".join(labels)


@pytest.mark.mariadb
@pytest.mark.parametrize(
    ("url", "message", "code"),
    [
        ("mysql://root:pw@localhost/{name}", "Sumatra reads a MariaDB password only from", 1),
        ("mysql://root@/{name}", "Sumatra cannot connect to a MariaDB URL without a host", 1),
        ("mysql://nobody_smtm@localhost/{name}", "Sumatra could not connect to", 2),
    ],
)
def test_switch_refuses_what_sumatra_could_not_use(
    cli, store08, mariadb_database, url, message, code
):
    name = mariadb_database.rsplit("/", 1)[1]
    before = (store08 / ".smt" / "project").read_bytes()
    result = cli("switch", store08, url.format(name=name), "--force")
    assert result.code == code, result
    assert message in result.err
    assert "pw" not in result.err.replace("password", "")
    assert (store08 / ".smt" / "project").read_bytes() == before


# -- createdb -----------------------------------------------------------------------------


@pytest.mark.mariadb
@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (("--owner", "alice"), "--owner does not apply to MariaDB: the URL's user is granted"),
        (("--admin", "postgresql://127.0.0.1/postgres"), "--admin takes a mysql:// URL"),
    ],
)
@pytest.mark.parametrize("command", ["createdb", "drop-recreate"])
def test_mariadb_database_commands_refuse_owner_and_a_foreign_admin(
    cli, mariadb_name, command, extra, said
):
    """Refused in one line (exit 2), and no database made."""
    yes = ("--yes", "--no-schema") if command == "drop-recreate" else ()
    result = cli(command, mariadb_url_for(mariadb_name), *extra, *yes)
    assert result.code == 2, result
    assert said in result.err and len(result.err.strip().splitlines()) == 1
    assert mariadb_name not in mariadb_databases()


@pytest.mark.mariadb
def test_createdb_then_its_user_alone_copies(cli, store08, mariadb_name, monkeypatch):
    """createdb --create-role: an empty nopad database and a user granted on it and on
    the copy's scratch databases; that user (password in MYSQL_PWD) then copies."""
    user = f"smtm_u_{mariadb_name[-8:]}"
    url = f"mysql://{user}@localhost/{mariadb_name}"
    monkeypatch.setenv("SMTM_NEW_PW", "S3cret-pw")
    try:
        made = cli(
            "createdb", url, "--create-role", "--password-env", "SMTM_NEW_PW",
            "--admin", MARIADB_URL,
        )  # fmt: skip
        assert made.code == 0, made
        assert f"created user '{user}'@'localhost'" in made.out
        assert mariadb_execute(
            "SELECT default_collation_name FROM information_schema.schemata WHERE schema_name = %s",
            (mariadb_name,),
        ) == [("utf8mb4_nopad_bin",)]
        again = cli("createdb", url, "--admin", MARIADB_URL)
        assert again.code == 1 and "exists already" in again.err
        monkeypatch.setenv("MYSQL_PWD", "S3cret-pw")
        copied = cli("copy", store08, url, "--widen")
        assert copied.code == 0, copied
        assert "7 records identical through Sumatra" in copied.out
    finally:
        mariadb_execute(f"DROP USER IF EXISTS '{user}'@'localhost'")


# -- stress --------------------------------------------------------------------------------

STRESSED_TABLES = (
    "django_store_record",
    "django_store_project",
    "django_store_taggeditem",
    "django_store_parameterset",
    "django_store_platforminformation",
)


def mariadb_row_counts(name: str) -> dict[str, int]:
    return {
        table: mariadb_execute(f"SELECT count(*) FROM `{table}`", database=name)[0][0]
        for table in STRESSED_TABLES
    }


@needs_mariadb_driver
def test_stress_jobs_reach_mariadb_as_sumatra_does():
    """Sumatra's URL without the password, which travels in MYSQL_PWD (never on a
    command line); a URL without a host is one Sumatra cannot use."""
    from smtmigrate.errors import UnsupportedStore
    from smtmigrate.sumatra_url import worker_location

    store = resolve("mysql://u:Secret-1@localhost:3307/db", mariadb=True)
    assert worker_location(store) == ("mysql://u@localhost:3307/db", {"MYSQL_PWD": "Secret-1"})
    with pytest.raises(UnsupportedStore, match="without a host"):
        worker_location(resolve("mysql://u@/db", mariadb=True))


@pytest.mark.mariadb
@pytest.mark.slow
def test_stress_a_project_moved_to_mariadb(cli, home, store08, mariadb_name):
    """Real `smt run`s of a scratch copy of a project on MariaDB (label generator fixed by
    the move): every run saved, and the store as it was afterwards."""
    url = mariadb_url_for(mariadb_name)
    assert cli("move", store08, url, "--yes").code == 0
    before = mariadb_row_counts(mariadb_name)
    result = cli("stress", store08, "--jobs", "6", "--format", "json")
    report = json.loads(result.out)
    assert result.code == report["exit_code"] == 0, result
    assert report["backend"] == "mariadb" and report["mode"] == "smt"
    assert report["saved"] == report["found"] == 6 and not report["duplicate_labels"]
    assert report["cleanup"]["ok"], report["cleanup"]
    assert mariadb_row_counts(mariadb_name) == before


@pytest.mark.mariadb
@pytest.mark.slow
def test_stress_api_mode_against_mariadb(cli, store08, mariadb_name):
    url = mariadb_url_for(mariadb_name)
    assert cli("copy", store08, url, "--widen", "--quiet").code == 0
    before = mariadb_row_counts(mariadb_name)
    result = cli("stress", url, "--mode", "api", "--jobs", "6")
    out = " ".join(result.out.split())
    assert result.code == 0, result
    assert "OK: all 6 records saved by 6 concurrent jobs." in out
    assert "nothing of the scratch project is left" in out
    assert mariadb_row_counts(mariadb_name) == before


# -- widen ---------------------------------------------------------------------------------


def _columns(name: str) -> list[tuple]:
    return mariadb_execute(
        "SELECT table_name, column_name, column_type, is_nullable, column_key "
        "FROM information_schema.columns WHERE table_schema = %s ORDER BY 1, 2",
        (name,),
    )


@pytest.mark.mariadb
@pytest.mark.slow
def test_widen_a_mariadb_store_in_place(cli, tmp_path, mariadb_name, django_db_blocker):
    """`widen --sql` shows MariaDB's DDL (one ALTER a table where Django made several);
    `--apply` runs it, online where the server can, timing each ALTER; the columns are
    then those of a `copy --widen`, a second run finds nothing to do, and Sumatra saves a
    record with 3,000-character fields."""
    source = tmp_path / "source.sqlite"
    with django_db_blocker.unblock():
        generate_store(source, 200, seed=5)
    url = mariadb_url_for(mariadb_name)
    assert cli("copy", source, url, "--verify", "rows", "--quiet").code == 0
    label = ("django_store_record", "label", "varchar(100)")
    assert label in [row[:3] for row in _columns(mariadb_name)]

    sql = cli("widen", "--sql", "--apply", url)
    assert sql.code == 0, sql
    assert "ALTER TABLE `django_store_record` MODIFY `label` longtext NOT NULL, MODIFY" in sql.out
    assert "ALTER TABLE `django_store_project` MODIFY `id` varchar(768) NOT NULL;" in sql.out
    assert '"' not in sql.out.split("\n", 1)[1]  # no PostgreSQL quoting
    assert label in [row[:3] for row in _columns(mariadb_name)]  # --sql applies nothing

    applied = cli("widen", "--apply", url)
    out = " ".join(applied.out.split())
    assert applied.code == 0, applied
    assert "one ALTER at a time" in out and "0003_smtmigrate_widen" in out
    assert "ALGORITHM=INPLACE, LOCK=NONE" in out or "ALGORITHM=COPY, LOCK=SHARED" in out
    assert "Already widened" in cli("widen", "--apply", url).out

    reference = f"smtm_test_{mariadb_name[-12:]}r"
    try:
        assert cli("copy", source, mariadb_url_for(reference), "--widen", "--quiet").code == 0
        assert _columns(mariadb_name) == _columns(reference)
    finally:
        drop_mariadb_database(reference)
    export = str(FIXTURES / "sumatra-0.8" / "records_export.json")
    saved = run_sumatra("long", url, "after-widen", export, "3000")
    assert saved.returncode == 0, saved.stderr[-2000:]


@pytest.mark.pg
@pytest.mark.mariadb
def test_copy_postgresql_into_mariadb(cli, store08, pg_database, mariadb_name):
    """PostgreSQL's canonical lines (the same bytes) streamed into LOAD DATA from the
    source's snapshot; a widened source needs --widen (the target is built from today's
    models), and every record then reads back equal through Sumatra."""
    assert cli("copy", store08, pg_database, "--widen", "--quiet").code == 0
    url = mariadb_url_for(mariadb_name)
    refused = cli("copy", pg_database, url)
    assert refused.code == 1, refused
    assert "--widen" in refused.out and mariadb_name not in mariadb_databases()
    result = cli("copy", pg_database, url, "--widen")
    assert result.code == 0, result
    assert "Verified: 15 tables and 128 rows identical; 7 records identical" in result.out
    verified = cli("verify", pg_database, url)
    assert verified.code == 0, verified


# -- drop-recreate -------------------------------------------------------------------------


@pytest.mark.mariadb
def test_drop_recreate_backs_up_then_rebuilds_widened(
    cli, store08, tmp_path, mariadb_name, monkeypatch
):
    """The records backed up (a verified SQLite copy) before the drop; the new database
    utf8mb4_nopad_bin with the columns of a `copy --widen`, empty; a database holding
    tables that are not a Sumatra store is refused with nothing dropped."""
    url = mariadb_url_for(mariadb_name)
    assert cli("copy", store08, url, "--widen", "--quiet").code == 0
    widened = _columns(mariadb_name)
    monkeypatch.chdir(tmp_path)
    backup = tmp_path / "backup.sqlite"
    result = cli("drop-recreate", url, "--yes", "--backup", str(backup))
    out = " ".join(result.out.split())
    assert result.code == 0, result
    assert "a Sumatra store, 7 records" in out and f"dropped {mariadb_name}" in out
    assert "7 records identical through Sumatra" in out
    assert sqlite_rows(backup, "SELECT count(*) FROM django_store_record") == [(7,)]
    assert mariadb_execute("SELECT count(*) FROM django_store_record", database=mariadb_name) == [
        (0,)
    ]
    assert _columns(mariadb_name) == widened
    assert mariadb_execute(
        "SELECT default_collation_name FROM information_schema.schemata WHERE schema_name = %s",
        (mariadb_name,),
    ) == [("utf8mb4_nopad_bin",)]

    drop_mariadb_database(mariadb_name)
    mariadb_execute(f"CREATE DATABASE `{mariadb_name}`")
    mariadb_execute("CREATE TABLE other (x int)", database=mariadb_name)
    refused = cli("drop-recreate", url, "--yes")
    assert refused.code == 1, refused
    assert "no Sumatra store smtmigrate can back up" in refused.err
    assert mariadb_execute("SELECT count(*) FROM other", database=mariadb_name) == [(0,)]

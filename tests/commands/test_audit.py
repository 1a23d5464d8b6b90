"""`smtmigrate audit` on real Sumatra stores: every finding kind, exact lengths and counts.

The expected findings are computed independently: rows are read with Python's sqlite3 and
measured with `len()`, then compared with what the fused SQL scans report.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connections

from smtmigrate.audit import AuditReport, Finding, audit
from smtmigrate.locations import resolve
from smtmigrate.render import audit_json, audit_verdict
from smtmigrate.schema import LAYOUT_07, LAYOUT_08, LEGACY_TABLES, inspect_store, sumatra_tables

from ..conftest import (
    immutable,
    mariadb_url_for,
    one_error_line,
    records_file,
    sqlite_exec,
    sqlite_rows,
    start,
    wait_until_open,
)
from ..storegen import generate_store


def run_audit(location, **kwargs):
    with resolve(str(location)) as store:
        return audit(inspect_store(store), **kwargs)


def expected_overflows(db: Path, legacy: bool) -> dict[tuple[str, str], tuple[int, int, int]]:
    """(table, column) → (limit, longest, rows over) for every text column, via Python."""
    stored_names = {v: k for k, v in LEGACY_TABLES.items()} if legacy else {}
    expected = {}
    for model_table, table in sumatra_tables().items():
        stored = stored_names.get(model_table, model_table)
        for name, column in table.columns.items():
            if not column.is_text or column.max_length is None:
                continue
            values = [v for (v,) in sqlite_rows(db, f'SELECT "{name}" FROM "{stored}"') if v]
            over = [v for v in values if len(v) > column.max_length]
            if over:
                expected[(stored, name)] = (
                    column.max_length,
                    max(len(v) for v in values),
                    len(over),
                )
    return expected


def by_kind(report, kind):
    return {(f.table, f.column): f for f in report.findings if f.kind == kind}


@pytest.mark.parametrize(("generation", "layout"), [("0.8", LAYOUT_08), ("0.7", LAYOUT_07)])
def test_every_overlong_value_is_reported_exactly(request, generation, layout):
    project = request.getfixturevalue(f"store{generation.replace('.', '')}")
    expected = expected_overflows(records_file(project), legacy=layout == LAYOUT_07)
    tag_table = "tagging_tag" if layout == LAYOUT_07 else "django_store_tag"
    # The fixtures were built to hold these: a test of nothing would prove nothing.
    assert {
        ("django_store_record", "label"),
        ("django_store_record", "main_file"),
        (tag_table, "name"),
    } <= expected.keys()

    report = run_audit(project)
    assert report.layout == layout
    found = {key: (f.limit, f.max_length, f.rows) for key, f in by_kind(report, "overflow").items()}
    assert found == expected
    assert report.exit_code == 1
    label = by_kind(report, "overflow")[("django_store_record", "label")]
    assert 1 <= len(label.examples) <= 3
    assert all(e["length"] > 100 for e in label.examples)


def test_legacy_store_is_judged_against_todays_models(store07):
    db = records_file(store07)
    report = run_audit(store07)
    shas = sqlite_rows(db, "SELECT version FROM django_store_dependency WHERE length(version) = 40")
    assert shas, "the 0.7 fixture records a git SHA as a dependency version"
    assert ("django_store_dependency", "version") not in by_kind(report, "overflow")
    drift = by_kind(report, "drift")
    assert "varchar(20)" in drift[("django_store_dependency", "version")].detail
    assert "varchar(100)" in drift[("django_store_platforminformation", "version")].detail
    assert ("tagging_tag", None) in drift
    assert not any(t.startswith("django_store_tag") for t, _ in by_kind(report, "overflow"))


def test_json_output_shape(cli, store08):
    result = cli("audit", store08, "--format", "json")
    assert result.code == 1
    data = json.loads(result.out)
    assert data["location"] == str(records_file(store08).resolve())
    assert data["layout"] == "sumatra-0.8"
    assert data["findings"]
    for finding in data["findings"]:
        assert set(finding) == {
            "table",
            "column",
            "kind",
            "limit",
            "max_length",
            "rows",
            "examples",
            "detail",
        }
    assert data["summary"]["exit_code"] == 1
    assert data["summary"]["counts"]["overflow"] == sum(
        f["kind"] == "overflow" for f in data["findings"]
    )
    assert data["summary"]["rows"] == sum(
        n for (n,) in _row_counts(records_file(store08), data["summary"]["row_counts"])
    )


def _row_counts(db, tables):
    return [sqlite_rows(db, f'SELECT count(*) FROM "{t}"')[0] for t in tables]


def test_table_output_and_exit_codes(cli, store08):
    result = cli("audit", store08)
    assert result.code == 1
    assert "overflow" in result.out
    assert result.out.strip().splitlines()[-2].startswith("FAIL:")

    # Trim every over-long value: the same store then passes.
    db = records_file(store08)
    statements = []
    for (table, column), (limit, _, _) in expected_overflows(db, legacy=False).items():
        statements.append(
            f'UPDATE "{table}" SET "{column}" = substr("{column}", 1, {limit}) '
            f'WHERE length("{column}") > {limit}'
        )
    sqlite_exec(db, *statements)
    clean = cli("audit", store08)
    assert clean.code == 0, clean
    assert "OK: nothing would fail on PostgreSQL" in clean.out


def test_near_limit_follows_the_near_option(store08):
    default = by_kind(run_audit(store08), "near-limit")
    wide = by_kind(run_audit(store08, near=0.3), "near-limit")
    assert len(wide) > len(default)
    for finding in wide.values():
        assert finding.max_length >= 0.3 * finding.limit
        assert finding.max_length <= finding.limit


def test_risk_names_columns_unbounded_by_nature(store08):
    report = run_audit(store08)
    risk = by_kind(report, "risk")
    overflow = by_kind(report, "overflow")
    assert ("django_store_record", "repeats") in risk
    assert "unbounded by nature" in risk[("django_store_record", "repeats")].detail
    assert not (risk.keys() & overflow.keys())  # the stronger finding wins
    for table, column in risk:
        assert sumatra_tables()[table].columns[column].unbounded_reason
    assert ("django_store_datakey", "digest") not in risk  # a SHA-1 is bounded


CORRUPTIONS = {
    "nul": (
        "UPDATE django_store_record SET reason = 'a' || char(0) || 'b' "
        "WHERE db_id = (SELECT min(db_id) FROM django_store_record)",
        ("django_store_record", "reason"),
        "NUL",
    ),
    "blob": (
        "UPDATE django_store_record SET outcome = x'00ff' "
        "WHERE db_id = (SELECT max(db_id) FROM django_store_record)",
        ("django_store_record", "outcome"),
        "binary",
    ),
    "ip": (
        "UPDATE django_store_platforminformation SET ip_addr = 'not-an-ip'",
        ("django_store_platforminformation", "ip_addr"),
        "not an IP address",
    ),
    "ip-zone": (  # Python's ipaddress takes an IPv6 zone; PostgreSQL's inet does not
        "UPDATE django_store_platforminformation SET ip_addr = 'fe80::1%eth0'",
        ("django_store_platforminformation", "ip_addr"),
        "not an IP address",
    ),
    "ip-not-utf8": (
        "UPDATE django_store_platforminformation SET ip_addr = CAST(x'31ff' AS TEXT)",
        ("django_store_platforminformation", "ip_addr"),
        "not an IP address",
    ),
    "datetime": (
        "UPDATE django_store_record SET timestamp = 'the day before yesterday' "
        "WHERE db_id = (SELECT min(db_id) FROM django_store_record)",
        ("django_store_record", "timestamp"),
        "date/time",
    ),
    "datetime-february-30": (  # SQLite's datetime() of the text alone passes it as it is
        "UPDATE django_store_record SET timestamp = '2026-02-30 12:00:00' "
        "WHERE db_id = (SELECT min(db_id) FROM django_store_record)",
        ("django_store_record", "timestamp"),
        "date/time",
    ),
    "float": (
        "UPDATE django_store_record SET duration = 'fast' "
        "WHERE db_id = (SELECT min(db_id) FROM django_store_record)",
        ("django_store_record", "duration"),
        "not a number",
    ),
    "orphan": (
        "UPDATE django_store_record_dependencies SET dependency_id = 999999 "
        "WHERE id = (SELECT min(id) FROM django_store_record_dependencies)",
        ("django_store_record_dependencies", "dependency_id"),
        "foreign key to a missing row of django_store_dependency",
    ),
    "negative": (
        "UPDATE django_store_taggeditem SET object_id = -1 "
        "WHERE id = (SELECT min(id) FROM django_store_taggeditem)",
        ("django_store_taggeditem", "object_id"),
        "negative",
    ),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
@pytest.mark.slow
def test_invalid_values(store08, corruption):
    statement, key, detail = CORRUPTIONS[corruption]
    db = records_file(store08)
    before = by_kind(run_audit(store08), "invalid")
    assert key not in before
    # as in stores written without the constraints SQLite would otherwise enforce
    sqlite_exec(db, "PRAGMA foreign_keys = OFF", "PRAGMA ignore_check_constraints = ON", statement)
    finding = by_kind(run_audit(store08), "invalid")[key]
    assert detail in finding.detail
    assert finding.rows >= 1
    assert finding.examples
    table, column = key
    if sumatra_tables()[table].columns[column].is_text:
        # The longest value, measured only once something is found (a column without a
        # limit): as long as Python counts up to its first NUL (SQLite's length()).
        values = sqlite_rows(db, f'SELECT "{column}" FROM "{table}"')
        expected = max(len(str(v).split("\x00")[0]) for (v,) in values if isinstance(v, str))
        assert finding.max_length == expected


def test_duplicates_against_a_unique_constraint(store08):
    db = records_file(store08)
    (index,) = [
        name
        for (name,) in sqlite_rows(
            db,
            "SELECT name FROM sqlite_master WHERE type = 'index' "
            "AND tbl_name = 'django_store_record_dependencies' AND sql LIKE 'CREATE UNIQUE%'",
        )
    ]
    sqlite_exec(
        db,
        f'DROP INDEX "{index}"',
        "INSERT INTO django_store_record_dependencies (record_id, dependency_id) "
        "SELECT record_id, dependency_id FROM django_store_record_dependencies LIMIT 2",
    )
    finding = by_kind(run_audit(store08), "invalid")[
        ("django_store_record_dependencies", "record_id, dependency_id")
    ]
    assert finding.rows == 2
    assert "UNIQUE" in finding.detail


def test_scans_each_table_once(store08):
    """The fused design: one aggregate scan per table, not one per check."""
    with resolve(str(store08)) as store:
        inspection = inspect_store(store)
        queries: list[str] = []

        def record(execute, sql, params, many, context):
            queries.append(sql)
            return execute(sql, params, many, context)

        with store.connection.execute_wrapper(record):
            audit(inspection)
    scans = [q for q in queries if q.startswith("SELECT count(*), ")]
    assert len(scans) == len(inspection.tables)


@pytest.fixture
def pg_store(pg_database):
    """A PostgreSQL store built by Sumatra's own migrations."""
    with resolve(pg_database) as store:
        call_command("migrate", database=store.alias, run_syncdb=True, verbosity=0)
        yield store


@pytest.mark.pg
def test_postgres_store_drift_and_near_limit(pg_store):
    with connections[pg_store.alias].cursor() as cursor:
        cursor.execute("ALTER TABLE django_store_dependency ALTER COLUMN version TYPE varchar(20)")
        cursor.execute("ALTER TABLE django_store_record ALTER COLUMN label TYPE text")
        cursor.execute("INSERT INTO django_store_tag (name) VALUES (%s)", ["t" * 45])
    report = audit(inspect_store(pg_store))
    assert report.layout == LAYOUT_08
    assert report.vendor == "postgresql"
    drift = by_kind(report, "drift")
    assert drift[("django_store_dependency", "version")].detail == (
        "declared varchar(20), today's model varchar(40)"
    )
    assert ("django_store_record", "label") not in drift  # widened on purpose
    assert ("django_store_record", "label") not in by_kind(report, "risk")
    near = by_kind(report, "near-limit")[("django_store_tag", "name")]
    assert (near.limit, near.max_length) == (50, 45)
    # the narrowed column is judged by its real size
    assert by_kind(report, "risk")[("django_store_dependency", "version")].limit == 20
    assert report.exit_code == 0


@pytest.mark.pg
def test_postgres_connection_errors_are_one_line(cli, pg_database):
    base = pg_database.rsplit("/", 1)[0]
    missing = cli("audit", f"{base}/smtm_no_such_database")
    assert missing.code == 2
    assert 'database "smtm_no_such_database" does not exist' in missing.err
    closed = cli("audit", "postgresql://secretuser:secretpw@127.0.0.1:1/db")
    assert closed.code == 2
    assert len(closed.err.strip().splitlines()) == 1
    assert "secretpw" not in closed.err
    not_sumatra = cli("audit", pg_database)
    assert not_sumatra.code == 2
    assert "not a Sumatra record store" in not_sumatra.err


# -- the server an audit speaks of (issue 27) ----------------------------------------------


@pytest.mark.parametrize(
    ("vendor", "server"),
    [("sqlite", "PostgreSQL"), ("postgresql", "PostgreSQL"), ("mysql", "MariaDB")],
)
def test_the_verdict_names_the_server_the_store_is_judged_by(vendor, server):
    """An SQLite store is bound for PostgreSQL; a server store is judged on its own server."""
    over = Finding("django_store_tag", "name", "overflow", limit=50, max_length=81, rows=1)
    report = AuditReport("a store", LAYOUT_08, vendor, 0.8, [over], {}, 0.0)
    assert (
        audit_verdict(report) == f"FAIL: 1 finding(s) would be rejected by {server} (1 overflow)."
    )
    assert audit_json(report)["summary"]["judged_by"] == server
    report.findings = [Finding("django_store_tag", "name", "near-limit")]
    assert audit_verdict(report) == f"OK: nothing would fail on {server} (1 near-limit)."


@pytest.mark.pg
@pytest.mark.mariadb
@pytest.mark.slow
def test_a_widened_mariadb_store_is_audited_against_its_own_columns(
    cli, store08, mariadb_name, pg_database
):
    """The fixture's 8 over-long values sit in the widened columns of its MariaDB copy: no
    finding, and not a word of PostgreSQL. Copied on into a new PostgreSQL schema, they are
    checked against today's models again."""
    url = mariadb_url_for(mariadb_name)
    assert cli("copy", store08, url, "--widen").code == 0
    shown = cli("audit", url, "--all")
    assert shown.code == 0, shown
    assert "PostgreSQL" not in shown.out + shown.err
    assert shown.out.splitlines()[-1].startswith("OK: nothing would fail on MariaDB")
    as_json = cli("audit", url, "--format", "json")
    assert as_json.code == 0 and "PostgreSQL" not in as_json.out
    summary = json.loads(as_json.out)["summary"]
    assert summary["judged_by"] == "MariaDB"
    assert summary["counts"]["overflow"] == 0
    assert summary["verdict"].startswith("OK: nothing would fail on MariaDB")
    onward = cli("copy", url, pg_database, "--dry-run")
    assert onward.code == 1, onward
    assert "Refused: 8 finding(s) would be rejected by the target" in onward.out


@pytest.mark.slow
def test_ctrl_c_during_an_audit_always_ends_as_interrupted(big_store):
    """SQLite turns a KeyboardInterrupt inside the audit's Python function (the UTF-8
    check of every row) into its own error; whenever Ctrl-C comes, the audit ends as
    interrupted. Ctrl-C comes at 8 moments spread over the audit's reading."""
    audit = start("audit", big_store, stdout=subprocess.DEVNULL)
    wait_until_open(audit, big_store)
    opened = time.monotonic()
    _, err = audit.communicate(timeout=120)
    assert audit.returncode == 0, err
    reading = time.monotonic() - opened
    for step in range(8):
        audit = start("audit", big_store, stdout=subprocess.PIPE)
        wait_until_open(audit, big_store)
        time.sleep(reading * (step + 0.5) / 9)
        if audit.poll() is not None:
            continue  # the machine is faster now: this moment is past the end
        audit.send_signal(signal.SIGINT)
        out, err = audit.communicate(timeout=60)
        if audit.returncode == -signal.SIGINT and "OK: nothing would fail" in out:
            # The audit had answered and Python was shutting down (its handlers are gone
            # then): the shell sees a death by SIGINT, as with any tool.
            continue
        assert (audit.returncode, err.strip()) == (130, "smtmigrate audit: interrupted"), step


@pytest.mark.slow
def test_a_closed_pipe_ends_with_the_audits_verdict(tmp_path, django_db_blocker):
    """`smtmigrate audit STORE | head -1` on a clean store: exit 0, nothing on stderr."""
    clean = tmp_path / "clean.sqlite"
    with django_db_blocker.unblock():
        generate_store(clean, 50, seed=1)
    read, write = os.pipe()
    audit = start("audit", clean, stdout=write)
    os.close(write)
    os.close(read)  # the reader is gone before the audit writes anything
    _, err = audit.communicate(timeout=120)
    assert (audit.returncode, err) == (0, "")


@pytest.mark.slow
def test_audit_dot_inside_smt(cli, store08, monkeypatch):
    monkeypatch.chdir(store08 / ".smt")
    result = cli("audit", ".")
    assert result.code == 1, result  # the fixture's overflows: it was read
    assert result.out.startswith(f"{records_file(store08).resolve()}  layout sumatra-0.8")


@pytest.mark.slow
def test_audit_of_a_wal_store_in_a_directory_that_cannot_be_written(cli, store08, tmp_path):
    directory = tmp_path / "wal"
    directory.mkdir()
    store = directory / "records"
    store.write_bytes(records_file(store08).read_bytes())
    connection = sqlite3.connect(store)
    assert connection.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
    connection.close()  # the last connection removes -wal and -shm
    assert sorted(p.name for p in directory.iterdir()) == ["records"]
    with immutable(directory):
        result = cli("audit", store)
    one_error_line(result, "audit", 2, "in WAL mode and has no records-shm")
    assert "make the directory writable" in result.err


@pytest.mark.slow
def test_audit_of_a_store_with_a_hot_journal(cli, store08, tmp_path):
    """A writer killed mid-transaction leaves a hot journal that a read-only open cannot
    roll back."""
    store = tmp_path / "records"
    store.write_bytes(records_file(store08).read_bytes())
    writer = (
        "import os, signal, sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "c.execute('PRAGMA cache_size=1')\n"
        "c.execute('BEGIN')\n"
        "c.execute(\"UPDATE django_store_record SET reason = reason || 'x'\")\n"
        "c.execute(\"UPDATE django_store_datakey SET path = path || 'x'\")\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    killed = subprocess.run([sys.executable, "-c", writer, str(store)], timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert (tmp_path / "records-journal").stat().st_size > 0
    result = cli("audit", store)
    one_error_line(result, "audit", 2, "records-journal beside it is a hot journal")
    assert "open the store once with write access" in result.err


@pytest.mark.slow
def test_a_nul_finding_shows_the_whole_value(cli, store08):
    label, *_ = sqlite_rows(records_file(store08), "SELECT label FROM django_store_record")[0]
    sqlite_exec(
        records_file(store08),
        f"UPDATE django_store_record SET reason = 'a' || char(0) || 'b' WHERE label = '{label}'",
    )
    result = cli("audit", store08, "--format", "json")
    (finding,) = [f for f in json.loads(result.out)["findings"] if "NUL" in (f["detail"] or "")]
    assert finding["examples"][0]["value"] == "a\x00b"
    assert finding["examples"][0]["length"] == 3
    table = cli("audit", store08)
    assert f"record '{label}': 'a\\x00b' (3 chars)" in table.out

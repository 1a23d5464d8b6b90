"""`smtmigrate stress --mode api`: concurrent jobs through Sumatra's own API, counted,
cleaned up (the default mode, real `smt run`s, is tested in test_stress_smt.py).

The jobs are real processes running Sumatra 0.8.1's record store; the oracles are plain
SQL on the store (psycopg2, sqlite3), never smtmigrate's own reading of it.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from smtmigrate.stress import KINDS

from ..conftest import (
    as_role,
    assert_error,
    grant,
    pg_query,
    processes_mentioning,
    records_file,
    start_in_its_own_group,
    wait_for_line,
)
from ..helpers_tables import SUMATRA_TABLES


def pg_row_counts(url: str) -> dict[str, int]:
    return {t: pg_query(url, f"SELECT COUNT(*) FROM {t}")[0][0] for t in SUMATRA_TABLES}


def sqlite_dump(path) -> list[str]:
    """Every row of the store, except the AUTOINCREMENT counters a run must advance."""
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        return [line for line in conn.iterdump() if "sqlite_sequence" not in line]
    finally:
        conn.close()


def api_stress(cli, location, *args: str, code: int | None = None) -> dict:
    """`stress LOCATION --mode api ARGS --format json`: its report, whose exit code is the
    command's (and `code`, when given)."""
    result = cli("stress", location, "--mode", "api", *args, "--format", "json")
    if code is not None:
        assert result.code == code, result
    report = json.loads(result.out)
    assert result.code == report["exit_code"], result
    return report


@pytest.fixture
def widened_pg(cli, sumatra_pg) -> str:
    """A PostgreSQL store as smtmigrate leaves it: built by Sumatra, then widened."""
    assert cli("widen", "--apply", sumatra_pg).code == 0
    return sumatra_pg


@pytest.mark.pg
@pytest.mark.slow
@pytest.mark.solo
def test_postgres_takes_50_concurrent_jobs_and_is_left_as_it_was(cli, widened_pg):
    before = pg_row_counts(widened_pg)
    report = api_stress(cli, widened_pg, "--jobs", "50", "--timeout", "240", code=0)
    assert (report["expected"], report["saved"], report["found"]) == (50, 50, 50)
    assert (report["missing"], report["incomplete"]) == (0, 0)
    assert report["errors"] == {} and report["retries"] == {}
    assert report["ready_jobs"] == 50 and report["timed_out_jobs"] == 0
    assert report["records_per_second"] > 0
    assert report["verdict"].startswith("OK: all 50 records saved")
    # every record of the scratch project, and the project itself, are gone ...
    project = report["project"]
    assert project.startswith("smtmigrate-stress-")
    assert report["cleanup"]["ok"] and report["cleanup"]["deleted"]["record"] == 51  # + warm-up
    assert pg_query(
        widened_pg, "SELECT COUNT(*) FROM django_store_record WHERE project_id = %s", (project,)
    ) == [(0,)]
    assert pg_query(
        widened_pg, "SELECT COUNT(*) FROM django_store_project WHERE id = %s", (project,)
    ) == [(0,)]
    # ... and so is everything the run added: the store holds what it held before
    assert pg_row_counts(widened_pg) == before
    assert not processes_mentioning(project)


@pytest.mark.pg
@pytest.mark.slow
def test_json_report_shape(cli, widened_pg):
    report = api_stress(cli, widened_pg, "--jobs", "2", "--records-per-job", "2", code=0)
    assert set(report) == {
        "location",
        "backend",
        "project",
        "jobs",
        "records_per_job",
        "timeout",
        "expected",
        "saved",
        "found",
        "incomplete",
        "missing",
        "errors",
        "retries",
        "failed_steps",
        "examples",
        "ready_jobs",
        "timed_out_jobs",
        "seconds",
        "records_per_second",
        "latency",
        "cleanup",
        "notes",
        "verdict",
        "exit_code",
    }
    assert report["backend"] == "postgresql" and report["expected"] == 4 == report["found"]
    assert report["exit_code"] == 0 and report["timeout"] == 300
    assert set(report["seconds"]) == {"startup", "saving", "cleanup", "total"}
    assert set(report["latency"]) == {"p50", "p95", "max"}
    assert 0 < report["latency"]["p50"] <= report["latency"]["max"]
    assert set(report["cleanup"]) == {
        "ok",
        "deleted",
        "left_records",
        "left_project",
        "seconds",
        "error",
    }
    assert report["cleanup"]["left_records"] == 0 and report["cleanup"]["left_project"] is False


@pytest.mark.slow
@pytest.mark.solo
def test_sqlite_reports_honestly_within_its_timeout_and_cleans_up(cli, store08):
    records = records_file(store08)
    before = sqlite_dump(records)
    started = time.monotonic()
    result = cli("stress", store08, "--mode", "api", "--jobs", "20", "--timeout", "60")
    elapsed = time.monotonic() - started
    assert result.code in (0, 1), result
    assert elapsed < 60 + 30  # the run, then the cleanup
    out = " ".join(result.out.split())
    assert f"Stress test of {records}" in out
    if result.code == 0:
        assert "OK: all 20 records saved by 20 concurrent jobs" in out
    else:
        assert "FAIL:" in out and "of 20 records saved; `smt run`s failed:" in out
        assert "Errors by kind" in out
        assert any(kind in out for kind in KINDS)
    assert "nothing of the scratch project is left" in out
    assert sqlite_dump(records) == before


@pytest.mark.slow
def test_timeout_bounds_the_run_and_counts_the_jobs_as_lost(cli, store08):
    records = records_file(store08)
    before = sqlite_dump(records)
    started = time.monotonic()
    report = api_stress(cli, store08, "--jobs", "10", "--timeout", "0.5", code=1)
    assert time.monotonic() - started < 0.5 + 30
    assert report["errors"] == {"timeout": 10} and report["found"] == 0
    assert report["cleanup"]["ok"]
    assert sqlite_dump(records) == before
    assert not processes_mentioning(report["project"])


@pytest.mark.pg
@pytest.mark.slow
def test_cold_start_leaves_no_duplicate_behind(cli, widened_pg):
    """Without the warm-up the jobs race to create the rows they share (Sumatra's
    get_or_create on tables without unique constraints); whatever they did, it is undone."""
    before = pg_row_counts(widened_pg)
    report = api_stress(cli, widened_pg, "--jobs", "10", "--cold")
    assert report["exit_code"] == (0 if report["found"] == 10 else 1)
    if report["errors"].get("duplicate rows"):
        assert any("MultipleObjectsReturned" in note for note in report["notes"])
    assert report["cleanup"]["ok"]
    assert pg_row_counts(widened_pg) == before


@pytest.mark.parametrize(
    "args, message",
    [
        (("--jobs", "0"), "must be between 1 and 500"),
        (("--jobs", "501"), "must be between 1 and 500"),
        (("--jobs", "many"), "not a whole number"),
        (("--records-per-job", "0"), "must be at least 1"),
        (("--timeout", "0"), "must be a positive number of seconds"),
        (("--timeout", "nan"), "must be a positive number of seconds"),
    ],
)
def test_bad_options_exit_2(cli, store08, args, message):
    result = cli("stress", store08, *args)
    assert result.code == 2, result
    assert message in result.err


def test_a_store_sumatra_cannot_open_is_refused(cli, store07):
    result = cli("stress", store07, "--jobs", "1")
    assert result.code == 1, result
    assert "sumatra-0.7 store, which Sumatra 0.8.1 cannot open" in result.err


@pytest.mark.pg
@pytest.mark.slow
def test_ctrl_c_during_stress_stops_the_jobs_and_cleans_up(cli, sumatra_pg):
    assert cli("widen", "--apply", sumatra_pg).code == 0
    run = start_in_its_own_group("stress", sumatra_pg, "--jobs", "8", "--records-per-job", "50")
    wait_for_line(run, "jobs ready; go")
    scratch_project = pg_query(sumatra_pg, "SELECT id FROM django_store_project")
    assert len(scratch_project) == 1  # the warm-up made it
    (project,) = scratch_project[0]
    time.sleep(1)  # records are being saved
    os.killpg(run.pid, signal.SIGINT)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 130, err
    assert err.strip() == "smtmigrate stress: interrupted"
    assert f"removed the scratch project {project}" in out
    assert processes_mentioning(project) == []
    assert pg_query(sumatra_pg, "SELECT count(*) FROM django_store_project") == [(0,)]
    assert pg_query(sumatra_pg, "SELECT count(*) FROM django_store_record") == [(0,)]


@pytest.mark.pg
def test_stress_by_a_role_that_may_only_read_fails_at_once(cli, sumatra_pg, make_role):
    """Sumatra retries a failed save every 5 s: without the check the jobs sat out the
    whole --timeout and reported nothing but `timeout` (exit 1)."""
    role = make_role()
    grant(sumatra_pg, "GRANT SELECT ON ALL TABLES IN SCHEMA public", role[0])
    start = time.monotonic()
    result = cli("stress", as_role(sumatra_pg, role), "--jobs", "1", "--timeout", "60")
    assert_error(
        result,
        "stress",
        f"permission denied: role '{role[0]}' lacks INSERT on django_store_",
        secrets=(role[1],),
    )
    assert time.monotonic() - start < 10


@pytest.mark.pg
def test_stress_by_a_role_that_may_not_use_a_serial_id_sequence(cli, sumatra_pg, make_role):
    """A store built by an older Django has serial ids: their sequences need USAGE too."""
    role = make_role()
    pg_query(
        sumatra_pg,
        "ALTER TABLE django_store_tag ALTER COLUMN id DROP IDENTITY; "
        "CREATE SEQUENCE django_store_tag_id_seq OWNED BY django_store_tag.id; "
        "ALTER TABLE django_store_tag ALTER COLUMN id "
        "SET DEFAULT nextval('django_store_tag_id_seq')",
    )
    grant(
        sumatra_pg, "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public", role[0]
    )
    result = cli("stress", as_role(sumatra_pg, role), "--jobs", "1", "--timeout", "60")
    assert_error(
        result, "stress", f"role '{role[0]}' lacks USAGE on public.django_store_tag_id_seq"
    )


@pytest.mark.pg
@pytest.mark.slow
def test_stress_needs_no_more_than_writing_the_tables(cli, sumatra_pg, make_role):
    """The control: identity ids need no sequence privilege, and the check lets such a role
    through to a run in which every record is saved."""
    role = make_role()
    grant(
        sumatra_pg, "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public", role[0]
    )
    result = cli("stress", as_role(sumatra_pg, role), "--jobs", "1", "--timeout", "60")
    assert result.code == 0, result

"""Connection headroom and the PgBouncer pooler, on a private cluster with a low
max_connections (never the shared server: it is restarted here), with real `smt run`s."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smtmigrate.errors import SmtmigrateError
from smtmigrate.headroom import read_headroom
from smtmigrate.locations import resolve
from smtmigrate.pooler_config import AUTH, auth_line, parse_listen, read_auth

from ..conftest import mariadb_execute, mariadb_url_for
from ..private_cluster import (
    GATE,
    complete_records,
    first_run,
    free_port,
    parallel_runs,
    private_cluster,
    project_url,
    recorded_outputs,
    records,
    sleeping_project,
)

SMTMIGRATE = [sys.executable, "-m", "smtmigrate"]
MAX_CONNECTIONS = 8
# Not `solo`: every server these tests use (and restart) is a private cluster of their own,
# so they never take the shared servers' connections; they only share the cores.
needs_pgbouncer = pytest.mark.skipif(
    shutil.which("pgbouncer", path="/usr/local/bin:/usr/bin:/usr/sbin:/sbin") is None,
    reason="pgbouncer is not installed (apt-get install pgbouncer; .ci/run installs it)",
)


@pytest.fixture(scope="module")
def cluster():
    with private_cluster(max_connections=MAX_CONNECTIONS) as made:
        yield made


@pytest.fixture
def pooled_projects():
    """Projects whose pooler a test started: stopped after it, even when it failed (a
    PgBouncer and its watcher outlive no test)."""
    projects: list[Path] = []
    yield projects
    for project in projects:
        smtmigrate("pooler", str(project), "--stop", "--force")  # refused if stopped already


def smtmigrate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SMTMIGRATE, *args], capture_output=True, text=True, timeout=300, check=False
    )


def moved_project(
    tmp_path: Path, cluster, database: str, *more: str, seconds: float = 6, gated: bool = False
):
    """A sleeping project, one record, moved into `database` of the cluster by `move`."""
    project = sleeping_project(tmp_path, seconds, gated=gated)
    first_run(project)
    admin = cluster.url("postgres")
    done = smtmigrate("move", str(project), cluster.url(database), "--yes", "--admin", admin, *more)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    return project, done.stdout


def complete(cluster, database: str) -> int:
    return sum(
        1 for _, tags, duration in records(cluster, database) if "_finished_" in tags and duration
    )


@pytest.mark.pg
@pytest.mark.slow
def test_headroom_counts_reserved_slots_and_connections_in_use(cluster):
    """A role that is not a superuser cannot use superuser_reserved_connections; every open
    connection takes one slot; the role's own CONNECTION LIMIT bounds it too."""
    cluster.psql("CREATE ROLE jobs LOGIN CONNECTION LIMIT 4")
    cluster.psql("CREATE DATABASE headroom OWNER jobs")
    url = f"postgresql://jobs@127.0.0.1:{cluster.port}/headroom"
    import psycopg2

    with resolve(url) as store:
        before = read_headroom(store)
        assert before.max_connections == MAX_CONNECTIONS
        assert before.reserved == 3  # PostgreSQL's default superuser_reserved_connections
        held = [psycopg2.connect(url) for _ in range(2)]
        try:
            after = read_headroom(store)
        finally:
            for connection in held:
                connection.close()
    assert after.in_use == before.in_use + 2
    assert after.free == min(MAX_CONNECTIONS - 3 - after.in_use, 4 - 2)
    assert after.exceeded_by(after.free + 1) and not after.exceeded_by(after.free)


@pytest.mark.slow
def test_move_warns_before_it_starts_when_the_expected_jobs_do_not_fit(tmp_path, cluster):
    _, out = moved_project(tmp_path, cluster, "warned", "--expect-jobs", "60")
    warning = out.index("WARNING: 60 jobs at once, ")
    assert "smtmigrate pooler PROJECT --listen HOST:PORT" in out[warning:]
    assert warning < out.index("Moved:")  # before the copy, before any job
    assert f"max_connections {MAX_CONNECTIONS}" in out[:warning]


@needs_pgbouncer
@pytest.mark.slow
def test_pooled_runs_beyond_max_connections_never_retry_and_stop_goes_back(
    tmp_path, cluster, pooled_projects
):
    """Through the pooler, twice as many 6 s runs as the server has connections all save
    their record at once (0 retries); `--stop` points the project at the store again."""
    port = free_port()
    project, out = moved_project(
        tmp_path, cluster, "pooled", "--pooler", f"127.0.0.1:{port}", "--expect-jobs", "16"
    )
    pooled_projects.append(project)
    assert "WARNING" not in out  # the jobs go through the pooler
    direct = cluster.url("pooled")
    assert project_url(project) == f"postgresql://postgres@127.0.0.1:{port}/pooled"
    runs = parallel_runs(project, 2 * MAX_CONNECTIONS)
    assert runs.crashed == 0, runs.outputs
    assert runs.retries == 0
    assert complete(cluster, "pooled") == 1 + 2 * MAX_CONNECTIONS
    status = json.loads(smtmigrate("pooler", str(project), "--status", "--format", "json").stdout)
    assert status["running"] and status["switched"] and status["pools"]
    stopped = smtmigrate("pooler", str(project), "--stop")
    assert stopped.returncode == 0, stopped.stderr
    assert project_url(project) == direct
    assert not (project / ".smt" / "pgbouncer" / "userlist.txt").exists()
    after = json.loads(smtmigrate("pooler", str(project), "--status", "--format", "json").stdout)
    assert not after["running"]


@needs_pgbouncer
@pytest.mark.slow
def test_a_paused_pooler_holds_running_jobs_through_a_server_restart(
    tmp_path, cluster, pooled_projects
):
    """--pause, `pg_ctlcluster restart -m fast`, --resume while 6 runs sleep and save: every
    record complete, no run crashed."""
    port = free_port()
    project, _ = moved_project(tmp_path, cluster, "restarted", "--pooler", f"127.0.0.1:{port}")
    pooled_projects.append(project)

    def restart() -> None:
        time.sleep(2)  # the runs have started
        paused = smtmigrate("pooler", str(project), "--pause")
        assert paused.returncode == 0, paused.stderr
        cluster.ctl("restart", "-m", "fast")
        resumed = smtmigrate("pooler", str(project), "--resume")
        assert resumed.returncode == 0, resumed.stderr

    runs = parallel_runs(project, 6, during=restart)
    assert runs.crashed == 0, [out[-800:] for out in runs.outputs]
    assert complete(cluster, "restarted") == 7
    assert smtmigrate("pooler", str(project), "--stop").returncode == 0


UNPLANNED_JOBS = 20
OUTAGE = 3.0  # seconds the server stays down: every run's last saves arrive meanwhile


@needs_pgbouncer
@pytest.mark.slow
def test_the_pooler_holds_running_jobs_through_an_unplanned_server_restart(
    tmp_path, cluster, pooled_projects
):
    """No --pause: 20 runs (6 s each, then waiting at a gate) are past their first save when
    the server stops (`-m fast`); the gate opens, so all their last saves (duration, outputs,
    status) arrive while it is down; it starts again OUTAGE s later. The watcher paused
    PgBouncer when the server went, so those statements waited instead of failing (without
    it PgBouncer 1.18 fails them at once and the runs crash, records left `_running_`)."""
    port = free_port()
    project, _ = moved_project(
        tmp_path, cluster, "unplanned", "--pooler", f"127.0.0.1:{port}", gated=True
    )
    pooled_projects.append(project)
    status = json.loads(smtmigrate("pooler", str(project), "--status", "--format", "json").stdout)
    assert status["watcher"] and status["server"] == "up"
    timeline = {}

    def restart() -> None:
        waiting = project / "waiting"
        deadline = time.monotonic() + 400
        while len(list(waiting.glob("job*"))) < UNPLANNED_JOBS:
            assert time.monotonic() < deadline, "the runs did not all start"
            time.sleep(0.2)
        cluster.ctl("stop", "-m", "fast")
        (project / GATE).touch()
        time.sleep(OUTAGE / 2)
        timeline["during"] = json.loads(
            smtmigrate("pooler", str(project), "--status", "--format", "json").stdout
        )
        time.sleep(OUTAGE / 2)
        cluster.ctl("start")

    runs = parallel_runs(project, UNPLANNED_JOBS, during=restart)
    during = timeline["during"]
    assert during["server"] == "down" and during["paused"] == "watcher", during
    assert runs.crashed == 0, [out[-600:] for out in runs.outputs if "Traceback" in out][:3]
    saved = complete_records(cluster, "unplanned")
    assert saved == [("_finished_", True)] * (1 + UNPLANNED_JOBS), saved
    outputs = {f"output_job{i}.dat" for i in range(UNPLANNED_JOBS)}
    assert outputs <= recorded_outputs(cluster, "unplanned")  # the runs' last saves landed
    after = json.loads(smtmigrate("pooler", str(project), "--status", "--format", "json").stdout)
    assert after["server"] == "up" and after["paused"] is None
    stopped = smtmigrate("pooler", str(project), "--stop")
    assert stopped.returncode == 0, stopped.stderr
    assert not (project / ".smt" / "pgbouncer" / "watch.pid").exists()


def pooled_select(port: int, database: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    done = subprocess.run(
        ["psql", "-XAtq", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", database,
         "-c", "SELECT 1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return done, time.monotonic() - started


def wait_for_server(project: Path, state: str) -> dict:
    deadline = time.monotonic() + 30
    while True:
        status = json.loads(
            smtmigrate("pooler", str(project), "--status", "--format", "json").stdout
        )
        if status["server"] == state or time.monotonic() > deadline:
            return status
        time.sleep(0.2)


@needs_pgbouncer
@pytest.mark.slow
def test_a_statement_held_past_hold_fails_with_query_wait_timeout(
    tmp_path, cluster, pooled_projects
):
    """The hold is bounded: with the server down longer than --hold, a statement fails with
    PgBouncer's query_wait_timeout after --hold seconds; --resume does not let PgBouncer
    fail statements while the server is down; once it is back, statements go through."""
    port = free_port()
    project, _ = moved_project(tmp_path, cluster, "held")
    pooled_projects.append(project)
    started = smtmigrate("pooler", str(project), "--listen", f"127.0.0.1:{port}", "--hold", "3")
    assert started.returncode == 0, started.stderr
    assert "statements held up to 3 s" in smtmigrate("pooler", str(project), "--status").stdout
    cluster.ctl("stop", "-m", "fast")
    try:
        down = wait_for_server(project, "down")
        assert down["server"] == "down" and down["paused"] == "watcher", down
        failed, took = pooled_select(port, "held")
        assert failed.returncode != 0 and "query_wait_timeout" in failed.stderr, failed
        assert 3 <= took < 30
        resumed = smtmigrate("pooler", str(project), "--resume")
        assert resumed.returncode == 0 and "the server does not answer" in resumed.stdout
    finally:
        cluster.ctl("start")
    assert wait_for_server(project, "up")["paused"] is None
    done, _ = pooled_select(port, "held")
    assert done.returncode == 0 and done.stdout.strip() == "1", done
    assert smtmigrate("pooler", str(project), "--stop").returncode == 0


@pytest.mark.parametrize(
    ("role", "password"), [("postgres", ""), ("r", "S3cret-pw"), ('a"b', 'x" "y')]
)
def test_the_auth_file_reads_back_what_was_written(tmp_path, role, password):
    (tmp_path / AUTH).write_text(auth_line(role, password))
    assert read_auth(tmp_path) == (role, password)


@pytest.mark.parametrize("text", ["6432", "host:", ":6432", "h:99999", "h:x"])
def test_a_listen_address_is_host_and_port(text):
    with pytest.raises(SmtmigrateError, match="give HOST:PORT"):
        parse_listen(text)
    assert parse_listen("[::1]:6432") == ("::1", 6432)


@pytest.mark.mariadb
def test_mariadb_headroom_is_max_connections_less_threads_connected(mariadb_name):
    """A database that does not exist yet (as `move` meets it) is looked at from the server."""
    (limit,) = mariadb_execute("SELECT @@GLOBAL.max_connections")[0]
    with resolve(mariadb_url_for(mariadb_name), mariadb=True) as store:
        headroom = read_headroom(store)
    assert headroom.kind == "mariadb" and headroom.max_connections == int(limit)
    assert headroom.free == int(limit) - headroom.in_use > 0  # ours not counted
    assert "raise max_connections" in headroom.advice and "no PgBouncer" in headroom.advice


@needs_pgbouncer
def test_the_pooler_is_for_postgresql_stores_only(cli, store08):
    text = (store08 / ".smt" / "project").read_text()
    result = cli("pooler", str(store08), "--listen", "127.0.0.1:6432")
    assert result.code == 1
    assert "SQLite (move it first: smtmigrate move)" in result.err
    assert cli("pooler", str(store08), "--stop").code == 1
    assert (store08 / ".smt" / "project").read_text() == text

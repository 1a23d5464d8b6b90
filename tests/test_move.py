"""`smtmigrate move`: the whole move in one command, safe to run again, losing no record.

The projects here are made by Sumatra itself (`smt init`, `smt run`) with its default
configuration, timestamp labels included, and the checks are Sumatra's own (`smt list`)
and the new store's rows, read with psycopg2.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import (
    mariadb_databases,
    mariadb_execute,
    mariadb_url_for,
    pg_query,
    pg_url_for,
    records_file,
    sqlite_rows,
)

SMT = str(Path(sys.executable).parent / "smt")
SMTMIGRATE = [sys.executable, "-m", "smtmigrate"]


def sumatra_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}


def smt(project: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SMT, *args],
        cwd=project,
        capture_output=True,
        text=True,
        env=sumatra_env(),
        timeout=timeout,
    )


def start_smt_run(project: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [SMT, "run", *args],
        cwd=project,
        env=sumatra_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def new_project(tmp_path: Path, main: str = "print('hello')\n") -> Path:
    """A git project set up by `smt init` with Sumatra's defaults, and one record."""
    project = tmp_path / "project"
    project.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    (project / "main.py").write_text(main)
    subprocess.run([*git, "add", "main.py"], cwd=project, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=project, check=True)
    assert smt(project, "init", "moveproj").returncode == 0
    assert smt(project, "configure", "--executable=python", "--main=main.py").returncode == 0
    first = smt(project, "run")
    assert first.returncode == 0, first.stderr[-2000:]
    return project


def project_json(project: Path) -> dict:
    return json.loads((project / ".smt" / "project").read_text())


def labels_in(url: str) -> list[str]:
    return [label for (label,) in pg_query(url, "SELECT label FROM django_store_record")]


def hundred_runs_save_a_record_each(
    project: Path, labels: Callable[[], list[str]], timeout: float
) -> None:
    """100 `smt run`s of the moved project at once: none crashes, each saves a record under
    a label of its own (101 records with the one before), and `smt list` shows them all.
    `labels()`: the labels in the project's store."""
    jobs = [start_smt_run(project) for _ in range(100)]
    crashed = []
    for job in jobs:
        _, err = job.communicate(timeout=timeout)
        if job.returncode:
            crashed.append(err[-300:])
    assert not crashed, crashed[:3]
    found = labels()
    assert len(found) == 101
    assert len(set(found)) == 101  # no two runs share a label
    assert sorted(smt(project, "list").stdout.split()) == sorted(found)


def test_move_then_a_hundred_concurrent_default_smt_runs_lose_nothing(
    cli, home, tmp_path, new_database
):
    project = new_project(tmp_path)
    before = smt(project, "list").stdout.split()
    assert project_json(project)["label_generator"] == "timestamp"

    result = cli("move", project, new_database, "--yes")
    assert result.code == 0, result
    assert "Moved:" in result.out
    assert project_json(project)["record_store"]["db_file"] == new_database
    assert project_json(project)["label_generator"] == "uuid"
    assert labels_in(new_database) == before

    hundred_runs_save_a_record_each(project, lambda: labels_in(new_database), timeout=400)


def test_without_the_label_fix_concurrent_runs_collide(cli, home, tmp_path, new_database):
    """What `move` fixes, shown on the same project moved with --label-generator keep."""
    project = new_project(tmp_path)
    assert cli("move", project, new_database, "--yes", "--label-generator", "keep").code == 0
    assert project_json(project)["label_generator"] == "timestamp"
    jobs = [start_smt_run(project) for _ in range(10)]
    failed = sum(bool(job.wait(timeout=300)) for job in jobs)
    labels = labels_in(new_database)
    # Runs started in one second share a label: some crash, or share a record's label.
    assert failed or len(set(labels)) < 11, (failed, labels)


def test_move_while_runs_keep_saving_loses_no_record(cli, home, tmp_path, new_database):
    """Jobs that start before the switch save to the old store when they end, and rewrite
    .smt/project as it was; running move again brings the project and their records over."""
    project = new_project(tmp_path, main="import time\ntime.sleep(8)\n")
    early = [start_smt_run(project, "--label", f"early-{i}") for i in range(3)]
    time.sleep(2)  # they have read .smt/project: they will save to the SQLite store
    result = cli("move", project, new_database, "--yes")
    assert result.code == 0, result
    after = [start_smt_run(project, "--label", f"after-{i}") for i in range(2)]
    for job in early + after:
        _, err = job.communicate(timeout=300)
        assert job.returncode == 0, err[-2000:]
    sqlite_labels = {
        label
        for (label,) in sqlite_rows(records_file(project), "SELECT label FROM django_store_record")
    }
    assert {f"early-{i}" for i in range(3)} <= sqlite_labels  # saved to the old store

    again = cli("move", project, new_database, "--yes", "--format", "json")
    assert again.code == 0, again
    carried = {r["label"] for r in json.loads(again.out)["late_records"]["carried"]}
    # saved there after the copy's snapshot, or copied while running and ended there: the
    # early runs as a rule; on a loaded machine an early run may save before the snapshot
    # and rewrite .smt/project after the switch, so the after runs save there instead.
    expected = {f"early-{i}" for i in range(3)} | {f"after-{i}" for i in range(2)}
    assert carried and carried <= expected, carried
    assert project_json(project)["record_store"]["db_file"] == new_database
    labels = labels_in(new_database)
    assert expected <= set(labels)
    assert len(labels) == len(set(labels)) == 6
    verified = cli("verify", records_file(project), new_database, "--format", "json")
    # the new store holds every record of the old one, equal through Sumatra, and more
    differences = json.loads(verified.out)["records"]["differences"]
    assert all("missing in the source" in d for d in differences), differences

    third = cli("move", project, new_database, "--yes")
    assert third.code == 0 and "late records: 0 carried over" in " ".join(third.out.split())
    assert len(labels_in(new_database)) == 6


def test_a_project_file_rewritten_by_a_finishing_job_is_pointed_back(
    cli, home, store08, new_database
):
    """Sumatra saves .smt/project after every run: a job that started before the switch
    writes the old store (and label generator) back when it ends."""
    original = (store08 / ".smt" / "project").read_text()
    assert cli("move", store08, new_database, "--yes").code == 0
    (store08 / ".smt" / "project").write_text(original)  # what that job's save does
    result = cli("move", store08, new_database, "--yes")
    assert result.code == 0, result
    assert "again: a job that started before the move rewrote .smt/project" in result.out
    assert project_json(store08)["record_store"]["db_file"] == new_database
    assert project_json(store08)["label_generator"] == "uuid"
    assert len(labels_in(new_database)) == 7


@pytest.mark.parametrize("generation", ["0.8", "0.7"])
def test_move_a_fixture_project(cli, home, generation, tmp_path, new_database):
    from .conftest import copy_fixture

    project = copy_fixture(generation, tmp_path)
    before = [
        label
        for (label,) in sqlite_rows(
            records_file(project), "SELECT label FROM django_store_record ORDER BY timestamp DESC"
        )
    ]  # Sumatra 0.8.1 itself cannot open the 0.7 store: it is what the move is for
    result = cli("move", project, new_database, "--yes", "--format", "json")
    assert result.code == 0, result
    data = json.loads(result.out)
    assert data["switched"] and data["label_generator_fixed"] == "uuid"
    assert data["copy_result"]["verification"]["ok"]
    listed = smt(project, "list")
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert listed.stdout.split() == before


def test_dry_run_and_no_answer_change_nothing(cli, home, store08, new_database):
    project_text = (store08 / ".smt" / "project").read_text()
    dry = cli("move", store08, new_database, "--dry-run")
    assert dry.code == 0, dry
    for step in ("database", "copy", "switch", "labels", "late records"):
        assert step in dry.out
    unasked = cli("move", store08, new_database)  # no --yes, no terminal to ask on
    assert unasked.code == 1
    assert unasked.err.strip() == (
        "smtmigrate move: error: move changes the project: add --yes to go ahead without a question"
    )
    assert (store08 / ".smt" / "project").read_text() == project_text
    exists = pg_query(
        pg_url_for("postgres"),
        "SELECT 1 FROM pg_database WHERE datname = %s",
        (new_database.rsplit("/", 1)[1],),
    )
    assert exists == []


def test_refused_when_the_target_holds_other_records(cli, home, store08, store07, pg_database):
    assert cli("copy", store07, pg_database, "--widen", "--quiet").code == 0
    text = (store08 / ".smt" / "project").read_text()
    result = cli("move", store08, pg_database, "--yes")
    assert result.code == 1
    assert "already holds Sumatra records that are not the project's" in result.err
    assert (store08 / ".smt" / "project").read_text() == text


def test_a_copy_made_earlier_is_kept_and_the_move_completes(cli, home, store08, pg_database):
    """As after a run killed between the copy's commit and the switch."""
    assert cli("copy", store08, pg_database, "--widen", "--quiet").code == 0
    result = cli("move", store08, pg_database, "--yes")
    assert result.code == 0, result
    assert "made by an earlier run" in result.out
    assert project_json(store08)["record_store"]["db_file"] == pg_database


def test_killed_during_the_copy_then_run_again(home, store08, new_database):
    text = (store08 / ".smt" / "project").read_text()
    env = {**os.environ, "HOME": str(home)}
    move = subprocess.Popen(
        [*SMTMIGRATE, "move", str(store08), new_database, "--yes"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    for line in move.stdout:
        if line.startswith("load"):
            move.send_signal(signal.SIGKILL)
            break
    move.wait(timeout=60)
    assert move.returncode == -signal.SIGKILL
    assert (store08 / ".smt" / "project").read_text() == text  # still on its old store
    again = subprocess.run(
        [*SMTMIGRATE, "move", str(store08), new_database, "--yes"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr
    assert project_json(store08)["record_store"]["db_file"] == new_database
    assert len(labels_in(new_database)) == 7


# -- onto MariaDB ---------------------------------------------------------------------------


def mariadb_labels(name: str) -> list[str]:
    rows = mariadb_execute("SELECT label FROM django_store_record ORDER BY db_id", database=name)
    return [label for (label,) in rows]


def test_move_onto_mariadb_then_a_hundred_concurrent_default_smt_runs_lose_nothing(
    cli, home, tmp_path, mariadb_name
):
    """The database is created (binary no-pad), the copy widened and verified, the project
    switched with its label generator fixed; then 100 `smt run`s at once save 100 records
    (MariaDB's default max_connections, 151, is enough for them)."""
    url = mariadb_url_for(mariadb_name)
    project = new_project(tmp_path)
    before = smt(project, "list").stdout.split()
    assert mariadb_name not in mariadb_databases()

    result = cli("move", project, url, "--yes")
    assert result.code == 0, result
    assert "Moved:" in result.out
    assert project_json(project)["record_store"]["db_file"] == url
    assert project_json(project)["label_generator"] == "uuid"
    assert mariadb_execute(
        "SELECT default_collation_name FROM information_schema.schemata WHERE schema_name = %s",
        (mariadb_name,),
    ) == [("utf8mb4_nopad_bin",)]
    assert mariadb_labels(mariadb_name) == before
    assert not [d for d in mariadb_databases() if d.startswith("smtmigrate_partial_")]

    again = cli("move", project, url, "--yes")  # safe to run again: nothing left to do
    assert again.code == 0, again
    assert mariadb_labels(mariadb_name) == before

    hundred_runs_save_a_record_each(project, lambda: mariadb_labels(mariadb_name), timeout=600)


def test_move_onto_mariadb_carries_late_records_and_keeps_an_earlier_copy(
    cli, home, tmp_path, mariadb_name
):
    """A copy already in the database (made by an earlier run) is kept when it holds only
    the project's records; a record saved since is carried over by the move."""
    url = mariadb_url_for(mariadb_name)
    project = new_project(tmp_path)
    copied = cli("copy", project, url, "--widen")
    assert copied.code == 0, copied
    late = smt(project, "run")  # saved to the old store after the copy
    assert late.returncode == 0, late.stderr[-2000:]
    labels = smt(project, "list").stdout.split()
    assert len(labels) == 2

    result = cli("move", project, url, "--yes")
    assert result.code == 0, result
    assert "made by an earlier run" in result.out
    assert sorted(mariadb_labels(mariadb_name)) == sorted(labels)
    assert sorted(smt(project, "list").stdout.split()) == sorted(labels)


def test_move_onto_mariadb_refuses_create_role_in_one_line(cli, home, store08, mariadb_name):
    result = cli("move", store08, mariadb_url_for(mariadb_name), "--yes", "--create-role")
    assert result.code == 2, result
    assert "--create-role does not apply to a MariaDB move" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert mariadb_name not in mariadb_databases()

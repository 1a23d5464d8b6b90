"""Real concurrent `smt run`s of a project `move` just moved (Sumatra's default label
generator fixed on the way): 100 at once on PostgreSQL and on MariaDB lose nothing, the same
project moved without the fix collides, runs started before the switch are carried over.
These need a server to themselves (`solo`): 100 jobs take PostgreSQL's 100 connections."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ..commands.test_move import (
    labels_in,
    mariadb_labels,
    new_project,
    project_json,
    smt,
    start_smt_run,
)
from ..conftest import (
    mariadb_databases,
    mariadb_execute,
    mariadb_url_for,
    records_file,
    sqlite_rows,
)


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


@pytest.mark.pg
@pytest.mark.slow
@pytest.mark.solo
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


@pytest.mark.pg
@pytest.mark.slow
@pytest.mark.solo
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


@pytest.mark.pg
@pytest.mark.slow
@pytest.mark.solo
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


@pytest.mark.mariadb
@pytest.mark.slow
@pytest.mark.solo
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

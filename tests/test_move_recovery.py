"""`move` loses no record and leaves no half-done change (issue 27).

Projects are made by Sumatra itself (`smt init`, `smt run`); rows Sumatra writes only under a
race (two records sharing a label) are written through Sumatra's own API (sumatra_api.py).
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import (
    drop_database,
    mariadb_execute,
    mariadb_url_for,
    pg_query,
    pg_url_for,
    records_file,
    run_sumatra,
    sqlite_rows,
)
from .test_move import new_project, project_json, smt, start_smt_run


@pytest.fixture
def new_database() -> Iterator[str]:
    """The URL of a PostgreSQL database that does not exist yet (move creates it)."""
    name = f"smtm_move_{uuid.uuid4().hex[:12]}"
    yield pg_url_for(name)
    drop_database(name)


WAITING_MAIN = "import os, time\nwhile not os.path.exists('go'):\n    time.sleep(0.05)\n"


def wait_for_running(project: Path, label: str, timeout: float = 120) -> None:
    """Until `smt run --label LABEL` has saved its first, `_running_` record."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = sqlite_rows(
            records_file(project), "SELECT tags FROM django_store_record WHERE label = ?", (label,)
        )
        if rows and "_running_" in (rows[0][0] or ""):
            return
        time.sleep(0.1)
    raise AssertionError(f"{label} never started")


def target_rows(url: str, kind: str) -> list[tuple]:
    query = "SELECT label, tags, duration FROM django_store_record ORDER BY db_id"
    if kind == "mariadb":
        return mariadb_execute(query, database=url.rsplit("/", 1)[1])
    return pg_query(url, query)


@pytest.mark.parametrize("kind", ["pg", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def test_unfinished_records_sharing_a_label_and_a_job_ending_during_the_move(
    cli, home, tmp_path, kind, new_database, mariadb_name
):
    """Two unfinished records share a label (runs whose saves raced); a real job is running
    during the move and ends in the old store; its completion reaches the new store, and
    both records sharing the label are there, untouched."""
    url = new_database if kind == "pg" else mariadb_url_for(mariadb_name)
    project = new_project(tmp_path)
    (project / "main.py").write_text(WAITING_MAIN)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "commit", "-qam", "wait for go"], cwd=project, check=True)
    for _ in range(2):
        made = run_sumatra("running", str(records_file(project)), "moveproj", "raced")
        assert made.returncode == 0, made.stderr[-2000:]
    job = start_smt_run(project, "--label", "job")
    wait_for_running(project, "job")

    moved = cli("move", project, url, "--yes")
    assert moved.code == 0, moved
    (project / "go").write_text("")  # the job ends, saving to the store it opened: the old one
    _, err = job.communicate(timeout=120)
    assert job.returncode == 0, err[-2000:]
    old = sqlite_rows(
        records_file(project), "SELECT tags FROM django_store_record WHERE label = 'job'"
    )
    assert old == [("_finished_",)]

    again = cli("move", project, url, "--yes", "--format", "json")  # as the docs say
    assert again.code == 0, again
    carried = json.loads(again.out)["late_records"]["carried"]
    assert [r["label"] for r in carried] == ["job"]
    assert project_json(project)["record_store"]["db_file"] == url
    rows = target_rows(url, kind)
    assert [(label, tags) for label, tags, _ in rows][1:] == [
        ("raced", "_running_"),
        ("raced", "_running_"),
        ("job", "_finished_"),
    ]
    assert rows[-1][2] is not None  # the job's duration, saved when it ended
    assert smt(project, "list").returncode == 0

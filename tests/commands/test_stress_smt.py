"""`smtmigrate stress PROJECT_DIR` (default mode): real `smt run`s of a scratch copy of the
project, released together, on a project switched to PostgreSQL as a new user would have it.

The oracles are plain SQL on the store (psycopg2) and Sumatra's own `smt list`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import processes_mentioning
from .test_stress import pg_row_counts

pytestmark = [pytest.mark.pg, pytest.mark.slow, pytest.mark.solo]

SMT = str(Path(sys.executable).parent / "smt")


def smt_list(project: Path) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [SMT, "list"], cwd=project, capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


@pytest.fixture
def switched(cli, store08, pg_database) -> Path:
    """The 0.8 fixture after `copy --widen --switch`: Sumatra's default timestamp labels."""
    assert cli("copy", store08, pg_database, "--widen", "--switch", store08).code == 0
    return store08


def test_an_unfixed_project_fails_and_the_label_generator_is_named(cli, switched, pg_database):
    before, labels = pg_row_counts(pg_database), smt_list(switched)
    result = cli("stress", switched, "--jobs", "10", "--format", "json")
    report = json.loads(result.out)
    assert result.code == report["exit_code"] == 1, result
    assert report["mode"] == "smt" and report["expected"] == 10
    assert report["label_generator"]["collides"] is True
    assert (
        "Cause: label generator timestamp, format '%Y%m%d-%H%M%S' (1 second)" in report["verdict"]
    )
    assert (
        f"fix: smtmigrate switch {switched.resolve()} --label-generator uuid" in report["verdict"]
    )
    # ten runs released together on two cores share labels: some are lost, each one is
    # accounted for as crashed (with Sumatra's error), overwritten or kept twice
    lost = report["expected"] - report["found"]
    assert lost > 0 or report["duplicate_labels"]
    assert "timeout" not in report["errors"]
    assert sum(report["crashed"].values()) + report["saved"] == 10
    for line in report["crashed"]:
        assert "Error" in line or "MultipleObjectsReturned" in line
    # the store and the project are as they were
    assert report["cleanup"]["ok"], report["cleanup"]
    assert pg_row_counts(pg_database) == before
    assert smt_list(switched) == labels
    assert not processes_mentioning(report["project"])


def test_a_fixed_project_saves_every_run_under_its_own_label(cli, switched, pg_database):
    assert cli("switch", switched, "--label-generator", "uuid").code == 0
    before = pg_row_counts(pg_database)
    result = cli("stress", switched, "--jobs", "6")
    out = " ".join(result.out.split())
    assert result.code == 0, result
    assert "OK: 6 `smt run`s by 6 concurrent jobs saved 6 records with 6 distinct labels" in out
    assert "real `smt run`(s) of a scratch copy of the project" in out
    assert "store errors: none" in out
    assert "nothing of the scratch project is left" in out
    assert pg_row_counts(pg_database) == before

"""The project's label generator: `audit PROJECT_DIR` names one under which concurrent
`smt run`s share labels, `switch --label-generator` fixes it exactly as `smt configure`
does, `switch --back` restores the project file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from smtmigrate.project import LabelGenerator, timestamp_resolution

from ..conftest import copy_fixture, records_file

SMT = str(Path(sys.executable).parent / "smt")


def project_file(project: Path) -> Path:
    return project / ".smt" / "project"


def smt_configure(project: Path, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [SMT, "configure", *args], cwd=project, capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize(
    "timestamp_format, resolution, collides",
    [
        ("%Y%m%d-%H%M%S", "1 second", True),  # Sumatra's default
        ("%Y%m%d-%H%M", "1 minute", True),
        ("%Y%m%d", "1 day", True),
        ("run-%Y%m%d-%H%M%S%%f", "1 second", True),  # %%f is a literal "%f"
        ("%Y%m%d-%H%M%S-%f", "1 microsecond", False),
        ("%s.%f", "1 microsecond", False),
        ("fixed", None, True),
    ],
)
def test_timestamp_resolution(timestamp_format, resolution, collides):
    assert timestamp_resolution(timestamp_format) == resolution
    assert LabelGenerator(Path("p"), "timestamp", timestamp_format).collides is collides
    assert not LabelGenerator(Path("p"), "uuid", timestamp_format).collides


@pytest.mark.parametrize("generation", ["0.8", "0.7"])
@pytest.mark.slow
def test_audit_names_the_default_timestamp_labels_of_both_fixtures(cli, tmp_path, generation):
    project = copy_fixture(generation, tmp_path)
    store_only = cli("audit", records_file(project), "--format", "json")
    result = cli("audit", project, "--format", "json")
    report = json.loads(result.out)
    assert report["project"] == {
        "project_file": str(project_file(project.resolve())),
        "label_generator": "timestamp",
        "timestamp_format": "%Y%m%d-%H%M%S",
        "label_resolution": "1 second",
        "collides": True,
        "problem": "label generator timestamp, format '%Y%m%d-%H%M%S' (1 second): `smt run`s "
        "started within the same second get the same label; they crash (FileNotFoundError on "
        "'<label>.param', MultipleObjectsReturned) or are saved as several records with one "
        "label (Sumatra issue #362)",
        "fix": f"smtmigrate switch {project.resolve()} --label-generator uuid "
        "(or smt configure -g uuid)",
    }
    # the project's configuration is not a problem of the store's data: same exit code
    assert "project" not in json.loads(store_only.out)
    assert result.code == store_only.code == report["summary"]["exit_code"]
    table = " ".join(cli("audit", project).out.split())
    assert "project: label generator timestamp, format '%Y%m%d-%H%M%S' (1 second)" in table
    assert f"fix: smtmigrate switch {project.resolve()} --label-generator uuid" in table


@pytest.mark.parametrize(
    "choice, configure",
    [("uuid", ("-g", "uuid")), ("timestamp-us", ("-t", "%Y%m%d-%H%M%S-%f"))],
)
@pytest.mark.slow
def test_fix_writes_what_smt_configure_writes_and_back_restores(cli, tmp_path, choice, configure):
    ours = copy_fixture("0.8", tmp_path / "ours")
    theirs = copy_fixture("0.8", tmp_path / "theirs")
    original = project_file(ours).read_bytes()
    smt_configure(theirs, *configure)
    assert project_file(theirs).read_bytes() != original

    result = cli("switch", ours, "--label-generator", choice)
    assert result.code == 0, result
    assert project_file(ours).read_bytes() == project_file(theirs).read_bytes()
    assert f"{project_file(ours)} now labels records with" in result.out
    audit = json.loads(cli("audit", ours, "--format", "json").out)
    assert audit["project"]["collides"] is False and audit["project"]["fix"] is None

    again = cli("switch", ours, "--label-generator", choice)
    assert again.code == 0 and "already labels records with" in again.out
    assert project_file(ours).read_bytes() == project_file(theirs).read_bytes()

    back = cli("switch", ours, "--back")
    assert back.code == 0, back
    assert project_file(ours).read_bytes() == original


@pytest.mark.pg
def test_switch_moves_the_store_and_fixes_the_labels_in_one_write(cli, store08, pg_database):
    original = project_file(store08).read_bytes()
    assert cli("copy", store08, pg_database, "--widen").code == 0
    result = cli("switch", store08, pg_database, "--label-generator", "uuid")
    assert result.code == 0, result
    project = json.loads(project_file(store08).read_text())
    assert project["record_store"]["db_file"] == pg_database
    assert project["label_generator"] == "uuid"
    assert project["timestamp_format"] == "%Y%m%d-%H%M%S"  # as `smt configure -g uuid` leaves it
    assert cli("switch", store08, "--back").code == 0
    assert project_file(store08).read_bytes() == original


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ("--back", "--label-generator", "uuid"),
            "--back takes no TARGET and no --label-generator",
        ),
        ((), "give the TARGET store to switch to, --label-generator, or --back"),
        (("--label-generator", "serial"), "invalid choice: 'serial'"),
    ],
)
def test_switch_label_usage_errors(cli, store08, args, message):
    original = project_file(store08).read_bytes()
    result = cli("switch", store08, *args)
    assert result.code == 2, result
    assert message in result.err
    assert project_file(store08).read_bytes() == original

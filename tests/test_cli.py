"""The `smtmigrate` entry point and the same commands through a Django project."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.management.base import BaseCommand, CommandError

from smtmigrate.cli import COMMANDS
from smtmigrate.management.exits import ended
from smtmigrate.render import console, render_stress, render_stress_interrupted
from smtmigrate.stress.report import CleanupResult, StressReport

from .conftest import FIXTURES, ROOT


def test_help_lists_every_command_with_one_line(cli):
    result = cli("--help")
    assert result.code == 0
    for name, summary in COMMANDS.items():
        line = next(line for line in result.out.splitlines() if line.strip().startswith(name))
        assert summary in line
    assert "audit" in result.out


def test_unknown_command_exits_2(cli):
    unknown = cli("frobnicate")
    assert unknown.code == 2
    assert "unknown command 'frobnicate'" in unknown.err


def test_usage_error_exits_2(cli):
    result = cli("audit")
    assert result.code == 2
    assert "the following arguments are required: location" in result.err


def test_console_script_runs(tmp_path):
    """The installed `smtmigrate` script, as a user runs it."""
    script = os.path.join(os.path.dirname(sys.executable), "smtmigrate")
    result = subprocess.run(
        [script, "audit", FIXTURES / "sumatra-0.8", "--format", "json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr  # the fixture holds over-long values
    assert '"layout": "sumatra-0.8"' in result.stdout


def _django_admin(settings: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": settings, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "django", *args], capture_output=True, text=True, env=env
    )


def test_commands_reachable_from_a_users_django_project():
    result = _django_admin(
        "tests.example_project.settings", "audit", str(FIXTURES / "sumatra-0.7"), "--format=json"
    )
    assert result.returncode == 1, result.stderr
    assert '"layout": "sumatra-0.7"' in result.stdout


def test_manage_py_uses_the_standalone_settings():
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "audit", str(FIXTURES / "sumatra-0.8")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1, result.stderr
    assert "FAIL" in result.stdout


def test_system_check_names_the_missing_sumatra_app():
    result = _django_admin("tests.example_project.missing_sumatra", "audit", "x")
    assert result.returncode != 0
    assert "smtmigrate needs 'sumatra.recordstore.django_store' in INSTALLED_APPS" in result.stderr


# -- output, exactly as a user sees it ------------------------------------------------------

EXPECTED = Path(__file__).parent / "expected"
STORE_08 = FIXTURES / "sumatra-0.8" / ".smt" / "records"


def _steady(out: str, store: Path) -> str:
    """The output with what changes from run to run (path, times) replaced."""
    out = out.replace(str(store), "STORE")
    out = re.sub(r"scanned in [0-9.]+ s", "scanned in T s", out)
    out = re.sub(r"as of [^:]+:[^:]+:[0-9]+ UTC", "as of T UTC", out)
    return "\n".join(line.rstrip() for line in out.splitlines()) + "\n"


def test_audit_shows_what_fails_then_what_to_watch_then_counts_the_risks(cli):
    """The answer first: failing findings, near-limit (and drift), then ONE line for the
    `risk` columns that fit today; exit 1 as before."""
    result = cli("audit", STORE_08)
    assert result.code == 1, result
    assert _steady(result.out, STORE_08) == (EXPECTED / "audit-sumatra-0.8.txt").read_text()


def test_audit_all_lists_every_risk_column_and_json_keeps_everything(cli):
    default = cli("audit", STORE_08)
    every = cli("audit", STORE_08, "--all")
    data = json.loads(cli("audit", STORE_08, "--format", "json").out)
    assert default.code == every.code == data["summary"]["exit_code"] == 1
    risks = {(f["table"], f["column"]) for f in data["findings"] if f["kind"] == "risk"}
    assert len(risks) == 20 == data["summary"]["counts"]["risk"]
    rows = [line.split("│") for line in every.out.splitlines() if line.startswith("│risk")]
    assert {(row[2].strip(), row[3].strip()) for row in rows} == risks
    assert "--all lists them" not in every.out
    assert not any(line.startswith("│risk") for line in default.out.splitlines())
    # everything else is the same: the risk rows only widen the table's columns
    others = [line.split("│")[1:4] for line in every.out.splitlines() if line.startswith("│")]
    shown = [line.split("│")[1:4] for line in default.out.splitlines() if line.startswith("│")]
    assert [[c.strip() for c in row] for row in others if row[0].strip() != "risk"] == [
        [c.strip() for c in row] for row in shown
    ]
    assert (
        data["summary"]["verdict"] == "FAIL: 8 finding(s) would be rejected by PostgreSQL "
        "(8 overflow)."
    )


AUDIT_HELP = """\
usage: smtmigrate audit [-h] [--format {table,json}] [--near NEAR] [--all]
                        location

Report what in a Sumatra store would fail, or is bound to fail: an SQLite
store on PostgreSQL, a PostgreSQL or MariaDB store on its own server (against
its real columns; MariaDB's collations, utf8mb3 columns and sql_mode too).
Given a project directory, also checks its label generator (concurrent `smt
run`s that would share a label); that never changes the exit code. A damaged
SQLite store (SQLite's own quick_check fails) is a finding. Exit 0: nothing
would fail; 1: damage, overflow, invalid values or duplicates; 2: usage or I/O
error.

positional arguments:
  location              Sumatra project directory, SQLite file, postgresql://
                        or mysql:// URL

options:
  -h, --help            show this help message and exit
  --format {table,json}
  --near NEAR           report columns whose longest value reaches this
                        fraction of the limit (default 0.8)
  --all                 list every `risk` column (content unbounded by nature
                        that fits today), not only their count; --format json
                        always lists them
"""
# Django's own options of every command (long forms), as Django's parser adds them.
DJANGO_OPTIONS = sorted(
    option
    for action in BaseCommand().create_parser("manage.py", "audit")._actions
    for option in action.option_strings
    if option.startswith("--") and option != "--help"
)


@pytest.mark.parametrize("name", COMMANDS)
def test_standalone_help_leaves_djangos_options_out(cli, monkeypatch, name):
    monkeypatch.setenv("COLUMNS", "80")
    result = cli(name, "--help")
    assert result.code == 0 and result.err == ""
    assert f"usage: smtmigrate {name} [-h]" in result.out
    for option in DJANGO_OPTIONS:
        assert option not in result.out, option
    if name == "audit":
        assert result.out == AUDIT_HELP


def test_manage_py_help_keeps_djangos_options():
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "audit", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert result.returncode == 0, result.stderr
    for option in DJANGO_OPTIONS:
        assert option in result.stdout, option


def test_traceback_still_works_in_the_standalone_cli(cli, tmp_path):
    """Hidden from --help, not gone: a developer gets the whole traceback."""
    notes = tmp_path / "notes.txt"
    notes.write_text("not a store")
    assert cli("audit", notes).err == f"smtmigrate audit: error: {notes}: not an SQLite database\n"
    with pytest.raises(CommandError, match="not an SQLite database"):
        cli("audit", notes, "--traceback")


def test_a_system_check_error_is_formatted_as_django_does():
    result = _django_admin("tests.example_project.missing_sumatra", "audit", "x")
    assert result.returncode == 1
    assert result.stderr.startswith(
        "SystemCheckError: System check identified some issues:\n\nERRORS:\n"
        "?: (smtmigrate.E001) smtmigrate needs 'sumatra.recordstore.django_store' in "
        "INSTALLED_APPS.\n\tHINT: smtmigrate compares stores with the installed Sumatra's models."
    ), result.stderr


def test_copy_switch_shows_its_verification_once(cli, home, store08, tmp_path):
    target = tmp_path / "new.sqlite"
    result = cli("copy", store08, target, "--switch", store08)
    assert result.code == 0, result
    verified = [line for line in result.out.splitlines() if "identical" in line]
    assert verified == [
        "Verified: 15 tables and 128 rows identical; 7 records identical through Sumatra."
    ]
    assert f"{store08.resolve() / '.smt' / 'project'} now names {target}" in result.out


def test_a_stress_error_holding_markup_is_shown_as_it_is():
    """The database's error text is anyone's: `[bold]` in it is text, not a style (it once
    went into rich markup unescaped; `[/x]` would even have crashed the output)."""
    error = 'relation "[bold]x[/x]" does not exist'
    report = StressReport("store", "sqlite", "smtmigrate-stress-1", 1, 1, 1.0)
    report.cleanup = CleanupResult(ok=False, error=error)
    out = io.StringIO()
    render_stress_interrupted(report, console(out))
    assert out.getvalue() == (
        f"the scratch project smtmigrate-stress-1 could not be removed: {error}\n"
    )
    report.examples = {"other": "[red]boom[/red]"}
    report.errors["other"] = 1
    out = io.StringIO()
    render_stress(report, console(out))
    assert "[red]boom[/red]" in out.getvalue()
    assert f"Cleanup of smtmigrate-stress-1 FAILED: {error}." in out.getvalue()


# -- how a command ends (management/exits.py) ----------------------------------------------


def _ended(body, **options) -> tuple[int, str]:
    lines: list[str] = []
    with pytest.raises(SystemExit) as stop, ended("smtmigrate test", say=lines.append, **options):
        body()
    return stop.value.code, "\n".join(lines)


def _ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(1)  # the handler runs here


def test_ctrl_c_ends_as_interrupted():
    assert _ended(_ctrl_c) == (130, "smtmigrate test: interrupted")


def test_a_library_error_after_ctrl_c_ends_as_interrupted():
    def body():
        try:
            _ctrl_c()
        except KeyboardInterrupt:
            raise RuntimeError("error in a callback") from None

    assert _ended(body) == (130, "smtmigrate test: interrupted")


def test_a_lost_ctrl_c_still_ends_as_interrupted():
    def body():
        with contextlib.suppress(KeyboardInterrupt):  # as inside a weakref callback
            _ctrl_c()

    assert _ended(body) == (130, "smtmigrate test: interrupted")


def test_a_command_error_is_one_line_with_its_code():
    def body():
        raise CommandError("no such store", returncode=2)

    assert _ended(body) == (2, "smtmigrate test: error: no such store")
    with pytest.raises(CommandError), ended("smtmigrate test", one_line_errors=False):
        body()


def test_json_keeps_the_summaries_rendered_from_the_data(cli, store08, tmp_path):
    """The library returns data; the verdicts in the JSON are rendered, at their old places."""
    target = tmp_path / "new.sqlite"
    copied = json.loads(cli("copy", store08, target, "--format", "json").out)
    summary = "15 tables and 128 rows identical; 7 records identical through Sumatra"
    assert list(copied["verification"])[:2] == ["ok", "summary"]
    assert copied["verification"]["summary"] == summary
    verified = json.loads(cli("verify", store08, target, "--format", "json").out)
    assert (verified["ok"], verified["summary"]) == (True, summary)
    audited = json.loads(cli("audit", target, "--format", "json").out)
    assert list(audited["summary"])[:2] == ["verdict", "exit_code"]

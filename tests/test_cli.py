"""The `smtmigrate` entry point and the same commands through a Django project."""

from __future__ import annotations

import os
import subprocess
import sys

from smtmigrate.cli import COMMANDS

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

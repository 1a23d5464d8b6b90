"""The default install has no MariaDB driver (mysqlclient is the extra smtmigrate[mariadb]):
everything but MariaDB works without it, and a MariaDB location says how to install it.

Each test runs smtmigrate in a subprocess whose `sitecustomize` makes `import MySQLdb` fail
as it does where mysqlclient is not installed, whether or not this environment has it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import FIXTURES, ROOT

pytestmark = pytest.mark.slow

BLOCK_MYSQLDB = """\
import sys


class _NoMySQLdb:
    def find_spec(self, name, path=None, target=None):
        if name == "MySQLdb" or name.startswith("MySQLdb."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NoMySQLdb())
"""


@pytest.fixture
def without_mysqlclient(tmp_path: Path) -> dict[str, str]:
    """The environment of a Python in which mysqlclient is not installed."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCK_MYSQLDB)
    return {**os.environ, "PYTHONPATH": str(site)}


def _python(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, cwd=ROOT, timeout=120
    )


def _smtmigrate(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return _python(env, "-m", "smtmigrate", *args)


def test_the_block_works(without_mysqlclient):
    done = _python(without_mysqlclient, "-c", "import MySQLdb")
    assert done.returncode == 1
    assert "No module named 'MySQLdb'" in done.stderr


def test_every_module_imports_without_the_mariadb_driver(without_mysqlclient):
    code = (
        "import pkgutil, smtmigrate\n"
        "import django; django.setup()\n"
        "names = [m.name for m in pkgutil.walk_packages(smtmigrate.__path__, 'smtmigrate.')]\n"
        "for name in names:\n"
        "    if not name.endswith('__main__'): __import__(name)  # that one runs the CLI\n"
        "print(len(names))"
    )
    env = {**without_mysqlclient, "DJANGO_SETTINGS_MODULE": "smtmigrate.settings"}
    done = _python(env, "-c", code)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 50  # every module, engines/mariadb*.py included


def test_sqlite_commands_work_without_the_mariadb_driver(without_mysqlclient):
    done = _smtmigrate(without_mysqlclient, "audit", str(FIXTURES / "sumatra-0.8"))
    assert done.returncode == 1, done.stderr  # the example store's 8 overflows
    assert "FAIL: 8 finding(s) would be rejected by PostgreSQL (8 overflow)." in done.stdout
    assert done.stderr == ""


@pytest.mark.parametrize(
    "args",
    [
        ("audit", "mysql://root@localhost/sumatra"),
        ("verify", "mariadb://root@localhost/sumatra", str(FIXTURES / "sumatra-0.8")),
        ("createdb", "mysql://root@127.0.0.1:3306/sumatra"),
        ("move", str(FIXTURES / "sumatra-0.8"), "mysql://root@localhost/sumatra"),
    ],
    ids=["audit", "verify", "createdb", "move"],
)
def test_a_mariadb_location_without_the_driver_names_the_install_command(without_mysqlclient, args):
    done = _smtmigrate(without_mysqlclient, *args)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr  # one line, no traceback
    assert lines[0].startswith(f"smtmigrate {args[0]}: error: ")
    assert "MariaDB/MySQL stores need the mysqlclient driver" in lines[0]
    assert f"{sys.executable} -m pip install 'mysqlclient>=2.2'" in lines[0]


def test_under_pipx_the_install_command_is_pipx_inject(without_mysqlclient, tmp_path):
    """pipx marks the venvs it manages with a pipx_metadata.json; there, `pip install` is
    not how packages are added."""
    (tmp_path / "pipx_metadata.json").write_text("{}")
    code = (
        "import sys; sys.prefix = sys.argv[1]\n"
        "import django; django.setup()\n"
        "from smtmigrate.locations import resolve\n"
        "from smtmigrate.errors import MissingDriver\n"
        "try:\n"
        "    resolve('mysql://root@localhost/sumatra', mariadb=True)\n"
        "except MissingDriver as exc:\n"
        "    print(exc.exit_code, exc)\n"
    )
    env = {**without_mysqlclient, "DJANGO_SETTINGS_MODULE": "smtmigrate.settings"}
    done = _python(env, "-c", code, str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("2 mysql://root@localhost/sumatra: ")
    assert "pipx inject smtmigrate 'mysqlclient>=2.2'" in done.stdout
    assert "-m pip install" not in done.stdout

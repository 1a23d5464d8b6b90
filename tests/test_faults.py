"""Faults during a copy: Ctrl-C, SIGKILL at several points, the server connection cut.

Every time the target must be as it was (no table), the source byte-for-byte unchanged,
and a retry must succeed.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smtmigrate.generate import generate_store

from .conftest import PG_URL, pg_query

SMTMIGRATE = [sys.executable, "-m", "smtmigrate"]


@pytest.fixture(scope="module")
def big_source(tmp_path_factory, django_db_blocker) -> Path:
    """A store big enough for a copy to take a few seconds (20k records)."""
    path = tmp_path_factory.mktemp("faults") / "store.sqlite"
    with django_db_blocker.unblock():
        generate_store(path, 20_000, seed=3)
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def start_copy(source: Path, target: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*SMTMIGRATE, "copy", str(source), target, "--widen", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a test runner may have SIGINT ignored; the copy must get Ctrl-C as a user would
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_for_line(process: subprocess.Popen, text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    for line in process.stdout:
        if text in line:
            return
        assert time.monotonic() < deadline, f"no {text!r} within {timeout} s"
    pytest.fail(f"the copy ended before {text!r}: {process.stderr.read()[-500:]}")


def target_is_untouched(target: str) -> None:
    """No table, once the server has noticed the client is gone (rolled back)."""
    name = target.rsplit("/", 1)[1]
    deadline = time.monotonic() + 20
    while pg_query(PG_URL, "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)) != [
        (0,)
    ]:
        assert time.monotonic() < deadline, "the killed copy's session did not end"
        time.sleep(0.1)
    assert pg_query(target, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]


def retry_succeeds(source: Path, target: str) -> None:
    retry = subprocess.run(
        [*SMTMIGRATE, "copy", str(source), target, "--widen", "--verify", "rows", "--quiet"],
        capture_output=True,
        text=True,
    )
    assert retry.returncode == 0, retry.stderr
    assert pg_query(target, "SELECT count(*) FROM django_store_record") == [(20_000,)]


def test_ctrl_c_mid_load(big_source, pg_database):
    before = digest(big_source)
    copy = start_copy(big_source, pg_database)
    wait_for_line(copy, "django_store_datakey")  # the first table is in, the rest streams
    copy.send_signal(signal.SIGINT)
    _out, err = copy.communicate(timeout=60)
    assert copy.returncode == 130
    assert err.strip() == "smtmigrate copy: interrupted"
    target_is_untouched(pg_database)
    assert digest(big_source) == before
    retry_succeeds(big_source, pg_database)


@pytest.mark.parametrize("moment", ["schema …", "django_store_datakey", "verify records …"])
def test_sigkill(big_source, pg_database, moment):
    before = digest(big_source)
    copy = start_copy(big_source, pg_database)
    wait_for_line(copy, moment)
    copy.send_signal(signal.SIGKILL)
    copy.wait(timeout=30)
    target_is_untouched(pg_database)
    assert digest(big_source) == before
    retry_succeeds(big_source, pg_database)


def test_connection_cut_by_another_session(big_source, pg_database):
    name = pg_database.rsplit("/", 1)[1]
    copy = start_copy(big_source, pg_database)
    wait_for_line(copy, "django_store_datakey")
    pg_query(
        PG_URL,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid()",
        (name,),
    )
    _out, err = copy.communicate(timeout=60)
    assert copy.returncode == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "nothing was written" in lines[0], err[:1500]
    target_is_untouched(pg_database)
    retry_succeeds(big_source, pg_database)

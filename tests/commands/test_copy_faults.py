"""Faults during a copy: Ctrl-C, SIGKILL at several points, the server connection cut.

Every time the target must be as it was (no table), the source byte-for-byte unchanged,
and a retry must succeed.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import pytest

from smtmigrate import interrupts
from smtmigrate.copy import SilentEvents, copy_store, plan_copy
from smtmigrate.locations import resolve, resolve_target
from smtmigrate.snapshot import source_snapshot

from ..conftest import (
    PG_URL,
    generated_store,
    pg_query,
    public_tables,
    start,
    wait_for_line,
)

pytestmark = [pytest.mark.pg, pytest.mark.slow]

SMTMIGRATE = [sys.executable, "-m", "smtmigrate"]


@pytest.fixture(scope="module")
def big_source(tmp_path_factory, django_db_blocker) -> Path:
    """A store big enough for a copy to take a few seconds (12k records)."""
    return generated_store(tmp_path_factory, django_db_blocker, 12_000, seed=3)


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
    assert pg_query(target, "SELECT count(*) FROM django_store_record") == [(12_000,)]


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


# -- drop-recreate: nothing is dropped before the backup is complete and verified ----------


# -- stress: Ctrl-C stops every job and still removes the scratch project ------------------


def test_ctrl_c_during_the_load_of_a_copy_always_ends_as_interrupted(big_store, pg_database):
    """psycopg2 turns a KeyboardInterrupt in COPY's read() into "COPY from stdin failed:
    error in .read()"; at three moments of the load the copy ends as interrupted, the
    target as it was."""
    for delay in (0.0, 0.15, 0.3):
        copy = start("copy", big_store, pg_database, "--widen", stdout=subprocess.PIPE)
        for line in copy.stdout:
            if "django_store_datakey" in line:  # the first table is in, the rest streams
                break
        time.sleep(delay)
        assert copy.poll() is None, "the copy ended before Ctrl-C: use a bigger store"
        copy.send_signal(signal.SIGINT)
        _, err = copy.communicate(timeout=60)
        if copy.returncode == 0 and "Exception ignored" in err and "KeyboardInterrupt" in err:
            # Known, not fixed yet: a Ctrl-C that lands while Python runs a weakref
            # callback is printed as "Exception ignored" and lost, and the copy goes on.
            pytest.xfail("Ctrl-C lost inside a weakref callback (open defect, issue 11)")
        assert (copy.returncode, err.strip()) == (130, "smtmigrate copy: interrupted"), delay
        assert public_tables(pg_database) == []


class _LosesACtrlC(SilentEvents):
    """Copy events that, as the first table is done, press Ctrl-C while Python runs a weakref
    callback: the KeyboardInterrupt is printed as "Exception ignored" and lost — the case a
    real Ctrl-C hits now and then at random."""

    lost = False

    def table_done(self, result) -> None:
        if self.lost:
            return

        def callback(_reference) -> None:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100_000):  # the handler runs here, inside the callback
                pass

        class Referent:
            pass

        referent = Referent()
        reference = weakref.ref(referent, callback)
        del referent  # the callback runs now; its KeyboardInterrupt goes nowhere
        self.lost = reference() is None


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("into", ["postgresql", "sqlite"])
def test_a_ctrl_c_whose_exception_was_lost_still_stops_the_copy(
    into, store08, pg_database, tmp_path, django_db_blocker, capsys
):
    """The flag the Ctrl-C handler sets is checked before anything commits: the copy ends as
    interrupted, the target is as it was, and Python's "Exception ignored" is not shown."""
    target_text = pg_database if into == "postgresql" else str(tmp_path / "new.sqlite")
    events = _LosesACtrlC()
    with (
        django_db_blocker.unblock(),
        interrupts.watched(),
        resolve(str(store08)) as source,
        resolve_target(target_text) as target,
        source_snapshot(source) as snapshot,
        pytest.raises(KeyboardInterrupt),
    ):
        copy_store(plan_copy(snapshot, target, widen=True), events, level="rows")
    assert events.lost and interrupts.seen()
    assert "Exception ignored" not in capsys.readouterr().err
    if into == "postgresql":
        assert public_tables(pg_database) == []
    else:
        assert not (tmp_path / "new.sqlite").exists()
        assert list(tmp_path.glob(".new.sqlite.smtmigrate-*")) == []

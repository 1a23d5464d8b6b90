"""Orchestration of `smtmigrate stress`: checks, the job processes released together, the
count of what reached the store, the cleanup whatever happened."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import Refused, SmtmigrateError
from ..sumatra_url import worker_location
from .api import ApiMode
from .cleanup import cleanup
from .jobs import Job, Mode
from .report import (
    DEFAULT_JOBS,
    DEFAULT_RECORDS_PER_JOB,
    DEFAULT_TIMEOUT,
    GO,
    MAX_JOBS,
    MIN_JOBS,
    SCRATCH_PREFIX,
    StressInterrupted,
    StressReport,
)

if TYPE_CHECKING:
    from ..locations import Store

# A waiting job process (Python, Django, Sumatra, no connection): ~37 MB PSS measured.
WORKER_MEMORY = 40 * 2**20
# A launcher (bare Python, ~10 MB), its `smt run` (`smt list`: 55 MB max RSS measured) and
# the program that runs.
SMT_RUN_MEMORY = 80 * 2**20
POLL_SECONDS = 0.05
SHARED_TABLES = (
    "executable",
    "repository",
    "launchmode",
    "datastore",
    "parameterset",
    "dependency",
    "platforminformation",
    "datakey",
    "tag",
    "taggeditem",
)


class NotEnoughMemory(SmtmigrateError):
    """The machine cannot hold that many job processes at once."""


def _worker_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(extra)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def available_memory() -> int | None:
    """MemAvailable in bytes (Linux), or None when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


# -- the run ------------------------------------------------------------------------------


MODES = ("smt", "api")


def run_stress(
    store: Store,
    jobs: int = DEFAULT_JOBS,
    records_per_job: int = DEFAULT_RECORDS_PER_JOB,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    cold: bool = False,
    mode: str = "smt",
    on_phase: Callable[[str], None] | None = None,
) -> StressReport:
    """Run `jobs` concurrent job processes, count what reached the store, clean up.

    `mode` "smt": each job is a real `smt run` of a scratch copy of the project (smt.py);
    "api": a process making the saves of `smt run` through Sumatra's API (api.py).
    `cold` skips the warm-up record: the jobs then create the scratch project and the rows
    they share together, as the first jobs of a new project (or of a new Python, machine or
    repository) do.
    """

    if not MIN_JOBS <= jobs <= MAX_JOBS:
        raise ValueError(f"jobs must be between {MIN_JOBS} and {MAX_JOBS}")
    if records_per_job < 1 or not timeout > 0:
        raise ValueError("records_per_job must be >= 1 and timeout > 0")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    phase = on_phase or (lambda text: None)
    started = time.monotonic()
    reader = _reader(store)
    try:
        return _stress(store, reader, jobs, records_per_job, timeout, cold, mode, phase, started)
    finally:
        if reader is not store:
            reader.close()


def _stress(
    store: Store,
    reader: Store,
    jobs: int,
    records_per_job: int,
    timeout: float,
    cold: bool,
    mode_name: str,
    phase: Callable[[str], None],
    started: float,
) -> StressReport:
    from ..schema import LAYOUT_08, inspect_store

    inspection = inspect_store(reader)
    if inspection.layout != LAYOUT_08:
        raise Refused(
            f"{store.display} is a {inspection.layout} store, which Sumatra 0.8.1 cannot "
            "open; copy it into a new store first (smtmigrate copy)"
        )
    _check_write_privileges(reader, sorted(inspection.tables))  # PostgreSQL's, asked first
    uri, location_env = worker_location(store)
    memory = available_memory()
    per_job = WORKER_MEMORY if mode_name == "api" else SMT_RUN_MEMORY
    if memory is not None and (jobs + 2) * per_job > memory:
        raise NotEnoughMemory(
            f"{jobs} job processes need about {(jobs + 2) * per_job / 2**30:.1f} GiB "
            f"of memory, {memory / 2**30:.1f} GiB is available: use fewer --jobs"
        )
    env = _worker_env(location_env)
    report = StressReport(
        location=store.display,
        backend=store.kind,
        project=f"{SCRATCH_PREFIX}{secrets.token_hex(4)}",
        jobs=jobs,
        records_per_job=records_per_job,
        timeout=timeout,
        mode=mode_name,
    )
    report.notes += _connection_notes(reader, jobs)
    before = _max_ids(reader)
    reader.connection.close()  # one connection fewer while the jobs run

    scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX))
    running: list[Job] = []
    interrupted = False
    try:
        if mode_name == "api":
            mode: Mode = ApiMode(uri, env, scratch, report)
        else:
            from .smt import SmtMode

            mode = SmtMode(store, uri, env, scratch, report)
        _run(report, mode, env, started + timeout, running, phase, cold=cold)
        phase("counting the records in the store")
        mode.count(reader)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        _stop(running)
        phase(f"removing the scratch project {report.project}")
        with _sigint_deferred():
            report.cleanup = cleanup(
                reader, uri, env, scratch, report.project, before, mode=mode_name
            )
        shutil.rmtree(scratch, ignore_errors=True)
        report.total_seconds = time.monotonic() - started
    if interrupted:
        raise StressInterrupted(report)
    return report


@contextlib.contextmanager
def _sigint_deferred():
    """Let the cleanup (bounded by CLEANUP_TIMEOUT) finish when Ctrl-C is pressed again:
    killed half-way it would leave the scratch project in the user's store."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _reader(store: Store) -> Store:
    """The connection that counts afterwards. For SQLite a read-write one (it only reads):
    a job killed in the middle of a save leaves a hot journal, which the next reader must
    roll back, and a read-only connection cannot."""
    from ..locations import Store, sqlite_settings

    if not store.engine.is_file or store.path is None:
        return store
    return Store("sqlite", store.display, sqlite_settings(store.path, read_only=False), store.path)


def _run(
    report: StressReport,
    mode: Mode,
    env: dict[str, str],
    deadline: float,
    running: list[Job],
    phase: Callable[[str], None],
    *,
    cold: bool,
) -> None:
    started = time.monotonic()
    warm_up = None
    if not cold:
        phase("saving the warm-up record (one job, alone)")
        warm_up = mode.warm_up(deadline)
    if warm_up is not None:
        kind, message = warm_up
        report.notes.append(f"the warm-up record could not be saved ({message}); no job started")
        report.errors[kind] += report.expected
        report.examples.setdefault(kind, message)
        report.startup_seconds = time.monotonic() - started
        return

    phase(f"starting {report.jobs} jobs; each opens the store and waits")
    read_end, write_end = os.pipe()
    released, go_wall = False, 0.0
    try:
        for number in range(report.jobs):
            out, err = mode.cwd / f"job{number}.out", mode.cwd / f"job{number}.err"
            with out.open("wb") as out_fh, err.open("wb") as err_fh:
                process = subprocess.Popen(
                    mode.job_command(number),
                    stdin=read_end,
                    stdout=out_fh,
                    stderr=err_fh,
                    env=env,
                    cwd=mode.cwd,
                    start_new_session=True,  # ^C reaches us, and we stop the jobs
                )
            running.append(Job(number, process, out, err))
        os.close(read_end)
        read_end = -1
        while time.monotonic() < deadline:
            waiting = 0
            for job in running:
                if not job.ready:
                    job.ready = job.process.poll() is not None or job.out.stat().st_size > 0
                    waiting += not job.ready
            if not waiting:
                break
            time.sleep(POLL_SECONDS)
        report.ready_jobs = sum(
            job.ready and job.process.poll() is None and _said_ready(job) for job in running
        )
        report.startup_seconds = time.monotonic() - started
        if all(job.ready for job in running):
            phase(f"{report.ready_jobs} jobs ready; go")
            go, go_wall = time.monotonic(), time.time()
            os.write(write_end, GO * len(running))
            os.close(write_end)
            write_end = -1
            released = True
            while time.monotonic() < deadline and any(j.process.poll() is None for j in running):
                time.sleep(POLL_SECONDS)
            report.saving_seconds = time.monotonic() - go
        else:
            report.notes.append(
                f"only {report.ready_jobs} of {report.jobs} jobs had opened the store by the "
                "deadline, so none was started: give them a longer --timeout"
            )
    finally:
        for fd in (read_end, write_end):
            if fd >= 0:
                os.close(fd)  # a job that has not been told to go reads EOF and quits
    for job in running:
        if job.process.poll() is None:
            _kill(job.process)
            job.killed = True
        job.process.wait()
    report.timed_out_jobs = sum(job.killed for job in running)
    finished: list[float] = []
    for job in running:
        mode.collect(job, finished, released=released)
    if released and finished:  # from the start signal to the end of the last `smt run`
        report.saving_seconds = max(finished) - go_wall


def _said_ready(job: Job) -> bool:
    try:
        with job.out.open("rb") as fh:
            return json.loads(fh.readline() or b"{}").get("event") == "ready"
    except (OSError, ValueError):
        return False


def _kill(process: subprocess.Popen) -> None:
    """Kill a job and what it started (its session: an `smt run` and its program)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except OSError:
        process.kill()


def _stop(running: list[Job]) -> None:
    for job in running:
        if job.process.poll() is None:
            _kill(job.process)
            job.killed = True
    for job in running:
        with contextlib.suppress(subprocess.TimeoutExpired):
            job.process.wait(timeout=10)


def _max_ids(store: Store) -> dict[str, int]:
    """The highest id of every table the scratch records may add rows to, before the run."""
    from django.db import DatabaseError

    ids = {}
    try:
        with store.connection.cursor() as cursor:
            for table in SHARED_TABLES:
                cursor.execute(f"SELECT COALESCE(MAX(id), 0) FROM django_store_{table}")
                ids[table] = int(cursor.fetchone()[0])
    except DatabaseError as exc:
        raise store.read_error(exc) from exc
    return ids


def _check_write_privileges(store: Store, tables: list[str]) -> None:
    """Fail at once when the role may not write Sumatra's tables: Sumatra retries every
    failed add_record (5 s apart, 200 times), so the jobs would sit out the whole --timeout
    and report nothing but `timeout`."""
    from django.db import DatabaseError

    try:
        with store.connection.cursor() as cursor:
            missing = store.engine.missing_write_privileges(cursor, tables)
    except DatabaseError as exc:
        raise store.read_error(exc) from exc
    if missing:
        user, name, privilege = missing[0]
        raise SmtmigrateError(
            f"{store.display}: permission denied: role '{user}' lacks {privilege} on {name}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + "; the jobs save records as this role, through Sumatra"
        )


def _connection_notes(reader: Store, jobs: int) -> list[str]:
    """The server's connection limit against the jobs, each of which holds one."""
    from ..errors import StoreConnectionError
    from ..headroom import read_headroom

    try:
        headroom = read_headroom(reader)
    except StoreConnectionError:
        return []
    if headroom is None or not headroom.exceeded_by(jobs):
        return []
    return [
        f"the server takes {headroom.jobs} more connections (max_connections "
        f"{headroom.max_connections}, {headroom.in_use} in use) and every running job holds "
        f"one: {headroom.advice}"
    ]

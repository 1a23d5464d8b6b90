"""`smtmigrate stress`: many `smt run`s at once against one store, and what reached it.

Each job is a Python process of its own that does what `smt run` does to the record store,
through Sumatra's own code and nothing of ours:

  * it opens the store with `DjangoRecordStore(db_file)`, which configures Django itself and
    runs Sumatra's `migrate` (no DJANGO_SETTINGS_MODULE in its environment);
  * per record it makes the five saves of `smt run`: `Project.add_record` when the record is
    created (Sumatra's only retry: on a database error it waits 5 s and tries again, up to
    200 times), then `Project.save_record` at `pre_run`, `running`, `finished...` and at the
    end (no retry: a failure there ends an `smt run` with a traceback, leaving its record
    stale). The records are built from Sumatra's classes (`Record`, `PythonExecutable`,
    `GitRepository`, `SerialLaunchMode`, `FileSystemDataStore`, `SimpleParameterSet`, a
    Python `Dependency`, `PlatformInformation`, an output `DataKey`), all jobs sharing the
    executable, repository, launch mode, data store, dependency and platform as the jobs of
    one project do.

The jobs write into a scratch project (`smtmigrate-stress-<random>`) of the store. One job
saves a `warm-up` record first, alone, so that the project and the rows the jobs share exist
(a project that has run before; `cold=True` skips it, and the jobs race to create them as
the first jobs of a new project do). Then every job starts, opens the store, says it is
ready and waits; when all are ready they are released at once (one byte each on a shared
pipe). A job reports, per record, success or the error that ended the `smt run`, and the
errors Sumatra retried, as JSON lines. `timeout` bounds the whole run: jobs still running
at the deadline are killed and their records count as missing ("timeout").

Afterwards the records of the scratch project are counted through smtmigrate's own
connection (a record counts when its last save landed: duration set, output data linked),
and the scratch project is removed whatever happened, by one more process through Sumatra's
API (`labels` + `delete`), plus what Sumatra's delete leaves behind: the records' tag links,
the project row, and the rows made during the run (id above the pre-run maximum) that the
scratch records referenced or that carry the run's own values (its executable, data store,
parameter sets, status tags, duplicates from racing jobs, …) and that nothing references any
more. Rows that already existed stay, as do rows something else came to reference
meanwhile; AUTOINCREMENT counters and sequences advance. The cleanup is then verified.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlparse

from .errors import Refused, SmtmigrateError, UnsupportedStore

if TYPE_CHECKING:
    from .locations import Store

MIN_JOBS, MAX_JOBS = 1, 500
DEFAULT_JOBS = 100
DEFAULT_RECORDS_PER_JOB = 1
DEFAULT_TIMEOUT = 300.0
CLEANUP_TIMEOUT = 120.0  # the cleanup, after the run, has a bound of its own
SCRATCH_PREFIX = "smtmigrate-stress-"
WARM_UP_LABEL = "warm-up"
WORKER_MODULE = "smtmigrate.stress"
# A waiting job process (Python, Django, Sumatra, no connection): ~37 MB PSS measured.
WORKER_MEMORY = 40 * 2**20
POLL_SECONDS = 0.05
GO, ABORT = b"G", b"A"
# The saves of one `smt run`, in order (Project.new_record, Record.run, Project.launch).
STEPS = ("created", "pre_run", "running", "finished...", "finished")
# The status tags those saves give a record (`_initialized_`, `_pre_run_`, …).
STATUSES = ("initialized", "pre_run", "running", "finished...", "finished")

LOCKED = "database is locked"
TOO_LONG = "value too long"
DUPLICATE_KEY = "duplicate key"
DUPLICATE_ROWS = "duplicate rows"
DEADLOCK = "deadlock"
CONNECTION = "connection"
TIMEOUT = "timeout"
CRASHED = "job crashed"
VANISHED = "saved, then not found"
OTHER = "other"
KINDS = (
    LOCKED,
    TOO_LONG,
    DUPLICATE_KEY,
    DUPLICATE_ROWS,
    DEADLOCK,
    CONNECTION,
    TIMEOUT,
    CRASHED,
    VANISHED,
    OTHER,
)
_CONNECTION_WORDS = (
    "too many clients",
    "could not connect",
    "connection refused",
    "server closed the connection",
    "terminating connection",
    "connection to server",
    "connection already closed",
    "remaining connection slots",
    "the database system is",
)

# Tables whose rows the scratch records reference; the cleanup may remove those it created.
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
# connection OPTIONS of a postgresql:// URL that libpq also reads from the environment.
# Not connect_timeout: smtmigrate sets one for itself, `smt run` waits as long as libpq does.
LIBPQ_ENV = {
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL",
    "application_name": "PGAPPNAME",
    "options": "PGOPTIONS",
    "service": "PGSERVICE",
    "passfile": "PGPASSFILE",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "gssencmode": "PGGSSENCMODE",
    "channel_binding": "PGCHANNELBINDING",
    "krbsrvname": "PGKRBSRVNAME",
}
_URL_SAFE = re.compile(r"[A-Za-z0-9_.~-]+")


class StressInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run: the jobs were stopped and the cleanup ran; `report` says how
    it went, so the command can tell the user whether the store is as it was."""

    def __init__(self, report: StressReport) -> None:
        super().__init__()
        self.report = report


class NotEnoughMemory(SmtmigrateError):
    """The machine cannot hold that many job processes at once."""


def classify(error: BaseException | tuple[str, str]) -> str:
    """The kind of a save's failure, from the exception (or its class name and message)."""
    if isinstance(error, tuple):
        name, text = error
    else:
        name, text = type(error).__name__, str(error)
    text = text.lower()
    if "database is locked" in text or "database table is locked" in text:
        return LOCKED
    if "value too long" in text:
        return TOO_LONG
    if "duplicate key" in text or "unique constraint" in text:
        return DUPLICATE_KEY
    if name == "MultipleObjectsReturned":
        return DUPLICATE_ROWS
    if "deadlock" in text:
        return DEADLOCK
    if name in ("OperationalError", "InterfaceError") and any(
        word in text for word in _CONNECTION_WORDS
    ):
        return CONNECTION
    return OTHER


def first_line(error: BaseException) -> str:
    text = " ".join(str(error).split("\n", 1)[0].split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# -- the report ---------------------------------------------------------------------------


@dataclass
class CleanupResult:
    ok: bool = False
    deleted: dict[str, int] = field(default_factory=dict)  # table → rows removed
    left_records: int | None = None  # scratch records still in the store (verified)
    left_project: bool | None = None
    seconds: float = 0.0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "deleted": self.deleted,
            "left_records": self.left_records,
            "left_project": self.left_project,
            "seconds": round(self.seconds, 3),
            "error": self.error,
        }


@dataclass
class StressReport:
    """What the jobs tried, what they saw, and what the store holds afterwards."""

    location: str
    backend: str  # "sqlite" or "postgresql"
    project: str  # the scratch project
    jobs: int
    records_per_job: int
    timeout: float
    saved: int = 0  # records whose five saves every job saw succeed
    found: int = 0  # records in the store whose last save landed
    incomplete: int = 0  # records in the store whose last save did not land
    # kind of the error that ended an `smt run` (its record is then missing or stale, or,
    # when only the very last statement failed, complete) → how many runs it ended
    errors: Counter = field(default_factory=Counter)
    retries: Counter = field(default_factory=Counter)  # kind → failed saves Sumatra retried
    failed_steps: Counter = field(default_factory=Counter)  # step → runs that failed there
    examples: dict[str, str] = field(default_factory=dict)  # kind → first message seen
    ready_jobs: int = 0
    timed_out_jobs: int = 0
    latencies: list[float] = field(default_factory=list, repr=False)
    startup_seconds: float = 0.0  # warm-up and every job opening the store
    saving_seconds: float = 0.0  # from the start signal to the last job's end
    total_seconds: float = 0.0
    cleanup: CleanupResult = field(default_factory=CleanupResult)
    notes: list[str] = field(default_factory=list)

    @property
    def expected(self) -> int:
        return self.jobs * self.records_per_job

    @property
    def missing(self) -> int:
        return self.expected - self.found

    @property
    def records_per_second(self) -> float:
        return self.found / self.saving_seconds if self.saving_seconds > 0 else 0.0

    @property
    def all_saved(self) -> bool:
        return self.found == self.expected and sum(self.errors.values()) == 0

    @property
    def exit_code(self) -> int:
        return 0 if self.all_saved and self.cleanup.ok else 1

    def latency(self) -> dict[str, float | None]:
        values = sorted(self.latencies)

        def pick(q: float) -> float | None:
            if not values:
                return None
            return round(values[min(len(values) - 1, math.ceil(q * len(values)) - 1)], 3)

        return {"p50": pick(0.5), "p95": pick(0.95), "max": pick(1.0)}

    @property
    def verdict(self) -> str:
        if self.all_saved:
            text = f"OK: all {self.expected:,} records saved by {self.jobs} concurrent jobs"
            if self.retries:
                text += f" ({sum(self.retries.values()):,} saves retried by Sumatra)"
            text += "."
        else:
            failed = ", ".join(f"{n:,} {kind}" for kind, n in _ordered(self.errors))
            text = (
                f"FAIL: {self.found:,} of {self.expected:,} records saved"
                + (f"; `smt run`s failed: {failed}" if failed else "")
                + "."
            )
        if not self.cleanup.ok:
            text += f" Cleanup of {self.project} FAILED: {self.cleanup.error or 'records left'}."
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "location": self.location,
            "backend": self.backend,
            "project": self.project,
            "jobs": self.jobs,
            "records_per_job": self.records_per_job,
            "timeout": self.timeout,
            "expected": self.expected,
            "saved": self.saved,
            "found": self.found,
            "incomplete": self.incomplete,
            "missing": self.missing,
            "errors": dict(_ordered(self.errors)),
            "retries": dict(_ordered(self.retries)),
            "failed_steps": {s: self.failed_steps[s] for s in STEPS if self.failed_steps[s]},
            "examples": self.examples,
            "ready_jobs": self.ready_jobs,
            "timed_out_jobs": self.timed_out_jobs,
            "seconds": {
                "startup": round(self.startup_seconds, 3),
                "saving": round(self.saving_seconds, 3),
                "cleanup": round(self.cleanup.seconds, 3),
                "total": round(self.total_seconds, 3),
            },
            "records_per_second": round(self.records_per_second, 2),
            "latency": self.latency(),
            "cleanup": self.cleanup.to_dict(),
            "notes": self.notes,
            "verdict": self.verdict,
            "exit_code": self.exit_code,
        }


def _ordered(counts: Counter) -> list[tuple[str, int]]:
    return sorted(
        ((k, n) for k, n in counts.items() if n),
        key=lambda item: KINDS.index(item[0]) if item[0] in KINDS else len(KINDS),
    )


# -- reaching the store from the jobs -----------------------------------------------------


def worker_location(store: Store) -> tuple[str, dict[str, str]]:
    """The `db_file` a job gives Sumatra, and the environment that goes with it.

    A password never goes on a command line (`ps` shows it to every user): it travels in
    PGPASSWORD, and whatever Sumatra's URL parser cannot carry (socket directories,
    percent-encoded user names, connection options) in libpq's other variables.
    """
    env: dict[str, str] = {}
    if store.kind == "sqlite":
        assert store.path is not None
        path = str(store.path)
        if urlparse(path).path != path:
            raise UnsupportedStore(
                f"{path}: Sumatra reads its db_file as a URL and cannot open a path "
                "containing '?', '#' or ';'"
            )
        return path, env
    settings = store.settings
    name = str(settings.get("NAME") or "")
    user = str(settings.get("USER") or "")
    host = str(settings.get("HOST") or "")
    port = str(settings.get("PORT") or "")
    if not _URL_SAFE.fullmatch(name):
        raise UnsupportedStore(
            f"{store.display}: Sumatra cannot open a database named {name!r} "
            "(its URL parser takes letters, digits and ._~- only)"
        )
    netloc = ""
    if host and not host.startswith("/") and "," not in host:
        netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
    else:
        if host:
            env["PGHOST"] = host
        if port:
            env["PGPORT"] = port
    if user and netloc and _URL_SAFE.fullmatch(user):
        netloc = f"{user}@{netloc}"
    elif user:
        env["PGUSER"] = user
    if store.password:
        env["PGPASSWORD"] = store.password
    for option, value in (settings.get("OPTIONS") or {}).items():
        if option in LIBPQ_ENV:
            env[LIBPQ_ENV[option]] = str(value)
    return f"postgresql://{netloc}/{name}", env


def _worker_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(extra)
    package_root = str(Path(__file__).resolve().parent.parent)
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


@dataclass
class _Job:
    number: int
    process: subprocess.Popen
    out: Path
    err: Path
    ready: bool = False
    killed: bool = False


def run_stress(
    store: Store,
    jobs: int = DEFAULT_JOBS,
    records_per_job: int = DEFAULT_RECORDS_PER_JOB,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    cold: bool = False,
    on_phase: Callable[[str], None] | None = None,
) -> StressReport:
    """Run `jobs` concurrent job processes, count what reached the store, clean up.

    `cold` skips the warm-up record: the jobs then create the scratch project and the rows
    they share together, as the first jobs of a new project (or of a new Python, machine or
    repository) do.
    """

    if not MIN_JOBS <= jobs <= MAX_JOBS:
        raise ValueError(f"jobs must be between {MIN_JOBS} and {MAX_JOBS}")
    if records_per_job < 1 or not timeout > 0:
        raise ValueError("records_per_job must be >= 1 and timeout > 0")
    phase = on_phase or (lambda text: None)
    started = time.monotonic()
    reader = _reader(store)
    try:
        return _stress(store, reader, jobs, records_per_job, timeout, cold, phase, started)
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
    phase: Callable[[str], None],
    started: float,
) -> StressReport:
    from .schema import LAYOUT_08, inspect_store

    inspection = inspect_store(reader)
    if inspection.layout != LAYOUT_08:
        raise Refused(
            f"{store.display} is a {inspection.layout} store, which Sumatra 0.8.1 cannot "
            "open; copy it into a new store first (smtmigrate copy)"
        )
    if store.kind == "postgresql":
        _check_write_privileges(reader, sorted(inspection.tables))
    uri, location_env = worker_location(store)
    memory = available_memory()
    if memory is not None and (jobs + 2) * WORKER_MEMORY > memory:
        raise NotEnoughMemory(
            f"{jobs} job processes need about {(jobs + 2) * WORKER_MEMORY / 2**30:.1f} GiB "
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
    )
    if store.kind == "postgresql":
        report.notes += _connection_notes(reader.connection, jobs)
    before = _max_ids(reader)
    reader.connection.close()  # one connection fewer while the jobs run

    scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX))
    running: list[_Job] = []
    interrupted = False
    try:
        _run(report, uri, env, scratch, started + timeout, running, phase, cold=cold)
        phase("counting the records in the store")
        _count(reader, report)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        _stop(running)
        phase(f"removing the scratch project {report.project}")
        with _sigint_deferred():
            report.cleanup = _cleanup(reader, uri, env, scratch, report.project, before)
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
    from .locations import Store, sqlite_settings

    if store.kind != "sqlite" or store.path is None:
        return store
    return Store("sqlite", store.display, sqlite_settings(store.path, read_only=False), store.path)


def _worker_command(action: str, uri: str, project: str, root: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        WORKER_MODULE,
        action,
        "--uri",
        uri,
        "--project",
        project,
        "--root",
        str(root),
        *extra,
    ]


def _run(
    report: StressReport,
    uri: str,
    env: dict[str, str],
    scratch: Path,
    deadline: float,
    running: list[_Job],
    phase: Callable[[str], None],
    *,
    cold: bool,
) -> None:
    started = time.monotonic()
    warm_up = None
    if not cold:
        phase("saving the warm-up record (one job, alone)")
        warm_up = _warm_up(uri, env, scratch, report.project, deadline)
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
            out, err = scratch / f"job{number}.out", scratch / f"job{number}.err"
            with out.open("wb") as out_fh, err.open("wb") as err_fh:
                command = _worker_command(
                    "job",
                    uri,
                    report.project,
                    scratch,
                    "--job",
                    str(number),
                    "--records",
                    str(report.records_per_job),
                )
                process = subprocess.Popen(
                    command,
                    stdin=read_end,
                    stdout=out_fh,
                    stderr=err_fh,
                    env=env,
                    cwd=scratch,
                    start_new_session=True,  # ^C reaches us, and we stop the jobs
                )
            running.append(_Job(number, process, out, err))
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
            job.process.kill()
            job.killed = True
        job.process.wait()
    report.timed_out_jobs = sum(job.killed for job in running)
    finished: list[float] = []
    for job in running:
        _collect(report, job, finished, released=released)
    if released and finished:  # from the start signal to the end of the last `smt run`
        report.saving_seconds = max(finished) - go_wall


def _said_ready(job: _Job) -> bool:
    try:
        with job.out.open("rb") as fh:
            return json.loads(fh.readline() or b"{}").get("event") == "ready"
    except (OSError, ValueError):
        return False


def _warm_up(
    uri: str, env: dict[str, str], scratch: Path, project: str, deadline: float
) -> tuple[str, str] | None:
    """Save the warm-up record alone; None when it was saved, else (kind, message)."""
    command = _worker_command("warm-up", uri, project, scratch)
    try:
        result = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env,
            cwd=scratch,
            timeout=max(deadline - time.monotonic(), 0.01),
        )
    except subprocess.TimeoutExpired:
        return TIMEOUT, "not saved within the timeout"
    events = _events(result.stdout)
    for event in events:
        if event.get("event") in ("record", "error"):
            if event.get("ok"):
                return None
            kind, message = event.get("error") or (event.get("kind"), event.get("message"))
            return kind or OTHER, message or ""
    return CRASHED, _last_line(result.stderr) or f"exit status {result.returncode}"


def _events(text: str) -> list[dict[str, Any]]:
    events = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _collect(report: StressReport, job: _Job, finished: list[float], *, released: bool) -> None:
    """Read one job's JSON lines into the report; `finished` gets when each record ended."""
    try:
        events = _events(job.out.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        events = []
    seen = 0
    job_error: tuple[str, str] | None = None
    for event in events:
        kind = event.get("event")
        if kind == "record":
            seen += 1
            for retried_kind, count in (event.get("retries") or {}).items():
                report.retries[retried_kind] += count
            for retried_kind, message in (event.get("retry_examples") or {}).items():
                report.examples.setdefault(retried_kind, message)
            if event.get("finished_at"):
                finished.append(float(event["finished_at"]))
            if event.get("ok"):
                report.saved += 1
                report.latencies.append(float(event.get("seconds") or 0.0))
            else:
                error_kind, message = event.get("error") or (OTHER, "")
                report.errors[error_kind] += 1
                report.failed_steps[event.get("step") or STEPS[0]] += 1
                report.examples.setdefault(error_kind, message)
        elif kind == "error":
            job_error = (event.get("kind") or OTHER, event.get("message") or "")
    unaccounted = report.records_per_job - seen
    if unaccounted > 0:
        if job_error:
            kind, message = job_error
        elif job.killed or not released:
            kind, message = TIMEOUT, f"not done at the deadline ({report.timeout:g} s)"
        else:
            stderr = ""
            with contextlib.suppress(OSError):
                stderr = _last_line(job.err.read_text(encoding="utf-8", errors="replace"))
            kind = CRASHED
            message = stderr or f"exit status {job.process.returncode}"
        report.errors[kind] += unaccounted
        report.examples.setdefault(kind, message)


def _stop(running: list[_Job]) -> None:
    for job in running:
        if job.process.poll() is None:
            job.process.kill()
            job.killed = True
    for job in running:
        with contextlib.suppress(subprocess.TimeoutExpired):
            job.process.wait(timeout=10)


def _count(store: Store, report: StressReport) -> None:
    """Count the scratch project's records through our own connection, not the jobs'."""
    from django.db import DatabaseError

    try:
        with store.connection.cursor() as cursor:
            # complete: the last save set the duration and linked the output data
            cursor.execute(
                "SELECT r.label, r.duration IS NOT NULL AND EXISTS (SELECT 1 FROM "
                "django_store_datakey k WHERE k.output_from_record_id = r.db_id) "
                "FROM django_store_record r WHERE r.project_id = %s",
                [report.project],
            )
            rows = cursor.fetchall()
    except DatabaseError as exc:
        raise store.read_error(exc) from exc
    finally:
        store.connection.close()
    records = {label: bool(complete) for label, complete in rows if label != WARM_UP_LABEL}
    report.found = sum(records.values())
    report.incomplete = len(records) - report.found
    vanished = report.saved - report.found
    if vanished > 0:  # the jobs saw their saves succeed, the store does not hold them
        report.errors[VANISHED] += vanished
    from .locations import redact_text

    report.examples = {
        kind: redact_text(message, store.password) for kind, message in report.examples.items()
    }
    if report.errors[DUPLICATE_ROWS]:
        report.notes.append(
            "duplicate rows: Sumatra looks up a record's executable, repository, launch mode, "
            "data store, dependencies and platform with get_or_create on tables without a "
            "unique constraint; jobs that start together each create the same row, and from "
            "then on every save that needs it fails (MultipleObjectsReturned) until the "
            "duplicates are removed. Run one job alone first when something they share is new."
        )


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
            cursor.execute(
                "SELECT current_user, t.name, p.privilege "
                "FROM unnest(%s::text[]) AS t(name), "
                "unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']) AS p(privilege) "
                "WHERE NOT has_table_privilege(quote_ident(t.name), p.privilege) "
                "UNION ALL "  # a serial (not identity) id needs its sequence too
                "SELECT current_user, s.seq, 'USAGE' FROM (SELECT pg_get_serial_sequence("
                "quote_ident(t.name), a.attname) AS seq FROM unnest(%s::text[]) AS t(name) "
                "JOIN pg_attribute a ON a.attrelid = quote_ident(t.name)::regclass "
                "AND a.attnum > 0 AND NOT a.attisdropped AND a.attidentity = '') AS s "
                "WHERE s.seq IS NOT NULL AND NOT has_sequence_privilege(s.seq, 'USAGE')",
                [tables, tables],
            )
            missing = cursor.fetchall()
    except DatabaseError as exc:
        raise store.read_error(exc) from exc
    if missing:
        user, name, privilege = missing[0]
        raise SmtmigrateError(
            f"{store.display}: permission denied: role '{user}' lacks {privilege} on {name}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + "; the jobs save records as this role, through Sumatra"
        )


def _connection_notes(connection, jobs: int) -> list[str]:
    from django.db import DatabaseError

    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT current_setting('max_connections')::int, "
                "current_setting('superuser_reserved_connections')::int, "
                "(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'), "
                "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user)"
            )
            limit, reserved, used, superuser = cursor.fetchone()
    except DatabaseError:
        return []
    used -= 1  # our own connection, closed while the jobs run
    free = limit - used - (0 if superuser else reserved)
    if jobs <= free:
        return []
    return [
        f"the server takes {free} more connections (max_connections {limit}, {used} in use) "
        f"and every running job holds one: a real `smt run` keeps its connection for the "
        f"whole simulation, so {jobs} concurrent jobs need max_connections raised or a "
        "connection pooler (PgBouncer) in front"
    ]


def _cleanup(
    store: Store,
    uri: str,
    env: dict[str, str],
    scratch: Path,
    project: str,
    before: dict[str, int],
) -> CleanupResult:
    """Remove the scratch project through Sumatra, then check through our connection."""
    from django.db import DatabaseError

    from .locations import redact_text

    result = CleanupResult()
    started = time.monotonic()
    command = _worker_command(
        "cleanup",
        uri,
        project,
        scratch,
        "--before",
        json.dumps(before),
        "--timeout",
        str(CLEANUP_TIMEOUT),
    )
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env,
            cwd=scratch,
            timeout=CLEANUP_TIMEOUT + 30,
            start_new_session=True,  # a Ctrl-C on the terminal must not kill it half-way
        )
        events = [e for e in _events(done.stdout) if e.get("event") == "cleanup"]
        if events and events[-1].get("ok"):
            result.deleted = events[-1].get("deleted") or {}
        elif events:
            result.error = events[-1].get("message") or "cleanup failed"
        else:
            result.error = _last_line(done.stderr) or f"exit status {done.returncode}"
    except subprocess.TimeoutExpired:
        result.error = f"the cleanup did not finish within {CLEANUP_TIMEOUT:g} s"
    try:
        with store.connection.cursor() as cursor:
            cursor.execute(
                "SELECT COUNT(*) FROM django_store_record WHERE project_id = %s", [project]
            )
            result.left_records = int(cursor.fetchone()[0])
            cursor.execute("SELECT COUNT(*) FROM django_store_project WHERE id = %s", [project])
            result.left_project = bool(cursor.fetchone()[0])
    except (DatabaseError, SmtmigrateError) as exc:
        result.error = result.error or store.describe_error(exc)
    result.ok = result.error is None and result.left_records == 0 and not result.left_project
    if result.error is None and not result.ok:
        result.error = f"{result.left_records} record(s) left in {project}"
    if result.error:
        result.error = redact_text(result.error, store.password)
    result.seconds = time.monotonic() - started
    return result


# -- the job processes (Sumatra's API only; no smtmigrate settings) -----------------------


def _emit(out: IO[str], **event: Any) -> None:
    out.write(json.dumps(event) + "\n")
    out.flush()


class _WatchedStore:
    """Sumatra's record store, noting every failed save or read that passes through it."""

    def __init__(self, store) -> None:
        self._store = store
        self.failures: list[BaseException] = []

    def save(self, project_name, record):
        try:
            return self._store.save(project_name, record)
        except Exception as exc:
            self.failures.append(exc)
            raise

    def get(self, project_name, label):
        try:
            return self._store.get(project_name, label)
        except Exception as exc:
            self.failures.append(exc)
            raise

    def __getattr__(self, name):
        return getattr(self._store, name)


def _shared_objects(root: Path) -> dict[str, Any]:
    """The Sumatra objects every job of a run shares, keyed by the table that stores them."""
    import platform

    import sumatra
    from sumatra import launch, programs
    from sumatra.datastore import FileSystemDataStore
    from sumatra.dependency_finder import python as python_dependencies
    from sumatra.versioncontrol._git import GitRepository

    bits, linkage = platform.architecture()
    return {
        "executable": programs.PythonExecutable(sys.executable, version=platform.python_version()),
        "repository": GitRepository(
            str(root / "repository"), upstream="https://example.invalid/smtmigrate-stress.git"
        ),
        "launchmode": launch.SerialLaunchMode(working_directory=str(root)),
        "datastore": FileSystemDataStore(str(root / "Data")),
        "dependency": python_dependencies.Dependency(
            "sumatra", os.path.dirname(sumatra.__file__), sumatra.__version__
        ),
        "platforminformation": launch.PlatformInformation(
            architecture_bits=bits,
            architecture_linkage=linkage,
            machine=platform.machine(),
            network_name=platform.node(),
            ip_addr="127.0.0.1",  # Record.register looks it up; no network probe here
            processor=platform.processor(),
            release=platform.release(),
            system_name=platform.system(),
            version=platform.version(),
        ),
    }


def _sumatra_lookup(model, obj) -> dict[str, Any]:
    """The values Sumatra looks a shared row up by (its get_or_create_from_sumatra_object)."""
    excluded = {"id", "record", "input_to_records", "output_from_record", "output_from_record_id"}
    values = {}
    for name in {f.name for f in model._meta.get_fields()} - excluded:
        try:
            values[name] = getattr(obj, name)
        except AttributeError:
            if name == "parameters":
                values[name] = str(obj.__getstate__())
            elif name == "type":
                values[name] = obj.__class__.__name__
            elif name == "content":
                values[name] = str(obj)
            else:
                raise
    return values


class _SmtRun:
    """What every job of the scratch project shares, and the saves of one `smt run`."""

    def __init__(self, uri: str, project: str, root: Path) -> None:
        from sumatra.projects import Project
        from sumatra.recordstore.django_store import DjangoRecordStore

        self.store = DjangoRecordStore(uri)
        self.store._get_models()  # configures Django and runs Sumatra's migrate, as smt does
        self.watched = _WatchedStore(self.store)
        self.project = Project.__new__(Project)  # a loaded project, without its .smt files
        self.project.name = project
        self.project.record_store = self.watched
        self.project._most_recent = None
        shared = _shared_objects(root)
        self.executable = shared["executable"]
        self.repository = shared["repository"]
        self.version = hashlib.sha1(project.encode()).hexdigest()
        self.launch_mode = shared["launchmode"]
        self.datastore = shared["datastore"]
        self.dependency = shared["dependency"]
        self.platform = shared["platforminformation"]

    def record(self, label: str, job: int, index: int):
        from sumatra.parameters import SimpleParameterSet
        from sumatra.records import Record

        parameters = SimpleParameterSet(
            f'project = "{self.project.name}"\njob = {job}\nindex = {index}\n'
            f"seed = {job * 1000 + index}"
        )
        return Record(
            self.executable,
            self.repository,
            "stress_job.py",
            self.version,
            self.launch_mode,
            self.datastore,
            parameters,
            [],
            "<parameters>",
            label=label,
            reason=f"smtmigrate stress test ({self.project.name})",
            user="smtmigrate stress <stress@example.invalid>",
        )

    def run(self, record, steps: list[str]) -> None:
        """The saves `smt run` makes for one record; `steps` gets each step as it starts."""
        from datetime import datetime, timezone

        from sumatra.core import STATUS_FORMAT
        from sumatra.datastore import DataKey

        started = time.time()
        steps.append(STEPS[0])
        self.project.add_record(record)  # Project.new_record: retried by Sumatra
        record.dependencies = [self.dependency]  # Record.register
        record.platforms = [self.platform]
        steps.append(STEPS[1])
        record.add_tag(STATUS_FORMAT % "pre_run")
        self.project.save_record(record)
        steps.append(STEPS[2])
        record.add_tag(STATUS_FORMAT % "running")
        record.stdout_stderr = "Not yet captured."
        self.project.save_record(record)
        steps.append(STEPS[3])
        record.add_tag(STATUS_FORMAT % "finished...")
        self.project.save_record(record)
        steps.append(STEPS[4])
        record.add_tag(STATUS_FORMAT % "finished")
        record.duration = time.time() - started
        record.stdout_stderr = "No output."
        record.output_data = [
            DataKey(
                f"{self.project.name}/{record.label}.dat",
                hashlib.sha1(record.label.encode()).hexdigest(),
                datetime.now(timezone.utc),
                mimetype="application/octet-stream",
                size=4096,
                encoding=None,
            )
        ]
        self.project.save_record(record)  # Project.launch, at completion

    def attempt(self, out: IO[str], label: str, job: int, index: int) -> None:
        """One `smt run`, reported as one JSON line."""
        from django.db import DatabaseError as DjangoDatabaseError

        RETRIED = (DjangoDatabaseError, sqlite3.OperationalError)  # what add_record catches
        start = time.perf_counter()
        self.watched.failures.clear()
        steps: list[str] = []
        error: tuple[str, str] | None = None
        final: BaseException | None = None
        try:
            self.run(self.record(label, job, index), steps)
        except Exception as exc:
            final = exc
            error = (classify(exc), first_line(exc))
        retries: Counter = Counter()
        examples: dict[str, str] = {}
        for failure in self.watched.failures:
            if failure is final or not isinstance(failure, RETRIED):
                continue  # Sumatra retries database errors only
            kind = classify(failure)
            retries[kind] += 1
            examples.setdefault(kind, first_line(failure))
        _emit(
            out,
            event="record",
            label=label,
            ok=error is None,
            step=steps[-1] if error and steps else None,
            error=error,
            retries=dict(retries),
            retry_examples=examples,
            seconds=round(time.perf_counter() - start, 4),
            finished_at=time.time(),
        )


def _job_label(job: int, index: int) -> str:
    return f"job{job:03d}-{index:04d}"


def _worker(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m smtmigrate.stress")
    parser.add_argument("action", choices=("warm-up", "job", "cleanup"))
    parser.add_argument("--uri", required=True)
    parser.add_argument("--project", required=True)
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--job", type=int, default=0)
    parser.add_argument("--records", type=int, default=1)
    parser.add_argument("--before", default="{}")
    parser.add_argument("--timeout", type=float, default=CLEANUP_TIMEOUT)
    args = parser.parse_args(argv)
    # Our JSON lines go to the real stdout; Sumatra's own prints ("Failed to save record…")
    # go to stderr with the rest of what a job says.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    sys.stdout = sys.stderr
    if args.action == "cleanup":
        return _cleanup_worker(out, args)
    try:
        smt = _SmtRun(args.uri, args.project, args.root)
    except Exception as exc:
        _emit(out, event="error", kind=classify(exc), message=first_line(exc))
        return 1
    if args.action == "warm-up":
        smt.attempt(out, WARM_UP_LABEL, -1, 0)
        return 0
    from django.db import connections

    connections.close_all()  # reconnect on the first save, as an `smt run` connects
    _emit(out, event="ready", pid=os.getpid())
    if os.read(sys.stdin.fileno(), 1) != GO:  # one byte: the pipe is shared by all jobs
        return 3  # the run was called off
    for index in range(args.records):
        smt.attempt(out, _job_label(args.job, index), args.job, index)
    _emit(out, event="done")
    return 0


def _cleanup_worker(out: IO[str], args: argparse.Namespace) -> int:
    """Remove the scratch project: Sumatra's delete, then what it leaves behind."""
    deadline = time.monotonic() + args.timeout
    before: dict[str, int] = json.loads(args.before)
    while True:
        try:
            deleted = _remove_project(args.uri, args.project, args.root, before)
        except Exception as exc:
            if classify(exc) in (LOCKED, DEADLOCK, CONNECTION) and time.monotonic() < deadline:
                time.sleep(1.0)
                continue
            _emit(out, event="cleanup", ok=False, message=first_line(exc))
            return 1
        _emit(out, event="cleanup", ok=True, deleted=deleted)
        return 0


def _remove_project(uri: str, project: str, root: Path, before: dict[str, int]) -> dict[str, int]:
    from sumatra.recordstore.django_store import DjangoRecordStore

    store = DjangoRecordStore(uri)
    models = store._get_models()  # Django is configured from here on
    from django.contrib.contenttypes.models import ContentType
    from django.db import connections, transaction
    from django.db.models import Q
    from sumatra.core import STATUS_FORMAT
    from sumatra.recordstore.django_store.tagging import Tag, TaggedItem

    connections.close_all()  # a fresh connection for every attempt
    Record = models.Record
    deleted: dict[str, int] = {}
    with transaction.atomic():
        records = Record.objects.filter(project_id=project)
        ids = list(records.values_list("db_id", flat=True))
        referenced: dict[str, set[int]] = {
            "executable": set(records.values_list("executable_id", flat=True)),
            "repository": set(records.values_list("repository_id", flat=True)),
            "launchmode": set(records.values_list("launch_mode_id", flat=True)),
            "datastore": set(records.values_list("datastore_id", flat=True))
            | set(records.values_list("input_datastore_id", flat=True)),
            "parameterset": set(records.values_list("parameters_id", flat=True)),
            "dependency": set(
                Record.dependencies.through.objects.filter(record_id__in=ids).values_list(
                    "dependency_id", flat=True
                )
            ),
            "platforminformation": set(
                Record.platforms.through.objects.filter(record_id__in=ids).values_list(
                    "platforminformation_id", flat=True
                )
            ),
            "datakey": set(
                Record.input_data.through.objects.filter(record_id__in=ids).values_list(
                    "datakey_id", flat=True
                )
            ),
        }
        content_type = ContentType.objects.get_for_model(Record)
        items = TaggedItem.objects.filter(content_type=content_type, object_id__in=ids)
        referenced["tag"] = set(items.values_list("tag_id", flat=True))
        labels = store.labels(project)
        for label in labels:
            store.delete(project, label)  # Sumatra's own delete
        deleted["record"] = len(labels)
        deleted["taggeditem"] = items.delete()[0]  # Sumatra's delete leaves the links
        unreferenced = {
            "executable": Q(record__isnull=True),
            "repository": Q(record__isnull=True),
            "launchmode": Q(record__isnull=True),
            "datastore": Q(record__isnull=True, input_to_records__isnull=True),
            "parameterset": Q(record__isnull=True),
            "dependency": Q(record__isnull=True),
            "platforminformation": Q(record__isnull=True),
            "datakey": Q(input_to_records__isnull=True, output_from_record__isnull=True),
            "tag": Q(items__isnull=True),
        }
        model_of = {
            "executable": models.Executable,
            "repository": models.Repository,
            "launchmode": models.LaunchMode,
            "datastore": models.Datastore,
            "parameterset": models.ParameterSet,
            "dependency": models.Dependency,
            "platforminformation": models.PlatformInformation,
            "datakey": models.DataKey,
            "tag": Tag,
        }
        # rows this run made that no record of it references (any more): duplicates from
        # jobs racing to create a shared row, a job killed between two saves, the warm-up's
        # status tags. Found by their values.
        shared = _shared_objects(root)
        ours = {table: Q(**_sumatra_lookup(model_of[table], obj)) for table, obj in shared.items()}
        ours |= {
            "parameterset": Q(content__contains=f'project = "{project}"'),
            "datakey": Q(path__startswith=f"{project}/"),
            "tag": Q(name__in=[STATUS_FORMAT % status for status in STATUSES]),
        }
        for table, model in model_of.items():
            candidates = set(referenced[table])
            if table in ours:
                candidates.update(
                    model.objects.filter(ours[table], pk__gt=before[table]).values_list(
                        "pk", flat=True
                    )
                )
            candidates = {i for i in candidates if i is not None and i > before[table]}
            if not candidates:
                continue
            doomed = list(
                model.objects.filter(pk__in=candidates)
                .filter(unreferenced[table])
                .values_list("pk", flat=True)
                .distinct()
            )
            if doomed:
                model.objects.filter(pk__in=doomed).delete()
                deleted[table] = len(doomed)
        deleted["project"] = models.Project.objects.filter(id=project).delete()[0]
    return {table: n for table, n in deleted.items() if n}


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))

"""The report of a stress run, the kinds of failure it counts, and the JSON-lines protocol
the job, warm-up and cleanup processes speak (imported by them: standard library only)."""

from __future__ import annotations

import json
import math
import subprocess
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

MIN_JOBS, MAX_JOBS = 1, 500
DEFAULT_JOBS = 100
DEFAULT_RECORDS_PER_JOB = 1
DEFAULT_TIMEOUT = 300.0
CLEANUP_TIMEOUT = 120.0  # the cleanup, after the run, has a bound of its own
SCRATCH_PREFIX = "smtmigrate-stress-"
WARM_UP_LABEL = "warm-up"
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
LABEL_COLLISION = "label collision"  # two runs, one label: their records clash
OTHER = "other"
KINDS = (
    LABEL_COLLISION,
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


class StressInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run: the jobs were stopped and the cleanup ran; `report` says how
    it went, so the command can tell the user whether the store is as it was."""

    def __init__(self, report: StressReport) -> None:
        super().__init__()
        self.report = report


# Failures of the record store itself (the others are Sumatra's or the run's).
STORE_KINDS = (LOCKED, TOO_LONG, DUPLICATE_KEY, DUPLICATE_ROWS, DEADLOCK, CONNECTION)
# What Sumatra's add_record prints before it retries a save (the error itself is not shown).
RETRY_LINE = "Failed to save record due to database error"
RETRIED = "database error, retried"


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
    if name.endswith("Record.MultipleObjectsReturned") or (
        name == "FileNotFoundError" and ".param'" in text
    ):
        return LABEL_COLLISION  # a second record with its label; `<label>.param` deleted
    if name.endswith("MultipleObjectsReturned"):
        return DUPLICATE_ROWS
    if "deadlock" in text:
        return DEADLOCK
    if name in ("OperationalError", "InterfaceError") and any(
        word in text for word in _CONNECTION_WORDS
    ):
        return CONNECTION
    return OTHER


def duplicate_table(name: str) -> str | None:
    """The table of a `<Model>.MultipleObjectsReturned` (Sumatra's django_store models)."""
    parts = name.split(".")
    if len(parts) < 2 or parts[-1] != "MultipleObjectsReturned":
        return None
    return f"django_store_{parts[-2].lower()}"


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
        return {**asdict(self), "seconds": round(self.seconds, 3)}


@dataclass
class StressReport:
    """What the jobs tried, what they saw, and what the store holds afterwards."""

    location: str
    backend: str  # "sqlite", "postgresql" or "mariadb"
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
    # mode "smt" (real `smt run` processes) only:
    mode: str = "api"
    crashed: Counter = field(default_factory=Counter)  # Sumatra's last error line → runs
    duplicate_labels: dict[str, int] = field(default_factory=dict)  # label → records
    duplicate_tables: Counter = field(default_factory=Counter)  # table → runs it ended
    label_generator: dict[str, Any] | None = None  # project.LabelGenerator.to_dict()

    @property
    def label_cause(self) -> str | None:
        """The project's label generator, when it lets concurrent runs share labels."""
        generator = self.label_generator
        if self.jobs < 2 or not generator or not generator.get("collides"):
            return None
        return f"{generator['problem']}; fix: {generator['fix']}"

    @property
    def store_errors(self) -> Counter:
        """Failures of the record store: runs they ended, and saves Sumatra retried."""
        errors = Counter({k: n for k, n in self.errors.items() if k in STORE_KINDS and n})
        return errors + Counter({k: n for k, n in self.retries.items() if n})

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
        return (
            self.found == self.expected
            and sum(self.errors.values()) == 0
            and not self.duplicate_labels
            and self.label_cause is None
        )

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
            "errors": dict(ordered_counts(self.errors)),
            "retries": dict(ordered_counts(self.retries)),
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
            "exit_code": self.exit_code,
        } | (
            {
                "mode": self.mode,
                "crashed": dict(self.crashed.most_common()),
                "duplicate_labels": self.duplicate_labels,
                "duplicate_tables": dict(self.duplicate_tables.most_common()),
                "store_errors": dict(ordered_counts(self.store_errors)),
                "label_generator": self.label_generator,
            }
            if self.mode == "smt"
            else {}
        )


def ordered_counts(counts: Counter) -> list[tuple[str, int]]:
    return sorted(
        ((k, n) for k, n in counts.items() if n),
        key=lambda item: KINDS.index(item[0]) if item[0] in KINDS else len(KINDS),
    )


# -- the JSON lines the processes write ---------------------------------------------------


def emit(out: IO[str], **event: Any) -> None:
    out.write(json.dumps(event) + "\n")
    out.flush()


def run_child(
    command: list[str], env: dict[str, str], cwd: Path, timeout: float, **options: Any
) -> subprocess.CompletedProcess[str]:
    """Run a helper process of the stress test to its end, its JSON lines (`events`) and
    stderr kept; no stdin, so it can never wait for an answer."""
    return subprocess.run(
        command,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
        **options,
    )


def events(text: str) -> list[dict[str, Any]]:
    events = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""

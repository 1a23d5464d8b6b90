"""`stress --mode api`: job processes that make the saves of `smt run` through Sumatra's
record-store API (smtmigrate.stress.worker), each labelling its records itself
(`job007-0000`): the store under load, whatever the project's label generator."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .report import (
    CRASHED,
    DUPLICATE_ROWS,
    OTHER,
    STEPS,
    TIMEOUT,
    VANISHED,
    WARM_UP_LABEL,
    StressReport,
    events,
    last_line,
    run_child,
)

if TYPE_CHECKING:
    from ..locations import Store
    from .jobs import Job

WORKER_MODULE = "smtmigrate.stress.worker"


class ApiMode:
    """What `run` needs of a mode: the warm-up, a job's command, reading a job's lines, the
    count in the store."""

    name = "api"

    def __init__(self, uri: str, env: dict[str, str], scratch: Path, report: StressReport):
        self.uri, self.env, self.scratch, self.report = uri, env, scratch, report
        self.cwd = scratch

    def warm_up(self, deadline: float) -> tuple[str, str] | None:
        return _warm_up(self.uri, self.env, self.scratch, self.report.project, deadline)

    def job_command(self, number: int) -> list[str]:
        return _worker_command(
            "job",
            self.uri,
            self.report.project,
            self.scratch,
            "--job",
            str(number),
            "--records",
            str(self.report.records_per_job),
        )

    def collect(self, job: Job, finished: list[float], *, released: bool) -> None:
        _collect(self.report, job, finished, released=released)

    def count(self, store: Store) -> None:
        _count(store, self.report)


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


def _warm_up(
    uri: str, env: dict[str, str], scratch: Path, project: str, deadline: float
) -> tuple[str, str] | None:
    """Save the warm-up record alone; None when it was saved, else (kind, message)."""
    command = _worker_command("warm-up", uri, project, scratch)
    try:
        result = run_child(command, env, scratch, max(deadline - time.monotonic(), 0.01))
    except subprocess.TimeoutExpired:
        return TIMEOUT, "not saved within the timeout"
    for event in events(result.stdout):
        if event.get("event") in ("record", "error"):
            if event.get("ok"):
                return None
            kind, message = event.get("error") or (event.get("kind"), event.get("message"))
            return kind or OTHER, message or ""
    return CRASHED, last_line(result.stderr) or f"exit status {result.returncode}"


def _collect(report: StressReport, job: Job, finished: list[float], *, released: bool) -> None:
    """Read one job's JSON lines into the report; `finished` gets when each record ended."""
    try:
        lines = events(job.out.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        lines = []
    seen = 0
    job_error: tuple[str, str] | None = None
    for event in lines:
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
                stderr = last_line(job.err.read_text(encoding="utf-8", errors="replace"))
            kind = CRASHED
            message = stderr or f"exit status {job.process.returncode}"
        report.errors[kind] += unaccounted
        report.examples.setdefault(kind, message)


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
    from ..locations import redact_text

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

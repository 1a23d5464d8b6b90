"""A job process of `smtmigrate stress --mode api` (python -m smtmigrate.stress.worker).

Sumatra's API only, no smtmigrate settings: Sumatra configures Django itself when it opens
the store. Imports nothing of smtmigrate but the report's kinds and protocol.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sqlite3
import sys
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

from .report import GO, STEPS, WARM_UP_LABEL, classify, emit, first_line


class _WatchedStore:
    """Sumatra's record store, noting every failed save or read that passes through it."""

    def __init__(self, store) -> None:
        self._store = store
        self.failures: list[BaseException] = []

    def save(self, project_name, record):
        return self._watched(self._store.save, project_name, record)

    def get(self, project_name, label):
        return self._watched(self._store.get, project_name, label)

    def _watched(self, call, *args):
        try:
            return call(*args)
        except Exception as exc:
            self.failures.append(exc)
            raise

    def __getattr__(self, name):
        return getattr(self._store, name)


def shared_objects(root: Path) -> dict[str, Any]:
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


def sumatra_lookup(model, obj) -> dict[str, Any]:
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
        shared = shared_objects(root)
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
        emit(
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


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m smtmigrate.stress.worker")
    parser.add_argument("action", choices=("warm-up", "job"))
    parser.add_argument("--uri", required=True)
    parser.add_argument("--project", required=True)
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--job", type=int, default=0)
    parser.add_argument("--records", type=int, default=1)
    args = parser.parse_args(argv)
    # Our JSON lines go to the real stdout; Sumatra's own prints ("Failed to save record…")
    # go to stderr with the rest of what a job says.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    sys.stdout = sys.stderr
    try:
        smt = _SmtRun(args.uri, args.project, args.root)
    except Exception as exc:
        emit(out, event="error", kind=classify(exc), message=first_line(exc))
        return 1
    if args.action == "warm-up":
        smt.attempt(out, WARM_UP_LABEL, -1, 0)
        return 0
    from django.db import connections

    connections.close_all()  # reconnect on the first save, as an `smt run` connects
    emit(out, event="ready", pid=os.getpid())
    if os.read(sys.stdin.fileno(), 1) != GO:  # one byte: the pipe is shared by all jobs
        return 3  # the run was called off
    for index in range(args.records):
        smt.attempt(out, _job_label(args.job, index), args.job, index)
    emit(out, event="done")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""`smtmigrate stress`: many `smt run`s at once against one store, and what reached it.

Two modes. By default ("smt", smt.py) every job is a real `smt run` of a scratch copy of the
project: its executable, main file name, label generator and timestamp format, data label
and the rest of its `.smt/project`, in a scratch git repository with a tiny main file and
one parameter file, all runs started together as a batch system starts them. What is lost
then is what users lose: runs that crash, records missing, labels given to two records,
store errors.

`--mode api` (api.py, worker.py) runs job processes that each do what `smt run` does to the
record store, through Sumatra's own code and nothing of ours, labelling their records
themselves (the store under load, whatever the project's labels):

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
connection (a record counts when its last save landed: duration set, output data linked; in
smt mode: status `finished`), and the scratch project is removed whatever happened, by one
more process through Sumatra's models (what its `delete` does, record by record: a label
several records share makes `delete` itself fail), plus what Sumatra's delete leaves behind:
the records' tag links, the project row, and the rows made during the run (id above the pre-
run maximum) that the scratch records referenced or that carry the run's own values (its
executable, data store, parameter sets, status tags, duplicates from racing jobs, …) and
that nothing references any more. Rows that already existed stay, as do rows something else
came to reference meanwhile; AUTOINCREMENT counters and sequences advance. The cleanup is
then verified.

The package: report.py (the report, the kinds of failure, the processes' JSON lines),
run.py (checks and orchestration), api.py + worker.py and smt.py (the two modes), cleanup.py
(removing the scratch project). A job process imports only report.py and its own module.
"""

from __future__ import annotations

from typing import Any

from .report import (
    CLEANUP_TIMEOUT,
    DEFAULT_JOBS,
    DEFAULT_RECORDS_PER_JOB,
    DEFAULT_TIMEOUT,
    KINDS,
    MAX_JOBS,
    MIN_JOBS,
    STEPS,
    StressInterrupted,
    StressReport,
    classify,
)

# The orchestration (Django, smtmigrate's stores) loads on first use, so that a job process
# (python -m smtmigrate.stress.worker) does not import it.
_RUN_NAMES = ("MODES", "NotEnoughMemory", "run_stress", "worker_location")

__all__ = [
    "CLEANUP_TIMEOUT",
    "DEFAULT_JOBS",
    "DEFAULT_RECORDS_PER_JOB",
    "DEFAULT_TIMEOUT",
    "KINDS",
    "MAX_JOBS",
    "MIN_JOBS",
    "STEPS",
    "StressInterrupted",
    "StressReport",
    "classify",
    *_RUN_NAMES,
]


def __getattr__(name: str) -> Any:
    if name in _RUN_NAMES:
        from . import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""`stress --mode smt` (the default): every job is a real `smt run`, as users run it.

The scratch project is a copy of the project's `.smt/project` (Sumatra's `smt init` defaults
when the store was named without a project): its executable (when it is a Python that
exists), main file name, label generator and timestamp format, data label, `on_changed`,
parameter handling. It gets its own name (the scratch project of the store), a scratch git
repository holding a main file that reads its parameter file and a shared input file
(`shared_input.dat`, one input DataKey every run links) and writes one output file of its
own (`Data/output_<n>.dat`, an output DataKey per run), as users' runs do; one parameter
file (`stress.param`), and the store's URL. Each job is a bare Python launcher that waits
on the shared pipe and then runs `smt run --reason '<scratch> run J-I' stress.param
shared_input.dat` in the scratch project (all jobs share it, as the runs of one project
share its directory), one run after the other, writing one JSON line per run. The reason
ties a record to its run, whatever label Sumatra gave it.
"""

from __future__ import annotations

import contextlib
import json
import platform
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from ..errors import SmtmigrateError
from ..locations import DJANGO_STORE_TYPE
from ..project import (
    SUMATRA_LABEL_GENERATOR,
    SUMATRA_TIMESTAMP_FORMAT,
    label_generator_of,
    read_project,
)
from .report import (
    CRASHED,
    DUPLICATE_ROWS,
    OTHER,
    RETRIED,
    RETRY_LINE,
    TIMEOUT,
    VANISHED,
    WARM_UP_LABEL,
    StressReport,
    classify,
    duplicate_table,
    events,
    last_line,
)

if TYPE_CHECKING:
    from ..locations import Store
    from .jobs import Job

PARAMETER_FILE = "stress.param"
SHARED_INPUT = "shared_input.dat"  # read by every run: one input DataKey they all share
DEFAULT_MAIN_FILE = "main.py"
PYTHON_EXECUTABLE = "sumatra.programs.PythonExecutable"
SERIAL_LAUNCH_MODE = "sumatra.launch.SerialLaunchMode"
FILE_SYSTEM_DATA_STORE = "sumatra.datastore.filesystem.FileSystemDataStore"
GIT_REPOSITORY = "sumatra.versioncontrol._git.GitRepository"
# The program every run runs, as a simulation does: reads its parameter file and the
# shared input, writes one output file of its own (an output DataKey per run), and ends.
MAIN_PROGRAM = (
    '"""smtmigrate stress: a run that reads its inputs and writes an output."""\n'
    "import os\n"
    "import sys\n"
    "import time\n\n"
    "for name in sys.argv[1:3]:\n"
    "    with open(name) as given:\n"
    "        given.read()\n"
    "time.sleep(0.1)\n"
    'n = f"{os.getpid()}_{time.time_ns()}"\n'
    'with open(os.path.join("Data", f"output_{n}.dat"), "w") as output:\n'
    '    output.write(f"run {n}\\n")\n'
)
# The job process: a bare Python (no smtmigrate, no Django) that waits on the shared pipe,
# then runs its `smt run`s one after the other. argv: project dir, runs, job number, log
# dir, reason prefix, then the `smt run` command.
LAUNCHER = """\
import json, os, subprocess, sys, time
project, runs, job, logs, prefix = sys.argv[1:6]
command = sys.argv[6:]
print(json.dumps({"event": "ready", "pid": os.getpid()}), flush=True)
if os.read(0, 1) != b"G":
    sys.exit(3)
null = os.open(os.devnull, os.O_RDONLY)
for index in range(int(runs)):
    reason = f"{prefix} run {job}-{index}"
    log = os.path.join(logs, f"run{job}-{index}.log")
    start = time.perf_counter()
    with open(log, "wb") as out:
        code = subprocess.call(
            [*command[:2], "--reason", reason, *command[2:]],
            stdin=null, stdout=out, stderr=subprocess.STDOUT, cwd=project,
        )
    print(json.dumps({"event": "run", "reason": reason, "code": code, "log": log,
                      "seconds": round(time.perf_counter() - start, 4),
                      "finished_at": time.time()}), flush=True)
"""
# A label in an error line: digits with separators ('20261128-044514'), shown once per group.
_LABELISH = re.compile(r"\d[\d\-:.]*\d")


def smt_program() -> Path:
    """Sumatra's `smt`, from the Python smtmigrate runs in (Sumatra 0.8.1)."""
    path = Path(sys.executable).parent / "smt"
    if not path.is_file():
        raise SmtmigrateError(
            f"cannot find Sumatra's smt beside {sys.executable}: install smtmigrate with "
            "Sumatra in one environment, or use --mode api"
        )
    return path


def scratch_configuration(
    store: Store, uri: str, directory: Path, name: str
) -> tuple[dict[str, Any], list[str]]:
    """The scratch project's `.smt/project`, and notes on what of the project it changed."""
    notes: list[str] = []
    if store.project_dir is not None:
        _, _, project = read_project(store.project_dir)
    else:
        project = {
            "label_generator": SUMATRA_LABEL_GENERATOR,
            "timestamp_format": SUMATRA_TIMESTAMP_FORMAT,
            "on_changed": "error",
            "data_label": None,
            "allow_command_line_parameters": True,
            "ignore_parameters": False,
        }
        notes.append(
            "no project directory given: the scratch project has the configuration "
            "`smt init` gives (label generator timestamp, one second); name the project "
            "directory to test its own"
        )
    executable = project.get("default_executable") or {}
    if not (
        isinstance(executable, dict)
        and executable.get("type") == PYTHON_EXECUTABLE
        and Path(str(executable.get("path"))).is_file()
    ):
        if store.project_dir is not None:
            notes.append(
                f"the project's executable ({executable.get('path') if executable else None})"
                f" is not a Python that exists here: the runs use {sys.executable}"
            )
        executable = {
            "type": PYTHON_EXECUTABLE,
            "path": sys.executable,
            "version": platform.python_version(),
            "options": "",
            "name": "Python",
        }
    main_file = str(project.get("default_main_file") or DEFAULT_MAIN_FILE)
    relative = PurePosixPath(main_file)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        main_file = DEFAULT_MAIN_FILE
    launch = project.get("default_launch_mode") or {}
    if isinstance(launch, dict) and launch.get("type") not in (None, SERIAL_LAUNCH_MODE):
        notes.append(f"the project launches with {launch.get('type')}; the runs are serial")
    plugins = project.get("plugins") or []
    if plugins:
        notes.append(f"the project's plug-ins ({', '.join(map(str, plugins))}) are left out")
    project.update(
        {
            "name": name,
            "default_executable": executable,
            "default_repository": {"type": GIT_REPOSITORY, "url": str(directory), "upstream": None},
            "default_launch_mode": {
                "type": SERIAL_LAUNCH_MODE,
                "working_directory": str(directory),
                "options": None,
            },
            "data_store": {"type": FILE_SYSTEM_DATA_STORE, "root": str(directory / "Data")},
            "input_datastore": {"type": FILE_SYSTEM_DATA_STORE, "root": str(directory)},
            "record_store": {"type": DJANGO_STORE_TYPE, "db_file": uri},
            "default_main_file": main_file,
            "_most_recent": None,
            "plugins": [],
        }
    )
    project.setdefault("sumatra_version", "0.8.1")
    return project, notes


def build_project(directory: Path, configuration: dict[str, Any], env: dict[str, str]) -> None:
    """A git repository with the main file and the parameter file committed, and `.smt/`."""
    main = directory / configuration["default_main_file"]
    main.parent.mkdir(parents=True, exist_ok=True)
    main.write_text(MAIN_PROGRAM, encoding="utf-8")
    (directory / PARAMETER_FILE).write_text(
        f'stress_project = "{configuration["name"]}"\nsteps = 100\nrate = 2.5\n',
        encoding="utf-8",
    )
    (directory / SHARED_INPUT).write_text("shared input of every run\n", encoding="utf-8")
    (directory / ".gitignore").write_text(".smt/\nData/\n", encoding="utf-8")
    (directory / "Data").mkdir()
    git = [
        "git",
        "-c",
        "user.name=smtmigrate stress",
        "-c",
        "user.email=stress@smtmigrate.invalid",
        "-c",
        "commit.gpgsign=false",
    ]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "stress"]):
        done = subprocess.run(
            [*git, *command], cwd=directory, capture_output=True, text=True, env=env
        )
        if done.returncode:
            raise SmtmigrateError(
                f"git {command[0]} in the scratch project failed: {last_line(done.stderr)}"
            )
    (directory / ".smt").mkdir()
    (directory / ".smt" / "project").write_text(
        json.dumps(configuration, indent=2), encoding="utf-8"
    )


class SmtMode:
    name = "smt"

    def __init__(
        self, store: Store, uri: str, env: dict[str, str], root: Path, report: StressReport
    ):
        self.report = report
        self.env, self.cwd = env, root
        self.smt = smt_program()
        self.directory = root / "project"
        self.directory.mkdir()
        self.logs = root / "logs"
        self.logs.mkdir()
        configuration, notes = scratch_configuration(store, uri, self.directory, report.project)
        build_project(self.directory, configuration, env)
        report.notes += notes
        origin = store.project_dir
        labels = label_generator_of(
            configuration, origin / ".smt" / "project" if origin else self.directory / ".smt"
        )
        report.label_generator = labels.to_dict(origin or "PROJECT_DIR")
        self.ok_reasons: set[str] = set()

    @property
    def reason_prefix(self) -> str:
        return f"smtmigrate stress {self.report.project}"

    def warm_up(self, deadline: float) -> tuple[str, str] | None:
        """One `smt run`, alone, labelled `warm-up`."""
        log = self.logs / "warm-up.log"
        command = [str(self.smt), "run", "--label", WARM_UP_LABEL, "--reason"]
        command += [f"{self.reason_prefix} warm-up", PARAMETER_FILE, SHARED_INPUT]
        try:
            with log.open("wb") as out:
                code = subprocess.run(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    cwd=self.directory,
                    timeout=max(deadline - time.monotonic(), 0.01),
                ).returncode
        except subprocess.TimeoutExpired:
            return TIMEOUT, "not saved within the timeout"
        if code == 0:
            return None
        line = _error_line(log)
        return _kind(line), line

    def job_command(self, number: int) -> list[str]:
        return [
            sys.executable,
            "-c",
            LAUNCHER,
            str(self.directory),
            str(self.report.records_per_job),
            str(number),
            str(self.logs),
            self.reason_prefix,
            str(self.smt),
            "run",
            PARAMETER_FILE,
            SHARED_INPUT,
        ]

    def collect(self, job: Job, finished: list[float], *, released: bool) -> None:
        report = self.report
        try:
            lines = events(job.out.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            lines = []
        seen = 0
        for event in lines:
            if event.get("event") != "run":
                continue
            seen += 1
            log = Path(str(event.get("log")))
            text = ""
            with contextlib.suppress(OSError):
                text = log.read_text(encoding="utf-8", errors="replace")
            if text.count(RETRY_LINE):
                report.retries[RETRIED] += text.count(RETRY_LINE)
                report.examples.setdefault(RETRIED, f"{RETRY_LINE}. Trying again in 5 seconds.")
            if event.get("finished_at"):
                finished.append(float(event["finished_at"]))
            if event.get("code") == 0:
                report.saved += 1
                report.latencies.append(float(event.get("seconds") or 0.0))
                self.ok_reasons.add(str(event.get("reason")))
                continue
            line = last_line(text) or f"exit status {event.get('code')}"
            kind = _kind(line)
            report.errors[kind] += 1
            table = duplicate_table(line.partition(": ")[0]) if kind == DUPLICATE_ROWS else None
            if table:
                report.duplicate_tables[table] += 1
            report.crashed[_LABELISH.sub("N", line)] += 1
            report.examples.setdefault(kind, line)
        unaccounted = report.records_per_job - seen
        if unaccounted > 0:
            if job.killed or not released:
                kind, message = TIMEOUT, f"not done at the deadline ({report.timeout:g} s)"
            else:
                kind = CRASHED
                message = "the job ended before its runs: " + (
                    last_line(job.err.read_text(encoding="utf-8", errors="replace"))
                    if job.err.is_file()
                    else f"exit status {job.process.returncode}"
                )
            report.errors[kind] += unaccounted
            report.examples.setdefault(kind, message)

    def count(self, store: Store) -> None:
        """Records of the runs (by reason), complete when `smt run` finished them."""
        from django.db import DatabaseError

        from ..locations import redact_text

        report = self.report
        try:
            with store.connection.cursor() as cursor:
                cursor.execute(
                    "SELECT label, reason, duration IS NOT NULL AND tags LIKE %s ESCAPE '!' "
                    "FROM django_store_record WHERE project_id = %s AND label <> %s",
                    ["%!_finished!_%", report.project, WARM_UP_LABEL],
                )
                rows = cursor.fetchall()
        except DatabaseError as exc:
            raise store.read_error(exc) from exc
        finally:
            store.connection.close()
        complete = {reason for _, reason, done in rows if done}
        report.found = len(complete)
        report.incomplete = len({reason for _, reason, _ in rows} - complete)
        labels = Counter(label for label, _, _ in rows)
        report.duplicate_labels = {label: n for label, n in sorted(labels.items()) if n > 1}
        vanished = len(self.ok_reasons - complete)
        if vanished:  # `smt run` ended well; its record is not (or no longer) in the store
            report.errors[VANISHED] += vanished
            report.examples.setdefault(
                VANISHED,
                "`smt run` ended without an error, its record is not in the store "
                "(overwritten by a run with the same label?)",
            )
        report.examples = {k: redact_text(v, store.password) for k, v in report.examples.items()}
        report.crashed = Counter(
            {redact_text(k, store.password): n for k, n in report.crashed.items()}
        )
        if report.label_cause:
            report.notes.append(
                f"labels: {report.label_cause}. Records saved under a label another run also "
                "got are overwritten or kept twice; `smt` commands that look a record up by "
                "label then fail with MultipleObjectsReturned."
            )
        if report.errors[DUPLICATE_ROWS]:
            tables = ", ".join(f"{t} ({n} run(s))" for t, n in report.duplicate_tables.items())
            report.notes.append(
                f"duplicate rows{' in ' + tables if tables else ''}: concurrent runs each "
                "create a row they share (executable, repository, launch mode, data store, "
                "platform, parameter set, input or output data key: Sumatra's get_or_create, "
                "no unique constraint); later runs then fail with MultipleObjectsReturned. "
                "`smtmigrate protect --dedupe STORE` merges them and adds the identities."
            )


def _error_line(log: Path) -> str:
    try:
        return last_line(log.read_text(encoding="utf-8", errors="replace")) or "no output"
    except OSError:
        return "no output"


def _kind(line: str) -> str:
    """The kind of the error that ended a run, from the last line of its output."""
    name, _, text = line.partition(": ")
    if not re.fullmatch(r"[\w.]+", name):
        return OTHER
    return classify((name, text))

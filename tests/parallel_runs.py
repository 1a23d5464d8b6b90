"""Real `smt run`s started together on one project whose main file reads a shared input
file and writes one output file per run (`Data/output_<n>.dat`): what users run.

Also runnable by hand: `python -m tests.parallel_runs URL JOBS [DIR]` prints the outcome as
JSON (how the 100-job figures in docs/concurrency-identities.md were measured)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SMT = str(Path(sys.executable).parent / "smt")
INPUT_FILE = "input.dat"
MAIN_PROGRAM = """\
import sys, time
with open(sys.argv[1]) as shared:
    shared.read()
n = sys.argv[2]
time.sleep(0.2)
with open(f"Data/output_{n}.dat", "w") as out:
    out.write(f"run {n}\\n")
"""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}


def _run(args: list[str], cwd: Path) -> None:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=_env())
    if done.returncode != 0:
        raise RuntimeError(f"{args}: {done.stdout[-1000:]} {done.stderr[-2000:]}")


def make_project(directory: Path, store_url: str | None, name: str = "parallel") -> Path:
    """A git repository with the main file and the shared input, a Sumatra project on
    `store_url` (None: Sumatra's default SQLite store) with uuid labels (so runs started
    together do not share a label)."""
    store = ["-s", store_url] if store_url else []
    project = directory / name
    (project / "Data").mkdir(parents=True)
    (project / "main.py").write_text(MAIN_PROGRAM, encoding="utf-8")
    (project / INPUT_FILE).write_text("shared input\n", encoding="utf-8")
    for args in (
        ["git", "init", "-q"],
        ["git", "add", "main.py", INPUT_FILE],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "main"],
        [SMT, "init", *store, "-d", "Data", "-i", ".", name],
        [SMT, "configure", "-g", "uuid", "-e", "python", "-m", "main.py"],
    ):
        _run(args, project)
    return project


@dataclass
class Outcome:
    jobs: int
    finished: int = 0
    crashed: list[str] = field(default_factory=list)  # each crash's last line
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {
            "jobs": self.jobs,
            "finished": self.finished,
            "crashed": len(self.crashed),
            "crashes": sorted(set(self.crashed)),
            "seconds": round(self.seconds, 1),
        }


def run_together(project: Path, jobs: int, first: int = 0, timeout: float = 900) -> Outcome:
    """`jobs` `smt run`s started at once, run n writing Data/output_<n>.dat."""
    outcome = Outcome(jobs)
    started = time.monotonic()
    processes = [
        subprocess.Popen(
            [SMT, "run", "--reason", f"job {n}", INPUT_FILE, str(n)],
            cwd=project,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=_env(),
        )
        for n in range(first, first + jobs)
    ]
    for process in processes:
        out, _ = process.communicate(timeout=max(1.0, timeout - (time.monotonic() - started)))
        if process.returncode == 0 and "Traceback" not in out:
            outcome.finished += 1
        else:
            lines = [line for line in out.splitlines() if line.strip()]
            outcome.crashed.append(lines[-1] if lines else f"exit {process.returncode}")
    outcome.seconds = time.monotonic() - started
    return outcome


if __name__ == "__main__":
    url, count = sys.argv[1], int(sys.argv[2])
    base = Path(sys.argv[3]) if len(sys.argv) > 3 else Path(tempfile.mkdtemp())
    print(json.dumps(run_together(make_project(base, url), count).to_dict(), indent=2))

"""A PostgreSQL cluster of a test's own (never the shared server): a low max_connections,
restarts. Made with Debian's pg_createcluster on a free port, trust auth on the loopback and
the socket, removed with pg_dropcluster --stop. Also: a Sumatra project whose main file
sleeps and writes an output file, and many real `smt run`s of it at once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SMT = str(Path(sys.executable).parent / "smt")
PG_VERSION = "15"
# What Sumatra prints on each retry of its first save (Project.add_record).
RETRY_MESSAGE = "Failed to save record due to database error"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Cluster:
    name: str
    port: int

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def ctl(self, action: str, *options: str) -> None:
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", PG_VERSION, self.name, action,
             *options],
            check=True,
            capture_output=True,
            timeout=120,
        )  # fmt: skip

    def psql(self, query: str, database: str = "postgres") -> str:
        done = subprocess.run(
            ["psql", "-XAtq", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
             "-d", database, "-c", query],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )  # fmt: skip
        return done.stdout.strip()


@contextmanager
def private_cluster(max_connections: int = 20) -> Iterator[Cluster]:
    """A running cluster on a free port with `max_connections`, trust auth; dropped after."""
    name = f"smtm{uuid.uuid4().hex[:8]}"
    port = free_port()
    subprocess.run(
        ["pg_createcluster", PG_VERSION, name, "-p", str(port), "--start-conf", "manual",
         "-o", f"max_connections={max_connections}",
         "--", "--auth=trust"],
        check=True,
        capture_output=True,
        timeout=120,
    )  # fmt: skip
    cluster = Cluster(name, port)
    try:
        cluster.ctl("start")
        yield cluster
    finally:
        subprocess.run(
            ["pg_dropcluster", "--stop", PG_VERSION, name], capture_output=True, timeout=120
        )


def sumatra_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}


def smt(project: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SMT, *args], cwd=project, capture_output=True, text=True, env=sumatra_env(),
        timeout=timeout,
    )  # fmt: skip


SLEEPING_MAIN = """\
import sys, time
time.sleep({seconds})
with open("out-%s.txt" % sys.argv[-1], "w") as out:
    out.write("done\\n")
"""


# Sleeps, then waits at the gate (GATE appears: the test opens it), reads the shared input
# and writes an output file into the data store (an output DataKey of its record). While it
# waits it leaves `waiting/<job>` so a test knows every run is past its start-up saves.
GATED_MAIN = """\
import os, sys, time
job = sys.argv[-1]
time.sleep({seconds})
os.makedirs("waiting", exist_ok=True)
open(os.path.join("waiting", job), "w").close()
while not os.path.exists("{gate}"):
    time.sleep(0.05)
with open("input.dat") as shared:
    text = shared.read()
with open(os.path.join("Data", "output_%s.dat" % job), "w") as out:
    out.write(text + job + "\\n")
"""
GATE = "release"


def sleeping_project(parent: Path, seconds: float, *, gated: bool = False) -> Path:
    """A git project (`smt init`, uuid labels) whose main file sleeps `seconds`, then writes
    an output file; one record saved already (the rows runs share exist, as in a project
    that has run before). `gated`: the runs then wait for the file GATE (GATED_MAIN)."""
    project = parent / "project"
    project.mkdir()
    (project / "Data").mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    main = GATED_MAIN.format(seconds=seconds, gate=GATE) if gated else SLEEPING_MAIN
    (project / "main.py").write_text(main.format(seconds=seconds))
    (project / "default.param").write_text("x = 1\n")
    (project / "input.dat").write_text("shared input\n")
    (project / ".gitignore").write_text(f".smt/\nData/\nwaiting/\n{GATE}\n")
    files = ["main.py", "default.param", "input.dat", ".gitignore"]
    subprocess.run([*git, "add", *files], cwd=project, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=project, check=True)
    for args in (
        ("init", "-d", "Data", "-i", ".", "pooled"),
        ("configure", "--executable=python", "--main=main.py", "-g", "uuid"),
    ):
        done = smt(project, *args)
        assert done.returncode == 0, done.stderr[-2000:]
    return project


def first_run(project: Path) -> None:
    gate = project / GATE
    gated = not gate.exists()
    gate.touch()  # a gated project's first run goes straight through
    done = smt(project, "run", "default.param", "first")
    if gated:
        gate.unlink()
    assert done.returncode == 0, done.stdout[-1000:] + done.stderr[-2000:]


@dataclass
class Runs:
    seconds: float  # wall time of them all
    returncodes: list[int]
    retries: int  # Sumatra's retry messages (add_record), all runs together
    outputs: list[str]  # stdout + stderr of each
    each: list[float]  # wall time of each run

    @property
    def crashed(self) -> int:
        return sum(1 for code in self.returncodes if code != 0)


def parallel_runs(project: Path, count: int, *, during=None, timeout: float = 600) -> Runs:
    """`count` real `smt run`s started together; `during()` runs while they do. Each is
    killed if still running after `timeout` seconds."""
    started = time.monotonic()
    processes = [
        subprocess.Popen(
            [SMT, "run", "default.param", f"job{i}"],
            cwd=project,
            env=sumatra_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(count)
    ]
    outputs = [""] * count
    ended = [0.0] * count

    def wait(i: int) -> None:
        try:
            outputs[i], _ = processes[i].communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            processes[i].kill()
            outputs[i], _ = processes[i].communicate()
        ended[i] = time.monotonic() - started

    waiters = [threading.Thread(target=wait, args=(i,)) for i in range(count)]
    for waiter in waiters:
        waiter.start()
    if during is not None:
        during()
    for waiter in waiters:
        waiter.join()
    return Runs(
        time.monotonic() - started,
        [p.returncode for p in processes],
        sum(out.count(RETRY_MESSAGE) for out in outputs),
        outputs,
        ended,
    )


def records(cluster: Cluster, database: str) -> list[tuple[str, str, str]]:
    """(label, tags, duration) of every record of the store, in the order saved; a record
    `smt run` finished has a duration and the status tag `_finished_`."""
    text = cluster.psql(
        "SELECT label || '|' || tags || '|' || coalesce(duration::text, '') "
        "FROM django_store_record ORDER BY db_id",
        database,
    )
    return [tuple(line.split("|")) for line in text.splitlines() if line]


def complete_records(cluster: Cluster, database: str) -> list[tuple[str, bool]]:
    """(status tag, duration set) of every record, in the order saved."""
    text = cluster.psql(
        "SELECT tags || '|' || (duration IS NOT NULL)::text FROM django_store_record "
        "ORDER BY db_id",
        database,
    )
    out = []
    for line in text.splitlines():
        tags, duration = line.split("|")
        status = next((t for t in tags.split(",") if t.startswith("_")), "")
        out.append((status, duration == "true"))
    return out


def recorded_outputs(cluster: Cluster, database: str) -> set[str]:
    """Paths of the files saved as some record's output. Sumatra gives a run every file of
    the data store changed since it started, and a DataKey one `output_from_record`, so
    with runs ending together a file is the output of one of them, not always its own."""
    text = cluster.psql(
        "SELECT path FROM django_store_datakey WHERE output_from_record_id IS NOT NULL",
        database,
    )
    return set(text.splitlines())


def project_url(project: Path) -> str:
    return json.loads((project / ".smt" / "project").read_text())["record_store"]["db_file"]

"""Real `smt run`s on a private PostgreSQL cluster with a low max_connections, through
`smtmigrate pooler` and directly; optionally across a server restart.

    python bench/concurrency/pooler.py [--runs 60] [--seconds 6] [--max-connections 20]
        [--restart-at SECONDS [--pause] | --restart-at-end] [--direct]
    python bench/concurrency/pooler.py --compare [--runs 60] [--seconds 20] [--repeat K]

Makes its own clusters (pg_createcluster on a free port, trust auth) and drops them after;
never touches the shared server. A project whose main.py sleeps `--seconds` and writes an
output file is moved onto it (`smtmigrate move … --pooler`, or without the pooler with
`--direct`), one record saved first; then `--runs` runs start together. Prints wall time,
each run's time, Sumatra's retries (its "Failed to save record" lines), crashed runs,
complete records (duration set, `_finished_`), and the CPU the runs took.

`--restart-at-end`: the runs (each `--seconds`, then waiting at a gate file) all end during
a `restart -m fast`: it starts once every run waits, and the gate opens 0.2 s later.
With `--direct` keep `--runs` within the connections the server has free (e.g.
`--max-connections 40`): the runs that wait hold theirs, so the others would never start.
`--restart-at S` restarts the cluster (`pg_ctlcluster … restart -m fast`) S seconds after
the runs start: unplanned (the pooler's watcher pauses PgBouncer while the server is down),
or with `--pause` around it (`pooler --pause` / `--resume`, planned).

`--compare` runs, one after the other in one invocation: one run alone (the time of one
run), then `--repeat` pairs of `--runs` runs, side by side, (a) through the pooler on
max_connections = `--max-connections` and (c) directly on a cluster with max_connections =
200 (no connection limit: the floor the machine's CPU sets), then once (b) directly on the
low cluster; it prints each line (pooled: how long clients waited for a server connection,
PgBouncer's SHOW STATS / SHOW POOLS) and the ratios: wall / one run, pooler / floor (the
medians, and each pair), CPU, and whether pooler / floor is within TARGET with 0 retries
("met" / "MISSED"): 60 Python start-ups are CPU-bound on a few cores, so "the time of one
run" can only mean as fast as direct with enough connections.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from smtmigrate.pooler_console import admin_connection, show
from tests.private_cluster import (
    GATE,
    PG_VERSION,
    Cluster,
    first_run,
    free_port,
    parallel_runs,
    private_cluster,
    records,
    sleeping_project,
)

SMTMIGRATE = [sys.executable, "-m", "smtmigrate"]


@dataclass
class Outcome:
    what: str
    runs: int
    wall: float
    fastest: float
    slowest: float
    retries: int
    crashed: int
    complete: int
    cpu: float
    load: float
    pgbouncer_cpu: float | None = None
    pool_wait: float | None = None  # PgBouncer's SHOW STATS total_wait_time, seconds
    most_waiting: int | None = None  # the most clients SHOW POOLS saw waiting at once

    def line(self) -> str:
        return (
            f"{self.what}: {self.runs} runs, {self.wall:.1f} s wall (each {self.fastest:.1f}-"
            f"{self.slowest:.1f} s), retries {self.retries}, crashed {self.crashed}, "
            f"complete {self.complete}; CPU of the runs {self.cpu:.0f} s on "
            f"{os.cpu_count()} cores"
            + ("" if self.pgbouncer_cpu is None else f", PgBouncer's {self.pgbouncer_cpu:.1f} s")
            + (
                ""
                if self.pool_wait is None
                else f"; waited for a server connection {self.pool_wait:.2f} s in all, at "
                f"most {self.most_waiting} client(s) at once"
            )
            + f", load {self.load:.1f}"
        )


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _process_cpu(pid: int) -> float | None:
    """user + system seconds of a process that is not our child (PgBouncer runs with -d)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class PoolWatch:
    """PgBouncer's own count of how long clients waited for a server connection (SHOW
    STATS total_wait_time) and the most clients waiting at once (SHOW POOLS cl_waiting,
    every 0.5 s): whether the pool is too small for the runs."""

    def __init__(self, project: Path, database: str) -> None:
        from smtmigrate.pooler_config import config_dir, read_pooler_state

        folder = config_dir(project)
        self.connection = admin_connection(folder, read_pooler_state(project) or {})
        self.database = database
        self.most_waiting = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample)
        self.thread.start()

    def _row(self, what: str) -> dict:
        rows = [r for r in show(self.connection, what) if r["database"] == self.database]
        return rows[0] if rows else {}

    def _sample(self) -> None:
        while not self.done.wait(0.5):
            waiting = int(self._row("POOLS").get("cl_waiting", 0))
            self.most_waiting = max(self.most_waiting, waiting)

    def stop(self) -> float:
        """Seconds clients waited for a server connection, all together."""
        self.done.set()
        self.thread.join()
        try:
            return int(self._row("STATS").get("total_wait_time", 0)) / 1e6
        finally:
            self.connection.close()


def measure(
    cluster: Cluster,
    database: str,
    what: str,
    count: int,
    seconds: float,
    *,
    pooled: bool,
    restart_at: float | None = None,
    pause: bool = False,
    at_end: bool = False,
) -> Outcome:
    """A new project moved into `database` (through a new pooler when `pooled`), then
    `count` runs together; the pooler stopped after."""
    with tempfile.TemporaryDirectory() as tmp:
        project = sleeping_project(Path(tmp), seconds, gated=at_end)
        first_run(project)
        pooler = ["--pooler", f"127.0.0.1:{free_port()}"] if pooled else []
        subprocess.run(
            [*SMTMIGRATE, "move", str(project), cluster.url(database), "--yes",
             "--admin", cluster.url("postgres"), *pooler],
            check=True, capture_output=True, timeout=300,
        )  # fmt: skip

        def restart() -> None:
            if at_end:  # every run waits at the gate: restart, and let them end meanwhile
                while len(list((project / "waiting").glob("job*"))) < count:
                    time.sleep(0.2)
                started = time.monotonic()
                restarting = subprocess.Popen(
                    ["pg_ctlcluster", "--skip-systemctl-redirect", PG_VERSION, cluster.name,
                     "restart", "-m", "fast"],
                )  # fmt: skip
                time.sleep(0.2)
                (project / GATE).touch()
                restarting.wait(timeout=300)
                print(f"restarted in {time.monotonic() - started:.1f} s", flush=True)
                return
            if restart_at is None:
                return
            time.sleep(restart_at)
            if pause:
                subprocess.run([*SMTMIGRATE, "pooler", str(project), "--pause"], check=True)
            started = time.monotonic()
            cluster.ctl("restart", "-m", "fast")
            print(f"restarted in {time.monotonic() - started:.1f} s", flush=True)
            if pause:
                subprocess.run([*SMTMIGRATE, "pooler", str(project), "--resume"], check=True)

        pgbouncer = None
        if pooled:
            status = subprocess.run(
                [*SMTMIGRATE, "pooler", str(project), "--status", "--format", "json"],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            pgbouncer = json.loads(status.stdout)["pid"]
            pgbouncer_before = _process_cpu(pgbouncer)
        watch = PoolWatch(project, database) if pooled else None
        pool_wait = None
        try:
            cpu = _cpu()  # the runs' own: not the pooler --status / --stop around them
            runs = parallel_runs(project, count, during=restart)
            cpu = _cpu() - cpu
            pgbouncer_cpu = None
            if pgbouncer is not None and pgbouncer_before is not None:
                after = _process_cpu(pgbouncer)
                pgbouncer_cpu = None if after is None else after - pgbouncer_before
        finally:
            if watch is not None:
                pool_wait = watch.stop()
            log = project / ".smt" / "pgbouncer" / "watch.log"
            if (
                restart_at is not None or at_end
            ) and log.exists():  # what the watcher did meanwhile
                for line in log.read_text().splitlines():
                    if "PAUSE" in line or "RESUME" in line:
                        print(f"  watcher: {line}", flush=True)
            if pooled:  # PgBouncer outlives no cluster of ours
                subprocess.run(
                    [*SMTMIGRATE, "pooler", str(project), "--stop", "--force"],
                    capture_output=True,
                )
    saved = records(cluster, database)[1:]
    complete = sum(1 for _, tags, duration in saved if "_finished_" in tags and duration)
    return Outcome(
        what, count, runs.seconds, min(runs.each), max(runs.each), runs.retries, runs.crashed,
        complete, cpu, os.getloadavg()[0], pgbouncer_cpu, pool_wait,
        None if watch is None else watch.most_waiting,
    )  # fmt: skip


TARGET = 1.1  # pooler / floor: "about the time of one run" as fast as this machine allows


def compare(args: argparse.Namespace) -> None:
    limit = args.max_connections
    with private_cluster(limit) as low, private_cluster(200) as high:
        alone = measure(low, "alone", "one run alone, pooler", 1, args.seconds, pooled=True)
        print(alone.line(), flush=True)
        pooled: list[Outcome] = []
        floor: list[Outcome] = []
        for i in range(args.repeat):  # side by side, A B A B: the machine's load drifts
            pooled.append(measure(
                low, f"pooled{i}", f"(a) pooler, max_connections {limit}", args.runs,
                args.seconds, pooled=True,
            ))  # fmt: skip
            print(pooled[-1].line(), flush=True)
            floor.append(measure(
                high, f"floor{i}", "(c) direct, max_connections 200 (floor)", args.runs,
                args.seconds, pooled=False,
            ))  # fmt: skip
            print(floor[-1].line(), flush=True)
        direct = measure(
            low, "direct", f"(b) direct, max_connections {limit}", args.runs, args.seconds,
            pooled=False,
        )  # fmt: skip
        print(direct.line(), flush=True)
    one = alone.wall
    wall_a = statistics.median(o.wall for o in pooled)
    wall_c = statistics.median(o.wall for o in floor)
    ratio = wall_a / wall_c
    cpu = sum(o.cpu for o in pooled) / sum(o.cpu for o in floor)
    retries = sum(o.retries for o in pooled)
    met = ratio <= TARGET and retries == 0 and all(o.crashed == 0 for o in pooled)
    print(
        f"wall / one run ({one:.1f} s), medians of {args.repeat}: pooler {wall_a / one:.2f}, "
        f"floor {wall_c / one:.2f}, direct {direct.wall / one:.2f}; direct / floor "
        f"{direct.wall / wall_c:.2f}"
    )
    print(
        f"pooler / floor {ratio:.2f} (each pair: "
        + ", ".join(f"{a.wall / c.wall:.2f}" for a, c in zip(pooled, floor, strict=True))
        + f"; CPU {cpu:.2f}), pooler retries {retries}: target <= {TARGET} with 0 retries "
        + ("met" if met else "MISSED")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--max-connections", type=int, default=20)
    parser.add_argument("--restart-at", type=float, help="restart the cluster (-m fast) then")
    parser.add_argument("--pause", action="store_true", help="pooler --pause/--resume around it")
    parser.add_argument("--direct", action="store_true", help="no pooler")
    parser.add_argument(
        "--restart-at-end",
        action="store_true",
        help="restart (-m fast) once every run waits to end, and let them end meanwhile",
    )
    parser.add_argument("--compare", action="store_true", help="pooler, direct, floor")
    parser.add_argument(
        "--repeat", type=int, default=1, help="--compare: pooler / floor pairs, side by side"
    )
    args = parser.parse_args()
    if args.compare:
        compare(args)
        return
    with private_cluster(args.max_connections) as cluster:
        how = "direct" if args.direct else "pooler"
        outcome = measure(
            cluster, "bench", f"{how}, max_connections {args.max_connections}", args.runs,
            args.seconds, pooled=not args.direct, restart_at=args.restart_at, pause=args.pause,
            at_end=args.restart_at_end,
        )  # fmt: skip
        print(outcome.line())


if __name__ == "__main__":
    main()

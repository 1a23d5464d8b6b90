"""Real `smt run`s on a private PostgreSQL cluster with a low max_connections, through
`smtmigrate pooler` and directly; optionally across a server restart.

    python bench/concurrency/pooler.py [--runs 60] [--seconds 6] [--max-connections 20]
        [--restart-at SECONDS [--pause]] [--direct]

Makes its own cluster (pg_createcluster on a free port, trust auth) and drops it after;
never touches the shared server. A project whose main.py sleeps `--seconds` and writes an
output file is moved onto it (`smtmigrate move … --pooler`, or without the pooler with
`--direct`), one record saved first; then `--runs` runs start together. Prints wall time,
each run's time, Sumatra's retries (its "Failed to save record" lines), crashed runs,
complete records (duration set, `_finished_`), and the CPU the runs took.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.private_cluster import (
    first_run,
    free_port,
    parallel_runs,
    private_cluster,
    records,
    sleeping_project,
)

SMTMIGRATE = [sys.executable, "-m", "smtmigrate"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--max-connections", type=int, default=20)
    parser.add_argument("--restart-at", type=float, help="restart the cluster (-m fast) then")
    parser.add_argument("--pause", action="store_true", help="pooler --pause/--resume around it")
    parser.add_argument("--direct", action="store_true", help="no pooler")
    args = parser.parse_args()
    with private_cluster(args.max_connections) as cluster, tempfile.TemporaryDirectory() as tmp:
        project = sleeping_project(Path(tmp), args.seconds)
        first_run(project)
        pooler = [] if args.direct else ["--pooler", f"127.0.0.1:{free_port()}"]
        subprocess.run(
            [*SMTMIGRATE, "move", str(project), cluster.url("bench"), "--yes",
             "--admin", cluster.url("postgres"), *pooler],
            check=True, capture_output=True, timeout=300,
        )  # fmt: skip

        def restart() -> None:
            if args.restart_at is None:
                return
            time.sleep(args.restart_at)
            if args.pause:
                subprocess.run([*SMTMIGRATE, "pooler", str(project), "--pause"], check=True)
            started = time.monotonic()
            cluster.ctl("restart", "-m", "fast")
            print(f"restarted in {time.monotonic() - started:.1f} s", flush=True)
            if args.pause:
                subprocess.run([*SMTMIGRATE, "pooler", str(project), "--resume"], check=True)

        try:
            runs = parallel_runs(project, args.runs, during=restart)
        finally:
            if not args.direct:  # PgBouncer outlives no cluster of ours
                subprocess.run(
                    [*SMTMIGRATE, "pooler", str(project), "--stop", "--force"],
                    capture_output=True,
                )
        saved = records(cluster, "bench")[1:]
        complete = sum(1 for _, tags, duration in saved if "_finished_" in tags and duration)
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        how = "direct" if args.direct else "pooler"
        print(
            f"{args.runs} runs of {args.seconds:g} s, {how}, max_connections "
            f"{args.max_connections}: {runs.seconds:.1f} s wall (each {min(runs.each):.1f}-"
            f"{max(runs.each):.1f} s), retries {runs.retries}, crashed {runs.crashed}, "
            f"records {len(saved)}, complete {complete}; CPU of the runs "
            f"{usage.ru_utime + usage.ru_stime:.0f} s on {os.cpu_count()} cores, load "
            f"{os.getloadavg()[0]:.1f}"
        )


if __name__ == "__main__":
    main()

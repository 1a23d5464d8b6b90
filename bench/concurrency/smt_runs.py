"""N real `smt run`s of one Sumatra project, released together; what the store kept.

    python bench/concurrency/smt_runs.py PROJECT_DIR N [--smt PATH] [-- ARGS for smt run]

Independent of smtmigrate (the oracle of `smtmigrate stress`): every run is a process that
waits on a shared pipe, and when all N exist they get one byte each and exec
`smt run --reason smt-runs-<batch>-<i> ARGS` (default ARGS: `default.param`) in PROJECT_DIR.
Afterwards the store named by PROJECT_DIR/.smt/project (SQLite file or postgres:// URL) is
read with sqlite3/psycopg2: records of this batch (by reason), distinct and duplicate
labels, and every run's exit status and last line of stderr (Sumatra's error).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

LAUNCHER = (
    "import os, sys\n"
    "if os.read(0, 1) != b'G': sys.exit(3)\n"
    "fd = os.open(os.devnull, os.O_RDONLY); os.dup2(fd, 0)\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n"
)


def store_rows(project_dir: Path, query: str, params: tuple) -> list[tuple]:
    project = json.loads((project_dir / ".smt" / "project").read_text())
    db_file = project["record_store"]["db_file"]
    if re.match(r"postgres(ql)?://", db_file):
        import psycopg2

        conn = psycopg2.connect(db_file.replace("postgres://", "postgresql://", 1))
        query = query.replace("?", "%s")
    else:
        path = Path(db_file) if os.path.isabs(db_file) else project_dir / db_file
        conn = sqlite3.connect(path)
    try:
        cur = conn.cursor()
        cur.execute(query, params)
        return cur.fetchall()
    finally:
        conn.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("project", type=Path)
    parser.add_argument("n", type=int)
    parser.add_argument("--smt", default=str(Path(sys.executable).parent / "smt"))
    parser.add_argument("args", nargs="*", default=["default.param"])
    args = parser.parse_args()
    batch = secrets.token_hex(3)
    project = json.loads((args.project / ".smt" / "project").read_text())
    read_end, write_end = os.pipe()
    logs = Path(tempfile.mkdtemp(prefix="smt-runs-"))
    procs = []
    for i in range(args.n):
        err = (logs / f"{i}.err").open("wb")
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    LAUNCHER,
                    args.smt,
                    "run",
                    "--reason",
                    f"smt-runs-{batch}-{i}",
                    *args.args,
                ],
                stdin=read_end,
                stdout=err,
                stderr=subprocess.STDOUT,
                cwd=args.project,
            )
        )
    os.close(read_end)
    time.sleep(1.0 + args.n * 0.02)  # every launcher is waiting on the pipe by now
    start = time.monotonic()
    os.write(write_end, b"G" * args.n)
    os.close(write_end)
    codes = [p.wait() for p in procs]
    seconds = time.monotonic() - start
    crashed: Counter = Counter()
    for i, code in enumerate(codes):
        if code:
            lines = [x for x in (logs / f"{i}.err").read_text().splitlines() if x.strip()]
            line = lines[-1] if lines else f"exit {code}"
            crashed[re.sub(r"\d", "#", line)[:160]] += 1
    rows = store_rows(
        args.project,
        "SELECT label, reason FROM django_store_record WHERE project_id = ? AND reason LIKE ?",
        (project["name"], f"smt-runs-{batch}-%"),
    )
    labels = Counter(label for label, _ in rows)
    retried = sum(
        "Failed to save record due to database error" in (logs / f"{i}.err").read_text()
        for i in range(args.n)
    )
    result = {
        "batch": f"smt-runs-{batch}",
        "runs": args.n,
        "label_generator": project.get("label_generator"),
        "timestamp_format": project.get("timestamp_format"),
        "exit_0": codes.count(0),
        "crashed": sum(crashed.values()),
        "records": len(rows),
        "runs_with_a_record": len({reason for _, reason in rows}),
        "distinct_labels": len(labels),
        "duplicate_labels": {label: n for label, n in labels.items() if n > 1},
        "runs_that_retried_a_save": retried,
        "seconds": round(seconds, 1),
        "errors": dict(crashed),
        "logs": str(logs),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

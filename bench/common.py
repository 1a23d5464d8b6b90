"""Helpers shared by the benchmark scripts: the cached 100k-record store, timing, RSS."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("SMTMIGRATE_BENCH_CACHE", ROOT / "bench" / ".cache"))


def big_store(records: int = 100_000, seed: int = 0) -> Path:
    """Build the benchmark store once (about 25 s for 100k records) and reuse it."""
    path = CACHE / f"store-{records}-{seed}.sqlite"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        print(f"building {path} ({records:,} records) ...", flush=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "smtmigrate.generate",
                str(partial),
                "--records",
                str(records),
                "--seed",
                str(seed),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        partial.rename(path)
    return path


def timed(command: list[str]) -> tuple[float, int, subprocess.CompletedProcess]:
    """Run a command; return wall seconds, its peak RSS in MB, and the result."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, max(peak, before) // 1024, result


def smtmigrate_command() -> list[str]:
    script = Path(sys.executable).parent / "smtmigrate"
    return [str(script)] if script.exists() else [sys.executable, "-m", "smtmigrate"]

"""Helpers shared by the benchmark scripts: the cached 100k-record store, timing, RSS."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as `python -c SCHEMA_SNIPPET URL` (DJANGO_SETTINGS_MODULE=smtmigrate.settings): the
# schema Sumatra's own migrations make in the database at URL, for the floors.
SCHEMA_SNIPPET = """
import sys
import django
django.setup()
from django.core.management import call_command
from smtmigrate.locations import resolve
store = resolve(sys.argv[1], mariadb=True)
call_command("migrate", database=store.alias, run_syncdb=True, verbosity=0)
"""

CACHE = Path(os.environ.get("SMTMIGRATE_BENCH_CACHE", ROOT / "bench" / ".cache")).resolve()


def big_store(records: int = 100_000, seed: int = 0) -> Path:
    """Build the benchmark store once (about 25 s for 100k records) and reuse it."""
    path = CACHE / f"store-{records}-{seed}.sqlite"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        print(f"building {path} ({records:,} records) ...", flush=True)
        # The generator lives in the test suite (tests/storegen), not in the shipped package.
        python_path = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
        subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.storegen",
                str(partial),
                "--records",
                str(records),
                "--seed",
                str(seed),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": python_path},
        )
        partial.rename(path)
    return path


def timed(
    command: list[str], *, cwd: str | None = None, env: dict[str, str] | None = None
) -> tuple[float, int, subprocess.CompletedProcess]:
    """Run a command; return wall seconds, its peak RSS in MB, and the result."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, max(peak, before) // 1024, result


def smtmigrate_command() -> list[str]:
    script = Path(sys.executable).parent / "smtmigrate"
    return [str(script)] if script.exists() else [sys.executable, "-m", "smtmigrate"]


def _process_tree(root: int) -> list[int]:
    """`root` and all its descendants, from one scan of /proc (Linux only)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, pending = [], [root]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(children.get(pid, ()))
    return tree


def tree_rss_kb(root: int, *, include_root: bool = True) -> int:
    """Summed RSS (kB) of a process tree right now; shared pages count once per process."""
    page_kb = os.sysconf("SC_PAGE_SIZE") // 1024
    total = 0
    for pid in _process_tree(root):
        if pid == root and not include_root:
            continue
        try:
            with open(f"/proc/{pid}/statm", "rb") as statm:
                total += int(statm.read().split()[1]) * page_kb
        except (OSError, IndexError, ValueError):
            continue
    return total


class TreeRssSampler:
    """Samples the summed RSS of a process tree in a thread; `peak_mb` once stopped.

    Catches what a single process's high-water mark misses: worker processes, pipelines.
    """

    def __init__(self, root: int, *, include_root: bool = True, interval: float = 0.05):
        self.root, self.include_root, self.interval = root, include_root, interval
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            rss = tree_rss_kb(self.root, include_root=self.include_root)
            self.peak_kb = max(self.peak_kb, rss)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> TreeRssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> int:
        return self.peak_kb // 1024


def measured(
    command: list[str], *, env: dict[str, str] | None = None
) -> tuple[float, int, subprocess.CompletedProcess]:
    """Like `timed`, but the RSS is this command's alone, whatever ran before it.

    `timed` reads RUSAGE_CHILDREN, a high-water mark over every child this process ever
    waited for; here the peak is the larger of the command's own high-water mark (wait4) and
    the summed RSS of its process tree, sampled every 50 ms (workers, pipelines).
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        with TreeRssSampler(process.pid) as sampler:
            _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(
            command,
            process.returncode,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
        )
    return seconds, max(usage.ru_maxrss // 1024, sampler.peak_mb), result

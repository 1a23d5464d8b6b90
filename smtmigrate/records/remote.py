"""Reading one store in a second Python process while this one reads the other.

The work of reading records back is CPU-bound Python; on two cores, reading the source here
and the target in a child nearly halves the time of a comparison (`comparison`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import subprocess
import sys
from collections.abc import Generator

from django.db import connections

from ..errors import RecordReadError
from ..schema import Inspection
from .reader import Keyed, keyed

PARALLEL_MIN = 5_000  # records: below this, starting a process (~1 s) does not pay
BATCH = 200  # records per message from the reading process


def remote_side(source: Inspection, target: Inspection, parallel: bool | None):
    """Which store to read in another process, if any (see `compare_records`)."""
    if parallel is False:
        return None
    if not os.environ.get("DJANGO_SETTINGS_MODULE"):
        return None
    from ..snapshot import shareable

    candidates = [
        side
        for side in (target, source)
        if shareable(side.store) or not connections[side.store.alias].in_atomic_block
    ]
    if not candidates:
        return None
    side = candidates[0]
    if parallel is None:
        if (os.cpu_count() or 1) < 2:
            return None
        from sumatra.recordstore.django_store.models import Record

        if Record._base_manager.using(side.store.alias).count() < PARALLEL_MIN:
            return None
    return side


def remote_records(inspection: Inspection) -> Generator[Keyed, None, None]:
    """`keyed(inspection)`, computed by a Python process of its own.

    A plain subprocess (`python -c`) rather than `multiprocessing`: that would re-import
    the caller's `__main__` in the child (failing in any script without the
    `if __name__ == "__main__"` guard), and a fork would share this process's database
    connections. Messages are pickles on the child's stdout; its fd 1 is pointed at stderr
    so that a stray print cannot corrupt them.
    """
    process = subprocess.Popen(
        [sys.executable, "-c", _CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert process.stdin is not None and process.stdout is not None
    with contextlib.suppress(ImportError, AttributeError, OSError):  # Linux: a roomier pipe
        import fcntl

        fcntl.fcntl(process.stdout.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)
    try:
        store = dataclasses.replace(inspection.store, _alias=None)
        with contextlib.suppress(BrokenPipeError):  # died at start-up: told below
            pickle.dump((os.environ["DJANGO_SETTINGS_MODULE"], store), process.stdin)
            process.stdin.close()
        while True:
            try:
                kind, payload = pickle.load(process.stdout)
            except EOFError:
                raise RecordReadError(
                    f"the process reading {inspection.store.display} ended unexpectedly "
                    f"(exit code {process.wait()})"
                ) from None
            if kind == "done":
                return
            if kind == "error":
                raise payload
            yield from payload
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        process.stdout.close()


_CHILD = "from smtmigrate.records.remote import _reader_process; _reader_process()"


def _reader_process() -> None:
    """The reading process: send `keyed()` of the store named on stdin, in batches."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    settings_module, store = pickle.load(sys.stdin.buffer)
    os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    try:
        import django

        django.setup()
        from ..schema import inspect_store
        from ..snapshot import join_snapshot

        with join_snapshot(store):  # the state the parent reads, not the live store's
            batch: list[Keyed] = []
            for item in keyed(inspect_store(store)):
                batch.append(item)
                if len(batch) >= BATCH:
                    pickle.dump(("batch", batch), out, pickle.HIGHEST_PROTOCOL)
                    batch = []
            pickle.dump(("batch", batch), out, pickle.HIGHEST_PROTOCOL)
        pickle.dump(("done", None), out)
    except BrokenPipeError:
        return  # the comparison ended early
    except BaseException as exc:
        send_error(out, exc)
    finally:
        store.close()
        with contextlib.suppress(OSError):
            out.close()


def send_error(out, exc: BaseException) -> None:
    """Hand an exception to the parent process: as it is, or as a RecordReadError naming
    it when it cannot be pickled (the parent must still get one line to show)."""
    try:
        pickle.dumps(exc)
    except Exception:
        exc = RecordReadError(f"{type(exc).__name__}: {exc}")
    with contextlib.suppress(OSError):
        pickle.dump(("error", exc), out)

"""After the merge, before commit: every inserted record reads back equal through Sumatra.

Each source's inserted records (renamed ones under their new label) are read from the
source snapshot and from the target, inside the merge's transaction, by Sumatra's own
`to_sumatra()` (`records.read_records` + `canonical`) and compared field by field; records
taken once were compared while their identity was decided (plan.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from ..errors import RecordReadError
from ..records import (
    RecordDifference,
    canonical,
    field_differences,
    previews,
    read_records,
    sumatra_reading,
)
from ..records.remote import send_error
from ..schema import Inspection
from ..snapshot import shareable
from . import sql
from .plan import content

CHUNK = 1_000
PARALLEL_MIN = 5_000  # inserted records: below this, starting a process (~1 s) does not pay
LIMIT = 20


@dataclass
class MergeCheck:
    records: int = 0  # inserted records compared
    total_differences: int = 0
    differences: list[RecordDifference] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # the record count reconciliation
    method: str = "full"  # full: through Sumatra; rows: fingerprints in SQL; none

    @property
    def ok(self) -> bool:
        return self.total_differences == 0 and self.counts.get("missing", 0) == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "method": self.method,
            "records_compared": self.records,
            "counts": self.counts,
            "differences": [str(d) for d in self.differences],
            "total_differences": self.total_differences,
        }


def _comparable(data: dict[str, Any], label: str) -> dict[str, Any]:
    data = content(data)
    data["label"] = label
    return data


def check_inserted(cursor, q, sources: list[Inspection], target: Inspection) -> MergeCheck:
    """Every inserted record, read back through Sumatra from its source and from the
    target, compared. With many records (PARALLEL_MIN) the sources' side is read by a
    second process (joining their snapshots, as `verify` does) while this one reads the
    target's (only this transaction sees the inserted rows): two cores, about half the
    time."""
    check = MergeCheck()
    wanted = []
    for src in range(len(sources)):
        cursor.execute(sql.inserted_records(q, "django_store_record"), [src])
        wanted.append(cursor.fetchall())
    total = sum(map(len, wanted))
    with ExitStack() as stack:
        stack.enter_context(sumatra_reading())
        remote = None
        if (
            total >= PARALLEL_MIN
            and (os.cpu_count() or 1) >= 2
            and all(shareable(s.store) for s in sources)
        ):
            ids = [[old for old, _new, _label in rows] for rows in wanted]
            remote = stack.enter_context(_RemoteReader([s.store for s in sources], ids))
        for src, source in enumerate(sources):
            rows = wanted[src]
            for start in range(0, len(rows), CHUNK):
                chunk = rows[start : start + CHUNK]
                ours = {r.db_id: canonical(r) for r in read_records(target, [r[1] for r in chunk])}
                if remote is not None:
                    theirs = remote.next_chunk()
                else:
                    theirs = {
                        r.db_id: (r.project_id, canonical(r))
                        for r in read_records(source, [r[0] for r in chunk])
                    }
                _compare_chunk(check, chunk, theirs, ours)
                del theirs, ours
                # Sumatra's parameter sets (NeuroTools `ParameterSet`) are reference
                # cycles: without this they outlive their chunk until a rare full pass
                # of the collector (peak RSS 150 MB instead of ~130 at 10 x 2,000).
                gc.collect()
    return check


def _compare_chunk(check: MergeCheck, chunk, theirs: dict, ours: dict) -> None:
    for old, new, label in chunk:
        check.records += 1
        if old not in theirs or new not in ours:
            check.total_differences += 1
            continue
        project, data = theirs[old]
        a = _comparable(data, label)
        b = _comparable(ours[new], label)
        for path, x, y in field_differences(a, b):
            check.total_differences += 1
            if len(check.differences) < LIMIT:
                check.differences.append(RecordDifference(project, label, path, *previews(x, y)))


class _RemoteReader:
    """The sources' inserted records read back through Sumatra by a child process, chunk
    by chunk in the parent's order ({old id: (project, canonical)} per CHUNK of ids of
    each source in turn). The pipe holds a chunk or so: the child stays at most that far
    ahead, memory stays bounded. A plain subprocess, as records.remote explains."""

    def __init__(self, stores: list, ids: list[list[int]]) -> None:
        self.stores = [dataclasses.replace(s, _alias=None) for s in stores]
        self.ids = ids

    def __enter__(self) -> _RemoteReader:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _CHILD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # died at start-up: told by next_chunk
            pickle.dump(
                (os.environ["DJANGO_SETTINGS_MODULE"], self.stores, self.ids), self.process.stdin
            )
            self.process.stdin.close()
        return self

    def next_chunk(self) -> dict[int, tuple[str | None, dict[str, Any]]]:
        assert self.process.stdout is not None
        try:
            kind, payload = pickle.load(self.process.stdout)
        except EOFError:
            raise RecordReadError(
                f"the process reading the sources ended unexpectedly "
                f"(exit code {self.process.wait()})"
            ) from None
        if kind == "error":
            raise payload
        return payload

    def __exit__(self, *exc_info: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        assert self.process.stdout is not None
        self.process.stdout.close()


_CHILD = "from smtmigrate.merge.check import _reader_process; _reader_process()"


def _reader_process() -> None:
    """The child: each source's records of the ids given, CHUNK at a time, pickled."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print must not corrupt the pickles
    settings_module, stores, ids = pickle.load(sys.stdin.buffer)
    os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    try:
        import django

        django.setup()
        from ..schema import inspect_store
        from ..snapshot import join_snapshot

        with sumatra_reading():
            for store, wanted in zip(stores, ids, strict=True):
                with join_snapshot(store):  # the state the parent merged
                    inspection = inspect_store(store)
                    for start in range(0, len(wanted), CHUNK):
                        records = read_records(inspection, wanted[start : start + CHUNK])
                        chunk = {r.db_id: (r.project_id, canonical(r)) for r in records}
                        del records
                        pickle.dump(("chunk", chunk), out, pickle.HIGHEST_PROTOCOL)
                        del chunk
                        gc.collect()
                store.close()
    except BrokenPipeError:
        return  # the check ended early
    except BaseException as exc:
        send_error(out, exc)
    finally:
        with contextlib.suppress(OSError):
            out.close()


def check_fingerprints(cursor, q, fingerprint: Callable[[], None]) -> MergeCheck:
    """`--verify rows`: every inserted record's stored content (its fingerprint, see
    sql.fingerprints) is the same in the target as in its source; no Sumatra reading."""
    for statement in sql.drop_identity_tables():
        cursor.execute(statement)
    fingerprint()
    cursor.execute(sql.fingerprint_mismatches(q, "django_store_record"))
    compared, differing = cursor.fetchone()
    check = MergeCheck(records=compared, total_differences=differing, method="rows")
    cursor.execute(sql.fingerprint_mismatch_labels(q, "django_store_record"))
    for (label,) in cursor.fetchall():
        check.differences.append(RecordDifference(None, label, "fingerprint", "source", "target"))
    return check

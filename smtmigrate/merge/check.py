"""After the merge, before commit: every inserted record reads back equal through Sumatra.

Each source's inserted records (renamed ones under their new label) are read from the
source snapshot and from the target, inside the merge's transaction, by Sumatra's own
`to_sumatra()` (`records.read_records` + `canonical`) and compared field by field; records
taken once were compared while their identity was decided (plan.py).
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..records import (
    RecordDifference,
    canonical,
    field_differences,
    previews,
    read_records,
    sumatra_reading,
)
from ..schema import Inspection
from . import sql
from .plan import content

CHUNK = 1_000
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
    check = MergeCheck()
    with sumatra_reading():
        for src, source in enumerate(sources):
            cursor.execute(sql.inserted_records(q, "django_store_record"), [src])
            rows = cursor.fetchall()
            for start in range(0, len(rows), CHUNK):
                chunk = rows[start : start + CHUNK]
                new_ids = {old: (new, label) for old, new, label in chunk}
                theirs = {r.db_id: r for r in read_records(source, [r[0] for r in chunk])}
                ours = {r.db_id: r for r in read_records(target, [r[1] for r in chunk])}
                for old, (new, label) in new_ids.items():
                    check.records += 1
                    if old not in theirs or new not in ours:
                        check.total_differences += 1
                        continue
                    a = _comparable(canonical(theirs[old]), label)
                    b = _comparable(canonical(ours[new]), label)
                    project = theirs[old].project_id
                    for path, x, y in field_differences(a, b):
                        check.total_differences += 1
                        if len(check.differences) < LIMIT:
                            check.differences.append(
                                RecordDifference(project, label, path, *previews(x, y))
                            )
                del theirs, ours
                # Sumatra's parameter sets (NeuroTools `ParameterSet`) are reference
                # cycles: without this they outlive their chunk until a rare full pass
                # of the collector (peak RSS 150 MB instead of ~100 at 10 x 2,000).
                gc.collect()
    return check


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

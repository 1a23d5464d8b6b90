"""Record identity and conflicts: which incoming record is new, equal, or in conflict.

A record is (project, label). Only keys seen more than once over the sources and the
target are looked at (`sql.colliding_keys`). Records of one key with one fingerprint (their
stored content, computed by PostgreSQL: `sql.fingerprints`) are equal; the others are read
back through Sumatra (`records.read_records` + `canonical`, what the record-level check
compares) and compared as content: the canonical dict without the label, equal items of a
record's dependencies, platforms and inputs counted once (the merge writes one link for
them, as Sumatra's `add()` does). For each key, in order — the target's records first,
then the sources in the order given, each by id:

  * equal to a record already there (in the target, or taken from an earlier source):
    taken once — the target's record is reused (`e`), a second source's copy is left out
    (`s`), so merging the same stores again adds nothing;
  * nothing there yet: inserted (no decision row: the default);
  * different from what is there: a conflict, by policy —
      refuse          nothing is written; every conflict is listed with the fields
      skip-identical  the incoming record is left out (never overwrite), reported
      rename          inserted as `<label>-merged-<h>`, h the first 8 hex digits of the
                      SHA-256 of its content (deterministic: merging it again finds it
                      under that label, equal, and adds nothing), reported.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from ..records import canonical, field_differences, read_records, sumatra_reading
from ..schema import Inspection
from . import sql

POLICIES = ("refuse", "skip-identical", "rename")
RENAME_FORMAT = "{label}-merged-{digest}"
TARGET = -1  # the origin number of the target's own records
BATCH_KEYS = 500  # colliding keys read back per round (memory stays bounded)
FIELDS_SHOWN = 8
_COLLAPSED = ("dependencies", "platforms", "input_data")


@dataclass
class Conflict:
    """One incoming record whose label is taken by a different record."""

    project: str | None
    label: str
    source: str  # where the incoming record is
    against: str  # where the record it differs from is (the target, or an earlier source)
    fields: list[str]  # what differs (field paths as the record-level check names them)
    action: str  # "refused", "skipped", "renamed"
    new_label: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Identity:
    decisions: list[tuple[int, int, str, int | None, str | None]] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    equal: int = 0  # incoming records equal to one present: taken once
    compared: int = 0  # records read back through Sumatra to decide


def content(data: dict[str, Any]) -> dict[str, Any]:
    """What identifies a record's content: everything but its label (and reader ids)."""
    data = {k: v for k, v in data.items() if k not in ("label", "_db_id")}
    for name in _COLLAPSED:
        items = data.get(name)
        if isinstance(items, list) and len(items) > 1:
            data[name] = [item for i, item in enumerate(items) if item not in items[:i]]
    return data


def digest(data: dict[str, Any]) -> str:
    text = json.dumps(data, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def renamed(label: str, content_digest: str) -> str:
    return RENAME_FORMAT.format(label=label, digest=content_digest[:8])


@dataclass
class _Seen:
    origin: int
    db_id: int
    data: dict[str, Any]
    digest: str


def _read(inspections: dict[int, Inspection], wanted: dict[int, list[int]]) -> dict:
    """(origin, db_id) → content of those records, read back through Sumatra."""
    found = {}
    for origin, ids in wanted.items():
        for record in read_records(inspections[origin], sorted(ids)):
            data = content(canonical(record))
            found[origin, record.db_id] = (data, digest(data))
    return found


def _batches(rows: list[tuple]) -> Iterator[list[list[tuple]]]:
    """Occurrence rows (ordered by key) grouped by key, in batches of keys."""
    batch: list[list[tuple]] = []
    group: list[tuple] = []
    for row in rows:
        if group and (group[0][2], group[0][3]) != (row[2], row[3]):
            batch.append(group)
            group = []
            if len(batch) >= BATCH_KEYS:
                yield batch
                batch = []
        group.append(row)
    if group:
        batch.append(group)
    if batch:
        yield batch


def classify(
    cursor,
    q,
    inspections: dict[int, Inspection],
    names: dict[int, str],
    policy: str,
    fingerprint: Callable[[], None],
) -> Identity:
    """Decide every colliding record (see the module docstring). `inspections` and `names`
    by origin: TARGET (-1) and each source's position. `fingerprint` makes the
    fingerprint tables of the colliding records (load.fingerprint_collisions): a key whose
    records all have one fingerprint is decided without reading them back."""
    identity = Identity()
    cursor.execute(sql.colliding_keys(q, "django_store_record"))
    fingerprint()
    cursor.execute(sql.occurrences_with_fingerprints(q, "django_store_record"))
    rows = cursor.fetchall()
    renames: list[tuple[int, int, str | None, str, str, dict, str]] = []
    with sumatra_reading():
        for batch in _batches(rows):
            wanted: dict[int, list[int]] = {}
            to_read = []
            for group in batch:
                if len({row[4] for row in group}) == 1:
                    _decide_equal(group, identity)
                    continue
                to_read.append(group)
                for origin, db_id, _project, _label, _fp in group:
                    wanted.setdefault(origin, []).append(db_id)
            read = _read(inspections, wanted)
            identity.compared += len(read)
            for group in to_read:
                _decide(group, read, names, policy, identity, renames)
        if renames:
            _place_renamed(cursor, q, inspections, names, renames, identity)
    return identity


def _decide_equal(group: list[tuple], identity: Identity) -> None:
    """Records of one key with one fingerprint: the first one present stands for all."""
    first = group[0]
    for origin, db_id, *_rest in group[1:]:
        if origin == TARGET:
            continue  # the target's own twins stay as they are
        identity.equal += 1
        if first[0] == TARGET:
            identity.decisions.append((origin, db_id, "e", first[1], None))
        else:
            identity.decisions.append((origin, db_id, "s", None, None))


def _decide(group, read, names, policy, identity: Identity, renames) -> None:
    present: list[_Seen] = []
    for origin, db_id, project, label, _fp in group:
        data, hashed = read[origin, db_id]
        seen = _Seen(origin, db_id, data, hashed)
        if origin == TARGET:
            present.append(seen)
            continue
        match = next((p for p in present if p.digest == hashed), None)
        if match is not None:
            identity.equal += 1
            if match.origin == TARGET:
                identity.decisions.append((origin, db_id, "e", match.db_id, None))
            else:
                identity.decisions.append((origin, db_id, "s", None, None))
            continue
        if not present:
            present.append(seen)  # inserted as it is
            continue
        first = present[0]
        fields = [path for path, _a, _b in field_differences(first.data, data)]
        conflict = Conflict(
            project, label, names[origin], names[first.origin], fields[:FIELDS_SHOWN], ""
        )
        identity.conflicts.append(conflict)
        if policy == "rename":
            conflict.action = "renamed"
            conflict.new_label = renamed(label, hashed)
            renames.append((origin, db_id, project, label, conflict.new_label, data, hashed))
        else:
            conflict.action = "refused" if policy == "refuse" else "skipped"
            identity.decisions.append((origin, db_id, "s", None, None))


def _place_renamed(cursor, q, inspections, names, renames, identity: Identity) -> None:
    """A renamed record is new under its new label, or equal to the record already there
    (merged before); anything else there is a conflict no policy resolves."""
    by_project: dict[str | None, list[str]] = {}
    for _o, _i, project, _l, new_label, _d, _h in renames:
        by_project.setdefault(project, []).append(new_label)
    taken: dict[tuple[str | None, str], list[tuple[int, int]]] = {}
    for project, labels in by_project.items():
        cursor.execute(
            sql.labels_taken(q, "django_store_record", len(labels)), [project, *labels] * 2
        )
        for origin, db_id, label in cursor.fetchall():
            taken.setdefault((project, label), []).append((origin, db_id))
    wanted: dict[int, list[int]] = {}
    for places in taken.values():
        for origin, db_id in places:
            wanted.setdefault(origin, []).append(db_id)
    read = _read(inspections, wanted)
    placed: dict[tuple[str | None, str], str] = {}
    for origin, db_id, project, _label, new_label, _data, hashed in renames:
        key = (project, new_label)
        if key in placed:  # the same content from another source, renamed alike
            identity.equal += 1
            identity.decisions.append((origin, db_id, "s", None, None))
            continue
        there = taken.get(key, [])
        equal = [(o, i) for o, i in there if read[o, i][1] == hashed and o == TARGET]
        if equal:
            identity.equal += 1
            identity.decisions.append((origin, db_id, "e", equal[0][1], None))
        elif there:
            identity.conflicts.append(
                Conflict(
                    project,
                    new_label,
                    names[origin],
                    names[there[0][0]],
                    ["label (the renamed label is taken by a different record)"],
                    "refused",
                )
            )
            identity.decisions.append((origin, db_id, "s", None, None))
        else:
            placed[key] = new_label
            identity.decisions.append((origin, db_id, "i", None, new_label))

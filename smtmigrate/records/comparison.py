"""Comparing the records of two stores field by field: the results and how they are found.

Two stores are compared by merging their (project, label)-ordered streams (`reader.keyed`),
so memory does not grow with the store; one of them is read by a second Python process when
that pays (`remote`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError

from ..schema import Inspection
from ..threads import on_a_thread, threads_read
from .reader import Keyed, canonical, keyed, read_records, sample_ids
from .remote import remote_records, remote_side
from .sumatra_compat import sumatra_reading

SAMPLE = 1_000  # records `compare_sample` reads on each side: ~0.5 s each at 0.5 ms a record
SPLIT_AT_LEAST = 100  # records a second thread reads, or none (`_canonical_records`)
PREVIEW = 80  # characters of a value shown in a difference
# Fields that only tell records apart and are not compared.
_META_KEYS = frozenset({"_db_id"})
# Fields of list items that name the item in a difference: dependencies[name=numpy].version
_ITEM_NAMES = {"dependencies": "name", "input_data": "path", "output_data": "path"}
# Fields compared as a whole (a difference in one element names the whole list).
_ATOMIC = frozenset({"tags"})
# Many-to-many fields whose equal items a copy with --dedupe writes as one link (dedupe.py).
_COLLAPSIBLE = ("dependencies", "platforms", "input_data")
_MISSING = object()  # a key one side's dict lacks


@dataclass(frozen=True)
class RecordDifference:
    """One field of one record that differs, or a record (or project) missing on one side.

    `label` is empty for a project-level difference (field `project`, `project.name`, ...);
    a record missing on one side has field `record` and the values "present"/"missing".
    """

    project: str | None
    label: str
    field: str
    source: str  # preview of the source's value
    target: str  # preview of the target's value

    def __str__(self) -> str:
        where = f"{self.project}/{self.label}" if self.label else f"project {self.project}"
        if self.field in ("record", "project") and "missing" in (self.source, self.target):
            return f"{where}: missing in the {'target' if self.target == 'missing' else 'source'}"
        return f"{where}: {self.field}: {self.source} != {self.target}"


@dataclass
class RecordComparison:
    """The outcome of `compare_records`: counts, and the first differences found."""

    records: int = 0  # records present on both sides and compared field by field
    source_records: int = 0
    target_records: int = 0
    differing_records: int = 0  # records with at least one difference (missing ones too)
    total_differences: int = 0  # all differences found, `differences` holds the first ones
    differences: list[RecordDifference] = field(default_factory=list)
    # a sample (`compare_sample`): the source's records it was drawn from; None: all read
    population: int | None = None

    @property
    def ok(self) -> bool:
        return self.total_differences == 0

    @property
    def truncated(self) -> bool:
        return self.total_differences > len(self.differences)


def _preview(value: Any, start: int = 0) -> str:
    if value is _MISSING:
        return "(missing)"
    text = repr(value)
    if len(text) <= PREVIEW:
        return text
    start = min(max(start - PREVIEW // 4, 0), len(text) - PREVIEW + 1)
    head = "…" if start else ""
    return head + text[start : start + PREVIEW - 1 - len(head)] + "…"


def previews(source: Any, target: Any) -> tuple[str, str]:
    """Short texts of two differing values that show where they differ: long strings from
    just before the first differing character; lists (tags) by what only one side has."""
    if isinstance(source, list) and isinstance(target, list):
        try:
            only_source = [v for v in source if v not in target]
            only_target = [v for v in target if v not in source]
        except TypeError:
            pass
        else:
            if only_source or only_target:
                return (
                    f"{len(source)} items, only here: {_preview(only_source)}",
                    f"{len(target)} items, only here: {_preview(only_target)}",
                )
    a, b = _preview(source), _preview(target)
    if a == b or (a.endswith("…") and b.endswith("…")):
        left, right = repr(source), repr(target)
        start = next(
            (i for i, (x, y) in enumerate(zip(left, right, strict=False)) if x != y),
            min(len(left), len(right)),
        )
        a, b = _preview(source, start), _preview(target, start)
    return a, b


def field_differences(source: Any, target: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(field path, source value, target value) of every leaf that differs."""
    if source == target:
        return
    if isinstance(source, dict) and isinstance(target, dict) and path not in _ATOMIC:
        for key in [*source, *(k for k in target if k not in source)]:
            if not path and key in _META_KEYS:
                continue
            sub = f"{path}.{key}" if path else str(key)
            yield from field_differences(source.get(key, _MISSING), target.get(key, _MISSING), sub)
        return
    if (
        isinstance(source, list)
        and isinstance(target, list)
        and len(source) == len(target)
        and path not in _ATOMIC
    ):
        name = _ITEM_NAMES.get(path)
        for i, (a, b) in enumerate(zip(source, target, strict=True)):
            label = str(i)
            if name and isinstance(a, dict) and isinstance(b, dict) and a.get(name) == b.get(name):
                label = f"{name}={a.get(name)}"
            yield from field_differences(a, b, f"{path}[{label}]")
        return
    yield path, source, target


class _Collector:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.result = RecordComparison()

    def add(self, project, label, field_name, source, target, *, presence=False) -> None:
        """A difference; with `presence`, source and target are "present"/"missing"."""
        self.result.total_differences += 1
        if len(self.result.differences) < self.limit:
            shown = (source, target) if presence else previews(source, target)
            self.result.differences.append(RecordDifference(project, label, field_name, *shown))


def _name(label: str, data: dict[str, Any]) -> str:
    return f"{label} (db_id {data['_db_id']})" if "_db_id" in data else label


def compare_records(
    source: Inspection,
    target: Inspection,
    *,
    limit: int = 20,
    parallel: bool | None = None,
    collapse_links: bool = False,
) -> RecordComparison:
    """Compare every record of two stores through Sumatra's API, field by field.

    `differences` holds at most `limit` entries; `total_differences` counts them all.
    Projects are compared too (missing, name, description), as differences with an
    empty label.

    `parallel`: read one of the stores in a process of its own (the work is CPU-bound
    Python, so this nearly halves the time on two cores). None decides: yes when the
    store has at least `remote.PARALLEL_MIN` records, another CPU is there and Django was set up
    from a settings module. The store read elsewhere must not be in a transaction of this
    process (another connection would not see its uncommitted rows); a store that is,
    is read here, unless it is a snapshot (snapshot.py), which the other process joins.

    `collapse_links`: the target was copied with `--dedupe`; a source record linked to two
    rows that were merged into one is compared with one link (see `_collapse_links`).
    """
    collector = _Collector(limit)
    result = collector.result
    with sumatra_reading():
        _compare_projects(source, target, collector)
        remote = remote_side(source, target, parallel)
        left = remote_records(source) if remote is source else keyed(source)
        right = remote_records(target) if remote is target else keyed(target)
        try:
            _merge(left, right, collector, collapse_links=collapse_links)
        finally:
            left.close()
            right.close()
    return result


@dataclass
class Sample:
    """The source's side of `compare_sample`, readable ahead of the target's."""

    ids: list[int]
    population: int  # records in the store it was drawn from
    records: dict[int, tuple[str | None, str, dict[str, Any]]]  # db_id → project, label, data


def read_sample(source: Inspection, size: int = SAMPLE) -> Sample:
    """Up to `size` records of the store (`reader.sample_ids`), read through Sumatra."""
    with sumatra_reading():
        ids, population = sample_ids(source, size)
        records = {  # read_records queries them CHUNK at a time
            record.db_id: (record.project_id, record.label, canonical(record))
            for record in read_records(source, ids)
        }
    return Sample(ids, population, records)


def compare_sample(
    source: Inspection,
    target: Inspection,
    *,
    sample: Sample | None = None,
    size: int = SAMPLE,
    limit: int = 20,
    collapse_links: bool = False,
) -> RecordComparison:
    """`compare_records` for a sample of the source's records, paired by db_id (a copy
    keeps every record's id): all of them when there are at most `size`, else `size`
    spread evenly over the id order plus every project's newest (`reader.sample_ids`).
    `sample`: the source's side, already read (`read_sample`).

    Proves Sumatra reads the target, and reads those records as it reads the source's;
    that every other value arrived exactly is the row checksums' part (verify.py).
    """
    collector = _Collector(limit)
    result = collector.result
    with sumatra_reading():
        _compare_projects(source, target, collector)
        if sample is None:
            sample = read_sample(source, size)
        result.population = sample.population
        theirs = _canonical_records(target, sample.ids)
        for db_id in sample.ids:
            read = sample.records.get(db_id)
            if read is None:  # a live source lost it between two reads
                continue
            project, label, data = read
            result.source_records += 1
            name = f"{label} (db_id {db_id})"
            record = theirs.get(db_id)
            if record is None:
                result.differing_records += 1
                collector.add(project, name, "record", "present", "missing", presence=True)
                continue
            result.target_records += 1
            result.records += 1
            _compare_pair(project, name, data, record, collector, collapse_links)
    return result


def _canonical_records(store: Inspection, ids: list[int]) -> dict[int, dict]:
    """These records of the store as Sumatra reads them (`canonical`), by db_id; half of
    them on a thread of its own where threads read the store alike: one thread waits for
    the database while the other runs Sumatra (1,000 records: 0.65-0.8 s, not 1.1)."""

    def read(part: list[int]) -> dict[int, dict]:
        with sumatra_reading():
            return {record.db_id: canonical(record) for record in read_records(store, part)}

    if len(ids) < 2 * SPLIT_AT_LEAST or not threads_read(store):
        return read(ids)
    half = len(ids) // 2
    other = on_a_thread(read, ids[half:], store.store, name="sample")
    mine = read(ids[:half])
    return {**mine, **other.result()}


def _compare_projects(source: Inspection, target: Inspection, collector: _Collector) -> None:
    """Projects missing on one side, or with another name or description."""
    source_projects, target_projects = _project_rows(source), _project_rows(target)
    for pid in sorted(source_projects.keys() | target_projects.keys()):
        a, b = source_projects.get(pid), target_projects.get(pid)
        if a is None or b is None:
            collector.add(
                pid,
                "",
                "project",
                "present" if a else "missing",
                "present" if b else "missing",
                presence=True,
            )
            continue
        for field_name, x, y in zip(("name", "description"), a, b, strict=True):
            if x != y:
                collector.add(pid, "", f"project.{field_name}", x, y)


def _compare_pair(project, name: str, a: dict, b: dict, collector: _Collector, collapse_links):
    """One record present on both sides, field by field."""
    if collapse_links:
        _collapse_links(a)
    if a != b:
        found = False
        for path, x, y in field_differences(a, b):
            found = True
            collector.add(project, name, path, x, y)
        collector.result.differing_records += found


def _project_rows(inspection: Inspection) -> dict[str, tuple[str, str]]:
    """Project id → (name, description)."""
    from sumatra.recordstore.django_store.models import Project

    try:
        rows = Project._base_manager.using(inspection.store.alias).values_list(
            "id", "name", "description"
        )
        return {pid: (name, description) for pid, name, description in rows}
    except DatabaseError as exc:
        raise inspection.store.read_error(exc) from exc


def _collapse_links(data: dict[str, Any]) -> dict[str, Any]:
    """A record as a deduplicating copy writes it: equal items of its dependencies and
    platforms are one link (equal items can only come from rows that were merged)."""
    for name in _COLLAPSIBLE:
        items = data.get(name)
        if isinstance(items, list) and len(items) > 1:
            data[name] = [item for i, item in enumerate(items) if item not in items[:i]]
    return data


def _merge(
    left: Iterator[Keyed], right: Iterator[Keyed], collector: _Collector, *, collapse_links=False
) -> None:
    result = collector.result
    a, b = next(left, None), next(right, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            assert a is not None  # the loop runs while one side has a record
            result.source_records += 1
            result.differing_records += 1
            collector.add(a[1], _name(a[2], a[3]), "record", "present", "missing", presence=True)
            a = next(left, None)
        elif a is None or (b is not None and b[0] < a[0]):
            result.target_records += 1
            result.differing_records += 1
            collector.add(b[1], _name(b[2], b[3]), "record", "missing", "present", presence=True)
            b = next(right, None)
        else:
            result.source_records += 1
            result.target_records += 1
            result.records += 1
            _compare_pair(a[1], _name(a[2], a[3]), a[3], b[3], collector, collapse_links)
            a, b = next(left, None), next(right, None)

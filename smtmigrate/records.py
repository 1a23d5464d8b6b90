"""Record-level verification: every record read back through Sumatra's own API, compared.

Each record of every project is rebuilt by Sumatra's own `models.Record.to_sumatra()` and
turned into a dict by Sumatra's `formatting.record2dict` (what `smt export` writes), then
the records of two stores are compared field by field, tags included. A difference names
the project, the record's label and the field (`executable.options`,
`dependencies[name=numpy].version`, `tags`, ...).

Stores are read through *our* Django connection aliases (`Store.alias`), never through
Sumatra's `DjangoRecordStore`, which configures Django itself. That works for every layout
smtmigrate knows: today's models read the record/executable/... tables of a 0.7 store
(same names and columns); only tags differ, and those are read here with one query per
chunk from whichever tag tables the store has (`tagging_*` in 0.7, `django_store_*` in
0.8), joined on the record content type of the store's own `django_content_type`.

Speed (this runs after every copy): a store is read in chunks of `CHUNK` records, each
with a fixed number of queries (records; their M2M links; tags; output keys; the shared
rows not seen yet). Shared, deduplicated rows (executables, repositories, launch modes,
datastores, parameter sets, dependencies, platforms, input keys) are Django model
instances loaded once, their `to_sumatra()` memoised per (model, pk) in a bounded LRU, so
Sumatra builds each of them once. Records and output keys are lightweight stand-ins that
run Sumatra's own `to_sumatra()` (see `_row_classes`). Two stores are compared by merging
their (project, label)-ordered streams, so memory does not grow with the store; one of
them is read by a second Python process when that pays (see `compare_records`).
Sumatra's own work (parsing parameter sets, building objects, `record2dict`) is most of
what remains.

Canonical form (what is compared), beyond `record2dict`:
  * timestamps (`timestamp`, every data key's `creation`) are ISO 8601 in UTC with
    microseconds (`record2dict` drops them);
  * `tags` is a sorted list (as `record2dict` writes it);
  * `input_data`, `output_data`, `dependencies` and `platforms` are sorted by content: the
    store keeps no order for them (Sumatra's own read orders by path/name and leaves ties
    and platforms to the database), so two correct stores may list them differently;
  * a record that Sumatra cannot rebuild (`to_sumatra()` raises, e.g. an unknown launch
    mode type or a label Sumatra rejects) is described by its raw column values plus
    `_unreadable` (the error), so it is still compared, never skipped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import pickle
import subprocess
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cache
from itertools import islice
from operator import attrgetter
from typing import Any

from django.db import DatabaseError, connections
from django.db.models import BooleanField
from django.db.models.expressions import RawSQL
from django.db.models.functions import Collate
from sumatra.formatting import record2dict

from .schema import Inspection

CHUNK = 1000  # records per round of queries: ~1000 ids in an IN list, well under limits
MEMO_SIZE = 4_096  # shared rows kept per model (least recently used ones go): bounds memory
MEMO_SIZES = {"parameterset": 2_000}  # big, and shared only by records with equal parameters
GC_THRESHOLD = 10_000  # allocations between young-generation collections while reading
PREVIEW = 80  # characters of a value shown in a difference
# Fields that only tell records apart and are not compared.
_META_KEYS = frozenset({"_db_id"})
# Fields of list items that name the item in a difference: dependencies[name=numpy].version
_ITEM_NAMES = {"dependencies": "name", "input_data": "path", "output_data": "path"}
# Fields compared as a whole (a difference in one element names the whole list).
_ATOMIC = frozenset({"tags"})
# Many-to-many fields whose equal items a copy with --dedupe writes as one link (dedupe.py).
_COLLAPSIBLE = ("dependencies", "platforms")

# Record's foreign keys to shared rows (all of them are read by `Record.to_sumatra`).
_FOREIGN_KEYS = (
    "executable",
    "repository",
    "launch_mode",
    "datastore",
    "input_datastore",
    "parameters",
)
# Record's many-to-many fields (to shared rows).
_MANY_TO_MANY = ("input_data", "dependencies", "platforms")


# --------------------------------------------------------------------------- results


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
    records: int = 0  # records present on both sides and compared field by field
    source_records: int = 0
    target_records: int = 0
    differing_records: int = 0  # records with at least one difference (missing ones too)
    total_differences: int = 0  # all differences found, `differences` holds the first ones
    differences: list[RecordDifference] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.total_differences == 0

    @property
    def truncated(self) -> bool:
        return self.total_differences > len(self.differences)


# --------------------------------------------------------------------------- Sumatra patches

_patch_lock = threading.Lock()
_patch_depth = 0
_patch_undo: list[tuple[object, str, object]] = []
_gc_threshold: tuple[int, ...] = ()
_MISSING = object()
_TAGS_ATTR = "_smtmigrate_tags"


class _Tag:
    """What `Record.to_sumatra()` needs of a tag: its name."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


def _patches() -> list[tuple[object, str, object]]:
    """(owner, attribute, replacement) for every patch `sumatra_reading()` applies.

    Each exists because reading a record back must neither touch the `default` database
    (a dummy in our settings), nor the file system, nor the environment:

    * `TagManager.get_for_object`: `Record.to_sumatra()` asks it for the record's tags, a
      query per record on the `default` database. The replacement returns the tags that
      were fetched in bulk from the record's own store and attached to the record
      instance; for any other object it defers to the original.
    * `FileSystemDataStore.root` (a property whose setter mkdirs the root, also used by
      `Record()` through `datastore.copy()`): verification must never create directories.
      The replacement stores the value, as the original does, without looking at the disk.
    * `GitRepository._get_upstream` (and Mercurial's): when the stored upstream is empty,
      Sumatra opens the repository on disk to read its remote. That is slow, the path may
      not exist here, and it would show the working copy's remote instead of what the store
      holds (hiding a difference in the stored `upstream`). The replacement returns None:
      the stored value is what is compared.
    * `Executable._find_executable` / `_get_version` (and subclasses' `_get_version`): when
      the stored path does not exist or the stored version is empty, Sumatra searches PATH
      (printing "Using ..."), or runs the program (`--version`, a subprocess, files written
      by GENESIS). `DistributedLaunchMode()` does the same for its `mpirun`. The
      replacements keep the stored path and version.
    """
    from sumatra import programs, versioncontrol
    from sumatra.core import get_registered_components
    from sumatra.datastore.filesystem import FileSystemDataStore
    from sumatra.recordstore.django_store.tagging import TagManager

    original_get_for_object = TagManager.get_for_object

    def get_for_object(self, obj):
        names = getattr(obj, _TAGS_ATTR, None)
        if names is None:
            return original_get_for_object(self, obj)
        return [_Tag(name) for name in names]

    def set_root(self, value):
        self._root = value

    root = property(FileSystemDataStore.root.fget, set_root)

    patches: list[tuple[object, str, object]] = [
        (TagManager, "get_for_object", get_for_object),
        (FileSystemDataStore, "root", root),
        (programs.Executable, "_find_executable", lambda self, name: name),
    ]
    executables = {programs.Executable, *get_registered_components(programs.Executable).values()}
    for cls in sorted(executables, key=lambda c: c.__qualname__):
        if "_get_version" in vars(cls):
            patches.append((cls, "_get_version", lambda self: ""))
    for module in versioncontrol.vcs_list:
        for obj in vars(module).values():
            if isinstance(obj, type) and "_get_upstream" in vars(obj):
                patches.append((obj, "_get_upstream", lambda self: None))
    return patches


@contextmanager
def sumatra_reading() -> Iterator[None]:
    """Patch Sumatra (see `_patches`) for as long as any reader is inside.

    Re-entrant and shared: the merge of two stores interleaves two readers, so the patches
    are applied when the first enters and undone when the last leaves. Every replacement is
    stateless (per-record data travels on the record instance), so nesting is harmless.
    The patches are process-wide while active: nothing else in the process should build
    Sumatra objects meanwhile expecting Sumatra's side effects.

    Also runs the young-generation garbage collector less often (`GC_THRESHOLD`): reading
    allocates millions of short-lived, acyclic objects (freed by reference counting) that
    the default threshold (700) makes it scan over and over, ~8 % of the time.
    """
    global _patch_depth, _gc_threshold
    with _patch_lock:
        if _patch_depth == 0:
            _gc_threshold = gc.get_threshold()
            gc.set_threshold(max(_gc_threshold[0], GC_THRESHOLD), *_gc_threshold[1:])
            for owner, name, replacement in _patches():
                _patch_undo.append((owner, name, vars(owner).get(name, _MISSING)))
                setattr(owner, name, replacement)
        _patch_depth += 1
    try:
        yield
    finally:
        with _patch_lock:
            _patch_depth -= 1
            if _patch_depth == 0:
                while _patch_undo:
                    owner, name, original = _patch_undo.pop()
                    if original is _MISSING:
                        delattr(owner, name)
                    else:
                        setattr(owner, name, original)
                gc.set_threshold(*_gc_threshold)


# --------------------------------------------------------------------------- reading


class _Memo:
    """A shared row's `to_sumatra()`, built once by Sumatra's own method and then reused.

    Installed as the instance attribute `to_sumatra`, so `Record.to_sumatra()` calling
    `self.executable.to_sumatra()` gets it. An error is not cached: it is raised again by
    a fresh call, for every record that uses the row.
    """

    __slots__ = ("instance", "value")

    def __init__(self, instance) -> None:
        self.instance = instance
        self.value = _MISSING

    def __call__(self):
        if self.value is _MISSING:
            self.value = type(self.instance).to_sumatra(self.instance)
        return self.value


class _SharedRows:
    """Shared rows of one store, by model and pk, each with its memoised `to_sumatra()`.

    Real model instances, so Sumatra's `to_sumatra()` runs on what Django reads. Bounded:
    each model keeps its `MEMO_SIZE` most recently used rows (parameter sets, big and
    rarely shared, fewer), so memory does not grow with the store.
    """

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.rows: dict[type, OrderedDict[Any, Any]] = {}

    def get_many(self, model, pks: Iterable, *, sortable: bool = False) -> dict[Any, Any]:
        """The rows of these pks (those that exist); `sortable` gives each its sort key."""
        cache = self.rows.get(model)
        if cache is None:
            cache = self.rows[model] = OrderedDict()
        wanted = set(pks)
        wanted.discard(None)
        missing = []
        for pk in wanted:
            if pk in cache:
                cache.move_to_end(pk)
            else:
                missing.append(pk)
        if missing:
            column = connections[self.alias].ops.quote_name(model._meta.pk.column)
            found = model._base_manager.using(self.alias).filter(
                RawSQL(f"{column} IN ({_in_list(missing)})", (), BooleanField())
            )
            for instance in found.order_by():
                instance.to_sumatra = _Memo(instance)
                if sortable:
                    instance._smtmigrate_key = _content_key(instance)
                cache[instance.pk] = instance
        rows = {pk: cache[pk] for pk in wanted if pk in cache}
        size = MEMO_SIZES.get(model._meta.model_name, MEMO_SIZE)
        while len(cache) > size:
            cache.popitem(last=False)
        return rows


class _Related(list):
    """A record's related rows, as its related manager hands them to `to_sumatra()`."""

    __slots__ = ()

    def all(self) -> _Related:
        return self


@cache
def _row_classes() -> tuple[type, type, tuple[str, ...], tuple[str, ...]]:
    """Stand-ins for `Record` and output `DataKey` instances that run Sumatra's own methods.

    A model instance costs ~40 µs to build and each related manager that
    `Record.to_sumatra()` touches another ~10 µs; these carry the same values (read through
    Django, with its converters: aware datetimes, floats, ...) in slots, and borrow
    `to_sumatra` (and `DataKey.get_metadata`) from Sumatra's models unchanged.
    """
    from sumatra.recordstore.django_store import models as sm

    record_columns = tuple(f.attname for f in sm.Record._meta.concrete_fields)
    key_columns = ("output_from_record_id", "path", "digest", "creation", "metadata")

    class RecordRow:
        __slots__ = (*record_columns, *_FOREIGN_KEYS, *_MANY_TO_MANY, "output_data", _TAGS_ATTR)
        to_sumatra = sm.Record.to_sumatra

    class DataKeyRow:
        __slots__ = (*key_columns, "_smtmigrate_key")
        get_metadata = sm.DataKey.get_metadata
        to_sumatra = sm.DataKey.to_sumatra

    return RecordRow, DataKeyRow, record_columns, key_columns


def _in_list(ids: list[int]) -> str:
    """`IN (...)` of integers read from the store itself: inlined, no parameter limits."""
    return ", ".join(str(int(i)) for i in ids)


class _StoreReader:
    """Reads the records of one store, chunk by chunk, ready for `to_sumatra()`."""

    def __init__(self, inspection: Inspection) -> None:
        from sumatra.recordstore.django_store import models as sm

        self.sm = sm
        self.inspection = inspection
        self.store = inspection.store
        self.alias = self.store.alias
        self.connection = self.store.connection
        self.shared = _SharedRows(self.alias)
        self.quote = self.connection.ops.quote_name
        self.tag_sql = self._tag_sql()
        self.link_sql = {}
        for name in _MANY_TO_MANY:
            m2m = sm.Record._meta.get_field(name)
            through = m2m.remote_field.through._meta
            source = through.get_field(m2m.m2m_field_name()).column
            target = through.get_field(m2m.m2m_reverse_field_name()).column
            table = self.inspection.stored_name(through.db_table)
            self.link_sql[name] = (
                m2m.related_model,
                f"SELECT {self.quote(source)}, {self.quote(target)} "
                f"FROM {self.quote(table)} WHERE {self.quote(source)} IN ({{}})",
            )

    def _tag_sql(self) -> str | None:
        """SQL for the tag names of a chunk of records, or None if the store has none.

        Tagged items point at the store's own content type of (django_store, record)."""
        tagged = self.inspection.table_for("django_store_taggeditem")
        tags = self.inspection.table_for("django_store_tag")
        if tagged is None or tags is None:
            return None
        if "django_content_type" not in self.inspection.table_names:
            return None
        with self.connection.cursor() as cursor:
            cursor.execute(
                "SELECT id FROM django_content_type WHERE app_label = %s AND model = %s",
                ["django_store", "record"],
            )
            row = cursor.fetchone()
        if row is None:
            return None
        q = self.quote
        return (
            f"SELECT ti.object_id, t.name FROM {q(tagged.name)} ti "
            f"JOIN {q(tags.name)} t ON t.id = ti.tag_id "
            f"WHERE ti.content_type_id = {int(row[0])} AND ti.object_id IN ({{}})"
        )

    def _query(self, sql: str, ids: list[int]) -> list[tuple]:
        with self.connection.cursor() as cursor:
            cursor.execute(sql.format(_in_list(ids)))
            return cursor.fetchall()

    def projects(self) -> list[str | None]:
        """Every project that has records, in merge order (records with no project first:
        Sumatra cannot list them, but a copy must carry them)."""
        ids = set(
            self.sm.Record._base_manager.using(self.alias)
            .order_by()
            .values_list("project_id", flat=True)
            .distinct()
        )
        return sorted(ids, key=_project_key)

    def records(self, project: str | None) -> Iterator[list]:
        """The project's records in chunks, ordered by (label, db_id), labels by code point
        (Python's string order, which the merge relies on): SQLite's default BINARY
        collation is that order, PostgreSQL's is asked for with COLLATE "C"."""
        label: Any = "label"
        if self.connection.vendor == "postgresql":
            label = Collate("label", "C")
        queryset = self.sm.Record._base_manager.using(self.alias)
        if project is None:
            queryset = queryset.filter(project__isnull=True)
        else:
            queryset = queryset.filter(project_id=project)
        yield from self._chunks(queryset.order_by(label, "db_id"))

    def records_by_id(self, ids: list[int]) -> Iterator[list]:
        """The records `ids`, in chunks, in id order."""
        for start in range(0, len(ids), CHUNK):
            some = ids[start : start + CHUNK]
            queryset = self.sm.Record._base_manager.using(self.alias).filter(db_id__in=some)
            yield from self._chunks(queryset.order_by("db_id"))

    def _chunks(self, queryset) -> Iterator[list]:
        record_row, _, columns, _ = _row_classes()
        rows = queryset.values_list(*columns).iterator(CHUNK)
        while values := list(islice(rows, CHUNK)):
            chunk = []
            for row in values:
                record = record_row()
                for name, value in zip(columns, row, strict=True):
                    setattr(record, name, value)
                chunk.append(record)
            self._attach(chunk)
            yield chunk

    def _attach(self, chunk: list) -> None:
        """Give every record of the chunk its related rows and tags, as Django's
        select_related/prefetch_related would, with shared rows loaded once per store."""
        sm = self.sm
        _, key_row, _, key_columns = _row_classes()
        ids = [record.db_id for record in chunk]
        by_id = {}
        for record in chunk:
            by_id[record.db_id] = record
            for name in (*_MANY_TO_MANY, "output_data"):
                setattr(record, name, _Related())
        for name in _FOREIGN_KEYS:
            fk = sm.Record._meta.get_field(name)
            attname = fk.attname
            rows = self.shared.get_many(fk.related_model, (getattr(r, attname) for r in chunk))
            for record in chunk:
                setattr(record, name, rows.get(getattr(record, attname)))
        for name, (model, sql) in self.link_sql.items():
            links = self._query(sql, ids)
            rows = self.shared.get_many(model, (target for _, target in links), sortable=True)
            for record_id, target_id in links:
                if target_id in rows:
                    getattr(by_id[record_id], name).append(rows[target_id])
        keys = (
            sm.DataKey._base_manager.using(self.alias)
            .filter(RawSQL(f"output_from_record_id IN ({_in_list(ids)})", (), BooleanField()))
            .order_by()
            .values_list(*key_columns)
        )
        for values in keys:
            key = key_row()
            for name, value in zip(key_columns, values, strict=True):
                setattr(key, name, value)
            key._smtmigrate_key = repr(values[1:])
            by_id[key.output_from_record_id].output_data.append(key)
        for record in chunk:
            setattr(record, _TAGS_ATTR, [])
        if self.tag_sql is not None:
            for object_id, name in self._query(self.tag_sql, ids):
                record = by_id.get(int(object_id))
                if record is not None:
                    getattr(record, _TAGS_ATTR).append(name)
        for record in chunk:
            for name in (*_MANY_TO_MANY, "output_data"):
                items = getattr(record, name)
                if len(items) > 1:
                    items.sort(key=_SORT_KEY)


def _content_key(instance) -> str:
    """A sort key from a row's own values: not its id nor its foreign keys, which another
    store numbers differently."""
    return repr(
        tuple(
            getattr(instance, f.attname)
            for f in instance._meta.concrete_fields
            if not f.primary_key and not f.is_relation
        )
    )


_SORT_KEY = attrgetter("_smtmigrate_key")


def _project_key(project: str | None) -> tuple[int, str]:
    return (0, "") if project is None else (1, project)


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc)
        return value.isoformat()
    return value


def canonical(record) -> dict[str, Any]:
    """A record (related rows and tags attached) as a comparable, JSON-able dict."""
    try:
        sumatra_record = record.to_sumatra()
        data = record2dict(sumatra_record)
    except Exception as exc:  # Sumatra cannot rebuild it: compare what the store holds
        return _raw(record, exc)
    data["timestamp"] = _iso(sumatra_record.timestamp)
    for name in ("input_data", "output_data"):
        for item, key in zip(data[name], getattr(sumatra_record, name), strict=True):
            item["creation"] = _iso(key.creation)
    return data


def _raw(record, exc: Exception) -> dict[str, Any]:
    """Column values of a record Sumatra cannot rebuild, and of its related rows."""
    _, _, record_columns, key_columns = _row_classes()

    def values(instance) -> dict[str, Any] | None:
        if instance is None:
            return None
        return {
            f.attname: _iso(getattr(instance, f.attname))
            for f in instance._meta.concrete_fields
            if not f.primary_key and not f.is_relation
        }

    ids = {f"{name}_id" for name in _FOREIGN_KEYS}
    skip = {"db_id", "project_id", "tags"}  # tags: the denormalised copy, see `tags` below
    data: dict[str, Any] = {
        name: _iso(getattr(record, name))
        for name in record_columns
        if name not in skip and name not in ids
    }
    for name in _FOREIGN_KEYS:
        data[name] = values(getattr(record, name))
    for name in _MANY_TO_MANY:
        data[name] = [values(item) for item in getattr(record, name)]
    data["output_data"] = [
        {name: _iso(getattr(key, name)) for name in key_columns[1:]} for key in record.output_data
    ]
    data["tags"] = sorted(getattr(record, _TAGS_ATTR))
    data["_unreadable"] = f"{type(exc).__name__}: {exc}"
    return data


Keyed = tuple[tuple, "str | None", str, dict[str, Any]]


def _read(inspection: Inspection) -> Iterator[tuple[str | None, str, int, dict[str, Any]]]:
    """(project, label, db_id, canonical) of every record, in merge order."""
    with sumatra_reading():
        reader = _StoreReader(inspection)
        try:
            for project in reader.projects():
                for chunk in reader.records(project):
                    for record in chunk:
                        yield project, record.label, record.db_id, canonical(record)
        except DatabaseError as exc:
            raise inspection.store.read_error(exc) from exc


def read_records(inspection: Inspection, ids: list[int]) -> list:
    """The records `ids` of a store, ready for Sumatra's `to_sumatra()` and `canonical()`
    (the caller holds `sumatra_reading()`)."""
    reader = _StoreReader(inspection)
    try:
        return [record for chunk in reader.records_by_id(ids) for record in chunk]
    except DatabaseError as exc:
        raise inspection.store.read_error(exc) from exc


def _keyed(inspection: Inspection) -> Iterator[Keyed]:
    """Records with their merge key ((0|1, project), label, n): n numbers records that
    share a label within a project, in db_id order; those get `_db_id` in their dict."""
    group: list[tuple[str | None, str, int, dict[str, Any]]] = []
    previous: tuple | None = None

    def flush() -> Iterator[Keyed]:
        for n, (project, label, db_id, data) in enumerate(group):
            if len(group) > 1:
                data["_db_id"] = db_id
            yield (_project_key(project), label, n), project, label, data

    for item in _read(inspection):
        key = (_project_key(item[0]), item[1])
        if previous is not None and key != previous:
            if key < previous:
                raise RuntimeError(
                    f"{inspection.store.display}: records came back out of order "
                    f"({previous!r} before {key!r}); cannot merge"
                )
            yield from flush()
            group = []
        group.append(item)
        previous = key
    yield from flush()


def iter_records(inspection: Inspection) -> Iterator[tuple[str | None, str, dict[str, Any]]]:
    """(project_id, label, canonical) of every record of every project of a store.

    Ordered by (project, label), labels by code point; records with no project (invisible
    to Sumatra) come first, with project None. Labels are unique per project in practice;
    records that share a label are yielded consecutively in db_id order and their dict
    carries an extra `_db_id` to tell them apart (not compared by `compare_records`, which
    pairs such records by their rank in db_id order).

    Sumatra stays patched (`sumatra_reading`) until the iterator is exhausted or closed.
    """
    for _key, project, label, data in _keyed(inspection):
        yield project, label, data


# --------------------------------------------------------------------------- comparing


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
    store has at least `PARALLEL_MIN` records, another CPU is there and Django was set up
    from a settings module. The store read elsewhere must not be in a transaction of this
    process (another connection would not see its uncommitted rows); a store that is,
    is read here, unless it is a snapshot (snapshot.py), which the other process joins.

    `collapse_links`: the target was copied with `--dedupe`; a source record linked to two
    rows that were merged into one is compared with one link (see `_collapse_links`).
    """
    collector = _Collector(limit)
    result = collector.result
    with sumatra_reading():
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

        remote = _remote_side(source, target, parallel)
        left = _remote_records(source) if remote is source else _keyed(source)
        right = _remote_records(target) if remote is target else _keyed(target)
        try:
            _merge(left, right, collector, collapse_links=collapse_links)
        finally:
            left.close()
            right.close()
    return result


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
            result.source_records += 1
            result.differing_records += 1
            collector.add(a[1], _name(a[2], a[3]), "record", "present", "missing", presence=True)
            a = next(left, None)
        elif a is None or b[0] < a[0]:
            result.target_records += 1
            result.differing_records += 1
            collector.add(b[1], _name(b[2], b[3]), "record", "missing", "present", presence=True)
            b = next(right, None)
        else:
            result.source_records += 1
            result.target_records += 1
            result.records += 1
            if collapse_links:
                _collapse_links(a[3])
            if a[3] != b[3]:
                found = False
                for path, x, y in field_differences(a[3], b[3]):
                    found = True
                    collector.add(a[1], _name(a[2], a[3]), path, x, y)
                result.differing_records += found
            a, b = next(left, None), next(right, None)


# --------------------------------------------------------------------------- parallel reading

PARALLEL_MIN = 5_000  # records: below this, starting a process (~1 s) does not pay
BATCH = 200  # records per message from the reading process


def _remote_side(source: Inspection, target: Inspection, parallel: bool | None):
    """Which store to read in another process, if any (see `compare_records`)."""
    if parallel is False:
        return None
    if not os.environ.get("DJANGO_SETTINGS_MODULE"):
        return None
    from .snapshot import shareable

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


def _remote_records(inspection: Inspection) -> Iterator[Keyed]:
    """`_keyed(inspection)`, computed by a Python process of its own.

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
                raise RuntimeError(
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


_CHILD = "from smtmigrate.records import _reader_process; _reader_process()"


def _reader_process() -> None:
    """The reading process: send `_keyed()` of the store named on stdin, in batches."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    settings_module, store = pickle.load(sys.stdin.buffer)
    os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    try:
        import django

        django.setup()
        from .schema import inspect_store
        from .snapshot import join_snapshot

        with join_snapshot(store):  # the state the parent reads, not the live store's
            batch: list[Keyed] = []
            for item in _keyed(inspect_store(store)):
                batch.append(item)
                if len(batch) >= BATCH:
                    pickle.dump(("batch", batch), out, pickle.HIGHEST_PROTOCOL)
                    batch = []
            pickle.dump(("batch", batch), out, pickle.HIGHEST_PROTOCOL)
        pickle.dump(("done", None), out)
    except BrokenPipeError:
        return  # the comparison ended early
    except BaseException as exc:
        try:
            pickle.dumps(exc)
        except Exception:
            exc = RuntimeError(f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(OSError):
            pickle.dump(("error", exc), out)
    finally:
        store.close()
        with contextlib.suppress(OSError):
            out.close()

"""Reading records back through Sumatra's own API, as comparable dicts.

Each record of every project is rebuilt by Sumatra's own `models.Record.to_sumatra()` and
turned into a dict by Sumatra's `formatting.record2dict` (what `smt export` writes), plus
the canonical touches below; `comparison` compares those dicts.

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
run Sumatra's own `to_sumatra()` (see `row_classes`). Sumatra's own work (parsing
parameter sets, building objects, `record2dict`) is most of what remains.

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

from collections.abc import Generator, Iterator
from datetime import datetime, timezone
from itertools import islice
from typing import Any

from django.db import DatabaseError
from django.db.models import BooleanField
from django.db.models.expressions import RawSQL
from django.db.models.functions import Collate
from sumatra.formatting import record2dict

from ..errors import RecordReadError
from ..schema import CONTENT_TYPE_TABLE, RECORD_TABLE, Inspection
from .rows import FOREIGN_KEYS, MANY_TO_MANY, SORT_KEY, Related, SharedRows, in_list, row_classes
from .sumatra_compat import TAGS_ATTR, sumatra_reading

CHUNK = 1000  # records per round of queries: ~1000 ids in an IN list, well under limits


class _StoreReader:
    """Reads the records of one store, chunk by chunk, ready for `to_sumatra()`."""

    def __init__(self, inspection: Inspection) -> None:
        from sumatra.recordstore.django_store import models as sm

        self.sm = sm
        self.inspection = inspection
        self.store = inspection.store
        self.alias = self.store.alias
        self.connection = self.store.connection
        self.shared = SharedRows(self.alias)
        self.quote = inspection.engine.quote_name
        self.tag_sql = self._tag_sql()
        self.key_link = self.quote(sm.DataKey._meta.get_field("output_from_record").column)
        self.link_sql = {}
        for name in MANY_TO_MANY:
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
        if CONTENT_TYPE_TABLE not in self.inspection.table_names:
            return None
        with self.connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id FROM {self.quote(CONTENT_TYPE_TABLE)} "
                "WHERE app_label = %s AND model = %s",
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
            cursor.execute(sql.format(in_list(ids)))
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
        if self.inspection.engine.label_collation:
            label = Collate("label", self.inspection.engine.label_collation)
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
        record_row, _, columns, _ = row_classes()
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
        _, key_row, _, key_columns = row_classes()
        ids = [record.db_id for record in chunk]
        by_id = {}
        for record in chunk:
            by_id[record.db_id] = record
            for name in (*MANY_TO_MANY, "output_data"):
                setattr(record, name, Related())
        for name in FOREIGN_KEYS:
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
            .filter(RawSQL(f"{self.key_link} IN ({in_list(ids)})", (), BooleanField()))
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
            setattr(record, TAGS_ATTR, [])
        if self.tag_sql is not None:
            for object_id, name in self._query(self.tag_sql, ids):
                record = by_id.get(int(object_id))
                if record is not None:
                    getattr(record, TAGS_ATTR).append(name)
        for record in chunk:
            for name in (*MANY_TO_MANY, "output_data"):
                items = getattr(record, name)
                if len(items) > 1:
                    items.sort(key=SORT_KEY)


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
    _, _, record_columns, key_columns = row_classes()

    def values(instance) -> dict[str, Any] | None:
        if instance is None:
            return None
        return {
            f.attname: _iso(getattr(instance, f.attname))
            for f in instance._meta.concrete_fields
            if not f.primary_key and not f.is_relation
        }

    ids = {f"{name}_id" for name in FOREIGN_KEYS}
    skip = {"db_id", "project_id", "tags"}  # tags: the denormalised copy, see `tags` below
    data: dict[str, Any] = {
        name: _iso(getattr(record, name))
        for name in record_columns
        if name not in skip and name not in ids
    }
    for name in FOREIGN_KEYS:
        data[name] = values(getattr(record, name))
    for name in MANY_TO_MANY:
        data[name] = [values(item) for item in getattr(record, name)]
    data["output_data"] = [
        {name: _iso(getattr(key, name)) for name in key_columns[1:]} for key in record.output_data
    ]
    data["tags"] = sorted(getattr(record, TAGS_ATTR))
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


def sample_ids(inspection: Inspection, size: int) -> tuple[list[int], int]:
    """Up to `size` record ids spread evenly over the store's id order (the first id of
    each of `size` equal slices of it), plus every project's newest record (what `smt
    list` shows first); and the store's record count. Chosen by the database, so a store
    of a million records costs one scan of its ids and no memory."""
    quote = inspection.engine.quote_name
    table = quote(inspection.stored_name(RECORD_TABLE))
    db_id, project = quote("db_id"), quote("project_id")
    try:
        with inspection.store.connection.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM {table}")
            (population,) = cursor.fetchone()
            # the record at 0-based position r starts slice i when r * size - i * population
            # lies in [0, size): one per slice
            cursor.execute(
                f"SELECT {db_id} FROM (SELECT {db_id}, "
                f"row_number() OVER (ORDER BY {db_id}) - 1 AS ordinal FROM {table}) ranked "
                "WHERE ordinal * %s %% %s < %s",
                [size, max(population, 1), size],
            )
            chosen = {row[0] for row in cursor.fetchall()}
            cursor.execute(f"SELECT max({db_id}) FROM {table} GROUP BY {project}")
            chosen.update(row[0] for row in cursor.fetchall())
    except DatabaseError as exc:
        raise inspection.store.read_error(exc) from exc
    return sorted(chosen), population


def keyed(inspection: Inspection) -> Generator[Keyed, None, None]:
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
                raise RecordReadError(
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
    for _key, project, label, data in keyed(inspection):
        yield project, label, data

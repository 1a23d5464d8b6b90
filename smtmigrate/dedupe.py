"""Rows Sumatra's get_or_create can no longer tell apart: found, and merged by a copy.

Sumatra 0.8.1 saves a record's shared rows with
`SumatraObjectsManager.get_or_create_from_sumatra_object` (`DjangoRecordStore._get_db_obj`),
i.e. `Model.objects.get_or_create(**attributes)` where `attributes` are *all* the model's
fields but `id` and its reverse relations. The tables have no unique constraint, so the
first concurrent runs of a project can each create the row; every later `get` of it then
raises `MultipleObjectsReturned`, and `smt run` crashes (it is not a database error, so
`Project.add_record` does not even retry). What identifies a row (Django's `field=value`,
i.e. SQL `=`, and `field=None`, i.e. `IS NULL`: NULLs are equal to each other, exactly as
in a GROUP BY):

  table (django_store_…)  looked up by                       where, in Sumatra 0.8.1
  executable              path, name, version, options       _get_db_obj('Executable')
  repository              type, url, upstream                _get_db_obj('Repository')
  launchmode              type, parameters                   _get_db_obj('LaunchMode')
  datastore               type, parameters                   _get_db_obj('Datastore'),
                                                             for datastore and input_datastore
  parameterset            type, content                      _get_db_obj('ParameterSet')
  dependency              name, path, version, diff,         _get_db_obj('Dependency')
                          source, module
  platforminformation     architecture_bits,                 _get_db_obj('PlatformInformation')
                          architecture_linkage, machine,
                          network_name, ip_addr, processor,
                          release, system_name, version
  record                  project_id, label                  Record.objects.get(label=…,
                                                             project=…): save, get, delete

The identity is every column of those tables but `id`, so merged rows are equal in every
value a record reads from them: re-pointing a record's foreign key from one to another does
not change the record. Records that share a label are not merged (they are different
records); they are reported (`smt` lookups of that label fail) and copied as they are.

  datakey                 path, digest, creation, metadata   _get_db_obj('DataKey'), for
                                                             input_data and output_data

Of DataKey only the rows with a `creation` are compared (identities.REQUIRED says why).
DataKey rows also carry `output_from_record_id`, set after the lookup (Sumatra saves the
key, then points it at the record whose output it is): equal keys are the same key for
Sumatra (its `get` returns both), and of a group the kept row is the output with the
highest id (the last save: what Sumatra's own sequential saves would have left), else the
lowest id. Records whose output row is merged into another record's lose that output, as
with sequential saves; a copy refuses such groups (its record check would see the record
change), `protect --dedupe` merges them in place and counts those records.
`django_store_tag`/`taggeditem` have unique constraints (the audit's `invalid` check).

A copy with `--dedupe` keeps one row of each group (`Group.kept`), re-points every foreign key to
the others (the same CASE remaps as content-type ids), does not copy them, and drops
many-to-many links that become equal after re-pointing (a record linked to two equal
dependencies keeps one link: what Sumatra itself writes, `add()` of an existing link being
a no-op).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError

from .engines import Engine
from .errors import Refused
from .identities import IDENTITY, applies_sql
from .schema import Inspection, StoreTable, sumatra_tables

if TYPE_CHECKING:
    from .remaps import Remaps

LABEL_IDENTITY = ("project_id", "label")
PREVIEW_CHARS = 40


@dataclass(frozen=True)
class Group:
    """Rows one lookup cannot tell apart: their ids (ascending), the first characters of
    the values they share, the id kept (the lowest; DataKey: see the module docstring)
    and, for DataKey, how many records' outputs are merged into another record's."""

    ids: tuple[int, ...]
    values: dict[str, str | None]
    kept: int = -1  # -1: the lowest id
    moved_outputs: int = 0

    def __post_init__(self) -> None:
        if self.kept == -1:
            object.__setattr__(self, "kept", self.ids[0])

    @property
    def merged(self) -> tuple[int, ...]:
        return tuple(i for i in self.ids if i != self.kept)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"ids": list(self.ids), "kept": self.kept, "values": self.values}
        if self.moved_outputs:
            data["moved_outputs"] = self.moved_outputs
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Group:
        return cls(
            tuple(data["ids"]), data["values"], data.get("kept", -1), data.get("moved_outputs", 0)
        )


def identity_of(table: StoreTable) -> tuple[str, ...] | None:
    """The columns that identify a row of this stored table for get_or_create, or None."""
    columns = IDENTITY.get(table.model.name)
    if columns is None:
        return None
    return tuple(c for c in columns if c in table.columns)


def duplicate_groups(
    cursor,
    table: str,
    pk: str,
    columns: Iterable[str],
    engine: Engine,
    output: str | None = None,
    where: str | None = None,
) -> list[Group]:
    """Every group of rows equal in `columns` (NULL equal to NULL): one GROUP BY.
    `output`: DataKey's `output_from_record_id` (the kept row is the last output);
    `where`: the rows the identity covers (identities.applies_sql)."""
    columns = tuple(columns)
    if not columns:
        return []
    quote = engine.quote_name
    ids = engine.id_list(pk)
    previews = [engine.preview(c, PREVIEW_CHARS + 1) for c in columns]
    outputs = "NULL, 0"
    if output is not None:
        outputs = (
            f"max(CASE WHEN {quote(output)} IS NOT NULL THEN {quote(pk)} END), "
            f"count(DISTINCT {quote(output)})"
        )
    grouped = ", ".join(quote(c) for c in columns)
    cursor.execute(
        f"SELECT {ids}, {outputs}, {', '.join(previews)} FROM {quote(table)} "
        + (f"WHERE {where} " if where else "")
        + f"GROUP BY {grouped} HAVING count(*) > 1"
    )
    groups = []
    for id_list, last_output, records, *values in cursor.fetchall():
        group_ids = tuple(sorted(int(i) for i in str(id_list).split(",")))
        kept = int(last_output) if last_output is not None else group_ids[0]
        groups.append(
            Group(
                group_ids,
                dict(zip(columns, map(_preview, values), strict=True)),
                kept,
                max(int(records) - 1, 0),
            )
        )
    return sorted(groups, key=lambda g: g.ids)


def any_duplicates(
    cursor, table: str, columns: Iterable[str], engine: Engine, where: str | None = None
) -> bool:
    """Whether some rows are equal in `columns` (as `duplicate_groups` groups them): the
    same GROUP BY, carrying only the keys, which costs half as much as the groups' ids
    and previews. A healthy store has none, and needs nothing more."""
    columns = tuple(columns)
    if not columns:
        return False
    quote = engine.quote_name
    cursor.execute(
        f"SELECT 1 FROM {quote(table)} "
        + (f"WHERE {where} " if where else "")
        + f"GROUP BY {', '.join(quote(c) for c in columns)} HAVING count(*) > 1 LIMIT 1"
    )
    return cursor.fetchone() is not None


OUTPUT_COLUMN = "output_from_record_id"


def output_column(table: StoreTable) -> str | None:
    """DataKey's `output_from_record_id`, which decides the row a group keeps."""
    return OUTPUT_COLUMN if OUTPUT_COLUMN in table.columns else None


def _preview(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    text = str(value).replace("\x00", "\\x00")
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


@dataclass
class DedupePlan:
    """What a copy with `--dedupe` changes: merged rows, re-pointed keys, dropped links."""

    groups: dict[str, list[Group]]  # today's table → its groups
    remaps: Remaps  # every foreign key into a merged table: merged-away id → kept id
    skip: dict[str, frozenset[int]]  # today's table → ids of rows not copied
    collapsed: dict[str, int] = field(default_factory=dict)  # M2M table → links dropped

    @property
    def merged(self) -> dict[str, int]:
        """Rows merged away, per table."""
        return {t: sum(len(g.ids) - 1 for g in groups) for t, groups in self.groups.items()}

    @property
    def moved_outputs(self) -> int:
        """Records whose output row is merged into another record's (DataKey)."""
        return sum(g.moved_outputs for groups in self.groups.values() for g in groups)

    def __bool__(self) -> bool:
        return bool(self.groups)

    @property
    def summary(self) -> str:
        parts = [f"{n:,} {table}" for table, n in self.merged.items()]
        if not parts:
            return "no duplicate rows"
        text = f"merged {', '.join(parts)} row(s) into one row of their group"
        if self.collapsed:
            links = ", ".join(f"{n:,} {table}" for table, n in self.collapsed.items())
            text += f"; dropped {links} link(s) that became equal"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "merged": self.merged,
            "collapsed": self.collapsed,
            "groups": {t: [g.to_dict() for g in groups] for t, groups in self.groups.items()},
        }


def find_duplicates(inspection: Inspection) -> dict[str, list[Group]]:
    """Stored table → its groups of duplicate rows (what the audit reports as `duplicate`)."""
    connection = inspection.store.connection
    found = {}
    try:
        with connection.cursor() as cursor:
            for name, table in inspection.tables.items():
                groups = duplicate_groups(
                    cursor,
                    name,
                    table.model.primary_key,
                    identity_of(table) or (),
                    inspection.engine,
                    output_column(table),
                    applies_sql(table, inspection.engine.quote_name),
                )
                if groups:
                    found[name] = groups
    except DatabaseError as exc:
        raise inspection.store.read_error(exc) from exc
    return found


def plan_dedupe(
    inspection: Inspection, groups: Mapping[str, list[Group]], *, move_outputs: bool = False
) -> DedupePlan:
    """The remaps and skipped rows that merge `groups` (stored table → groups), with the
    many-to-many links that become equal once re-pointed (one query per link table).
    Groups of DataKeys that are several records' outputs are refused unless
    `move_outputs` (merging them changes those records: `protect --dedupe` does it)."""
    by_model = {
        inspection.tables[name].model.name: list(found) for name, found in groups.items() if found
    }
    moving = sum(g.moved_outputs for found in by_model.values() for g in found)
    if moving and not move_outputs:
        raise Refused(
            f"{inspection.store.display}: {moving} record(s)' output DataKeys equal another "
            "record's: merging them changes those records, so a copy does not; merge them in "
            "place first (`smtmigrate protect --dedupe` on a server store)"
        )
    kept = {
        table: {old: g.kept for g in found for old in g.merged} for table, found in by_model.items()
    }
    remaps: Remaps = {}
    skip: dict[str, set[int]] = {t: set(m) for t, m in kept.items()}
    collapsed: dict[str, int] = {}
    for stored in inspection.tables.values():
        model = stored.model
        pointing = {
            column.name: kept[column.references[0]]
            for column in model.columns.values()
            if column.references and column.references[0] in kept and column.name in stored.columns
        }
        if not pointing:
            continue
        remaps[model.name] = pointing
        for unique in model.unique_sets:
            if not set(unique) & pointing.keys() or not all(c in stored.columns for c in unique):
                continue
            dropped = _equal_links(inspection, stored, unique, pointing, by_model)
            if dropped:
                skip.setdefault(model.name, set()).update(dropped)
                collapsed[model.name] = collapsed.get(model.name, 0) + len(dropped)
    return DedupePlan(by_model, remaps, {t: frozenset(ids) for t, ids in skip.items()}, collapsed)


def _equal_links(
    inspection: Inspection,
    table: StoreTable,
    unique: tuple[str, ...],
    pointing: Mapping[str, Mapping[int, int]],
    groups: Mapping[str, list[Group]],
) -> set[int]:
    """Ids of the link rows that equal another (lower id) row once re-pointed."""
    connection = inspection.store.connection
    q = inspection.engine.quote_name
    pk = table.model.primary_key
    touched = []
    for column in unique:
        if column in pointing:
            references = table.model.columns[column].references
            assert references is not None  # `pointing` holds foreign keys
            target = references[0]
            ids = sorted(i for g in groups[target] for i in g.ids)
            touched.append(f"{q(column)} IN ({', '.join(str(int(i)) for i in ids)})")
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {q(pk)}, {', '.join(q(c) for c in unique)} FROM {q(table.name)} "
                f"WHERE {' OR '.join(touched)} ORDER BY {q(pk)}"
            )
            rows = cursor.fetchall()
    except DatabaseError as exc:
        raise inspection.store.read_error(exc) from exc
    seen: set[tuple] = set()
    dropped = set()
    for row_id, *values in rows:
        pairs = zip(unique, values, strict=True)
        key = tuple(pointing[c].get(v, v) if c in pointing else v for c, v in pairs)
        if key in seen:
            dropped.add(int(row_id))
        seen.add(key)
    return dropped


def sumatra_identity() -> dict[str, tuple[str, ...]]:
    """The identity as the installed Sumatra computes it (`get_or_create_from_sumatra_object`:
    every field name but these excluded ones), to check IDENTITY against."""
    excluded = {"id", "record", "input_to_records", "output_from_record", "output_from_record_id"}
    identity = {}
    for name, table in sumatra_tables().items():
        if name not in IDENTITY:
            continue
        meta = table.model._meta
        names = {f.name for f in meta.get_fields()} - excluded
        identity[name] = tuple(
            sorted(meta.get_field(n).column for n in names)  # all concrete, non-relation
        )
    return identity

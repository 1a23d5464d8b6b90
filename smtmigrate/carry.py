"""Records saved to the old store after a move's copy, carried into the new store.

Jobs keep running while a project moves: a `smt run` that started before the switch
saves its record, when it ends, to the store it opened, the old one. Those records are
"late": not in the copy's snapshot, not in the new store. They are carried over one by
one through Sumatra's own `DjangoRecordStore.save` on the new store, exactly as the job
would have saved them had it been started after the switch (Sumatra's get_or_create finds
the executable, repository, parameter set … rows the copy already holds), each read from
the old store by the same reader the verification uses, and read back from the new store
and compared field by field before the round commits.

A record is known in both stores by its identity, never by its label (labels are not
unique in Sumatra: runs whose saves race share one): a record the copy took (id up to the
copy's snapshot, `after_id`) is the new store's row of the same id (a copy keeps every
record's db_id, see `copied_record_id`); a record saved later is the new store's row past
`after_id` of the same project, label and timestamp (the start time Sumatra gave it), the one
an earlier round carried. A record is late when
  * it was saved after the snapshot and is not in the new store yet. A record deleted from
    the new store after the move is not brought back;
  * or the new store's copy is still in flight (Sumatra 0.8 saves a record as it starts,
    tagged `_running_` and the like, and again as it ends) and the old store's differs: the
    job ended there, so its final state (outcome, duration, output data, status) is taken
    into that very row.
Any other record in both stores is never touched (a later `smt tag`/`smt comment` on the
old store is reported by `verify`, not carried).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import MultipleObjectsReturned, ObjectDoesNotExist
from django.db import DatabaseError, router, transaction

from . import interrupts
from .engines.sqlite_damage import REFUSE
from .errors import SmtmigrateError
from .locations import Store
from .schema import Inspection
from .tables import RECORD_TABLE


@dataclass
class CarryResult:
    carried: list[tuple[str, str]] = field(default_factory=list)  # (project, label)
    without_project: int = 0  # records Sumatra cannot save (no project): left, reported

    def to_dict(self) -> dict:
        return {
            "carried": [{"project": p, "label": label} for p, label in self.carried],
            "without_project": self.without_project,
        }


class _RouteTo:
    """A database router sending every model to one alias: Sumatra's tagging code asks
    Django's default manager (`ContentType.objects`, `Tag.objects`) where a store-bound
    call would say `.using(alias)`."""

    def __init__(self, alias: str) -> None:
        self.alias = alias

    def db_for_read(self, model, **hints) -> str:
        return self.alias

    def db_for_write(self, model, **hints) -> str:
        return self.alias


@contextmanager
def routed_to(alias: str) -> Iterator[None]:
    route = _RouteTo(alias)
    router.routers.insert(0, route)
    try:
        yield
    finally:
        router.routers.remove(route)


def in_flight(tags: str | None) -> bool:
    """Whether a record's status tag says its run had not ended when it was saved."""
    from sumatra.core import STATUS_FORMAT

    ended = {STATUS_FORMAT % status for status in ("finished", "failed", "killed")}
    statuses = {t for t in (tags or "").split(",") if t.startswith("_") and t.endswith("_")}
    return bool(statuses) and not statuses & ended


def copied_record_id(source_id: int) -> int:
    """The new store's db_id of a record the copy took: the same (a copy writes every
    record under its own id; the verification pairs records by it too)."""
    return source_id


# A record to carry: its id in the old store, and the new store's row it goes into (None: a
# new row).
Late = tuple[int, "int | None"]

_FAILS = (DatabaseError, ObjectDoesNotExist, MultipleObjectsReturned)


def late_records(source: Inspection, target: Inspection, *, after_id: int) -> list[Late]:
    """The records of `source` to carry, each with the `target` row it is (see the module's
    docstring)."""
    from sumatra.recordstore.django_store.models import Record

    from .records import canonical, read_records, sumatra_reading

    try:
        fields = ("db_id", "project_id", "label", "timestamp", "tags")
        in_target = {
            row[0]: row
            for row in Record._base_manager.using(target.store.alias).values_list(*fields)
        }
        saved_late: dict[tuple, list[int]] = {}  # rows saved past the copy, by identity
        for db_id, project, label, timestamp, _ in in_target.values():
            if db_id > after_id:
                saved_late.setdefault((project, label, timestamp), []).append(db_id)
        new: list[Late] = []
        ended: dict[int, int] = {}  # old store's id → the new store's row, in flight there
        for db_id, project, label, timestamp, _ in (
            Record._base_manager.using(source.store.alias).order_by("db_id").values_list(*fields)
        ):
            if db_id <= after_id:
                there = [copied_record_id(db_id)]
            else:
                there = saved_late.get((project, label, timestamp), [])
            if len(there) > 1:
                raise SmtmigrateError(
                    f"record {project}/{label} of {timestamp} is in {target.store.display} "
                    f"{len(there)} times (db_id {', '.join(map(str, there))}): not carried"
                )
            if not there:
                if db_id > after_id:
                    new.append((db_id, None))
            elif there[0] in in_target and in_flight(in_target[there[0]][4]):
                ended[db_id] = there[0]
        if ended:
            with sumatra_reading():
                old = {r.db_id: canonical(r) for r in read_records(source, list(ended))}
                now = {r.db_id: canonical(r) for r in read_records(target, list(ended.values()))}
            new += [(i, t) for i, t in ended.items() if old.get(i) != now.get(t)]
        return sorted(new)
    except _FAILS as exc:
        raise SmtmigrateError(f"cannot look for late records: {exc}") from exc


def carry_records(source: Inspection, target: Inspection, late: list[Late]) -> CarryResult:
    """Save the records `late` of `source` into `target` through Sumatra, each into the row
    it is (or a new one), in one transaction; each is read back and must equal what was read,
    or nothing is kept."""
    from .records import canonical, read_records, sumatra_reading

    result = CarryResult()
    if not late:
        return result
    into = dict(late)
    into_row = _into_row_class()
    store = into_row.__new__(into_row)  # bound to our alias, not configured
    store._db_label, store._db_file = target.store.alias, target.store.display
    with sumatra_reading():
        read = [(r.project_id, r.label, r) for r in read_records(source, list(into))]
        saved: dict[int, tuple[str, str, dict]] = {}  # new store's id → project, label, data
        try:
            with transaction.atomic(using=target.store.alias), routed_to(target.store.alias):
                for project, label, row in read:
                    if project is None:
                        result.without_project += 1
                        continue
                    store.row_id = into[row.db_id]
                    store.save(project, row.to_sumatra())
                    saved[store.row_id] = (project, label, canonical(row))
                _check_saved(target, saved)
                interrupts.check()
        except _FAILS as exc:
            what = target.store.describe_error(exc) if isinstance(exc, DatabaseError) else exc
            raise SmtmigrateError(
                f"carrying late records into {target.store.display} failed, nothing was "
                f"kept: {what}"
            ) from exc
    result.carried = sorted((project, label) for project, label, _ in saved.values())
    return result


def _into_row_class() -> Any:
    """Built on first use: Sumatra's store class imports Django's models."""
    from sumatra.recordstore.django_store import DjangoRecordStore

    class IntoRow(DjangoRecordStore):
        """Sumatra's save, into the row given by id (`row_id`; None: a new row) where
        Sumatra's own looks the record up by label. After `save`, `row_id` is the row's."""

        row_id: int | None = None

        def _get_db_record(self, project_name, record):
            models = self._get_models()
            if self.row_id is not None:
                return models.Record._base_manager.using(self._db_label).get(db_id=self.row_id)
            row = models.Record(label=record.label, project=self._get_db_project(project_name))
            row._state.db = self._db_label
            self._new = row
            return row

        def save(self, project_name, record):
            self._new = None
            super().save(project_name, record)
            if self._new is not None:
                self.row_id = self._new.db_id

    return IntoRow


def _check_saved(target: Inspection, saved: dict[int, tuple[str, str, dict]]) -> None:
    from .records import canonical, field_differences, read_records

    back = {r.db_id: r for r in read_records(target, list(saved))}
    for row_id, (project, label, data) in saved.items():
        there = back.get(row_id)
        differences = list(field_differences(data, canonical(there) if there else {}))
        if differences:
            path, x, y = differences[0]
            raise SmtmigrateError(
                f"record {project}/{label} did not read back as carried ({path}: {x!r} != "
                f"{y!r}); nothing was kept"
            )


def fold_late_records(
    source: Store, target: Store, *, after_id: int, rounds: int = 5, damaged: str = REFUSE
) -> CarryResult:
    """Carry late records until a round finds none (jobs may still be saving). Each round
    reads one snapshot of the old store: a record a job is saving is read whole or not yet.
    `damaged`: as the copy read a damaged SQLite store (snapshot.source_snapshot's)."""
    from .schema import inspect_store
    from .snapshot import source_snapshot

    total = CarryResult()
    if damaged == REFUSE and _nothing_late(source, target, after_id):
        return total
    target_inspection = inspect_store(target)
    for _ in range(rounds):
        with source_snapshot(source, damaged=damaged) as snapshot:
            source_inspection = inspect_store(snapshot.store)
            late = late_records(source_inspection, target_inspection, after_id=after_id)
            if not late:
                break
            result = carry_records(source_inspection, target_inspection, late)
        total.carried += result.carried
        total.without_project = result.without_project
        if not result.carried:
            break
    return total


def _nothing_late(source: Store, target: Store, after_id: int) -> bool:
    """Whether no record can be late, by one query on each store and no snapshot or
    inspection (most moves: nobody saved meanwhile): a record is late only if the old store
    has one past `after_id` or the new store holds one in flight. False when either query
    fails: the full search then says what is wrong."""
    from sumatra.recordstore.django_store.models import Record

    try:
        with source.connection.cursor() as cursor:
            table = source.engine.quote_name(RECORD_TABLE)
            cursor.execute(f"SELECT 1 FROM {table} WHERE db_id > %s LIMIT 1", [after_id])
            if cursor.fetchone() is not None:
                return False
        tags = Record._base_manager.using(target.alias).values_list("tags", flat=True)
        return not any(in_flight(t) for t in tags)
    except DatabaseError:
        return False

"""Records saved to the old store after a move's copy, carried into the new store.

Jobs keep running while a project moves: a `smt run` that started before the switch
saves its record, when it ends, to the store it opened, the old one. Those records are
"late": not in the copy's snapshot, not in the new store. They are carried over one by
one through Sumatra's own `DjangoRecordStore.save` on the new store, exactly as the job
would have saved them had it been started after the switch (Sumatra's get_or_create finds
the executable, repository, parameter set … rows the copy already holds), each read from
the old store by the same reader the verification uses, and read back from the new store
and compared field by field before the round commits.

A record is late when
  * its (project, label) is not in the new store and its id in the old store is past the
    copy's snapshot (`after_id`): it was saved after the snapshot. A record deleted from
    the new store after the move is not brought back;
  * or the new store's copy is still in flight (Sumatra 0.8 saves a record as it starts,
    tagged `_running_` and the like, and again as it ends) and the old store's differs: the
    job ended there, so its final state (outcome, duration, output data, status) is taken.
Any other record in both stores is never touched (a later `smt tag`/`smt comment` on the
old store is reported by `verify`, not carried).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.db import DatabaseError, router, transaction

from . import interrupts
from .errors import SmtmigrateError
from .locations import Store
from .schema import Inspection


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


def _in_flight(tags: str | None) -> bool:
    """Whether a record's status tag says its run had not ended when it was saved."""
    from sumatra.core import STATUS_FORMAT

    ended = {STATUS_FORMAT % status for status in ("finished", "failed", "killed")}
    statuses = {t for t in (tags or "").split(",") if t.startswith("_") and t.endswith("_")}
    return bool(statuses) and not statuses & ended


def late_record_ids(source: Inspection, target: Inspection, *, after_id: int) -> list[int]:
    """Ids in `source` of the records to carry (see the module's docstring)."""
    from sumatra.recordstore.django_store.models import Record

    from .records import canonical, read_records, sumatra_reading

    try:
        in_target = {
            (project, label): (db_id, tags)
            for db_id, project, label, tags in Record._base_manager.using(
                target.store.alias
            ).values_list("db_id", "project_id", "label", "tags")
        }
        new, ended = [], {}
        for db_id, project, label in (
            Record._base_manager.using(source.store.alias)
            .order_by("db_id")
            .values_list("db_id", "project_id", "label")
        ):
            there = in_target.get((project, label))
            if there is None:
                if db_id > after_id:
                    new.append(db_id)
            elif _in_flight(there[1]):
                ended[db_id] = there[0]
        if ended:
            with sumatra_reading():
                old = {r.db_id: canonical(r) for r in read_records(source, list(ended))}
                now = {r.db_id: canonical(r) for r in read_records(target, list(ended.values()))}
            new += [i for i, t in ended.items() if old.get(i) != now.get(t)]
        return sorted(new)
    except DatabaseError as exc:
        raise SmtmigrateError(f"cannot look for late records: {exc}") from exc


def carry_records(source: Inspection, target: Inspection, ids: list[int]) -> CarryResult:
    """Save the records `ids` of `source` into `target` through Sumatra, in one transaction;
    each is read back and must equal what was read, or nothing is kept."""
    from sumatra.recordstore.django_store import DjangoRecordStore

    from .records import canonical, read_records, sumatra_reading

    result = CarryResult()
    if not ids:
        return result
    store = DjangoRecordStore.__new__(DjangoRecordStore)  # bound to our alias, not configured
    store._db_label, store._db_file = target.store.alias, target.store.display
    with sumatra_reading():
        read = [(r.project_id, r.label, r) for r in read_records(source, ids)]
        saved: dict[tuple[str, str], dict] = {}
        try:
            with transaction.atomic(using=target.store.alias), routed_to(target.store.alias):
                for project, label, row in read:
                    if project is None:
                        result.without_project += 1
                        continue
                    store.save(project, row.to_sumatra())
                    saved[project, label] = canonical(row)
                _check_saved(target, saved)
                interrupts.check()
        except DatabaseError as exc:
            raise SmtmigrateError(
                f"carrying late records into {target.store.display} failed, nothing was "
                f"kept: {target.store.describe_error(exc)}"
            ) from exc
    result.carried = sorted(saved)
    return result


def _check_saved(target: Inspection, saved: dict[tuple[str, str], dict]) -> None:
    from sumatra.recordstore.django_store.models import Record

    from .records import canonical, field_differences, read_records

    wanted = {label for _, label in saved}
    ids = list(
        Record._base_manager.using(target.store.alias)
        .filter(label__in=wanted)
        .values_list("db_id", flat=True)
    )
    back = {(r.project_id, r.label): canonical(r) for r in read_records(target, ids)}
    for key, data in saved.items():
        differences = list(field_differences(data, back.get(key, {})))
        if differences:
            path, x, y = differences[0]
            raise SmtmigrateError(
                f"record {key[0]}/{key[1]} did not read back as carried ({path}: {x!r} != "
                f"{y!r}); nothing was kept"
            )


def fold_late_records(
    source: Store, target: Store, *, after_id: int, rounds: int = 5, damaged: str = "refuse"
) -> CarryResult:
    """Carry late records until a round finds none (jobs may still be saving). Each round
    reads one snapshot of the old store: a record a job is saving is read whole or not yet.
    `damaged`: as the copy read a damaged SQLite store (snapshot.source_snapshot's)."""
    from .schema import inspect_store
    from .snapshot import source_snapshot

    total = CarryResult()
    target_inspection = inspect_store(target)
    for _ in range(rounds):
        with source_snapshot(source, damaged=damaged) as snapshot:
            source_inspection = inspect_store(snapshot.store)
            ids = late_record_ids(source_inspection, target_inspection, after_id=after_id)
            if not ids:
                break
            result = carry_records(source_inspection, target_inspection, ids)
        total.carried += result.carried
        total.without_project = result.without_project
        if not result.carried:
            break
    return total

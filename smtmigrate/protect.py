"""`smtmigrate protect`: a server store that jobs are writing to gets its identities
(identities.py), after its duplicate rows are merged in place (`--dedupe`).

Order: find the duplicates (dedupe.py); without `dedupe` a store that has any is refused,
by table, before anything is changed. With it, one transaction re-points every foreign
key and many-to-many link to the kept row (dropping links that become equal), deletes the
merged rows, its lock waits bounded by `lock_timeout`; then the identities are built with
short locks (`identities.build_live`). A duplicate that a job creates in between makes a
build fail cleanly (nothing half-built is left): the merge and the build run again, a few
times. Running it on a protected store changes nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError, IntegrityError, OperationalError, transaction

from .dedupe import DedupePlan, Group, find_duplicates, plan_dedupe
from .errors import Refused, SmtmigrateError
from .identities import (
    LOCK_ATTEMPTS,
    LOCK_TIMEOUT,
    PG_LOCK_NOT_AVAILABLE,
    Built,
    DuplicatesAppeared,
    IdentityState,
    build_live,
    identity_state,
)
from .locations import Store
from .schema import Inspection, inspect_store

ROUNDS = 3  # merge + build, when jobs keep creating duplicates meanwhile
MARIADB_LOCK_WAIT = 1205


@dataclass
class ProtectResult:
    store: str
    before: IdentityState
    duplicates: dict[str, list[Group]]  # stored table → its groups, as first found
    dry_run: bool = False
    merged: dict[str, int] = field(default_factory=dict)  # rows merged away, per table
    links_dropped: dict[str, int] = field(default_factory=dict)
    moved_outputs: int = 0  # records whose output DataKey was merged into another's
    built: Built | None = None
    rounds: int = 0

    @property
    def already(self) -> bool:
        return not self.before.missing

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "before": self.before.to_dict(),
            "already_protected": self.already,
            "dry_run": self.dry_run,
            "duplicates": {t: [g.to_dict() for g in gs] for t, gs in self.duplicates.items()},
            "merged": self.merged,
            "links_dropped": self.links_dropped,
            "moved_outputs": self.moved_outputs,
            "built": None if self.built is None else self.built.tables,
            "how": None if self.built is None else self.built.how,
            "rounds": self.rounds,
        }


class DuplicatesFound(Refused):
    """The store holds rows its identities forbid; `--dedupe` merges them."""

    def __init__(self, store: Store, duplicates: dict[str, list[Group]]) -> None:
        tables = ", ".join(
            f"{t} ({len(gs)} group(s), {sum(len(g.ids) - 1 for g in gs)} extra row(s))"
            for t, gs in duplicates.items()
        )
        super().__init__(
            f"{store.display} holds duplicate rows Sumatra's get_or_create cannot tell apart: "
            f"{tables}; nothing was changed: run again with --dedupe to merge them first"
        )
        self.duplicates = duplicates


def protect_store(
    store: Store,
    *,
    dedupe: bool = False,
    dry_run: bool = False,
    lock_timeout: float = LOCK_TIMEOUT,
    lock_attempts: int = LOCK_ATTEMPTS,
) -> ProtectResult:
    """Build the missing identities of a live server store (see the module docstring)."""
    if store.engine.is_file:
        raise SmtmigrateError(
            f"{store.display}: protect adds unique identities to a PostgreSQL or MariaDB "
            "store (an SQLite store is one file that parallel jobs should not share)"
        )
    inspection = inspect_store(store)
    before = identity_state(inspection)
    duplicates = _duplicates(inspection, before)
    result = ProtectResult(store.display, before, duplicates, dry_run)
    if result.already or dry_run:
        return result
    if duplicates and not dedupe:
        raise DuplicatesFound(store, duplicates)
    for round_ in range(1, ROUNDS + 1):
        result.rounds = round_
        if duplicates:
            plan = plan_dedupe(inspection, duplicates, move_outputs=True)
            _merge_in_place(inspection, plan, lock_timeout, lock_attempts)
            for table, n in plan.merged.items():
                result.merged[table] = result.merged.get(table, 0) + n
            for table, n in plan.collapsed.items():
                result.links_dropped[table] = result.links_dropped.get(table, 0) + n
            result.moved_outputs += plan.moved_outputs
        try:
            built = build_live(
                inspection,
                identity_state(inspection).missing,
                lock_timeout=lock_timeout,
                lock_attempts=lock_attempts,
            )
        except DuplicatesAppeared:
            duplicates = _duplicates(inspection, identity_state(inspection))
            if not dedupe or round_ == ROUNDS:
                raise
            continue
        if result.built is None:
            result.built = built
        else:
            result.built.tables += built.tables
            result.built.how.update(built.how)
        return result
    raise AssertionError("unreachable: the last round returns or raises")


def _duplicates(inspection: Inspection, state: IdentityState) -> dict[str, list[Group]]:
    """The duplicate groups of the tables whose identity is missing."""
    return {t: g for t, g in find_duplicates(inspection).items() if t in state.missing}


def _merge_in_place(
    inspection: Inspection, plan: DedupePlan, lock_timeout: float, lock_attempts: int
) -> None:
    """One transaction: links that would become equal deleted, every reference re-pointed
    to the kept row, the merged rows deleted. A lock not granted within `lock_timeout`
    rolls it back and it is tried again."""
    store = inspection.store
    engine = store.engine
    q = engine.quote_name
    merged_tables = set(plan.groups)
    statements: list[str] = []
    stored = {t.model.name: name for name, t in inspection.tables.items()}
    for table, ids in plan.skip.items():  # links that become equal once re-pointed
        if table not in merged_tables and ids:
            pk = inspection.tables[stored[table]].model.primary_key
            statements.append(f"DELETE FROM {q(stored[table])} WHERE {q(pk)} IN ({_ids(ids)})")
    for table, columns in plan.remaps.items():
        for column, remap in columns.items():
            statements.append(
                f"UPDATE {q(stored[table])} SET {q(column)} = "
                f"{engine.remap_case(q(column), remap)} WHERE {q(column)} IN ({_ids(remap)})"
            )
    for table in merged_tables:
        pk = inspection.tables[stored[table]].model.primary_key
        statements.append(
            f"DELETE FROM {q(stored[table])} WHERE {q(pk)} IN ({_ids(plan.skip[table])})"
        )
    for attempt in range(1, lock_attempts + 1):
        try:
            with transaction.atomic(using=store.alias), store.connection.cursor() as cursor:
                cursor.execute(*engine.lock_timeout(lock_timeout))
                for statement in statements:
                    cursor.execute(statement)
            return
        except OperationalError as exc:
            cause = exc.__cause__
            code = getattr(cause, "pgcode", None) or (cause.args[0] if cause and cause.args else 0)
            if code not in (PG_LOCK_NOT_AVAILABLE, MARIADB_LOCK_WAIT):
                raise store.read_error(exc) from exc
            if attempt == lock_attempts:
                raise Refused(
                    f"{store.display}: could not lock the rows to merge within "
                    f"{lock_timeout:g} s in {attempt} attempts; nothing was changed"
                ) from exc
            time.sleep(min(attempt, 5))
        except IntegrityError as exc:  # a job linked a merged row meanwhile: planned anew
            raise Refused(
                f"{store.display}: jobs changed the duplicate rows while they were merged, "
                f"nothing was changed: run again ({store.describe_error(exc)})"
            ) from exc
        except DatabaseError as exc:
            raise store.read_error(exc) from exc


def _ids(ids) -> str:
    return ", ".join(str(int(i)) for i in sorted(ids))

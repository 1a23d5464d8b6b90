"""What drop-recreate does the same on every server: the backup of a Sumatra database into
an SQLite file before anything is dropped, where it goes, and the steps told to the user
(`RecreateEvents`, rendered by render/stores.py). The workflows themselves are each vendor
admin's `recreate` (postgresql.py, mariadb.py)."""

from __future__ import annotations

import re
from datetime import datetime
from glob import escape as glob_escape
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..copy import copy_store, plan_copy
from ..engines.sqlite_load import remove_stale_partials
from ..errors import Refused, SmtmigrateError
from ..locations import Store, new_sqlite_target
from ..snapshot import source_snapshot

if TYPE_CHECKING:
    from ..copy import CopyResult
    from ..snapshot import Snapshot

NOT_SUMATRA = (
    "{name} holds {tables} table(s) but no Sumatra store smtmigrate can back up; "
    "drop-recreate replaces only Sumatra databases (or empty ones): nothing was changed"
)


class RecreateEvents(Protocol):
    """What drop-recreate tells its user, step by step (render/stores.py)."""

    def database(self, info: Any, display: str, owner: str) -> None: ...  # DatabaseInfo
    def mariadb_database(self, display: str, tables: int | None, records: int | None) -> None: ...
    def backing_up(self, records: int, path: Path) -> None: ...
    def copy_events(self) -> Any: ...
    def backup(self, path: Path, snapshot: Snapshot, result: CopyResult) -> None: ...
    def dropped(self, name: str) -> None: ...
    def recreated(self, name: str, owner: str, schema: bool) -> None: ...
    def mariadb_recreated(self, name: str, account: str, schema: bool) -> None: ...
    def ready(self, display: str) -> None: ...


def backup_path(name: str, backup: str | None) -> Path:
    """Where the backup goes; a place it cannot be written is said now, before any drop."""
    # A database name may hold '/' or worse: the default file name keeps letters, digits,
    # '.', '-' and '_' of it.
    safe_name = re.sub(r"[^\w.-]", "_", name)
    path = Path(backup or f"{safe_name}-backup-{datetime.now():%Y%m%d-%H%M%S}.sqlite")
    new_sqlite_target(path).close()
    return path


def back_up(
    store: Store, name: str, records: int, path: Path, backup: str | None, events: RecreateEvents
) -> None:
    if not backup:  # a killed run's partial has another time in its name
        safe_name = re.sub(r"[^\w.-]", "_", name)
        remove_stale_partials(Path("."), f"{glob_escape(safe_name)}-backup-*.sqlite")
    events.backing_up(records, path)
    try:
        with new_sqlite_target(path) as target, source_snapshot(store) as snapshot:
            plan = plan_copy(snapshot, target)
            if plan.refused:
                raise Refused("the backup would not take every value")
            # Progress lines: a big store takes minutes, and a user who interrupts
            # here (nothing dropped yet) should see where it was.
            result = copy_store(plan, events.copy_events())
    except SmtmigrateError as exc:
        raise Refused(f"backup failed, nothing was dropped: {exc}") from exc
    events.backup(path, snapshot, result)
    changes = snapshot.changes
    if changes is not None and changes.changed:
        # Dropping now would lose what was written after the snapshot.
        raise Refused(
            f"{store.display} changed after the backup's snapshot (+{changes.added:,} "
            f"records, -{changes.removed:,}): the backup lacks that, so nothing was "
            "dropped; stop the jobs writing to it and run again"
        )

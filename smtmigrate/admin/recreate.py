"""drop-recreate: back a Sumatra database up, drop it, create it again empty with Sumatra's
widened schema. One workflow per vendor (`postgresql`, `mariadb`) behind `drop_recreate`;
everything that could stop it is checked before anything is dropped. What it does is told
to `events` (render/stores.py: `RecreateEvents`), the question asked through `confirm`."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from glob import escape as glob_escape
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..copy import copy_store, plan_copy
from ..engines.mariadb_server import database_tables
from ..engines.sqlite_load import remove_stale_partials
from ..errors import Refused, SmtmigrateError
from ..locations import Store, new_sqlite_target
from ..snapshot import source_snapshot
from . import mariadb
from .postgresql import Admin, DatabaseInfo, build_schema

if TYPE_CHECKING:
    from ..copy import CopyResult
    from ..snapshot import Snapshot

NOT_SUMATRA = (
    "{name} holds {tables} table(s) but no Sumatra store smtmigrate can back up; "
    "drop-recreate replaces only Sumatra databases (or empty ones): nothing was changed"
)


class RecreateEvents(Protocol):
    """What drop-recreate tells its user, step by step (render/stores.py)."""

    def database(self, info: DatabaseInfo, display: str, owner: str) -> None: ...
    def mariadb_database(self, display: str, tables: int | None, records: int | None) -> None: ...
    def backing_up(self, records: int, path: Path) -> None: ...
    def copy_events(self) -> Any: ...
    def backup(self, path: Path, snapshot: Snapshot, result: CopyResult) -> None: ...
    def dropped(self, name: str) -> None: ...
    def recreated(self, name: str, owner: str, schema: bool) -> None: ...
    def mariadb_recreated(self, name: str, account: str, schema: bool) -> None: ...
    def ready(self, display: str) -> None: ...


def drop_recreate(
    store: Store,
    *,
    owner: str | None,
    backup: str | None,
    schema: bool,
    admin: str | None,
    confirm: Callable[[str], None],
    events: RecreateEvents,
) -> None:
    """Back up, confirm, drop and create the store's database again (see the module)."""
    # by the store's kind, as engines.engine_for; Admin refuses anything but PostgreSQL
    workflow = WORKFLOWS.get(store.kind, _postgresql)
    workflow(store, owner, backup, schema, admin, confirm, events)


def _backup_path(name: str, backup: str | None) -> Path:
    """Where the backup goes; a place it cannot be written is said now, before any drop."""
    # A database name may hold '/' or worse: the default file name keeps letters, digits,
    # '.', '-' and '_' of it.
    safe_name = re.sub(r"[^\w.-]", "_", name)
    path = Path(backup or f"{safe_name}-backup-{datetime.now():%Y%m%d-%H%M%S}.sqlite")
    new_sqlite_target(path).close()
    return path


def _back_up(
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


def _postgresql(store, owner, backup, schema, admin, confirm, events) -> None:
    with Admin(store, admin) as server:
        info = server.describe()
        owner = owner or info.owner or store.settings.get("USER") or server.user
        events.database(info, store.display, owner)
        if not server.role_exists(owner):
            raise Refused(f"role '{owner}' does not exist; nothing was changed")
        if info.other_tables:
            # Its data could not be backed up: refuse rather than drop what we cannot restore.
            raise Refused(NOT_SUMATRA.format(name=info.name, tables=info.other_tables))
        server.check_privileges(owner, drop=info.exists)
        path = _backup_path(info.name, backup) if info.records else None
        confirm(info.name)
        if path is not None and info.records:
            _back_up(store, info.name, info.records, path, backup, events)
        store.close()  # our own sessions go before the drop, not killed by it
        if info.exists:
            server.drop_database()
            events.dropped(info.name)
        server.create_database(owner)
        if schema:
            with server.target_as_admin() as created:
                build_schema(created, owner=owner)
        events.recreated(info.name, owner, schema)
    events.ready(store.display)


def _mariadb(store, owner, backup, schema, admin, confirm, events) -> None:
    """The same steps; no owners, the URL's user is granted."""
    mariadb.refuse_owner(owner)
    name = store.settings["NAME"]
    tables = database_tables(store)
    records = mariadb.sumatra_records(store) if tables else None
    if tables and records is None:
        raise Refused(NOT_SUMATRA.format(name=name, tables=tables))
    events.mariadb_database(store.display, tables, records)
    path = _backup_path(name, backup) if records else None
    confirm(name)
    if path is not None and records:
        _back_up(store, name, records, path, backup, events)
    store.close()
    with mariadb.admin_store(admin) as server:
        if tables is not None:
            mariadb.drop_database(store, admin=server)
            events.dropped(name)
        _, account = mariadb.create_database(store, create_user=False, password=None, admin=server)
    if schema:
        mariadb.build_schema(store)
    events.mariadb_recreated(name, account, schema)
    events.ready(store.display)


WORKFLOWS: dict[str, Callable[..., None]] = {"postgresql": _postgresql, "mariadb": _mariadb}

"""One consistent snapshot of a store for every reader of one command.

A store that jobs write to changes while it is read. A command that reads it more than
once (the audit's scans, one COPY stream per table, the verification, the record reader
in its own process) would otherwise see a different state each time, and could load and
"verify" a state the store never had. `source_snapshot(store)` fixes one state and every
reader reads that:

  * SQLite: the store is copied with SQLite's backup API, all pages in one step, i.e.
    inside one read transaction (so consistent, and with committed WAL content), into a
    private temporary file (0600, in a 0700 directory under TMPDIR), removed on exit, on
    Ctrl-C too, and by the next run after a kill. Every later read opens that file. The
    store's lock is held only for the file copy: a read transaction held for the whole
    command would block every writer of a rollback-journal store (Sumatra's default)
    for all that time, stalling live `smt run`s. The copy needs the store's size free
    in TMPDIR.
  * PostgreSQL: the store's Django connection runs in one `REPEATABLE READ READ ONLY`
    transaction until the snapshot ends; a reader in another process joins it with
    `SET TRANSACTION SNAPSHOT` (`join_snapshot`) from the id `pg_export_snapshot()` gave.
  * MariaDB: one `START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY` (repeatable
    read) on the store's connection; no other process can join it.

An SQLite snapshot is checked with SQLite's own `quick_check` as soon as it is taken
(engines/sqlite_damage.py): a damaged store is refused (`StoreDamaged`) unless the command
asks to see the damage (`damaged=REPORT`: the audit) or to read what can be read
(`damaged=COPY_READABLE`: every readable row into a second private file, read instead).

The snapshot knows when it was taken and how many records it holds; `check_changes()`
re-reads the live store (one cheap query) to tell how many records were added or removed
since, which the commands report instead of staying silent.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from django.db import DatabaseError, transaction

from . import locations
from .engines import POSTGRESQL, SQLITE
from .engines.sqlite import SQLITE_CORRUPT
from .engines.sqlite_damage import COPY_READABLE, REFUSE, CheckResult, check_file
from .engines.sqlite_damage import copy_readable as _copy_readable
from .engines.sqlite_damage import refusal as _refusal
from .errors import StoreConnectionError
from .locations import Store, sqlite_settings
from .schema import RECORD_TABLE

if TYPE_CHECKING:
    pass

T = TypeVar("T")
R = TypeVar("R")

SNAPSHOT_PREFIX = "smtmigrate-snapshot-"
SNAPSHOT_FILE = "records.sqlite"


@dataclass
class SnapshotStore(Store):
    """A store as it was at one moment. `display` still names the user's store; `path`
    (SQLite) is the snapshot file; `exported` (PostgreSQL) is the snapshot id another
    process joins. Picklable, so the record reader's process gets it as it is."""

    live_path: Path | None = None  # the user's SQLite file
    exported: str | None = None

    def threads_share(self) -> bool:
        """A SQLite snapshot is a file nobody writes; a PostgreSQL or MariaDB snapshot is
        one connection's transaction (threads.py)."""
        return self.private or self.engine.snapshot_shared_by_threads


@dataclass(frozen=True)
class Changes:
    """What the live store gained or lost since the snapshot (records only)."""

    added: int
    removed: int

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)

    def to_dict(self) -> dict[str, int]:
        return {"added": self.added, "removed": self.removed}


@dataclass
class Snapshot:
    """The state every reader of one command sees, and what is known about it."""

    store: SnapshotStore  # read this
    live: Store  # the user's store, as named
    taken_at: datetime  # UTC
    seconds: float  # time taking it cost
    records: dict[str | None, int] = field(default_factory=dict)  # per project
    max_record_id: int | None = None
    sumatra: bool = False  # it has a record table (else the counts mean nothing)
    changes: Changes | None = None  # set by check_changes()
    check: CheckResult | None = None  # SQLite: SQLite's own check of the snapshot file

    @property
    def total(self) -> int:
        return sum(self.records.values())

    @property
    def damage(self):  # -> sqlite_damage.Damage | None
        return self.check.damage if self.check else None

    @property
    def summary(self) -> str:
        """`source as of 2026-11-28 05:12:03 UTC: 7 records` minus the role."""
        when = f"{self.taken_at:%Y-%m-%d %H:%M:%S} UTC"
        return f"as of {when}: {self.total:,} record{'s' * (self.total != 1)}"

    def check_changes(self) -> Changes | None:
        """Count records added to / removed from the live store since the snapshot, with
        one query on a fresh connection (the snapshot's own would see the snapshot).
        Not for a damaged store: the live file may not count, nor match what was read."""
        if not self.sumatra or self.damage is not None:
            return None
        live = Store(
            self.live.kind,
            self.live.display,
            self.live.settings,
            path=self.live.path,
            url=self.live.url,
        )
        limit = self.max_record_id if self.max_record_id is not None else 0
        try:
            with live, live.connection.cursor() as cursor:
                cursor.execute(
                    f"SELECT count(CASE WHEN db_id <= %s THEN 1 END), "
                    f"count(CASE WHEN db_id > %s THEN 1 END) "
                    f"FROM {live.engine.quote_name(RECORD_TABLE)}",
                    [limit, limit],
                )
                kept, added = cursor.fetchone()
        except DatabaseError as exc:
            raise live.read_error(exc) from exc
        self.changes = Changes(added=added, removed=self.total - kept)
        return self.changes

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": self.live.display,
            "taken_at": self.taken_at.isoformat(timespec="seconds"),
            "seconds": round(self.seconds, 3),
            "records": self.total,
            "records_per_project": {k or "": v for k, v in sorted(self.records.items(), key=str)},
            "max_record_id": self.max_record_id,
            "changed_since": None if self.changes is None else self.changes.to_dict(),
            "check": None if self.check is None else self.check.to_dict(),
            "damage": None if self.damage is None else self.damage.to_dict(),
        }


@contextmanager
def source_snapshot(store: Store, *, damaged: str = REFUSE) -> Iterator[Snapshot]:
    """Fix one state of `store` for as long as the block runs; read `snapshot.store`.
    `damaged`: what a damaged SQLite store gets (REFUSE, REPORT, COPY_READABLE)."""
    if not store.engine.is_file:
        with _server_snapshot(store) as snapshot:
            yield snapshot
    else:
        with _sqlite_snapshot(store, damaged) as snapshot:
            yield snapshot


# --------------------------------------------------------------------------- SQLite


@contextmanager
def _sqlite_snapshot(store: Store, damaged: str) -> Iterator[Snapshot]:
    assert store.path is not None
    remove_stale_snapshots()
    directory = Path(tempfile.mkdtemp(prefix=f"{SNAPSHOT_PREFIX}{os.getpid()}-"))  # 0700
    path = directory / SNAPSHOT_FILE
    snapshot_store = SnapshotStore(
        "sqlite",
        store.display,
        sqlite_settings(path),
        path=path,
        project_dir=store.project_dir,
        project_name=store.project_name,
        live_path=store.path,
    )
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        taken_at, seconds = _backup(store, path)
        check = check_file(path)  # the file every reader reads, as it reads it
        if check.damage is not None and damaged == REFUSE:
            raise _refusal(store.display, store.path, check.damage)
        if check.damage is not None and damaged == COPY_READABLE:
            readable = directory / f"readable-{SNAPSHOT_FILE}"
            _copy_readable(store.display, path, readable, check.damage)
            path.unlink()
            snapshot_store.settings, snapshot_store.path = sqlite_settings(readable), readable
        snapshot = Snapshot(snapshot_store, store, taken_at, seconds, check=check)
        try:
            _count_records(snapshot)
        except StoreConnectionError:
            if check.damage is None:
                raise  # else the audit reports the damage that stopped it
        yield snapshot
    finally:
        snapshot_store.close()
        shutil.rmtree(directory, ignore_errors=True)


def _backup(store: Store, path: Path) -> tuple[datetime, float]:
    """Copy every page of the store in one backup step (one read transaction)."""
    assert store.path is not None
    started = time.perf_counter()
    taken_at = datetime.now(timezone.utc)
    try:
        SQLITE.backup(
            store.path,
            path,
            timeout=locations.SQLITE_LOCK_TIMEOUT,  # the one bound every reader keeps
        )
    except sqlite3.Error as exc:
        if (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == SQLITE_CORRUPT:
            # Not even the schema reads (e.g. a truncated file): no reader can read it, so
            # no lock protects anything; its bytes are copied for the check to name.
            shutil.copyfile(store.path, path)
            return taken_at, time.perf_counter() - started
        if "disk is full" in str(exc) or "disk I/O" in str(exc):
            size = store.path.stat().st_size / 1e6
            raise StoreConnectionError(
                f"cannot take a snapshot of {store.display} in {path.parent.parent}: {exc} "
                f"(it needs {size:,.0f} MB free there; set TMPDIR to a roomier directory)"
            ) from exc
        raise store.read_error(exc) from exc
    return taken_at, time.perf_counter() - started


def remove_stale_snapshots() -> None:
    """Snapshot directories of killed processes (their process is gone) are removed."""
    from .engines.sqlite_load import alive

    for directory in Path(tempfile.gettempdir()).glob(f"{SNAPSHOT_PREFIX}*-*"):
        pid = directory.name[len(SNAPSHOT_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not alive(int(pid)):
            shutil.rmtree(directory, ignore_errors=True)


# --------------------------------------------------------------------------- servers


@contextmanager
def _server_snapshot(store: Store) -> Iterator[Snapshot]:
    """One read-only repeatable-read transaction on the store's own connection.
    PostgreSQL exports it, so a second process reads the same state (`join_snapshot`);
    MariaDB cannot: its snapshot is read in this process only."""
    connection = store.connection  # connected (and set up) outside the transaction
    started = time.perf_counter()
    with transaction.atomic(using=store.alias):
        try:
            with connection.cursor() as cursor:
                taken_at, exported = store.engine.begin_snapshot(cursor)
        except DatabaseError as exc:
            raise store.read_error(exc) from exc
        snapshot_store = SnapshotStore(
            store.kind,
            store.display,
            store.settings,
            project_dir=store.project_dir,
            project_name=store.project_name,
            url=store.url,
            _alias=store.alias,  # the same connection, in the snapshot's transaction
            exported=exported,
        )
        snapshot = Snapshot(snapshot_store, store, taken_at, time.perf_counter() - started)
        _count_records(snapshot)
        try:
            yield snapshot
        finally:
            transaction.set_rollback(True, using=store.alias)  # it only read


@contextmanager
def join_snapshot(store: Store) -> Iterator[None]:
    """In another process: read a PostgreSQL snapshot store in the snapshot's own state
    (a no-op for anything else: an SQLite snapshot is a file of its own)."""
    exported = getattr(store, "exported", None)
    if not exported:
        yield
        return
    connection = store.connection
    with transaction.atomic(using=store.alias):
        try:
            with connection.cursor() as cursor:
                POSTGRESQL.join_snapshot(cursor, exported)
        except DatabaseError as exc:
            raise store.read_error(exc) from exc
        try:
            yield
        finally:
            transaction.set_rollback(True, using=store.alias)


def shareable(store: Store) -> bool:
    """Whether another process can read exactly what this one reads from `store` (not a
    MariaDB snapshot: no other connection can join its transaction)."""
    return isinstance(store, SnapshotStore) and store.engine.snapshot_joinable


# --------------------------------------------------------------------------- metadata


def _count_records(snapshot: Snapshot) -> None:
    """Records per project and the highest record id, read from the snapshot."""
    store = snapshot.store
    connection = store.connection
    try:
        with connection.cursor() as cursor:
            # Looked up first: a failed query would end a PostgreSQL snapshot's transaction.
            if RECORD_TABLE not in connection.introspection.table_names(cursor):
                return
            # the engine's description: SQLite's from its PRAGMAs, not Django's sqlparse
            # parse of the CREATE TABLE (a tenth of a second per snapshot)
            describe = store.engine.table_description
            columns = {c.name for c in describe(connection, cursor, RECORD_TABLE)}
            if not {"db_id", "project_id"} <= columns:
                return
            cursor.execute(
                f"SELECT project_id, count(*), max(db_id) "
                f"FROM {store.engine.quote_name(RECORD_TABLE)} GROUP BY project_id"
            )
            rows = cursor.fetchall()
    except DatabaseError as exc:
        raise store.read_error(exc) from exc
    snapshot.sumatra = True
    snapshot.records = {project: count for project, count, _ in rows}
    ids = [top for _, _, top in rows if top is not None]
    snapshot.max_record_id = max(ids) if ids else None

from __future__ import annotations

import re
from datetime import datetime
from glob import escape as glob_escape
from pathlib import Path

from ...admin.postgresql import Admin, build_schema
from ...copy import copy_store, plan_copy, remove_stale_partials
from ...errors import Refused, SmtmigrateError
from ...locations import new_sqlite_target, resolve
from ...render import (
    PlainCopyEvents,
    render_backing_up,
    render_backup,
    render_database,
    render_dropped,
    render_mariadb_database,
    render_mariadb_recreated,
    render_ready,
    render_recreated,
)
from ...render.prompt import confirm_database_name
from ...snapshot import source_snapshot
from ..base import SmtmigrateCommand, add_admin_option, add_yes_option


class Command(SmtmigrateCommand):
    help = (
        "Drop a PostgreSQL or MariaDB Sumatra database and create it again, empty, UTF8 "
        "(MariaDB: utf8mb4, binary no-pad collation), with Sumatra's widened schema. Backs up "
        "its records first; asks for the database name (or --yes)."
    )

    def add_arguments(self, parser):
        parser.add_argument("target", help="postgresql://… or mysql://… URL of the database")
        parser.add_argument("--owner", help="owner of the new database (default: the old one)")
        add_yes_option(parser)
        parser.add_argument(
            "--backup",
            metavar="PATH",
            help="where to write the backup (a new SQLite Sumatra store); default "
            "./<database>-backup-<time>.sqlite",
        )
        parser.add_argument("--no-schema", action="store_true", help="leave the new database empty")
        add_admin_option(
            parser,
            help="connect here to drop and create (default: database postgres of the server)",
        )

    def handle(self, target, owner, yes, backup, no_schema, admin, **options):
        out = self.console()
        with resolve(target, mariadb=True) as mariadb_store:
            if mariadb_store.kind == "mariadb":
                self._mariadb(mariadb_store, owner, yes, backup, no_schema, admin, out)
                return
        with resolve(target) as store, Admin(store, admin) as server:
            info = server.describe()
            owner = owner or info.owner or store.settings.get("USER") or server.user
            render_database(info, store.display, owner, out)
            # Everything that could stop us is checked before anything is dropped.
            if not server.role_exists(owner):
                raise Refused(f"role '{owner}' does not exist; nothing was changed")
            if info.other_tables:
                # Its data could not be backed up (not a Sumatra store we know): refuse
                # rather than drop what we cannot restore.
                raise Refused(
                    f"{info.name} holds {info.other_tables} table(s) but no Sumatra store "
                    "smtmigrate can back up; drop-recreate replaces only Sumatra databases "
                    "(or empty ones): nothing was changed"
                )
            server.check_privileges(owner, drop=info.exists)
            if info.records:
                stamp = f"{datetime.now():%Y%m%d-%H%M%S}"
                # A database name may hold '/' or worse: the default file name keeps
                # letters, digits, '.', '-' and '_' of it.
                safe_name = re.sub(r"[^\w.-]", "_", info.name)
                path = Path(backup or f"{safe_name}-backup-{stamp}.sqlite")
                new_sqlite_target(path).close()  # a place it cannot be written: say so now
            self._confirm(info.name, yes, out)
            if info.records:
                if not backup:  # a killed run's partial has another time in its name
                    remove_stale_partials(Path("."), f"{glob_escape(safe_name)}-backup-*.sqlite")
                render_backing_up(info.records, path, out)
                self._backup(store, path, out)
            store.close()  # our own sessions go before the drop, not killed by it
            if info.exists:
                server.drop_database()
                render_dropped(info.name, out)
            server.create_database(owner)
            if not no_schema:
                with server.target_as_admin() as created:
                    build_schema(created, owner=owner)
            render_recreated(info.name, owner, not no_schema, out)
        render_ready(store.display, out)

    def _mariadb(self, store, owner, yes, backup, no_schema, admin, out) -> None:
        """MariaDB: the same steps (back up, confirm, drop, create as `createdb` does,
        build Sumatra's widened schema); no owners, the URL's user is granted."""
        from ...admin.mariadb import (
            admin_store,
            create_database,
            drop_database,
            refuse_owner,
            sumatra_records,
        )
        from ...admin.mariadb import (
            build_schema as build_mariadb_schema,
        )
        from ...engines.mariadb_server import database_tables

        refuse_owner(owner)
        name = store.settings["NAME"]
        tables = database_tables(store)
        records = sumatra_records(store) if tables else None
        if tables and records is None:
            raise Refused(
                f"{name} holds {tables} table(s) but no Sumatra store smtmigrate can back "
                "up; drop-recreate replaces only Sumatra databases (or empty ones): nothing "
                "was changed"
            )
        render_mariadb_database(store.display, tables, records, out)
        path = None
        if records:
            stamp = f"{datetime.now():%Y%m%d-%H%M%S}"
            safe_name = re.sub(r"[^\w.-]", "_", name)
            path = Path(backup or f"{safe_name}-backup-{stamp}.sqlite")
            new_sqlite_target(path).close()  # a place it cannot be written: say so now
        self._confirm(name, yes, out)
        if path is not None:
            if not backup:
                remove_stale_partials(Path("."), f"{glob_escape(safe_name)}-backup-*.sqlite")
            render_backing_up(records, path, out)
            self._backup(store, path, out)
        store.close()
        with admin_store(admin) as server:
            if tables is not None:
                drop_database(store, admin=server)
                render_dropped(name, out)
            _, account = create_database(store, create_user=False, password=None, admin=server)
        if not no_schema:
            build_mariadb_schema(store)
        render_mariadb_recreated(name, account, not no_schema, out)
        render_ready(store.display, out)

    def _confirm(self, name: str, yes: bool, out) -> None:
        if not yes:
            confirm_database_name(name)

    def _backup(self, store, path: Path, out) -> None:
        try:
            with new_sqlite_target(path) as backup, source_snapshot(store) as snapshot:
                plan = plan_copy(snapshot, backup)
                if plan.refused:
                    raise Refused("the backup would not take every value")
                # Progress lines: a big store takes minutes, and a user who interrupts
                # here (nothing dropped yet) should see where it was.
                result = copy_store(plan, PlainCopyEvents(out))
        except SmtmigrateError as exc:
            raise Refused(f"backup failed, nothing was dropped: {exc}") from exc
        render_backup(path, snapshot, result, out)
        changes = snapshot.changes
        if changes is not None and changes.changed:
            # Dropping now would lose what was written after the snapshot.
            raise Refused(
                f"{store.display} changed after the backup's snapshot (+{changes.added:,} "
                f"records, -{changes.removed:,}): the backup lacks that, so nothing was "
                "dropped; stop the jobs writing to it and run again"
            )

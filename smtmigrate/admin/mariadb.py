"""MariaDB databases and users for createdb, drop-recreate and move (a server
connection, no transactional DDL: each step says what it leaves on failure)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from django.db import DatabaseError

from .. import interrupts
from ..engines.mariadb import MariadbEngine
from ..engines.mariadb_findings import COLLATION
from ..engines.mariadb_server import PARTIAL_PREFIX, database_tables, server_store
from ..errors import Refused, SmtmigrateError, StoreConnectionError
from .backup import NOT_SUMATRA, back_up, backup_path
from .base import ServerAdmin
from .created import CreatedDatabase

if TYPE_CHECKING:
    from ..locations import Store
    from ..move_state import MovePlan, MoveResult


# -- createdb ---------------------------------------------------------------------------------


def refuse_owner(owner: str | None) -> None:
    """`--owner` (createdb, drop-recreate): MariaDB databases have no owners."""
    if owner:
        raise SmtmigrateError("--owner does not apply to MariaDB: the URL's user is granted")


@contextmanager
def admin_store(url: str | None) -> Iterator[Store | None]:
    """The server of `--admin URL`, to create or drop a database as (None: the target
    URL's own user); closed after."""
    if not url:
        yield None
        return
    from ..engines.mariadb_server import server_url
    from ..locations import resolve

    store = resolve(server_url(url), mariadb=True)
    try:
        if store.engine.vendor != MariadbEngine.vendor:
            raise SmtmigrateError("--admin takes a mysql:// URL for a MariaDB target")
        yield store
    finally:
        store.close()


def account_host(store: Store) -> str:
    """The host part of the MariaDB account the URL's user connects as: `localhost` for
    the local socket or a local name, else any host."""
    host = store.settings.get("HOST") or ""
    return "localhost" if host in ("", "localhost") or host.startswith("/") else "%"


def matched_host(store: Store) -> str | None:
    """The host part of the account the server matches the URL's user to (`CURRENT_USER()`:
    `root@127.0.0.1` or `root@localhost`, as its grants and name resolution decide); None
    when that user cannot connect (yet)."""
    from ..locations import Store as StoreClass

    settings = dict(store.settings)
    settings["NAME"] = ""
    try:
        with (
            StoreClass("mariadb", store.display, settings) as server,
            server.connection.cursor() as cursor,
        ):
            cursor.execute("SELECT CURRENT_USER()")
            user, _, host = cursor.fetchone()[0].rpartition("@")
    except (DatabaseError, StoreConnectionError):
        return None
    return host if user == store.settings.get("USER") else None


def create_database(
    store: Store, *, create_user: bool, password: str | None, admin: Store | None
) -> tuple[str, str]:
    """A new, empty database for Sumatra (utf8mb4, binary no-pad collation), its user
    too with `create_user`, granted every privilege on it and on the scratch databases a
    copy builds in (`smtmigrate_partial_…`), so that user alone can `copy` into it. No
    schema: a copy into MariaDB fills an empty database, and Sumatra builds its own.
    Everything is checked first; what was made is dropped again if a later step fails.
    Returns (database, account)."""
    from ..locations import Store as StoreClass

    engine = MariadbEngine()
    q = engine.quote_name
    name = store.settings["NAME"]
    user = store.settings.get("USER") or ""
    if not user:
        raise SmtmigrateError(f"{store.display}: name the database's user in the URL")
    host = (None if create_user else matched_host(store)) or account_host(store)
    account = f"'{user}'@'{host}'"
    if "'" in user or "\\" in user:
        raise SmtmigrateError(f"{store.display}: a user name with quotes is not supported")
    server_settings = dict((admin or store).settings)
    server_settings["NAME"] = ""
    with StoreClass("mariadb", (admin or store).display, server_settings) as server:
        try:
            with server.connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM information_schema.schemata WHERE schema_name = %s",
                    [name],
                )
                if cursor.fetchone()[0]:
                    raise Refused(f"database {name} exists already")
                cursor.execute(
                    "SELECT count(*) FROM mysql.user WHERE User = %s AND Host = %s", [user, host]
                )
                exists = cursor.fetchone()[0]
                if create_user and exists:
                    raise Refused(f"user {account} exists already")
                if not create_user and not exists:
                    raise Refused(f"user {account} does not exist (add --create-role)")
                made: list[str] = []
                try:
                    with interrupts.deferred():  # made, and known to be made
                        cursor.execute(
                            f"CREATE DATABASE {q(name)} CHARACTER SET utf8mb4 COLLATE {COLLATION}"
                        )
                        made.append("database")
                    if create_user:
                        with interrupts.deferred():
                            cursor.execute(  # %%: the statement is %-formatted with its parameter
                                f"CREATE USER {account.replace('%', '%%')} IDENTIFIED BY %s",
                                [password or ""],
                            )
                            made.append("user")
                    cursor.execute(f"GRANT ALL PRIVILEGES ON {q(name)}.* TO {account}")
                    partial = PARTIAL_PREFIX.replace("_", "\\_") + "%"
                    cursor.execute(f"GRANT ALL PRIVILEGES ON {q(partial)}.* TO {account}")
                except BaseException:
                    if "user" in made:
                        cursor.execute(f"DROP USER IF EXISTS {account}")
                    if "database" in made:
                        cursor.execute(f"DROP DATABASE IF EXISTS {q(name)}")
                    raise
        except DatabaseError as exc:
            hint = ""
            if _error_code(exc) in PRIVILEGE_ERRORS:
                hint = (
                    "; connect as a user who may (create databases, grant, read mysql.user) "
                    "with --admin mysql://user@host/"
                    if admin is None
                    else f"; {admin.display} may not do this"
                )
            raise SmtmigrateError(
                f"creating {store.display} failed, nothing was kept: "
                f"{server.describe_error(exc)}{hint}"
            ) from exc
    return name, account


# Access denied to a database (1044), a command denied on a table (1142), a privilege needed
# (1227), not allowed to create a user with GRANT (1410).
PRIVILEGE_ERRORS = (1044, 1142, 1227, 1410)


def _error_code(exc: BaseException) -> int | None:
    """MySQLdb's error number, which Django's wrapper keeps in its cause's args."""
    for error in (exc, exc.__cause__):
        args = getattr(error, "args", ())
        if args and isinstance(args[0], int):
            return args[0]
    return None


# -- drop-recreate ----------------------------------------------------------------------------


def sumatra_records(store: Store) -> int | None:
    """How many records a database's Sumatra store holds; None when its tables are not a
    Sumatra store smtmigrate knows."""
    from ..errors import NotASumatraStore
    from ..schema import RECORD_TABLE, inspect_store

    try:
        inspection = inspect_store(store)
    except NotASumatraStore:
        return None
    table = inspection.table_for(RECORD_TABLE)
    if table is None:
        return None
    with store.connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {MariadbEngine().quote_name(table.name)}")
        return int(cursor.fetchone()[0])


def drop_database(store: Store, *, admin: Store | None) -> None:
    q = MariadbEngine().quote_name
    with server_store(admin or store) as server, server.connection.cursor() as cursor:
        try:
            cursor.execute(f"DROP DATABASE IF EXISTS {q(store.settings['NAME'])}")
        except DatabaseError as exc:
            raise SmtmigrateError(
                f"dropping {store.display} failed: {server.describe_error(exc)}"
            ) from exc


def build_schema(store: Store) -> None:
    """Sumatra's own migrations, then the default widening (as `copy --widen` builds a
    target), in a new, empty database. MariaDB's DDL commits as it goes: on a failure the
    database is left empty or part-built, and drop-recreate can be run again."""
    from ..identities import build_in_transaction
    from ..widen_apply import build_widened_schema

    with store.sibling(store.display, dict(store.settings)) as fresh:
        try:
            build_in_transaction(build_widened_schema(fresh))  # a new, empty store: at once
        except DatabaseError as exc:
            raise SmtmigrateError(
                f"building Sumatra's schema in {store.display} failed: {fresh.describe_error(exc)}"
            ) from exc


class MariadbAdmin(ServerAdmin):
    """MariaDB's workflows: no database owners (the URL's user is granted), no schema built
    (a copy fills an empty database), every step undone by hand (no transactional DDL)."""

    def create(self, store, *, owner, create_role, password, admin) -> CreatedDatabase:
        refuse_owner(owner)
        if store.password:
            raise SmtmigrateError(
                "the new user's password is taken from --password-env VAR only (not the URL)"
            )
        with admin_store(admin) as server:
            name, account = create_database(
                store, create_user=create_role, password=password, admin=server
            )
        return CreatedDatabase(name, account, create_role, bool(password), False, account)

    def plan_database(self, plan: MovePlan) -> bool:
        tables = database_tables(plan.target)
        plan.create_database = tables is None
        return bool(tables)  # copies build afresh and refuse any table: an earlier copy's

    def describe_new(self, target: Store, owner: str) -> str:
        return f"{COLLATION}, {owner} granted"

    def create_for_move(self, plan: MovePlan, result: MoveResult) -> None:
        """As `createdb` does: the database, binary no-pad, its URL's user granted on it
        and on the copy's scratch databases (over --admin when given)."""
        with admin_store(plan.options.admin) as admin:
            create_database(plan.target, create_user=False, password=None, admin=admin)
        result.created_here = True
        result.changed.append(f"created database {plan.target.display}")

    def drop_for_move(self, plan: MovePlan, result: MoveResult) -> None:
        with admin_store(plan.options.admin) as admin:
            drop_database(plan.target, admin=admin)

    def recreate(self, store, *, owner, backup, schema, admin, confirm, events) -> None:
        """drop-recreate on MariaDB: no owners, the URL's user is granted."""
        refuse_owner(owner)
        name = store.settings["NAME"]
        tables = database_tables(store)
        records = sumatra_records(store) if tables else None
        if tables and records is None:
            raise Refused(NOT_SUMATRA.format(name=name, tables=tables))
        events.mariadb_database(store.display, tables, records)
        path = backup_path(name, backup) if records else None
        confirm(name)
        if path is not None and records:
            back_up(store, name, records, path, backup, events)
        store.close()
        with admin_store(admin) as server:
            if tables is not None:
                drop_database(store, admin=server)
                events.dropped(name)
            _, account = create_database(store, create_user=False, password=None, admin=server)
        if schema:
            build_schema(store)
        events.mariadb_recreated(name, account, schema)
        events.ready(store.display)

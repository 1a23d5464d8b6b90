"""Create, drop and recreate PostgreSQL databases for Sumatra, from the maintenance database.

Databases are created and dropped over a connection to the server's maintenance database
(`postgres`, or `--admin URL`), never to the database itself. Identifiers are quoted with
the PostgreSQL engine (psycopg2.sql) and values passed as parameters; a new role's password
is hashed (SCRAM) on this side with libpq's own PQencryptPasswordConn, so it never crosses the wire.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psycopg2
import psycopg2.extensions
from django.db import DatabaseError, transaction
from psycopg2 import sql

from .. import interrupts
from ..engines import POSTGRESQL
from ..errors import (
    NotASumatraStore,
    Refused,
    SmtmigrateError,
    StoreConnectionError,
    UnknownLayout,
)
from ..identities import build_in_transaction
from ..locations import (
    POSTGRES_SCHEMES,
    URL_RE,
    Store,
    connection_error,
    one_line,
    postgres_settings,
    redact_text,
    redact_url,
)
from ..schema import inspect_store
from ..widen_apply import build_widened_schema
from .backup import NOT_SUMATRA, back_up, backup_path
from .base import ServerAdmin
from .created import CreatedDatabase

if TYPE_CHECKING:
    from ..move_state import MovePlan, MoveResult

_identifier = POSTGRESQL.identifier  # roles and databases in psycopg2.sql

MAINTENANCE_DATABASES = frozenset({"postgres", "template0", "template1"})


@dataclass
class DatabaseInfo:
    name: str
    exists: bool
    owner: str | None = None
    encoding: str | None = None
    size: int | None = None
    sessions: list[tuple] = field(default_factory=list)  # (pid, user, application, client)
    records: int | None = None  # None: not a Sumatra store (or no database)
    projects: list[str] = field(default_factory=list)
    other_tables: int = 0  # tables of a database that is not a Sumatra store we can read


class Admin:
    """An autocommit connection to the maintenance database of the target's server."""

    def __init__(
        self, target: Store, admin_url: str | None = None, *, as_target_user: bool = True
    ) -> None:
        """Without `admin_url`: database `postgres` on the target's server, as the target
        URL's user, or (`as_target_user=False`, when that role is still to be made) as
        libpq's default user (PGUSER, else the login name)."""
        if target.kind != "postgresql":
            raise SmtmigrateError(f"{target.display}: not a PostgreSQL database URL")
        refuse_maintenance(target.settings["NAME"])
        match = URL_RE.match(admin_url or "")
        if admin_url and not (match and match["scheme"].lower() in POSTGRES_SCHEMES):
            # postgres_settings() parses any scheme://: gopher:// or mysql:// must not pass.
            raise SmtmigrateError(
                f"{redact_url(admin_url)}: --admin takes a postgresql:// URL "
                "(of the server's maintenance database)"
            )
        self.target = target
        self.name = target.settings["NAME"]
        settings = postgres_settings(admin_url) if admin_url else dict(target.settings)
        if not admin_url:
            settings["NAME"] = "postgres"
            if not as_target_user:
                settings["USER"] = settings["PASSWORD"] = ""
        self.settings = settings
        self.display = redact_url(admin_url) if admin_url else f"the server of {target.display}"
        self.password = settings.get("PASSWORD") or ""
        params = {
            "dbname": settings["NAME"],
            "user": settings.get("USER") or None,
            "password": settings.get("PASSWORD") or None,
            "host": settings.get("HOST") or None,
            "port": settings.get("PORT") or None,
            **settings.get("OPTIONS", {}),
        }
        try:
            # OPTIONS carry connect_timeout, chosen as for every store (locations.py).
            self.connection = psycopg2.connect(**{k: v for k, v in params.items() if v})
        except psycopg2.Error as exc:
            raise connection_error(self.display, self.describe_error(exc), settings) from exc
        self.connection.autocommit = True

    def describe_error(self, exc: BaseException) -> str:
        return redact_text(redact_text(one_line(exc), self.password), self.target.password)

    def execute(self, statement, params=None) -> list[tuple]:
        try:
            with self.connection.cursor() as cursor:
                cursor.execute(statement, params)
                return cursor.fetchall() if cursor.description else []
        except psycopg2.Error as exc:
            raise Refused(self.describe_error(exc)) from exc

    @property
    def user(self) -> str:
        return self.execute("SELECT current_user")[0][0]

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- facts ----------------------------------------------------------------------------

    def describe(self) -> DatabaseInfo:
        rows = self.execute(
            "SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), "
            "pg_database_size(oid) FROM pg_database WHERE datname = %s",
            [self.name],
        )
        if not rows:
            return DatabaseInfo(self.name, exists=False)
        owner, encoding, size = rows[0]
        sessions = self.execute(
            "SELECT pid, usename, application_name, coalesce(client_addr::text, 'local') "
            "FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [self.name],
        )
        info = DatabaseInfo(self.name, True, owner, encoding, size, sessions)
        store = self.target
        try:
            inspect_store(store)
            with store.connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM django_store_record")
                info.records = cursor.fetchone()[0]
                cursor.execute("SELECT id FROM django_store_project ORDER BY id")
                info.projects = [row[0] for row in cursor.fetchall()]
        except (NotASumatraStore, UnknownLayout):
            # Nothing we could back up: only an empty database may then be dropped.
            info.other_tables = self._count_tables(store)
        except StoreConnectionError as exc:
            # A store this role cannot read (permission denied) is not "no Sumatra store":
            # its records could not be backed up, so nothing may be dropped.
            raise StoreConnectionError(
                f"{exc}; nothing was changed (its records could not be backed up)"
            ) from exc
        except DatabaseError as exc:
            raise store.read_error(exc) from exc
        finally:
            store.close()  # our own session must not hold the database open
        return info

    def _count_tables(self, store: Store) -> int:
        try:
            with store.connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE c.relkind IN ('r', 'p', 'm', 'f') AND n.nspname <> 'information_schema' "
                    "AND n.nspname NOT LIKE 'pg\\_%'"
                )
                return cursor.fetchone()[0]
        except DatabaseError as exc:
            raise store.read_error(exc) from exc

    def target_as_admin(self) -> Store:
        """The target database, reached with the admin's credentials: the schema is built
        over it under SET ROLE owner, so the owner's password is never needed here."""
        settings = {**self.settings, "NAME": self.name}
        return Store("postgresql", self.target.display, settings)

    def check_privileges(self, owner: str, *, drop: bool) -> None:
        """Refuse before anything changes if this role could drop but not create again."""
        (user, superuser, createdb, member, owns) = self.execute(
            "SELECT current_user, rolsuper, rolcreatedb, pg_has_role(current_user, %s, 'MEMBER'), "
            "coalesce((SELECT pg_has_role(current_user, datdba, 'MEMBER') FROM pg_database "
            "WHERE datname = %s), true) FROM pg_roles WHERE rolname = current_user",
            [owner, self.name],
        )[0]
        if superuser:
            return
        if not createdb:
            raise Refused(
                f"role '{user}' may not create databases (no CREATEDB); connect as one that "
                "may with --admin URL; nothing was changed"
            )
        if not member:
            raise Refused(
                f"role '{user}' may not create a database owned by '{owner}' (not a member "
                "of it); nothing was changed"
            )
        if drop and not owns:
            raise Refused(
                f"role '{user}' may not drop {self.name} (only its owner or a superuser); "
                "nothing was changed"
            )

    def exists(self) -> bool:
        """Whether the database exists (without looking inside, as describe() does)."""
        return bool(self.execute("SELECT 1 FROM pg_database WHERE datname = %s", [self.name]))

    def role_exists(self, role: str) -> bool:
        return bool(self.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]))

    # -- changes --------------------------------------------------------------------------

    def create_role(self, role: str, password: str | None) -> None:
        statement = sql.SQL("CREATE ROLE {} LOGIN").format(_identifier(role))
        if password:
            hashed = psycopg2.extensions.encrypt_password(
                password, role, self.connection, "scram-sha-256"
            )
            statement = sql.SQL("{} PASSWORD {}").format(statement, sql.Literal(hashed))
        self.execute(statement)

    def check_may_create_role(self) -> None:
        (user, may) = self.execute(
            "SELECT current_user, rolsuper OR rolcreaterole FROM pg_roles "
            "WHERE rolname = current_user"
        )[0]
        if not may:
            raise Refused(
                f"role '{user}' may not create roles (no CREATEROLE); connect as one that "
                "may with --admin URL; nothing was changed"
            )

    def become_member(self, role: str) -> bool:
        """Make this (non-superuser) admin a member of `role`, which it needs to create a
        database owned by it and build the schema as it. Returns whether it granted it
        (to be revoked by the caller): a CREATEROLE admin may grant the role it made."""
        if self.execute("SELECT pg_has_role(current_user, %s, 'MEMBER')", [role])[0][0]:
            return False
        self.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(_identifier(role)))
        return True

    def revoke_membership(self, role: str) -> None:
        self.execute(sql.SQL("REVOKE {} FROM CURRENT_USER").format(_identifier(role)))

    def drop_role(self, role: str) -> None:
        self.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(_identifier(role)))

    def drop_database(self) -> None:
        name = _identifier(self.name)
        if self.connection.server_version >= 130000:
            self.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(name))
            return
        self.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(name))
        self.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            [self.name],
        )
        self.execute(sql.SQL("DROP DATABASE {}").format(name))

    def create_database(self, owner: str) -> None:
        self.execute(
            sql.SQL("CREATE DATABASE {} OWNER {} ENCODING 'UTF8' TEMPLATE template0").format(
                _identifier(self.name), _identifier(owner)
            )
        )


def refuse_maintenance(name: str) -> None:
    if name in MAINTENANCE_DATABASES:
        raise Refused(
            f"'{name}' is a maintenance database of the server (postgres, template0, "
            "template1): smtmigrate never drops or recreates those"
        )


def build_schema(store: Store, *, owner: str | None = None, widen: bool = True) -> None:
    """Sumatra's own migrations and the default widening, in one transaction, as `owner`
    (so the tables belong to the role Sumatra connects as)."""
    try:
        with transaction.atomic(using=store.alias):
            with store.connection.cursor() as cursor:
                cursor.execute("SELECT current_user")
                if owner and cursor.fetchone()[0] != owner:
                    cursor.execute(
                        sql.SQL("SET LOCAL ROLE {}")
                        .format(_identifier(owner))
                        .as_string(store.connection.connection)
                    )
            # parallel first runs: one row each
            build_in_transaction(build_widened_schema(store, widen=widen))
    except DatabaseError as exc:
        raise SmtmigrateError(
            f"building Sumatra's schema in {store.display} failed: {store.describe_error(exc)}"
        ) from exc


def pg_hba_line(store: Store, role: str) -> str:
    host = store.settings.get("HOST") or ""
    if not host or host.startswith("/"):
        return f"local   {store.settings['NAME']}   {role}   scram-sha-256"
    address = "127.0.0.1/32" if host in ("localhost", "127.0.0.1") else "<client address>/32"
    return f"host    {store.settings['NAME']}   {role}   {address}   scram-sha-256"


def create_store_database(
    store: Store,
    *,
    owner: str | None = None,
    create_role: bool = False,
    password: str | None = None,
    admin: str | None = None,
    schema: bool = True,
    as_target_user: bool = False,
) -> CreatedDatabase:
    """A UTF8 database for Sumatra owned by `owner` (the URL's user by default), its role
    too with `create_role`, and Sumatra's widened schema unless `schema` is False.
    Without `admin`, created as libpq's default user, or (`as_target_user`) as the URL's.

    Everything that could stop it is checked before anything is created, and whatever
    it created is removed again if a later step fails, so running it again starts afresh.
    """
    if create_role and store.password and store.password != password:
        # Silently creating the role without it (or with another) would surprise.
        raise SmtmigrateError(
            "the new role's password is taken from --password-env VAR only (not the "
            "URL, which shells and process lists show): set VAR to it"
        )
    with Admin(store, admin, as_target_user=as_target_user) as server:
        owner = owner or store.settings.get("USER") or server.user
        if server.exists():  # describe() would read it, as the URL's role
            raise Refused(f"database {store.settings['NAME']} exists (drop-recreate replaces it)")
        if not create_role and not server.role_exists(owner):
            # Before check_privileges, whose pg_has_role() fails on a missing role
            # with no hint of what to do.
            raise Refused(f"role '{owner}' does not exist (add --create-role)")
        server.check_privileges(owner if not create_role else server.user, drop=False)
        if create_role:
            if server.role_exists(owner):
                raise Refused(f"role '{owner}' exists already")
            server.check_may_create_role()
        made: list[str] = []  # undone, newest first, if a later step fails
        granted = False
        try:
            if create_role:
                with interrupts.deferred():  # made, and known to be made
                    server.create_role(owner, password)
                    made.append("role")
                granted = server.become_member(owner)
            with interrupts.deferred():
                server.create_database(owner)
                made.append("database")
            if schema:
                with server.target_as_admin() as created:
                    build_schema(created, owner=owner)
        except BaseException as exc:
            _undo(server, owner, made, exc)
            raise
        if granted:  # the admin keeps no membership it did not have
            server.revoke_membership(owner)
    return CreatedDatabase(store.settings["NAME"], owner, create_role, bool(password), schema)


def _undo(server: Admin, owner: str, made: list[str], exc: BaseException) -> None:
    """Remove what this run created, so that running it again starts afresh."""
    if "database" in made:
        server.drop_database()
    if "role" in made:
        server.drop_role(owner)  # its memberships go with it
    if made and isinstance(exc, SmtmigrateError):
        exc.args = (f"{exc}; removed the {' and the '.join(reversed(made))} it had created",)


class PostgresAdmin(ServerAdmin):
    """PostgreSQL's workflows, from the server's maintenance database (`Admin`)."""

    def create(self, store, *, owner, create_role, password, admin) -> CreatedDatabase:
        return create_store_database(
            store, owner=owner, create_role=create_role, password=password, admin=admin
        )

    def plan_database(self, plan: MovePlan) -> bool:
        target, options = plan.target, plan.options
        with Admin(target, options.admin, as_target_user=not options.create_role) as server:
            plan.create_database = not server.exists()
            if plan.create_database and not (options.admin or options.create_role):
                # Created as the URL's role when it may (its login is what libpq was given),
                # else as libpq's default user, as createdb does (checked when creating).
                try:
                    server.check_privileges(target.settings.get("USER") or server.user, drop=False)
                    plan.create_as_target_user = True
                except Refused:
                    pass
        if plan.create_database and options.admin and not options.create_role:
            with Admin(target):  # the URL's own credentials work, before anything is created
                pass
        return False  # the copy goes into the database's own schema, whatever it holds

    def describe_new(self, target: Store, owner: str) -> str:
        return f"owner {owner}, UTF8"

    def create_for_move(self, plan: MovePlan, result: MoveResult) -> None:
        options = plan.options
        result.created = create_store_database(
            plan.target,
            create_role=options.create_role,
            password=options.password,
            admin=options.admin,
            schema=False,  # the copy builds it, in its own transaction
            as_target_user=plan.create_as_target_user,
        )
        result.created_here = True
        role = f"role {result.created.owner} and " if result.created.role_created else ""
        result.changed.append(f"created {role}database {plan.target.display}")
        if options.password and not plan.target.password:
            # The new role's password: the copy connects with it, the switch puts it in
            # ~/.pgpass (never in .smt/project).
            plan.target.settings["PASSWORD"] = options.password

    def drop_for_move(self, plan: MovePlan, result: MoveResult) -> None:
        plan.target.close()
        created = result.created
        with Admin(
            plan.target, plan.options.admin, as_target_user=not plan.options.create_role
        ) as server:
            server.drop_database()
            if created is not None and created.role_created:
                server.drop_role(created.owner)

    def recreate(self, store, *, owner, backup, schema, admin, confirm, events) -> None:
        """drop-recreate on PostgreSQL, from the maintenance database."""
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
            path = backup_path(info.name, backup) if info.records else None
            confirm(info.name)
            if path is not None and info.records:
                back_up(store, info.name, info.records, path, backup, events)
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

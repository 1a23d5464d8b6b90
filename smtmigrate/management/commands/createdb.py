from __future__ import annotations

from ...errors import SmtmigrateError
from ...locations import resolve
from ...render import render_created
from ...target import create_store_database
from ..base import SmtmigrateCommand, add_admin_option, add_role_options, password_from_env


class Command(SmtmigrateCommand):
    help = (
        "Create a UTF8 PostgreSQL database for Sumatra, owned by a role (created with "
        "--create-role), with Sumatra's widened schema; or an empty utf8mb4 MariaDB database "
        "(binary no-pad collation) its user (--create-role: created) may fill."
    )

    def add_arguments(self, parser):
        parser.add_argument("target", help="postgresql://user@host/dbname of the new database")
        parser.add_argument("--owner", help="owning role (default: the URL's user)")
        add_role_options(parser, create_help="create the role too")
        add_admin_option(parser, help="connect here to create")

    def handle(self, target, owner, create_role, password_env, admin, **options):
        password = password_from_env(password_env, create_role)
        with resolve(target, mariadb=True) as store:
            if store.kind == "mariadb":
                self._mariadb(store, owner, create_role, password, admin)
                return
            created = create_store_database(
                store, owner=owner, create_role=create_role, password=password, admin=admin
            )
            render_created(created, store, self.console())

    def _mariadb(self, store, owner, create_role, password, admin) -> None:
        """MariaDB has no database owners: the URL's user gets every privilege on it."""
        from ...engines.mariadb import server_url
        from ...engines.mariadb_admin import create_database

        if owner:
            raise SmtmigrateError("--owner does not apply to MariaDB: the URL's user is granted")
        if store.password:
            raise SmtmigrateError(
                "the new user's password is taken from --password-env VAR only (not the URL)"
            )
        admin_store = None
        if admin:
            admin_store = resolve(server_url(admin), mariadb=True)
            if admin_store.kind != "mariadb":
                raise SmtmigrateError("--admin takes a mysql:// URL for a MariaDB target")
        try:
            name, account = create_database(
                store, create_user=create_role, password=password, admin=admin_store
            )
        finally:
            if admin_store is not None:
                admin_store.close()
        out = self.console()
        if create_role:
            out.print(f"created user {account}", markup=False)
        out.print(f"created database {name} (utf8mb4, utf8mb4_nopad_bin), empty", markup=False)
        out.print(
            f"granted {account} all privileges on it and on smtmigrate_partial_* "
            "(where a copy builds before it renames the tables into place)",
            markup=False,
        )
        out.print("Sumatra's smt runs read the password from MYSQL_PWD (not ~/.my.cnf)")

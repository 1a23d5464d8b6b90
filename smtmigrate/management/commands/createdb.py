from __future__ import annotations

from ...admin.postgresql import create_store_database
from ...errors import SmtmigrateError
from ...locations import resolve
from ...render import render_created, render_mariadb_created
from ..base import SmtmigrateCommand, add_admin_option, add_role_options, password_from_env


class Command(SmtmigrateCommand):
    help = (
        "Create a UTF8 PostgreSQL database for Sumatra, owned by a role (created with "
        "--create-role), with Sumatra's widened schema; or an empty utf8mb4 MariaDB database "
        "(binary no-pad collation) its user (--create-role: created) may fill."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "target",
            help="postgresql://user@host/dbname or mysql://user@host/dbname of the new database",
        )
        parser.add_argument(
            "--owner",
            help="owning role (default: the URL's user; not on MariaDB: its databases have "
            "no owner)",
        )
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
        from ...admin.mariadb import admin_store, create_database, refuse_owner

        refuse_owner(owner)
        if store.password:
            raise SmtmigrateError(
                "the new user's password is taken from --password-env VAR only (not the URL)"
            )
        with admin_store(admin) as server:
            name, account = create_database(
                store, create_user=create_role, password=password, admin=server
            )
        render_mariadb_created(name, account, create_role, self.console())

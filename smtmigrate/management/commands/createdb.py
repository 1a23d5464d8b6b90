from __future__ import annotations

from ...admin import admin_for
from ...locations import resolve
from ...render import render_created
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
            created = admin_for(store).create(
                store, owner=owner, create_role=create_role, password=password, admin=admin
            )
            render_created(created, store, self.console())

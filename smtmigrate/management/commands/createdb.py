from __future__ import annotations

from ...locations import resolve
from ...render import render_created
from ...target import create_store_database
from ..base import SmtmigrateCommand, password_from_env


class Command(SmtmigrateCommand):
    help = (
        "Create a UTF8 PostgreSQL database for Sumatra, owned by a role (created with "
        "--create-role), with Sumatra's widened schema."
    )

    def add_arguments(self, parser):
        parser.add_argument("target", help="postgresql://user@host/dbname of the new database")
        parser.add_argument("--owner", help="owning role (default: the URL's user)")
        parser.add_argument("--create-role", action="store_true", help="create the role too")
        parser.add_argument(
            "--password-env",
            metavar="VAR",
            help="with --create-role: read the role's password from this environment variable",
        )
        parser.add_argument("--admin", metavar="URL", help="connect here to create")

    def handle(self, target, owner, create_role, password_env, admin, **options):
        password = password_from_env(password_env, create_role)
        with resolve(target) as store:
            created = create_store_database(
                store, owner=owner, create_role=create_role, password=password, admin=admin
            )
            render_created(created, store, self.console())

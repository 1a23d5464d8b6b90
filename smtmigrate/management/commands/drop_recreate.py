from __future__ import annotations

from ...admin.recreate import drop_recreate
from ...locations import resolve
from ...render import RecreateEvents
from ...render.prompt import confirm_database_name
from ..base import SmtmigrateCommand, add_admin_option, add_yes_option


class Command(SmtmigrateCommand):
    help = (
        "Drop a PostgreSQL or MariaDB Sumatra database and create it again, empty, UTF8 "
        "(MariaDB: utf8mb4, binary no-pad collation), with Sumatra's widened schema. Backs up "
        "its records first; asks for the database name (or --yes)."
    )

    def add_arguments(self, parser):
        parser.add_argument("target", help="postgresql://… or mysql://… URL of the database")
        parser.add_argument(
            "--owner",
            help="owner of the new database (default: the old one; not on MariaDB: no "
            "owners there)",
        )
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
            help="connect here to drop and create (default: PostgreSQL: the server's database "
            "postgres; MariaDB: the target URL's user)",
        )

    def handle(self, target, owner, yes, backup, no_schema, admin, **options):
        with resolve(target, mariadb=True) as store:
            drop_recreate(
                store,
                owner=owner,
                backup=backup,
                schema=not no_schema,
                admin=admin,
                confirm=(lambda name: None) if yes else confirm_database_name,
                events=RecreateEvents(self.console()),
            )

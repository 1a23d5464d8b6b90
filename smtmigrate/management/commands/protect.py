from __future__ import annotations

from ...identities import LOCK_ATTEMPTS, LOCK_TIMEOUT
from ...locations import resolve
from ...protect import protect_store
from ...render import render_protect, write_json
from ..base import SmtmigrateCommand, add_format_option


class Command(SmtmigrateCommand):
    help = (
        "Add the unique identities that keep parallel `smt run`s from creating a shared row "
        "twice to a PostgreSQL or MariaDB store, while jobs run (concurrent index builds, "
        "online ALTERs, short locks). A store with duplicate rows is refused unless --dedupe "
        "merges them first. Exit 0: protected (or already); 1: refused; 2: usage or "
        "connection error."
    )

    def add_arguments(self, parser):
        parser.add_argument("store", help="postgresql://… or mysql://… URL, or a project dir")
        parser.add_argument(
            "--dedupe",
            action="store_true",
            help="merge duplicate rows in place first (one transaction: references "
            "re-pointed to the kept row, the others deleted)",
        )
        parser.add_argument("--dry-run", action="store_true", help="report; change nothing")
        parser.add_argument(
            "--lock-timeout",
            type=float,
            default=LOCK_TIMEOUT,
            metavar="SECONDS",
            help="give way to running jobs after waiting this long for a lock, then retry "
            f"({LOCK_ATTEMPTS} attempts; default {LOCK_TIMEOUT:g} s)",
        )
        add_format_option(parser)

    def handle(self, store, dedupe, dry_run, lock_timeout, format, **options):
        out = self.console()
        with resolve(store, mariadb=True) as location:
            result = protect_store(
                location, dedupe=dedupe, dry_run=dry_run, lock_timeout=lock_timeout
            )
        if format == "json":
            write_json(result.to_dict(), out)
        else:
            render_protect(result, out)

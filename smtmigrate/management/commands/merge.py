from __future__ import annotations

from contextlib import ExitStack

from ...errors import SmtmigrateError
from ...locations import resolve, resolve_target
from ...merge import POLICIES, VERIFY, merge_stores
from ...render import render_merge, write_json
from ..base import SmtmigrateCommand, add_copy_readable_option, add_format_option


class Command(SmtmigrateCommand):
    help = (
        "Merge Sumatra stores (one per node, machine or student) into one store, "
        "in one transaction: a record is (project, label), equal records are taken once, "
        "shared rows are not duplicated, every new record is read back through Sumatra. "
        "Exit 0: merged; 1: refused (conflicts) or check failed, nothing written; 2: errors."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "stores",
            nargs="+",
            metavar="STORE",
            help="SOURCE... TARGET: Sumatra project directories or SQLite files, then the "
            "target: a postgresql://… URL (an existing Sumatra store or an empty database) "
            "or an SQLite store (existing or new)",
        )
        parser.add_argument(
            "--on-conflict",
            choices=POLICIES,
            default="refuse",
            help="a label taken by a different record: refuse (default: nothing written, "
            "every conflict listed), skip-identical (keep what is there), rename (the "
            "incoming record becomes LABEL-merged-<8 hex of its content>)",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="do everything, report, then roll back"
        )
        add_copy_readable_option(parser)
        parser.add_argument(
            "--verify",
            choices=VERIFY,
            default="full",
            help="before commit, every inserted record is compared with its source: full "
            "(default) read back through Sumatra; rows: its stored content (fingerprints "
            "computed by PostgreSQL, much faster); none",
        )
        add_format_option(parser)

    def handle(self, stores, on_conflict, dry_run, verify, format, **options):
        if len(stores) < 2:
            raise SmtmigrateError("give at least one SOURCE and the TARGET")
        with ExitStack() as stack:
            sources = [stack.enter_context(resolve(s)) for s in stores[:-1]]
            target = stack.enter_context(resolve_target(stores[-1]))
            result = merge_stores(
                sources,
                target,
                policy=on_conflict,
                dry_run=dry_run,
                verify=verify,
                copy_readable=options["copy_readable"],
            )
        if format == "json":
            write_json(result.to_dict(), self.console())
        else:
            render_merge(result, self.console())
        self.exit_code = result.exit_code

from __future__ import annotations

from contextlib import ExitStack

from ...dedupe import find_duplicates, plan_dedupe
from ...locations import resolve
from ...render import render_verification, write_json
from ...schema import inspect_store
from ...verify import verify_stores
from ..base import SmtmigrateCommand


class Command(SmtmigrateCommand):
    help = (
        "Compare two Sumatra stores: per-table row counts, a checksum of every row, and every "
        "record read back through Sumatra's models. Exit 0: identical; 1: differences; "
        "2: usage or connection error."
    )

    def add_arguments(self, parser):
        parser.add_argument("source", help="the store copied from")
        parser.add_argument("target", help="the store copied to")
        parser.add_argument(
            "--dedupe",
            action="store_true",
            help="TARGET was made by `copy --dedupe`: compare it with SOURCE as that copy "
            "deduplicated it (duplicate rows merged, references re-pointed)",
        )
        parser.add_argument("--format", choices=("table", "json"), default="table")

    def handle(self, source, target, dedupe, format, **options):
        with ExitStack() as stack:
            source_store = stack.enter_context(resolve(source))
            target_store = stack.enter_context(resolve(target))
            inspection = inspect_store(source_store)
            plan = plan_dedupe(inspection, find_duplicates(inspection)) if dedupe else None
            verification = verify_stores(inspection, inspect_store(target_store), dedupe=plan)
        if format == "json":
            write_json(verification.to_dict(), self.stdout._out)
        else:
            render_verification(verification, self.console())
        self.exit_code = 0 if verification.ok else 1

from __future__ import annotations

from contextlib import ExitStack

from ...dedupe import find_duplicates, plan_dedupe
from ...errors import SmtmigrateError
from ...locations import resolve, same_store
from ...render import render_verification, verification_json, write_json
from ...schema import inspect_store
from ...snapshot import source_snapshot
from ...verify import verify_stores
from ..base import SmtmigrateCommand, add_format_option


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
        add_format_option(parser)

    def handle(self, source, target, dedupe, format, **options):
        with ExitStack() as stack:
            source_store = stack.enter_context(resolve(source, mariadb=True))
            target_store = stack.enter_context(resolve(target, mariadb=True))
            if same_store(source_store, target_store):  # it would prove nothing
                raise SmtmigrateError(
                    f"SOURCE and TARGET are the same store ({target_store.display})"
                )
            # Each side is read in one state of its own, never while it moves.
            snapshots = {
                "source": stack.enter_context(source_snapshot(source_store)),
                "target": stack.enter_context(source_snapshot(target_store)),
            }
            inspection = inspect_store(snapshots["source"].store)
            plan = plan_dedupe(inspection, find_duplicates(inspection)) if dedupe else None
            verification = verify_stores(
                inspection, inspect_store(snapshots["target"].store), dedupe=plan
            )
            for snapshot in snapshots.values():
                snapshot.check_changes()
            verification.snapshots = snapshots
        out = self.console()
        if format == "json":
            write_json(verification_json(verification), out)
        else:
            render_verification(verification, out)
        self.exit_code = 0 if verification.ok else 1

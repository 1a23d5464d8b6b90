from __future__ import annotations

from contextlib import ExitStack

from ...copy import VerificationFailed, copy_store, plan_copy
from ...engines.sqlite_damage import COPY_READABLE, REFUSE
from ...errors import DatabaseMissing, Refused, StoreConnectionError
from ...locations import Store, resolve, resolve_target, same_store
from ...project import check_switch, project_directory, store_url, verify_and_switch
from ...render import (
    copy_events,
    copy_json,
    render_copy_plan,
    render_copy_result,
    render_quiet_refusal,
    render_refusal,
    render_switched,
    render_verification,
    write_json,
)
from ...render.console import render_readable
from ...snapshot import source_snapshot
from ..base import SmtmigrateCommand, add_copy_options, add_format_option


class Command(SmtmigrateCommand):
    help = (
        "Copy every record of a Sumatra store into an empty PostgreSQL database, a new or "
        "empty MariaDB database, or a new SQLite store, all or nothing, verified. "
        "Exit 0: copied and verified; 1: refused or verification failed (nothing "
        "written); 2: usage or connection error."
    )

    def add_arguments(self, parser):
        parser.add_argument("source", help="Sumatra project directory, SQLite file or URL")
        parser.add_argument(
            "target",
            help="postgresql://… URL of an existing, empty database, mysql://… or mariadb://… "
            "URL of a new or empty database, or the path of a new SQLite store",
        )
        parser.add_argument(
            "--widen",
            action="store_true",
            help="widen the target's columns (as `smtmigrate widen`) in the same transaction",
        )
        add_copy_options(parser)
        parser.add_argument("--dry-run", action="store_true", help="show the plan; write nothing")
        parser.add_argument(
            "--switch",
            metavar="PROJECT_DIR",
            help="after a verified copy, point this Sumatra project at TARGET (as `switch`)",
        )
        parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
        add_format_option(parser)

    def handle(
        self,
        source,
        target,
        widen,
        dedupe,
        dry_run,
        verify,
        switch,
        quiet,
        format,
        copy_readable,
        **options,
    ):
        out = self.console()
        as_json = format == "json"
        with ExitStack() as stack:
            source_store = stack.enter_context(resolve(source, mariadb=True))
            target_store = stack.enter_context(resolve_target(target, mariadb=True))
            current = project_dir = None
            if switch:  # everything the switch needs, before copying: never end a copy made
                project_dir = project_directory(switch)
                check_switch(project_dir, target_store)
                current = stack.enter_context(resolve(switch, mariadb=True))
                if not same_store(current, source_store):
                    raise Refused(
                        f"--switch {switch}: the project's store is {current.display}, not "
                        "SOURCE; copy the project's own store (or switch it with "
                        "`smtmigrate switch`); nothing was written"
                    )
            # Everything below reads this one state of the source (snapshot.py).
            damaged = COPY_READABLE if copy_readable else REFUSE
            snapshot = stack.enter_context(source_snapshot(source_store, damaged=damaged))
            try:
                plan = plan_copy(snapshot, target_store, widen=widen, dedupe=dedupe)
            except StoreConnectionError as exc:
                hint = _create_it_first(exc, target_store)
                if hint is None:
                    raise
                raise hint from exc
            if plan.refused:
                if as_json:
                    write_json(copy_json(plan, refused=True), out)
                elif not quiet:
                    render_refusal(plan, source, target, out)
                self.exit_code = Refused.exit_code
                if quiet:
                    render_quiet_refusal(plan, self.console(stderr=True))
                return
            if dry_run:
                if as_json:
                    write_json(copy_json(plan), out)
                elif not quiet:
                    render_copy_plan(plan, out)
                return
            events = copy_events(out, silent=quiet or as_json)
            try:
                with events:
                    result = copy_store(plan, events, level=verify)
            except VerificationFailed as failure:
                if as_json:
                    write_json(copy_json(plan, failed=failure.verification), out)
                elif not quiet:
                    render_verification(failure.verification, out)
                raise
            if as_json:
                write_json(copy_json(plan, result), out)
            elif not quiet:
                render_copy_result(result, out)
            else:  # rows not copied are never silent
                render_readable(snapshot, self.console(stderr=True))
            if current is not None:  # the project's store is SOURCE: checked above
                # The verification is of the snapshot: if the source moved on, check again.
                moved_on = bool(snapshot.changes and snapshot.changes.changed)
                verification, switched = verify_and_switch(
                    project_dir,
                    current,
                    target_store,
                    verified=None if moved_on else result.verification,
                    dedupe=dedupe,
                )
                if not quiet:
                    # The copy's own "Verified: …" line is shown already; a second check
                    # (the source moved on) and the JSON's human lines say theirs.
                    shown = not as_json and verification is result.verification
                    render_switched(
                        switched,
                        self.console(stderr=True) if as_json else out,
                        verification=None if shown else verification,
                    )


def _create_it_first(exc: StoreConnectionError, target: Store) -> StoreConnectionError | None:
    """copy fills an existing database and never creates one: when the target's database
    does not exist, say how to make it (None for any other error)."""
    if not isinstance(exc, DatabaseMissing):
        return None
    return StoreConnectionError(
        f"{exc}; copy fills an existing, empty database: create it first with "
        f"smtmigrate createdb {store_url(target)}"
    )

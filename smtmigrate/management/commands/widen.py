from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from ...audit import audit
from ...errors import NotASumatraStore, Refused, SmtmigrateError
from ...locations import resolve
from ...render import (
    render_applied,
    render_plan,
    render_sql,
    render_sql_head,
    render_still_failing,
    render_widening_start,
    render_written,
)
from ...schema import inspect_store
from ...widen import POLICIES, migration_sql, plan_widening, write_migration
from ...widen_apply import (
    LOCK_ATTEMPTS,
    LOCK_TIMEOUT,
    apply_widening,
    check_widen_target,
    check_widenable,
)
from ..base import SmtmigrateCommand


class Command(SmtmigrateCommand):
    help = (
        "Plan, write (--write), show (--sql) or apply (--apply) a migration that widens "
        "Sumatra's columns so that PostgreSQL or MariaDB stops rejecting long values."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "source",
            nargs="?",
            help="store whose data sizes the plan (required with --policy fit)",
        )
        parser.add_argument(
            "--policy",
            choices=POLICIES,
            default="text",
            help="text: unbounded text for every column unbounded by nature (default); "
            "fit: size flagged columns to their longest value x headroom",
        )
        parser.add_argument("--headroom", type=float, default=2.0, help="for --policy fit")
        parser.add_argument("--write", metavar="DIR", help="write the Django migration to DIR")
        parser.add_argument(
            "--sql",
            action="store_true",
            help="print the SQL (MariaDB's for a MariaDB SOURCE or TARGET, else "
            "PostgreSQL's); apply nothing",
        )
        parser.add_argument(
            "--apply",
            metavar="TARGET",
            help="widen this PostgreSQL store, in one transaction, or this MariaDB store, "
            "one ALTER a table, online where the server can",
        )
        parser.add_argument(
            "--lock-timeout",
            type=float,
            default=LOCK_TIMEOUT,
            metavar="SECONDS",
            help="with --apply: give way to running jobs after waiting this long for a lock, "
            f"then retry ({LOCK_ATTEMPTS} attempts; default {LOCK_TIMEOUT:g} s)",
        )

    def handle(self, source, policy, headroom, write, sql, apply, lock_timeout, **options):
        out = self.console()
        with ExitStack() as stack:
            report = source_inspection = target_inspection = None
            if source:
                source_store = stack.enter_context(resolve(source, mariadb=True))
                source_inspection = inspect_store(source_store)
                report = audit(source_inspection)
            if apply:
                target_store = stack.enter_context(resolve(apply, mariadb=True))
                check_widen_target(target_store)  # before reading it: a usage error (2)
                try:
                    target_inspection = inspect_store(target_store)
                except NotASumatraStore as exc:
                    raise Refused(str(exc)) from exc
                check_widenable(target_inspection)
            plan = plan_widening(
                policy,
                headroom=headroom,
                report=report,
                source=source_inspection,
                target=target_inspection,
            )
            subject = target_inspection or source_inspection
            if subject is not None:  # MariaDB's own: a primary key stays a varchar
                plan = subject.engine.widening_plan(plan)
            title = f"Widening plan for {subject.store.display}" if subject else "Widening plan"
            if sql:  # only SQL on stdout, so that it can be piped into psql
                render_sql_head(title, plan, out)
            elif apply:
                render_widening_start(target_inspection.store.display, plan.policy, out)
            else:
                render_plan(plan, out, title=title)
            if report is not None and not sql:
                render_still_failing(audit(source_inspection, limits=plan.limits()), out)
            if write:
                try:
                    written = write_migration(plan, Path(write))
                except OSError as exc:  # e.g. DIR is a file: one line, not a traceback
                    raise SmtmigrateError(
                        f"{write}: cannot write the migration there ({exc.strerror or exc})"
                    ) from exc
                render_written(written, out)
            if sql:
                # Constraint names are looked up in a PostgreSQL store when there is one.
                against = target_inspection
                if source_inspection is not None and not source_inspection.engine.is_file:
                    against = against or source_inspection
                render_sql(migration_sql(plan, against.store if against else None), out)
            elif target_inspection is not None:
                render_applied(
                    apply_widening(plan, target_inspection, lock_timeout=lock_timeout), out
                )

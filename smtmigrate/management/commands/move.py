from __future__ import annotations

from contextlib import ExitStack

from ...errors import Refused
from ...headroom import headroom_if_reachable
from ...locations import resolve, resolve_target
from ...move import plan_move, run_move
from ...move_state import MoveOptions, project_lock
from ...project import LABEL_FIXES, project_directory
from ...render import (
    copy_events,
    move_json,
    move_plan_json,
    render_headroom,
    render_move_plan,
    render_move_result,
    render_move_step,
    render_pooler_started,
    write_json,
)
from ...render.prompt import confirm_go_ahead
from ..base import (
    SmtmigrateCommand,
    add_admin_option,
    add_copy_options,
    add_expect_jobs_option,
    add_format_option,
    add_project_argument,
    add_role_options,
    add_yes_option,
    password_from_env,
)


class Command(SmtmigrateCommand):
    help = (
        "Move a Sumatra project onto a PostgreSQL or MariaDB database in one go: create the "
        "database "
        "when missing, copy (widened, verified), switch the project, fix its label generator, "
        "carry over records saved meanwhile. Safe to run again. Exit 0: moved (or already "
        "moved); 1: refused, nothing changed; 2: usage or connection error."
    )

    def add_arguments(self, parser):
        add_project_argument(parser)
        parser.add_argument("target", help="postgresql://… or mysql://… URL of the new store")
        add_yes_option(parser)
        parser.add_argument("--dry-run", action="store_true", help="show the plan; change nothing")
        parser.add_argument(
            "--label-generator",
            choices=[*sorted(LABEL_FIXES), "keep"],
            default="uuid",
            help="when the project's labels collide under concurrent runs (Sumatra's default "
            "timestamp), switch it to this (default uuid); keep leaves it",
        )
        add_copy_options(parser)
        add_role_options(parser, create_help="create the URL's role with the database")
        add_admin_option(parser, help="create the database over this URL")
        add_expect_jobs_option(parser)
        parser.add_argument(
            "--pooler",
            metavar="HOST:PORT",
            help="last step: start a PgBouncer there in front of the new store and point the "
            "project at it (smtmigrate pooler; PostgreSQL only)",
        )
        add_format_option(parser)

    def handle(self, project, target, yes, dry_run, label_generator, verify, **options):
        out = self.console()
        as_json = options["format"] == "json"
        password = password_from_env(options["password_env"], options["create_role"])
        move_options = MoveOptions(
            label_generator=None if label_generator == "keep" else label_generator,
            level=verify,
            dedupe=options["dedupe"],
            copy_readable=options["copy_readable"],
            create_role=options["create_role"],
            password=password,
            admin=options["admin"],
            pooler=options["pooler"],
        )
        directory = project_directory(project)
        with ExitStack() as stack:
            if not dry_run:
                stack.enter_context(project_lock(directory))  # held until the move ends
            source = stack.enter_context(resolve(str(directory), mariadb=True))
            target_store = stack.enter_context(resolve_target(target, mariadb=True))
            plan = plan_move(directory, source, target_store, move_options, stack)
            if not as_json:
                render_move_plan(plan, out)
                if not plan.refused:  # before any job runs on it: how many fit at once
                    jobs = None if options["pooler"] else options["expect_jobs"]
                    render_headroom(headroom_if_reachable(target_store), out, jobs=jobs)
            if plan.refused or dry_run:
                if as_json:
                    write_json(move_plan_json(plan), out)
                if plan.refused:
                    self.exit_code = Refused.exit_code
                return
            if not yes:
                self._confirm(out)
            events = copy_events(out, silent=as_json)
            with events:
                result = run_move(
                    plan,
                    events,
                    on_step=None if as_json else lambda n, r: render_move_step(n, r, out),
                )
            if as_json:
                write_json(move_json(result), out)
            else:
                render_move_result(result, out)
                if result.pooler is not None:
                    render_pooler_started(result.pooler, out)

    def _confirm(self, out) -> None:
        confirm_go_ahead(out)

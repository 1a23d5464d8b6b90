from __future__ import annotations

from ...errors import SmtmigrateError
from ...pooler import (
    DEFAULT_MAX_CLIENTS,
    QUERY_WAIT_TIMEOUT,
    pause_pooler,
    pooler_status,
    start_pooler,
    stop_pooler,
)
from ...project import project_directory
from ...render import (
    render_pooler_paused,
    render_pooler_started,
    render_pooler_status,
    render_pooler_stopped,
    write_json,
)
from ..base import SmtmigrateCommand, add_format_option, add_project_argument
from .stress import whole_number


class Command(SmtmigrateCommand):
    help = (
        "Start a PgBouncer (transaction pooling) in front of the project's PostgreSQL store "
        "and point the project at it: many more parallel smt runs than the server has "
        "connections, and runs that live through a server restart (a watcher pauses it while "
        "the server is down). --status shows it, --stop stops it and points the project at "
        "the store directly again. Exit 0: done; 1: refused (not a PostgreSQL store, "
        "clients still connected); 2: usage, connection or PgBouncer error."
    )

    def add_arguments(self, parser):
        add_project_argument(parser)
        action = parser.add_mutually_exclusive_group(required=True)
        action.add_argument(
            "--listen", metavar="HOST:PORT", help="start it on this address (e.g. 127.0.0.1:6432)"
        )
        action.add_argument("--status", action="store_true", help="is it running; its pools")
        action.add_argument(
            "--pause",
            action="store_true",
            help="before a planned server restart: let running statements finish, close the "
            "server connections, hold the jobs' next statements (see --resume)",
        )
        action.add_argument(
            "--resume", action="store_true", help="after the restart: let the held jobs go on"
        )
        action.add_argument(
            "--stop", action="store_true", help="stop it; the project names the store again"
        )
        parser.add_argument(
            "--pool-size",
            type=whole_number(1),
            metavar="N",
            help="server connections it may open (default: half the server's free ones, "
            "at most 20; never more than are free)",
        )
        parser.add_argument(
            "--max-clients",
            type=whole_number(1),
            default=DEFAULT_MAX_CLIENTS,
            metavar="N",
            help=f"client connections (smt runs) it takes at once (default {DEFAULT_MAX_CLIENTS})",
        )
        parser.add_argument(
            "--hold",
            type=whole_number(1),
            default=QUERY_WAIT_TIMEOUT,
            metavar="SECONDS",
            help="how long a job's statement waits for the server (through a restart, the "
            "watcher pausing PgBouncer meanwhile) before it fails with query_wait_timeout "
            f"(default {QUERY_WAIT_TIMEOUT})",
        )
        parser.add_argument(
            "--force", action="store_true", help="with --stop: even while clients are connected"
        )
        add_format_option(parser)

    def handle(
        self,
        project,
        listen,
        status,
        pause,
        resume,
        stop,
        pool_size,
        max_clients,
        hold,
        force,
        **options,
    ):
        out = self.console()
        as_json = options["format"] == "json"
        directory = project_directory(project)
        if force and not stop:
            raise SmtmigrateError("--force goes with --stop")
        if status or pause or resume:
            result = pause_pooler(directory, resume=resume) if pause or resume else None
            if result is None:
                result = pooler_status(directory)
            if as_json:
                write_json(result.to_dict(), out)
            elif pause or resume:
                render_pooler_paused(result, resume, out)
            else:
                render_pooler_status(result, out)
        elif stop:
            stopped = stop_pooler(directory, force=force)
            if as_json:
                write_json({"stopped": stopped.was_running, "direct": stopped.direct}, out)
            else:
                render_pooler_stopped(stopped, out)
        else:
            started = start_pooler(
                directory, listen, pool_size=pool_size, max_clients=max_clients, hold=hold
            )
            if as_json:
                write_json(started.status.to_dict() | {"headroom": started.headroom.to_dict()}, out)
            else:
                render_pooler_started(started, out)

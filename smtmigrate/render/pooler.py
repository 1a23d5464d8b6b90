"""What `pooler` shows, and the connection headroom that `move`, `switch` and `stress` show
before any job runs."""

from __future__ import annotations

from rich.console import Console

from ..headroom import Headroom
from ..pooler import PoolerStarted, PoolerStopped
from ..pooler_status import PoolerStatus
from .console import say, table


def headroom_lines(headroom: Headroom, jobs: int | None = None) -> list[tuple[str, str]]:
    """(line, style): the server's budget, and a warning when `jobs` do not fit."""
    if headroom.pooler_clients is not None:
        first = (
            f"Connections: {headroom.display} is a PgBouncer: it takes "
            f"{headroom.pooler_clients} more clients (parallel smt runs); the server behind "
            f"it has max_connections {headroom.max_connections}, {headroom.in_use} in use"
        )
    else:
        limits = "".join(
            f", {what} {limit} ({used} in use)" for what, limit, used in headroom.limits
        )
        reserved = f", {headroom.reserved} reserved" if headroom.poolable else ""
        first = (
            f"Connections: {headroom.display} allows {headroom.free} parallel smt runs now "
            f"(max_connections {headroom.max_connections}{reserved}, {headroom.in_use} in use"
            f"{limits}; each run holds one connection for its whole life)"
        )
    lines = [(first, "")]
    if headroom.exceeded_by(jobs):
        lines.append(
            (
                f"WARNING: {jobs} jobs at once, {headroom.jobs} fit: the others wait in "
                "Sumatra's retries (5 s apart, its first save only) or crash on a later save. "
                f"To fit them: {headroom.advice}.",
                "bold yellow",
            )
        )
    return lines


def render_headroom(headroom: Headroom | None, out: Console, jobs: int | None = None) -> None:
    if headroom is None:
        return
    for line, style in headroom_lines(headroom, jobs):
        say(out, line, style)


def _status_lines(status: PoolerStatus) -> list[str]:
    if status.url is None:
        return [f"no pooler started for {status.directory}"]
    state = f"running (pid {status.pid})" if status.running else "not running"
    lines = [
        f"PgBouncer on {status.listen}: {state}, transaction pooling, pool of "
        f"{status.pool_size} server connection(s), statements held up to {status.hold} s"
    ]
    lines.append(f"  pooler URL {status.url}; direct URL {status.direct}")
    if status.switched:
        lines.append("  the project names the pooler")
    else:
        lines.append(
            f"  the project names {status.project_names}, not the pooler (a job that started "
            "before the switch rewrote .smt/project when it ended: run `pooler --listen` again)"
        )
    if status.clients is not None:
        lines.append(f"  {status.clients} client(s) connected")
    if status.running and status.watcher is None:
        lines.append(
            "  no watcher: an unplanned server restart fails the statements that arrive "
            "meanwhile (run `pooler --listen` again to start it)"
        )
    elif status.watcher is not None:
        if status.server == "down":
            seen = f"the server does not answer (since {status.down_since})"
        else:
            seen = "the server answers"
        lines.append(f"  watcher (pid {status.watcher}): {seen}")
    if status.paused == "watcher":
        lines.append("  paused by the watcher: the jobs' statements wait for the server")
    elif status.paused == "user":
        lines.append("  paused (--pause): the jobs' statements wait for --resume")
    return lines


def render_pooler_status(status: PoolerStatus, out: Console) -> None:
    for line in _status_lines(status):
        say(out, line)
    if status.pools:
        pools = table(
            "database",
            "user",
            "cl_active",
            "cl_waiting",
            "sv_active",
            "sv_idle",
            "maxwait",
            right=("cl_active", "cl_waiting", "sv_active", "sv_idle", "maxwait"),
        )
        for row in status.pools:
            pools.add_row(
                str(row["database"]),
                str(row["user"]),
                *(
                    str(row.get(k, ""))
                    for k in ("cl_active", "cl_waiting", "sv_active", "sv_idle", "maxwait")
                ),
            )
        out.print(pools)


def render_pooler_started(started: PoolerStarted, out: Console) -> None:
    render_headroom(started.headroom, out)
    status = started.status
    if started.already:
        say(out, f"PgBouncer runs already (pid {status.pid}); the project names it")
    else:
        say(
            out,
            f"started PgBouncer (pid {status.pid}) on {status.listen} in front of "
            f"{status.direct}: transaction pooling, {status.pool_size} server connection(s)",
        )
    if status.watcher is not None:
        say(
            out,
            f"watcher (pid {status.watcher}): pauses PgBouncer while the server does not "
            f"answer, so the jobs' statements wait (up to {status.hold} s, --hold) instead of "
            "failing",
        )
    say(
        out,
        f"role {started.timezone_set}: its sessions in the store's database start in UTC "
        "(ALTER ROLE … IN DATABASE … SET timezone)",
    )
    if status.runtime in (None, status.config_dir):
        say(out, f"config, auth file (0600), pid and log in {status.config_dir}")
    else:
        say(
            out, f"config and auth file (0600) in {status.config_dir}; pid, log in {status.runtime}"
        )
    if started.pgpass is not None:
        say(out, f"the password for the pooler's URL is in {started.pgpass} (mode 0600)")
    say(out, f"{status.directory}/.smt/project now names {status.url}", "bold green")
    say(out, f"back to the direct URL: smtmigrate pooler {status.directory} --stop")


def render_pooler_stopped(stopped: PoolerStopped, out: Console) -> None:
    if stopped.was_running:
        say(out, "stopped PgBouncer")
    else:
        say(out, "PgBouncer was not running")
    say(out, f"{stopped.project_file} names {stopped.direct} again", "bold green")


def render_pooler_paused(status: PoolerStatus, resumed: bool, out: Console) -> None:
    if resumed and status.server == "down":
        say(
            out,
            f"the server does not answer: the watcher keeps PgBouncer on {status.listen} "
            "paused and resumes it when the server lets it in",
            "bold yellow",
        )
    elif resumed:
        say(out, f"resumed PgBouncer on {status.listen}: held statements go on", "bold green")
    else:
        say(
            out,
            f"paused PgBouncer on {status.listen}: no server connection open, the jobs' next "
            f"statements wait (up to query_wait_timeout); restart the server, then "
            f"smtmigrate pooler {status.directory} --resume",
            "bold yellow",
        )

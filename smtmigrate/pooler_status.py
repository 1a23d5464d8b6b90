"""Where a project's PgBouncer stands: running or not, what the project names, its pools
and clients (from its admin console), what its watcher sees (pooler_watch.py), paused by
whom. Read only: `pooler --status`, and pooler.py before and after each of its actions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .errors import SmtmigrateError
from .pooler_config import (
    QUERY_WAIT_TIMEOUT,
    config_dir,
    pgbouncer_pid,
    read_pooler_state,
    runtime_dir,
)
from .pooler_console import admin_connection, show
from .pooler_watch import USER_PAUSE, read_watch_state, watcher_pid
from .project import read_project


@dataclass
class PoolerStatus:
    directory: Path
    config_dir: Path
    running: bool
    pid: int | None = None
    listen: str | None = None
    url: str | None = None  # the pooler's URL, what the project names while it runs
    direct: str | None = None  # the store's own URL, to go back to
    project_names: str | None = None  # what .smt/project names now
    pool_size: int | None = None
    hold: int | None = None  # query_wait_timeout: how long a statement waits for a server
    pools: list[dict] = field(default_factory=list)  # SHOW POOLS rows
    clients: int | None = None  # client connections on the store's database
    runtime: Path | None = None  # where PgBouncer writes its pid file and log
    watcher: int | None = None  # the watcher's pid (pooler_watch.py), when it runs
    server: str | None = None  # what the watcher sees: "up" or "down"
    down_since: str | None = None
    paused: str | None = None  # "watcher": paused while the server is down; "user": --pause

    @property
    def switched(self) -> bool:
        return self.url is not None and self.project_names == self.url

    def to_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(self).items()} | {
            "switched": self.switched
        }


def pooler_status(directory: Path) -> PoolerStatus:
    """Whether the project's PgBouncer runs, what the project names, its pools."""
    import psycopg2

    folder = config_dir(directory)
    state = read_pooler_state(directory)
    status = PoolerStatus(directory, folder, running=False, runtime=runtime_dir(folder))
    try:
        _, _, project = read_project(directory)
        status.project_names = project.get("record_store", {}).get("db_file")
    except SmtmigrateError:
        pass
    if state is None:
        return status
    status.listen, status.url, status.direct = state["listen"], state["url"], state["direct"]
    status.pool_size = state.get("pool_size")
    status.hold = state.get("hold", QUERY_WAIT_TIMEOUT)
    status.pid = pgbouncer_pid(folder)
    status.running = status.pid is not None
    status.watcher = watcher_pid(folder)
    watched = read_watch_state(folder) if status.watcher else None
    if watched is not None:
        status.server, status.down_since = watched.get("server"), watched.get("down_since")
        if watched.get("paused_by_watcher"):
            status.paused = "watcher"
    if (folder / USER_PAUSE).exists():
        status.paused = "user"
    if status.running:
        try:
            connection = admin_connection(folder, state)
        except (psycopg2.Error, OSError):
            return status
        try:
            status.pools = [
                {k: v for k, v in row.items() if k != "pool_mode"}
                for row in show(connection, "POOLS")
                if row["database"] != "pgbouncer"
            ]
            status.clients = sum(
                1 for row in show(connection, "CLIENTS") if row["database"] != "pgbouncer"
            )
        finally:
            connection.close()
    return status

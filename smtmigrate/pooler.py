"""A PgBouncer in transaction mode in front of a project's PostgreSQL store.

Every `smt run` holds one connection for its whole life, idle while the simulation runs
(headroom.py). Behind PgBouncer in transaction mode a client holds a server connection
only while a statement runs: Sumatra works in autocommit (each statement its own
transaction) and never uses `.iterator()` (so no server-side cursor outlives a statement;
Django's DISABLE_SERVER_SIDE_CURSORS is not needed), so many jobs share a pool of a few
server connections. Through a server restart PgBouncer keeps its clients connected, but
1.18 fails at once a statement that arrives while it cannot log in; the watcher
(pooler_watch.py), started and stopped with PgBouncer, pauses it while the server is down,
so those statements wait (up to `query_wait_timeout`) and a run's last saves land once the
server is back.

Django sets the session's time zone with a `SET` when the server's differs from UTC, which
under transaction pooling would apply to whichever server connection ran it: the store's
role gets `ALTER ROLE … IN DATABASE … SET timezone = 'UTC'` instead, so no session ever needs one.

Here its lifecycle: start (the role's time zone preset, the files written, PgBouncer and its
watcher started, the project switched to it with project.py's switch_project, whose backup
keeps the configuration before the first switch), pause / resume, stop (the project switched
back). Its files are pooler_config.py's, its admin console pooler_console.py's, what
`--status` shows pooler_status.py's.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import LocationError, PoolerError, Refused, SmtmigrateError, StoreConnectionError
from .files import write_private
from .headroom import Headroom, read_headroom
from .locations import Store, one_line, resolve, same_store
from .pooler_config import (
    AUTH,
    DEFAULT_MAX_CLIENTS,
    INI,
    MAX_POOL,
    PID,
    QUERY_WAIT_TIMEOUT,
    STATE,
    config_dir,
    log_tail,
    parse_listen,
    pgbouncer_pid,
    read_pooler_state,
    run_as,
    runtime_dir,
    server_params,
    url_host,
    write_config,
)
from .pooler_console import admin_connection
from .pooler_status import PoolerStatus, pooler_status  # the command's and render/'s too
from .pooler_watch import (
    USER_PAUSE,
    read_watch_state,
    start_watcher,
    stop_watcher,
    watcher_pid,
)
from .project import check_switch, project_file, store_url, switch_project

START_TIMEOUT = 10.0
STOP_TIMEOUT = 15.0


@dataclass
class PoolerStarted:
    status: PoolerStatus
    headroom: Headroom
    timezone_set: str  # the role whose time zone was preset
    already: bool = False  # it was running and the project named it already
    pgpass: Path | None = None


def pgbouncer_binary() -> str:
    """PgBouncer's program (Debian installs it in /usr/sbin)."""
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")
    if not found:
        raise PoolerError(
            "pgbouncer is not installed: apt-get install pgbouncer (the project's .ci/run "
            "installs it); nothing was changed"
        )
    return found


def check_pooler(store: Store, listen_text: str) -> None:
    """What `move --pooler` needs, checked before the move changes anything."""
    if not store.engine.has_pooler:
        raise SmtmigrateError(
            f"--pooler starts a PgBouncer, for a PostgreSQL store; {store.display} is not one"
        )
    parse_listen(listen_text)
    pgbouncer_binary()


def _server_facts(store: Store) -> tuple[str, str, str]:
    """(role, password libpq used, host libpq reached: a socket directory when the URL names
    no host) of the store's connection."""
    from django.db import DatabaseError

    connection = store.connection
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_user")
            (role,) = cursor.fetchone()
    except DatabaseError as exc:
        raise store.read_error(exc) from exc
    info = connection.connection.info
    return role, info.password or "", info.host or ""


def _preset_timezone(store: Store, role: str) -> None:
    """The role's sessions in the store's database start in UTC: Django then sends no
    `SET TIME ZONE` (it sends one when the server's TimeZone differs from UTC), which under
    transaction pooling would stick to whichever server connection ran it."""
    from psycopg2 import sql

    from .engines import POSTGRESQL

    engine = POSTGRESQL
    database = store.settings["NAME"]
    # IN DATABASE: the role's sessions elsewhere keep their time zone
    statement = sql.SQL("ALTER ROLE {} IN DATABASE {} SET timezone = 'UTC'").format(
        engine.identifier(role), engine.identifier(database)
    )
    from django.db import DatabaseError

    connection = store.connection
    text = statement.as_string(connection.connection)
    try:
        with connection.cursor() as cursor:  # Django's autocommit: it holds at once
            cursor.execute(text)
    except DatabaseError as exc:
        raise Refused(
            f"{store.display}: cannot preset the time zone ({store.describe_error(exc)}); "
            f"have an administrator run {text}; nothing was changed"
        ) from exc


def _pooler_store(direct: Store, role: str, password: str, listen: tuple[str, int]) -> Store:
    host = url_host(listen[0])
    netloc = f"[{host}]" if ":" in host else host
    url = f"postgresql://{role}@{netloc}:{listen[1]}/{direct.settings['NAME']}"
    store = resolve(url)
    store.settings["PASSWORD"] = password  # to ~/.pgpass by switch_project, never the file
    return store


def start_pooler(
    directory: Path,
    listen_text: str,
    *,
    pool_size: int | None = None,
    max_clients: int = DEFAULT_MAX_CLIENTS,
    hold: int = QUERY_WAIT_TIMEOUT,
) -> PoolerStarted:
    """Start PgBouncer in front of the project's PostgreSQL store and switch the project
    to it. Run again, it starts a stopped PgBouncer of the same project again and points the
    project at it (a job that started before the switch rewrites .smt/project when it
    ends)."""
    project_file(directory)
    listen = parse_listen(listen_text)
    binary = pgbouncer_binary()
    folder = config_dir(directory)
    state = read_pooler_state(directory)
    current = resolve(str(directory))
    try:
        if state is not None and current.engine.has_pooler:
            direct_url = state["direct"]
            on_pooler = store_url(current) == state["url"]
            if not on_pooler:
                direct_url = store_url(current)
        else:
            direct_url = store_url(current)
        if not current.engine.has_pooler:
            raise Refused(
                f"{current.display}: the pooler is PgBouncer, for a PostgreSQL store; "
                "this project's store is "
                + (
                    "SQLite (move it first: smtmigrate move)"
                    if current.engine.is_file
                    else "MariaDB (raise max_connections instead)"
                )
            )
    finally:
        current.close()
    with resolve(direct_url, base_dir=directory) as direct:
        headroom = read_headroom(direct)
        assert headroom is not None
        running = pgbouncer_pid(folder)
        if running is not None and state is not None and state["listen"] == listen_text:
            size = int(state["pool_size"])
            hold = int(state.get("hold", QUERY_WAIT_TIMEOUT))  # what it was started with
        else:
            if running is not None:
                raise Refused(
                    f"a PgBouncer of this project runs already (pid {running}) on "
                    f"{state and state['listen']}: stop it first (--stop)"
                )
            free = headroom.free
            if free < 1:
                raise Refused(
                    f"{direct.display}: the server has no connection free for a pool "
                    f"(max_connections {headroom.max_connections}, {headroom.in_use} in use, "
                    f"{headroom.reserved} reserved)"
                )
            size = min(pool_size or min(MAX_POOL, max(1, free // 2)), free)
        role, password, reached = _server_facts(direct)
        _preset_timezone(direct, role)
        pooled = _pooler_store(direct, role, password, listen)
        try:
            check_switch(directory, pooled)
            if running is None:
                write_config(
                    folder, direct, role, password, reached, listen, size, max_clients, hold
                )
                try:
                    running = _launch(binary, folder)
                except PoolerError:
                    (folder / AUTH).unlink(missing_ok=True)  # no password left behind
                    raise
            _wait_until_serving(pooled, folder)
            if not same_store(direct, pooled):
                _stop_process(running)
                raise PoolerError(
                    f"PgBouncer on {listen_text} does not lead to {direct.display}; stopped it"
                )
            try:
                start_watcher(folder, server_params(direct, role, reached), listen_text)
            except PoolerError:
                _stop_process(running)
                raise
            url = store_url(pooled)
            already = state is not None and state.get("url") == url
            result = switch_project(directory, pooled)
            write_private(
                folder / STATE,
                json.dumps(
                    {
                        "direct": store_url(direct),
                        "url": url,
                        "listen": listen_text,
                        "pool_size": size,
                        "max_clients": max_clients,
                        "hold": hold,
                    },
                    indent=2,
                )
                + "\n",
                mode=0o600,
            )
        finally:
            pooled.close()
    status = pooler_status(directory)
    return PoolerStarted(
        status, headroom, role, already=already and not result.switched, pgpass=result.pgpass
    )


def _launch(binary: str, folder: Path) -> int:
    user = run_as()
    command = [binary, "-d", *(["-u", user] if user else []), str((folder / INI).resolve())]
    (runtime_dir(folder) / PID).unlink(missing_ok=True)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        pid = pgbouncer_pid(folder)
        if pid is not None:
            return pid
        if done.returncode != 0:
            break
        time.sleep(0.05)
    raise PoolerError(f"PgBouncer did not start: {log_tail(folder) or done.stderr.strip()}")


def _wait_until_serving(pooled: Store, folder: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            pooled.connection.close()
            return
        except StoreConnectionError as exc:
            if time.monotonic() > deadline:
                raise PoolerError(
                    f"PgBouncer does not let {pooled.display} in: {exc} ({log_tail(folder)})"
                ) from exc
            time.sleep(0.1)


def pause_pooler(directory: Path, *, resume: bool = False) -> PoolerStatus:
    """PAUSE: PgBouncer lets every running statement finish, closes its server connections
    and holds every client's next statement (up to query_wait_timeout) until RESUME, so the
    server can restart under running jobs. Unpaused, PgBouncer 1.18 fails a client whose
    statement arrives while it cannot log in to the server ("server login has been failing",
    its check_fast_fail) and the `smt run` crashes on that save."""
    folder = config_dir(directory)
    state = read_pooler_state(directory)
    if state is None or pgbouncer_pid(folder) is None:
        raise Refused(f"{directory}: no pooler of this project is running")
    import psycopg2

    marker = folder / USER_PAUSE
    if resume:
        marker.unlink(missing_ok=True)
        watched = read_watch_state(folder) if watcher_pid(folder) else None
        if watched is not None and watched.get("server") == "down":
            # RESUME now would let PgBouncer fail the held statements at once
            return pooler_status(directory)
    else:
        write_private(marker, "paused by smtmigrate pooler --pause\n", mode=0o600)
    try:
        connection = admin_connection(folder, state)
        try:
            with connection.cursor() as cursor:
                cursor.execute("RESUME" if resume else "PAUSE")
        finally:
            connection.close()
    except psycopg2.Error as exc:
        # paused already (by the watcher, the server being down), or not paused: as asked
        if "paused" not in str(exc):
            if not resume:
                marker.unlink(missing_ok=True)
            raise PoolerError(f"PgBouncer's admin console refused: {one_line(exc)}") from exc
    return pooler_status(directory)


@dataclass
class PoolerStopped:
    directory: Path
    was_running: bool
    direct: str
    project_file: Path


def stop_pooler(directory: Path, *, force: bool = False) -> PoolerStopped:
    """Point the project back at its store's own URL, then stop PgBouncer. Refused while
    jobs are connected through it (unless `force`): they would lose their connection, and
    rewrite .smt/project to the pooler's URL when they end."""
    folder = config_dir(directory)
    state = read_pooler_state(directory)
    if state is None:
        raise Refused(f"{directory}: no pooler was started for this project ({folder / STATE})")
    status = pooler_status(directory)
    if status.clients and not force:
        raise Refused(
            f"{status.clients} client(s) connected through the pooler (running smt jobs): "
            "stopping it now ends their connections, and they rewrite .smt/project to the "
            "pooler's URL when they end; wait for them, or --force"
        )
    try:
        direct = resolve(state["direct"], base_dir=directory)
    except LocationError as exc:
        raise SmtmigrateError(f"the direct URL in {folder / STATE} is not usable: {exc}") from exc
    with direct:
        check_switch(directory, direct)
        result = switch_project(directory, direct)
    stop_watcher(folder)  # first: PgBouncer going away is no server outage to pause for
    if status.pid is not None:
        _stop_process(status.pid)
    (folder / USER_PAUSE).unlink(missing_ok=True)
    (folder / STATE).unlink(missing_ok=True)
    (folder / AUTH).unlink(missing_ok=True)  # the password: no longer needed here
    return PoolerStopped(directory, status.running, state["direct"], result.project_file)


def _stop_process(pid: int) -> None:
    """SIGINT: PgBouncer's safe shutdown; SIGTERM if it does not end in time."""
    for sig, wait in ((signal.SIGINT, STOP_TIMEOUT), (signal.SIGTERM, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not Path(f"/proc/{pid}").exists():
                return
            time.sleep(0.05)
    raise PoolerError(f"PgBouncer (pid {pid}) did not stop")

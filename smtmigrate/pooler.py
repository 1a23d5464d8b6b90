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

Files, in `.smt/pgbouncer/` (mode 0700): `pgbouncer.ini`, `userlist.txt` (the auth file,
0600: the role's password, the only place it is written in the clear; clients find it in
~/.pgpass as libpq does), `pgbouncer.pid`, `pgbouncer.log`, the watcher's files
(pooler_watch.py), and `state.json` (the direct URL, without password, to go back to). The
project is switched with project.py's switch_project, whose backup keeps the configuration
before the first switch.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import LocationError, Refused, SmtmigrateError, StoreConnectionError
from .files import read_json_state, write_private
from .headroom import Headroom, read_headroom
from .locations import Store, one_line, resolve, same_store
from .pooler_watch import (
    USER_PAUSE,
    read_watch_state,
    start_watcher,
    stop_watcher,
    watcher_pid,
)
from .project import check_switch, project_file, store_url, switch_project

POOLER_DIR = Path(".smt") / "pgbouncer"
STATE = "state.json"
INI = "pgbouncer.ini"
AUTH = "userlist.txt"
PID = "pgbouncer.pid"
LOG = "pgbouncer.log"
DEFAULT_MAX_CLIENTS = 500  # jobs at once; PgBouncer needs about one file descriptor each
MAX_POOL = 20  # server connections: far more than a store of Sumatra saves keeps busy
# How long a client's statement may wait for a server connection (a restart, a full pool),
# and how soon PgBouncer tries to log in again after a failed login (its default: 15 s).
QUERY_WAIT_TIMEOUT = 300
SERVER_LOGIN_RETRY = 1
START_TIMEOUT = 10.0
STOP_TIMEOUT = 15.0


class PoolerError(SmtmigrateError):
    """PgBouncer is missing, or did not start or stop."""


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
    if store.kind != "postgresql":
        raise SmtmigrateError(
            f"--pooler starts a PgBouncer, for a PostgreSQL store; {store.display} is not one"
        )
    parse_listen(listen_text)
    pgbouncer_binary()


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT ([IPv6]:PORT) as typed."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SmtmigrateError(f"--listen {text!r}: give HOST:PORT, e.g. 127.0.0.1:6432")
    return host, int(port)


def config_dir(directory: Path) -> Path:
    return directory / POOLER_DIR


def read_pooler_state(directory: Path) -> dict | None:
    return read_json_state(config_dir(directory) / STATE)


def _run_as() -> str | None:
    """PgBouncer refuses to run as root: as root, run it as `postgres`."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise PoolerError(
            "PgBouncer does not run as root and there is no `postgres` user to run it as"
        ) from None
    return "postgres"


def _pid(folder: Path) -> int | None:
    """The running PgBouncer of this folder, if any."""
    try:
        pid = int((runtime_dir(folder) / PID).read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        return None
    return pid if comm == "pgbouncer" else None


def _url_host(host: str) -> str:
    """The host the jobs connect to: a wildcard listen address is no address to reach."""
    if host in ("0.0.0.0", "::", "*"):
        return socket.getfqdn()
    return host


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


def _quote_ini(value: str) -> str:
    """A value of a PgBouncer connection string: single-quoted, `'` and `\\` escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _server_params(store: Store, role: str, reached: str) -> dict:
    """libpq's parameters of the server connections (PgBouncer's and the watcher's)."""
    s = store.settings
    params = {"host": s.get("HOST") or reached, "dbname": s["NAME"]}
    if s.get("PORT"):
        params["port"] = int(s["PORT"])
    return params | {"user": role}


def _ini(
    store: Store, role: str, reached: str, listen: tuple[str, int], folder: Path, **sizes: int
) -> str:
    s = store.settings
    server = [
        f"{key}={value}" if key == "port" else f"{key}={_quote_ini(value)}"
        for key, value in _server_params(store, role, reached).items()
    ]
    name = s["NAME"]
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):  # a key of PgBouncer's ini file
        raise Refused(f"{store.display}: PgBouncer cannot name a database {name!r}")
    auth_type = "scram-sha-256" if sizes.pop("with_password") else "trust"
    lines = [
        "; written by smtmigrate pooler: transaction pooling for Sumatra's smt runs",
        "[databases]",
        f"{name} = {' '.join(server)}",
        "",
        "[pgbouncer]",
        f"listen_addr = {listen[0]}",
        f"listen_port = {listen[1]}",
        "unix_socket_dir =",
        f"auth_type = {auth_type}",
        f"auth_file = {folder / AUTH}",
        f"admin_users = {role}",  # PAUSE / RESUME around a planned server restart
        "pool_mode = transaction",
        f"default_pool_size = {sizes['pool_size']}",
        "min_pool_size = 0",
        "reserve_pool_size = 0",
        f"max_db_connections = {sizes['pool_size']}",
        f"max_client_conn = {sizes['max_clients']}",
        "ignore_startup_parameters = extra_float_digits,options",
        f"server_login_retry = {SERVER_LOGIN_RETRY}",
        f"query_wait_timeout = {sizes['hold']}",
        "server_reset_query =",
        f"logfile = {runtime_dir(folder) / LOG}",
        f"pidfile = {runtime_dir(folder) / PID}",
        "",
    ]
    return "\n".join(lines)


def _auth_line(role: str, password: str) -> str:
    def quoted(text: str) -> str:
        return '"' + text.replace('"', '""') + '"'

    return f"{quoted(role)} {quoted(password)}\n"


def _pooler_store(direct: Store, role: str, password: str, listen: tuple[str, int]) -> Store:
    host = _url_host(listen[0])
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
        if state is not None and current.kind == "postgresql":
            direct_url = state["direct"]
            on_pooler = store_url(current) == state["url"]
            if not on_pooler:
                direct_url = store_url(current)
        else:
            direct_url = store_url(current)
        if current.kind != "postgresql":
            raise Refused(
                f"{current.display}: the pooler is PgBouncer, for a PostgreSQL store; "
                "this project's store is "
                + (
                    "MariaDB (raise max_connections instead)"
                    if current.kind == "mariadb"
                    else "SQLite (move it first: smtmigrate move)"
                )
            )
    finally:
        current.close()
    with resolve(direct_url, base_dir=directory) as direct:
        headroom = read_headroom(direct)
        assert headroom is not None
        running = _pid(folder)
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
                _write_config(
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
                start_watcher(folder, _server_params(direct, role, reached), listen_text)
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


def _write_config(
    folder: Path,
    direct: Store,
    role: str,
    password: str,
    reached: str,
    listen: tuple[str, int],
    size: int,
    max_clients: int,
    hold: int,
) -> None:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    ini = _ini(
        direct,
        role,
        reached,
        listen,
        folder.resolve(),
        pool_size=size,
        max_clients=max_clients,
        hold=hold,
        with_password=bool(password),
    )
    write_private(folder / INI, ini, mode=0o600)
    write_private(folder / AUTH, _auth_line(role, password), mode=0o600)
    runtime = runtime_dir(folder)
    if runtime != folder:
        runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
        entry = pwd.getpwnam(_run_as() or "")
        os.chown(runtime, entry.pw_uid, entry.pw_gid)
        os.chmod(runtime, 0o700)


def runtime_dir(folder: Path) -> Path:
    """Where PgBouncer writes its pid file and log. Its own config folder, unless it runs as
    `postgres` (we are root): that user may not reach a project directory (a home, a
    private temporary folder), so a folder of its own under /run. PgBouncer reads its
    config and auth file at start, before it drops root, so those stay root's, 0600."""
    if _run_as() is None:
        return folder
    base = Path("/run") if os.access("/run", os.W_OK) else Path(tempfile.gettempdir())
    key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
    return base / "smtmigrate" / f"pgbouncer-{key}"


def _launch(binary: str, folder: Path) -> int:
    user = _run_as()
    command = [binary, "-d", *(["-u", user] if user else []), str((folder / INI).resolve())]
    (runtime_dir(folder) / PID).unlink(missing_ok=True)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        pid = _pid(folder)
        if pid is not None:
            return pid
        if done.returncode != 0:
            break
        time.sleep(0.05)
    raise PoolerError(f"PgBouncer did not start: {_log_tail(folder) or done.stderr.strip()}")


def _log_tail(folder: Path) -> str:
    try:
        lines = (runtime_dir(folder) / LOG).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    fatal = [line for line in lines if "FATAL" in line or "ERROR" in line]
    return (fatal or lines or [""])[-1].strip()


def _wait_until_serving(pooled: Store, folder: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            pooled.connection.close()
            return
        except StoreConnectionError as exc:
            if time.monotonic() > deadline:
                raise PoolerError(
                    f"PgBouncer does not let {pooled.display} in: {exc} ({_log_tail(folder)})"
                ) from exc
            time.sleep(0.1)


def _admin(folder: Path, state: dict):
    """A connection to PgBouncer's admin console, as the store's role (a stats user)."""
    import psycopg2

    host, port = parse_listen(state["listen"])
    role, password = _read_auth(folder)
    connection = psycopg2.connect(
        dbname="pgbouncer",
        host=_url_host(host) if host not in ("0.0.0.0", "::", "*") else "127.0.0.1",
        port=port,
        user=role,
        password=password,
        connect_timeout=5,
    )
    connection.autocommit = True
    return connection


def _read_auth(folder: Path) -> tuple[str, str]:
    """(role, password) of the auth file `_auth_line` wrote: `"role" "password"`, a `"`
    inside either doubled."""
    text = (folder / AUTH).read_text().rstrip("\n")
    fields, current, quoted, i = [], "", False, 0
    while i < len(text):
        char = text[i]
        if char == '"' and quoted and text[i + 1 : i + 2] == '"':
            current, i = current + '"', i + 2
            continue
        if char == '"':
            quoted = not quoted
            if not quoted:
                fields.append(current)
                current = ""
        elif quoted:
            current += char
        i += 1
    role, password = [*fields, "", ""][:2]
    return role, password


def _show(connection, what: str) -> list[dict]:
    with connection.cursor() as cursor:
        cursor.execute(f"SHOW {what}")  # a fixed word: POOLS, CLIENTS, LISTS, CONFIG
        names = [column.name for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def pause_pooler(directory: Path, *, resume: bool = False) -> PoolerStatus:
    """PAUSE: PgBouncer lets every running statement finish, closes its server connections
    and holds every client's next statement (up to query_wait_timeout) until RESUME, so the
    server can restart under running jobs. Unpaused, PgBouncer 1.18 fails a client whose
    statement arrives while it cannot log in to the server ("server login has been failing",
    its check_fast_fail) and the `smt run` crashes on that save."""
    folder = config_dir(directory)
    state = read_pooler_state(directory)
    if state is None or _pid(folder) is None:
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
        connection = _admin(folder, state)
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


def pooler_status(directory: Path) -> PoolerStatus:
    """Whether the project's PgBouncer runs, what the project names, its pools."""
    import psycopg2

    folder = config_dir(directory)
    state = read_pooler_state(directory)
    status = PoolerStatus(directory, folder, running=False, runtime=runtime_dir(folder))
    try:
        _, _, project = _read_project(directory)
        status.project_names = project.get("record_store", {}).get("db_file")
    except SmtmigrateError:
        pass
    if state is None:
        return status
    status.listen, status.url, status.direct = state["listen"], state["url"], state["direct"]
    status.pool_size = state.get("pool_size")
    status.hold = state.get("hold", QUERY_WAIT_TIMEOUT)
    status.pid = _pid(folder)
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
            connection = _admin(folder, state)
        except (psycopg2.Error, OSError):
            return status
        try:
            status.pools = [
                {k: v for k, v in row.items() if k != "pool_mode"}
                for row in _show(connection, "POOLS")
                if row["database"] != "pgbouncer"
            ]
            status.clients = sum(
                1 for row in _show(connection, "CLIENTS") if row["database"] != "pgbouncer"
            )
        finally:
            connection.close()
    return status


def _read_project(directory: Path):
    from .project import read_project

    return read_project(directory)


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


def pooler_clients(store: Store, server_port: int) -> int | None:
    """Behind a PgBouncer: how many more clients it takes (None: not a PgBouncer we can
    ask). Only asked when the URL's port is not the server's own, i.e. something sits
    between; its admin console answers the store's role when it is a stats user (as
    `pooler` configures it)."""
    import psycopg2

    s = store.settings
    port = str(s.get("PORT") or "")
    if not port or int(port) == server_port:
        return None
    try:
        connection = psycopg2.connect(
            dbname="pgbouncer",
            host=s.get("HOST") or None,
            port=port,
            user=s.get("USER") or None,
            # the password libpq found for the store (URL, PGPASSWORD, ~/.pgpass): a
            # ~/.pgpass line names the store's database, not `pgbouncer`
            password=store.connection.connection.info.password or None,
            connect_timeout=3,
        )
    except psycopg2.Error:
        return None
    try:
        connection.autocommit = True
        config = {row["key"]: row["value"] for row in _show(connection, "CONFIG")}
        lists = {row["list"]: int(row["items"]) for row in _show(connection, "LISTS")}
    except psycopg2.Error:
        return None
    finally:
        connection.close()
    # our own admin connection is one of the used clients
    return max(int(config["max_client_conn"]) - lists.get("used_clients", 0) + 1, 0)

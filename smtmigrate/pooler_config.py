"""A project's PgBouncer as files: its folder, `pgbouncer.ini`, the auth file, its pid file.

Files, in `.smt/pgbouncer/` (mode 0700): `pgbouncer.ini`, `userlist.txt` (the auth file,
0600: the role's password, the only place it is written in the clear; clients find it in
~/.pgpass as libpq does), `pgbouncer.pid`, `pgbouncer.log`, the watcher's files
(pooler_watch.py), and `state.json` (the direct URL, without password, to go back to). As
root PgBouncer runs as `postgres`, its pid file and log then in a folder of its own
(`runtime_dir`).

Below the pooler's lifecycle (pooler.py), its status (pooler_status.py), its admin console
(pooler_console.py) and its watcher (pooler_watch.py), which all read these files; nothing
here connects to a server.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import PoolerError, Refused, SmtmigrateError
from .files import read_json_state, write_private

if TYPE_CHECKING:
    from .locations import Store

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
WILDCARDS = ("0.0.0.0", "::", "*")  # listen addresses that are no address to reach


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT ([IPv6]:PORT) as typed."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SmtmigrateError(f"--listen {text!r}: give HOST:PORT, e.g. 127.0.0.1:6432")
    return host, int(port)


def url_host(host: str) -> str:
    """The host the jobs connect to: a wildcard listen address is no address to reach."""
    if host in WILDCARDS:
        return socket.getfqdn()
    return host


def config_dir(directory: Path) -> Path:
    return directory / POOLER_DIR


def read_pooler_state(directory: Path) -> dict | None:
    return read_json_state(config_dir(directory) / STATE)


def run_as() -> str | None:
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


def runtime_dir(folder: Path) -> Path:
    """Where PgBouncer writes its pid file and log. Its own config folder, unless it runs as
    `postgres` (we are root): that user may not reach a project directory (a home, a
    private temporary folder), so a folder of its own under /run. PgBouncer reads its
    config and auth file at start, before it drops root, so those stay root's, 0600."""
    if run_as() is None:
        return folder
    base = Path("/run") if os.access("/run", os.W_OK) else Path(tempfile.gettempdir())
    key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
    return base / "smtmigrate" / f"pgbouncer-{key}"


def pgbouncer_pid(folder: Path) -> int | None:
    """The running PgBouncer of this folder, if any."""
    try:
        pid = int((runtime_dir(folder) / PID).read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        return None
    return pid if comm == "pgbouncer" else None


def log_tail(folder: Path) -> str:
    """PgBouncer's last error in its log (else its last line): why it did not start."""
    try:
        lines = (runtime_dir(folder) / LOG).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    fatal = [line for line in lines if "FATAL" in line or "ERROR" in line]
    return (fatal or lines or [""])[-1].strip()


def server_params(store: Store, role: str, reached: str) -> dict:
    """libpq's parameters of the server connections (PgBouncer's and the watcher's)."""
    s = store.settings
    params = {"host": s.get("HOST") or reached, "dbname": s["NAME"]}
    if s.get("PORT"):
        params["port"] = int(s["PORT"])
    return params | {"user": role}


def _quote_ini(value: str) -> str:
    """A value of a PgBouncer connection string: single-quoted, `'` and `\\` escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _ini(
    store: Store, role: str, reached: str, listen: tuple[str, int], folder: Path, **sizes: int
) -> str:
    s = store.settings
    server = [
        f"{key}={value}" if key == "port" else f"{key}={_quote_ini(value)}"
        for key, value in server_params(store, role, reached).items()
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


def auth_line(role: str, password: str) -> str:
    def quoted(text: str) -> str:
        return '"' + text.replace('"', '""') + '"'

    return f"{quoted(role)} {quoted(password)}\n"


def read_auth(folder: Path) -> tuple[str, str]:
    """(role, password) of the auth file `auth_line` wrote: `"role" "password"`, a `"`
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


def write_config(
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
    """The folder (0700), `pgbouncer.ini` and the auth file (0600), and the runtime folder
    `postgres` may write when PgBouncer runs as it."""
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
    write_private(folder / AUTH, auth_line(role, password), mode=0o600)
    runtime = runtime_dir(folder)
    if runtime != folder:
        runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
        entry = pwd.getpwnam(run_as() or "")
        os.chown(runtime, entry.pw_uid, entry.pw_gid)
        os.chmod(runtime, 0o700)

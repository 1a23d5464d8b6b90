"""The pooler's watcher: PgBouncer held through an unplanned server restart.

PgBouncer 1.18 fails a client at once ("server login has been failing", its
`check_fast_fail`) when its last login to the server failed and it has no server connection
left; there is no setting that turns this off, and a `smt run` whose last saves fail that
way leaves its record `_running_`. Paused, PgBouncer fails nobody: it holds every client's
next statement (up to `query_wait_timeout`). So a small process started and stopped with
the pooler holds one connection of its own to the server's database and waits on its
socket: a shutting-down server ends that connection at once (the same instant it ends
PgBouncer's), and the watcher sends PAUSE to PgBouncer's admin console; then it tries to
log in every RETRY_INTERVAL and sends RESUME as soon as the server lets it in (never before:
a login PgBouncer tried and failed would mark the pool failing again). A connection that
goes quiet without closing (a network cut) is found by TCP keep-alives and a probe
`SELECT 1` every PROBE_INTERVAL.

A pause the user asked for (`pooler --pause`, the marker file USER_PAUSE) is the user's: the
watcher never resumes it. What it sees is in WATCH_STATE (`pooler --status` shows it), what
it did in WATCH_LOG; its pid in WATCH_PID. It ends when PgBouncer ends, or on SIGTERM
(`pooler --stop`), resuming PgBouncer first if it had paused it.

Run as `python -m smtmigrate.pooler_watch CONFIG_DIR` (`start_watcher` below, which
pooler.start_pooler calls).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

WATCH_CONFIG = "watch-config.json"  # the server's libpq parameters (no password), listen
WATCH_STATE = "watch.json"  # what the watcher sees: server up or down, since, paused by it
WATCH_PID = "watch.pid"
WATCH_LOG = "watch.log"
USER_PAUSE = "paused-by-user"
RETRY_INTERVAL = 0.2  # log-in attempts while the server is down
PROBE_INTERVAL = 2.0  # a `SELECT 1` on a quiet connection
CONNECT_TIMEOUT = 2  # libpq's minimum that it honours
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
MODULE = "smtmigrate.pooler_watch"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def _log(text: str) -> None:
    print(f"{_now()} {text}", flush=True)  # stdout is WATCH_LOG (start_watcher)


def watcher_pid(folder: Path) -> int | None:
    """The running watcher of this folder, if any (its pid file, and a process that is it)."""
    try:
        pid = int((folder / WATCH_PID).read_text().strip())
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if MODULE.encode() in command else None


def read_watch_state(folder: Path) -> dict | None:
    try:
        return json.loads((folder / WATCH_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def start_watcher(folder: Path, server: dict, listen: str) -> int:
    """Start the watcher of `folder`'s PgBouncer (once: a running one is kept)."""
    from .errors import PoolerError
    from .files import write_private

    running = watcher_pid(folder)
    if running is not None:
        return running
    config = {"server": server, "listen": listen}
    write_private(folder / WATCH_CONFIG, json.dumps(config, indent=2) + "\n", mode=0o600)
    (folder / WATCH_PID).unlink(missing_ok=True)
    (folder / WATCH_STATE).unlink(missing_ok=True)
    log = os.open(folder / WATCH_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", MODULE, str(folder.resolve())],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # not ended by the terminal's Ctrl-C or hang-up
            env={k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
        )
    finally:
        os.close(log)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        state = read_watch_state(folder)
        if state is not None and watcher_pid(folder) == process.pid:
            return process.pid
        if process.poll() is not None:
            break
        time.sleep(0.05)
    if process.poll() is None:
        process.terminate()
    raise PoolerError(f"the pooler's watcher did not start: {_last_line(folder / WATCH_LOG)}")


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1].strip() if lines else "no log"


def stop_watcher(folder: Path) -> None:
    """SIGTERM (it resumes PgBouncer if it had paused it), SIGKILL if it does not end."""
    pid = watcher_pid(folder)
    if pid is not None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + STOP_TIMEOUT
            while time.monotonic() < deadline and watcher_pid(folder) == pid:
                time.sleep(0.05)
            if watcher_pid(folder) != pid:
                break
    for name in (WATCH_PID, WATCH_STATE, WATCH_CONFIG):
        (folder / name).unlink(missing_ok=True)


class _Stop(Exception):
    """SIGTERM: end the watch."""


class Watcher:
    def __init__(self, folder: Path) -> None:
        from .pooler_config import read_auth

        self.folder = folder
        config = json.loads((folder / WATCH_CONFIG).read_text(encoding="utf-8"))
        self.listen = config["listen"]
        _, self.password = read_auth(folder)
        self.params = {k: v for k, v in config["server"].items() if v not in (None, "")}
        self.admin: Any = None  # the PgBouncer admin console connection, opened on use
        self.paused = False  # by this watcher
        self.down_since: float | None = None
        self.outages = 0

    # --- the server -------------------------------------------------------------------
    def connect_server(self):
        import psycopg2

        try:
            connection = psycopg2.connect(
                **self.params,
                password=self.password or None,
                connect_timeout=CONNECT_TIMEOUT,
                application_name="smtmigrate pooler watch",
                keepalives=1,
                keepalives_idle=2,
                keepalives_interval=1,
                keepalives_count=2,
                tcp_user_timeout=3000,
            )
        except psycopg2.Error as exc:
            return None, " ".join(str(exc).split())
        connection.autocommit = True
        return connection, ""

    # --- PgBouncer's admin console ----------------------------------------------------
    def admin_command(self, command: str) -> str:
        """PAUSE or RESUME; '' when done, else PgBouncer's answer."""
        import psycopg2

        from .pooler_console import admin_connection

        for attempt in (1, 2):
            try:
                if self.admin is None or self.admin.closed:
                    self.admin = admin_connection(self.folder, {"listen": self.listen})
                with self.admin.cursor() as cursor:
                    cursor.execute(command)
                return ""
            except psycopg2.OperationalError as exc:
                text = " ".join(str(exc).split())
                if self.admin is not None and not self.admin.closed and "paused" in text:
                    return text  # PgBouncer's answer: already paused / not paused
                if self.admin is not None:
                    self.admin.close()
                self.admin = None
                if attempt == 2:
                    return text
            except psycopg2.Error as exc:
                return " ".join(str(exc).split())
        return "unreachable"

    def pause(self, why: str) -> None:
        if (self.folder / USER_PAUSE).exists():
            _log(f"server down ({why}); PgBouncer is paused by the user already")
            return
        answer = self.admin_command("PAUSE")
        if answer:
            _log(f"server down ({why}); PAUSE: {answer}")
        else:
            self.paused = True
            _log(f"server down ({why}); PAUSE sent: the jobs' statements wait")

    def resume(self) -> None:
        if not self.paused:
            return
        if (self.folder / USER_PAUSE).exists():
            _log("server answers; left paused: the user paused it too (pooler --resume)")
            self.paused = False
            return
        answer = self.admin_command("RESUME")
        self.paused = False
        _log(f"server answers again; RESUME{': ' + answer if answer else ' sent'}")

    def write_state(self, up: bool) -> None:
        from .files import write_private

        state = {
            "pid": os.getpid(),
            "server": "up" if up else "down",
            "down_since": None
            if self.down_since is None
            else datetime.fromtimestamp(self.down_since, timezone.utc).isoformat(),
            "paused_by_watcher": self.paused,
            "outages": self.outages,
        }
        write_private(self.folder / WATCH_STATE, json.dumps(state) + "\n", mode=0o600)

    def pgbouncer_alive(self) -> bool:
        from .pooler_config import pgbouncer_pid

        return pgbouncer_pid(self.folder) is not None

    def run(self) -> None:
        import psycopg2

        server, why = self.connect_server()
        if server is None:
            self.down_since = time.time()
            self.pause(why)
        _log(f"watching {self.params.get('host')}:{self.params.get('port', 5432)}")
        self.write_state(server is not None)
        last_probe = time.monotonic()
        while self.pgbouncer_alive():
            if server is None:
                time.sleep(RETRY_INTERVAL)
                server, why = self.connect_server()
                if server is not None:
                    self.resume()
                    self.down_since = None
                    self.write_state(True)
                    last_probe = time.monotonic()
                continue
            readable, _, _ = select.select([server], [], [], 0.5)
            try:
                if readable:
                    server.poll()  # what a closing server sent: raises
                elif time.monotonic() - last_probe >= PROBE_INTERVAL:
                    with server.cursor() as cursor:
                        cursor.execute("SELECT 1")
                    last_probe = time.monotonic()
            except psycopg2.Error as exc:
                server.close()
                server = None
                self.down_since = time.time()
                self.outages += 1
                self.pause(" ".join(str(exc).split()) or "connection lost")
                self.write_state(False)
        _log("PgBouncer ended; the watch ends")

    def close(self) -> None:
        if self.paused and self.pgbouncer_alive():
            answer = self.admin_command("RESUME")
            _log(f"stopping: RESUME{': ' + answer if answer else ' sent'}")
        if self.admin is not None:
            self.admin.close()


def main(argv: list[str]) -> int:
    folder = Path(argv[0])

    def stop(signum, frame) -> None:
        raise _Stop

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # PgBouncer's own Ctrl-C is not ours
    watcher = Watcher(folder)
    from .files import write_private

    write_private(folder / WATCH_PID, f"{os.getpid()}\n", mode=0o600)
    try:
        watcher.run()
    except _Stop:
        _log("stopped (SIGTERM)")
    finally:
        watcher.close()
        if watcher_pid(folder) == os.getpid():
            (folder / WATCH_PID).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

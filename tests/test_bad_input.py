"""Bad input to every command ends in one line on stderr that names the problem, an exit
code (2, or 1 where the tool refuses by design) and no traceback; nothing is changed.

Every case runs the real CLI in-process against real files and real PostgreSQL servers: the
test server, a throw-away cluster that checks SCRAM passwords, a closed port and a listener
that accepts connections but never says a word.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg2
import psycopg2.extensions
import pytest
from psycopg2 import sql

from smtmigrate.locations import DEFAULT_CONNECT_TIMEOUT, postgres_settings

from .conftest import (
    PG_URL,
    CliResult,
    admin_execute,
    pg_column_types,
    pg_query,
    pg_url_for,
)

# -- the contract -------------------------------------------------------------------------


def assert_error(
    result: CliResult,
    command: str,
    needle: str | tuple[str, ...],
    *,
    code: int = 2,
    secrets: tuple[str, ...] = (),
) -> str:
    """Exit `code`, exactly one non-empty line on stderr, `smtmigrate COMMAND: error: …`
    naming the problem (`needle`, or any of several), no traceback, no secret anywhere."""
    assert result.code == code, result
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, result.err
    line = lines[0]
    assert line.startswith(f"smtmigrate {command}: error: "), line
    assert "Traceback" not in result.err + result.out
    needles = (needle,) if isinstance(needle, str) else needle
    assert any(n in line for n in needles), line
    for secret in secrets:
        for form in (secret, quote(secret, safe="")):
            assert form not in result.out + result.err
    return line


# -- where the bad location goes, for every command ---------------------------------------


@dataclass(frozen=True)
class Slot:
    """A command line with `{loc}` where the bad location goes."""

    id: str
    command: str
    args: tuple[str, ...]

    def argv(self, **values: str) -> list[str]:
        return [self.command, *(arg.format(**values) for arg in self.args)]


# Every argument that names a store to read (or, for createdb/drop-recreate, a database).
STORE_SLOTS = [
    Slot("audit", "audit", ("{loc}",)),
    Slot("widen-SOURCE", "widen", ("{loc}",)),
    Slot("widen-apply", "widen", ("--apply", "{loc}")),
    Slot("copy-SOURCE", "copy", ("{loc}", "{tmp}/new.sqlite")),
    Slot("verify-SOURCE", "verify", ("{loc}", "{store}")),
    Slot("verify-TARGET", "verify", ("{store}", "{loc}")),
    Slot("switch-TARGET", "switch", ("{store}", "{loc}")),
    Slot("stress", "stress", ("{loc}", "--jobs", "1", "--timeout", "30")),
    Slot("createdb", "createdb", ("{loc}",)),
    Slot("drop-recreate", "drop-recreate", ("{loc}", "--yes")),
]
# Arguments that only take a project directory, or only a PostgreSQL URL.
PROJECT_SLOT = Slot("switch-PROJECT_DIR", "switch", ("{loc}", "{store}"))
URL_SLOTS = [
    *STORE_SLOTS,
    Slot("copy-TARGET", "copy", ("{store}", "{loc}", "--widen")),
    Slot("createdb-admin", "createdb", ("{new}", "--admin", "{loc}")),
    Slot("drop-recreate-admin", "drop-recreate", ("{new}", "--yes", "--admin", "{loc}")),
]
SLOT = {slot.id: slot for slot in [*URL_SLOTS, PROJECT_SLOT]}


def _project(directory: Path, record_store: dict) -> Path:
    (directory / ".smt").mkdir(parents=True)
    (directory / ".smt" / "project").write_text(
        json.dumps({"name": "p", "record_store": record_store})
    )
    return directory


def bad_path(kind: str, tmp_path: Path) -> Path:
    """A path of the given kind of wrongness."""
    path = tmp_path / f"bad-{kind}"
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.touch()
    elif kind == "random":
        path.write_bytes(random.Random(kind).randbytes(4096))
    elif kind == "not-sumatra":
        sqlite3.connect(path).execute("CREATE TABLE notes (x)").connection.close()
    elif kind == "shelve":
        _project(path, {"type": "sumatra.recordstore.shelve_store.ShelveRecordStore"})
    elif kind == "http":
        _project(
            path,
            {
                "type": "sumatra.recordstore.http_store.HttpRecordStore",
                "server_url": "http://127.0.0.1:1/records/",
            },
        )
    return path


PATH_ERRORS = {
    "missing": "no such file or directory",
    "directory": "a directory, but not a Sumatra project (no .smt/project)",
    "empty": "empty file, not an SQLite database",
    "random": "not an SQLite database",
    "not-sumatra": "not a Sumatra record store (no django_store_record table)",
    "shelve": "ShelveRecordStore; smtmigrate moves Django record stores",
    "http": "HttpRecordStore; smtmigrate moves Django record stores",
}
PATH_ERROR_OVERRIDES = {
    ("createdb", "not-sumatra"): "not a PostgreSQL database URL",
    ("drop-recreate", "not-sumatra"): "not a PostgreSQL database URL",
    ("widen-apply", "not-sumatra"): "widening applies to PostgreSQL stores",
    # an SQLite file as PROJECT_DIR: the switch's checks find no project file first
    ("switch-PROJECT_DIR", "not-sumatra"): "not a Sumatra project (no .smt/project)",
}


@pytest.fixture
def run_bad(cli, store08: Path, tmp_path: Path, new_database: str):
    """Run a slot with a bad location; check that nothing was written."""
    project_file = store08 / ".smt" / "project"
    before = project_file.read_bytes()

    def run(slot: Slot, loc: str) -> CliResult:
        result = cli(*slot.argv(loc=loc, store=str(store08), tmp=str(tmp_path), new=new_database))
        assert project_file.read_bytes() == before  # switch did not switch
        assert not (tmp_path / "new.sqlite").exists()  # copy did not copy
        return result

    return run


@pytest.mark.parametrize("kind", PATH_ERRORS)
@pytest.mark.parametrize("slot", [*STORE_SLOTS, PROJECT_SLOT], ids=lambda s: s.id)
def test_bad_paths(run_bad, tmp_path, slot, kind):
    """Every argument that names a store, given a path that is none."""
    expected = PATH_ERROR_OVERRIDES.get((slot.id, kind), PATH_ERRORS[kind])
    assert_error(run_bad(slot, str(bad_path(kind, tmp_path))), slot.command, expected)


@pytest.mark.parametrize("kind", PATH_ERRORS)
def test_copy_switch_to_a_bad_project_fails_before_copying(run_bad, tmp_path, kind):
    """`copy --switch DIR` used to copy first and only then find DIR was no project."""
    slot = Slot("copy-switch", "copy", ("{store}", "{tmp}/new.sqlite", "--switch", "{loc}"))
    expected = {"shelve": "ShelveRecordStore", "http": "HttpRecordStore"}.get(
        kind, "not a Sumatra project (no .smt/project)"
    )
    assert_error(run_bad(slot, str(bad_path(kind, tmp_path))), "copy", expected)


@pytest.mark.parametrize(
    ("kind", "code", "expected"),
    [
        ("directory", 2, "a directory; give the path of a new SQLite file"),
        ("shelve", 2, "a directory; give the path of a new SQLite file"),
        ("empty", 1, "exists; copy writes a new SQLite store"),
        ("random", 1, "exists; copy writes a new SQLite store"),
        ("not-sumatra", 1, "exists; copy writes a new SQLite store"),
        ("no-parent", 2, "no such directory"),
    ],
)
def test_copy_to_a_bad_sqlite_target(run_bad, tmp_path, kind, code, expected):
    """An existing file is refused (1: copy never writes over a file), the rest is 2."""
    if kind == "no-parent":
        target = tmp_path / "no" / "such" / "new.sqlite"
    else:
        target = bad_path(kind, tmp_path)
    before = target.read_bytes() if target.is_file() else None
    slot = Slot("copy-TARGET", "copy", ("{store}", "{loc}", "--widen"))
    assert_error(run_bad(slot, str(target)), "copy", expected, code=code)
    assert (target.read_bytes() if target.is_file() else None) == before


@pytest.mark.parametrize("kind", ["missing", "directory", "empty", "shelve"])
def test_switch_back_on_a_bad_project(run_bad, tmp_path, kind):
    expected = (
        "no saved project file to go back to" if kind == "shelve" else "not a Sumatra project"
    )
    slot = Slot("switch-back", "switch", ("{loc}", "--back"))
    assert_error(run_bad(slot, str(bad_path(kind, tmp_path))), "switch", expected)


@pytest.mark.parametrize("where", ["file", "under-a-file"])
def test_widen_write_into_a_file(run_bad, tmp_path, where):
    """A file where the migrations directory should be used to end in a traceback."""
    directory = bad_path("empty", tmp_path)
    if where == "under-a-file":
        directory = directory / "migrations"
    slot = Slot("widen-write", "widen", ("--write", "{loc}"))
    assert_error(run_bad(slot, str(directory)), "widen", "cannot write the migration there")


# -- malformed URLs and schemes, for every command ----------------------------------------

URL_ERRORS = {
    "port-not-a-number": (
        "postgresql://alice:Secret-1@127.0.0.1:fivefour/sumatra",
        "port 'fivefour' is not a number",
    ),
    "unclosed-ipv6": ("postgresql://alice:Secret-1@[::1/sumatra", "malformed IPv6 address"),
    "no-database": ("postgresql://127.0.0.1:5432", "the URL names no database"),
    "bad-query": ("postgresql://127.0.0.1/sumatra?sslmode", "malformed query string"),
    "unknown-option": ("postgresql://127.0.0.1/sumatra?colour=red", 'option "colour"'),
    "bad-timeout": (
        "postgresql://127.0.0.1/sumatra?connect_timeout=soon",
        'invalid integer value "soon" for connection option "connect_timeout"',
    ),
    "unknown-scheme": ("gopher://127.0.0.1/sumatra", "unknown scheme 'gopher'"),
    "mysql": ("mysql://alice:Secret-1@127.0.0.1/sumatra", "MySQL/MariaDB stores are not"),
    "http": ("http://127.0.0.1/records/", "an HTTP record store cannot be moved"),
}


# Where a MariaDB URL is taken (tests/test_mariadb.py): exit code and message for URL_ERRORS's
DENIED = (2, "Access denied for user 'alice'")
MARIADB_SLOTS = {
    "audit": DENIED,
    "copy-SOURCE": DENIED,
    "copy-TARGET": DENIED,
    "verify-SOURCE": DENIED,
    "verify-TARGET": DENIED,
    "switch-TARGET": (1, "Sumatra reads a MariaDB password only from"),
    "createdb": (2, "password is taken from --password-env VAR only"),
    "stress": DENIED,
    "widen-SOURCE": DENIED,
    "widen-apply": DENIED,
    "drop-recreate": DENIED,
}

# --admin takes nothing but a PostgreSQL URL (it used to parse gopher:// as one).
ADMIN_ONLY_POSTGRES = "--admin takes a postgresql:// URL"


def _url_cases(mariadb: bool) -> list:
    """(slot, kind) pairs: those where a MariaDB URL is taken (they reach the server), or
    all the others."""
    return [
        pytest.param(slot, kind, id=f"{slot.id}-{kind}")
        for kind in URL_ERRORS
        for slot in URL_SLOTS
        if (kind == "mysql" and slot.id in MARIADB_SLOTS) == mariadb
    ]


@pytest.mark.mariadb
@pytest.mark.parametrize(("slot", "kind"), _url_cases(mariadb=True))
def test_mariadb_urls_where_they_are_taken(run_bad, slot, kind):
    """The URL is well formed; then the MariaDB server (or a check) says no."""
    code, expected = MARIADB_SLOTS[slot.id]
    url = URL_ERRORS[kind][0]
    assert_error(run_bad(slot, url), slot.command, expected, code=code, secrets=("Secret-1",))


@pytest.mark.parametrize(("slot", "kind"), _url_cases(mariadb=False))
def test_malformed_urls(run_bad, monkeypatch, slot, kind):
    """Refused as typed, before any connection (or by libpq, before any server is asked)."""
    monkeypatch.delenv("PGDATABASE", raising=False)
    url, expected = URL_ERRORS[kind]
    code = 2
    if slot.id.endswith("-admin") and not url.startswith("postgresql:"):
        expected = ADMIN_ONLY_POSTGRES
    if slot.id == "switch-TARGET" and kind in ("unknown-option", "bad-timeout"):
        # Sumatra would ignore any ?parameter: switch refuses them all, before connecting
        code, expected = 1, "Sumatra ignores the ?parameters"
    assert_error(run_bad(slot, url), slot.command, expected, code=code, secrets=("Secret-1",))


# -- servers that say no: closed port, unknown role, missing database ---------------------

_SERVER = psycopg2.extensions.parse_dsn(PG_URL)


def server_url(dbname: str, *, user: str = "", password: str = "", port: int = 0) -> str:
    """A URL on the test server (or another port of its host) as `user`."""
    host = quote(_SERVER.get("host") or "127.0.0.1", safe="")
    port_text = str(port or _SERVER.get("port") or "")
    userinfo = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
    netloc = (f"{userinfo}@" if userinfo else "") + host + (f":{port_text}" if port_text else "")
    return f"postgresql://{netloc}/{dbname}"


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


NO_SUCH_ROLE = f"smtm_norole_{uuid.uuid4().hex[:8]}"
NO_SUCH_DATABASE = f"smtm_nodb_{uuid.uuid4().hex[:8]}"
REFUSALS: dict[str, str | tuple[str, ...]] = {
    "closed-port": "Connection refused",
    # a server that checks passwords says no more than that the password failed
    "no-such-role": (f'role "{NO_SUCH_ROLE}" does not exist', "password authentication failed"),
    "no-such-database": f'database "{NO_SUCH_DATABASE}" does not exist',
}
REFUSAL_OVERRIDES = {
    # createdb's URL names the owner-to-be: refused (1) before anything is created
    ("createdb", "no-such-role"): (1, f"role '{NO_SUCH_ROLE}' does not exist (add --create-role)"),
    ("copy-TARGET", "no-such-database"): (2, "create it first with smtmigrate createdb"),
}


def refusing_url(kind: str) -> str:
    if kind == "closed-port":
        return server_url("sumatra", user="alice", password="Secret-2", port=closed_port())
    if kind == "no-such-role":
        return server_url(NO_SUCH_DATABASE, user=NO_SUCH_ROLE, password="Secret-2")
    return server_url(NO_SUCH_DATABASE)


@pytest.mark.parametrize(
    ("slot", "kind"),
    [
        pytest.param(slot, kind, id=f"{slot.id}-{kind}")
        for slot in URL_SLOTS
        for kind in REFUSALS
        # a database that does not exist is what createdb and drop-recreate make
        if not (kind == "no-such-database" and slot.id in ("createdb", "drop-recreate"))
    ],
)
def test_servers_that_refuse(run_bad, slot, kind):
    """The server (or its host) says no: each command says why, in the server's words."""
    code, expected = REFUSAL_OVERRIDES.get((slot.id, kind), (2, REFUSALS[kind]))
    result = run_bad(slot, refusing_url(kind))
    assert_error(result, slot.command, expected, code=code, secrets=("Secret-2",))


def test_copy_into_a_missing_database_says_how_to_make_it(run_bad):
    user = pg_query(PG_URL, "SELECT current_user")[0][0]
    line = assert_error(
        run_bad(SLOT["copy-TARGET"], server_url(NO_SUCH_DATABASE, user=user, password="pw-3")),
        "copy",
        f'database "{NO_SUCH_DATABASE}" does not exist',
        secrets=("pw-3",),
    )
    # the URL to give createdb, without the password
    assert line.endswith(f"smtmigrate createdb {server_url(NO_SUCH_DATABASE, user=user)}")


# -- a server that checks passwords (SCRAM) ----------------------------------------------


@dataclass(frozen=True)
class ScramServer:
    port: int
    password: str  # the superuser's (postgres)

    def url(self, dbname: str, *, user: str = "postgres", password: str = "") -> str:
        secret = f":{quote(password, safe='')}" if password else ""
        return f"postgresql://{user}{secret}@127.0.0.1:{self.port}/{dbname}"


def _pg_binary(name: str) -> str | None:
    """A PostgreSQL server binary: on PATH, else the newest /usr/lib/postgresql/N/bin."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
        key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0,
    )
    return str(versions[-1]) if versions else None


@pytest.fixture(scope="session")
def scram_server() -> Iterator[ScramServer]:
    """A throw-away cluster (initdb -A scram-sha-256) on 127.0.0.1, once per session: the
    test server may trust everyone, and a wrong password must be seen to fail."""
    initdb, pg_ctl = _pg_binary("initdb"), _pg_binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("initdb/pg_ctl not found: cannot start a password-checking PostgreSQL")
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: run it as postgres
        import pwd

        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root, and there is no postgres user to run initdb as")
        if shutil.which("runuser") is None:
            pytest.skip("running as root, and there is no runuser to run initdb as postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="smtm-scram-"))
    password = f"Right-{uuid.uuid4().hex[:10]}"
    (root / "pwfile").write_text(password + "\n")
    if as_postgres:
        for path in (root, root / "pwfile"):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    data, port = root / "data", closed_port()

    def as_postgres_run(*args: str) -> None:
        try:
            subprocess.run([*as_postgres, *args], check=True, capture_output=True, timeout=120)
        except subprocess.CalledProcessError as exc:
            pytest.fail(f"{args[0]} failed: {exc.stderr.decode(errors='replace')}")

    try:
        as_postgres_run(
            initdb, "-D", str(data), "-A", "scram-sha-256", "-U", "postgres",
            "--pwfile", str(root / "pwfile"), "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        options = (
            f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='{root}' "
            "-c fsync=off -c max_connections=20"
        )
        as_postgres_run(
            pg_ctl, "-D", str(data), "-l", str(root / "log"), "-o", options, "-w", "start"
        )
        yield ScramServer(port, password)
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                [*as_postgres, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"],
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(root, ignore_errors=True)


WRONG = "Wr0ng/pass@word"  # has characters that must be percent-encoded in a URL


@pytest.mark.parametrize("slot", URL_SLOTS, ids=lambda s: s.id)
def test_wrong_password(run_bad, scram_server, monkeypatch, tmp_path, slot):
    """Named as such, and the password itself (raw or percent-encoded) is never shown."""
    url = scram_server.url("sumatra", password=WRONG)
    with monkeypatch.context() as env:  # undone before the fixtures' own cleanup
        env.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))
        if slot.id == "createdb":
            # createdb connects as libpq's default user, not as the owner its URL names
            env.setenv("PGUSER", "postgres")
            env.setenv("PGPASSWORD", WRONG)
            url = scram_server.url("sumatra")
        result = run_bad(slot, url)
    assert_error(
        result,
        slot.command,
        'password authentication failed for user "postgres"',
        secrets=(WRONG,),
    )


@pytest.mark.parametrize(
    ("password", "expected"),
    [
        ("right", "not a Sumatra record store"),  # the server takes the right one
        ("", "no password supplied"),
    ],
)
def test_the_scram_server_checks_passwords(
    cli, scram_server, monkeypatch, tmp_path, password, expected
):
    """The control for test_wrong_password: only the password makes the difference."""
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))
    monkeypatch.delenv("PGPASSWORD", raising=False)
    secret = scram_server.password if password else ""
    result = cli("audit", scram_server.url("postgres", password=secret))
    assert_error(result, "audit", expected, secrets=(scram_server.password,))


# -- an address that does not answer: bounded by the connect timeout ----------------------


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port where TCP connects (the kernel accepts) but no server ever says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    # Closing the listener resets the queued connections: a regression (no timeout) fails
    # after 30 s instead of hanging the test run.
    watchdog = threading.Timer(30, listener.close)
    watchdog.start()
    try:
        yield listener.getsockname()[1]
    finally:
        watchdog.cancel()
        listener.close()


def _timed(run, slot: Slot, url: str) -> tuple[CliResult, float]:
    start = time.monotonic()
    result = run(slot, url)
    return result, time.monotonic() - start


@pytest.mark.parametrize("slot_id", ["audit", "copy-TARGET", "createdb-admin", "drop-recreate"])
def test_no_answer_ends_after_pgconnect_timeout(run_bad, silent_port, monkeypatch, slot_id):
    """PGCONNECT_TIMEOUT is libpq's own variable and is honoured, on the stores' connections
    and on the maintenance connections of createdb/drop-recreate alike."""
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "2")
    slot = SLOT[slot_id]
    url = f"postgresql://alice:Secret-5@127.0.0.1:{silent_port}/sumatra"
    result, elapsed = _timed(run_bad, slot, url)
    assert_error(
        result,
        slot.command,
        "timeout expired (no answer within 2 s",
        secrets=("Secret-5",),
    )
    assert elapsed < 4.5  # 2 s, not the default 5 s


def test_no_answer_ends_after_the_default_timeout(run_bad, silent_port, monkeypatch):
    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    url = f"postgresql://127.0.0.1:{silent_port}/sumatra"
    result, elapsed = _timed(run_bad, SLOT["audit"], url)
    assert_error(result, "audit", f"timeout expired (no answer within {DEFAULT_CONNECT_TIMEOUT} s")
    assert elapsed < 9


def test_the_urls_connect_timeout_beats_pgconnect_timeout(run_bad, silent_port, monkeypatch):
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "60")
    url = f"postgresql://127.0.0.1:{silent_port}/sumatra?connect_timeout=2"
    result, elapsed = _timed(run_bad, SLOT["verify-TARGET"], url)
    assert_error(result, "verify", "timeout expired (no answer within 2 s")
    assert elapsed < 4.5


@pytest.mark.parametrize(
    ("query", "environment", "expected"),
    [
        ("", None, DEFAULT_CONNECT_TIMEOUT),
        ("", "7", "7"),
        ("", "", DEFAULT_CONNECT_TIMEOUT),  # set but empty: as if unset
        ("?connect_timeout=3", "7", "3"),
        ("?connect_timeout=0", None, "0"),  # the user's own "wait forever" stands
    ],
)
def test_connect_timeout_precedence(monkeypatch, query, environment, expected):
    """The URL's connect_timeout, else PGCONNECT_TIMEOUT, else ours (libpq's order)."""
    if environment is None:
        monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    else:
        monkeypatch.setenv("PGCONNECT_TIMEOUT", environment)
    options = postgres_settings(f"postgresql://db.example/sumatra{query}")["OPTIONS"]
    assert options["connect_timeout"] == expected


# -- insufficient privileges --------------------------------------------------------------


@pytest.fixture
def make_role() -> Iterator:
    """Login roles of their own (with a password, for servers that ask), dropped after."""
    made: list[str] = []

    def make(*attributes: str) -> tuple[str, str]:
        name = f"smtm_bad_{uuid.uuid4().hex[:8]}"
        password = f"pw-{uuid.uuid4().hex[:8]}"
        admin_execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} " + " ".join(attributes)).format(
                sql.Identifier(name), sql.Literal(password)
            )
        )
        made.append(name)
        return name, password

    yield make
    for name in made:
        role = sql.Identifier(name)
        # Its grants live in the tests' databases, which are dropped only after this.
        databases = pg_query(
            PG_URL,
            "SELECT DISTINCT d.datname FROM pg_shdepend s JOIN pg_database d ON d.oid = s.dbid "
            "JOIN pg_roles r ON r.oid = s.refobjid WHERE r.rolname = %s",
            (name,),
        )
        for (database,) in databases:
            pg_query(pg_url_for(database), sql.SQL("DROP OWNED BY {}").format(role))
        admin_execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(role))  # databases
        admin_execute(sql.SQL("DROP OWNED BY {}").format(role))
        admin_execute(sql.SQL("DROP ROLE IF EXISTS {}").format(role))


def as_role(url: str, role: tuple[str, str]) -> str:
    """The same database, reached as another role."""
    return server_url(url.rsplit("/", 1)[1], user=role[0], password=role[1])


def grant(url: str, statement: str, role: str) -> None:
    """GRANT … TO role, in the database of `url` (as its owner)."""
    conn = psycopg2.connect(url)
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(sql.SQL(statement + " TO {}").format(sql.Identifier(role)))
    finally:
        conn.close()


READ_SLOTS = [
    "audit",
    "widen-SOURCE",
    "widen-apply",
    "copy-SOURCE",
    "verify-SOURCE",
    "verify-TARGET",
    "switch-TARGET",
    "stress",
]


@pytest.mark.parametrize("slot_id", READ_SLOTS)
def test_a_store_the_role_may_not_read(run_bad, sumatra_pg, make_role, slot_id):
    """A role that may log in but not read Sumatra's tables (made by another role)."""
    role = make_role()
    slot = SLOT[slot_id]
    assert_error(
        run_bad(slot, as_role(sumatra_pg, role)),
        slot.command,
        "permission denied for table",
        secrets=(role[1],),
    )


def test_widen_apply_by_a_role_that_does_not_own_the_tables(cli, sumatra_pg, make_role):
    role = make_role()
    grant(sumatra_pg, "GRANT SELECT ON ALL TABLES IN SCHEMA public", role[0])
    before = pg_column_types(sumatra_pg)
    result = cli("widen", "--apply", as_role(sumatra_pg, role))
    assert_error(result, "widen", "must be owner of table", secrets=(role[1],))
    assert pg_column_types(sumatra_pg) == before


def test_stress_by_a_role_that_may_only_read_fails_at_once(cli, sumatra_pg, make_role):
    """Sumatra retries a failed save every 5 s: without the check the jobs sat out the
    whole --timeout and reported nothing but `timeout` (exit 1)."""
    role = make_role()
    grant(sumatra_pg, "GRANT SELECT ON ALL TABLES IN SCHEMA public", role[0])
    start = time.monotonic()
    result = cli("stress", as_role(sumatra_pg, role), "--jobs", "1", "--timeout", "60")
    assert_error(
        result,
        "stress",
        f"permission denied: role '{role[0]}' lacks INSERT on django_store_",
        secrets=(role[1],),
    )
    assert time.monotonic() - start < 10


def test_stress_by_a_role_that_may_not_use_a_serial_id_sequence(cli, sumatra_pg, make_role):
    """A store built by an older Django has serial ids: their sequences need USAGE too."""
    role = make_role()
    pg_query(
        sumatra_pg,
        "ALTER TABLE django_store_tag ALTER COLUMN id DROP IDENTITY; "
        "CREATE SEQUENCE django_store_tag_id_seq OWNED BY django_store_tag.id; "
        "ALTER TABLE django_store_tag ALTER COLUMN id "
        "SET DEFAULT nextval('django_store_tag_id_seq')",
    )
    grant(
        sumatra_pg, "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public", role[0]
    )
    result = cli("stress", as_role(sumatra_pg, role), "--jobs", "1", "--timeout", "60")
    assert_error(
        result, "stress", f"role '{role[0]}' lacks USAGE on public.django_store_tag_id_seq"
    )


def test_stress_needs_no_more_than_writing_the_tables(cli, sumatra_pg, make_role):
    """The control: identity ids need no sequence privilege, and the check lets such a role
    through to a run in which every record is saved."""
    role = make_role()
    grant(
        sumatra_pg, "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public", role[0]
    )
    result = cli("stress", as_role(sumatra_pg, role), "--jobs", "1", "--timeout", "60")
    assert result.code == 0, result


def test_copy_into_a_database_whose_schema_the_role_may_not_create_in(
    cli, store08, pg_database, make_role
):
    """PostgreSQL 15: only a database's owner may create in its public schema."""
    role = make_role()
    result = cli("copy", store08, as_role(pg_database, role), "--widen")
    line = assert_error(result, "copy", "permission denied for schema public", secrets=(role[1],))
    assert "LINE 1" not in line  # PostgreSQL's excerpt of our SQL is noise to the user
    assert "GRANT CREATE ON SCHEMA public" in line  # and what to do about it
    assert pg_query(pg_database, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [
        (0,)
    ]


def _database_exists(url: str) -> bool:
    name = url.rsplit("/", 1)[1]
    return bool(pg_query(PG_URL, "SELECT 1 FROM pg_database WHERE datname = %s", (name,)))


@pytest.mark.parametrize("how", ["--admin", "PGUSER"])
def test_createdb_by_a_role_without_createdb(cli, new_database, make_role, monkeypatch, how):
    """Refused (1) before anything is created."""
    role = make_role()
    if how == "--admin":
        result = cli("createdb", new_database, "--admin", as_role(PG_URL, role))
    else:  # createdb connects as libpq's default user
        with monkeypatch.context() as env:  # undone before the role is dropped
            env.setenv("PGUSER", role[0])
            env.setenv("PGPASSWORD", role[1])
            result = cli("createdb", new_database)
    assert_error(result, "createdb", "may not create databases (no CREATEDB)", code=1)
    assert not _database_exists(new_database)


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ((), "may not create databases (no CREATEDB)"),
        (("CREATEDB",), "may not drop"),
    ],
)
def test_drop_recreate_by_a_role_that_may_not(
    cli, sumatra_pg, make_role, tmp_path, attributes, expected
):
    """Refused (1) before anything is dropped."""
    role = make_role(*attributes)
    tables = pg_query(sumatra_pg, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
    result = cli(
        "drop-recreate", sumatra_pg, "--yes", "--owner", role[0], "--admin", as_role(PG_URL, role)
    )
    assert_error(result, "drop-recreate", expected, code=1, secrets=(role[1],))
    after = pg_query(sumatra_pg, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
    assert after == tables


def test_drop_recreate_never_drops_records_it_may_not_read(
    cli, store08, pg_database, make_role, tmp_path, monkeypatch
):
    """A role that owns the database but may not read the tables in it (made by another
    role) used to see "not a Sumatra store" and drop the records without a backup."""
    role = make_role("CREATEDB")
    name = pg_database.rsplit("/", 1)[1]
    assert cli("copy", store08, pg_database, "--widen", "--quiet").code == 0
    admin_execute(
        sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
            sql.Identifier(name), sql.Identifier(role[0])
        )
    )
    monkeypatch.chdir(tmp_path)
    result = cli("drop-recreate", as_role(pg_database, role), "--yes")
    assert_error(
        result,
        "drop-recreate",
        "permission denied for table",
        secrets=(role[1],),
    )
    assert "nothing was changed" in result.err
    assert pg_query(pg_database, "SELECT count(*) FROM django_store_record") == [(7,)]

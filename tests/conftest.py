"""Shared test fixtures: real PostgreSQL databases, copies of the bundled Sumatra stores.

The PostgreSQL server is taken from SMTMIGRATE_TEST_PG (a libpq URL of a database the
tests may connect to in order to create and drop their own); by default the local
server on 127.0.0.1:5432. Every test database gets a unique name and is dropped after.

Markers (registered in pyproject.toml, set here at collection, see
`pytest_collection_modifyitems`): `pg` on every test that needs the PostgreSQL server,
`mariadb` on those that need the MariaDB server (SMTMIGRATE_TEST_MARIADB; skipped without the
mysqlclient driver, the extra smtmigrate[mariadb]), `slow` on
tests that start processes (real `smt run`s, workers, Sumatra's API) or take seconds,
`solo` on tests that need a server to themselves (up to 100 concurrent jobs: a server's
default max_connections). The fast subset needs none:
`pytest -m "not pg and not mariadb and not slow"`.

The suite runs on pytest-xdist's workers (`-n auto`, pyproject.toml); `_one_at_a_time`
keeps every other server test off the servers while a `solo` test runs.
"""

from __future__ import annotations

import fcntl
import json
import multiprocessing.process
import os
import queue
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg2
import psycopg2.extensions
import pytest
from psycopg2 import sql

from smtmigrate.cli import main
from smtmigrate.locations import resolve

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
PG_URL = os.environ.get("SMTMIGRATE_TEST_PG", "postgresql://127.0.0.1:5432/postgres")
# A MariaDB server and a user that may create and drop databases (tests marked `mariadb`).
MARIADB_URL = os.environ.get("SMTMIGRATE_TEST_MARIADB", "mysql://root@localhost")
TESTS = Path(__file__).resolve().parent
try:  # the optional extra smtmigrate[mariadb]; without it the MariaDB tests are skipped
    import MySQLdb

    MARIADB_DRIVER = True
except ImportError:
    MARIADB_DRIVER = False
NO_DRIVER = "mysqlclient not installed (the MariaDB extra: pip install -e '.[mariadb,test]')"
# For the few tests that resolve a MariaDB location without talking to the server.
needs_mariadb_driver = pytest.mark.skipif(not MARIADB_DRIVER, reason=NO_DRIVER)

# Fixtures that make or need a server database (with every fixture that depends on them, as
# pytest resolves them): a test that uses one must be marked `pg` / `mariadb` itself.
PG_FIXTURES = frozenset({
    "pg_database", "sumatra_pg", "widened_reference", "scram_server", "new_database",
    "make_role",
})  # fmt: skip
MARIADB_FIXTURES = frozenset({"mariadb_name", "mariadb_database"})
SERVER_MARKERS = ("pg", "mariadb")
# Directories whose tests need no server, by the layout (docs/development.md).
SERVERLESS_DIRS = frozenset({"unit"})


def _undeclared(item: pytest.Item) -> list[str]:
    """What `item` uses but does not declare (the markers are written in the test modules,
    never guessed here: see docs/development.md, "Markers")."""
    fixtures = set(getattr(item, "fixturenames", ()))
    marked = {name for name in ("pg", "mariadb", "slow", "solo") if item.get_closest_marker(name)}
    wrong = []
    for marker, used in (("pg", fixtures & PG_FIXTURES), ("mariadb", fixtures & MARIADB_FIXTURES)):
        if used and marker not in marked:
            wrong.append(f"uses {', '.join(sorted(used))} but is not marked {marker}")
    if "solo" in marked and "slow" not in marked:
        wrong.append("is marked solo but not slow")
    layer = item.path.relative_to(TESTS).parts[0] if item.path.is_relative_to(TESTS) else ""
    if layer in SERVERLESS_DIRS and marked & {"pg", "mariadb", "solo"}:
        wrong.append(f"is in tests/{layer}/ (no server) but marked {', '.join(sorted(marked))}")
    return wrong


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups below
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Check the declared markers (a test using a server fixture without its marker fails
    the whole collection, naming it), skip the MariaDB tests without the driver, and tell
    `_SoloFirst` which tests are `solo` and which need no server (as xdist groups)."""
    wrong = [f"{item.nodeid} {problem}" for item in items for problem in _undeclared(item)]
    if wrong:
        raise pytest.UsageError("undeclared test markers:\n  " + "\n  ".join(wrong))
    for item in items:
        marker = item.get_closest_marker
        if marker("mariadb") is not None and not MARIADB_DRIVER:
            item.add_marker(pytest.mark.skip(reason=NO_DRIVER))
        if marker("solo"):
            item.add_marker(pytest.mark.xdist_group(SOLO_GROUP))
        elif not (marker("pg") or marker("mariadb")):
            item.add_marker(pytest.mark.xdist_group(SERVERLESS_GROUP))


SOLO_GROUP, SERVERLESS_GROUP = "solo", "serverless"


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """`--dist loadgroup` (pyproject.toml) only to learn the groups: `_SoloFirst` schedules."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScheduling

    class _SoloFirst(LoadScheduling):
        """pytest-xdist's load scheduling, but started so that `solo` tests do not idle the
        other workers: the first worker gets every `solo` test, to run one after another
        first; the others start with the tests that need no server (the solo lock does not
        hold them up), then everything else is handed out as it would be."""

        def schedule(self) -> None:
            if self.collection is not None or len(self.nodes) < 2:
                return super().schedule()
            if not self._check_nodes_have_same_collection():
                return super().schedule()  # says so and aborts the run
            collection = next(iter(self.node2collection.values()))
            solo = [i for i, nodeid in enumerate(collection) if nodeid.endswith("@" + SOLO_GROUP)]
            free = [i for i, n in enumerate(collection) if n.endswith("@" + SERVERLESS_GROUP)]
            taken = set(solo) | set(free)
            self.collection = collection
            self.pending[:] = free + [i for i in range(len(collection)) if i not in taken]
            if self.maxschedchunk is None:
                self.maxschedchunk = len(collection)
            first, *others = self.nodes
            if solo:
                self.node2pending[first].extend(solo)
                first.send_runtest_some(solo)
            chunk = max(2, min(len(collection) // len(self.nodes) // 4, self.maxschedchunk))
            for node in others if solo else self.nodes:
                self._send_tests(node, chunk)
            if not self.pending:
                for node in self.nodes:
                    node.shutdown()
            return None

    return _SoloFirst(config, log)


def _refused(what: str, marker: str):
    def refuse(*args, **kwargs):
        raise AssertionError(f"this test {what} but is not marked {marker}: declare it")

    return refuse


@pytest.fixture(autouse=True)
def _declared(request, monkeypatch) -> None:
    """At run time, what collection cannot see: a test not marked `pg` (or `mariadb`) that
    connects to that server anyway, or one not marked `slow` that starts a process, fails."""
    marker = request.node.get_closest_marker
    if marker("pg") is None:
        monkeypatch.setattr(psycopg2, "connect", _refused("connects to PostgreSQL", "pg"))
    if marker("mariadb") is None and MARIADB_DRIVER:
        monkeypatch.setattr(MySQLdb, "connect", _refused("connects to MariaDB", "mariadb"))
    if marker("slow") is None:
        monkeypatch.setattr(subprocess.Popen, "__init__", _refused("starts a process", "slow"))
        monkeypatch.setattr(
            multiprocessing.process.BaseProcess, "start", _refused("starts a process", "slow")
        )


@pytest.fixture(autouse=True)
def _one_at_a_time(request, tmp_path_factory) -> Iterator[None]:
    """Under pytest-xdist: a `solo` test runs while no other server test does, the other
    server tests side by side (a readers-writer lock over the run's workers, with the
    writer first: a waiting `solo` test holds the turnstile that new tests pass)."""
    global _LOCK_BASE
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    marker = request.node.get_closest_marker
    if run is None or not (marker("pg") or marker("mariadb") or marker("solo")):
        yield
        return
    # the run's base temporary directory, shared by its workers (each has a folder in it)
    _LOCK_BASE = tmp_path_factory.getbasetemp().parent / f"smtmigrate-tests-{run}"
    with servers_turn(exclusive=bool(marker("solo"))):
        yield


_LOCK_BASE: Path | None = None  # set by the first server test under pytest-xdist


@contextmanager
def servers_turn(exclusive: bool) -> Iterator[None]:
    """Hold the servers shared (a server test, or `_Databases`'s thread making or dropping a
    database) or exclusively (a `solo` test); nothing to hold outside pytest-xdist."""
    if _LOCK_BASE is None:
        yield
        return
    with open(f"{_LOCK_BASE}.turnstile", "a") as turnstile, open(f"{_LOCK_BASE}.lock", "a") as lock:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        fcntl.flock(turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(autouse=True)
def _real_databases(django_db_blocker):
    """These tests bring their own databases (real SQLite stores, fresh PostgreSQL
    databases), not pytest-django's test database, so its blocker stays out of the way."""
    with django_db_blocker.unblock():
        yield


def generated_store(tmp_path_factory, django_db_blocker, records: int, seed: int) -> Path:
    """A synthetic store of `records` records (tests/storegen), in a directory of its own
    (for module-scoped fixtures: made once, shared by a module's tests)."""
    from .storegen import generate_store

    path = tmp_path_factory.mktemp(f"store-{records}") / "store.sqlite"
    with django_db_blocker.unblock():
        generate_store(path, records, seed=seed)
    return path


def pg_url_for(dbname: str) -> str:
    base, _, _ = PG_URL.rpartition("/")
    return f"{base}/{dbname}"


def admin_execute(statement: sql.Composable, connect=None) -> None:
    """Run one statement on the maintenance database, outside any transaction."""
    conn = (connect or psycopg2.connect)(PG_URL)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


def close_django_connections(name: str) -> None:
    """Close every Django connection this process holds to database `name`."""
    from django.db import connections

    for alias in list(connections.settings):
        if connections.settings[alias].get("NAME") == name:
            connections[alias].close()


def _drop(name: str, connect=None) -> None:
    admin_execute(
        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)), connect
    )


def drop_database(name: str) -> None:
    """Drop a test database now, after closing any Django connection this process holds to
    it."""
    close_django_connections(name)
    _drop(name)


class _Databases:
    """Creating and dropping the tests' PostgreSQL databases off the tests' path.

    PostgreSQL 15's DROP DATABASE waits for a checkpoint and CREATE DATABASE copies
    template1: 0.5 to 3 s each on a busy server, for a few hundred databases a run. A thread
    of this test process keeps two empty databases made ahead (`take`) and drops the used
    ones (`drop_later`); `finish` (at the end of the session) waits for it. The databases
    are the same: made by the same statement, only earlier; dropped the same, only later."""

    SPARE = 2

    def __init__(self) -> None:
        self.spare: queue.Queue[str] = queue.Queue(maxsize=self.SPARE)
        self.dropping: queue.Queue[str | None] = queue.Queue()
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()

    @staticmethod
    def create(name: str, template: str | None = None, connect=psycopg2.connect) -> None:
        statement = sql.SQL("CREATE DATABASE {} ENCODING 'UTF8'").format(sql.Identifier(name))
        if template:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        admin_execute(statement, connect)

    def take(self) -> str:
        """The name of an empty database made for this test (ahead if the thread runs)."""
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="test-databases", daemon=True)
            self.thread.start()
        try:
            return self.spare.get(timeout=5)
        except queue.Empty:  # the server is slow to make one: make it here
            name = _new_name()
            self.create(name)
            return name

    def drop_later(self, name: str) -> None:
        close_django_connections(name)  # Django's connections belong to this thread
        if self.thread is None:
            drop_database(name)
        else:
            self.dropping.put(name)

    def _run(self) -> None:
        connect = _CONNECT  # the real one: a test may be refusing connections meanwhile
        while not self.stopping.is_set():
            self._drop_queued(connect)
            if self.spare.full():
                self.stopping.wait(0.05)  # not time.sleep: tests may be counting its calls
                continue
            name = _new_name()
            try:
                with servers_turn(exclusive=False):
                    self.create(name, connect=connect)
            except psycopg2.Error:  # the tests that need it make it, and say why not
                self.stopping.wait(1)
                continue
            self.spare.put(name)

    def _drop_queued(self, connect) -> None:
        while True:
            try:
                name = self.dropping.get_nowait()
            except queue.Empty:
                return
            with servers_turn(exclusive=False):
                _drop(name, connect)

    def finish(self) -> None:
        if self.thread is None:
            return
        self.stopping.set()
        self.thread.join()
        while not self.spare.empty():
            self.dropping.put(self.spare.get_nowait())
        self._drop_queued(_CONNECT)


_CONNECT = psycopg2.connect
_DATABASES = _Databases()


def pytest_sessionfinish(session: pytest.Session) -> None:
    _DATABASES.finish()


def _new_name() -> str:
    return f"smtm_test_{uuid.uuid4().hex[:12]}"


@contextmanager
def fresh_database(timezone: str | None = None, template: str | None = None) -> Iterator[str]:
    """A fresh PostgreSQL database (with that default TimeZone): empty, or a copy of the
    database `template`; yields its URL and drops it afterwards (soon after: `_Databases`)."""
    if template:
        name = _new_name()
        _Databases.create(name, template)
    else:
        name = _DATABASES.take()
    try:
        if timezone:
            admin_execute(
                sql.SQL("ALTER DATABASE {} SET timezone TO {}").format(
                    sql.Identifier(name), sql.Literal(timezone)
                )
            )
        yield pg_url_for(name)
    finally:
        _DATABASES.drop_later(name)


@pytest.fixture
def pg_database() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.fixture(scope="session")
def _sumatra_template(django_db_blocker) -> Iterator[str]:
    """Sumatra's migrated schema, built once per test process: every `sumatra_pg` is a copy
    of it (CREATE DATABASE … TEMPLATE, a file copy) instead of another run of the migrations.
    Per process, so that no other session is connected to it while it is copied."""
    from django.core.management import call_command

    with django_db_blocker.unblock(), fresh_database() as url:
        with resolve(url) as store:
            call_command("migrate", database=store.alias, run_syncdb=True, verbosity=0)
        name = url.rsplit("/", 1)[1]
        close_django_connections(name)
        yield name


@pytest.fixture
def sumatra_pg(_sumatra_template) -> Iterator[str]:
    """A PostgreSQL store built by Sumatra's own migrations (what `smt init` would make)."""
    with fresh_database(template=_sumatra_template) as url:
        yield url


def mariadb_url_for(dbname: str) -> str:
    return f"{MARIADB_URL.rstrip('/')}/{dbname}"


def mariadb_execute(statement: str, params: tuple = (), *, database: str = "") -> list[tuple]:
    """Run one statement on the test MariaDB server with plain MySQLdb (the oracle)."""
    import MySQLdb

    from smtmigrate.locations import mariadb_settings

    settings = mariadb_settings(mariadb_url_for("mysql"))
    kwargs = {"user": settings["USER"], "password": settings["PASSWORD"], "charset": "utf8mb4"}
    if settings["HOST"]:
        kwargs["host"] = settings["HOST"]
    if settings["PORT"]:
        kwargs["port"] = int(settings["PORT"])
    if database:
        kwargs["database"] = database
    conn = MySQLdb.connect(**kwargs)
    try:
        with conn.cursor() as cursor:
            cursor.execute(statement, params or None)
            rows = list(cursor.fetchall())
        conn.commit()
        return rows
    finally:
        conn.close()


def mariadb_databases() -> set[str]:
    return {row[0] for row in mariadb_execute("SHOW DATABASES")}


def drop_mariadb_database(name: str) -> None:
    from django.db import connections

    for alias in list(connections.settings):
        if connections.settings[alias].get("NAME") == name:
            connections[alias].close()
    mariadb_execute(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
def mariadb_name() -> Iterator[str]:
    """The name of a MariaDB database that does not exist yet; dropped after the test."""
    name = f"smtm_test_{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        drop_mariadb_database(name)


@pytest.fixture
def mariadb_database(mariadb_name) -> str:
    """An empty MariaDB database with the server's default collation; its URL."""
    mariadb_execute(f"CREATE DATABASE `{mariadb_name}`")
    return mariadb_url_for(mariadb_name)


def pg_query(url: str, query: str, params: tuple = ()) -> list[tuple]:
    conn = psycopg2.connect(url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def pg_column_types(url: str) -> dict[tuple[str, str], str]:
    """(table, column) → type, from information_schema: an oracle independent of smtmigrate."""
    rows = pg_query(
        url,
        "SELECT table_name, column_name, data_type, character_maximum_length "
        "FROM information_schema.columns WHERE table_name LIKE 'django_store%%'",
    )
    return {
        (table, column): f"{kind}({length})" if length else kind
        for table, column, kind, length in rows
    }


def run_sumatra(*args: str) -> subprocess.CompletedProcess:
    """Sumatra 0.8.1's own API in a process of its own (see sumatra_api.py)."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    return subprocess.run(
        [sys.executable, str(Path(__file__).parent / "sumatra_api.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def copy_fixture(generation: str, tmp_path: Path) -> Path:
    """A private copy of a bundled fixture project (tests may damage it)."""
    target = tmp_path / f"sumatra-{generation}"
    shutil.copytree(FIXTURES / f"sumatra-{generation}", target)
    # The project names the Python of the machine that built it (fixtures/build/, not in
    # git); `smt` warns on stdout when that is missing, so point it at this one.
    project_file = target / ".smt" / "project"
    project = json.loads(project_file.read_text(encoding="utf-8"))
    if "default_executable" in project:
        project["default_executable"]["path"] = sys.executable
        project_file.write_text(json.dumps(project, indent=2), encoding="utf-8")
    return target


@pytest.fixture
def home(tmp_path: Path, monkeypatch) -> Path:
    """A HOME of the test's own: ~/.pgpass is written there, and smt reads it from there."""
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("HOME", str(path))
    monkeypatch.delenv("PGPASSFILE", raising=False)  # the ~/.pgpass of this HOME, no other
    monkeypatch.delenv("PGPASSWORD", raising=False)
    return path


@pytest.fixture
def store08(tmp_path: Path) -> Path:
    return copy_fixture("0.8", tmp_path)


@pytest.fixture
def store07(tmp_path: Path) -> Path:
    return copy_fixture("0.7", tmp_path)


def records_file(project: Path) -> Path:
    return project / ".smt" / "records"


def sqlite_rows(path: Path, query: str, params: tuple = ()) -> list[tuple]:
    """Read a store with plain sqlite3: the independent oracle tests compare against."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(query, params).fetchall()
    finally:
        conn.close()


def sqlite_exec(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    try:
        for statement in statements:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


class CliResult:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"CliResult(code={self.code}, out={self.out[-400:]!r}, err={self.err!r})"


@pytest.fixture
def cli(capsys):
    """Run `smtmigrate ARGS…` in-process; return its exit code and output."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


def processes_mentioning(text: str) -> list[int]:
    """Processes whose command line holds `text` (a run's jobs name its scratch project)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


SCHEMA_QUERIES = {
    "columns": "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), "
    "a.attnotnull FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
    "WHERE c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped",
    "indexes": "SELECT c.relname, i.relname, pg_get_indexdef(i.oid) FROM pg_index x "
    "JOIN pg_class c ON c.oid = x.indrelid JOIN pg_class i ON i.oid = x.indexrelid",
    "constraints": "SELECT c.relname, k.conname, pg_get_constraintdef(k.oid) "
    "FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid",
}


def sumatra_schema(url: str) -> dict[str, list[tuple]]:
    """Columns, indexes and constraints of Sumatra's tables, from PostgreSQL's catalog."""
    return {
        what: sorted(
            row
            for row in pg_query(url, query)
            if row[0].startswith("django_store_") and not row[0].startswith("pg_")
        )
        for what, query in SCHEMA_QUERIES.items()
    }


@pytest.fixture
def widened_reference() -> Iterator[dict[str, list[tuple]]]:
    """What Sumatra's migrations plus the widening give: Sumatra's tables created afresh,
    by Django's schema editor, from the migration state after the widening migration (the
    same models, with the widened fields)."""
    from django.core.management import call_command

    from smtmigrate.widen import build_migration, plan_widening

    migration = build_migration(plan_widening("text"))
    state = migration.mutate_state(migration.initial_state, preserve=True)
    with fresh_database() as url, resolve(url) as store:
        call_command("migrate", "contenttypes", database=store.alias, verbosity=0)
        with store.connection.schema_editor() as editor:
            for model in state.apps.get_app_config("django_store").get_models():
                editor.create_model(model)
        yield sumatra_schema(url)


SMTMIGRATE = [sys.executable, "-m", "smtmigrate"]


@contextmanager
def immutable(path: Path) -> Iterator[Path]:
    """`path` made immutable (chattr +i): root may not write it or into it, as no mode bit
    could make it (root ignores those)."""
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
        pytest.skip(f"chattr +i does not work on {path}'s file system: nothing is unwritable")
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def project_text(project: Path) -> str:
    return (project / ".smt" / "project").read_text()


def public_tables(url: str) -> list[str]:
    """The tables of the database's public schema, by name."""
    rows = pg_query(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return sorted(name for (name,) in rows)


def one_error_line(result, command: str, code: int, text: str) -> None:
    assert result.code == code, result
    assert result.err.count("\n") == 1 and "Traceback" not in result.err, result.err
    assert result.err.startswith(f"smtmigrate {command}: error: "), result.err
    assert text in result.err, result.err


@pytest.fixture(scope="session")
def big_store(tmp_path_factory, django_db_blocker) -> Path:
    """A clean store whose audit scans for about a second."""
    return generated_store(tmp_path_factory, django_db_blocker, 30_000, seed=5)


def start(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [*SMTMIGRATE, *map(str, args)],
        stderr=subprocess.PIPE,
        text=True,
        # a test runner may have SIGINT ignored; the command must get Ctrl-C as a user would
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        **kwargs,
    )


def wait_until_open(process: subprocess.Popen, path: Path, timeout: float = 60) -> None:
    """Until the process has `path` open (the audit is reading the store)."""
    deadline = time.monotonic() + timeout
    fds = Path(f"/proc/{process.pid}/fd")
    while time.monotonic() < deadline:
        try:
            if any(os.readlink(fd) == str(path) for fd in fds.iterdir()):
                return
        except OSError:  # a descriptor closed while we looked
            pass
        assert process.poll() is None, "the process ended before it opened the store"
        time.sleep(0.005)
    pytest.fail(f"{path} not opened within {timeout} s")


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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


@pytest.fixture
def new_database() -> Iterator[str]:
    """The URL of a database that does not exist (dropped afterwards, should a command that
    was meant to fail have created it)."""
    name = f"smtm_test_new_{uuid.uuid4().hex[:12]}"
    yield pg_url_for(name)
    _DATABASES.drop_later(name)


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


def _database_exists(url: str) -> bool:
    name = url.rsplit("/", 1)[1]
    return bool(pg_query(PG_URL, "SELECT 1 FROM pg_database WHERE datname = %s", (name,)))


RECORD_ROWS = "SELECT db_id, label, project_id, duration, timestamp FROM django_store_record"


def wait_for_line(process: subprocess.Popen, text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    for line in process.stdout:
        if text in line:
            return
        assert time.monotonic() < deadline, f"no {text!r} within {timeout} s"
    pytest.fail(f"the copy ended before {text!r}: {process.stderr.read()[-500:]}")


def start_in_its_own_group(*args: str, cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [*SMTMIGRATE, *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell job on a terminal
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def server_url(dbname: str, *, user: str = "", password: str = "", port: int = 0) -> str:
    """A URL on the test server (or another port of its host) as `user`."""
    host = quote(_SERVER.get("host") or "127.0.0.1", safe="")
    port_text = str(port or _SERVER.get("port") or "")
    userinfo = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
    netloc = (f"{userinfo}@" if userinfo else "") + host + (f":{port_text}" if port_text else "")
    return f"postgresql://{netloc}/{dbname}"


_SERVER = psycopg2.extensions.parse_dsn(PG_URL)

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
import inspect
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import sql

from smtmigrate.cli import main

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
PG_URL = os.environ.get("SMTMIGRATE_TEST_PG", "postgresql://127.0.0.1:5432/postgres")
# A MariaDB server and a user that may create and drop databases (tests marked `mariadb`).
MARIADB_URL = os.environ.get("SMTMIGRATE_TEST_MARIADB", "mysql://root@localhost")
TESTS = Path(__file__).resolve().parent
try:  # the optional extra smtmigrate[mariadb]; without it the MariaDB tests are skipped
    import MySQLdb  # noqa: F401

    MARIADB_DRIVER = True
except ImportError:
    MARIADB_DRIVER = False
NO_DRIVER = "mysqlclient not installed (the MariaDB extra: pip install -e '.[mariadb,test]')"
# For the few tests that resolve a MariaDB location without talking to the server.
needs_mariadb_driver = pytest.mark.skipif(not MARIADB_DRIVER, reason=NO_DRIVER)

# Fixtures that make or need a PostgreSQL database (with everything that depends on them).
PG_FIXTURES = frozenset({"pg_database", "sumatra_pg", "widened_reference", "scram_server"})
MARIADB_FIXTURES = frozenset({"mariadb_name", "mariadb_database"})
# Names whose use in a test, a fixture or a tests/ function it calls means talking to the
# server, or starting processes (checked in their source, see `_uses`).
_PG_NAMES = re.compile(
    r"\b(?:fresh_database|pg_database|pg_query|pg_url_for|admin_execute|drop_database"
    r"|pg_column_types|sumatra_schema|PG_URL|psycopg2)\b"
)
_PROCESS_NAMES = re.compile(r"\b(?:subprocess|Popen|run_sumatra|multiprocessing)\b")
# Modules whose tests are slow as a whole: real `smt run`s (stress with --smt), many
# worker processes (stress), processes killed and restarted (faults, defects).
SLOW_MODULES = frozenset({"test_stress", "test_stress_smt", "test_faults", "test_defects"})
# Tests that need neither but take about a second or more each (measured on 2 cores: waits
# on purpose, hypothesis, several stores read through Sumatra), kept out of the fast subset.
SLOW_TESTS = frozenset({
    "test_a_store_locked_by_a_writer_ends_in_one_line_after_a_bounded_wait",
    "test_audit_names_the_default_timestamp_labels_of_both_fixtures",
    "test_each_kind_of_non_datetime_is_reported",
    "test_invalid_values",
    "test_layout_is_detected_from_the_schema",
    "test_one_changed_value_names_that_record_and_field",
    "test_parallel_reading_gives_the_same_answer",
    "test_shared_labels_orphan_records_and_unreadable_records_are_compared",
    "test_shared_output_keys_become_one_key_per_record",
})  # fmt: skip
# Tests that need the servers to themselves: up to 100 jobs connected at once leave no
# connection of PostgreSQL's default 100 for another test.
SOLO_MODULES = frozenset({"test_stress", "test_stress_smt"})
SOLO_TESTS = frozenset({
    "test_move_then_a_hundred_concurrent_default_smt_runs_lose_nothing",
    "test_move_onto_mariadb_then_a_hundred_concurrent_default_smt_runs_lose_nothing",
    "test_without_the_label_fix_concurrent_runs_collide",
    "test_move_while_runs_keep_saving_loses_no_record",
    "test_merge_while_twenty_smt_runs_write_the_target_loses_nothing",
})  # fmt: skip


_USES: dict[tuple[object, str], bool] = {}  # memo of `_uses`: tests share helpers


def _uses(func: object, names: re.Pattern[str]) -> bool:
    """Whether a test or fixture function of tests/, or a tests/ function it names
    (transitively), mentions one of `names`; for `_PG_NAMES`, also a module-level
    `postgresql://` string it names."""
    func = inspect.unwrap(func)
    code = getattr(func, "__code__", None)
    if code is None or not code.co_filename.startswith(str(TESTS)):
        return False
    key = (func, names.pattern)
    if key in _USES:
        return _USES[key]
    _USES[key] = False  # while looking: a recursive helper adds nothing
    try:
        source = inspect.getsource(func)
    except (OSError, TypeError):
        return False
    found: set[str] = set()
    codes = [code]
    while codes:
        current = codes.pop()
        found.update(current.co_names)
        codes.extend(c for c in current.co_consts if inspect.iscode(c))
    module_globals = getattr(func, "__globals__", {})
    values = [module_globals.get(name) for name in sorted(found)]
    result = bool(names.search(source)) or any(
        (names is _PG_NAMES and isinstance(value, str) and value.startswith("postgres"))
        or (inspect.isfunction(value) and _uses(value, names))
        for value in values
    )
    _USES[key] = result
    return result


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark `pg`, `mariadb` and `slow` tests (see the module docstring) for `-m`."""
    for item in items:
        functions = [getattr(item, "function", None)]
        info = getattr(item, "_fixtureinfo", None)
        fixtures = set(getattr(item, "fixturenames", ()))
        for name in fixtures:
            for definition in info.name2fixturedefs.get(name, ()) if info else ():
                functions.append(definition.func)
        functions = [f for f in functions if f is not None]
        if item.get_closest_marker("pg") is None and (
            fixtures & PG_FIXTURES or any(_uses(f, _PG_NAMES) for f in functions)
        ):
            item.add_marker(pytest.mark.pg)
        if item.get_closest_marker("mariadb") is None and fixtures & MARIADB_FIXTURES:
            item.add_marker(pytest.mark.mariadb)
        if item.get_closest_marker("mariadb") is not None and not MARIADB_DRIVER:
            item.add_marker(pytest.mark.skip(reason=NO_DRIVER))
        if item.get_closest_marker("slow") is None and (
            item.path.stem in SLOW_MODULES
            or getattr(item, "originalname", item.name) in SLOW_TESTS
            or any(_uses(f, _PROCESS_NAMES) for f in functions)
        ):
            item.add_marker(pytest.mark.slow)
        if item.path.stem in SOLO_MODULES or getattr(item, "originalname", "") in SOLO_TESTS:
            item.add_marker(pytest.mark.solo)


@pytest.fixture(autouse=True)
def _one_at_a_time(request, tmp_path_factory) -> Iterator[None]:
    """Under pytest-xdist: a `solo` test runs while no other server test does, the other
    server tests side by side (a readers-writer lock over the run's workers, with the
    writer first: a waiting `solo` test holds the turnstile that new tests pass)."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    marker = request.node.get_closest_marker
    if run is None or not (marker("pg") or marker("mariadb") or marker("solo")):
        yield
        return
    # the run's base temporary directory, shared by its workers (each has a folder in it)
    base = tmp_path_factory.getbasetemp().parent / f"smtmigrate-tests-{run}"
    with open(f"{base}.turnstile", "a") as turnstile, open(f"{base}.lock", "a") as lock:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        fcntl.flock(lock, fcntl.LOCK_EX if marker("solo") else fcntl.LOCK_SH)
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


def admin_execute(statement: sql.Composable) -> None:
    """Run one statement on the maintenance database, outside any transaction."""
    conn = psycopg2.connect(PG_URL)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


def drop_database(name: str) -> None:
    """Drop a test database, after closing any Django connection this process holds to it."""
    from django.db import connections

    for alias in list(connections.settings):
        if connections.settings[alias].get("NAME") == name:
            connections[alias].close()
    admin_execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def fresh_database(timezone: str | None = None) -> Iterator[str]:
    """A fresh, empty PostgreSQL database (with that default TimeZone); yields its URL and
    drops it afterwards."""
    name = f"smtm_test_{uuid.uuid4().hex[:12]}"
    ident = sql.Identifier(name)
    admin_execute(sql.SQL("CREATE DATABASE {} ENCODING 'UTF8'").format(ident))
    try:
        if timezone:
            admin_execute(
                sql.SQL("ALTER DATABASE {} SET timezone TO {}").format(ident, sql.Literal(timezone))
            )
        yield pg_url_for(name)
    finally:
        drop_database(name)


@pytest.fixture
def pg_database() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.fixture
def new_database() -> Iterator[str]:
    """The URL of a PostgreSQL database that does not exist yet (move or createdb creates
    it, or a command meant to fail might have); dropped afterwards."""
    name = f"smtm_new_{uuid.uuid4().hex[:12]}"
    yield pg_url_for(name)
    drop_database(name)


@pytest.fixture
def sumatra_pg(pg_database) -> str:
    """A PostgreSQL store built by Sumatra's own migrations (what `smt init` would make)."""
    from django.core.management import call_command

    from smtmigrate.locations import resolve

    with resolve(pg_database) as store:
        call_command("migrate", database=store.alias, run_syncdb=True, verbosity=0)
    return pg_database


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

    from smtmigrate.locations import resolve
    from smtmigrate.widen import build_migration, plan_widening

    migration = build_migration(plan_widening("text"))
    state = migration.mutate_state(migration.initial_state, preserve=True)
    with fresh_database() as url, resolve(url) as store:
        call_command("migrate", "contenttypes", database=store.alias, verbosity=0)
        with store.connection.schema_editor() as editor:
            for model in state.apps.get_app_config("django_store").get_models():
                editor.create_model(model)
        yield sumatra_schema(url)

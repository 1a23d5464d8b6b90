"""`smtmigrate drop-recreate` and `smtmigrate createdb` against a real PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import psycopg2
import psycopg2.extensions
import pytest
from psycopg2 import sql

from ..conftest import (
    FIXTURES,
    PG_URL,
    RECORD_ROWS,
    SMTMIGRATE,
    admin_execute,
    as_role,
    assert_error,
    drop_database,
    generated_store,
    immutable,
    one_error_line,
    pg_column_types,
    pg_query,
    pg_url_for,
    run_sumatra,
    sqlite_rows,
    start_in_its_own_group,
    wait_for_line,
)

pytestmark = pytest.mark.pg


@pytest.fixture
def role():
    """A login role of its own, dropped (with whatever it owns) afterwards."""
    name = f"smtm_role_{uuid.uuid4().hex[:8]}"
    admin_execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    yield name
    # the databases it came to own first: a test's own database is dropped later, on a thread
    owned = (
        "SELECT datname FROM pg_database "
        "WHERE datdba = (SELECT oid FROM pg_roles WHERE rolname = %s)"
    )
    for (database,) in pg_query(PG_URL, owned, (name,)):
        drop_database(database)
    admin_execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
    admin_execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def copied_store(cli, store, url):
    assert cli("copy", store, url, "--widen").code == 0
    return pg_query(url, "SELECT count(*) FROM django_store_record")[0][0]


def database_facts(name):
    return pg_query(
        PG_URL,
        "SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding) FROM pg_database "
        "WHERE datname = %s",
        (name,),
    )


def test_refuses_without_yes_when_stdin_is_not_a_terminal(cli, store08, pg_database, monkeypatch):
    records = copied_store(cli, store08, pg_database)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    result = cli("drop-recreate", pg_database)
    assert result.code == 1
    assert "pass --yes" in result.err
    assert pg_query(pg_database, "SELECT count(*) FROM django_store_record") == [(records,)]


def test_drop_recreate_with_a_session_connected_backs_up_first(cli, store08, pg_database, tmp_path):
    records = copied_store(cli, store08, pg_database)
    name = pg_database.rsplit("/", 1)[1]
    before = database_facts(name)
    other = psycopg2.connect(pg_database)  # a user's session, left open
    backup = tmp_path / "backup.sqlite"
    try:
        result = cli("drop-recreate", pg_database, "--yes", "--backup", backup)
    finally:
        other.close()
    assert result.code == 0, result
    assert "1 other session(s) connected" in result.out
    assert f"{records} Sumatra records" in result.out
    assert backup.is_file()
    assert database_facts(name) == before  # same owner, UTF8
    assert pg_query(pg_database, "SELECT count(*) FROM django_store_record") == [(0,)]
    assert pg_column_types(pg_database)["django_store_record", "label"] == "text"
    # the backup is a store `copy` accepts: copying it back restores the records
    restored = cli("copy", backup, pg_database)
    assert restored.code == 0, restored
    assert pg_query(pg_database, "SELECT count(*) FROM django_store_record") == [(records,)]
    assert cli("verify", store08, pg_database).code == 0


@pytest.mark.slow
def test_recreated_database_takes_long_records_through_sumatra(cli, role, pg_database):
    name = pg_database.rsplit("/", 1)[1]
    result = cli("drop-recreate", pg_database, "--yes", "--owner", role)
    assert result.code == 0, result
    assert database_facts(name) == [(role, "UTF8")]
    owners = pg_query(
        pg_database, "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'"
    )
    assert owners == [(role,)]  # Sumatra, connecting as the owner, may alter its tables
    export = str(FIXTURES / "sumatra-0.8" / "records_export.json")
    as_owner = pg_database.replace("://", f"://{role}@", 1)
    saved = run_sumatra("long", as_owner, "p", export, "1000")
    assert saved.returncode == 0, saved.stderr[-2000:]


def test_missing_database_is_just_created(cli):
    name = f"smtm_test_{uuid.uuid4().hex[:12]}"
    url = pg_url_for(name)
    try:
        result = cli("drop-recreate", url, "--yes")
        assert result.code == 0, result
        assert "does not exist yet" in result.out
        assert database_facts(name)[0][1] == "UTF8"
    finally:
        drop_database(name)


@pytest.mark.parametrize(
    "tables",
    [
        ["CREATE TABLE invoices (id int PRIMARY KEY, total numeric)"],  # someone else's data
        [  # Sumatra-like, but in a layout smtmigrate cannot read (and so cannot back up)
            "CREATE TABLE django_store_record (id int PRIMARY KEY)",
            "CREATE TABLE django_store_project (id text PRIMARY KEY)",
        ],
    ],
    ids=["unrelated", "unknown-layout"],
)
def test_a_database_it_cannot_back_up_is_not_dropped(cli, pg_database, tables):
    for statement in tables:
        pg_query(pg_database, statement)
    pg_query(pg_database, f"INSERT INTO {tables[0].split()[2]} (id) VALUES (1)")
    result = cli("drop-recreate", pg_database, "--yes")
    assert result.code == 1, result
    assert "no Sumatra store smtmigrate can back up" in result.err
    assert "nothing was changed" in result.err
    assert pg_query(pg_database, f"SELECT count(*) FROM {tables[0].split()[2]}") == [(1,)]


def test_the_default_backup_name_is_a_plain_file_name(cli, store08, tmp_path, monkeypatch):
    """A database name may hold '/' (percent-encoded in the URL): the default backup is
    still one file in the working directory."""
    name = f"smtm_a/b c_{uuid.uuid4().hex[:8]}"
    admin_execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = pg_url_for(quote(name, safe=""))
    try:
        records = copied_store(cli, store08, url)
        workdir = tmp_path / "workdir"
        workdir.mkdir()
        monkeypatch.chdir(workdir)
        result = cli("drop-recreate", url, "--yes")
        assert result.code == 0, result
        (backup,) = workdir.iterdir()
        assert backup.name.startswith(f"smtm_a_b_c_{name[-8:]}-backup-")
        assert sqlite_rows(backup, "SELECT count(*) FROM django_store_record") == [(records,)]
    finally:
        drop_database(name)


def test_an_empty_database_without_sumatra_is_recreated(cli, pg_database):
    assert cli("drop-recreate", pg_database, "--yes", "--no-schema").code == 0
    result = cli("drop-recreate", pg_database, "--yes")
    assert result.code == 0, result
    assert "not a Sumatra store, no tables" in result.out
    assert pg_query(pg_database, "SELECT count(*) FROM django_store_record") == [(0,)]


@pytest.mark.parametrize("name", ["postgres", "template0", "template1"])
def test_maintenance_databases_are_refused(cli, name):
    result = cli("drop-recreate", pg_url_for(name), "--yes")
    assert result.code == 1
    assert "maintenance database" in result.err


def test_a_role_that_could_drop_but_not_create_is_stopped_before_the_drop(cli, role):
    name = f"smtm_test_{uuid.uuid4().hex[:12]}"
    admin_execute(
        sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(role))
    )
    try:
        url = pg_url_for(name).replace("://", f"://{role}@", 1)
        result = cli("drop-recreate", url, "--yes")
        assert result.code == 1
        assert "may not create databases" in result.err
        assert database_facts(name) == [(role, "UTF8")]  # still there
    finally:
        drop_database(name)


@pytest.mark.parametrize("environment", [None, "another password"])
def test_createdb_does_not_take_the_roles_password_from_the_url(cli, monkeypatch, environment):
    """It would otherwise create the role without it, or with another, unannounced."""
    name = f"smtm_test_{uuid.uuid4().hex[:12]}"
    url = pg_url_for(name).replace("://", "://smtm_nobody:url-secret@", 1)
    args = ["createdb", url, "--create-role"]
    if environment:
        monkeypatch.setenv("SMTM_TEST_PASSWORD", environment)
        args += ["--password-env", "SMTM_TEST_PASSWORD"]
    result = cli(*args)
    assert result.code == 2, result
    assert "taken from --password-env VAR only" in result.err
    assert "url-secret" not in result.out + result.err
    assert database_facts(name) == []
    assert pg_query(PG_URL, "SELECT 1 FROM pg_roles WHERE rolname = 'smtm_nobody'") == []


def test_createdb_with_a_new_role(cli, monkeypatch):
    role = f"smtm_role_{uuid.uuid4().hex[:8]}"
    name = f"smtm_test_{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("SMTM_TEST_PASSWORD", "correct horse battery staple")
    url = pg_url_for(name).replace("://", f"://{role}@", 1)
    try:
        result = cli("createdb", url, "--create-role", "--password-env", "SMTM_TEST_PASSWORD")
        assert result.code == 0, result
        assert "correct horse" not in result.out + result.err
        assert f":{name}:{role}:PASSWORD" in result.out
        assert "scram-sha-256" in result.out
        stored = pg_query(PG_URL, "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,))
        assert stored[0][0].startswith("SCRAM-SHA-256$")
        assert database_facts(name) == [(role, "UTF8")]
        assert pg_column_types(pg_url_for(name))["django_store_tag", "name"] == "text"
        again = cli("createdb", url)
        assert again.code == 1
        assert "exists" in again.err
    finally:
        drop_database(name)
        admin_execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.mark.parametrize("where", ["--backup", "cwd"])
@pytest.mark.slow
def test_drop_recreate_backup_where_it_cannot_be_written(
    cli, store08, pg_database, tmp_path, monkeypatch, where
):
    assert cli("copy", store08, pg_database, "--widen", "--verify", "rows").code == 0
    directory = tmp_path / "ro"
    directory.mkdir()
    args = ["drop-recreate", pg_database, "--yes"]
    with immutable(directory):
        if where == "--backup":
            args += ["--backup", str(directory / "backup.sqlite")]
        else:
            monkeypatch.chdir(directory)
        result = cli(*args)
    one_error_line(result, "drop-recreate", 2, f"{directory}: cannot write a new file here")
    assert pg_query(pg_database, "SELECT count(*) FROM django_store_record") == [(7,)]  # kept


@pytest.fixture(scope="module")
def small_source(tmp_path_factory, django_db_blocker) -> Path:
    """3k records: a backup that takes a few seconds, enough to interrupt it."""
    return generated_store(tmp_path_factory, django_db_blocker, 3_000, seed=5)


@pytest.fixture
def filled_pg(small_source, pg_database) -> str:
    loaded = subprocess.run(
        [*SMTMIGRATE, "copy", str(small_source), pg_database, "--widen", "--verify", "rows"],
        capture_output=True,
        text=True,
    )
    assert loaded.returncode == 0, loaded.stderr
    return pg_database


def record_count(url: str) -> int:
    return pg_query(url, "SELECT count(*) FROM django_store_record")[0][0]


@pytest.mark.slow
def test_ctrl_c_during_the_backup_drops_nothing(filled_pg, tmp_path):
    backup = tmp_path / "backup.sqlite"
    run = start_in_its_own_group("drop-recreate", filled_pg, "--yes", "--backup", str(backup))
    wait_for_line(run, "verify records …")
    os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C on a terminal does: the whole group
    _out, err = run.communicate(timeout=60)
    assert run.returncode == 130
    assert err.strip() == "smtmigrate drop-recreate: interrupted"
    assert record_count(filled_pg) == 3_000  # not dropped
    assert list(tmp_path.iterdir()) == []  # no backup, no hidden partial
    retry = subprocess.run(
        [*SMTMIGRATE, "drop-recreate", filled_pg, "--yes", "--backup", str(backup)],
        capture_output=True,
        text=True,
    )
    assert retry.returncode == 0, retry.stderr
    assert record_count(filled_pg) == 0
    assert sqlite_rows(backup, "SELECT count(*) FROM django_store_record") == [(3_000,)]


@pytest.mark.parametrize("moment", ["load …", "dropped "])
@pytest.mark.slow
def test_sigkill_during_drop_recreate_loses_no_record(filled_pg, tmp_path, moment):
    """Killed mid-backup: the database is intact, and the next run removes the partial
    file (under the default, timestamped name). Killed right after the drop: the backup is
    complete, and running drop-recreate again then copying the backup back restores it."""
    before = pg_query(filled_pg, RECORD_ROWS)
    run = start_in_its_own_group("drop-recreate", filled_pg, "--yes", cwd=tmp_path)
    wait_for_line(run, moment)
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=30)
    if moment == "load …":
        assert record_count(filled_pg) == 3_000
        assert [p.name[0] for p in tmp_path.iterdir()] == ["."]  # a hidden partial only
        time.sleep(1)  # the retry's backup gets another name (names hold the second)
    again = subprocess.run(
        [*SMTMIGRATE, "drop-recreate", filled_pg, "--yes"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert again.returncode == 0, again.stderr
    (backup,) = tmp_path.iterdir()  # one backup, complete; no partial left
    assert backup.name.startswith(filled_pg.rsplit("/", 1)[1] + "-backup-")
    assert sqlite_rows(backup, "SELECT count(*) FROM django_store_record") == [(3_000,)]
    restored = subprocess.run(
        [*SMTMIGRATE, "copy", str(backup), filled_pg, "--verify", "rows", "--quiet"],
        capture_output=True,
        text=True,
    )
    assert restored.returncode == 0, restored.stderr
    after = pg_query(filled_pg, RECORD_ROWS)
    assert sorted(after) == sorted(before)


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

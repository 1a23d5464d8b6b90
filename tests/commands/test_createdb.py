"""TODO docstring"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
from psycopg2 import sql

from ..conftest import (
    PG_URL,
    _database_exists,
    admin_execute,
    as_role,
    assert_error,
    pg_query,
    pg_url_for,
    start,
)

pytestmark = pytest.mark.pg


@pytest.fixture
def creator_admin() -> Iterator[str]:
    """A role with CREATEDB and CREATEROLE, not a superuser; removed with what it made."""
    name = f"smtm_creator_{os.getpid()}"
    admin_execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB CREATEROLE").format(sql.Identifier(name)))
    made = {"role": f"smtm_owner_{os.getpid()}", "database": f"smtm_db_{os.getpid()}"}
    yield name, made
    admin_execute(
        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(made["database"]))
    )
    for role in (made["role"], name):
        admin_execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.mark.slow
def test_createdb_create_role_by_an_admin_that_is_no_superuser(cli, creator_admin):
    admin, made = creator_admin
    target = pg_url_for(made["database"]).replace("://", f"://{made['role']}@", 1)
    result = cli(
        "createdb",
        target,
        "--create-role",
        "--admin",
        pg_url_for("postgres").replace("://", f"://{admin}@", 1),
    )
    assert result.code == 0, result
    owner = pg_query(
        PG_URL,
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
        (made["database"],),
    )
    assert owner == [(made["role"],)]
    tables = pg_query(
        pg_url_for(made["database"]),
        "SELECT DISTINCT tableowner FROM pg_tables WHERE tablename LIKE 'django_store_%%'",
    )
    assert tables == [(made["role"],)]
    # the admin keeps no membership it did not have before
    assert pg_query(PG_URL, "SELECT pg_has_role(%s, %s, 'MEMBER')", (admin, made["role"])) == [
        (False,)
    ]


@pytest.mark.slow
def test_createdb_interrupted_removes_the_role_and_database_it_made(creator_admin):
    """Ctrl-C once the database exists (while Sumatra's schema is built): what this run
    created goes, so that running it again starts afresh."""
    admin, made = creator_admin
    target = pg_url_for(made["database"]).replace("://", f"://{made['role']}@", 1)
    admin_url = pg_url_for("postgres").replace("://", f"://{admin}@", 1)
    createdb = start(
        "createdb", target, "--create-role", "--admin", admin_url, stdout=subprocess.PIPE
    )
    exists = "SELECT 1 FROM pg_database WHERE datname = %s"
    deadline = time.monotonic() + 60
    while not pg_query(PG_URL, exists, (made["database"],)):
        assert createdb.poll() is None and time.monotonic() < deadline, createdb.stderr.read()
        time.sleep(0.005)
    createdb.send_signal(signal.SIGINT)
    out, err = createdb.communicate(timeout=60)
    assert (createdb.returncode, err.strip()) == (130, "smtmigrate createdb: interrupted"), out
    assert pg_query(PG_URL, exists, (made["database"],)) == []
    assert pg_query(PG_URL, "SELECT 1 FROM pg_roles WHERE rolname = %s", (made["role"],)) == []


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

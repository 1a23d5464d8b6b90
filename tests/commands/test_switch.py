"""`smtmigrate switch` and `copy --switch`: the project follows its records, no password
ever lands in .smt/project, and `smt` itself sees the same records before and after."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import sql

from ..conftest import (
    immutable,
    one_error_line,
    pg_query,
    project_text,
    records_file,
    sqlite_rows,
)

SMT = str(Path(sys.executable).parent / "smt")


def smt(project: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    return subprocess.run(
        [SMT, *args], cwd=project, capture_output=True, text=True, env=env, timeout=timeout
    )


def smt_list(project: Path) -> list[str]:
    result = smt(project, "list")
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.split()


@pytest.mark.pg
@pytest.mark.slow
def test_switch_keeps_smt_list_and_puts_the_password_in_pgpass(cli, home, store08, pg_database):
    before = smt_list(store08)
    assert len(before) == 7
    original = (store08 / ".smt" / "project").read_bytes()
    assert cli("copy", store08, pg_database, "--widen").code == 0
    (home / ".pgpass").write_text("otherhost:5432:db:someone:keepme\n")
    os.chmod(home / ".pgpass", 0o600)
    with_password = pg_database.replace("://", "://root:pa:ss@w0rd@", 1)

    result = cli("switch", store08, with_password)
    assert result.code == 0, result
    project_text = (store08 / ".smt" / "project").read_text()
    assert "pa:ss@w0rd" not in project_text + result.out + result.err
    assert "root@127.0.0.1" in project_text
    pgpass = (home / ".pgpass").read_text().splitlines()
    assert pgpass[0] == "otherhost:5432:db:someone:keepme"  # kept
    assert pgpass[1].endswith(":root:pa\\:ss@w0rd")
    assert stat.S_IMODE((home / ".pgpass").stat().st_mode) == 0o600
    assert smt_list(store08) == before  # Sumatra reads the PostgreSQL store now

    back = cli("switch", store08, "--back")
    assert back.code == 0
    assert (store08 / ".smt" / "project").read_bytes() == original

    for _ in range(2):  # switching again adds no second line for the same database
        assert cli("switch", store08, with_password).code == 0
    assert len((home / ".pgpass").read_text().splitlines()) == 2


@pytest.mark.pg
@pytest.mark.slow
def test_switch_a_legacy_project(cli, home, store07, pg_database):
    labels = sorted(
        label
        for (label,) in sqlite_rows(records_file(store07), "SELECT label FROM django_store_record")
    )
    assert cli("copy", store07, pg_database, "--widen", "--switch", store07).code == 0
    assert "postgresql://" in (store07 / ".smt" / "project").read_text()
    assert sorted(smt_list(store07)) == labels  # Sumatra 0.8.1 could not open the 0.7 store


@pytest.mark.pg
def test_switch_refuses_a_store_with_other_records(cli, home, store08, store07, pg_database):
    assert cli("copy", store07, pg_database, "--widen").code == 0
    before = (store08 / ".smt" / "project").read_bytes()
    refused = cli("switch", store08, pg_database)
    assert refused.code == 1
    assert "does not hold the same records" in refused.err
    assert (store08 / ".smt" / "project").read_bytes() == before
    forced = cli("switch", store08, pg_database, "--force")
    assert forced.code == 0
    assert "switched anyway" in forced.out


@pytest.mark.parametrize("name", ["copy#1.sqlite", "copy?x.sqlite"])
@pytest.mark.slow
def test_switch_refuses_a_location_sumatra_would_misread(cli, home, store08, tmp_path, name):
    """Sumatra reads db_file with urlparse, as it is: a '#' or '?' in the path would send
    `smt` to another file, so the switch is refused before anything changes."""
    copy = tmp_path / name
    assert cli("copy", store08, copy, "--verify", "rows").code == 0
    before = (store08 / ".smt" / "project").read_bytes()
    refused = cli("switch", store08, copy, "--force")
    assert refused.code == 1
    assert "Sumatra would read" in refused.err and "nothing was changed" in refused.err
    assert (store08 / ".smt" / "project").read_bytes() == before
    assert not (store08 / ".smt" / "project.smtmigrate-backup").exists()
    # the same copy under a plain name is taken, and smt lists the same records from it
    plain = copy.rename(tmp_path / "copy.sqlite")
    labels = smt_list(store08)
    assert cli("switch", store08, plain).code == 0
    assert smt_list(store08) == labels


@pytest.mark.parametrize("command", ["switch", "copy"])
@pytest.mark.pg
def test_a_url_given_as_project_dir_is_named_as_such(cli, store08, pg_database, command):
    url = "postgresql://someone:s3cret@127.0.0.1/sumatra_db"
    args = [url, pg_database] if command == "switch" else [store08, pg_database, "--switch", url]
    result = cli(command, *args)
    assert result.code == 2, result
    assert result.err.strip() == (
        f"smtmigrate {command}: error: postgresql://someone:***@127.0.0.1/sumatra_db: "
        "PROJECT_DIR is a Sumatra project directory, not a store URL"
    )
    assert pg_query(pg_database, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [
        (0,)
    ]  # copy --switch stopped before copying


@pytest.mark.slow
def test_switch_when_smt_cannot_be_written(cli, home, store08, tmp_path):
    copy = tmp_path / "copy.sqlite"
    assert cli("copy", store08, copy, "--verify", "rows").code == 0
    before = project_text(store08)
    with immutable(store08 / ".smt"):
        result = cli("switch", store08, copy)
    one_error_line(result, "switch", 2, "cannot be written")
    assert project_text(store08) == before


@pytest.mark.pg
@pytest.mark.slow
def test_switch_with_a_password_when_pgpass_cannot_be_written(cli, home, store08, pg_database):
    assert cli("copy", store08, pg_database, "--widen", "--verify", "rows").code == 0
    before = project_text(store08)
    with immutable(home):
        result = cli("switch", store08, pg_database.replace("://", "://root:secret@", 1))
    one_error_line(result, "switch", 2, "/.pgpass: cannot be written")
    assert "secret" not in result.err
    assert project_text(store08) == before
    assert not (store08 / ".smt" / "project.smtmigrate-backup").exists()


@pytest.mark.slow
def test_the_original_project_file_survives_repeated_switches(cli, home, store08, tmp_path):
    original = (store08 / ".smt" / "project").read_bytes()
    copies = [tmp_path / "a.sqlite", tmp_path / "b.sqlite"]
    for copy in copies:
        assert cli("copy", store08, copy, "--verify", "rows").code == 0
    for copy in copies:  # a second switch must not save a file that names the first copy
        result = cli("switch", store08, copy)
        assert result.code == 0, result
    assert "kept" in result.out and "earlier switch" in result.out
    assert json.loads(project_text(store08))["record_store"]["db_file"] == str(copies[1])
    back = cli("switch", store08, "--back")
    assert back.code == 0, back
    assert (store08 / ".smt" / "project").read_bytes() == original


@pytest.mark.slow
def test_switch_to_the_store_the_project_names_changes_nothing(cli, home, store08):
    original = (store08 / ".smt" / "project").read_bytes()
    result = cli("switch", store08, records_file(store08))
    assert result.code == 0, result
    assert "already; nothing was changed" in result.out
    assert (store08 / ".smt" / "project").read_bytes() == original  # db_file stays relative
    assert not (store08 / ".smt" / "project.smtmigrate-backup").exists()


@pytest.mark.pg
@pytest.mark.slow
def test_switch_refuses_query_parameters_sumatra_ignores(cli, home, store08, pg_database):
    assert cli("copy", store08, pg_database, "--widen", "--verify", "rows").code == 0
    before = project_text(store08)
    result = cli("switch", store08, pg_database + "?sslmode=require", "--force")
    assert result.code == 1, result
    assert "Sumatra ignores the ?parameters" in result.err
    assert project_text(store08) == before


@pytest.mark.pg
@pytest.mark.slow
def test_switch_puts_the_password_where_libpq_takes_it(cli, home, store08, scram_server):
    """A password-checking server: after the switch, libpq connects with no password
    given, from ~/.pgpass, although an older catch-all line names another password."""
    dbname = f"smtm_pgpass_{os.getpid()}"
    admin = psycopg2.connect(scram_server.url("postgres", password=scram_server.password))
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(dbname)))
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    try:
        url = scram_server.url(dbname, password=scram_server.password)
        assert cli("copy", store08, url, "--widen", "--verify", "rows").code == 0
        (home / ".pgpass").write_text("# mine\n*:*:*:postgres:OLDPW\n")
        os.chmod(home / ".pgpass", 0o600)
        result = cli("switch", store08, url)
        assert result.code == 0, result
        assert "added the password" in result.out
        lines = (home / ".pgpass").read_text().splitlines()
        assert lines[0] == "# mine" and lines[2] == "*:*:*:postgres:OLDPW"  # kept, after ours
        # libpq's own lookup, against a server that checks it
        plain = psycopg2.connect(scram_server.url(dbname))
        plain.close()
    finally:
        with admin.cursor() as cursor:
            cursor.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
            )
        admin.close()

"""What a user types → a store, or one clear line and exit code 2."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from smtmigrate.errors import (
    LocationError,
    NotASumatraStore,
    UnsupportedStore,
)
from smtmigrate.locations import (
    DEFAULT_CONNECT_TIMEOUT,
    postgres_settings,
    redact_text,
    redact_url,
    resolve,
)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql://alice:s3cr%40t@db.example:5433/sumatra",
            "postgresql://alice:***@db.example:5433/sumatra",
        ),
        ("postgres://alice@localhost/sumatra", "postgres://alice@localhost/sumatra"),
        ("postgresql://a:b:c@h/d?sslmode=require", "postgresql://a:***@h/d?sslmode=require"),
        ("/plain/path", "/plain/path"),
    ],
)
def test_redact_url(url, expected):
    assert redact_url(url) == expected


def test_postgres_url_parts_are_unquoted_and_passed_to_libpq():
    settings = postgres_settings(
        "postgresql://us%3Aer:p%40ss%2Fw@[::1]:6543/my%20db?sslmode=disable&application_name=x"
    )
    assert settings["USER"] == "us:er"
    assert settings["PASSWORD"] == "p@ss/w"
    assert settings["HOST"] == "::1"
    assert settings["PORT"] == "6543"
    assert settings["NAME"] == "my db"
    assert settings["OPTIONS"]["sslmode"] == "disable"
    assert settings["OPTIONS"]["application_name"] == "x"
    assert int(settings["OPTIONS"]["connect_timeout"]) > 0


def test_postgres_url_without_parts_leaves_them_to_libpq(monkeypatch):
    monkeypatch.delenv("PGDATABASE", raising=False)
    settings = postgres_settings("postgresql:///sumatra")
    assert (settings["USER"], settings["PASSWORD"], settings["HOST"], settings["PORT"]) == (
        "",
        "",
        "",
        "",
    )
    socket = postgres_settings("postgresql://%2Fvar%2Frun%2Fpostgresql/db")
    assert socket["HOST"] == "/var/run/postgresql"
    with pytest.raises(LocationError, match="names no database"):
        postgres_settings("postgresql://localhost")
    monkeypatch.setenv("PGDATABASE", "fromenv")
    assert postgres_settings("postgresql://localhost")["NAME"] == "fromenv"


def test_store_display_never_holds_the_password():
    store = resolve("postgresql://bob:hunter2@localhost/db")
    assert "hunter2" not in store.display
    assert "hunter2" not in repr(store)
    assert store.describe_error(Exception("failed for hunter2")) == "failed for ***"


def _project(directory, record_store):
    (directory / ".smt").mkdir(parents=True)
    (directory / ".smt" / "project").write_text(
        json.dumps({"name": "p", "record_store": record_store})
    )
    return directory


def test_project_directory_with_relative_db_file(tmp_path):
    project = _project(
        tmp_path / "proj",
        {"type": "sumatra.recordstore.django_store.DjangoRecordStore", "db_file": ".smt/records"},
    )
    sqlite3.connect(project / ".smt" / "records").execute("CREATE TABLE t (x)").connection.close()
    store = resolve(str(project))
    assert store.kind == "sqlite"
    assert store.path == (project / ".smt" / "records").resolve()
    assert store.project_dir == project.resolve()
    assert store.project_name == "p"
    # the .smt directory itself is accepted too
    assert resolve(str(project / ".smt")).path == store.path


def test_project_directory_naming_postgres(tmp_path):
    project = _project(
        tmp_path,
        {
            "type": "sumatra.recordstore.django_store.DjangoRecordStore",
            "db_file": "postgresql://u:pw@localhost/sumatra",
        },
    )
    store = resolve(str(project))
    assert store.kind == "postgresql"
    assert store.display == "postgresql://u:***@localhost/sumatra"
    assert store.project_dir == project.resolve()


def test_sqlite_url(tmp_path):
    db = tmp_path / "r.db"
    sqlite3.connect(db).execute("CREATE TABLE t (x)").connection.close()
    assert resolve(f"sqlite://{db}").path == db


def test_sqlite_store_opens_read_only(tmp_path):
    db = tmp_path / "odd ?#% name.db"
    sqlite3.connect(db).execute("CREATE TABLE t (x)").connection.close()
    with resolve(str(db)) as store, store.connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM t")
        assert cursor.fetchone() == (0,)
        with pytest.raises(Exception, match="readonly"):
            cursor.execute("INSERT INTO t VALUES (1)")


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda p: p / "missing", LocationError, "no such file or directory"),
        (lambda p: p, LocationError, "not a Sumatra project"),
        (lambda p: (p / "empty").touch() or p / "empty", NotASumatraStore, "empty file"),
        (
            lambda p: (p / "rnd").write_bytes(bytes(range(256)) * 4) and p / "rnd",
            NotASumatraStore,
            "not an SQLite database",
        ),
    ],
)
def test_bad_paths(tmp_path, make, error, message):
    with pytest.raises(error, match=message):
        resolve(str(make(tmp_path)))


@pytest.mark.parametrize(
    ("store_type", "kind"),
    [
        ("sumatra.recordstore.shelve_store.ShelveRecordStore", "ShelveRecordStore"),
        ("sumatra.recordstore.http_store.HttpRecordStore", "HttpRecordStore"),
    ],
)
def test_other_record_store_types_are_refused(tmp_path, store_type, kind):
    project = _project(tmp_path, {"type": store_type, "shelf_name": "x"})
    with pytest.raises(UnsupportedStore, match=kind):
        resolve(str(project))


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u@h/db", "MySQL/MariaDB stores are not supported"),
        ("http://example.invalid/store", "HTTP record store"),
        ("ftp://x/y", "unknown scheme 'ftp'"),
        ("postgresql://h:notaport/db", "port 'notaport' is not a number"),
    ],
)
def test_bad_urls(url, message):
    with pytest.raises(LocationError, match=message):
        resolve(url)


@pytest.mark.parametrize(
    "setup",
    ["missing", "not-a-project", "empty", "random", "not-sumatra", "shelve", "badscheme"],
)
def test_cli_errors_are_one_line_with_exit_2(cli, tmp_path, setup):
    target = tmp_path / "x"
    if setup == "not-a-project":
        target.mkdir()
    elif setup == "empty":
        target.touch()
    elif setup == "random":
        target.write_bytes(b"\x00\xff" * 500)
    elif setup == "not-sumatra":
        sqlite3.connect(target).execute("CREATE TABLE t (x)").connection.close()
    elif setup == "shelve":
        _project(target, {"type": "sumatra.recordstore.shelve_store.ShelveRecordStore"})
    elif setup == "badscheme":
        target = "gopher://x/y"
    result = cli("audit", target)
    assert result.code == 2, result
    assert result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("smtmigrate audit: error: ")
    assert "Traceback" not in result.err


@pytest.mark.slow
def test_a_store_locked_by_a_writer_ends_in_one_line_after_a_bounded_wait(
    cli, store08, monkeypatch
):
    monkeypatch.setattr("smtmigrate.locations.SQLITE_LOCK_TIMEOUT", 2)  # 10 s for users
    writer = sqlite3.connect(store08 / ".smt" / "records", isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")  # an smt run in the middle of its commit
    started = time.monotonic()
    try:
        result = cli("audit", store08)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert 1.5 < time.monotonic() - started < 10  # waited for the lock, within the bound
    assert result.code == 2
    assert result.err.strip().endswith(
        "is locked by another writer (waited 2 s); try again when the running smt jobs "
        "have finished"
    )
    assert len(result.err.strip().splitlines()) == 1


def test_postgres_host_and_port_from_the_query_string_win(monkeypatch):
    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    settings = postgres_settings("postgresql://bob@ignored:1/db?host=%2Frun%2Fpg&port=5433")
    assert settings["HOST"] == "/run/pg"
    assert settings["PORT"] == "5433"
    assert settings["USER"] == "bob"
    assert settings["PASSWORD"] == ""
    assert settings["OPTIONS"] == {"connect_timeout": DEFAULT_CONNECT_TIMEOUT}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://u:pw@h:5x/db", "postgresql://u:***@h:5x/db: port '5x' is not a number"),
        ("postgresql://u:pw@[::1/db", "postgresql://u:***@[::1/db: malformed IPv6 address"),
    ],
)
def test_bad_postgres_urls_say_why_without_the_password(url, message):
    with pytest.raises(LocationError) as caught:
        postgres_settings(url)
    assert str(caught.value) == message


def test_mysql_urls_are_refused_by_name():
    with pytest.raises(UnsupportedStore, match=r"^mysql://u:\*\*\*@h/db: MySQL/MariaDB stores"):
        resolve("mysql://u:pw@h/db")


def test_redaction():
    assert redact_url("postgresql://u:p%40ss@h/db") == "postgresql://u:***@h/db"
    assert redact_text("failed for p@ss and p%40ss", "p@ss") == "failed for *** and ***"
    assert redact_text("nothing to hide", "") == "nothing to hide"

"""Unique identities (identities.py) on the tables Sumatra fills with get_or_create: what
they forbid is exactly what Sumatra's lookup cannot tell apart; a racing insert gets the
winner's row; parallel real `smt run`s writing outputs and sharing an input all finish on
stores made by createdb and move; `protect` repairs an unprotected store with duplicates.
Real servers, real Sumatra."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import datetime, timezone

import pytest
from psycopg2 import sql

from smtmigrate.identities import COLUMN, IDENTITY, index_name

from ..conftest import (
    admin_execute,
    drop_database,
    mariadb_execute,
    mariadb_url_for,
    pg_query,
    pg_url_for,
)
from ..parallel_runs import make_project, run_together

JOBS = 30  # parallel `smt run`s in the tests (100 measured by hand: docs page)
ENGINES = [
    pytest.param("postgresql", marks=pytest.mark.pg),
    pytest.param("mariadb", marks=pytest.mark.mariadb),
]


class Server:
    """One test database on one engine, read and written with the plain driver."""

    def __init__(self, kind: str, name: str) -> None:
        self.kind, self.name = kind, name
        self.url = pg_url_for(name) if kind == "postgresql" else mariadb_url_for(name)

    def query(self, statement: str, params: tuple = ()) -> list[tuple]:
        if self.kind == "postgresql":
            return pg_query(self.url, statement, params)
        return mariadb_execute(statement, params, database=self.name)

    def connect(self):
        """A raw connection of the driver's own (not autocommit)."""
        if self.kind == "postgresql":
            import psycopg2

            return psycopg2.connect(self.url)
        import MySQLdb

        return MySQLdb.connect(user="root", database=self.name, charset="utf8mb4")

    def drop(self) -> None:
        if self.kind == "postgresql":
            drop_database(self.name)
        else:
            from ..conftest import drop_mariadb_database

            drop_mariadb_database(self.name)

    def duplicate_rows(self) -> dict[str, int]:
        """Rows beyond the first of each identity, every table (NULL equal to NULL)."""
        found = {}
        for table, columns in IDENTITY.items():
            cols = ", ".join(f'"{c}"' if self.kind == "postgresql" else f"`{c}`" for c in columns)
            (extra,) = self.query(
                f"SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM {table} "
                f"GROUP BY {cols}) g"
            )[0]
            if int(extra):
                found[table] = int(extra)
        return found

    def drop_identities(self) -> None:
        """What a store made before identities existed (or by Sumatra itself) looks like."""
        for table in IDENTITY:
            if self.kind == "postgresql":
                self.query(f"DROP INDEX {index_name(table)}")
            else:
                self.query(f"ALTER TABLE {table} DROP COLUMN {COLUMN}")


@pytest.fixture(params=ENGINES)
def server(request):
    """An empty database (PostgreSQL: created; MariaDB: the copy creates it)."""
    server = Server(request.param, f"smtm_test_{uuid.uuid4().hex[:12]}")
    if server.kind == "postgresql":
        admin_execute(
            sql.SQL("CREATE DATABASE {} ENCODING 'UTF8'").format(sql.Identifier(server.name))
        )
    try:
        yield server
    finally:
        server.drop()


@pytest.fixture
def copied(cli, store08, server, home) -> Server:
    """The 0.8 fixture copied into the server: a copy builds the identities."""
    result = cli("copy", store08, server.url, "--widen")
    assert result.code == 0, result
    return server


def test_every_identity_name_fits_postgresql():
    assert all(len(index_name(table)) <= 63 for table in IDENTITY)


KEY = ("out/result.dat", "d" * 40, datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc), "{}")


def insert_key(server: Server, path: str, digest: str, creation, metadata: str) -> None:
    if server.kind == "mariadb" and creation is not None:
        creation = creation.replace(tzinfo=None)  # the store's UTC, as Django writes it
    server.query(
        "INSERT INTO django_store_datakey (path, digest, creation, metadata) "
        "VALUES (%s, %s, %s, %s)",
        (path, digest, creation, metadata),
    )


def test_the_identity_forbids_exactly_what_sumatra_cannot_tell_apart(copied):
    """One key, then keys Sumatra's `=` tells apart (case, a trailing space, a digest, a
    second, metadata) all go in; the same key again does not. NULL = NULL (Repository's
    upstream), NULL <> ''."""
    server = copied
    insert_key(server, *KEY)
    path, digest, creation, metadata = KEY
    for other in (
        (path.upper(), digest, creation, metadata),
        (path + " ", digest, creation, metadata),
        (path, "e" * 40, creation, metadata),
        (path, digest, creation.replace(second=6), metadata),
        (path, digest, creation, '{"mimetype": "text/plain"}'),
    ):
        insert_key(server, *other)
    with pytest.raises(Exception, match="smtmigrate_identity"):
        insert_key(server, *KEY)
    repository = "INSERT INTO django_store_repository (type, url, upstream) VALUES (%s, %s, %s)"
    server.query(repository, ("GitRepository", "/r", None))
    server.query(repository, ("GitRepository", "/r", ""))
    with pytest.raises(Exception, match="smtmigrate_identity"):
        server.query(repository, ("GitRepository", "/r", None))


def test_a_racing_insert_gets_the_winners_row(copied):
    """Sumatra's lookup (Django's get_or_create) while another job's INSERT of the same key
    is not committed yet: its get misses, its INSERT waits on the identity, fails once
    the other commits, and get_or_create answers with the winner's row."""
    from sumatra.recordstore.django_store.models import DataKey

    from smtmigrate.locations import resolve

    server = copied
    path, digest, creation, metadata = KEY
    outcome: dict = {}

    def lookup() -> None:
        try:
            with resolve(server.url, mariadb=True) as store:
                outcome["got"] = DataKey.objects.using(store.alias).get_or_create(
                    path=path, digest=digest, creation=creation, metadata=metadata
                )
        except Exception as exc:  # reported by the asserts below
            outcome["error"] = exc

    winner = server.connect()
    try:  # an open transaction left behind would hold the database's locks
        with winner.cursor() as cursor:
            value = creation.replace(tzinfo=None) if server.kind == "mariadb" else creation
            cursor.execute(
                "INSERT INTO django_store_datakey (path, digest, creation, metadata) "
                "VALUES (%s, %s, %s, %s)",
                (path, digest, value, metadata),
            )
        racer = threading.Thread(target=lookup)
        racer.start()
        time.sleep(1.5)
        waited = racer.is_alive()
        winner.commit()
    finally:
        winner.close()
    racer.join(30)
    assert waited, f"the racing insert did not wait on the identity: {outcome}"
    assert "error" not in outcome, outcome
    row, created = outcome["got"]
    assert created is False
    assert server.query(
        "SELECT id FROM django_store_datakey WHERE path = %s AND digest = %s", (path, digest)
    ) == [(row.pk,)]


def check_parallel_store(server: Server, outcome, first: int, jobs: int, records: int) -> None:
    assert outcome.finished == jobs, outcome.to_dict()
    assert server.query("SELECT count(*) FROM django_store_record")[0][0] == records
    outputs = {
        path
        for (path,) in server.query(
            "SELECT path FROM django_store_datakey WHERE output_from_record_id IS NOT NULL"
        )
    }
    assert {f"output_{n}.dat" for n in range(first, first + jobs)} <= outputs
    assert server.duplicate_rows() == {}


@pytest.mark.slow
@pytest.mark.solo
@pytest.mark.pg
def test_parallel_first_runs_on_a_createdb_store_all_finish(cli, tmp_path, home):
    """A new project's first runs, all at once, on a store `createdb` made: no shared row
    is created twice, every run and every output is recorded."""
    server = Server("postgresql", f"smtm_test_{uuid.uuid4().hex[:12]}")
    try:
        assert cli("createdb", server.url).code == 0
        project = make_project(tmp_path, server.url)
        outcome = run_together(project, JOBS)
        check_parallel_store(server, outcome, 0, JOBS, JOBS)
    finally:
        server.drop()


@pytest.mark.slow
@pytest.mark.solo
@pytest.mark.mariadb
def test_parallel_runs_after_a_move_onto_mariadb_all_finish(cli, tmp_path, home):
    """A project moved onto MariaDB (the move's copy builds the identities), then runs
    that write outputs and share an input, all at once."""
    server = Server("mariadb", f"smtm_test_{uuid.uuid4().hex[:12]}")
    try:
        project = make_project(tmp_path, None)
        assert run_together(project, 1, first=1000).finished == 1
        moved = cli("move", project, server.url, "--yes")
        assert moved.code == 0, moved
        outcome = run_together(project, JOBS)
        check_parallel_store(server, outcome, 0, JOBS, JOBS + 1)
    finally:
        server.drop()


def plant_duplicates(server: Server) -> dict[str, int]:
    """What racing runs leave in a store without identities, as real rows: a second copy
    of the shared input key (record 7's input re-pointed to it), of an output key given to
    another record (record 3: its output merges into record 2's), of an executable (record
    2 re-pointed), and a key of the same path with another digest (never merged). The new
    ids."""
    q = server.query
    cols = "path, digest, creation, metadata"
    q(
        f"INSERT INTO django_store_datakey ({cols}) "
        f"SELECT {cols} FROM django_store_datakey WHERE id = 1"
    )
    input_copy = q("SELECT max(id) FROM django_store_datakey")[0][0]
    q(
        "UPDATE django_store_record_input_data SET datakey_id = %s WHERE record_id = 7",
        (input_copy,),
    )
    q(
        f"INSERT INTO django_store_datakey ({cols}, output_from_record_id) "
        f"SELECT {cols}, 3 FROM django_store_datakey WHERE id = 2"
    )
    output_copy = q("SELECT max(id) FROM django_store_datakey")[0][0]
    q(
        f"INSERT INTO django_store_datakey ({cols}) SELECT path, %s, creation, metadata "
        "FROM django_store_datakey WHERE id = 1",
        ("0" * 40,),
    )
    other_digest = q("SELECT max(id) FROM django_store_datakey")[0][0]
    exe = "path, name, version, options"
    q(
        f"INSERT INTO django_store_executable ({exe}) "
        f"SELECT {exe} FROM django_store_executable WHERE id = 1"
    )
    exe_copy = q("SELECT max(id) FROM django_store_executable")[0][0]
    q("UPDATE django_store_record SET executable_id = %s WHERE db_id = 2", (exe_copy,))
    return {
        "input_copy": input_copy,
        "output_copy": output_copy,
        "other_digest": other_digest,
        "exe_copy": exe_copy,
    }


def test_protect_refuses_duplicates_then_dedupe_repairs_and_protects(cli, copied, tmp_path):
    server = copied
    server.drop_identities()
    audit = json.loads(cli("audit", server.url, "--format", "json").out)
    unprotected = {f["table"] for f in audit["findings"] if f["kind"] == "unprotected"}
    assert unprotected == set(IDENTITY)
    ids = plant_duplicates(server)
    assert server.duplicate_rows() == {"django_store_datakey": 2, "django_store_executable": 1}

    refused = cli("protect", server.url)
    assert refused.code == 1, refused
    assert "django_store_datakey (2 group(s), 2 extra row(s))" in refused.err
    assert "django_store_executable (1 group(s), 1 extra row(s))" in refused.err
    assert "--dedupe" in refused.err
    dry = cli("protect", server.url, "--dry-run")
    assert dry.code == 0 and "Would merge the duplicates" in dry.out, dry
    assert server.duplicate_rows() != {}

    done = cli("protect", server.url, "--dedupe", "--format", "json")
    assert done.code == 0, done
    result = json.loads(done.out)
    assert result["merged"] == {"django_store_datakey": 2, "django_store_executable": 1}
    assert result["moved_outputs"] == 1
    assert sorted(result["built"]) == sorted(IDENTITY)
    assert server.duplicate_rows() == {}
    keys = {
        row[0]: row[1]
        for row in server.query("SELECT id, output_from_record_id FROM django_store_datakey")
    }
    # the input: the lowest id kept, the link re-pointed; the output: the last save kept
    assert 1 in keys and ids["input_copy"] not in keys
    assert server.query(
        "SELECT datakey_id FROM django_store_record_input_data WHERE record_id = 7"
    ) == [(1,)]
    assert 2 not in keys and keys[ids["output_copy"]] == 3
    assert ids["other_digest"] in keys  # same path, another digest: another key
    assert server.query("SELECT executable_id FROM django_store_record WHERE db_id = 2") == [(1,)]

    again = cli("protect", server.url)
    assert again.code == 0 and "is protected: 8 table(s)" in again.out, again
    audit = json.loads(cli("audit", server.url, "--format", "json").out)
    assert not [f for f in audit["findings"] if f["kind"] in ("unprotected", "duplicate")]
    with pytest.raises(Exception, match="smtmigrate_identity"):
        plant_duplicates(server)


@pytest.mark.slow
@pytest.mark.solo
def test_runs_on_a_protected_store_with_duplicates_repaired(cli, copied, tmp_path):
    """After `protect --dedupe`, a fresh project's parallel runs on that store finish."""
    server = copied
    server.drop_identities()
    plant_duplicates(server)
    assert cli("protect", server.url, "--dedupe").code == 0
    project = make_project(tmp_path, server.url)
    before = server.query("SELECT count(*) FROM django_store_record")[0][0]
    outcome = run_together(project, 10)
    check_parallel_store(server, outcome, 0, 10, before + 10)

"""`smtmigrate copy` and `smtmigrate verify` on real stores and a real PostgreSQL."""

from __future__ import annotations

import json
import math
import sqlite3
import struct

import psycopg2
import psycopg2.extensions
import pytest

from smtmigrate.identities import IDENTITY, INDEX_PREFIX

from ..conftest import (
    FIXTURES,
    as_role,
    assert_error,
    immutable,
    one_error_line,
    pg_column_types,
    pg_query,
    project_text,
    public_tables,
    records_file,
    run_sumatra,
    sqlite_exec,
    sqlite_rows,
    sumatra_schema,
)
from ..storegen import generate_store


def sumatra_export(store: str) -> dict:
    """Every record as Sumatra 0.8.1 itself reads it back (in a process of its own)."""
    result = run_sumatra("export", store)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def without_microseconds(records: list[dict]) -> list[dict]:
    """`smt export` drops microseconds from timestamps; compare on what both hold."""
    for record in records:
        record["timestamp"] = record["timestamp"][:19]
    return sorted(records, key=lambda r: r["label"])


@pytest.mark.parametrize("generation", ["0.8", "0.7"])
@pytest.mark.pg
@pytest.mark.slow
def test_copy_then_sumatra_reads_every_record(cli, request, pg_database, generation):
    project = request.getfixturevalue(f"store{generation.replace('.', '')}")
    result = cli("copy", project, pg_database, "--widen")
    assert result.code == 0, result
    assert "Verified:" in result.out
    copied = sumatra_export(pg_database)
    (name,) = copied
    # The reference: the store's own `smt export`, written by the Sumatra that wrote it.
    decoded = run_sumatra("decode", str(FIXTURES / f"sumatra-{generation}" / "records_export.json"))
    expected = json.loads(decoded.stdout)
    assert without_microseconds(copied[name]) == without_microseconds(expected)
    assert (
        len(copied[name])
        == sqlite_rows(records_file(project), "SELECT count(*) FROM django_store_record")[0][0]
    )
    # django_migrations is what Sumatra expects: opening it created nothing new
    assert ("django_store", "0002_tag_taggeditem") in set(
        pg_query(pg_database, "SELECT app, name FROM django_migrations")
    )


@pytest.mark.pg
def test_overflow_refused_without_widen_and_target_untouched(cli, store08, pg_database):
    result = cli("copy", store08, pg_database)
    assert result.code == 1
    assert "Refused" in result.out
    # rich wraps the hint at the terminal width, wherever the temporary path makes it fall
    assert f"smtmigrate copy {store08} {pg_database} --widen" in " ".join(result.out.split())
    assert "overflow" in result.out
    assert public_tables(pg_database) == []


@pytest.mark.pg
@pytest.mark.slow
def test_widened_copy_takes_new_records_with_fresh_ids(cli, store08, pg_database):
    assert cli("copy", store08, pg_database, "--widen").code == 0
    (max_before,) = pg_query(pg_database, "SELECT max(db_id) FROM django_store_record")[0]
    export = str(FIXTURES / "sumatra-0.8" / "records_export.json")
    saved = run_sumatra("long", pg_database, "after-copy", export, "2000")
    assert saved.returncode == 0, saved.stderr[-2000:]
    ids = pg_query(
        pg_database, "SELECT db_id FROM django_store_record WHERE project_id = 'after-copy'"
    )
    assert ids == [(max_before + 1,)]


@pytest.mark.pg
def test_error_mid_copy_rolls_everything_back(cli, store08, pg_database, monkeypatch):
    # Bytes that are not UTF-8: SQLite keeps them, PostgreSQL rejects them.
    sqlite_exec(
        records_file(store08),
        "UPDATE django_store_record SET stdout_stderr = CAST(x'41ff42' AS TEXT) "
        "WHERE db_id = (SELECT max(db_id) FROM django_store_record)",
    )
    before = records_file(store08).read_bytes()
    refused = cli("copy", store08, pg_database, "--widen")  # the audit sees them first
    assert refused.code == 1, refused
    assert "not valid UTF-8" in refused.out
    assert public_tables(pg_database) == []
    # Were the audit to miss a value PostgreSQL rejects, the copy fails half-way: then
    # nothing may stay behind.
    monkeypatch.setattr("smtmigrate.copy.remaining_failures", lambda *args, **kwargs: [])
    result = cli("copy", store08, pg_database, "--widen")
    assert result.code == 2, result
    assert "nothing was written" in result.err
    assert 'invalid byte sequence for encoding "UTF8"' in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert public_tables(pg_database) == []
    assert records_file(store08).read_bytes() == before


@pytest.mark.pg
def test_non_empty_targets_are_refused(cli, store08, store07, pg_database):
    assert cli("copy", store08, pg_database, "--widen").code == 0
    tables = public_tables(pg_database)
    records = pg_query(pg_database, "SELECT count(*) FROM django_store_record")
    again = cli("copy", store07, pg_database, "--widen")
    assert again.code == 1
    assert "already holds Sumatra data" in again.err
    assert public_tables(pg_database) == tables
    assert pg_query(pg_database, "SELECT count(*) FROM django_store_record") == records


@pytest.mark.pg
def test_unrelated_database_refused(cli, store08, pg_database):
    pg_query(pg_database, "CREATE TABLE invoices (id int)")
    result = cli("copy", store08, pg_database, "--widen")
    assert result.code == 1
    assert "is not empty" in result.err
    assert public_tables(pg_database) == ["invoices"]


@pytest.mark.pg
def test_empty_sumatra_store_is_a_valid_target(cli, store08, sumatra_pg):
    result = cli("copy", store08, sumatra_pg, "--widen")
    assert result.code == 0, result
    assert pg_column_types(sumatra_pg)["django_store_record", "label"] == "text"


@pytest.mark.pg
def test_legacy_tags_land_with_the_targets_content_type(cli, store07, pg_database):
    assert cli("copy", store07, pg_database, "--widen").code == 0
    source_ct = sqlite_rows(
        records_file(store07),
        "SELECT id FROM django_content_type WHERE app_label = 'django_store' AND model = 'record'",
    )
    (target_ct,) = pg_query(
        pg_database,
        "SELECT id FROM django_content_type WHERE app_label = 'django_store' AND model = 'record'",
    )
    assert source_ct != [target_ct]  # the remapping is really exercised
    assert pg_query(
        pg_database, "SELECT DISTINCT content_type_id FROM django_store_taggeditem"
    ) == [target_ct]
    expected = sorted(
        sqlite_rows(
            records_file(store07),
            "SELECT r.label, t.name FROM tagging_taggeditem i "
            "JOIN tagging_tag t ON t.id = i.tag_id "
            "JOIN django_store_record r ON r.db_id = i.object_id",
        )
    )
    got = sorted(
        pg_query(
            pg_database,
            "SELECT r.label, t.name FROM django_store_taggeditem i "
            "JOIN django_store_tag t ON t.id = i.tag_id "
            "JOIN django_store_record r ON r.db_id = i.object_id",
        )
    )
    assert got == expected and len(got) > 10


@pytest.mark.pg
def test_timestamps_are_utc_whatever_the_database_timezone(cli, store08, pg_database):
    name = pg_database.rsplit("/", 1)[1]
    pg_query(pg_database, f"ALTER DATABASE \"{name}\" SET timezone TO 'Pacific/Chatham'")
    assert cli("copy", store08, pg_database, "--widen").code == 0
    source = sqlite_rows(
        records_file(store08), "SELECT label, timestamp FROM django_store_record ORDER BY label"
    )
    target = pg_query(
        pg_database,
        "SELECT label, to_char(timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') "
        "FROM django_store_record ORDER BY label",
    )
    assert [(label, ts.ljust(26, "0")) for label, ts in source] == target


FLOATS = [5e-324, -0.0, 1.7976931348623157e308, 0.1 + 0.2, 1 / 3, math.inf, -math.inf, 123.0]
TEXTS = ["tab\there", "new\nline", "back\\slash \\N", "é µ 🧪 中文", "", "'quotes\" ;--"]


@pytest.mark.pg
def test_floats_text_and_null_round_trip_exactly(cli, store08, pg_database):
    db = records_file(store08)
    ids = [i for (i,) in sqlite_rows(db, "SELECT db_id FROM django_store_record ORDER BY db_id")]
    conn = sqlite3.connect(db)
    for i, db_id in enumerate(ids):
        conn.execute(
            "UPDATE django_store_record SET duration = ?, reason = ?, repeats = ? WHERE db_id = ?",
            (FLOATS[i % len(FLOATS)], TEXTS[i % len(TEXTS)], [None, ""][i % 2], db_id),
        )
    conn.commit()
    conn.close()
    assert cli("copy", store08, pg_database, "--widen").code == 0
    source = sqlite_rows(db, "SELECT db_id, duration, reason, repeats FROM django_store_record")
    target = dict(
        (row[0], row[1:])
        for row in pg_query(
            pg_database,
            "SELECT db_id, float8send(duration), reason, repeats FROM django_store_record",
        )
    )
    for db_id, duration, reason, repeats in source:
        bits, target_reason, target_repeats = target[db_id]
        assert bytes(bits) == struct.pack(">d", duration)
        assert (target_reason, target_repeats) == (reason, repeats)
    assert {r for _, _, _, r in source} == {None, ""}


@pytest.mark.slow
def test_legacy_store_upgraded_into_a_new_sqlite_store(cli, store07, tmp_path):
    target = tmp_path / "upgraded.sqlite"
    result = cli("copy", store07, target)
    assert result.code == 0, result
    assert not list(tmp_path.glob(".upgraded.sqlite.*"))  # no partial file left behind
    migrations = sqlite_rows(
        target, "SELECT name FROM django_migrations WHERE app = 'django_store'"
    )
    assert migrations == [("0001_initial",), ("0002_tag_taggeditem",)]
    copied = sumatra_export(str(target))
    decoded = run_sumatra("decode", str(FIXTURES / "sumatra-0.7" / "records_export.json"))
    assert without_microseconds(next(iter(copied.values()))) == without_microseconds(
        json.loads(decoded.stdout)
    )
    existing = cli("copy", store07, target)
    assert existing.code == 1
    assert "exists" in existing.err


@pytest.mark.pg
def test_dry_run_writes_nothing(cli, store07, pg_database):
    result = cli("copy", store07, pg_database, "--widen", "--dry-run")
    assert result.code == 0, result
    assert "tagging_tag" in result.out and "django_store_tag" in result.out
    assert "Widening" in result.out
    assert public_tables(pg_database) == []


@pytest.mark.pg
def test_json_output(cli, store08, pg_database):
    result = cli("copy", store08, pg_database, "--widen", "--format", "json")
    assert result.code == 0, result
    data = json.loads(result.out)
    assert data["verification"]["ok"] is True
    rows = {t["table"]: t["rows"] for t in data["tables"]}
    assert rows["django_store_record"] == 7
    assert data["plan"]["widening"]
    assert "load" in data["phases"]


@pytest.mark.pg
def test_quiet_prints_nothing(cli, store08, pg_database):
    result = cli("copy", store08, pg_database, "--widen", "--quiet")
    assert (result.code, result.out, result.err) == (0, "", "")


@pytest.mark.pg
def test_password_never_shown(cli, store08, pg_database):
    url = pg_database.replace("://", "://root:sekrit-pw@", 1)  # trust auth ignores it
    for args in (("--dry-run",), ("--format", "json"), ()):
        result = cli("copy", store08, url, "--widen", *args)
        assert "sekrit-pw" not in result.out + result.err


@pytest.mark.pg
def test_verify_command(cli, store08, pg_database):
    assert cli("copy", store08, pg_database, "--widen").code == 0
    same = cli("verify", store08, pg_database)
    assert same.code == 0, same
    assert "Verified" in same.out
    conn = psycopg2.connect(pg_database)
    with conn, conn.cursor() as cursor:
        cursor.execute(
            "UPDATE django_store_dependency SET version = 'changed' "
            "WHERE id = (SELECT min(id) FROM django_store_dependency)"
        )
    conn.close()
    changed = cli("verify", store08, pg_database)
    assert changed.code == 1
    assert "django_store_dependency" in changed.out
    assert "FAILED" in changed.out


@pytest.mark.pg
def test_verify_rows_skips_the_record_level_check(cli, store08, pg_database):
    result = cli("copy", store08, pg_database, "--widen", "--verify", "rows", "--format", "json")
    assert result.code == 0, result
    verification = json.loads(result.out)["verification"]
    assert verification["ok"] is True
    assert verification["records"] is None
    assert {t["table"] for t in verification["tables"]} >= {"django_store_record"}


@pytest.mark.slow  # 1,200 records generated, copied and read back: seconds
@pytest.mark.parametrize("level", ["sample", "full"])
def test_the_default_reads_a_sample_of_records_through_sumatra_full_reads_them_all(
    cli, tmp_path, level
):
    generated = generate_store(tmp_path / "big.sqlite", 1_200, seed=2)
    target = tmp_path / "copy.sqlite"
    arguments = [] if level == "sample" else ["--verify", "full"]
    result = cli("copy", generated.path, target, *arguments, "--format", "json")
    assert result.code == 0, result
    records = json.loads(result.out)["verification"]["records"]
    if level == "sample":
        assert 1_000 <= records["compared"] <= 1_001 and records["sampled_from"] == 1_200
    else:
        assert (records["compared"], records["sampled_from"]) == (1_200, None)
    assert records["differences"] == []
    shown = cli("copy", generated.path, tmp_path / "again.sqlite", *arguments)
    sampled = "records identical through Sumatra (a sample of the 1,200)" in shown.out
    assert sampled == (level == "sample"), shown.out


@pytest.mark.pg
@pytest.mark.slow
def test_copy_switch_of_a_project_whose_store_is_not_source(
    cli, home, store08, store07, pg_database
):
    before = project_text(store08)
    result = cli("copy", store07, pg_database, "--widen", "--switch", store08)
    assert result.code == 1, result
    assert "the project's store is" in result.err and "nothing was written" in result.err
    assert public_tables(pg_database) == []  # nothing copied: a re-run is not refused
    assert project_text(store08) == before
    assert cli("copy", store07, pg_database, "--widen", "--switch", store07).code == 0


@pytest.mark.pg
@pytest.mark.slow
def test_copy_switch_into_a_project_whose_smt_cannot_be_written(cli, home, store08, pg_database):
    before = project_text(store08)
    with immutable(store08 / ".smt"):
        result = cli("copy", store08, pg_database, "--widen", "--switch", store08)
    one_error_line(result, "copy", 2, "cannot be written")
    assert public_tables(pg_database) == []
    assert project_text(store08) == before


@pytest.mark.slow
def test_copy_into_a_directory_that_cannot_be_written(cli, store08, tmp_path):
    directory = tmp_path / "ro"
    directory.mkdir()
    with immutable(directory):
        result = cli("copy", store08, directory / "copy.sqlite")
    one_error_line(result, "copy", 2, f"{directory}: cannot write a new file here")
    assert list(directory.iterdir()) == []


@pytest.mark.pg
@pytest.mark.slow
def test_copy_widen_builds_the_schema_of_the_widened_models(
    cli, store08, pg_database, widened_reference
):
    assert cli("copy", store08, pg_database, "--widen", "--verify", "rows").code == 0
    schema = sumatra_schema(pg_database)
    assert "django_store_record_project_id_8a4ecf6c_like" in str(schema["indexes"])
    # copy also builds the get_or_create identities (identities.py), which the models lack
    identities = {row[0] for row in schema["indexes"] if row[1].startswith(INDEX_PREFIX)}
    schema["indexes"] = [row for row in schema["indexes"] if not row[1].startswith(INDEX_PREFIX)]
    assert identities == set(IDENTITY)
    assert schema == widened_reference


@pytest.mark.pg
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

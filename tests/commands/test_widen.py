"""`smtmigrate widen`: plan, migration file, SQL, and apply on real PostgreSQL stores."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time

import psycopg2
import psycopg2.extensions
import pytest
import sqlparse

from smtmigrate.audit import audit
from smtmigrate.locations import resolve
from smtmigrate.schema import inspect_store, sumatra_tables
from smtmigrate.widen import MIGRATION_NAME, plan_widening

from ..conftest import (
    FIXTURES,
    ROOT,
    as_role,
    assert_error,
    grant,
    pg_column_types,
    pg_query,
    records_file,
    run_sumatra,
    sqlite_rows,
    sumatra_schema,
)

NATURE = {
    (table.name, name)
    for table in sumatra_tables().values()
    for name, column in table.columns.items()
    if column.unbounded_reason and not column.field.many_to_one
}


def test_text_policy_widens_exactly_the_columns_unbounded_by_nature():
    plan = plan_widening("text")
    widened = {(c.table, c.column) for c in plan.changes}
    assert widened == NATURE
    assert {
        ("django_store_record", "label"),
        ("django_store_record", "main_file"),
        ("django_store_record", "tags"),
        ("django_store_tag", "name"),
        ("django_store_project", "id"),
        ("django_store_launchmode", "parameters"),
    } <= widened
    kept = {(c.table, c.column) for c in plan.columns} - widened
    assert ("django_store_datakey", "digest") in kept  # a SHA-1 has a natural size
    assert all(c.new_type == "text" for c in plan.changes)


def test_fit_policy_sizes_from_the_data(store08):
    db = records_file(store08)
    with resolve(str(store08)) as store:
        inspection = inspect_store(store)
        report = audit(inspection)
        plan = plan_widening("fit", headroom=1.5, report=report, source=inspection)
        after = audit(inspection, limits=plan.limits())
    for change in plan.changes:
        values = [v for (v,) in sqlite_rows(db, f'SELECT "{change.column}" FROM "{change.table}"')]
        longest = max(len(v) for v in values if v)
        assert change.longest == longest
        assert change.new == math.ceil(longest * 1.5)
        assert change.new > change.current
    overflowing = {(f.table, f.column) for f in report.findings if f.kind == "overflow"}
    assert overflowing <= {(c.table, c.column) for c in plan.changes}
    assert ("django_store_datakey", "digest") not in {(c.table, c.column) for c in plan.changes}
    assert not [f for f in after.findings if f.kind == "overflow"]


@pytest.mark.parametrize("policy", ["text", "fit"])
def test_fields_altered_from_one_render_run_djangos_statements(policy, store08):
    """`_apply_altered_fields` (the models rendered once) runs exactly the statements of
    Django's own `Migration.apply` (rendered again before every operation), in order."""
    from smtmigrate.widen import _apply_altered_fields, _offline_editor, build_migration

    with resolve(str(store08)) as store:
        inspection = inspect_store(store)
        plan = plan_widening(policy, headroom=1.5, report=audit(inspection), source=inspection)
    migration = build_migration(plan)
    assert len(migration.operations) > 1
    collected = []
    for apply in (
        lambda editor: migration.apply(migration.initial_state.clone(), editor),
        lambda editor: _apply_altered_fields(migration, migration.initial_state, editor),
    ):
        with _offline_editor() as editor:
            apply(editor)
        collected.append(editor.collected_sql)
    assert collected[0] == collected[1]
    assert any("ALTER COLUMN" in statement for statement in collected[0])


def test_fit_needs_a_source(cli):
    result = cli("widen", "--policy", "fit")
    assert result.code == 2
    assert "give a SOURCE store" in result.err


@pytest.mark.pg
def test_apply_then_again_is_a_no_op(cli, sumatra_pg):
    before = pg_column_types(sumatra_pg)
    result = cli("widen", "--apply", sumatra_pg)
    assert result.code == 0, result
    assert "Widened 30 columns in one transaction" in result.out
    after = pg_column_types(sumatra_pg)
    for table, column in NATURE:
        assert before[table, column].startswith("character varying(")
        assert after[table, column] == "text"
    assert after["django_store_record", "project_id"] == "text"  # follows the key it references
    assert after["django_store_datakey", "digest"] == "character varying(40)"
    recorded = "SELECT name FROM django_migrations WHERE app = 'django_store' ORDER BY name"
    migrations = pg_query(sumatra_pg, recorded)
    assert migrations[-1] == (f"0003_{MIGRATION_NAME}",)

    again = cli("widen", "--apply", sumatra_pg)
    assert again.code == 0
    assert "Already widened" in again.out
    assert pg_column_types(sumatra_pg) == after
    assert pg_query(sumatra_pg, "SELECT count(*) FROM django_migrations") == [
        (len(migrations) + 2,)
    ]


@pytest.mark.pg
@pytest.mark.slow
def test_widened_store_takes_every_record_sumatra_can_produce(cli, sumatra_pg):
    assert cli("widen", "--apply", sumatra_pg).code == 0
    types = pg_column_types(sumatra_pg)
    for generation in ("0.8", "0.7"):
        export = FIXTURES / f"sumatra-{generation}" / "records_export.json"
        imported = run_sumatra("import", sumatra_pg, f"p{generation[-1]}", str(export))
        assert imported.returncode == 0, imported.stderr[-2000:]
        assert imported.stdout.strip() == "7"
    export = FIXTURES / "sumatra-0.8" / "records_export.json"
    long = run_sumatra("long", sumatra_pg, "long", str(export), "3000")
    assert long.returncode == 0, long.stderr[-2000:]
    # Sumatra's own migrate at start-up neither failed nor undid anything
    assert pg_column_types(sumatra_pg) == types
    assert pg_query(sumatra_pg, "SELECT count(*) FROM django_store_record") == [(15,)]


@pytest.mark.pg
@pytest.mark.slow
def test_without_widening_sumatra_rejects_the_long_record(sumatra_pg):
    export = FIXTURES / "sumatra-0.8" / "records_export.json"
    result = run_sumatra("long", sumatra_pg, "long", str(export), "3000")
    assert result.returncode != 0
    assert "value too long for type character varying" in result.stderr


@pytest.mark.pg
def test_drifted_store_is_brought_up_to_the_plan(cli, sumatra_pg, store08):
    pg_query(
        sumatra_pg, "ALTER TABLE django_store_dependency ALTER COLUMN version TYPE varchar(20)"
    )
    result = cli("widen", store08, "--policy", "fit", "--apply", sumatra_pg)
    assert result.code == 0, result
    types = pg_column_types(sumatra_pg)
    # the data's longest version is 40: 40 x 2 headroom, up from the drifted 20
    assert types["django_store_dependency", "version"] == "character varying(80)"
    assert types["django_store_record", "label"] == "character varying(300)"
    assert types["django_store_datakey", "digest"] == "character varying(40)"


@pytest.mark.pg
def test_refusals(cli, pg_database, store08):
    not_sumatra = cli("widen", "--apply", pg_database)
    assert not_sumatra.code == 1
    assert "not a Sumatra record store" in not_sumatra.err
    sqlite_target = cli("widen", "--apply", store08)
    assert sqlite_target.code == 2
    assert "widening applies to PostgreSQL stores" in sqlite_target.err
    unreachable = cli("widen", "--apply", "postgresql://u:topsecret@127.0.0.1:1/x")
    assert unreachable.code == 2
    assert "topsecret" not in unreachable.out + unreachable.err


@pytest.mark.pg
def test_password_never_shown(cli, sumatra_pg):
    with_password = sumatra_pg.replace("://", "://root:hunter2@", 1)  # trust auth ignores it
    result = cli("widen", "--apply", with_password)
    assert result.code == 0, result
    assert "hunter2" not in result.out + result.err
    assert "root:***@" in result.out


@pytest.mark.pg
def test_waits_for_running_jobs_then_retries(cli, sumatra_pg):
    holder = psycopg2.connect(sumatra_pg)
    with holder.cursor() as cursor:
        cursor.execute("LOCK TABLE django_store_tag IN ACCESS SHARE MODE")  # a reader mid-job
    released = threading.Timer(1.0, holder.rollback)
    released.start()
    started = time.monotonic()
    try:
        result = cli("widen", "--apply", sumatra_pg, "--lock-timeout", "0.2")
    finally:
        released.join()
        holder.close()
    assert result.code == 0, result
    assert time.monotonic() - started >= 1.0, result.out
    assert pg_column_types(sumatra_pg)["django_store_tag", "name"] == "text"


@pytest.mark.pg
def test_gives_up_cleanly_when_the_lock_never_comes(cli, sumatra_pg, monkeypatch):
    pauses: list[float] = []  # the back-off between attempts, recorded instead of waited
    monkeypatch.setattr("smtmigrate.widen_apply.time.sleep", pauses.append)
    holder = psycopg2.connect(sumatra_pg)
    try:
        with holder.cursor() as cursor:
            cursor.execute("LOCK TABLE django_store_record IN ACCESS SHARE MODE")
        result = cli("widen", "--apply", sumatra_pg, "--lock-timeout", "0.05")
    finally:
        holder.close()
    assert result.code == 1
    assert len(pauses) >= 2 and pauses == sorted(pauses) and pauses[0] > 0  # backs off
    assert "could not lock the tables" in result.err
    assert pg_column_types(sumatra_pg)["django_store_tag", "name"] == "character varying(50)"


@pytest.mark.pg
def test_sql_parses_and_names_every_widened_column(cli, sumatra_pg):
    offline = cli("widen", "--sql")
    assert offline.code == 0
    statements = [s for s in sqlparse.parse(offline.out) if str(s).strip()]
    kinds = [s.get_type() for s in statements]
    assert kinds.count("ALTER") >= len(NATURE)
    assert set(kinds) <= {"ALTER", "CREATE", "DROP", "UNKNOWN"}  # UNKNOWN: SET CONSTRAINTS
    for table, column in NATURE:
        assert f'ALTER TABLE "{table}"\nALTER COLUMN "{column}" TYPE text' in offline.out, column
    # The SQL made without a server is the SQL made against a real Sumatra store...
    online = cli("widen", "--sql", "--apply", sumatra_pg)
    assert online.code == 0
    assert online.out.splitlines()[1:] == offline.out.splitlines()[1:]
    # ...and --sql applied nothing.
    assert pg_column_types(sumatra_pg)["django_store_record", "label"] == "character varying(100)"
    # It runs as printed.
    pg_query(sumatra_pg, offline.out)
    assert pg_column_types(sumatra_pg)["django_store_record", "label"] == "text"


@pytest.mark.pg
@pytest.mark.slow
def test_written_migration_applies_with_migrate(cli, tmp_path, pg_database, widened_reference):
    package = tmp_path / "widened_migrations"
    result = cli("widen", "--write", package)
    assert result.code == 0, result
    assert (package / f"0003_{MIGRATION_NAME}.py").is_file()
    (tmp_path / "widened_settings.py").write_text(
        "SECRET_KEY = 'x'\n"
        "INSTALLED_APPS = ['django.contrib.contenttypes', 'sumatra.recordstore.django_store']\n"
        "MIGRATION_MODULES = {'django_store': 'widened_migrations'}\n"
        "USE_TZ = True\n"
        f"DATABASES = {{'default': {{'ENGINE': 'django.db.backends.postgresql', "
        f"'NAME': {pg_database.rsplit('/', 1)[1]!r}, 'HOST': '127.0.0.1'}}}}\n"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "widened_settings",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
    }
    migrate = subprocess.run(
        [sys.executable, "-m", "django", "migrate", "--no-input"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert migrate.returncode == 0, migrate.stderr
    assert f"Applying django_store.0003_{MIGRATION_NAME}... OK" in migrate.stdout
    types = pg_column_types(pg_database)
    assert all(types[key] == "text" for key in NATURE)
    # every index and constraint too: those of the widened models built afresh
    assert sumatra_schema(pg_database) == widened_reference
    # the store that migrate built is one smtmigrate recognises as already widened
    assert "Already widened" in cli("widen", "--apply", pg_database).out


@pytest.mark.pg
@pytest.mark.slow
def test_widen_apply_gives_the_schema_of_the_widened_models(cli, sumatra_pg, widened_reference):
    assert cli("widen", "--apply", sumatra_pg).code == 0
    assert sumatra_schema(sumatra_pg) == widened_reference


@pytest.mark.pg
def test_widen_apply_by_a_role_that_does_not_own_the_tables(cli, sumatra_pg, make_role):
    role = make_role()
    grant(sumatra_pg, "GRANT SELECT ON ALL TABLES IN SCHEMA public", role[0])
    before = pg_column_types(sumatra_pg)
    result = cli("widen", "--apply", as_role(sumatra_pg, role))
    assert_error(result, "widen", "must be owner of table", secrets=(role[1],))
    assert pg_column_types(sumatra_pg) == before

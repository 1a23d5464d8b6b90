"""Every Sumatra store generation since 0.4: detected from its schema, copied into today's
(0.8) schema in PostgreSQL and SQLite, read back by Sumatra 0.8.1 exactly as the old
release itself read it (its own `smt export`), and the audit predicting every copy."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from smtmigrate.errors import UnknownLayout
from smtmigrate.locations import resolve
from smtmigrate.schema import (
    LAYOUT_04,
    LAYOUT_05,
    LAYOUT_06,
    LAYOUT_07,
    LAYOUT_08,
    OUTPUT_LINKS,
    detect_layout,
    inspect_store,
)

from ..commands.test_copy import sumatra_export, without_microseconds
from ..conftest import (
    FIXTURES,
    copy_fixture,
    fresh_database,
    records_file,
    run_sumatra,
    sqlite_exec,
    sqlite_rows,
)

SMT = str(Path(sys.executable).parent / "smt")
LAYOUTS = {"0.4": LAYOUT_04, "0.5": LAYOUT_05, "0.6": LAYOUT_06, "0.7": LAYOUT_07, "0.8": LAYOUT_08}
OLD = [g for g in ("0.4", "0.5", "0.6") if (FIXTURES / f"sumatra-{g}").is_dir()]
ALL = [*OLD, "0.7", "0.8"]
# Project name → the old release's own export, per fixture (fixtures/README.md)
PROJECTS = {
    g: {f"fixture{g.replace('.', '')}": "records_export.json"}
    | (
        {f"fixture{g.replace('.', '')}b": "second_project/records_export.json"}
        if g in ("0.4", "0.5", "0.6")
        else {}
    )
    for g in LAYOUTS
}


@contextmanager
def target_of(kind: str, tmp_path: Path):
    if kind == "postgresql":
        with fresh_database() as url:
            yield url
    else:
        yield str(tmp_path / "new.sqlite")


def test_the_fixtures_cover_the_old_generations():
    assert OLD == ["0.4", "0.5", "0.6"]


@pytest.mark.parametrize("generation", ALL)
@pytest.mark.slow
def test_layout_is_detected_from_the_schema(tmp_path, generation):
    project = copy_fixture(generation, tmp_path)
    with resolve(str(project)) as store:
        assert inspect_store(store).layout == LAYOUTS[generation]


@pytest.mark.parametrize("generation", ALL)
def test_sqlite_introspection_is_djangos_without_sqlparse(generation):
    """The SQLite engine's columns and unique sets (PRAGMAs) are Django's introspection's
    (which parses every CREATE TABLE with sqlparse), but where Django's parse misreads a
    syncdb-era table constraint `UNIQUE ("a", "b")` as the column set {"UNIQUE"}: there
    the index SQLite made for it names the real columns."""
    from smtmigrate.engines.base import Engine

    misread = frozenset({"UNIQUE"})
    with resolve(str(FIXTURES / f"sumatra-{generation}")) as store:
        inspection = inspect_store(store)  # 0.4-0.6: with its TEMP views
        connection, engine = store.connection, store.engine
        with connection.cursor() as cursor:
            for name in sorted(inspection.table_names):
                django = connection.introspection.get_table_description(cursor, name)
                assert engine.table_description(connection, cursor, name) == [
                    info._replace(collation=None) for info in django
                ], name
                djangos = Engine.unique_sets(engine, connection, cursor, name)
                ours = engine.unique_sets(connection, cursor, name)
                if misread in djangos:
                    assert generation != "0.8"
                    cursor.execute(f"PRAGMA index_list({engine.quote_name(name)})")
                    autoindexes = [row for row in cursor.fetchall() if row[3] == "u"]
                    assert len(autoindexes) == 1, name
                    assert djangos - {misread} < ours and len(ours) == len(djangos), name
                else:
                    assert ours == djangos, name


def test_layout_rules():
    base = {"django_store_record", "tagging_tag", OUTPUT_LINKS}
    old = {
        "django_store_datakey": ["id", "path", "digest", "metadata"],
        "django_store_dependency": ["id", "name", "source"],
        "django_store_record": ["db_id", "label"],
    }
    assert detect_layout(base, set(), "s", old) == LAYOUT_05
    assert detect_layout(base, set(), "s", {**old, "django_store_dependency": ["id"]}) == LAYOUT_04
    with_repeats = {**old, "django_store_record": ["db_id", "repeats"]}
    assert detect_layout(base, set(), "s", with_repeats) == LAYOUT_06
    new = {**old, "django_store_datakey": ["id", "output_from_record_id"]}
    assert detect_layout(base - {OUTPUT_LINKS}, set(), "s", new) == LAYOUT_07
    with pytest.raises(UnknownLayout, match="output links: none"):
        # outputs neither in an M2M table nor in DataKey: nothing to read them from
        detect_layout(base - {OUTPUT_LINKS}, set(), "s", old)
    with pytest.raises(UnknownLayout):  # both: no release wrote that
        detect_layout(base, set(), "s", new)


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
@pytest.mark.parametrize("generation", OLD)
@pytest.mark.pg
@pytest.mark.slow
def test_copy_reads_back_as_the_old_release_read_it(cli, tmp_path, generation, kind):
    project = copy_fixture(generation, tmp_path)
    with target_of(kind, tmp_path) as target:
        result = cli("copy", project, target, *(["--widen"] if kind == "postgresql" else []))
        assert result.code == 0, result
        assert "Verified:" in result.out
        assert OUTPUT_LINKS not in result.out  # carried into DataKey, not "skipped"
        copied = sumatra_export(target)
    assert sorted(copied) == sorted(PROJECTS[generation])
    for name, export in PROJECTS[generation].items():
        decoded = run_sumatra("decode", str(FIXTURES / f"sumatra-{generation}" / export))
        assert decoded.returncode == 0, decoded.stderr[-2000:]
        expected = json.loads(decoded.stdout)
        assert expected  # the release's export holds records
        if generation == "0.4":
            # Known difference: 0.4.0's DataKey has no Meta.ordering (0.5 added "path"), so its
            # export lists a record's keys in database order; Sumatra 0.8.1 orders by path.
            for record in expected:
                for keys in ("input_data", "output_data"):
                    record[keys].sort(key=lambda key: key["path"])
        assert without_microseconds(copied[name]) == without_microseconds(expected)


@pytest.mark.parametrize("generation", OLD)
@pytest.mark.slow
def test_shared_output_keys_become_one_key_per_record(cli, tmp_path, generation):
    """Old releases share one DataKey row between records with equal outputs; today a key
    names one record. Each (record, key) output link becomes its own DataKey row."""
    project = copy_fixture(generation, tmp_path)
    source = records_file(project)
    target = tmp_path / "new.sqlite"
    plan = json.loads(cli("copy", project, target, "--dry-run", "--format", "json").out)["plan"]
    assert OUTPUT_LINKS in plan["folded"] and OUTPUT_LINKS not in plan["skipped"]
    assert cli("copy", project, target).code == 0
    verified = cli("verify", project, target)  # the verify command reads the old layout too
    assert verified.code == 0, verified
    assert "Verified: 15 tables" in verified.out
    links = sqlite_rows(
        source,
        f"SELECT l.record_id, k.path, k.digest, k.metadata, k.id FROM {OUTPUT_LINKS} l "
        "JOIN django_store_datakey k ON k.id = l.datakey_id ORDER BY l.datakey_id, l.record_id",
    )
    shared = {key for *_, key in links if sum(k == key for *_, k in links) > 1}
    assert shared, "the fixture has outputs shared by several records"
    outputs = sqlite_rows(
        target,
        "SELECT output_from_record_id, path, digest, metadata, id FROM django_store_datakey "
        "WHERE output_from_record_id IS NOT NULL",
    )
    assert sorted(o[:4] for o in outputs) == sorted(link[:4] for link in links)
    # the lowest record keeps the original row and id; copies get ids above the old max
    (old_count, old_max) = sqlite_rows(
        source, "SELECT count(*), max(id) FROM django_store_datakey"
    )[0]
    firsts = {}
    for record, *_, key in links:
        firsts.setdefault(key, record)
    by_id = {o[4]: o[0] for o in outputs}
    assert all(by_id[key] == record for key, record in firsts.items())
    extra = [o for o in outputs if o[4] > old_max]
    assert len(extra) == len(links) - len(firsts)
    assert sqlite_rows(target, "SELECT count(*) FROM django_store_datakey")[0][
        0
    ] == old_count + len(extra)
    # inputs still point at the same keys
    inputs = "SELECT record_id, datakey_id FROM django_store_record_input_data ORDER BY 1, 2"
    assert sqlite_rows(target, inputs) == sqlite_rows(source, inputs)


@pytest.mark.parametrize("generation", OLD)
@pytest.mark.slow
def test_sumatra_081_smt_list_opens_the_new_sqlite_store(cli, tmp_path, generation):
    project = copy_fixture(generation, tmp_path)
    expected = sorted(
        r[0] for r in sqlite_rows(records_file(project), "SELECT label FROM django_store_record")
    )
    new = tmp_path / "new.sqlite"
    assert cli("copy", project, new).code == 0
    shutil.copyfile(new, records_file(project))  # the project now uses the new store
    second = project / "second_project" / ".smt" / "project"
    data = json.loads(second.read_text(encoding="utf-8"))
    data["default_executable"]["path"] = sys.executable  # as copy_fixture does for the first
    second.write_text(json.dumps(data, indent=2), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    listed = []
    for directory in (project, project / "second_project"):
        result = subprocess.run(
            [SMT, "list"], cwd=directory, capture_output=True, text=True, env=env, timeout=120
        )
        assert result.returncode == 0, result.stderr[-2000:]
        listed += result.stdout.split()
    assert sorted(listed) == expected


def _trim_overflows(cli, project: Path) -> None:
    """Cut every value the audit finds too long down to its limit (a store that fits)."""
    report = json.loads(cli("audit", project, "--format", "json").out)
    for finding in report["findings"]:
        if finding["kind"] == "overflow":
            table, column, limit = finding["table"], finding["column"], int(finding["limit"])
            sqlite_exec(
                records_file(project),
                f'UPDATE "{table}" SET "{column}" = substr("{column}", 1, {limit}) '
                f'WHERE length("{column}") > {limit}',
            )


# name → (fixture, how to change it, the audit's expected failing kinds)
ORACLE_CASES = {
    **{f"fixture-{g}": (g, None, {"overflow"}) for g in ALL},
    "0.5-trimmed-to-fit": ("0.5", _trim_overflows, set()),
    "0.6-trimmed-to-fit": ("0.6", _trim_overflows, set()),
    "0.5-output-link-to-a-missing-key": (
        "0.5",
        lambda cli, p: sqlite_exec(
            records_file(p), f"INSERT INTO {OUTPUT_LINKS} (record_id, datakey_id) VALUES (1, 999)"
        ),
        {"overflow", "invalid"},
    ),
    "0.4-output-link-of-a-missing-record": (
        "0.4",
        lambda cli, p: sqlite_exec(
            records_file(p), f"INSERT INTO {OUTPUT_LINKS} (record_id, datakey_id) VALUES (999, 2)"
        ),
        {"overflow", "invalid"},
    ),
    "0.5-unknown-layout": (  # outputs neither in the M2M table nor in DataKey
        "0.5",
        lambda cli, p: sqlite_exec(records_file(p), f"DROP TABLE {OUTPUT_LINKS}"),
        {"invalid"},
    ),
}


@pytest.mark.parametrize("case", ORACLE_CASES)
@pytest.mark.pg
def test_the_audit_is_the_copys_oracle(cli, tmp_path, case):
    """audit exit 0 ⇔ copy succeeds without --widen; audit exit 1 with only overflows ⇔
    copy --widen succeeds; anything else (invalid data, unknown layout) fails both."""
    generation, change, expected_kinds = ORACLE_CASES[case]
    project = copy_fixture(generation, tmp_path)
    if change is not None:
        change(cli, project)
    audited = cli("audit", project, "--format", "json")
    report = json.loads(audited.out)
    failing = {f["kind"] for f in report["findings"] if f["kind"] in ("overflow", "invalid")}
    assert failing == expected_kinds, report["findings"]
    assert audited.code == (1 if failing else 0)
    if case == "0.5-unknown-layout":
        assert "unknown layout" in report["findings"][0]["detail"]
    with fresh_database() as url:
        plain = cli("copy", project, url)
        assert (plain.code == 0) == (audited.code == 0), plain
        if plain.code != 0:  # refused or failed: nothing was written, the target is still empty
            widened = cli("copy", project, url, "--widen")
            assert (widened.code == 0) == (failing == {"overflow"}), widened


@pytest.mark.parametrize("generation", OLD)
def test_every_overlong_value_of_an_old_store_is_reported_exactly(generation, tmp_path):
    """The audit of a 0.4-0.6 store against today's limits, checked with plain sqlite3 on
    the store's own tables: rows counted as the target will hold them (a DataKey that is
    the output of n records is n rows there)."""
    from smtmigrate.audit import audit
    from smtmigrate.schema import LEGACY_TABLES, sumatra_tables

    project = copy_fixture(generation, tmp_path)
    db = records_file(project)
    stored_names = {v: k for k, v in LEGACY_TABLES.items()}
    links = dict(
        sqlite_rows(db, f"SELECT datakey_id, count(*) FROM {OUTPUT_LINKS} GROUP BY datakey_id")
    )
    expected = {}
    for model_table, table in sumatra_tables().items():
        stored = stored_names.get(model_table, model_table)
        present = {row[1] for row in sqlite_rows(db, f'PRAGMA table_info("{stored}")')}
        for name, column in table.columns.items():
            if not column.is_text or column.max_length is None or name not in present:
                continue
            key = "id" if model_table == "django_store_datakey" else "NULL"
            query = f'SELECT "{name}", {key} FROM "{stored}" WHERE "{name}" <> \'\''
            rows = sqlite_rows(db, query)
            over = [(v, k) for v, k in rows if len(v) > column.max_length]
            if over:
                expected[(stored, name)] = (
                    column.max_length,
                    max(len(v) for v, _ in rows),
                    sum(max(1, links.get(k, 1)) for _, k in over),
                )
    assert {("django_store_record", "label"), ("tagging_tag", "name")} <= expected.keys()
    with resolve(str(project)) as store:
        report = audit(inspect_store(store))
    found = {
        (f.table, f.column): (f.limit, f.max_length, f.rows)
        for f in report.findings
        if f.kind == "overflow"
    }
    assert found == expected

"""Rows Sumatra's get_or_create cannot tell apart: the audit finds them (exact groups), copy
refuses them, `copy --dedupe` merges them and a real `smt run` works again afterwards.

Duplicates are made the way concurrent first runs leave them: extra rows with the same
values, and records pointing at either. The expected groups are computed here in Python
from plain sqlite3/psycopg2 reads, independently of smtmigrate's GROUP BY.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from smtmigrate.dedupe import IDENTITY, sumatra_identity

from ..conftest import pg_query, records_file, run_sumatra, sqlite_exec, sqlite_rows

SMT = str(Path(sys.executable).parent / "smt")

# Planted in the 0.8 fixture (see `plant_duplicates`): today's table → groups of ids.
PLANTED = {
    "django_store_executable": [(1, 3)],
    "django_store_datastore": [(2, 10)],
    "django_store_dependency": [(2, 4), (5, 6)],
    "django_store_platforminformation": [(1, 2)],
    "django_store_repository": [(1, 2)],
    "django_store_launchmode": [(1, 2, 3)],
    "django_store_parameterset": [(14, 15)],
}


def copy_row(table: str, row_id: int, columns: tuple[str, ...]) -> str:
    cols = ", ".join(columns)
    return f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {table} WHERE id = {row_id}"


def plant_duplicates(db: Path) -> None:
    """What concurrent first runs leave behind, with plain SQL, plus near-duplicates that
    Sumatra's exact lookup tells apart (and NULL = NULL, as Django's `field=None`)."""
    ident = {t.removeprefix("django_store_"): c for t, c in IDENTITY.items()}
    executable = ", ".join(ident["executable"])
    sqlite_exec(
        db,
        copy_row("django_store_executable", 1, ident["executable"]),  # id 3
        "UPDATE django_store_record SET executable_id = 3 WHERE db_id IN (3, 6)",
        # a trailing space and another case are other values to Sumatra: ids 4 and 5
        f"INSERT INTO django_store_executable ({executable}) "
        "SELECT path || ' ', name, version, options FROM django_store_executable WHERE id = 1",
        f"INSERT INTO django_store_executable ({executable}) "
        "SELECT path, upper(name), version, options FROM django_store_executable WHERE id = 1",
        copy_row("django_store_datastore", 2, ident["datastore"]),  # id 10
        "UPDATE django_store_record SET input_datastore_id = 10 WHERE db_id = 7",
        copy_row("django_store_dependency", 2, ident["dependency"]),  # id 4
        # record 1 linked to both: one link once merged; record 5 to the copy only
        "INSERT INTO django_store_record_dependencies (record_id, dependency_id) VALUES (1, 4)",
        "UPDATE django_store_record_dependencies SET dependency_id = 4 "
        "WHERE record_id = 5 AND dependency_id = 2",
        # NULL source twice (one group, ids 5, 6) and '' once (not in it, id 7)
        "INSERT INTO django_store_dependency (name, path, version, diff, source, module) "
        "VALUES ('numpy', '/np', '2.0', '', NULL, 'python'), "
        "('numpy', '/np', '2.0', '', NULL, 'python'), ('numpy', '/np', '2.0', '', '', 'python')",
        "INSERT INTO django_store_record_dependencies (record_id, dependency_id) VALUES (4, 6)",
        copy_row("django_store_platforminformation", 1, ident["platforminformation"]),  # id 2
        "UPDATE django_store_record_platforms SET platforminformation_id = 2 WHERE record_id = 5",
        copy_row("django_store_repository", 1, ident["repository"]),  # id 2
        "UPDATE django_store_record SET repository_id = 2 WHERE db_id = 2",
        copy_row("django_store_launchmode", 1, ident["launchmode"]),  # id 2
        copy_row("django_store_launchmode", 1, ident["launchmode"]),  # id 3
        "UPDATE django_store_record SET launch_mode_id = 3 WHERE db_id = 4",
        copy_row("django_store_parameterset", 14, ident["parameterset"]),  # id 15, unused
        # two records of the project with one label: reported, not merged
        "UPDATE django_store_record SET label = "
        "(SELECT label FROM django_store_record WHERE db_id = 3) WHERE db_id = 6",
    )


def python_groups(rows: list[tuple]) -> list[tuple[int, ...]]:
    """Groups of ids with equal values (rows are (id, *values)), computed in Python."""
    by_value = defaultdict(list)
    for row_id, *values in rows:
        by_value[tuple(values)].append(row_id)
    return sorted(tuple(sorted(ids)) for ids in by_value.values() if len(ids) > 1)


def expected_groups(read) -> dict[str, list[tuple[int, ...]]]:
    groups = {}
    for table, columns in IDENTITY.items():
        found = python_groups(read(f"SELECT id, {', '.join(columns)} FROM {table}"))
        if found:
            groups[table] = found
    return groups


def finding_groups(report: dict, kind: str = "duplicate") -> dict[str, list[tuple[int, ...]]]:
    return {
        f["table"]: sorted(tuple(g["ids"]) for g in f["examples"])
        for f in report["findings"]
        if f["kind"] == kind
    }


@pytest.fixture
def duplicated(store08) -> Path:
    plant_duplicates(records_file(store08))
    return store08


def test_identity_is_what_sumatra_looks_up():
    """IDENTITY is what the installed Sumatra's get_or_create_from_sumatra_object compares."""
    assert sumatra_identity() == {t: tuple(sorted(c)) for t, c in IDENTITY.items()}


def test_audit_reports_the_exact_groups(cli, duplicated):
    db = records_file(duplicated)
    expected = expected_groups(lambda query: sqlite_rows(db, query))
    assert expected == {t: sorted(g) for t, g in PLANTED.items()}  # the oracle agrees

    result = cli("audit", duplicated, "--format", "json")
    assert result.code == 1, result
    report = json.loads(result.out)
    assert finding_groups(report) == expected
    executable = next(
        f
        for f in report["findings"]
        if f["table"] == "django_store_executable" and f["kind"] == "duplicate"
    )
    assert executable["rows"] == 1
    assert executable["examples"][0]["values"]["name"] == "Python"
    assert "MultipleObjectsReturned" in executable["detail"]
    labels = finding_groups(report, "duplicate-label")
    assert labels == {"django_store_record": [(3, 6)]}
    assert "or break Sumatra's lookups (8 overflow, 7 duplicate)" in report["summary"]["verdict"]

    table = cli("audit", duplicated)
    assert "ids 1, 3:" in table.out and "duplicate-label" in table.out
    assert "smtmigrate copy … --dedupe" in table.out


def test_duplicate_labels_alone_do_not_fail_the_audit(cli, store08):
    sqlite_exec(
        records_file(store08),
        "UPDATE django_store_record SET label = "
        "(SELECT label FROM django_store_record WHERE db_id = 3) WHERE db_id = 6",
    )
    result = cli("audit", store08, "--format", "json")
    report = json.loads(result.out)
    assert finding_groups(report, "duplicate-label") == {"django_store_record": [(3, 6)]}
    assert finding_groups(report) == {}
    assert "duplicate" not in {f["kind"] for f in report["findings"] if f["kind"] != "overflow"}


@pytest.mark.pg
def test_copy_refuses_duplicates_without_dedupe(cli, duplicated, pg_database):
    result = cli("copy", duplicated, pg_database, "--widen")
    assert result.code == 1, result
    assert "duplicate" in result.out and "nothing was written" in result.out
    fix = f"smtmigrate copy {duplicated} {pg_database} --widen --dedupe"
    assert fix in " ".join(result.out.split())  # the console may wrap a long command
    both = cli("copy", duplicated, pg_database)  # over-long values too: one command fixes all
    assert both.code == 1, both
    assert "Widen the target's columns and merge the duplicate rows" in both.out
    assert fix in " ".join(both.out.split())
    assert pg_query(pg_database, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [
        (0,)
    ]


def new_target(request, tmp_path: Path, kind: str) -> str:
    """An empty PostgreSQL database, or the path of a new SQLite store."""
    if kind == "postgresql":
        return request.getfixturevalue("pg_database")
    return str(tmp_path / "deduped.sqlite")


def read_target(target: str, query: str) -> list[tuple]:
    if target.startswith("postgresql://"):
        return pg_query(target, query)
    return sqlite_rows(Path(target), query)


def sumatra_records(store: str) -> dict[str, dict]:
    """Every record as Sumatra 0.8.1 reads it (its own process), by (label, timestamp)."""
    result = run_sumatra("export", store)
    assert result.returncode == 0, result.stderr[-2000:]
    (records,) = json.loads(result.stdout).values()
    return {(r["label"], r["timestamp"]): r for r in records}


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
@pytest.mark.pg
@pytest.mark.slow
def test_copy_dedupe_merges_and_repoints(cli, request, duplicated, tmp_path, kind):
    db = records_file(duplicated)
    target = new_target(request, tmp_path, kind)
    result = cli("copy", duplicated, target, "--widen", "--dedupe", "--format", "json")
    assert result.code == 0, result
    data = json.loads(result.out)
    assert data["verification"]["ok"] and data["verification"]["records"]["compared"] == 7
    plan = data["plan"]["dedupe"]
    assert plan["merged"] == {t: sum(len(g) - 1 for g in gs) for t, gs in PLANTED.items()}
    assert plan["collapsed"] == {"django_store_record_dependencies": 1}

    def read(query):
        return read_target(target, query)

    assert expected_groups(read) == {}  # no duplicates left
    kept = {
        table: {old: group[0] for group in groups for old in group}
        for table, groups in PLANTED.items()
    }
    # every foreign key of every record points where the source's did, or at its group's
    # first row; nothing else changed
    columns = "db_id, executable_id, repository_id, launch_mode_id, datastore_id, "
    columns += "input_datastore_id, parameters_id, label, project_id"
    query = f"SELECT {columns} FROM django_store_record ORDER BY db_id"
    source_rows, target_rows = sqlite_rows(db, query), read(query)
    tables = ("executable", "repository", "launchmode", "datastore", "datastore", "parameterset")
    for before, after in zip(source_rows, target_rows, strict=True):
        repointed = [
            kept[f"django_store_{t}"].get(v, v) for t, v in zip(tables, before[1:7], strict=True)
        ]
        assert list(after) == [before[0], *repointed, *before[7:]]
    assert [row[1:7] for row in source_rows] != [row[1:7] for row in target_rows]
    links = "SELECT record_id, dependency_id FROM django_store_record_dependencies"
    merged = kept["django_store_dependency"]
    expected_links = {(r, merged.get(d, d)) for r, d in sqlite_rows(db, links)}
    target_links = read(links)
    assert sorted(target_links) == sorted(expected_links)  # (1, 2) once, (1, 4) collapsed
    assert read("SELECT id FROM django_store_executable ORDER BY id") == [(1,), (2,), (4,), (5,)]

    # Sumatra reads every record alike from both (record 1: `dependencies` listed yaml
    # twice in the source, once after the merge, as Sumatra itself would have saved it).
    source, copied = sumatra_records(str(db)), sumatra_records(target)
    assert source.keys() == copied.keys()
    for key, record in source.items():
        if record["label"] == source_rows[0][7]:
            deps = record["dependencies"]
            assert len(deps) == 4 and len({json.dumps(d, sort_keys=True) for d in deps}) == 3
            record["dependencies"] = [d for i, d in enumerate(deps) if d not in deps[:i]]
        assert copied[key] == record

    # verify and switch compare the same way when told the target was deduplicated
    plain = cli("verify", duplicated, target)
    assert plain.code == 1 and "django_store_executable: 5 rows in the source, 4" in plain.out
    assert cli("verify", duplicated, target, "--dedupe").code == 0
    assert cli("switch", duplicated, target).code == 1
    switched = cli("switch", duplicated, target, "--dedupe")
    assert switched.code == 0, switched
    assert "verified: 15 tables" in switched.out


@pytest.mark.pg
def test_postgres_store_with_duplicates_into_sqlite(
    cli, store08, pg_database, tmp_path, monkeypatch
):
    """Duplicates as concurrent runs leave them in a project's PostgreSQL store (its GROUP
    BY, its inet), copied out with the project switched to the copy."""
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cli("copy", store08, pg_database, "--widen", "--switch", store08).code == 0
    # a store made before copies built identities (identities.py), or by Sumatra itself
    pg_query(pg_database, "DROP INDEX smtmigrate_identity_django_store_platforminformation")
    pg_query(
        pg_database,
        "INSERT INTO django_store_platforminformation (architecture_bits, "
        "architecture_linkage, machine, network_name, ip_addr, processor, release, "
        "system_name, version) SELECT architecture_bits, architecture_linkage, machine, "
        "network_name, ip_addr, processor, release, system_name, version "
        "FROM django_store_platforminformation RETURNING id",
    )
    pg_query(
        pg_database,
        "UPDATE django_store_record_platforms SET platforminformation_id = "
        "(SELECT max(id) FROM django_store_platforminformation) WHERE record_id > 3",
    )
    report = json.loads(cli("audit", pg_database, "--format", "json").out)
    expected = expected_groups(lambda query: pg_query(pg_database, query))
    assert finding_groups(report) == expected == {"django_store_platforminformation": [(1, 2)]}

    target = tmp_path / "backup.sqlite"
    assert cli("copy", pg_database, target).code == 1
    result = cli("copy", pg_database, target, "--dedupe", "--switch", store08)
    assert result.code == 0, result
    assert "Deduplicated: merged 1 django_store_platforminformation row(s)" in result.out
    assert "Verified: 15 tables" in result.out
    # the project (on PostgreSQL) was re-verified against the copy, deduplicated too
    assert str(target) in (store08 / ".smt" / "project").read_text()
    assert sqlite_rows(
        target, "SELECT DISTINCT platforminformation_id FROM django_store_record_platforms"
    ) == [(1,)]


def smt(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    return subprocess.run(
        [SMT, *args], cwd=project, capture_output=True, text=True, env=env, timeout=120
    )


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
@pytest.mark.pg
@pytest.mark.slow
def test_smt_run_fails_on_duplicates_and_works_after_copy_dedupe(
    cli, request, tmp_path, monkeypatch, kind
):
    monkeypatch.setenv("HOME", str(tmp_path))  # a ~/.pgpass, if any, is the test's own
    project = tmp_path / "project"
    project.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    (project / "main.py").write_text("print('hello')\n")
    subprocess.run([*git, "add", "main.py"], cwd=project, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=project, check=True)
    assert smt(project, "init", "dupes").returncode == 0
    assert smt(project, "configure", "--executable=python", "--main=main.py").returncode == 0
    assert smt(project, "run", "--label", "first").returncode == 0
    db = records_file(project)
    # a second first run that raced the first: its own executable and platform rows
    sqlite_exec(
        db,
        copy_row("django_store_executable", 1, IDENTITY["django_store_executable"]),
        copy_row(
            "django_store_platforminformation", 1, IDENTITY["django_store_platforminformation"]
        ),
    )
    failed = smt(project, "run", "--label", "second")
    assert failed.returncode != 0
    assert "MultipleObjectsReturned: get() returned more than one Executable" in failed.stderr
    assert sqlite_rows(db, "SELECT label FROM django_store_record") == [("first",)]

    target = new_target(request, tmp_path, kind)
    assert cli("copy", project, target, "--switch", project).code == 1  # refused, unswitched
    copied = cli("copy", project, target, "--dedupe", "--switch", project)
    assert copied.code == 0, copied
    run = smt(project, "run", "--label", "second")
    assert run.returncode == 0, run.stderr[-2000:]
    query = "SELECT label, executable_id FROM django_store_record ORDER BY label"
    assert read_target(target, query) == [("first", 1), ("second", 1)]


def test_legacy_store_deduplicated_into_todays_sqlite(cli, store07, tmp_path):
    """A 0.7 store: its tags move to today's tables (content types remapped) in the same
    copy that merges its duplicate executable and platform rows."""
    db = records_file(store07)
    sqlite_exec(
        db,
        copy_row("django_store_executable", 1, IDENTITY["django_store_executable"]),
        "UPDATE django_store_record SET executable_id = 3 WHERE db_id = 4",
        copy_row(
            "django_store_platforminformation", 1, IDENTITY["django_store_platforminformation"]
        ),
        "UPDATE django_store_record_platforms SET platforminformation_id = 2 WHERE record_id = 2",
    )
    target = tmp_path / "upgraded.sqlite"
    result = cli("copy", store07, target, "--dedupe", "--format", "json")
    assert result.code == 0, result
    data = json.loads(result.out)
    assert data["verification"]["ok"] and data["verification"]["records"]["compared"] == 7
    assert data["plan"]["dedupe"]["merged"] == {
        "django_store_executable": 1,
        "django_store_platforminformation": 1,
    }
    assert sqlite_rows(target, "SELECT executable_id FROM django_store_record WHERE db_id = 4") == [
        (1,)
    ]
    assert sqlite_rows(
        target, "SELECT DISTINCT platforminformation_id FROM django_store_record_platforms"
    ) == [(1,)]
    assert sqlite_rows(target, "SELECT count(*) FROM django_store_taggeditem") == sqlite_rows(
        db, "SELECT count(*) FROM tagging_taggeditem"
    )

"""`smtmigrate merge`: node stores made by real `smt run`s folded into one PostgreSQL store.

A "node" is what a cluster job array does without a database server: the same project
(one git repository, one executable) writing its own SQLite store. Here one project
directory runs `smt run` with its `.smt/project` pointed at `node1.sqlite`, `node2.sqlite`,
… in turn. Oracles: the target's rows read with psycopg2, the records of each store read
back through Sumatra's models (`records.iter_records`), and `smt list` / `smt run` on the
merged store.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..conftest import copy_fixture, fresh_database, pg_query, sqlite_exec, sqlite_rows

SMT = str(Path(sys.executable).parent / "smt")
SHARED_TABLES = (
    "django_store_executable",
    "django_store_repository",
    "django_store_launchmode",
    "django_store_datastore",
    "django_store_platforminformation",
)
MAIN = """\
import os, sys
params = open(sys.argv[1]).read()
os.makedirs("Data", exist_ok=True)
with open(os.path.join("Data", "out-%d.txt" % os.getpid()), "w") as f:
    f.write(params)
"""


def smt(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    return subprocess.run(
        [SMT, *args], cwd=project, capture_output=True, text=True, env=env, timeout=300
    )


def new_project(directory: Path, name: str) -> Path:
    """A git project configured by `smt init` / `smt configure` (uuid labels)."""
    directory.mkdir(parents=True)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run(["git", "init", "-q"], cwd=directory, check=True)
    (directory / "main.py").write_text(MAIN)
    (directory / "default.param").write_text("a = 1\n")
    subprocess.run([*git, "add", "."], cwd=directory, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=directory, check=True)
    assert smt(directory, "init", name).returncode == 0
    configured = smt(directory, "configure", "--executable=python", "--main=main.py", "-g", "uuid")
    assert configured.returncode == 0, configured.stderr
    return directory


def point_at(project: Path, location: str | Path) -> None:
    path = project / ".smt" / "project"
    data = json.loads(path.read_text())
    data["record_store"]["db_file"] = str(location)
    path.write_text(json.dumps(data, indent=2))


def run_on(project: Path, store: str | Path, *args: str) -> None:
    """One `smt run` of the project, saved into `store`."""
    point_at(project, store)
    done = smt(project, "run", *args, "default.param")
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture(scope="module")
def nodes(tmp_path_factory) -> Path:
    """One project, three node stores of two runs each (tagged), built once."""
    root = tmp_path_factory.mktemp("nodes")
    project = new_project(root / "project", "nodeproj")
    for node in (1, 2, 3):
        for run in (1, 2):
            store = root / f"node{node}.sqlite"
            run_on(project, store, "--label", f"n{node}-r{run}", "-t", f"node{node}")
    return root


def copies(nodes: Path, tmp_path: Path, *names: str) -> list[Path]:
    """Private copies of node stores (a test that runs `smt` on them must not share)."""
    paths = []
    for name in names:
        shutil.copy(nodes / f"{name}.sqlite", tmp_path / f"{name}.sqlite")
        paths.append(tmp_path / f"{name}.sqlite")
    return paths


def records(location: str | Path) -> dict[tuple, dict]:
    """(project, label) → the record as Sumatra reads it back (an independent read)."""
    from smtmigrate.locations import resolve
    from smtmigrate.records import iter_records
    from smtmigrate.schema import inspect_store

    with resolve(str(location)) as store:
        return {(p, label): data for p, label, data in iter_records(inspect_store(store))}


def counts(url: str) -> dict[str, int]:
    tables = [
        name
        for (name,) in pg_query(
            url, "SELECT tablename FROM pg_tables WHERE tablename LIKE 'django_store%%'"
        )
    ]
    return {t: pg_query(url, f'SELECT count(*) FROM "{t}"')[0][0] for t in sorted(tables)}


def shared_counts(path: Path) -> dict[str, int]:
    return {t: sqlite_rows(path, f'SELECT count(*) FROM "{t}"')[0][0] for t in SHARED_TABLES}


def merge_json(cli, *args) -> tuple[int, dict]:
    result = cli("merge", *args, "--format", "json")
    assert result.code in (0, 1), result
    return result.code, json.loads(result.out)


@pytest.mark.pg
@pytest.mark.slow
def test_three_node_stores_into_an_empty_store_then_again_then_one_more_run(cli, nodes, tmp_path):
    node1, node2, node3 = copies(nodes, tmp_path, "node1", "node2", "node3")
    with fresh_database() as url:
        code, report = merge_json(cli, node1, node2, node3, url)
        assert code == 0, report
        assert report["committed"] and report["built_schema"]
        assert report["records"]["inserted"] == 6
        merged = records(url)
        for node in (node1, node2, node3):
            for key, data in records(node).items():
                assert merged[key] == data
        assert len(merged) == 6
        # the same executable, repository, ... on every node: as many rows as one node has
        before = counts(url)
        one_node = shared_counts(node1)
        assert one_node["django_store_executable"] == 1
        assert {t: before[t] for t in SHARED_TABLES} == one_node
        assert before["django_store_tag"] == 4  # node1, node2, node3, Sumatra's _finished_

        # merging the same stores again (a nightly cron job) changes nothing
        code, again = merge_json(cli, node1, node2, node3, url)
        assert code == 0 and again["records"]["inserted"] == 0
        assert again["records"]["equal"] == 6
        assert counts(url) == before

        # node2 runs once more: the next merge adds exactly that record, no shared row
        run_on(nodes / "project", node2, "--label", "n2-r3")
        code, third = merge_json(cli, node1, node2, node3, url)
        assert code == 0 and third["records"]["inserted"] == 1, third
        after = counts(url)
        assert after["django_store_record"] == 7
        assert {t: after[t] for t in SHARED_TABLES} == one_node

        # the same store named twice as two files: equal records are taken once
        twin = tmp_path / "twin.sqlite"
        shutil.copy(node1, twin)
        code, twice = merge_json(cli, node1, twin, url)
        assert code == 0 and twice["records"]["inserted"] == 0

        # Sumatra works on the merged store: list, and a new run
        project = nodes / "project"
        point_at(project, url)
        listed = smt(project, "list")
        assert sorted(listed.stdout.split()) == sorted(label for _p, label in records(url))
        run_on(project, url, "--label", "after-merge")
        assert counts(url)["django_store_record"] == 8
        assert {t: counts(url)[t] for t in SHARED_TABLES} == one_node


@pytest.fixture(scope="module")
def conflicting(tmp_path_factory) -> Path:
    """Two node stores that both hold label `same`, with different reasons, and one
    equal record (`equal`, copied from the first into the second)."""
    root = tmp_path_factory.mktemp("conflicting")
    project = new_project(root / "project", "clash")
    run_on(project, root / "a.sqlite", "--label", "same", "--reason", "first")
    run_on(project, root / "b.sqlite", "--label", "same", "--reason", "second")
    run_on(project, root / "b.sqlite", "--label", "only-b")
    return root


@pytest.mark.pg
@pytest.mark.slow
def test_refuse_lists_every_conflict_and_writes_nothing(cli, conflicting):
    with fresh_database() as url:
        result = cli("merge", conflicting / "a.sqlite", conflicting / "b.sqlite", url)
        assert result.code == 1, result
        assert "Refused: 1 conflict" in result.out
        assert "same" in result.out and "reason" in result.out
        assert counts(url) == {}  # not even the schema: one transaction, rolled back
        code, report = merge_json(cli, conflicting / "a.sqlite", conflicting / "b.sqlite", url)
        assert code == 1 and report["refused"] and not report["committed"]
        (conflict,) = report["conflicts"]
        assert conflict["label"] == "same" and conflict["action"] == "refused"
        assert "reason" in conflict["fields"]
        assert conflict["source"].endswith("b.sqlite")


@pytest.mark.pg
@pytest.mark.slow
def test_skip_identical_keeps_what_is_there(cli, conflicting):
    with fresh_database() as url:
        a, b = conflicting / "a.sqlite", conflicting / "b.sqlite"
        code, report = merge_json(cli, a, url)
        assert code == 0
        code, report = merge_json(cli, b, url, "--on-conflict", "skip-identical")
        assert code == 0, report
        assert report["records"]["inserted"] == 1 and report["records"]["skipped"] == 1
        assert report["conflicts"][0]["action"] == "skipped"
        merged = records(url)
        assert merged["clash", "same"]["reason"] == "first"
        assert merged["clash", "only-b"] == records(b)["clash", "only-b"]


@pytest.mark.pg
@pytest.mark.slow
def test_rename_is_deterministic_and_merging_again_adds_nothing(cli, conflicting):
    with fresh_database() as url:
        a, b = conflicting / "a.sqlite", conflicting / "b.sqlite"
        code, report = merge_json(cli, a, b, url, "--on-conflict", "rename")
        assert code == 0, report
        (conflict,) = report["conflicts"]
        new_label = conflict["new_label"]
        assert conflict["action"] == "renamed" and new_label.startswith("same-merged-")
        assert len(new_label) == len("same-merged-") + 8
        merged = records(url)
        assert merged["clash", "same"]["reason"] == "first"
        renamed = dict(records(b)["clash", "same"], label=new_label)
        assert merged["clash", new_label] == renamed
        before = counts(url)
        code, again = merge_json(cli, a, b, url, "--on-conflict", "rename")
        assert code == 0 and again["records"]["inserted"] == 0
        assert again["conflicts"][0]["new_label"] == new_label
        assert counts(url) == before


@pytest.mark.pg
@pytest.mark.slow
def test_two_projects_merge_side_by_side(cli, tmp_path):
    one = new_project(tmp_path / "one", "alpha")
    two = new_project(tmp_path / "two", "beta")
    run_on(one, tmp_path / "alpha.sqlite", "--label", "r1")
    run_on(two, tmp_path / "beta.sqlite", "--label", "r1")  # same label, other project
    with fresh_database() as url:
        code, report = merge_json(cli, tmp_path / "alpha.sqlite", tmp_path / "beta.sqlite", url)
        assert code == 0 and report["records"]["inserted"] == 2, report
        assert not report["conflicts"]
        assert sorted(records(url)) == [("alpha", "r1"), ("beta", "r1")]
        assert counts(url)["django_store_repository"] == 2  # two working copies
        point_at(two, url)
        assert smt(two, "list").stdout.split() == ["r1"]


@pytest.mark.pg
@pytest.mark.slow
def test_a_sumatra_07_store_merges_through_today_s_models(cli, store07, nodes, tmp_path):
    (node1,) = copies(nodes, tmp_path, "node1")
    with fresh_database() as url:
        code, report = merge_json(cli, store07, node1, url)
        assert code == 0, report
        assert report["sources"][0]["layout"] == "sumatra-0.7"
        merged = records(url)
        old = records(store07)
        assert old and all(merged[key] == data for key, data in old.items())
        assert len(merged) == len(old) + 2
        code, again = merge_json(cli, store07, node1, url)
        assert code == 0 and again["records"]["inserted"] == 0


@pytest.mark.pg
@pytest.mark.slow
def test_dry_run_reports_and_writes_nothing(cli, nodes, tmp_path):
    (node1,) = copies(nodes, tmp_path, "node1")
    with fresh_database() as url:
        code, report = merge_json(cli, node1, url, "--dry-run")
        assert code == 0 and report["records"]["inserted"] == 2
        assert report["dry_run"] and not report["committed"]
        assert pg_query(url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]


@pytest.mark.pg
@pytest.mark.slow
@pytest.mark.solo
def test_merge_while_twenty_smt_runs_write_the_target_loses_nothing(cli, nodes, tmp_path):
    """The target's Sumatra tables are locked against writers from the identity check to
    commit: the runs wait (reported as `lock.held`), none fails, none duplicates a shared
    row, and every record of both sides is there."""
    node1, node2, node3 = copies(nodes, tmp_path, "node1", "node2", "node3")
    project = tmp_path / "live"
    shutil.copytree(nodes / "project", project)
    with fresh_database() as url:
        assert merge_json(cli, node1, url)[0] == 0
        point_at(project, url)
        env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
        jobs = [
            subprocess.Popen(
                [SMT, "run", "--reason", f"live {i}", "default.param"],
                cwd=project,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(20)
        ]
        try:
            deadline = time.monotonic() + 300
            while pg_query(url, "SELECT count(*) FROM django_store_record")[0][0] < 3:
                assert time.monotonic() < deadline, "no run saved its record"
                time.sleep(0.2)  # merge once the runs are writing
            code, report = merge_json(cli, node2, node3, url)
            running = sum(job.poll() is None for job in jobs)
        finally:
            errors = [job.communicate(timeout=600)[1] for job in jobs]
        assert code == 0, report
        assert running, "the merge did not overlap the runs"
        assert report["records"]["inserted"] == 4
        assert [job.returncode for job in jobs] == [0] * 20, [e[-500:] for e in errors]
        merged = records(url)
        assert len(merged) == 2 + 4 + 20
        reasons = sorted(d["reason"] for d in merged.values() if d["reason"].startswith("live"))
        assert reasons == sorted(f"live {i}" for i in range(20))
        for node in (node1, node2, node3):
            assert all(merged[key] == data for key, data in records(node).items())
        assert {t: counts(url)[t] for t in SHARED_TABLES} == shared_counts(node1)
        print(f"writers held {report['lock']['held']} s")


@pytest.mark.pg
@pytest.mark.slow
def test_a_writer_touching_a_colliding_key_before_the_lock_gets_identity_decided_again(
    cli, nodes, tmp_path, monkeypatch
):
    """The identity check runs before the lock; if a writer changes the target's records
    of a colliding key meanwhile (here: deletes one), it is decided again, locked."""
    import smtmigrate.merge as merge

    (node1,) = copies(nodes, tmp_path, "node1")
    real = merge.classify
    calls = []

    with fresh_database() as url:
        assert merge_json(cli, node1, url)[0] == 0
        (victim,) = pg_query(url, "SELECT db_id FROM django_store_record WHERE label = 'n1-r1'")

        def classify_then_delete(*args, **kwargs):
            identity = real(*args, **kwargs)
            if not calls:
                for table in ("dependencies", "platforms", "input_data"):
                    pg_query(
                        url, f"DELETE FROM django_store_record_{table} WHERE record_id = %s", victim
                    )
                pg_query(
                    url, "DELETE FROM django_store_datakey WHERE output_from_record_id = %s", victim
                )
                pg_query(url, "DELETE FROM django_store_taggeditem WHERE object_id = %s", victim)
                pg_query(url, "DELETE FROM django_store_record WHERE db_id = %s", victim)
            calls.append(identity)
            return identity

        monkeypatch.setattr(merge, "classify", classify_then_delete)
        code, report = merge_json(cli, node1, url)
        assert code == 0, report
        assert report["lock"]["identity_again"] and len(calls) == 2
        assert report["records"]["inserted"] == 1
        assert records(url) == records(node1)


@pytest.mark.parametrize("verify", ["full", "rows", "full, sources read by a second process"])
@pytest.mark.pg
@pytest.mark.slow
def test_a_record_that_does_not_read_back_equal_rolls_everything_back(
    cli, nodes, tmp_path, monkeypatch, verify
):
    """The check is real: a record changed after the insert (here by a wrapped load step,
    inside the merge's transaction) fails it, and nothing is kept (exit 1)."""
    import smtmigrate.merge.check as check
    import smtmigrate.merge.load as load

    if verify.startswith("full, "):
        monkeypatch.setattr(check, "PARALLEL_MIN", 1)
        verify = "full"

    (node1,) = copies(nodes, tmp_path, "node1")
    real = load.apply

    def apply_then_damage(cursor, *args, **kwargs):
        real(cursor, *args, **kwargs)
        cursor.execute("UPDATE django_store_record SET reason = 'damaged' WHERE label = 'n1-r2'")

    monkeypatch.setattr(load, "apply", apply_then_damage)
    with fresh_database() as url:
        code, report = merge_json(cli, node1, url, "--verify", verify)
        assert code == 1 and not report["committed"]
        assert report["check"]["total_differences"] == 1
        assert "n1-r2" in report["check"]["differences"][0]
        assert counts(url) == {}


@pytest.mark.pg
@pytest.mark.slow
def test_projects_are_merged_by_id_and_a_differing_description_is_reported(cli, nodes, tmp_path):
    node1, node2 = copies(nodes, tmp_path, "node1", "node2")
    sqlite_exec(node2, "UPDATE django_store_project SET description = 'node two says'")
    with fresh_database() as url:
        code, report = merge_json(cli, node1, node2, url)
        assert code == 0, report
        (project,) = report["projects"]
        assert project["project"] == "nodeproj" and project["source"].endswith("node2.sqlite")
        assert project["source_description"] == "node two says"
        assert pg_query(url, "SELECT id, description FROM django_store_project") == [
            ("nodeproj", "")
        ]
        assert report["records"]["inserted"] == 4


@pytest.mark.slow
def test_what_merge_refuses_before_touching_anything(cli, nodes, tmp_path):
    (node1,) = copies(nodes, tmp_path, "node1")
    result = cli("merge", node1)
    assert result.code == 2 and "at least one SOURCE and the TARGET" in result.err
    other = tmp_path / "other.sqlite"
    sqlite_exec(other, "CREATE TABLE notes (text)")
    result = cli("merge", node1, other)
    assert result.code == 1 and "neither empty nor a Sumatra store" in result.err
    assert sqlite_rows(other, "SELECT name FROM sqlite_master") == [("notes",)]
    result = cli("merge", node1, node1, "postgresql://127.0.0.1:5432/postgres")
    assert result.code == 2 and "named twice" in result.err


@pytest.mark.pg
@pytest.mark.slow
def test_a_value_too_long_for_an_unwidened_target_fails_whole_with_the_fix(
    cli, nodes, tmp_path, sumatra_pg
):
    """A target made by Sumatra itself keeps varchar(100) labels: nothing is written and
    the error names the widening that fixes it."""
    (node1,) = copies(nodes, tmp_path, "node1")
    sqlite_exec(
        node1, f"UPDATE django_store_record SET label = '{'x' * 150}' WHERE label = 'n1-r1'"
    )
    result = cli("merge", node1, sumatra_pg)
    assert result.code == 2, result
    assert "value too long" in result.err and "smtmigrate widen --apply" in result.err
    assert counts(sumatra_pg)["django_store_record"] == 0


@pytest.mark.parametrize("generation", ["0.4", "0.5", "0.6"])
@pytest.mark.pg
def test_older_generations_merge_through_the_views(cli, tmp_path, generation):
    """Sumatra 0.4-0.6 stores (two projects each) are read in today's shape."""
    store = copy_fixture(generation, tmp_path)
    with fresh_database() as url:
        code, report = merge_json(cli, store, url)
        assert code == 0, report
        assert report["sources"][0]["layout"] == f"sumatra-{generation}"
        old = records(store)
        assert len({project for project, _label in old}) == 2
        assert records(url) == old
        code, again = merge_json(cli, store, url)
        assert code == 0 and again["records"]["inserted"] == 0


def sqlite_counts(path: Path) -> dict[str, int]:
    tables = sqlite_rows(
        path, "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'django_store%'"
    )
    return {t: sqlite_rows(path, f'SELECT count(*) FROM "{t}"')[0][0] for (t,) in sorted(tables)}


@pytest.mark.parametrize("verify", ["full", "rows"])
@pytest.mark.slow
def test_an_sqlite_target_gets_the_same_merge(cli, nodes, conflicting, tmp_path, verify):
    node1, node2, node3 = copies(nodes, tmp_path, "node1", "node2", "node3")
    target = tmp_path / "merged.sqlite"
    code, report = merge_json(cli, node1, node2, node3, target, "--verify", verify)
    assert code == 0 and report["built_schema"] and report["records"]["inserted"] == 6, report
    merged = records(target)
    assert len(merged) == 6
    for node in (node1, node2, node3):
        assert all(merged[key] == data for key, data in records(node).items())
    before = sqlite_counts(target)
    assert {t: before[t] for t in SHARED_TABLES} == shared_counts(node1)
    code, again = merge_json(cli, node1, node2, node3, target, "--verify", verify)
    assert code == 0 and again["records"]["inserted"] == 0
    assert sqlite_counts(target) == before

    a, b = conflicting / "a.sqlite", conflicting / "b.sqlite"
    refused = tmp_path / "refused.sqlite"
    assert merge_json(cli, a, b, refused)[0] == 1
    assert not refused.exists()  # a new target: all or nothing
    code, renamed = merge_json(cli, a, b, target, "--on-conflict", "rename", "--verify", verify)
    assert code == 0 and renamed["records"]["inserted"] == 3, renamed
    new_label = renamed["conflicts"][0]["new_label"]
    assert records(target)["clash", new_label]["reason"] == "second"

    project = nodes / "project"
    point_at(project, target)
    assert sorted(smt(project, "list").stdout.split()) == sorted(
        label for p, label in records(target) if p == "nodeproj"
    )
    run_on(project, target, "--label", "after-sqlite-merge")
    assert sqlite_counts(target)["django_store_record"] == before["django_store_record"] + 3 + 1


@pytest.mark.parametrize("into", ["postgresql", "sqlite"])
@pytest.mark.pg
@pytest.mark.slow
def test_a_postgresql_source_merges_with_sqlite_node_stores(
    cli, nodes, tmp_path, monkeypatch, into
):
    """node1 copied into PostgreSQL (as `copy` makes it) is read in one snapshot and staged
    (COPY TO piped into COPY FROM, or batches into SQLite) beside two SQLite node stores;
    merging them all again adds nothing. The check reads the sources in a second process
    (joining the PostgreSQL snapshot, opening the SQLite snapshot files)."""
    import smtmigrate.merge.check as check

    monkeypatch.setattr(check, "PARALLEL_MIN", 1)
    node1, node2, node3 = copies(nodes, tmp_path, "node1", "node2", "node3")
    with fresh_database() as source, fresh_database() as pg_target:
        assert cli("copy", node1, source, "--widen", "--quiet").code == 0
        target = pg_target if into == "postgresql" else tmp_path / "merged.sqlite"
        code, report = merge_json(cli, source, node2, node3, target)
        assert code == 0 and report["records"]["inserted"] == 6, report
        assert report["check"]["records_compared"] == 6
        assert report["sources"][0]["records"] == 2
        merged = records(target)
        assert len(merged) == 6
        for store in (source, node2, node3):
            assert all(merged[key] == data for key, data in records(store).items())
        before = counts(target) if into == "postgresql" else sqlite_counts(target)
        assert {t: before[t] for t in SHARED_TABLES} == shared_counts(node1)
        code, again = merge_json(cli, source, node2, node3, node1, target, "--verify", "rows")
        assert code == 0 and again["records"]["inserted"] == 0, again
        assert again["records"]["equal"] == 8
        assert (counts(target) if into == "postgresql" else sqlite_counts(target)) == before
        result = cli("merge", node2, source, source.replace("127.0.0.1", "localhost"))
        assert result.code == 2 and "is the TARGET itself (the same database" in result.err
        assert len(result.err.strip().splitlines()) == 1


@pytest.mark.slow
def test_output_keys_equal_in_content_from_two_records_stay_two_rows_and_are_reported(
    cli, nodes, tmp_path
):
    """node2's output key made equal in content to node1's (path, digest, creation,
    metadata): each record keeps its own output, read back equal, and the report says
    that Sumatra's get_or_create on such a key now finds two rows."""
    node1, node2 = copies(nodes, tmp_path, "node1", "node2")
    path, digest, creation, metadata = sqlite_rows(
        node1, "SELECT path, digest, creation, metadata FROM django_store_datakey LIMIT 1"
    )[0]
    conn = sqlite3.connect(node2)
    conn.execute(
        "UPDATE django_store_datakey SET path = ?, digest = ?, creation = ?, metadata = ? "
        "WHERE id = (SELECT min(id) FROM django_store_datakey)",
        (path, digest, creation, metadata),
    )
    conn.commit()
    conn.close()
    target = tmp_path / "merged.sqlite"
    code, report = merge_json(cli, node1, node2, target)
    assert code == 0 and report["check"]["ok"], report
    assert report["datakey_twins"] == {"groups": 1, "rows": 2}
    merged = records(target)
    for node in (node1, node2):
        assert all(merged[key] == data for key, data in records(node).items())
    text = cli("merge", node1, node2, target)
    assert text.code == 0 and "MultipleObjectsReturned" in text.out

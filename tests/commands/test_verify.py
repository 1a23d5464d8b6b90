"""Record-level verification: every record read back through Sumatra's own models.

Real stores only: the bundled fixtures (written by real `smt run`s of Sumatra 0.8.1 and
0.7.4), copies of them damaged with plain sqlite3, a PostgreSQL store filled by Sumatra's
own API, and a generated store. Expected values come from sqlite3 directly.
"""

from __future__ import annotations

import ast
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from smtmigrate.errors import RecordReadError
from smtmigrate.locations import resolve
from smtmigrate.records import remote
from smtmigrate.records.comparison import compare_records, compare_sample
from smtmigrate.records.reader import iter_records, sample_ids
from smtmigrate.schema import inspect_store
from smtmigrate.snapshot import source_snapshot
from smtmigrate.threads import threads_read

from ..conftest import (
    FIXTURES,
    one_error_line,
    records_file,
    run_sumatra,
    sqlite_exec,
    sqlite_rows,
)
from ..storegen import generate_store

RECORD_TAGS = {
    "0.8": ("django_store_tag", "django_store_taggeditem"),
    "0.7": ("tagging_tag", "tagging_taggeditem"),
}
PROJECT = {"0.8": "fixture08", "0.7": "fixture07"}


def compare(source, target, **kwargs):
    """Each side opened by its own resolve(): two connections, as `verify` does."""
    with resolve(str(source)) as a, resolve(str(target)) as b:
        return compare_records(inspect_store(a), inspect_store(b), **kwargs)


def records_of(location) -> dict[tuple, dict]:
    with resolve(str(location)) as store:
        return {(p, label): data for p, label, data in iter_records(inspect_store(store))}


def label_of(db: Path, db_id: int) -> str:
    return sqlite_rows(db, "SELECT label FROM django_store_record WHERE db_id = ?", (db_id,))[0][0]


def tags_by_label(db: Path, generation: str) -> dict[str, list[str]]:
    """Every record's tags, read with sqlite3 from the generation's own tag tables."""
    tag, tagged = RECORD_TAGS[generation]
    tags: dict[str, list[str]] = {
        label: [] for (label,) in sqlite_rows(db, "SELECT label FROM django_store_record")
    }
    rows = sqlite_rows(
        db,
        f"SELECT r.label, t.name FROM django_store_record r "
        f"JOIN {tagged} ti ON ti.object_id = r.db_id "
        f"JOIN django_content_type ct ON ct.id = ti.content_type_id "
        f"AND ct.app_label = 'django_store' AND ct.model = 'record' "
        f"JOIN {tag} t ON t.id = ti.tag_id",
    )
    for label, name in rows:
        tags[label].append(name)
    return {label: sorted(names) for label, names in tags.items()}


def private_copy(db: Path, tmp_path: Path, name: str) -> Path:
    copy = tmp_path / name
    shutil.copyfile(db, copy)
    return copy


@pytest.mark.parametrize("generation", ["0.8", "0.7"])
def test_a_store_compared_with_itself_has_no_difference(request, generation):
    project = request.getfixturevalue(f"store{generation.replace('.', '')}")
    result = compare(project, project)
    (count,) = sqlite_rows(records_file(project), "SELECT count(*) FROM django_store_record")[0]
    assert count == 7
    assert result.differences == []
    assert result.ok and not result.truncated
    assert (result.records, result.source_records, result.target_records) == (count,) * 3


@pytest.mark.parametrize("generation", ["0.8", "0.7"])
def test_records_come_out_with_their_tags(request, generation):
    project = request.getfixturevalue(f"store{generation.replace('.', '')}")
    expected = tags_by_label(records_file(project), generation)
    got = records_of(project)
    assert {label: data["tags"] for (_, label), data in got.items()} == expected
    assert {p for p, _ in got} == {PROJECT[generation]}
    # the tag tables were read, not the denormalised Record.tags column
    assert max(len(tags) for tags in expected.values()) >= 11
    if generation == "0.7":  # django-tagging split a multi-word tag (fixtures/README.md)
        assert {"reviewed", "by", "the", "modelling", "group"} <= set().union(*expected.values())


def test_records_read_as_sumatra_reads_them(store08):
    """Field by field what Sumatra's own `smt export` wrote, but for the microseconds the
    export drops and the order of unordered lists."""
    import json

    export = json.loads((store08 / "records_export.json").read_text())
    got = {label: data for (_, label), data in records_of(store08).items()}
    assert sorted(got) == sorted(r["label"] for r in export)
    for exported in export:
        data = got[exported["label"]]
        stamp = datetime.fromisoformat(data["timestamp"])
        assert stamp.microsecond  # microseconds kept
        assert stamp.strftime("%Y-%m-%d %H:%M:%S%z") == exported["timestamp"]
        for name in ("input_data", "output_data"):
            for item in data[name] + exported[name]:
                item["creation"] = item["creation"][:19].replace("T", " ")
        for name in ("input_data", "output_data", "dependencies", "platforms"):
            for side in (data, exported):
                side[name] = sorted(side[name], key=lambda v: json.dumps(v, sort_keys=True))
        data["timestamp"] = exported["timestamp"]
        assert data == exported


def _bump_timestamp(db: Path, db_id: int) -> str:
    (stamp,) = sqlite_rows(
        db, "SELECT timestamp FROM django_store_record WHERE db_id = ?", (db_id,)
    )[0]
    bumped = datetime.fromisoformat(stamp) + timedelta(microseconds=1)
    return (
        f"UPDATE django_store_record SET timestamp = '{bumped.isoformat(' ')}' "
        f"WHERE db_id = {db_id}"
    )


MODIFICATIONS = {
    "reason": (
        3,
        "reason",
        ["UPDATE django_store_record SET reason = 'changed on the way' WHERE db_id = 3"],
    ),
    "executable option": (
        5,
        "executable.options",
        ["UPDATE django_store_executable SET options = ' -W ignore' WHERE id = 2"],
    ),
    # a new Dependency row for record 3 only: the other records keep the shared row
    "dependency version": (
        3,
        "dependencies[name=parameters].version",
        [
            "INSERT INTO django_store_dependency (name, path, version, diff, source, module) "
            "SELECT name, path, '9.9.9', diff, source, module FROM django_store_dependency "
            "WHERE name = 'parameters'",
            "UPDATE django_store_record_dependencies SET dependency_id = "
            "(SELECT max(id) FROM django_store_dependency) WHERE record_id = 3 AND "
            "dependency_id = (SELECT min(id) FROM django_store_dependency "
            "WHERE name = 'parameters')",
        ],
    ),
    "tag removed": (
        1,
        "tags",
        [
            "DELETE FROM django_store_taggeditem WHERE object_id = 1 AND tag_id = "
            "(SELECT id FROM django_store_tag WHERE name = 'baseline')"
        ],
    ),
    "output key digest": (
        4,
        "output_data[path=summary.json].digest",
        [
            "UPDATE django_store_datakey SET digest = 'x' "
            "WHERE output_from_record_id = 4 AND path = 'summary.json'"
        ],
    ),
}


@pytest.mark.parametrize("case", [*MODIFICATIONS, "timestamp by 1 µs"])
@pytest.mark.slow
def test_one_changed_value_names_that_record_and_field(store08, tmp_path, case):
    db = records_file(store08)
    changed = private_copy(db, tmp_path, "changed.sqlite")
    if case == "timestamp by 1 µs":
        db_id, field, statements = 6, "timestamp", [_bump_timestamp(db, 6)]
    else:
        db_id, field, statements = MODIFICATIONS[case]
    sqlite_exec(changed, *statements)

    result = compare(db, changed)
    assert [(d.project, d.label, d.field) for d in result.differences] == [
        ("fixture08", label_of(db, db_id), field)
    ]
    assert (result.records, result.total_differences, result.differing_records) == (7, 1, 1)
    difference = result.differences[0]
    assert difference.source != difference.target
    assert label_of(db, db_id) in str(difference) and field in str(difference)


def test_legacy_store_tag_removed(store07, tmp_path):
    db = records_file(store07)
    changed = private_copy(db, tmp_path, "changed.sqlite")
    sqlite_exec(
        changed,
        "DELETE FROM tagging_taggeditem WHERE tag_id = (SELECT id FROM tagging_tag "
        "WHERE name = 'modelling')",
    )
    result = compare(db, changed)
    assert [(d.label, d.field) for d in result.differences] == [(label_of(db, 5), "tags")]
    assert result.differences[0].source == "15 items, only here: ['modelling']"
    assert result.differences[0].target == "14 items, only here: []"


def test_a_deleted_record_is_reported_missing(store08, tmp_path):
    db = records_file(store08)
    changed = private_copy(db, tmp_path, "changed.sqlite")
    sqlite_exec(changed, "DELETE FROM django_store_record WHERE db_id = 7")
    label = label_of(db, 7)

    result = compare(db, changed)
    assert [(d.label, d.field, d.source, d.target) for d in result.differences] == [
        (label, "record", "present", "missing")
    ]
    assert (result.records, result.source_records, result.target_records) == (6, 7, 6)

    reverse = compare(changed, db)
    assert [(d.label, d.field, d.source, d.target) for d in reverse.differences] == [
        (label, "record", "missing", "present")
    ]


def test_limit_truncates_but_counts_everything(store08, tmp_path):
    db = records_file(store08)
    changed = private_copy(db, tmp_path, "changed.sqlite")
    sqlite_exec(changed, "UPDATE django_store_record SET outcome = 'x', user = 'y'")
    result = compare(db, changed, limit=3)
    assert len(result.differences) == 3 and result.truncated
    assert (result.total_differences, result.differing_records) == (14, 7)


@pytest.mark.pg
@pytest.mark.slow
def test_postgres_store_filled_by_sumatra_reads_the_same(store08, sumatra_pg, cli):
    """Sumatra's own API saved the fixture's export into PostgreSQL (widened first: the
    fixture's values overflow Sumatra's varchar sizes); the export dropped the records'
    microseconds (fixtures/README.md), and nothing else may differ."""
    assert cli("widen", "--apply", sumatra_pg).code == 0
    export = FIXTURES / "sumatra-0.8" / "records_export.json"
    done = run_sumatra("import", sumatra_pg, "fixture08", str(export))
    assert done.returncode == 0, done.stderr

    result = compare(store08, sumatra_pg, limit=100)
    db = records_file(store08)
    stamps = dict(sqlite_rows(db, "SELECT label, timestamp FROM django_store_record"))
    assert result.records == 7
    assert {d.label for d in result.differences} == set(stamps)
    assert {d.field for d in result.differences} == {"timestamp"}
    for difference in result.differences:
        source = datetime.fromisoformat(ast.literal_eval(difference.source))
        target = datetime.fromisoformat(ast.literal_eval(difference.target))
        assert source.isoformat(" ")[:26] == stamps[difference.label]
        assert target == source.replace(microsecond=0)


def test_reading_creates_no_directory_and_runs_nothing(store08, tmp_path, capfd):
    db = records_file(store08)
    gone = tmp_path / "gone"
    sqlite_exec(
        db,
        f"UPDATE django_store_datastore SET parameters = "
        f"'{{''root'': ''{gone}/data/' || id || '''}}'",
        f"UPDATE django_store_launchmode SET parameters = "
        f"'{{''working_directory'': ''{gone}/work'', ''options'': None}}'",
        f"UPDATE django_store_repository SET url = '{gone}/repo', upstream = NULL",
        # a version Sumatra would get by running the program, a path it would look up
        "UPDATE django_store_executable SET version = '', path = 'python' WHERE id = 1",
    )
    records = records_of(store08)
    result = compare(store08, store08)

    assert result.ok and result.records == 7
    assert not gone.exists()
    data = next(iter(records.values()))
    assert data["datastore"]["parameters"]["root"].startswith(f"{gone}/data/")
    assert data["repository"] == {"url": f"{gone}/repo", "type": "GitRepository", "upstream": None}
    executables = {(d["executable"]["path"], d["executable"]["version"]) for d in records.values()}
    assert ("python", "") in executables  # the stored values, not PATH's or `--version`'s
    assert capfd.readouterr().out == ""


@pytest.mark.slow
def test_parallel_reading_gives_the_same_answer(tmp_path, capfd):
    generated = generate_store(tmp_path / "g.db", 300, seed=3, projects=2)
    changed = private_copy(generated.path, tmp_path, "changed.sqlite")
    sqlite_exec(
        changed,
        "UPDATE django_store_record SET reason = 'other' WHERE db_id IN (5, 250)",
        "DELETE FROM django_store_record WHERE db_id = 17",
    )
    serial = compare(generated.path, changed, parallel=False)
    parallel = compare(generated.path, changed, parallel=True)
    assert serial == parallel
    assert (serial.records, serial.source_records, serial.target_records) == (299, 300, 299)
    assert sorted(d.field for d in serial.differences) == ["reason", "reason", "record"]
    assert capfd.readouterr().out == ""


@pytest.mark.slow  # a second process reads one side
def test_a_reading_process_that_dies_is_one_error_line_not_a_traceback(
    store08, tmp_path, monkeypatch
):
    """The second process reading one side ends without a word (killed, out of memory):
    the user gets a `RecordReadError` (exit code 2) naming the store, not a RuntimeError."""
    monkeypatch.setattr(remote, "_CHILD", "import os; os._exit(9)")
    db = records_file(store08)
    with pytest.raises(RecordReadError) as caught:
        compare(db, private_copy(db, tmp_path, "copy.sqlite"), parallel=True)
    assert caught.value.exit_code == 2
    assert str(caught.value) == (
        f"the process reading {tmp_path / 'copy.sqlite'} ended unexpectedly (exit code 9)"
    )


@pytest.mark.slow
def test_shared_labels_orphan_records_and_unreadable_records_are_compared(store08, tmp_path):
    db = records_file(store08)
    first, last = label_of(db, 1), label_of(db, 7)
    changed = private_copy(db, tmp_path, "changed.sqlite")
    sqlite_exec(changed, f"UPDATE django_store_record SET label = '{first}' WHERE db_id = 7")
    result = compare(db, changed)
    assert {(d.label, d.source, d.target) for d in result.differences} == {
        (f"{first} (db_id 7)", "missing", "present"),  # the second record labelled `first`
        (last, "present", "missing"),
    }
    assert result.records == 6
    assert str(result.differences[0]).endswith("missing in the source")

    # a record in no project (Sumatra cannot list it) is still read, and first
    sqlite_exec(changed, "UPDATE django_store_record SET project_id = NULL WHERE db_id = 2")
    records = records_of(changed)
    assert next(iter(records)) == (None, label_of(db, 2))
    shared = [d for p, label, d in iter_records_of(changed) if label == first]
    assert [d["_db_id"] for d in shared] == [1, 7]

    # Sumatra cannot rebuild these records: their stored values are still compared
    sqlite_exec(changed, "UPDATE django_store_launchmode SET type = 'NoSuchLaunchMode'")
    broken = private_copy(changed, tmp_path, "broken.sqlite")
    sqlite_exec(broken, "UPDATE django_store_record SET reason = 'other' WHERE db_id = 4")
    unreadable = [data for _, _, data in iter_records_of(changed)]
    assert all("NoSuchLaunchMode" in data["_unreadable"] for data in unreadable)
    result = compare(changed, broken)
    assert [(d.label, d.field) for d in result.differences] == [(label_of(db, 4), "reason")]


def iter_records_of(location) -> list[tuple]:
    with resolve(str(location)) as store:
        return list(iter_records(inspect_store(store)))


# -- the sample (`copy`'s default verification) -------------------------------------------


def compare_a_sample(source, target, **kwargs):
    with resolve(str(source)) as a, resolve(str(target)) as b:
        return compare_sample(inspect_store(a), inspect_store(b), **kwargs)


def test_a_sample_is_spread_over_the_ids_and_holds_each_projects_newest(tmp_path):
    generated = generate_store(tmp_path / "g.db", 300, seed=5, projects=2)
    ids = [i for (i,) in sqlite_rows(generated.path, "SELECT db_id FROM django_store_record")]
    newest = {
        i
        for (i,) in sqlite_rows(
            generated.path, "SELECT max(db_id) FROM django_store_record GROUP BY project_id"
        )
    }
    with resolve(str(generated.path)) as store:
        sample, population = sample_ids(inspect_store(store), 30)
        everything, _ = sample_ids(inspect_store(store), 300)
    assert population == 300 and sorted(everything) == sorted(ids)
    assert newest <= set(sample) and len(newest) == 2
    every_tenth = set(sorted(ids)[::10])  # evenly, in id order, whatever the storage order
    assert every_tenth <= set(sample) <= every_tenth | newest


def test_a_sampled_record_that_differs_or_is_missing_is_named(tmp_path):
    generated = generate_store(tmp_path / "g.db", 300, seed=3, projects=2)
    sampled = sorted(
        i for (i,) in sqlite_rows(generated.path, "SELECT db_id FROM django_store_record")
    )[::10]
    changed = private_copy(generated.path, tmp_path, "changed.sqlite")
    sqlite_exec(
        changed,
        f"UPDATE django_store_record SET reason = 'other' WHERE db_id = {sampled[3]}",
        f"DELETE FROM django_store_record WHERE db_id = {sampled[5]}",
        f"UPDATE django_store_record SET reason = 'unseen' WHERE db_id = {sampled[5] + 1}",
    )
    result = compare_a_sample(generated.path, changed, size=30)
    assert result.population == 300
    assert sorted((d.field, d.label.split()[-1]) for d in result.differences) == [
        ("reason", f"{sampled[3]})"),
        ("record", f"{sampled[5]})"),
    ]
    assert (result.source_records, result.target_records) == (result.records + 1, result.records)
    assert result.records >= 29 and result.differing_records == 2
    # the record outside the sample is the row checksums' to find (test_copy), not ours
    assert compare_a_sample(generated.path, generated.path, size=30).ok


def test_a_sample_read_on_two_threads_compares_both_halves(tmp_path):
    """Where threads read both stores alike (snapshots), each half of the target's side
    is read by its own thread: a difference in either half is named."""
    generated = generate_store(tmp_path / "g.db", 300, seed=4, projects=2)
    ids = sorted(i for (i,) in sqlite_rows(generated.path, "SELECT db_id FROM django_store_record"))
    changed = private_copy(generated.path, tmp_path, "changed.sqlite")
    sqlite_exec(
        changed,
        f"UPDATE django_store_record SET reason = 'other' WHERE db_id IN ({ids[10]}, {ids[250]})",
    )
    with (
        source_snapshot(resolve(str(generated.path))) as a,
        source_snapshot(resolve(str(changed))) as b,
    ):
        target = inspect_store(b.store)
        assert threads_read(target)
        result = compare_sample(inspect_store(a.store), target, size=300)
    assert sorted(d.label.split()[-1] for d in result.differences) == [
        f"{ids[10]})",
        f"{ids[250]})",
    ]
    assert (result.records, result.differing_records) == (300, 2)


def test_a_small_store_is_sampled_whole(store08):
    result = compare_a_sample(store08, store08)
    assert (result.records, result.population, result.ok) == (7, 7, True)


@pytest.mark.pg
@pytest.mark.slow
def test_verify_refuses_a_store_against_itself(cli, store08, pg_database):
    result = cli("verify", store08, records_file(store08))
    one_error_line(result, "verify", 2, "SOURCE and TARGET are the same store")
    assert cli("copy", store08, pg_database, "--widen", "--switch", store08).code == 0
    other_spelling = pg_database.replace("127.0.0.1", "localhost")
    for pair in [(store08, pg_database), (pg_database, other_spelling)]:
        result = cli("verify", *pair)  # the project's store is now the target
        one_error_line(result, "verify", 2, "SOURCE and TARGET are the same store")


def _by_content(data: dict) -> dict:
    """Unordered lists (the store keeps no order for them) in one order, for comparing."""
    import json

    for name in ("input_data", "output_data", "dependencies", "platforms"):
        data[name] = sorted(data[name], key=lambda v: json.dumps(v, sort_keys=True))
    return data


@pytest.mark.parametrize("generation", ["0.8", "0.7", "0.6", "0.5", "0.4"])
def test_the_batched_reader_yields_what_sumatras_models_yield_record_by_record(
    cli, tmp_path, generation
):
    """The chunked reader (stand-ins, shared rows memoised, links and tags prefetched)
    against plain Django model instances, each record's related rows fetched by its own
    managers, one record at a time, through `to_sumatra()` and `record2dict` (`canonical`).
    Every generation, carried into today's schema by a copy (the layout both can read)."""
    from sumatra.recordstore.django_store import models as sm

    from smtmigrate.records.reader import canonical
    from smtmigrate.records.sumatra_compat import TAGS_ATTR, sumatra_reading

    copied = tmp_path / "copied.sqlite"
    assert cli("copy", FIXTURES / f"sumatra-{generation}", copied, "--quiet").code == 0
    tags = tags_by_label(copied, "0.8")
    with resolve(str(copied)) as store, sumatra_reading():
        batched = [(p, label, data) for p, label, data in iter_records(inspect_store(store))]
        one_by_one = []
        for record in sm.Record._base_manager.using(store.alias).order_by("db_id"):
            setattr(record, TAGS_ATTR, tags[record.label])  # Sumatra asks `default` for them
            one_by_one.append((record.project_id, record.label, canonical(record)))
    assert len(batched) == len(one_by_one) >= 3
    assert not any("_unreadable" in data for _, _, data in one_by_one)
    assert any(data["tags"] for _, _, data in one_by_one)
    expected = {(p, label): _by_content(data) for p, label, data in one_by_one}
    got = {(p, label): _by_content(data) for p, label, data in batched}
    assert got == expected

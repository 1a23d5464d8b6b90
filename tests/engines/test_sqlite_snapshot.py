"""Every read of a source sees one state of it, while a writer keeps changing it.

A writer process (snapshot_writer.py) changes a copy of the fixture store in a loop and
logs every state it committed; copy, verify and drop-recreate's backup run meanwhile. The
oracle reads the target with plain sqlite3 / psycopg2: it must be exactly one committed
state of the source (tags string and tag rows agree, no orphan, no foreign key failure),
and the output's "as of" count must be the target's record count.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2
import pytest

from smtmigrate.locations import resolve
from smtmigrate.records import remote as records_module

from ..conftest import fresh_database, pg_query, records_file, sqlite_rows

WRITER = Path(__file__).parents[1] / "snapshot_writer.py"
FIXTURE_RECORDS = 7  # records in fixtures/sumatra-0.8
TAG = "snapshot-toggle"
BASE_TAGS = "baseline,_finished_"
LOST = 3  # snapshot_writer.py's exit code when its database was dropped


class Writer:
    def __init__(self, log: Path) -> None:
        self.log = log

    def commits(self) -> list[tuple[int, float]]:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return [(int(n), float(t)) for n, t in (line.split() for line in lines if line)]

    def states(self) -> set[int]:
        return {n for n, _ in self.commits()}

    def committed_between(self, start: float, end: float) -> int:
        return sum(start <= t <= end for _, t in self.commits())


@contextmanager
def writer(
    mode: str, store: str | Path, tmp_path: Path, *, lost_ok: bool = False
) -> Iterator[Writer]:
    """Run the writer on `store` until the block ends; it has committed a few states
    before the block starts."""
    log, stop = tmp_path / f"{mode}.log", tmp_path / f"{mode}.stop"
    log.unlink(missing_ok=True)
    stop.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    process = subprocess.Popen(
        [sys.executable, str(WRITER), mode, str(store), str(log), str(stop)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    handle = Writer(log)
    try:
        deadline = time.monotonic() + 60
        while len(handle.commits()) < 3:
            assert process.poll() is None, process.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the writer committed nothing"
            time.sleep(0.05)
        yield handle
    finally:
        stop.touch()
        try:
            _, err = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    allowed = (0, LOST) if lost_ok else (0,)
    assert process.returncode in allowed, err[-2000:]


def timed_cli(cli, *args):
    started = time.time()
    result = cli(*args)
    return result, started, time.time()


def query(store: str | Path, sql: str) -> list[tuple]:
    if str(store).startswith("postgresql://"):
        return pg_query(str(store), sql)
    return sqlite_rows(Path(store), sql)


def record_content_type(store) -> int:
    ((ct,),) = query(
        store,
        "SELECT id FROM django_content_type WHERE app_label = 'django_store' AND model = 'record'",
    )
    return ct


def assert_no_orphans(store) -> None:
    """Every link points at a record that is there (what a half-read store breaks)."""
    ct = record_content_type(store)
    assert (
        query(
            store,
            "SELECT object_id FROM django_store_taggeditem WHERE content_type_id = "
            f"{ct} AND object_id NOT IN (SELECT db_id FROM django_store_record)",
        )
        == []
    )
    for table in ("platforms", "dependencies", "input_data"):
        assert (
            query(
                store,
                f"SELECT record_id FROM django_store_record_{table} "
                "WHERE record_id NOT IN (SELECT db_id FROM django_store_record)",
            )
            == []
        ), table


def record_count(store) -> int:
    return query(store, "SELECT count(*) FROM django_store_record")[0][0]


def assert_toggle_state(store, states: set[int]) -> int:
    """Record 1 is exactly as the writer left it after one of its commits."""
    ((reason, tags),) = query(store, "SELECT reason, tags FROM django_store_record WHERE db_id = 1")
    assert reason.startswith("toggle "), reason
    n = int(reason.split()[1])
    assert n in states
    tagged = query(
        store,
        "SELECT count(*) FROM django_store_taggeditem ti JOIN django_store_tag t "
        f"ON t.id = ti.tag_id WHERE ti.object_id = 1 AND t.name = '{TAG}'",
    )[0][0]
    expected = n % 2 == 1
    assert (tags, tagged) == ((f"{BASE_TAGS},{TAG}", 1) if expected else (BASE_TAGS, 0)), n
    assert record_count(store) == FIXTURE_RECORDS
    assert_no_orphans(store)
    return n


def assert_insert_state(store, states: set[int]) -> int:
    """The first k inserts of the writer, each whole (record, platform link, tag), for a
    k it committed."""
    labels = [label for (label,) in query(store, "SELECT label FROM django_store_record")]
    numbers = sorted(int(label[2:]) for label in labels if label.startswith("w-"))
    k = len(numbers)
    assert numbers == list(range(1, k + 1))
    assert k in states
    assert len(labels) == FIXTURE_RECORDS + k
    ct = record_content_type(store)
    for link in (
        "SELECT count(*) FROM django_store_record_platforms p JOIN django_store_record r "
        "ON r.db_id = p.record_id WHERE substr(r.label, 1, 2) = 'w-'",
        "SELECT count(*) FROM django_store_taggeditem ti JOIN django_store_record r "
        f"ON r.db_id = ti.object_id WHERE ti.content_type_id = {ct} "
        "AND substr(r.label, 1, 2) = 'w-'",
    ):
        assert query(store, link) == [(k,)], link
    assert_no_orphans(store)
    return k


def copy_json(result) -> dict:
    assert result.code == 0, result
    return json.loads(result.out)


@contextmanager
def target_for(kind: str, tmp_path: Path) -> Iterator[str | Path]:
    """A fresh PostgreSQL database, or the path of a new SQLite store."""
    if kind == "postgresql":
        with fresh_database() as url:
            yield url
    else:
        path = tmp_path / "out.sqlite"
        path.unlink(missing_ok=True)
        yield path


def fixture_in_postgres(cli, project: Path, url: str) -> str:
    result = cli("copy", project, url, "--widen", "--verify", "rows", "--quiet")
    assert result.code == 0, result
    return url


# --------------------------------------------------------------------------- copy


@pytest.mark.parametrize("target_kind", ["postgresql", "sqlite"])
@pytest.mark.pg
@pytest.mark.slow
def test_copy_while_tags_toggle_is_one_state(cli, store08, tmp_path, target_kind):
    source = records_file(store08)
    for _ in range(2):
        with writer("toggle", source, tmp_path) as w, target_for(target_kind, tmp_path) as target:
            result, started, ended = timed_cli(
                cli, "copy", store08, target, "--widen", "--format", "json"
            )
            data = copy_json(result)
            assert w.committed_between(started, ended) > 0  # it really ran during the copy
            assert_toggle_state(target, w.states())
            assert data["snapshot"]["records"] == record_count(target) == FIXTURE_RECORDS
            assert data["verification"]["ok"]


@pytest.mark.parametrize("target_kind", ["postgresql", "sqlite"])
@pytest.mark.pg
@pytest.mark.slow
def test_copy_while_records_are_inserted_is_one_state(cli, store08, tmp_path, target_kind):
    source = records_file(store08)
    with writer("insert", source, tmp_path) as w, target_for(target_kind, tmp_path) as target:
        result, started, ended = timed_cli(
            cli, "copy", store08, target, "--widen", "--format", "json"
        )
        data = copy_json(result)  # no foreign key failure
        assert w.committed_between(started, ended) > 0
        k = assert_insert_state(target, w.states())
        snapshot = data["snapshot"]
        assert snapshot["records"] == record_count(target) == FIXTURE_RECORDS + k
        assert snapshot["changed_since"]["added"] > 0  # the writer went on after it
        assert snapshot["changed_since"]["removed"] == 0


@pytest.mark.pg
@pytest.mark.slow
def test_the_table_output_says_what_was_left_behind(cli, store08, tmp_path):
    with writer("insert", records_file(store08), tmp_path), fresh_database() as url:
        result = cli("copy", store08, url, "--widen")
        assert result.code == 0, result
        records = record_count(url)
    assert "Source as of " in result.out
    assert f" UTC: {records} records" in result.out
    assert "records were added to the source after the snapshot and are NOT in the target" in (
        " ".join(result.out.split())
    )


@pytest.mark.pg
@pytest.mark.slow
def test_copy_while_sumatra_saves_records(cli, store08, tmp_path):
    """Sumatra's own save (statement by statement): every state of the store is one it
    had, so the target must hold no orphan, and every record but the newest must be
    whole (the newest may be caught half-saved, as the source was at that moment)."""
    source = records_file(store08)
    with writer("sumatra", source, tmp_path) as w, fresh_database() as url:
        result, started, ended = timed_cli(cli, "copy", store08, url, "--widen", "--format", "json")
        data = copy_json(result)
        assert w.committed_between(started, ended) > 0
        assert_no_orphans(url)
        assert data["snapshot"]["records"] == record_count(url)
        assert data["snapshot"]["changed_since"]["added"] > 0
        copied = pg_query(
            url,
            "SELECT r.label, string_agg(t.name, ',' ORDER BY t.name) FROM django_store_record r "
            "LEFT JOIN django_store_taggeditem ti ON ti.object_id = r.db_id "
            "LEFT JOIN django_store_tag t ON t.id = ti.tag_id "
            "WHERE substr(r.label, 1, 2) = 'w-' GROUP BY r.label, r.db_id ORDER BY r.db_id",
        )
    final = dict(
        sqlite_rows(
            source,
            "SELECT r.label, group_concat(t.name, ',') FROM (SELECT * FROM django_store_record) r "
            "JOIN django_store_taggeditem ti ON ti.object_id = r.db_id "
            "JOIN django_store_tag t ON t.id = ti.tag_id WHERE substr(r.label, 1, 2) = 'w-' "
            "GROUP BY r.db_id",
        )
    )
    assert copied, "no record saved by Sumatra was copied"
    for label, tags in copied[:-1]:
        assert sorted(tags.split(",")) == sorted(final[label].split(",")), label


# --------------------------------------------------------------------------- verify


@pytest.mark.slow
def test_verify_reads_each_side_once(cli, store08, tmp_path, monkeypatch):
    """Rows, records and the "as of" count of the live side all come from one state; the
    record reader runs in its own process here (as on big stores) and reads it too."""
    monkeypatch.setattr(records_module, "PARALLEL_MIN", 0)
    static = tmp_path / "static.sqlite"
    assert cli("copy", store08, static, "--quiet").code == 0
    with writer("insert", records_file(store08), tmp_path) as w:
        result, started, ended = timed_cli(
            cli, "verify", static, records_file(store08), "--format", "json"
        )
    assert result.code == 1, result  # the live store has more records
    data = json.loads(result.out)
    assert w.committed_between(started, ended) > 0
    rows = {t["table"]: t["target_rows"] for t in data["tables"]}
    k = rows["django_store_record"] - FIXTURE_RECORDS
    assert k in w.states()
    assert rows["django_store_record_platforms"] == FIXTURE_RECORDS + k
    assert rows["django_store_taggeditem"] == 22 + k
    assert data["records"]["target_records"] == FIXTURE_RECORDS + k
    assert data["snapshots"]["target"]["records"] == FIXTURE_RECORDS + k
    assert data["snapshots"]["target"]["changed_since"]["added"] > 0


# --------------------------------------------------------------------------- PostgreSQL source


@pytest.mark.parametrize("mode", ["toggle", "insert"])
@pytest.mark.pg
@pytest.mark.slow
def test_postgres_source_copied_into_sqlite_while_written(cli, store08, tmp_path, mode):
    check = assert_toggle_state if mode == "toggle" else assert_insert_state
    with fresh_database() as url:
        fixture_in_postgres(cli, store08, url)
        for attempt in range(2):
            target = tmp_path / f"out{attempt}.sqlite"
            with writer(mode, url, tmp_path) as w:
                result, started, ended = timed_cli(cli, "copy", url, target, "--format", "json")
                data = copy_json(result)
                assert w.committed_between(started, ended) > 0
            check(target, w.states())
            assert data["snapshot"]["records"] == record_count(target)


@pytest.mark.pg
@pytest.mark.slow
def test_postgres_side_of_verify_read_in_one_snapshot_by_two_processes(
    cli, store08, tmp_path, monkeypatch
):
    """The record reader's own process joins the exported snapshot of the PostgreSQL side."""
    monkeypatch.setattr(records_module, "PARALLEL_MIN", 0)
    static = tmp_path / "static.sqlite"
    assert cli("copy", store08, static, "--quiet").code == 0
    with fresh_database() as url:
        fixture_in_postgres(cli, store08, url)
        with writer("insert", url, tmp_path) as w:
            result, started, ended = timed_cli(cli, "verify", static, url, "--format", "json")
        assert result.code == 1, result
        data = json.loads(result.out)
        assert w.committed_between(started, ended) > 0
        k = data["snapshots"]["target"]["records"] - FIXTURE_RECORDS
        assert k in w.states()
        rows = {t["table"]: t["target_rows"] for t in data["tables"]}
        assert rows["django_store_record"] == rows["django_store_record_platforms"] == 7 + k
        assert data["records"]["target_records"] == FIXTURE_RECORDS + k


# --------------------------------------------------------------------------- drop-recreate


@pytest.mark.pg
@pytest.mark.slow
def test_drop_recreate_backup_while_records_are_inserted(cli, store08, tmp_path):
    """The backup is one state; records written after it would be lost: nothing dropped."""
    backup = tmp_path / "backup.sqlite"
    with fresh_database() as url:
        fixture_in_postgres(cli, store08, url)
        with writer("insert", url, tmp_path) as w:
            result, started, ended = timed_cli(
                cli, "drop-recreate", url, "--yes", "--backup", backup
            )
        assert w.committed_between(started, ended) > 0
        assert result.code == 1, result
        assert "nothing was dropped" in result.err
        k = assert_insert_state(backup, w.states())
        assert "as of " in result.out and f"{FIXTURE_RECORDS + k} records" in result.out
        assert record_count(url) == FIXTURE_RECORDS + len(w.states())  # still all there


@pytest.mark.pg
@pytest.mark.slow
def test_drop_recreate_backup_while_tags_toggle(cli, store08, tmp_path):
    backup = tmp_path / "backup.sqlite"
    with fresh_database() as url:
        fixture_in_postgres(cli, store08, url)
        with writer("toggle", url, tmp_path, lost_ok=True) as w:
            result, started, ended = timed_cli(
                cli, "drop-recreate", url, "--yes", "--backup", backup
            )
        assert result.code == 0, result
        assert w.committed_between(started, ended) > 0
        assert_toggle_state(backup, w.states())
        assert record_count(url) == 0  # recreated


# --------------------------------------------------------------------------- the snapshot file


def test_snapshot_file_is_private_temporary_and_honours_tmpdir(store08, tmp_path, monkeypatch):
    from smtmigrate.snapshot import SNAPSHOT_PREFIX, source_snapshot

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    with resolve(str(store08)) as store:
        with source_snapshot(store) as snapshot:
            path = snapshot.store.path
            assert path.parent.parent == scratch
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
            assert snapshot.store.display == store.display
            assert snapshot.total == FIXTURE_RECORDS
        assert not path.parent.exists()
        with pytest.raises(KeyboardInterrupt), source_snapshot(store) as snapshot:
            path = snapshot.store.path
            raise KeyboardInterrupt
        assert not path.parent.exists()
    # a killed run's directory (its process is gone) is removed by the next one
    stale = scratch / f"{SNAPSHOT_PREFIX}999999999-x"
    stale.mkdir()
    with resolve(str(store08)) as store, source_snapshot(store):
        assert not stale.exists()
    assert list(scratch.iterdir()) == []


def test_wal_content_not_yet_checkpointed_is_in_the_snapshot(cli, store08, tmp_path):
    from smtmigrate.snapshot import source_snapshot

    source = records_file(store08)
    writer_conn = sqlite3.connect(source)
    writer_conn.execute("PRAGMA journal_mode = WAL")
    writer_conn.execute("PRAGMA wal_autocheckpoint = 0")
    writer_conn.execute("UPDATE django_store_record SET reason = 'only in the wal' WHERE db_id = 1")
    writer_conn.commit()
    try:
        assert Path(f"{source}-wal").stat().st_size > 0
        with resolve(str(store08)) as store, source_snapshot(store) as snapshot:
            header = snapshot.store.path.read_bytes()[18:20]
            assert header == b"\x01\x01"  # a rollback-journal file, readable read-only
        target = tmp_path / "out.sqlite"
        result = cli("copy", store08, target, "--format", "json")
        assert copy_json(result)["verification"]["ok"]
    finally:
        writer_conn.close()
    assert sqlite_rows(target, "SELECT reason FROM django_store_record WHERE db_id = 1") == [
        ("only in the wal",)
    ]


def test_a_store_locked_by_a_writer_ends_with_one_line(cli, store08, monkeypatch):
    monkeypatch.setattr("smtmigrate.locations.SQLITE_LOCK_TIMEOUT", 0.2)
    holder = sqlite3.connect(records_file(store08), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result = cli("audit", store08)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.code == 2
    assert "is locked by another writer" in result.err
    assert "Traceback" not in result.err


@pytest.mark.pg
def test_pg_snapshot_is_read_only_and_ends_with_the_block(store08, cli):
    from smtmigrate.snapshot import source_snapshot

    with fresh_database() as url:
        fixture_in_postgres(cli, store08, url)
        with resolve(url) as store:
            with source_snapshot(store) as snapshot:
                assert snapshot.total == FIXTURE_RECORDS
                conn = psycopg2.connect(url)
                conn.autocommit = True
                conn.cursor().execute("DELETE FROM django_store_record_platforms")
                conn.close()
                with snapshot.store.connection.cursor() as cursor:
                    cursor.execute("SELECT count(*) FROM django_store_record_platforms")
                    assert cursor.fetchone()[0] == FIXTURE_RECORDS  # the snapshot's state
                    with pytest.raises(Exception, match="read-only"):
                        cursor.execute("DELETE FROM django_store_tag")
            assert not store.connection.in_atomic_block

"""Damaged SQLite stores (issue 31): real damaged files, made from a copy of the bundled
Sumatra 0.8 project's store by writing bytes where SQLite's own pages are, and a hot
journal left by a real writer killed with SIGKILL mid-transaction. Every command that
reads a store gives each its answer: the audit a `damaged` finding (exit 1), copy / move /
merge / verify one refusing line (exit 2), `--copy-readable` what can be read."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import one_error_line, pg_query, records_file, sqlite_rows

DAMAGES = ("index", "table", "truncated")
MALFORMED = "database disk image is malformed"
INDEX = "django_store_taggeditem_object_id_a99f79f0"  # a one-page index: its root is a leaf
TABLE = "django_store_record"  # three pages: an interior root and two leaves
FIXTURE_STORE = Path(__file__).parents[2] / "fixtures" / "sumatra-0.8" / ".smt" / "records"


def page_of(path: Path, name: str, kind: str) -> int:
    """A page of table/index `name`: its root, or its first leaf (dbstat)."""
    if kind == "root":
        ((page,),) = sqlite_rows(path, "SELECT rootpage FROM sqlite_master WHERE name = ?", (name,))
    else:
        ((page,), *_) = sqlite_rows(
            path,
            "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY pageno",
            (name,),
        )
    return page


def overwrite_cell_pointers(path: Path, page: int) -> None:
    """0xff over the page's cell pointer array (after a leaf page's 8-byte header): every
    cell now points past the end of the page, which SQLite's check reports."""
    (page_size,) = sqlite_rows(path, "PRAGMA page_size")[0]
    with path.open("r+b") as fh:
        fh.seek((page - 1) * page_size + 8)
        fh.write(b"\xff" * 64)


def overwrite_page_type(path: Path, page: int) -> None:
    """An invalid b-tree page type (0x00) in the page's header: SQLite refuses the page."""
    (page_size,) = sqlite_rows(path, "PRAGMA page_size")[0]
    with path.open("r+b") as fh:
        fh.seek((page - 1) * page_size)
        fh.write(b"\x00")


def damage(store: Path, kind: str) -> Path:
    """Damage the project's records file in place; the file."""
    path = records_file(store)
    if kind == "index":
        overwrite_cell_pointers(path, page_of(path, INDEX, "root"))
    elif kind == "table":  # a page type that does not exist: nothing on the page is read
        # (cell pointers past the page end made SQLite read stray bytes now and then)
        overwrite_page_type(path, page_of(path, TABLE, "leaf"))
    else:  # the last page lost, as by a copy cut short
        (page_size,) = sqlite_rows(path, "PRAGMA page_size")[0]
        with path.open("r+b") as fh:
            fh.truncate(path.stat().st_size - page_size)
    return path


@pytest.fixture(params=DAMAGES)
def damaged(request, store08) -> tuple[str, Path]:
    """A Sumatra project whose store is damaged one way."""
    original = records_file(store08).read_bytes()
    damage(store08, request.param)
    assert records_file(store08).read_bytes() != original
    return request.param, store08


def test_sqlite_itself_sees_the_damage(damaged):
    """The damage is real: SQLite's own check of the damaged file fails."""
    _, project = damaged
    connection = sqlite3.connect(records_file(project))
    try:
        said = connection.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.DatabaseError as exc:
        said = [(str(exc),)]
    finally:
        connection.close()
    assert said != [("ok",)]


def test_audit_reports_the_damage_as_a_finding(cli, damaged):
    kind, project = damaged
    result = cli("audit", project, "--format", "json")
    assert result.code == 1, result
    report = json.loads(result.out)
    found = [f for f in report["findings"] if f["kind"] == "damaged"]
    owner = "django_store_taggeditem" if kind == "index" else TABLE
    assert [f["table"] for f in found] == [owner], found
    if kind == "index":
        assert found[0]["detail"].startswith(f"index {INDEX}: On tree page ")
    elif kind == "table":  # SQLite 3.40.1's check says one or the other, at random
        said = found[0]["detail"]
        assert said.startswith("On tree page ") or said == MALFORMED, said
    else:
        assert found[0]["detail"].startswith("the file is truncated: ")
    damage = report["snapshot"]["damage"]
    assert damage["check"] == "quick_check" and damage["messages"]
    assert damage["only_indexes"] == (kind == "index")
    assert report["summary"]["counts"]["damaged"] == 1
    table = cli("audit", project)
    assert table.code == 1
    assert "finding(s): the store is damaged (SQLite's own check fails)" in table.out
    assert "--copy-readable" in table.out


def test_an_undamaged_store_is_checked_and_ok(cli, store08):
    report = json.loads(cli("audit", store08, "--format", "json").out)
    assert report["snapshot"]["check"]["pragma"] == "quick_check"
    assert report["snapshot"]["check"]["ok"] is True
    assert report["snapshot"]["damage"] is None
    assert report["summary"]["counts"]["damaged"] == 0


def test_copy_refuses_a_damaged_store(cli, damaged, tmp_path):
    kind, project = damaged
    target = tmp_path / "copy.sqlite"
    result = cli("copy", project, target)
    one_error_line(result, "copy", 2, "is damaged: SQLite's quick_check says: ")
    assert "--copy-readable" in result.err
    if kind == "index":
        assert f"[index {INDEX} of table django_store_taggeditem]" in result.err
        assert "VACUUM INTO 'NEW'" in result.err
    else:
        assert f"[table {TABLE}]" in result.err
        assert f"sqlite3 {records_file(project).resolve()} .recover | sqlite3 NEW" in result.err
    assert not target.exists()
    assert not list(tmp_path.glob(".copy.sqlite*")), list(tmp_path.iterdir())


def test_copy_readable_copies_what_can_be_read_and_says_what_not(cli, damaged, tmp_path):
    kind, project = damaged
    target = tmp_path / "copy.sqlite"
    result = cli("copy", project, target, "--copy-readable", "--format", "json")
    assert result.code == 0, result
    damage = json.loads(result.out)["snapshot"]["damage"]
    assert damage["readable_copy"] is True
    assert sqlite_rows(target, "PRAGMA quick_check") == [("ok",)]
    records = sqlite_rows(target, f"SELECT count(*) FROM {TABLE}")[0][0]
    if kind == "index":  # every row read; the index rebuilt from them
        assert damage["unreadable"] == [] and damage["orphans_left_out"] == {}
        assert records == 7
        assert sqlite_rows(target, "SELECT count(*) FROM django_store_taggeditem") == [(22,)]
        return
    ((lost),) = damage["unreadable"]
    assert lost["table"] == TABLE and lost["rows_read"] == records
    assert 0 < records < 7, records  # rows before (or after) the damage are kept
    assert lost["rows_expected"] == 7  # counted through an index still whole
    assert damage["orphans_left_out"]["django_store_record_platforms"] == 7 - records
    text = cli("copy", project, tmp_path / "again.sqlite", "--copy-readable")
    assert text.code == 0, text
    assert f"NOT READ: {TABLE}: {records:,} rows read, {7 - records} could not be" in text.out
    assert "LEFT OUT: django_store_record_platforms: " in text.out
    quiet = cli("copy", project, tmp_path / "quiet.sqlite", "--copy-readable", "--quiet")
    assert quiet.code == 0 and quiet.out == ""
    assert f"NOT READ: {TABLE}" in quiet.err  # lost rows are never silent


def test_copy_readable_of_a_file_cut_before_its_schema(cli, store08, tmp_path):
    path = records_file(store08)
    with path.open("r+b") as fh:
        fh.truncate(path.stat().st_size // 2)
    result = cli("copy", store08, tmp_path / "copy.sqlite", "--copy-readable")
    one_error_line(result, "copy", 2, "is damaged beyond --copy-readable: not even its schema")
    audit = cli("audit", store08)
    assert audit.code == 1 and "the file is truncated: " in audit.out


def test_verify_refuses_a_damaged_store(cli, damaged, tmp_path):
    _, project = damaged
    pristine = tmp_path / "pristine.sqlite"
    pristine.write_bytes(FIXTURE_STORE.read_bytes())
    result = cli("verify", project, pristine)
    one_error_line(result, "verify", 2, "is damaged: SQLite's quick_check says: ")
    assert "Verified" not in result.out


def test_merge_refuses_a_damaged_store_or_reads_what_it_can(cli, damaged, tmp_path):
    kind, project = damaged
    target = tmp_path / "merged.sqlite"
    result = cli("merge", project, target)
    one_error_line(result, "merge", 2, "is damaged: SQLite's quick_check says: ")
    assert not target.exists()
    readable = cli("merge", project, target, "--copy-readable", "--verify", "rows")
    assert readable.code == 0, readable
    assert "WARNING: " in readable.out and "is damaged" in readable.out
    merged = sqlite_rows(target, f"SELECT count(*) FROM {TABLE}")[0][0]
    assert merged == 7 if kind == "index" else 0 < merged < 7


@pytest.mark.pg
@pytest.mark.slow
def test_move_refuses_a_damaged_store(cli, home, damaged, new_database):
    _, project = damaged
    before = (project / ".smt" / "project").read_text()
    result = cli("move", project, new_database, "--yes")
    one_error_line(result, "move", 2, "is damaged: SQLite's quick_check says: ")
    assert "--copy-readable" in result.err
    assert (project / ".smt" / "project").read_text() == before  # still on its store
    name = new_database.rsplit("/", 1)[1]
    base = new_database.rsplit("/", 1)[0] + "/postgres"
    assert pg_query(base, "SELECT 1 FROM pg_database WHERE datname = %s", (name,)) == []


@pytest.mark.pg
@pytest.mark.slow
def test_move_copy_readable_moves_what_can_be_read(cli, home, store08, new_database):
    damage(store08, "index")
    result = cli("move", store08, new_database, "--yes", "--copy-readable")
    assert result.code == 0, result
    assert "Every row of every table was read: only indexes were damaged." in result.out
    assert pg_query(new_database, f"SELECT count(*) FROM {TABLE}") == [(7,)]


# -- a hot journal: a writer killed mid-transaction -------------------------------------

WRITER = """
import os, signal, sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA journal_mode = DELETE")
c.execute("PRAGMA cache_size = 1")  # changed pages spill into the store file itself
c.execute("BEGIN")
c.execute("UPDATE django_store_record SET reason = 'HALF-WRITTEN'")
c.execute("UPDATE django_store_datakey SET path = path || '.half'")
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.fixture
def hot(store08) -> Path:
    """The project's store as a writer killed mid-transaction left it: its store file
    holds half-written pages, its journal the pages as they were."""
    path = records_file(store08)
    before = path.read_bytes()
    killed = subprocess.run([sys.executable, "-c", WRITER, str(path)], timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert path.with_name("records-journal").stat().st_size > 0
    assert path.read_bytes() != before  # the half-written state is in the file
    return store08


HOT = "records-journal beside it is a hot journal"


@pytest.mark.slow
def test_a_hot_journal_is_refused_by_every_reader(cli, home, hot, tmp_path):
    """smtmigrate opens stores read-only: it does not roll the journal back, and never
    reads the half-written file; every command says how to let SQLite roll it back."""
    journal = records_file(hot).with_name("records-journal")
    kept = journal.read_bytes()
    one_error_line(cli("audit", hot), "audit", 2, HOT)
    one_error_line(cli("copy", hot, tmp_path / "c.sqlite"), "copy", 2, HOT)
    one_error_line(cli("copy", hot, tmp_path / "c.sqlite", "--copy-readable"), "copy", 2, HOT)
    other = tmp_path / "other.sqlite"
    other.write_bytes(FIXTURE_STORE.read_bytes())
    one_error_line(cli("verify", hot, other), "verify", 2, HOT)
    one_error_line(cli("merge", hot, tmp_path / "m.sqlite"), "merge", 2, HOT)
    assert not (tmp_path / "c.sqlite").exists() and not (tmp_path / "m.sqlite").exists()
    assert journal.read_bytes() == kept  # the store is left as it was found


@pytest.mark.pg
@pytest.mark.slow
def test_a_hot_journal_is_refused_by_move(cli, home, hot, new_database):
    one_error_line(cli("move", hot, new_database, "--yes"), "move", 2, HOT)


@pytest.mark.slow
def test_once_rolled_back_the_store_copies_its_committed_state(cli, hot, tmp_path):
    path = records_file(hot)
    connection = sqlite3.connect(path)  # read-write: SQLite rolls the journal back
    assert connection.execute("PRAGMA quick_check").fetchall() == [("ok",)]
    connection.close()
    assert not path.with_name("records-journal").exists()
    target = tmp_path / "c.sqlite"
    assert cli("copy", hot, target).code == 0
    assert sqlite_rows(target, f"SELECT count(*) FROM {TABLE} WHERE reason = 'HALF-WRITTEN'") == [
        (0,)
    ]
    assert sqlite_rows(
        target, "SELECT count(*) FROM django_store_datakey WHERE path LIKE '%.half'"
    ) == [(0,)]


def test_a_damaged_wal_store_copied_page_by_page_keeps_its_damage(cli, store08, tmp_path):
    """A WAL store's snapshot is made by SQLite's backup API, which copies pages without
    reading them: the damage reaches the snapshot, and its check."""
    path = damage(store08, "index")
    connection = sqlite3.connect(path)
    assert connection.execute("PRAGMA journal_mode = WAL").fetchone() == ("wal",)
    connection.close()
    result = cli("audit", store08, "--format", "json")
    assert result.code == 1, result
    assert [f["table"] for f in json.loads(result.out)["findings"] if f["kind"] == "damaged"] == [
        "django_store_taggeditem"
    ]
    one_error_line(cli("copy", store08, tmp_path / "c.sqlite"), "copy", 2, "is damaged: ")

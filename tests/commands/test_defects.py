"""Defects a new user found (issue 11): each test failed on the code before its fix."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import sql

from smtmigrate import interrupts
from smtmigrate.copy import SilentEvents, copy_store, plan_copy
from smtmigrate.identities import IDENTITY, INDEX_PREFIX
from smtmigrate.locations import resolve, resolve_target
from smtmigrate.snapshot import source_snapshot

from ..conftest import (
    FIXTURES,
    PG_URL,
    admin_execute,
    generated_store,
    pg_query,
    pg_url_for,
    records_file,
    sqlite_exec,
    sqlite_rows,
    sumatra_schema,
)
from ..storegen import generate_store
from .test_bad_input import scram_server  # noqa: F401  (a session fixture)

SMTMIGRATE = [sys.executable, "-m", "smtmigrate"]


@contextmanager
def immutable(path: Path) -> Iterator[Path]:
    """`path` made immutable (chattr +i): root may not write it or into it, as no mode bit
    could make it (root ignores those)."""
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
        pytest.skip(f"chattr +i does not work on {path}'s file system: nothing is unwritable")
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("HOME", str(path))
    monkeypatch.delenv("PGPASSFILE", raising=False)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    return path


def project_text(project: Path) -> str:
    return (project / ".smt" / "project").read_text()


def public_tables(url: str) -> int:
    return pg_query(url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")[0][0]


def one_error_line(result, command: str, code: int, text: str) -> None:
    assert result.code == code, result
    assert result.err.count("\n") == 1 and "Traceback" not in result.err, result.err
    assert result.err.startswith(f"smtmigrate {command}: error: "), result.err
    assert text in result.err, result.err


# -- copy --switch checks everything the switch needs before writing anything ------------


def test_copy_switch_of_a_project_whose_store_is_not_source(
    cli, home, store08, store07, pg_database
):
    before = project_text(store08)
    result = cli("copy", store07, pg_database, "--widen", "--switch", store08)
    assert result.code == 1, result
    assert "the project's store is" in result.err and "nothing was written" in result.err
    assert public_tables(pg_database) == 0  # nothing copied: a re-run is not refused
    assert project_text(store08) == before
    assert cli("copy", store07, pg_database, "--widen", "--switch", store07).code == 0


def test_copy_switch_into_a_project_whose_smt_cannot_be_written(cli, home, store08, pg_database):
    before = project_text(store08)
    with immutable(store08 / ".smt"):
        result = cli("copy", store08, pg_database, "--widen", "--switch", store08)
    one_error_line(result, "copy", 2, "cannot be written")
    assert public_tables(pg_database) == 0
    assert project_text(store08) == before


# -- files that cannot be written: one line, exit 2, nothing changed --------------------


def test_copy_into_a_directory_that_cannot_be_written(cli, store08, tmp_path):
    directory = tmp_path / "ro"
    directory.mkdir()
    with immutable(directory):
        result = cli("copy", store08, directory / "copy.sqlite")
    one_error_line(result, "copy", 2, f"{directory}: cannot write a new file here")
    assert list(directory.iterdir()) == []


@pytest.mark.parametrize("where", ["--backup", "cwd"])
def test_drop_recreate_backup_where_it_cannot_be_written(
    cli, store08, pg_database, tmp_path, monkeypatch, where
):
    assert cli("copy", store08, pg_database, "--widen", "--verify", "rows").code == 0
    directory = tmp_path / "ro"
    directory.mkdir()
    args = ["drop-recreate", pg_database, "--yes"]
    with immutable(directory):
        if where == "--backup":
            args += ["--backup", str(directory / "backup.sqlite")]
        else:
            monkeypatch.chdir(directory)
        result = cli(*args)
    one_error_line(result, "drop-recreate", 2, f"{directory}: cannot write a new file here")
    assert pg_query(pg_database, "SELECT count(*) FROM django_store_record") == [(7,)]  # kept


def test_switch_when_smt_cannot_be_written(cli, home, store08, tmp_path):
    copy = tmp_path / "copy.sqlite"
    assert cli("copy", store08, copy, "--verify", "rows").code == 0
    before = project_text(store08)
    with immutable(store08 / ".smt"):
        result = cli("switch", store08, copy)
    one_error_line(result, "switch", 2, "cannot be written")
    assert project_text(store08) == before


def test_switch_with_a_password_when_pgpass_cannot_be_written(cli, home, store08, pg_database):
    assert cli("copy", store08, pg_database, "--widen", "--verify", "rows").code == 0
    before = project_text(store08)
    with immutable(home):
        result = cli("switch", store08, pg_database.replace("://", "://root:secret@", 1))
    one_error_line(result, "switch", 2, "/.pgpass: cannot be written")
    assert "secret" not in result.err
    assert project_text(store08) == before
    assert not (store08 / ".smt" / "project.smtmigrate-backup").exists()


# -- switching again never loses the way back -------------------------------------------


def test_the_original_project_file_survives_repeated_switches(cli, home, store08, tmp_path):
    original = (store08 / ".smt" / "project").read_bytes()
    copies = [tmp_path / "a.sqlite", tmp_path / "b.sqlite"]
    for copy in copies:
        assert cli("copy", store08, copy, "--verify", "rows").code == 0
    for copy in copies:  # a second switch must not save a file that names the first copy
        result = cli("switch", store08, copy)
        assert result.code == 0, result
    assert "kept" in result.out and "earlier switch" in result.out
    assert json.loads(project_text(store08))["record_store"]["db_file"] == str(copies[1])
    back = cli("switch", store08, "--back")
    assert back.code == 0, back
    assert (store08 / ".smt" / "project").read_bytes() == original


def test_switch_to_the_store_the_project_names_changes_nothing(cli, home, store08):
    original = (store08 / ".smt" / "project").read_bytes()
    result = cli("switch", store08, records_file(store08))
    assert result.code == 0, result
    assert "already; nothing was changed" in result.out
    assert (store08 / ".smt" / "project").read_bytes() == original  # db_file stays relative
    assert not (store08 / ".smt" / "project.smtmigrate-backup").exists()


def test_switch_refuses_query_parameters_sumatra_ignores(cli, home, store08, pg_database):
    assert cli("copy", store08, pg_database, "--widen", "--verify", "rows").code == 0
    before = project_text(store08)
    result = cli("switch", store08, pg_database + "?sslmode=require", "--force")
    assert result.code == 1, result
    assert "Sumatra ignores the ?parameters" in result.err
    assert project_text(store08) == before


# -- verify of a store against itself ---------------------------------------------------


def test_verify_refuses_a_store_against_itself(cli, store08, pg_database):
    result = cli("verify", store08, records_file(store08))
    one_error_line(result, "verify", 2, "SOURCE and TARGET are the same store")
    assert cli("copy", store08, pg_database, "--widen", "--switch", store08).code == 0
    other_spelling = pg_database.replace("127.0.0.1", "localhost")
    for pair in [(store08, pg_database), (pg_database, other_spelling)]:
        result = cli("verify", *pair)  # the project's store is now the target
        one_error_line(result, "verify", 2, "SOURCE and TARGET are the same store")


# -- ~/.pgpass: the new line is the one libpq uses ------------------------------------------


def test_switch_puts_the_password_where_libpq_takes_it(cli, home, store08, scram_server):  # noqa: F811
    """A password-checking server: after the switch, libpq connects with no password
    given, from ~/.pgpass, although an older catch-all line names another password."""
    dbname = f"smtm_pgpass_{os.getpid()}"
    admin = psycopg2.connect(scram_server.url("postgres", password=scram_server.password))
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(dbname)))
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    try:
        url = scram_server.url(dbname, password=scram_server.password)
        assert cli("copy", store08, url, "--widen", "--verify", "rows").code == 0
        (home / ".pgpass").write_text("# mine\n*:*:*:postgres:OLDPW\n")
        os.chmod(home / ".pgpass", 0o600)
        result = cli("switch", store08, url)
        assert result.code == 0, result
        assert "added the password" in result.out
        lines = (home / ".pgpass").read_text().splitlines()
        assert lines[0] == "# mine" and lines[2] == "*:*:*:postgres:OLDPW"  # kept, after ours
        # libpq's own lookup, against a server that checks it
        plain = psycopg2.connect(scram_server.url(dbname))
        plain.close()
    finally:
        with admin.cursor() as cursor:
            cursor.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
            )
        admin.close()


# -- createdb --create-role by an admin that is no superuser ----------------------------


@pytest.fixture
def creator_admin() -> Iterator[str]:
    """A role with CREATEDB and CREATEROLE, not a superuser; removed with what it made."""
    name = f"smtm_creator_{os.getpid()}"
    admin_execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB CREATEROLE").format(sql.Identifier(name)))
    made = {"role": f"smtm_owner_{os.getpid()}", "database": f"smtm_db_{os.getpid()}"}
    yield name, made
    admin_execute(
        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(made["database"]))
    )
    for role in (made["role"], name):
        admin_execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_createdb_create_role_by_an_admin_that_is_no_superuser(cli, creator_admin):
    admin, made = creator_admin
    target = pg_url_for(made["database"]).replace("://", f"://{made['role']}@", 1)
    result = cli(
        "createdb",
        target,
        "--create-role",
        "--admin",
        pg_url_for("postgres").replace("://", f"://{admin}@", 1),
    )
    assert result.code == 0, result
    owner = pg_query(
        PG_URL,
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
        (made["database"],),
    )
    assert owner == [(made["role"],)]
    tables = pg_query(
        pg_url_for(made["database"]),
        "SELECT DISTINCT tableowner FROM pg_tables WHERE tablename LIKE 'django_store_%%'",
    )
    assert tables == [(made["role"],)]
    # the admin keeps no membership it did not have before
    assert pg_query(PG_URL, "SELECT pg_has_role(%s, %s, 'MEMBER')", (admin, made["role"])) == [
        (False,)
    ]


def test_createdb_interrupted_removes_the_role_and_database_it_made(creator_admin):
    """Ctrl-C once the database exists (while Sumatra's schema is built): what this run
    created goes, so that running it again starts afresh."""
    admin, made = creator_admin
    target = pg_url_for(made["database"]).replace("://", f"://{made['role']}@", 1)
    admin_url = pg_url_for("postgres").replace("://", f"://{admin}@", 1)
    createdb = start(
        "createdb", target, "--create-role", "--admin", admin_url, stdout=subprocess.PIPE
    )
    exists = "SELECT 1 FROM pg_database WHERE datname = %s"
    deadline = time.monotonic() + 60
    while not pg_query(PG_URL, exists, (made["database"],)):
        assert createdb.poll() is None and time.monotonic() < deadline, createdb.stderr.read()
        time.sleep(0.005)
    createdb.send_signal(signal.SIGINT)
    out, err = createdb.communicate(timeout=60)
    assert (createdb.returncode, err.strip()) == (130, "smtmigrate createdb: interrupted"), out
    assert pg_query(PG_URL, exists, (made["database"],)) == []
    assert pg_query(PG_URL, "SELECT 1 FROM pg_roles WHERE rolname = %s", (made["role"],)) == []


# -- Ctrl-C and a closed pipe ------------------------------------------------------------


@pytest.fixture(scope="module")
def big_store(tmp_path_factory, django_db_blocker) -> Path:
    """A clean store whose audit scans for about a second."""
    return generated_store(tmp_path_factory, django_db_blocker, 30_000, seed=5)


def start(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [*SMTMIGRATE, *map(str, args)],
        stderr=subprocess.PIPE,
        text=True,
        # a test runner may have SIGINT ignored; the command must get Ctrl-C as a user would
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        **kwargs,
    )


def wait_until_open(process: subprocess.Popen, path: Path, timeout: float = 60) -> None:
    """Until the process has `path` open (the audit is reading the store)."""
    deadline = time.monotonic() + timeout
    fds = Path(f"/proc/{process.pid}/fd")
    while time.monotonic() < deadline:
        try:
            if any(os.readlink(fd) == str(path) for fd in fds.iterdir()):
                return
        except OSError:  # a descriptor closed while we looked
            pass
        assert process.poll() is None, "the process ended before it opened the store"
        time.sleep(0.005)
    pytest.fail(f"{path} not opened within {timeout} s")


def test_ctrl_c_during_an_audit_always_ends_as_interrupted(big_store):
    """SQLite turns a KeyboardInterrupt inside the audit's Python function (the UTF-8
    check of every row) into its own error; whenever Ctrl-C comes, the audit ends as
    interrupted. Ctrl-C comes at 8 moments spread over the audit's reading."""
    audit = start("audit", big_store, stdout=subprocess.DEVNULL)
    wait_until_open(audit, big_store)
    opened = time.monotonic()
    _, err = audit.communicate(timeout=120)
    assert audit.returncode == 0, err
    reading = time.monotonic() - opened
    for step in range(8):
        audit = start("audit", big_store, stdout=subprocess.PIPE)
        wait_until_open(audit, big_store)
        time.sleep(reading * (step + 0.5) / 9)
        if audit.poll() is not None:
            continue  # the machine is faster now: this moment is past the end
        audit.send_signal(signal.SIGINT)
        out, err = audit.communicate(timeout=60)
        if audit.returncode == -signal.SIGINT and "OK: nothing would fail" in out:
            # The audit had answered and Python was shutting down (its handlers are gone
            # then): the shell sees a death by SIGINT, as with any tool.
            continue
        assert (audit.returncode, err.strip()) == (130, "smtmigrate audit: interrupted"), step


def test_ctrl_c_during_the_load_of_a_copy_always_ends_as_interrupted(big_store, pg_database):
    """psycopg2 turns a KeyboardInterrupt in COPY's read() into "COPY from stdin failed:
    error in .read()"; at three moments of the load the copy ends as interrupted, the
    target as it was."""
    for delay in (0.0, 0.15, 0.3):
        copy = start("copy", big_store, pg_database, "--widen", stdout=subprocess.PIPE)
        for line in copy.stdout:
            if "django_store_datakey" in line:  # the first table is in, the rest streams
                break
        time.sleep(delay)
        assert copy.poll() is None, "the copy ended before Ctrl-C: use a bigger store"
        copy.send_signal(signal.SIGINT)
        _, err = copy.communicate(timeout=60)
        if copy.returncode == 0 and "Exception ignored" in err and "KeyboardInterrupt" in err:
            # Known, not fixed yet: a Ctrl-C that lands while Python runs a weakref
            # callback is printed as "Exception ignored" and lost, and the copy goes on.
            pytest.xfail("Ctrl-C lost inside a weakref callback (open defect, issue 11)")
        assert (copy.returncode, err.strip()) == (130, "smtmigrate copy: interrupted"), delay
        assert public_tables(pg_database) == 0


def test_a_closed_pipe_ends_with_the_audits_verdict(tmp_path, django_db_blocker):
    """`smtmigrate audit STORE | head -1` on a clean store: exit 0, nothing on stderr."""
    clean = tmp_path / "clean.sqlite"
    with django_db_blocker.unblock():
        generate_store(clean, 50, seed=1)
    read, write = os.pipe()
    audit = start("audit", clean, stdout=write)
    os.close(write)
    os.close(read)  # the reader is gone before the audit writes anything
    _, err = audit.communicate(timeout=120)
    assert (audit.returncode, err) == (0, "")


# -- widening keeps every index ----------------------------------------------------------


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


def test_widen_apply_gives_the_schema_of_the_widened_models(cli, sumatra_pg, widened_reference):
    assert cli("widen", "--apply", sumatra_pg).code == 0
    assert sumatra_schema(sumatra_pg) == widened_reference


# -- manage.py in a project without contenttypes -----------------------------------------


def test_manage_py_without_contenttypes_ends_with_check_e001(tmp_path):
    (tmp_path / "no_contenttypes.py").write_text(
        'SECRET_KEY = "x"\n'
        'INSTALLED_APPS = ["sumatra.recordstore.django_store", "smtmigrate"]\n'
        "DATABASES = {}\nUSE_TZ = True\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "no_contenttypes",
    }
    manage = Path(__file__).resolve().parents[2] / "manage.py"
    for command in ("audit", "check"):
        result = subprocess.run(
            [sys.executable, str(manage), command, str(FIXTURES / "sumatra-0.8")],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr
        assert "(smtmigrate.E001) smtmigrate needs 'django.contrib.contenttypes'" in result.stderr


# -- audit: where it is run, what SQLite cannot say ----------------------------------------


def test_audit_dot_inside_smt(cli, store08, monkeypatch):
    monkeypatch.chdir(store08 / ".smt")
    result = cli("audit", ".")
    assert result.code == 1, result  # the fixture's overflows: it was read
    assert result.out.startswith(f"{records_file(store08).resolve()}  layout sumatra-0.8")


def test_audit_of_a_wal_store_in_a_directory_that_cannot_be_written(cli, store08, tmp_path):
    directory = tmp_path / "wal"
    directory.mkdir()
    store = directory / "records"
    store.write_bytes(records_file(store08).read_bytes())
    connection = sqlite3.connect(store)
    assert connection.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
    connection.close()  # the last connection removes -wal and -shm
    assert sorted(p.name for p in directory.iterdir()) == ["records"]
    with immutable(directory):
        result = cli("audit", store)
    one_error_line(result, "audit", 2, "in WAL mode and has no records-shm")
    assert "make the directory writable" in result.err


def test_audit_of_a_store_with_a_hot_journal(cli, store08, tmp_path):
    """A writer killed mid-transaction leaves a hot journal that a read-only open cannot
    roll back."""
    store = tmp_path / "records"
    store.write_bytes(records_file(store08).read_bytes())
    writer = (
        "import os, signal, sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "c.execute('PRAGMA cache_size=1')\n"
        "c.execute('BEGIN')\n"
        "c.execute(\"UPDATE django_store_record SET reason = reason || 'x'\")\n"
        "c.execute(\"UPDATE django_store_datakey SET path = path || 'x'\")\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    killed = subprocess.run([sys.executable, "-c", writer, str(store)], timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert (tmp_path / "records-journal").stat().st_size > 0
    result = cli("audit", store)
    one_error_line(result, "audit", 2, "records-journal beside it is a hot journal")
    assert "open the store once with write access" in result.err


def test_a_nul_finding_shows_the_whole_value(cli, store08):
    label, *_ = sqlite_rows(records_file(store08), "SELECT label FROM django_store_record")[0]
    sqlite_exec(
        records_file(store08),
        f"UPDATE django_store_record SET reason = 'a' || char(0) || 'b' WHERE label = '{label}'",
    )
    result = cli("audit", store08, "--format", "json")
    (finding,) = [f for f in json.loads(result.out)["findings"] if "NUL" in (f["detail"] or "")]
    assert finding["examples"][0]["value"] == "a\x00b"
    assert finding["examples"][0]["length"] == 3
    table = cli("audit", store08)
    assert f"record '{label}': 'a\\x00b' (3 chars)" in table.out


class _LosesACtrlC(SilentEvents):
    """Copy events that, as the first table is done, press Ctrl-C while Python runs a weakref
    callback: the KeyboardInterrupt is printed as "Exception ignored" and lost — the case a
    real Ctrl-C hits now and then at random."""

    lost = False

    def table_done(self, result) -> None:
        if self.lost:
            return

        def callback(_reference) -> None:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100_000):  # the handler runs here, inside the callback
                pass

        class Referent:
            pass

        referent = Referent()
        reference = weakref.ref(referent, callback)
        del referent  # the callback runs now; its KeyboardInterrupt goes nowhere
        self.lost = reference() is None


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("into", ["postgresql", "sqlite"])
def test_a_ctrl_c_whose_exception_was_lost_still_stops_the_copy(
    into, store08, pg_database, tmp_path, django_db_blocker, capsys
):
    """The flag the Ctrl-C handler sets is checked before anything commits: the copy ends as
    interrupted, the target is as it was, and Python's "Exception ignored" is not shown."""
    target_text = pg_database if into == "postgresql" else str(tmp_path / "new.sqlite")
    events = _LosesACtrlC()
    with (
        django_db_blocker.unblock(),
        interrupts.watched(),
        resolve(str(store08)) as source,
        resolve_target(target_text) as target,
        source_snapshot(source) as snapshot,
        pytest.raises(KeyboardInterrupt),
    ):
        copy_store(plan_copy(snapshot, target, widen=True), events, level="rows")
    assert events.lost and interrupts.seen()
    assert "Exception ignored" not in capsys.readouterr().err
    if into == "postgresql":
        assert public_tables(pg_database) == 0
    else:
        assert not (tmp_path / "new.sqlite").exists()
        assert list(tmp_path.glob(".new.sqlite.smtmigrate-*")) == []

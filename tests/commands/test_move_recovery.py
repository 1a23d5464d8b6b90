"""`move` loses no record and leaves no half-done change (issue 27).

Projects are made by Sumatra itself (`smt init`, `smt run`); rows Sumatra writes only under a
race (two records sharing a label) are written through Sumatra's own API (sumatra_api.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest

from smtmigrate.move import SIGNAL_AFTER_STEP
from smtmigrate.move_state import STATE_FILE

from ..conftest import (
    mariadb_databases,
    mariadb_execute,
    mariadb_url_for,
    pg_query,
    pg_url_for,
    records_file,
    run_sumatra,
    sqlite_rows,
)
from ..private_cluster import Cluster, private_cluster
from .test_move import SMT, SMTMIGRATE, new_project, project_json, smt, start_smt_run

KIND_MARKS = {"pg": pytest.mark.pg, "mariadb": pytest.mark.mariadb}


@pytest.fixture
def target(request, kind: str) -> str:
    """The URL of a database on the `kind` server that does not exist yet (move creates it;
    dropped after): only that server's fixture is used, so a PostgreSQL case needs no MariaDB."""
    if kind == "pg":
        return request.getfixturevalue("new_database")
    return mariadb_url_for(request.getfixturevalue("mariadb_name"))


WAITING_MAIN = "import os, time\nwhile not os.path.exists('go'):\n    time.sleep(0.05)\n"


def wait_for_running(
    project: Path, label: str, job: subprocess.Popen, timeout: float = 120
) -> None:
    """Until `smt run --label LABEL` (`job`) has saved its first, `_running_` record."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert job.poll() is None, job.communicate()[1][-2000:]
        rows = sqlite_rows(
            records_file(project), "SELECT tags FROM django_store_record WHERE label = ?", (label,)
        )
        if rows and "_running_" in (rows[0][0] or ""):
            return
        time.sleep(0.1)
    raise AssertionError(f"{label} never started")


@contextmanager
def waiting_job(project: Path, label: str = "job") -> Iterator[subprocess.Popen]:
    """A real `smt run --label LABEL`, running (its first record saved) until the test
    writes `go`; ended however the test ends."""
    job = start_smt_run(project, "--label", label)
    try:
        wait_for_running(project, label, job)
        yield job
    finally:
        (project / "go").write_text("")
        try:
            job.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            job.kill()
            job.communicate()


def database_exists(kind: str, name: str) -> bool:
    if kind == "mariadb":
        return name in mariadb_databases()
    query = "SELECT 1 FROM pg_database WHERE datname = %s"
    return bool(pg_query(pg_url_for("postgres"), query, (name,)))


def target_rows(url: str, kind: str) -> list[tuple]:
    query = "SELECT label, tags, duration FROM django_store_record ORDER BY db_id"
    if kind == "mariadb":
        return mariadb_execute(query, database=url.rsplit("/", 1)[1])
    return pg_query(url, query)


@pytest.mark.parametrize(
    "kind",
    [pytest.param("pg", marks=pytest.mark.pg), pytest.param("mariadb", marks=pytest.mark.mariadb)],
)
@pytest.mark.slow
def test_unfinished_records_sharing_a_label_and_a_job_ending_during_the_move(
    cli, home, tmp_path, kind, target
):
    """Two unfinished records share a label (runs whose saves raced); a real job is running
    during the move and ends in the old store; its completion reaches the new store, and
    both records sharing the label are there, untouched."""
    url = target
    project = new_project(tmp_path)
    (project / "main.py").write_text(WAITING_MAIN)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "commit", "-qam", "wait for go"], cwd=project, check=True)
    for _ in range(2):
        made = run_sumatra("running", str(records_file(project)), "moveproj", "raced")
        assert made.returncode == 0, made.stderr[-2000:]
    with waiting_job(project) as job:
        moved = cli("move", project, url, "--yes")
        assert moved.code == 0, moved
        (project / "go").write_text("")  # the job ends, saving to the store it opened
        _, err = job.communicate(timeout=120)
        assert job.returncode == 0, err[-2000:]
    old = sqlite_rows(
        records_file(project), "SELECT tags FROM django_store_record WHERE label = 'job'"
    )
    assert old == [("_finished_",)]

    again = cli("move", project, url, "--yes", "--format", "json")  # as the docs say
    assert again.code == 0, again
    carried = json.loads(again.out)["late_records"]["carried"]
    assert [r["label"] for r in carried] == ["job"]
    assert project_json(project)["record_store"]["db_file"] == url
    rows = target_rows(url, kind)
    assert [(label, tags) for label, tags, _ in rows][1:] == [
        ("raced", "_running_"),
        ("raced", "_running_"),
        ("job", "_finished_"),
    ]
    assert rows[-1][2] is not None  # the job's duration, saved when it ended
    assert smt(project, "list").returncode == 0


# -- interrupted at every step -----------------------------------------------------------------

STEPS = ["database", "copy", "switch", "labels", "late records"]


@pytest.fixture(scope="module")
def waiting_project(tmp_path_factory) -> Path:
    """A project of one finished record whose main file waits for a file `go`."""
    project = new_project(tmp_path_factory.mktemp("base"))
    (project / "main.py").write_text(WAITING_MAIN)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "commit", "-qam", "wait for go"], cwd=project, check=True)
    return project


def moving(project: Path, url: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SMTMIGRATE, "move", str(project), url, "--yes"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


# Stopped right after each step, by Ctrl-C and by SIGKILL, on each engine: one case each, so
# that pytest-xdist spreads them. Not SIGKILL after "labels": in a first move nothing runs
# between the "switch" and "labels" checkpoints (switch_project sets the label generator),
# so a kill there leaves the very state a kill after "switch" does; Ctrl-C after it is kept
# (the message says what was done).
INTERRUPTIONS = [
    pytest.param(kind, signal_name, step, marks=KIND_MARKS[kind])
    for kind in ("pg", "mariadb")
    for signal_name in ("INT", "KILL")
    for step in STEPS
    if not (signal_name == "KILL" and step == "labels")
]


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "signal_name", "step"), INTERRUPTIONS)
def test_interrupted_after_each_step_then_run_again(
    home, tmp_path, waiting_project, target, kind, signal_name, step
):
    """A `move` is stopped (Ctrl-C or SIGKILL) right after a step while a job is running;
    the project is then on its old store or on the new one, never in between; the job ends
    (in the old store); `move` run again finishes, every record complete there."""
    env = {**os.environ, "HOME": str(home)}
    url = target
    database = url.rsplit("/", 1)[1]
    project = tmp_path / step.replace(" ", "-")
    shutil.copytree(waiting_project, project)
    project_file = project / ".smt" / "project"  # names its directory: the copy's now
    project_file.write_text(project_file.read_text().replace(str(waiting_project), str(project)))
    old_store = project_json(project)["record_store"]["db_file"]
    assert old_store == str(records_file(project))
    with waiting_job(project) as job:
        stopped = moving(project, url, {**env, SIGNAL_AFTER_STEP: f"{step}:{signal_name}"})
        on = project_json(project)["record_store"]["db_file"]
        assert on == (url if STEPS.index(step) >= STEPS.index("switch") else old_store)
        if signal_name == "KILL":
            assert stopped.returncode == -signal.SIGKILL, stopped.stderr
        else:
            assert stopped.returncode == 130, stopped.stderr
            message = stopped.stderr.strip()
            assert message.startswith("smtmigrate move: interrupted; already done: "), message
            assert "run `smtmigrate move" in message, message
            if step == "database":  # the copy had not committed: the database is gone again
                assert "undone: dropped" in message, message
                assert not database_exists(kind, database)
        (project / "go").write_text("")
        _, err = job.communicate(timeout=120)
        assert job.returncode == 0, err[-2000:]

    again = moving(project, url, env)
    assert again.returncode == 0, (step, again.stderr)
    assert project_json(project)["record_store"]["db_file"] == url
    rows = target_rows(url, kind)
    assert [(label, tags) for label, tags, _ in rows][-1] == ("job", "_finished_"), step
    assert len(rows) == 2 and all(duration is not None for *_, duration in rows), rows
    assert smt(project, "list").stdout.split()[0] == "job"


# -- passwords: checked before anything is created, never written anywhere -----------------

MOVER = "smtm_mover"
RIGHT = "Right/pass@word-27"  # characters a URL must percent-encode
WRONG = "Wr0ng/pass@word-27"


@pytest.fixture(scope="module")
def password_cluster() -> Iterator[Cluster]:
    """A private cluster where MOVER (may create databases) must give its password over TCP
    (scram-sha-256, as on a real server); the postgres superuser stays trusted, for checks."""
    with private_cluster() as cluster:
        cluster.psql(f"CREATE ROLE {MOVER} LOGIN CREATEDB PASSWORD '{RIGHT}'")
        hba = Path(cluster.psql("SHOW hba_file"))
        hba.write_text(
            "local all all trust\n"
            f"host all {MOVER} 127.0.0.1/32 scram-sha-256\n"
            "host all all 127.0.0.1/32 trust\n"
        )
        cluster.psql("SELECT pg_reload_conf()")
        yield cluster


def _pgpass(home: Path, cluster: Cluster, password: str) -> Path:
    path = home / ".pgpass"
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    path.write_text(f"127.0.0.1:{cluster.port}:*:{MOVER}:{escaped}\n")
    path.chmod(0o600)
    return path


def _files_holding(root: Path, secret: str) -> list[Path]:
    encoded = quote(secret, safe="")
    return [
        path
        for path in root.rglob("*")
        if path.is_file() and any(s.encode() in path.read_bytes() for s in (secret, encoded))
    ]


@pytest.mark.pg
@pytest.mark.slow
@pytest.mark.parametrize("how", ["url", "PGPASSWORD", "pgpass", "url-with-admin"])
def test_a_wrong_password_changes_nothing(home, store08, password_cluster, how):
    """Refused in one line before anything is created (issue 27, item 3), however libpq got
    the password; the password itself is shown nowhere."""
    cluster, database = password_cluster, f"smtm_pw_{uuid.uuid4().hex[:8]}"
    url = f"postgresql://{MOVER}@127.0.0.1:{cluster.port}/{database}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["HOME"] = str(home)
    args = []
    if how.startswith("url"):
        url = url.replace(f"{MOVER}@", f"{MOVER}:{quote(WRONG, safe='')}@")
    if how == "url-with-admin":  # the superuser could create it: the URL's own login fails
        args = ["--admin", cluster.url("postgres")]
    if how == "PGPASSWORD":
        env["PGPASSWORD"] = WRONG
    if how == "pgpass":
        _pgpass(home, cluster, WRONG)
    project_file = store08 / ".smt" / "project"
    before = project_file.read_bytes()
    home_before = sorted(p.name for p in home.iterdir())
    refused = subprocess.run(
        [*SMTMIGRATE, "move", str(store08), url, "--yes", *args],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 2, refused
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert lines[0].startswith("smtmigrate move: error: "), lines
    assert f'password authentication failed for user "{MOVER}"' in lines[0]
    assert "Traceback" not in refused.stderr
    for secret in (WRONG, quote(WRONG, safe="")):
        assert secret not in refused.stdout + refused.stderr
    assert cluster.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{database}'") == "0"
    assert project_file.read_bytes() == before
    assert not (store08 / STATE_FILE).exists()
    assert sorted(p.name for p in home.iterdir()) == home_before  # no ~/.pgpass written


@pytest.mark.pg
@pytest.mark.slow
def test_the_right_password_from_pgpass_only_is_written_nowhere(home, store08, password_cluster):
    """The control: with the right password in ~/.pgpass and nowhere else, the move
    succeeds; the project's own `smt` gets in the same way; no file gains the password."""
    cluster, database = password_cluster, f"smtm_pw_{uuid.uuid4().hex[:8]}"
    url = f"postgresql://{MOVER}@127.0.0.1:{cluster.port}/{database}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["HOME"] = str(home)
    pgpass = _pgpass(home, cluster, RIGHT)
    written = pgpass.read_bytes()
    try:
        moved = subprocess.run(
            [*SMTMIGRATE, "move", str(store08), url, "--yes"],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
        assert moved.returncode == 0, moved.stderr
        assert RIGHT not in moved.stdout + moved.stderr
        assert quote(RIGHT, safe="") not in moved.stdout + moved.stderr
        assert project_json(store08)["record_store"]["db_file"] == url
        assert pgpass.read_bytes() == written
        assert _files_holding(store08, RIGHT) == []
        assert _files_holding(home, RIGHT) == [pgpass]
        count = "SELECT count(*) FROM django_store_record"
        assert cluster.psql(count, database) == "7"
        listed = subprocess.run(
            [SMT, "list"], cwd=store08, capture_output=True, text=True, timeout=180,
            env={k: v for k, v in env.items() if k != "DJANGO_SETTINGS_MODULE"},
        )  # fmt: skip
        assert listed.returncode == 0, listed.stderr[-2000:]
        assert len(listed.stdout.split()) == 7, listed.stdout
    finally:
        cluster.psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


@pytest.mark.pg
@pytest.mark.slow
def test_a_second_move_of_the_project_refuses_naming_the_first(
    home, tmp_path, store08, new_database
):
    """The first move stops itself right after creating the database, holding the lock; a
    second refuses in one line naming it, changing nothing; the first then finishes. A lock
    file left by a killed move blocks nothing."""
    env = {**os.environ, "HOME": str(home)}
    first = subprocess.Popen(
        [*SMTMIGRATE, "move", str(store08), new_database, "--yes"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, SIGNAL_AFTER_STEP: "database:STOP"},
    )
    try:
        deadline = time.monotonic() + 60
        while Path(f"/proc/{first.pid}/stat").read_text().split()[2] != "T":
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
        text = (store08 / ".smt" / "project").read_text()
        second = moving(store08, new_database, env)
        assert second.returncode == 1, second
        assert second.stderr.splitlines() == [
            f"smtmigrate move: error: {store08}: another move of this project is running "
            f"(pid {first.pid} on {socket.gethostname()}); let it end, or run this one again "
            "after it"
        ]
        assert (store08 / ".smt" / "project").read_text() == text
    finally:
        first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert project_json(store08)["record_store"]["db_file"] == new_database

    lock = store08 / ".smt" / "smtmigrate-move.lock"
    lock.write_text("pid 1 on a-host-long-gone\n")  # as a killed move leaves it, unlocked
    again = moving(store08, new_database, env)
    assert again.returncode == 0, again.stderr
    assert "Already moved" in again.stdout


@pytest.mark.pg
@pytest.mark.slow
def test_refused_when_the_projects_smt_cannot_open_the_new_store(
    home, tmp_path, store08, new_database
):
    """The project's runs use an smt whose Python has no Django (Sumatra would fall back to
    a shelve store): move refuses before changing anything and says what to install."""
    bare = tmp_path / "bare-env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    smt_script = bare / "bin" / "smt"
    smt_script.write_text(f"#!{bare / 'bin' / 'python'}\nfrom sumatra.commands import main\n")
    smt_script.chmod(0o755)
    env = {**os.environ, "HOME": str(home), "PATH": f"{bare / 'bin'}:{os.environ['PATH']}"}
    text = (store08 / ".smt" / "project").read_text()
    refused = moving(store08, new_database, env)
    assert refused.returncode == 1, refused
    assert refused.stderr.strip() == (
        f"smtmigrate move: error: the project's smt ({smt_script}) cannot open {new_database}: "
        "its Python lacks django and psycopg2 (django: ModuleNotFoundError: No module named "
        "'django'; psycopg2: ModuleNotFoundError: No module named 'psycopg2'); install them "
        f"there with `{bare / 'bin' / 'python'} -m pip install 'sumatra[web,postgres]'`, then "
        "run move again; nothing was changed"
    )
    assert (store08 / ".smt" / "project").read_text() == text
    database = new_database.rsplit("/", 1)[1]
    exists = "SELECT 1 FROM pg_database WHERE datname = %s"
    assert not pg_query(pg_url_for("postgres"), exists, (database,))

    env["PATH"] = f"{Path(SMT).parent}:{os.environ['PATH']}"  # an smt with Django and psycopg2
    moved = moving(store08, new_database, env)
    assert moved.returncode == 0, moved.stderr


@pytest.mark.mariadb
def test_mariadb_database_granted_to_the_account_the_server_matched(cli, mariadb_name):
    """Over 127.0.0.1 the server matches root to root@127.0.0.1 (CURRENT_USER()); not to a
    root@'%' that does not exist."""
    import MySQLdb

    conn = MySQLdb.connect(host="127.0.0.1", user="root", password="")
    with conn.cursor() as cursor:
        cursor.execute("SELECT CURRENT_USER()")
        matched = cursor.fetchone()[0]
    conn.close()
    result = cli("createdb", f"mysql://root@127.0.0.1/{mariadb_name}")
    assert result.code == 0, result
    assert f"granted 'root'@'{matched.rpartition('@')[2]}' all privileges" in result.out


@pytest.mark.mariadb
@pytest.mark.parametrize(
    ("user_host", "said"),
    [
        ("root@no-such-host.invalid", "Unknown server host 'no-such-host.invalid'"),
        ("nobody_smtm@127.0.0.1", "export MYSQL_PWD for the project's smt runs"),
    ],
)
def test_mariadb_connection_errors_exit_2_with_the_hint_that_fits(
    cli, home, store08, mariadb_name, user_host, said
):
    """A mistyped host is no password problem: no MYSQL_PWD hint; a refused user gets it."""
    result = cli("move", store08, f"mysql://{user_host}/{mariadb_name}", "--yes")
    assert result.code == 2, result
    assert said in result.err
    if "invalid" in user_host:
        assert "MYSQL_PWD" not in result.err and "check the URL's host and port" in result.err


@pytest.mark.pg
@pytest.mark.slow
def test_move_refusing_duplicates_names_dedupe(cli, home, store08, new_database):
    from .test_dedupe import plant_duplicates

    plant_duplicates(records_file(store08))
    refused = cli("move", store08, new_database, "--yes")
    assert refused.code == 1, refused
    assert "Add --dedupe to merge the duplicate rows on the way." in " ".join(refused.out.split())
    moved = cli("move", store08, new_database, "--yes", "--dedupe")
    assert moved.code == 0, moved


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("postgres:/u:secret@127.0.0.1/db", "postgres://u:***@127.0.0.1/db"),
        ("mysql:root@localhost/db", "mysql://root@localhost/db"),
    ],
)
def test_a_url_short_of_its_slashes_is_named_as_a_typo(cli, home, store08, typed, meant):
    result = cli("move", store08, typed, "--yes")
    assert result.code == 2, result
    assert result.err.strip().endswith(f"(did you mean {meant}?)"), result.err
    assert "secret" not in result.err


@pytest.mark.parametrize(
    ("target", "admin", "named"),
    [
        pytest.param(
            "postgresql://127.0.0.1/smtm_never_made",
            "postgresql://adm:s3cret@127.0.0.1:1/postgres",
            "postgresql://adm:***@127.0.0.1:1/postgres",
            marks=pytest.mark.pg,
        ),
        pytest.param(
            "mysql://root@localhost/smtm_never_made",
            "mysql://adm:s3cret@127.0.0.1:1/",
            "mysql://adm:***@127.0.0.1:1/",
            marks=pytest.mark.mariadb,
        ),
    ],
    ids=["pg", "mariadb"],
)
@pytest.mark.slow
def test_an_admin_connection_failure_names_the_admin_url(cli, home, store08, target, admin, named):
    """Not the target's URL: that one was never tried (issue 27, item 5)."""
    before = (store08 / ".smt" / "project").read_bytes()
    result = cli("move", store08, target, "--yes", "--admin", admin)
    assert result.code == 2, result
    line = result.err.strip()
    assert line.startswith(f"smtmigrate move: error: cannot connect to {named}"), line
    assert "s3cret" not in result.out + result.err and len(line.splitlines()) == 1
    assert (store08 / ".smt" / "project").read_bytes() == before


def test_a_shelve_project_is_refused_naming_every_engine_and_why(cli, home, tmp_path):
    """A project `smt init` made without Django (sumatra[git] alone) has a shelve store: the
    refusal names MariaDB among the stores moved, and what to install."""
    project = tmp_path / "shelved"
    (project / ".smt").mkdir(parents=True)
    store = {"type": "sumatra.recordstore.shelve_store.ShelveRecordStore", "shelf_name": "r"}
    (project / ".smt" / "project").write_text(json.dumps({"name": "p", "record_store": store}))
    refused = cli("move", project, "postgresql://127.0.0.1/smtm_never_made", "--yes")
    assert refused.code == 2, refused
    assert refused.err.strip() == (
        f"smtmigrate move: error: {project}: the project uses a ShelveRecordStore; smtmigrate "
        "moves Django record stores (SQLite, PostgreSQL or MariaDB) only; Sumatra makes one "
        "when Django is missing from the Python its `smt` runs in (install 'sumatra[web]' there)"
    )


# Every command that takes a mysql:// store; where its help names MariaDB.
MARIADB_IN_HELP = {
    "audit": "a PostgreSQL or MariaDB store on its own server",
    "copy": "a new or empty MariaDB database",
    "createdb": "mysql://user@host/dbname",
    "drop-recreate": "MariaDB: the target URL's user",
    "move": "onto a PostgreSQL or MariaDB database",
    "protect": "to a PostgreSQL or MariaDB store",
    "stress": "postgresql:// or mysql:// URL",
    "switch": None,
    "verify": None,
    "widen": "PostgreSQL or MariaDB stops",
}


@pytest.mark.parametrize("command", sorted(MARIADB_IN_HELP))
def test_help_names_mariadb_where_the_command_takes_it(command):
    """No help of a command that takes MariaDB says PostgreSQL alone (`--pooler` is
    PgBouncer's, PostgreSQL only indeed)."""
    from django.core.management import load_command_class

    parser = load_command_class("smtmigrate", command.replace("-", "_")).create_parser(
        "smtmigrate", command
    )
    said = " ".join(parser.format_help().split())
    assert "PostgreSQL only" not in said.replace("(smtmigrate pooler; PostgreSQL only)", "")
    assert "on PostgreSQL." not in said and "database postgres of the server)" not in said
    if MARIADB_IN_HELP[command]:
        assert MARIADB_IN_HELP[command] in said, said


@pytest.mark.mariadb
def test_mariadb_privilege_error_points_at_admin(cli, mariadb_name):
    user = f"smtm_np_{uuid.uuid4().hex[:8]}"
    mariadb_execute(f"CREATE USER '{user}'@'localhost'")
    try:
        result = cli("createdb", f"mysql://{user}@localhost/{mariadb_name}")
    finally:
        mariadb_execute(f"DROP USER '{user}'@'localhost'")
    assert result.code == 2, result
    assert "SELECT command denied" in result.err
    assert result.err.strip().endswith("with --admin mysql://user@host/"), result.err

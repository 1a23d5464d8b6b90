"""Security: hostile names reach PostgreSQL only as identifiers and parameters, the password
lives in ~/.pgpass and nowhere else, files smtmigrate writes are private, and it talks to
no server but the ones it was given.

One scenario runs every command once, in-process and as real processes, against a
database and a role whose names are made of quotes, semicolons, SQL comments, rich markup
and unicode, with a password made of every character a URL or a ~/.pgpass line treats
specially; the tests below then check its outcome from different sides.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import traceback
import uuid
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

import psycopg2
import pytest
from psycopg2 import sql

from smtmigrate.cli import main

from ..conftest import FIXTURES, PG_URL, admin_execute, drop_database, pg_query, sqlite_exec

SMTMIGRATE = str(Path(sys.executable).parent / "smtmigrate")
# ASCII markers at both ends survive any encoding (JSON \u escapes, URL quoting, repr):
# a leak of any part of the password shows one of them.
MARKERS = ("Sx1mark", "Sx2mark")
PASSWORD = f"{MARKERS[0]}:@/?#%'\";\\ [/x] ü🙂 {MARKERS[1]}"
PASSWORD_ENV = "SMTM_SECURITY_PASSWORD"
PG = urlsplit(PG_URL)
PG_HOSTPORT = PG.netloc.rpartition("@")[2]
PG_HOST = PG.hostname or ""
PG_PORT = PG.port or 5432


def secret_forms(password: str = PASSWORD) -> list[str]:
    """Every spelling of the password a leak could take."""
    return [
        password,
        quote(password, safe=""),
        quote(password),
        json.dumps(password)[1:-1],
        repr(password)[1:-1],
        *MARKERS,
    ]


def assert_no_secret(text: str, where: str, password: str = PASSWORD) -> None:
    # Rich wraps long lines: compare without whitespace too, so a wrapped leak is caught.
    flat = "".join(text.split())
    for form in secret_forms(password):
        assert form not in text, f"password ({form!r}) in {where}"
        assert "".join(form.split()) not in flat, f"password ({form!r}) wrapped in {where}"


def hostile_url(database: str, role: str, *, password: str = PASSWORD, hostport=PG_HOSTPORT):
    q = lambda text: quote(text, safe="")  # noqa: E731
    return f"postgresql://{q(role)}:{q(password)}@{hostport}/{q(database)}"


@dataclass
class Run:
    label: str
    code: int
    out: str
    err: str


@dataclass
class Scenario:
    database: str
    role: str
    tag: str
    url: str
    root: Path
    home: Path
    project: Path
    project_name: str
    project_mode: int  # of .smt/project before the switch
    original_project: str  # its text
    before: set[Path]  # every path under root before the first command
    runs: list[Run] = field(default_factory=list)
    facts: dict[str, dict] = field(default_factory=dict)

    @property
    def plain(self) -> str:
        """A database and role named so that Sumatra can read their URL (for `switch`)."""
        return f"smtm_plain_{self.tag[::-1]}"  # not the tag: catalog_facts looks for it

    def run(self, label: str, *args: object) -> Run:
        """`smtmigrate ARGS` in-process, output captured."""
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except Exception:  # what a real process would print, and its exit code
                traceback.print_exc()
                code = 1
        result = Run(label, code, out.getvalue(), err.getvalue())
        self.runs.append(result)
        return result

    def run_process(self, label: str, *args: object) -> Run:
        """`smtmigrate ARGS` as a real process: C libraries and interpreter exit included."""
        env = {
            k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", PASSWORD_ENV)
        }
        done = subprocess.run(
            [SMTMIGRATE, *map(str, args)], capture_output=True, text=True, env=env, timeout=120
        )
        result = Run(label, done.returncode, done.stdout, done.stderr)
        self.runs.append(result)
        return result


def connect_as(database: str, role: str | None = None, **params) -> psycopg2.extensions.connection:
    """A libpq connection by keywords: the names go to libpq as they are."""
    if PG_HOST:
        params.setdefault("host", PG_HOST)
    params.setdefault("port", PG_PORT)
    return psycopg2.connect(dbname=database, user=role or PG.username, **params)


def catalog_facts(database: str, role: str, tag: str) -> dict:
    """What the server holds, read through parameters only."""
    facts = {
        "databases": pg_query(
            PG_URL,
            "SELECT datname, pg_get_userbyid(datdba), pg_encoding_to_char(encoding) "
            "FROM pg_database WHERE strpos(datname, %s) > 0",
            (tag,),
        ),
        "roles": pg_query(
            PG_URL,
            "SELECT rolname, rolcanlogin FROM pg_roles WHERE strpos(rolname, %s) > 0",
            (tag,),
        ),
        "survivors": pg_query(
            PG_URL,
            "SELECT (SELECT count(*) FROM pg_database WHERE datname = 'postgres'), "
            "(SELECT count(*) FROM pg_roles WHERE rolname = 'postgres')",
        ),
    }
    conn = connect_as(database)
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename LIKE 'django%%'"
            )
            facts["table_owners"] = cursor.fetchall()
            cursor.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'django_store_record'")
            if cursor.fetchone()[0]:
                cursor.execute("SELECT count(*) FROM django_store_record")
                facts["records"] = cursor.fetchone()[0]
    finally:
        conn.close()
    return facts


def every_path(root: Path) -> set[Path]:
    return {root, *root.rglob("*")}


@pytest.fixture(scope="module")
def scenario(tmp_path_factory, django_db_blocker) -> Iterator[Scenario]:
    """Every command, once, with hostile names and a password in the URL, under umask 022."""
    tag = uuid.uuid4().hex[:8]
    # Quotes, semicolons, SQL comments, a placeholder, rich markup, unicode; under the
    # 63 bytes PostgreSQL keeps of a name, so that nothing is truncated.
    database = f"smtm_\"; DROP DATABASE postgres; --'%s[/x]ü🙂_{tag}"
    role = f"smtm_r\"ole'; DROP ROLE postgres;--:[/x]ü🙂_{tag}"
    assert max(len(database.encode()), len(role.encode())) <= 63
    root = tmp_path_factory.mktemp("security")
    home = root / "home"
    home.mkdir()
    project = root / "proj \"q'; rm -rf ~; [bold]ü🙂"
    shutil.copytree(FIXTURES / "sumatra-0.8", project)
    project_file = project / ".smt" / "project"
    project_name = "fixture08\"'; DROP TABLE django_store_record; --[/x]ü🙂"
    data = json.loads(project_file.read_text())
    data["name"] = project_name
    project_file.write_text(json.dumps(data, indent=2))
    os.chmod(project_file, 0o644)
    url = hostile_url(database, role)
    s = Scenario(
        database, role, tag, url, root, home, project, project_name, 0o644,
        project_file.read_text(), set(),
    )  # fmt: skip
    s.before = every_path(root)

    try:
        previous_umask = os.umask(0o022)  # permissive, as on many machines
        patch = pytest.MonkeyPatch()
        patch.setenv("HOME", str(home))
        patch.setenv(PASSWORD_ENV, PASSWORD)
        patch.chdir(root)  # anything written to the working directory is checked too
        try:
            with django_db_blocker.unblock():
                _play(s)
        finally:
            os.umask(previous_umask)
            patch.undo()
        yield s
    finally:
        for name in (database, s.plain):
            drop_database(name)
        for name in (role, s.plain):
            admin_execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def _play(s: Scenario) -> None:
    root, url, project = s.root, s.url, s.project
    created = s.run(
        "createdb", "createdb", url, "--create-role", "--password-env", PASSWORD_ENV,
        "--admin", PG_URL,
    )  # fmt: skip
    if created.code != 0:
        return
    s.facts["createdb"] = catalog_facts(s.database, s.role, s.tag)
    # drop-recreate connects as the URL's role: it may create databases, like a user's own
    admin_execute(sql.SQL("ALTER ROLE {} CREATEDB").format(sql.Identifier(s.role)))
    s.run("copy", "copy", project, url, "--widen", "--verify", "rows")
    s.facts["copy"] = catalog_facts(s.database, s.role, s.tag)
    s.run("copy to sqlite", "copy", project, root / "copy [x].sqlite")
    s.run("verify", "verify", project, url)
    # Sumatra would misread these names (it does not %-decode db_file): refused.
    s.run("switch hostile names", "switch", project, url)
    s.facts["project after refusal"] = {"text": (project / ".smt" / "project").read_text()}
    # Plain names, the same password: the project follows, the password goes to ~/.pgpass.
    plain_url = hostile_url(s.plain, s.plain)
    s.run(
        "createdb plain", "createdb", plain_url, "--create-role", "--password-env", PASSWORD_ENV,
        "--admin", PG_URL,
    )  # fmt: skip
    s.run("copy --switch", "copy", project, plain_url, "--widen", "--verify", "rows",
          "--switch", project)  # fmt: skip
    closed = hostile_url(s.database, s.role, hostport="127.0.0.1:1")
    s.run(
        "switch closed port",
        "switch",
        project,
        hostile_url(s.plain, s.plain, hostport="127.0.0.1:1"),
    )
    s.run("widen apply", "widen", "--apply", url)
    s.run("widen write", "widen", "--write", root / "migrations [x]" / "pkg")
    s.run("audit", "audit", url)
    s.run_process("audit json (process)", "audit", url, "--format", "json")
    s.run_process("verify project (process)", "verify", project, url)
    s.run("drop-recreate", "drop-recreate", url, "--yes", "--backup", root / "backup [x].sqlite")
    s.facts["drop-recreate"] = catalog_facts(s.database, s.role, s.tag)
    # An empty database without Sumatra's schema, for the refusal that names the target;
    # then the error paths, each with the password in the URL.
    s.run("drop-recreate bare", "drop-recreate", url, "--yes", "--no-schema")
    s.run("copy refused", "copy", project / ".smt" / "records", url)  # too long for varchar
    s.run("createdb exists", "createdb", url, "--admin", PG_URL)
    missing = hostile_url(s.database + "_missing", s.role)
    s.run("audit missing database", "audit", missing)
    s.run("copy missing database", "copy", project / ".smt" / "records", missing, "--widen")
    s.run("audit closed port", "audit", closed)
    s.run("drop-recreate closed port", "drop-recreate", closed, "--yes")
    s.run_process("copy closed port (process)", "copy", project / ".smt" / "records", closed)


EXPECTED_CODES = {
    "createdb": 0,
    "copy": 0,
    "copy to sqlite": 0,
    "verify": 0,
    "switch hostile names": 1,
    "createdb plain": 0,
    "copy --switch": 0,
    "switch closed port": 2,
    "widen apply": 0,
    "widen write": 0,
    "audit": 0,
    "audit json (process)": 0,
    "verify project (process)": 0,
    "drop-recreate": 0,
    "drop-recreate bare": 0,
    "copy refused": 1,
    "createdb exists": 1,
    "audit missing database": 2,
    "copy missing database": 2,
    "audit closed port": 2,
    "drop-recreate closed port": 2,
    "copy closed port (process)": 2,
}


@pytest.mark.pg
def test_every_command_works_with_hostile_names(scenario):
    """Each command ends as it should: with names like these, any SQL built by pasting
    would have failed (or dropped `postgres`) instead."""
    codes = {run.label: run.code for run in scenario.runs}
    assert codes == EXPECTED_CODES, [r for r in scenario.runs if r.code != EXPECTED_CODES[r.label]]
    by_label = {run.label: run for run in scenario.runs}
    # Names come out as they are, never eaten as rich markup.
    assert f"created role {scenario.role} with a password" in by_label["createdb"].out
    assert (
        f"created database {scenario.database} (owner {scenario.role}" in by_label["createdb"].out
    )
    assert (
        f"created {scenario.database} (owner {scenario.role}, UTF8)"
        in by_label["drop-recreate"].out
    )
    assert "backup [x].sqlite" in by_label["drop-recreate"].out
    assert str(scenario.project) in by_label["copy --switch"].out
    refusal = by_label["switch hostile names"].err
    assert "Sumatra would read" in refusal and "nothing was changed" in refusal
    assert scenario.facts["project after refusal"]["text"] == scenario.original_project
    assert "Already widened" in by_label["widen apply"].out
    assert "Refused:" in by_label["copy refused"].out


@pytest.mark.pg
def test_names_round_trip_exactly(scenario):
    """The server holds exactly the names given, created by the tool: the database owned
    by the role, the tables too, nothing truncated or split, `postgres` untouched."""
    database, role = scenario.database, scenario.role
    assert scenario.facts, "createdb failed"
    for step in ("createdb", "copy", "drop-recreate"):
        facts = scenario.facts[step]
        assert facts["databases"] == [(database, role, "UTF8")], step
        assert facts["roles"] == [(role, True)], step
        assert facts["table_owners"] == [(role,)], step
        assert facts["survivors"] == [(1, 1)], step
    assert scenario.facts["copy"]["records"] == 7
    assert scenario.facts["drop-recreate"]["records"] == 0
    assert catalog_facts(database, role, scenario.tag)["table_owners"] == []  # --no-schema
    # The project keeps its name, and names the store without the password.
    project = json.loads((scenario.project / ".smt" / "project").read_text())
    assert project["name"] == scenario.project_name
    from smtmigrate.locations import resolve

    store = resolve(str(scenario.project))
    plain = scenario.plain
    assert (store.settings["NAME"], store.settings["USER"], store.password) == (plain, plain, "")
    assert store.project_name == scenario.project_name


@pytest.mark.pg
def test_the_password_is_in_pgpass_and_libpq_finds_it(scenario):
    """~/.pgpass (0600) holds the one line libpq reads for these names: proof that the
    escaping of ':' and '\\' in names and password is right."""
    pgpass = scenario.home / ".pgpass"
    assert stat.S_IMODE(pgpass.stat().st_mode) == 0o600

    def esc(text: str) -> str:
        return text.replace("\\", "\\\\").replace(":", "\\:")

    host = PG_HOST or "localhost"
    line = f"{esc(host)}:{PG_PORT}:{scenario.plain}:{scenario.plain}:{esc(PASSWORD)}"
    assert pgpass.read_text(encoding="utf-8").splitlines() == [line]
    conn = connect_as(scenario.plain, scenario.plain, passfile=str(pgpass))
    try:
        assert conn.info.password == PASSWORD  # what libpq would send, were it asked
    finally:
        conn.close()


@pytest.mark.pg
def test_the_password_is_in_no_output(scenario):
    """stdout and stderr of every command, in-process and as real processes, successes
    and errors: the password never shows, in any spelling."""
    assert len(scenario.runs) == len(EXPECTED_CODES)
    for run in scenario.runs:
        assert_no_secret(run.out, f"stdout of {run.label}")
        assert_no_secret(run.err, f"stderr of {run.label}")
    errors = [run for run in scenario.runs if run.code == 2]
    assert len(errors) == 6 and all(":***@" in run.err for run in errors), errors
    report = json.loads(next(r.out for r in scenario.runs if r.label == "audit json (process)"))
    assert ":***@" in report["location"]


@pytest.mark.pg
def test_the_password_is_in_no_file_but_pgpass(scenario):
    """Every file under the scenario's directory (the project file and its backup, the
    SQLite copy, the backup, the migrations, anything in the working directory and HOME)
    is free of the password; ~/.pgpass alone holds it."""
    pgpass = scenario.home / ".pgpass"
    files = [p for p in every_path(scenario.root) if p.is_file() and p != pgpass]
    assert len(files) >= 9
    forms = [form.encode() for form in secret_forms()]
    for path in files:
        content = path.read_bytes()
        for form in forms:
            assert form not in content, f"password ({form!r}) in {path}"
    assert PASSWORD.encode() in pgpass.read_bytes().replace(b"\\:", b":").replace(b"\\\\", b"\\")


@pytest.mark.pg
def test_files_written_are_never_world_readable(scenario):
    """Under umask 022 every file and directory the tool created is closed to other users;
    stores, backups and ~/.pgpass are 0600; the project file keeps no more than it had."""
    created = every_path(scenario.root) - scenario.before
    names = {path.relative_to(scenario.root).as_posix() for path in created}
    project_dir = scenario.project.name
    expected = {
        "home/.pgpass",
        f"{project_dir}/.smt/project.smtmigrate-backup",
        "copy [x].sqlite",
        "backup [x].sqlite",
        "migrations [x]",
        "migrations [x]/pkg",
        "migrations [x]/pkg/__init__.py",
        "migrations [x]/pkg/0001_initial.py",
        "migrations [x]/pkg/0002_tag_taggeditem.py",
        "migrations [x]/pkg/0003_smtmigrate_widen.py",
    }
    assert names == expected  # nothing else, no partial or temporary file left behind
    project_file = scenario.project / ".smt" / "project"
    for path in [*created, project_file]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o007 == 0, f"{path}: mode {mode:o}"
    for name in ("home/.pgpass", "copy [x].sqlite", "backup [x].sqlite"):
        assert stat.S_IMODE((scenario.root / name).stat().st_mode) == 0o600, name
    for path in (project_file, scenario.project / ".smt" / "project.smtmigrate-backup"):
        assert stat.S_IMODE(path.stat().st_mode) & ~scenario.project_mode == 0, path


# -- exception text -----------------------------------------------------------------------


@pytest.mark.pg  # psycopg2 tries to connect (to a closed port)
@pytest.mark.parametrize(
    "url",
    [
        hostile_url("smtm_nowhere", "someone", hostport="127.0.0.1:1"),
        # typed without percent-encoding: every character that is not a URL delimiter
        f"postgresql://someone:{MARKERS[0]}:@;'\"\\ ü🙂{MARKERS[1]}@127.0.0.1:1/smtm_nowhere",
        hostile_url("smtm_nowhere", "someone", hostport="127.0.0.1:notaport"),
    ],
    ids=["encoded", "raw", "bad-port"],
)
def test_errors_raised_by_the_library_hold_no_password(url):
    """str(), repr() and the whole traceback (chained causes included) of the errors the
    library raises for a URL with a password."""
    from smtmigrate.admin.postgresql import Admin
    from smtmigrate.errors import SmtmigrateError
    from smtmigrate.locations import resolve

    texts = []
    for attempt in (lambda: resolve(url).connection, lambda: Admin(resolve(url))):
        with pytest.raises(SmtmigrateError) as caught:
            attempt()
        exc = caught.value
        texts += [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    store_repr = repr(resolve(url)) if "notaport" not in url else ""
    password = urlsplit(url).password or ""
    for text in [*texts, store_repr]:
        assert_no_secret(text, "an exception", password)
    assert any("***" in text for text in texts)


def test_store_values_and_names_are_never_rich_markup(cli, store08):
    """A value in the store that looks like rich markup is shown as it is, not parsed
    (which used to end `audit` in a traceback)."""
    sqlite_exec(
        store08 / ".smt" / "records",
        "UPDATE django_store_record SET label = '[/x][bold]' || label WHERE length(label) > 100",
    )
    result = cli("audit", store08)
    assert result.code == 1, result
    assert "id 2: '[/x][bold]long-label" in result.out


# -- nothing sent anywhere but the given server -------------------------------------------

# Local sockets libc may use to look up a user name (getpwuid) on hosts running nscd or
# systemd-userdbd: AF_UNIX, so they cannot reach another machine. Name lookups of hosts
# (systemd-resolved, DNS) are not among them.
NAME_SERVICE_SOCKETS = ("/run/nscd/socket", "/var/run/nscd/socket", "/run/systemd/userdb/")
SOCKADDR = re.compile(r"\{sa_family=(AF_\w+)([^{}]*)\}")


def allowed_addresses() -> set[tuple[str, str, int]]:
    """(family, address, port) of the PostgreSQL server the tests were given."""
    if not PG_HOST or PG_HOST.startswith("/"):
        return set()
    found = socket.getaddrinfo(PG_HOST, PG_PORT, proto=socket.IPPROTO_TCP)
    return {(family.name, info[0], info[1]) for family, _, _, _, info in found}


def sockaddr_allowed(family: str, fields: str, allowed: set[tuple[str, str, int]]) -> bool:
    if family in ("AF_INET", "AF_INET6"):
        port = re.search(r"sin6?_port=htons\((\d+)\)", fields)
        address = re.search(r'inet_(?:addr|pton)\((?:AF_INET6, )?"([^"]+)"', fields)
        return bool(port and address) and (family, address[1], int(port[1])) in allowed
    if family == "AF_UNIX":
        path = re.search(r'sun_path=(?:@)?"([^"]*)"', fields)
        if not path:
            return False
        return path[1].endswith(f"/.s.PGSQL.{PG_PORT}") or path[1].startswith(NAME_SERVICE_SOCKETS)
    return False  # netlink, packet, … : nothing smtmigrate needs


@pytest.fixture
def strace(tmp_path) -> str:
    tool = shutil.which("strace")
    if tool is None:
        pytest.skip("strace is not installed: the system-call layer of the network check")
    probe = subprocess.run(
        [tool, "-f", "-o", str(tmp_path / "probe"), "true"], capture_output=True, timeout=30
    )
    if probe.returncode != 0:
        pytest.skip(f"strace cannot trace here (ptrace not permitted?): {probe.stderr[-300:]!r}")
    return tool


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["HOME"] = str(home)
    return env


@pytest.mark.pg
@pytest.mark.slow
def test_commands_connect_to_the_given_server_only(strace, tmp_path, store08, pg_database):
    """Under strace (every process, git's included): every connect() and every datagram
    goes to the PostgreSQL server named on the command line, and nowhere else."""
    home = tmp_path / "home"
    home.mkdir()
    allowed = allowed_addresses()
    commands = [
        ["copy", store08, pg_database, "--widen", "--switch", store08],  # + verify, Sumatra
        ["audit", store08],  # the switched project: its store is now the server's
        ["switch", store08, pg_database],  # verifies the store against itself
    ]
    seen = []
    for number, args in enumerate(commands):
        trace = tmp_path / f"trace-{number}"
        done = subprocess.run(
            [strace, "-f", "-qq", "-e", "trace=connect,sendto,sendmsg,sendmmsg", "-o", str(trace),
             SMTMIGRATE, *map(str, args)],
            capture_output=True, text=True, env=_env(home), timeout=180,
        )  # fmt: skip
        assert done.returncode == 0, (args, done.stderr[-2000:])
        for line in trace.read_text().splitlines():
            for family, fields in SOCKADDR.findall(line):
                assert sockaddr_allowed(family, fields, allowed), f"{args[0]}: {line}"
                seen.append((args[0], family))
    # the trace did see the tool reach its server (so an empty trace cannot pass)
    assert {command for command, _ in seen} == {"copy", "audit", "switch"}


AUDIT_HOOK = """
import json, sys
log = open(sys.argv[1], "w")
WATCH = ("socket.", "http.", "urllib.", "ftplib.", "smtplib.", "poplib.", "imaplib.",
         "nntplib.", "telnetlib.", "webbrowser.", "subprocess.Popen", "os.exec", "os.posix_spawn",
         "sqlite3.connect")
def hook(event, args):
    if event.startswith(WATCH):
        log.write(json.dumps([event, [repr(a)[:300] for a in args]]) + "\\n")
        log.flush()
sys.addaudithook(hook)
from smtmigrate.cli import main
sys.exit(main(sys.argv[2:]))
"""
# Socket events that carry no address and send nothing.
QUIET_SOCKET_EVENTS = {"socket.gethostname", "socket.__new__", "socket.sethostname"}


@pytest.mark.pg
@pytest.mark.slow
def test_python_code_opens_no_network_connection(tmp_path, store07, pg_database):
    """Sumatra, Django, GitPython… inside smtmigrate: Python's audit hooks see every
    socket they open, every name they look up and every program they start. None but
    `git version` (GitPython's start-up check, local) and no socket at all: the only
    connection is libpq's, to the given server (checked under strace above)."""
    home = tmp_path / "home"
    home.mkdir()
    log = tmp_path / "events.jsonl"
    done = subprocess.run(
        [sys.executable, "-c", AUDIT_HOOK, str(log),
         "copy", str(store07), pg_database, "--widen", "--switch", str(store07)],
        capture_output=True, text=True, env=_env(home), timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(event == "sqlite3.connect" for event, _ in events)  # the hook was live
    host = re.escape(PG_HOST)
    for event, args in events:
        if event.startswith("socket.") and event not in QUIET_SOCKET_EVENTS:
            assert re.search(rf"'{host}'.*\b{PG_PORT}\b", " ".join(args)), (event, args)
        elif event.startswith(("subprocess.", "os.exec", "os.posix_spawn")):
            program = re.sub(r"\W", "", args[0].rsplit("/", 1)[-1])
            assert program == "git" and "'version'" in args[1], (event, args)
        else:
            assert event.startswith("sqlite3.connect"), (event, args)

"""What the user typed → a `Store`: its kind, Django DATABASES entry and redacted name.

Accepted forms:
  * a Sumatra project directory (its `.smt/project` names the record store),
  * a path to an SQLite file, or `sqlite:///absolute/path`,
  * `postgres://` or `postgresql://[user[:password]@][host][:port][/dbname][?param=value]`.
    Missing URL parts are left to libpq, so PGHOST, PGUSER, PGPASSWORD, ~/.pgpass and the
    local socket work as they do for psql;
  * `mysql://` or `mariadb://[user[:password]@][host][:port]/dbname` (what Sumatra 0.8
    reads): missing parts are left to the MariaDB client library, so MYSQL_PWD, the
    `[client]` section of ~/.my.cnf and the local socket work as they do for `mysql`.
    Only the commands that handle MariaDB accept one (`resolve(..., mariadb=True)`); the
    others refuse it with one line (`MariadbNotYet`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote

from django.db import DatabaseError, connections
from django.db.backends.base.base import BaseDatabaseWrapper

from .db import register_database, unregister_database
from .errors import (
    DatabaseMissing,
    LocationError,
    MariadbNotYet,
    NotASumatraStore,
    StoreConnectionError,
    UnsupportedStore,
)
from .files import check_writable
from .urls import (
    DEFAULT_CONNECT_TIMEOUT,
    MARIADB_SESSION,
    MY_CNF,
    URL_RE,
    mariadb_settings,
    postgres_settings,
    redact_text,
    redact_url,
    require_mariadb_driver,
    url_parts,
    without_password,
)

if TYPE_CHECKING:
    from .engines import Engine

SQLITE_HEADER = b"SQLite format 3\x00"
DJANGO_STORE_TYPE = "sumatra.recordstore.django_store.DjangoRecordStore"
POSTGRES_SCHEMES = ("postgres", "postgresql")
MARIADB_SCHEMES = ("mysql", "mariadb")
SQLITE_SCHEMES = ("sqlite",)
# The `LINE 1: <SQL>` line and its `^` marker that PostgreSQL appends to some errors.
_SQL_EXCERPT = re.compile(r"\s*\nLINE \d+: [^\n]*\n *\^\s*")
# How long a reader waits for a writer's lock on an SQLite store before giving up.
SQLITE_LOCK_TIMEOUT = 10

# URLs are read in urls.py; their names are read from here too.
__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "MARIADB_SESSION",
    "MY_CNF",
    "URL_RE",
    "Store",
    "mariadb_settings",
    "new_sqlite_target",
    "postgres_settings",
    "redact_text",
    "redact_url",
    "require_mariadb_driver",
    "resolve",
    "resolve_target",
    "same_store",
    "sqlite_settings",
    "url_parts",
    "without_password",
]

StoreKind = Literal["sqlite", "postgresql", "mariadb"]


@dataclass
class Store:
    """A record store the user named, not yet necessarily connected."""

    kind: StoreKind
    display: str  # what we show: never holds a password
    settings: dict[str, Any] = field(repr=False)  # Django DATABASES entry, may hold one
    path: Path | None = None  # SQLite file
    project_dir: Path | None = None  # when named through a Sumatra project
    project_name: str | None = None
    # Written by nobody but this process, committed: a snapshot file, a copy's scratch
    # database. Any connection to it reads what any other does (threads.threads_share).
    private: bool = False
    # A server store's URL as typed, without its password: what Sumatra is given (the
    # project file, a job's db_file); None for a file or a store made from settings.
    url: str | None = None
    _alias: str | None = field(default=None, repr=False)

    @property
    def password(self) -> str:
        return self.settings.get("PASSWORD") or ""

    @property
    def engine(self) -> Engine:
        """The engine of this store's database: every vendor difference is asked of it."""
        from .engines import engine_for

        return engine_for(self.kind)

    def threads_share(self) -> bool:
        """Whether threads of this process, each on its own connection, read exactly what
        this one reads (threads.py): a store nobody else writes (`private`)."""
        return self.private

    def sibling(self, display: str, settings: dict[str, Any], *, private: bool = False) -> Store:
        """Another database of the same server and kind (an engine's scratch database)."""
        return Store(self.kind, display, settings, private=private)

    def file_sibling(self, path: Path, display: str, *, read_only: bool = True) -> Store:
        """Another file of the same kind (SQLite: a copy's partial file)."""
        return Store(self.kind, display, sqlite_settings(path, read_only=read_only), path=path)

    @property
    def alias(self) -> str:
        """The Django connection alias, registered on first use."""
        if self._alias is None:
            self._alias = register_database(self.settings)
        return self._alias

    @property
    def connection(self) -> BaseDatabaseWrapper:
        conn = connections[self.alias]
        try:
            conn.ensure_connection()
        except DatabaseError as exc:
            error = connection_error(self.display, self.describe_error(exc), self.settings)
            if self.engine.database_missing(exc):
                error = DatabaseMissing(str(error))
            raise error from exc
        return conn

    def describe_error(self, exc: BaseException) -> str:
        """One line for a database error, with any password blotted out."""
        return redact_text(one_line(exc), self.password)

    def read_error(self, exc: BaseException) -> StoreConnectionError:
        """The one-line error for a failure while reading the store."""
        if "database is locked" in str(exc):
            return StoreConnectionError(
                f"{self.display} is locked by another writer (waited {SQLITE_LOCK_TIMEOUT} s); "
                "try again when the running smt jobs have finished"
            )
        hint = sqlite_hint(self.path) if self.engine.is_file and self.path else ""
        return StoreConnectionError(f"cannot read {self.display}: {self.describe_error(exc)}{hint}")

    def close(self) -> None:
        if self._alias is not None:
            unregister_database(self._alias)
            self._alias = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def sqlite_hint(path: Path) -> str:
    """What is wrong, and what to do, when a read-only SQLite open fails for a reason
    SQLite's own message does not name."""
    journal = path.with_name(path.name + "-journal")
    if journal.is_file() and journal.stat().st_size > 0:
        return (
            f" ({journal.name} beside it is a hot journal, left by a writer that was killed "
            "mid-transaction: SQLite must roll it back before the store can be read, and a "
            "read-only open cannot; open the store once with write access, e.g. "
            f"`sqlite3 {path} 'PRAGMA quick_check'` or `smt list` in its project, then retry)"
        )
    try:
        with path.open("rb") as fh:
            header = fh.read(20)
    except OSError:
        return ""
    shm = path.with_name(path.name + "-shm")
    if header[18:20] == b"\x02\x02" and not shm.exists() and not os.access(path.parent, os.W_OK):
        return (
            f" (the store is in WAL mode and has no {shm.name}, which SQLite must create "
            "beside it even to read it, in a directory that cannot be written: make the "
            "directory writable for the audit, or copy the store, with its -wal file if "
            "any, somewhere writable and audit the copy)"
        )
    return ""


def one_line(exc: BaseException) -> str:
    """An error as one line, without the `LINE 1: <SQL> ^` excerpt PostgreSQL appends to
    syntax and permission errors: it is noise to the user, who did not write that SQL."""
    return " ".join(_SQL_EXCERPT.sub(" ", str(exc)).split()) or exc.__class__.__name__


def connection_error(display: str, detail: str, settings: dict[str, Any]) -> StoreConnectionError:
    """The one-line error for a connection that failed; a timeout says what it waited for."""
    if "timeout expired" in detail:
        timeout = (settings.get("OPTIONS") or {}).get("connect_timeout")
        detail += (
            f" (no answer within {timeout} s: wrong host or port, or a firewall? "
            "?connect_timeout=N in the URL or PGCONNECT_TIMEOUT waits longer)"
        )
    return StoreConnectionError(f"cannot connect to {display}: {detail}")


_URL_TYPO_RE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):/?(?!/)")


def _refuse_url_typo(text: str) -> None:
    """`postgres:/host/db` or `mysql:host/db`: a URL short of its `//`, not a path."""
    match = _URL_TYPO_RE.match(text)
    known = (*POSTGRES_SCHEMES, *MARIADB_SCHEMES, *SQLITE_SCHEMES)
    if match and match["scheme"].lower() in known and not Path(text).expanduser().exists():
        meant = redact_url(f"{match['scheme']}://{text[match.end() :]}")
        raise LocationError(
            f"{meant.replace('://', ':/' if text[match.end() - 1] == '/' else ':', 1)}: "
            f"not a URL, a store URL has '//' after its scheme (did you mean {meant}?)"
        )


def resolve(text: str, *, base_dir: Path | None = None, mariadb: bool = False) -> Store:
    """Turn a location as typed on the command line into a `Store` (no connection yet).

    A MariaDB/MySQL location is refused (`MariadbNotYet`) unless the caller handles one
    (`mariadb=True`): a command that does not is never half-working on it."""
    if not text or not text.strip():
        raise LocationError("empty store location")
    match = URL_RE.match(text)
    if match:
        scheme = match["scheme"].lower()
        if scheme in POSTGRES_SCHEMES:
            return _postgres_store(text)
        if scheme in SQLITE_SCHEMES:
            return _sqlite_store(Path(unquote(match["rest"]) or "/"))
        if scheme in MARIADB_SCHEMES:
            store = _mariadb_store(text)
            if not mariadb:
                raise MariadbNotYet(store.display)
            require_mariadb_driver(store.display)
            return store
        if scheme in ("http", "https"):
            raise UnsupportedStore(
                f"{redact_url(text)}: an HTTP record store cannot be moved by smtmigrate "
                "(it handles Django record stores in SQLite or PostgreSQL)"
            )
        raise LocationError(
            f"{redact_url(text)}: unknown scheme '{scheme}' "
            "(use a path, sqlite:///path or postgresql://user@host/dbname)"
        )
    _refuse_url_typo(text)
    path = Path(text).expanduser()
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    return _path_store(path, mariadb=mariadb)


def resolve_target(text: str, *, mariadb: bool = False) -> Store:
    """Like `resolve`, but a path that does not exist yet names a new SQLite store."""
    match = URL_RE.match(text)
    if match and match["scheme"].lower() in SQLITE_SCHEMES:
        path = Path(unquote(match["rest"]) or "/")
    elif match:
        return resolve(text, mariadb=mariadb)
    else:
        _refuse_url_typo(text)
        path = Path(text).expanduser()
    if path.exists():
        if path.is_dir():
            raise LocationError(f"{path}: a directory; give the path of a new SQLite file")
        return Store(
            "sqlite", str(path.resolve()), sqlite_settings(path.resolve()), path=path.resolve()
        )
    path = path.resolve()
    if not path.parent.is_dir():
        raise LocationError(f"{path.parent}: no such directory")
    try:  # before any work: a copy or backup must not end at its last step
        check_writable(path)
    except OSError as exc:
        raise LocationError(
            f"{path.parent}: cannot write a new file here ({exc.strerror})"
        ) from exc
    return Store("sqlite", str(path), sqlite_settings(path, read_only=False), path=path)


def new_sqlite_target(path: Path) -> Store:
    """A store for an SQLite file that is about to be written (it must not exist yet)."""
    return resolve_target(str(path))


def _path_store(path: Path, *, mariadb: bool = False) -> Store:
    if not path.exists():
        raise LocationError(f"{path}: no such file or directory")
    if path.is_dir():
        return _project_store(path, mariadb=mariadb)
    return _sqlite_store(path)


def _project_store(directory: Path, *, mariadb: bool = False) -> Store:
    project_file = directory / ".smt" / "project"
    if not project_file.is_file() and directory.resolve().name == ".smt":  # `audit .` in it
        directory = directory.resolve()
        directory, project_file = directory.parent, directory / "project"
    if not project_file.is_file():
        raise LocationError(
            f"{directory}: a directory, but not a Sumatra project (no .smt/project)"
        )
    try:
        project = json.loads(project_file.read_text(encoding="utf-8"))
        record_store = project["record_store"]
        store_type = record_store["type"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LocationError(f"{project_file}: not a readable Sumatra project file ({exc})") from exc
    if store_type != DJANGO_STORE_TYPE:
        kind = store_type.rsplit(".", 1)[-1]
        why = ""
        if kind == "ShelveRecordStore":  # what Sumatra falls back to without Django
            why = (
                "; Sumatra makes one when Django is missing from the Python its `smt` runs in "
                "(install 'sumatra[web]' there)"
            )
        raise UnsupportedStore(
            f"{directory}: the project uses a {kind}; smtmigrate moves Django record stores "
            f"(SQLite, PostgreSQL or MariaDB) only{why}"
        )
    db_file = str(record_store.get("db_file") or ".smt/records")
    store = resolve(db_file, base_dir=directory, mariadb=mariadb)
    store.project_dir = directory.resolve()
    store.project_name = project.get("name")
    return store


def _sqlite_store(path: Path) -> Store:
    path = path.expanduser().resolve()
    if not path.exists():
        raise LocationError(f"{path}: no such file or directory")
    if path.is_dir():
        raise LocationError(f"{path}: a directory, expected an SQLite file")
    try:
        with path.open("rb") as fh:
            header = fh.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise LocationError(f"{path}: cannot read ({exc.strerror})") from exc
    if not header:
        raise NotASumatraStore(f"{path}: empty file, not an SQLite database")
    if header != SQLITE_HEADER:
        raise NotASumatraStore(f"{path}: not an SQLite database")
    return Store(kind="sqlite", display=str(path), settings=sqlite_settings(path), path=path)


def sqlite_settings(path: Path, *, read_only: bool = True) -> dict[str, Any]:
    """Django settings for an SQLite file; read-only stores can never be written by mistake."""
    from .engines import SQLITE  # the engines read Stores: imported late

    name = SQLITE.read_only_uri(path) if read_only else str(path)
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": name,
        "OPTIONS": {"timeout": SQLITE_LOCK_TIMEOUT},
    }


def _postgres_store(url: str) -> Store:
    return Store(
        kind="postgresql",
        display=redact_url(url),
        settings=postgres_settings(url),
        url=without_password(url),
    )


def _mariadb_store(url: str) -> Store:
    return Store(
        kind="mariadb",
        display=redact_url(url),
        settings=mariadb_settings(url),
        url=without_password(url),
    )


def same_store(a: Store, b: Store) -> bool:
    """Whether two locations name the same store, however they were spelled: the same
    SQLite file (links and relative paths included), or the same database of the same
    running PostgreSQL server (whatever host name, socket or port alias reached it)."""
    if a.engine is not b.engine:
        return False
    if a.engine.is_file:
        try:
            return a.path is not None and b.path is not None and a.path.samefile(b.path)
        except OSError:  # a new file that does not exist yet
            return False
    return a.engine.database_identity(a) == b.engine.database_identity(b)

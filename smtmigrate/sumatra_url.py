"""How Sumatra reaches a store: the URL written into a project's .smt/project
(`store_url`, its password kept out of it: ~/.pgpass) and the `db_file` a stress job gives
Sumatra with the environment that carries the rest (`worker_location`)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from .errors import UnsupportedStore

if TYPE_CHECKING:
    from .locations import Store

# connection OPTIONS of a postgresql:// URL that libpq also reads from the environment.
# Not connect_timeout: smtmigrate sets one for itself, `smt run` waits as long as libpq does.
LIBPQ_ENV = {
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL",
    "application_name": "PGAPPNAME",
    "options": "PGOPTIONS",
    "service": "PGSERVICE",
    "passfile": "PGPASSFILE",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "gssencmode": "PGGSSENCMODE",
    "channel_binding": "PGCHANNELBINDING",
    "krbsrvname": "PGKRBSRVNAME",
}
_URL_SAFE = re.compile(r"[A-Za-z0-9_.~-]+")


def store_url(store: Store) -> str:
    """The URL to write into the project file: the store's, without any password."""
    if store.url is None:
        assert store.path is not None, f"{store.display}: a server store made without its URL"
        return str(store.path)
    return store.url


def worker_location(store: Store) -> tuple[str, dict[str, str]]:
    """The `db_file` a job gives Sumatra, and the environment that goes with it.

    A password never goes on a command line (`ps` shows it to every user): it travels in
    PGPASSWORD, and whatever Sumatra's URL parser cannot carry (socket directories,
    percent-encoded user names, connection options) in libpq's other variables.
    """
    env: dict[str, str] = {}
    if store.engine.is_file:
        assert store.path is not None
        path = str(store.path)
        if urlparse(path).path != path:
            raise UnsupportedStore(
                f"{path}: Sumatra reads its db_file as a URL and cannot open a path "
                "containing '?', '#' or ';'"
            )
        return path, env
    settings = store.settings
    name = str(settings.get("NAME") or "")
    user = str(settings.get("USER") or "")
    host = str(settings.get("HOST") or "")
    port = str(settings.get("PORT") or "")
    if not _URL_SAFE.fullmatch(name):
        raise UnsupportedStore(
            f"{store.display}: Sumatra cannot open a database named {name!r} "
            "(its URL parser takes letters, digits and ._~- only)"
        )
    if store.engine.sumatra_login_unaided:  # MariaDB: the URL and MYSQL_PWD, nothing else
        return _mariadb_location(store, name, user, host, port)
    netloc = ""
    if host and not host.startswith("/") and "," not in host:
        netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
    else:
        if host:
            env["PGHOST"] = host
        if port:
            env["PGPORT"] = port
    if user and netloc and _URL_SAFE.fullmatch(user):
        netloc = f"{user}@{netloc}"
    elif user:
        env["PGUSER"] = user
    if store.password:
        env["PGPASSWORD"] = store.password
    for option, value in (settings.get("OPTIONS") or {}).items():
        if option in LIBPQ_ENV:
            env[LIBPQ_ENV[option]] = str(value)
    return f"postgresql://{netloc}/{name}", env


def _mariadb_location(
    store: Store, name: str, user: str, host: str, port: str
) -> tuple[str, dict[str, str]]:
    """A MariaDB store as Sumatra's jobs reach it: `mysql://user@host:port/db`, the
    password in MYSQL_PWD (which the client library reads; Sumatra reads no option file).
    Django's MySQL backend, as Sumatra configures it, needs a host: `localhost` is the
    local socket."""
    env: dict[str, str] = {}
    if not host or host.startswith("/"):
        raise UnsupportedStore(
            f"{store.display}: Sumatra cannot connect to a MariaDB URL without a host: use "
            "mysql://user@localhost/db for the local socket"
        )
    if user and not _URL_SAFE.fullmatch(user):
        raise UnsupportedStore(
            f"{store.display}: Sumatra cannot open a MariaDB URL for the user {user!r} "
            "(its URL parser takes letters, digits and ._~- only)"
        )
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
    if user:
        netloc = f"{user}@{netloc}"
    if store.password:
        env["MYSQL_PWD"] = store.password
    return f"mysql://{netloc}/{name}", env

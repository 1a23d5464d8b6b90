"""Server URLs as smtmigrate reads them: one parser for every engine's
`scheme://user:password@host:port/db?query`, Django's DATABASES entry made from one
(PostgreSQL, MariaDB), redaction, and the MariaDB driver an optional extra."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

from .errors import LocationError, MissingDriver

MY_CNF = "~/.my.cnf"  # the client option file whose [client] section `mysql` reads

URL_RE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)$", re.DOTALL)


# Fail fast on an address that does not answer (libpq waits forever by default), unless
# the URL (?connect_timeout=N) or the environment (PGCONNECT_TIMEOUT, libpq's) says otherwise.
DEFAULT_CONNECT_TIMEOUT = 5


def redact_text(text: str, password: str) -> str:
    """Replace every occurrence of the password (raw or URL-quoted) with ***."""
    if password:
        for form in {password, quote(password, safe="")}:
            text = text.replace(form, "***")
    return text


def without_password(url: str) -> str:
    """`postgresql://user:secret@host/db` → `postgresql://user@host/db`."""
    match = URL_RE.match(url)
    if not match:
        return url
    netloc, sep, tail = match["rest"].partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}@{hostport}"
    return f"{match['scheme']}://{netloc}{sep}{tail}"


def redact_url(url: str) -> str:
    """`postgresql://user:secret@host/db` → `postgresql://user:***@host/db`."""
    match = URL_RE.match(url)
    if not match:
        return url
    rest = match["rest"]
    netloc, sep, tail = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{hostport}"
    return f"{match['scheme']}://{netloc}{sep}{tail}"


def url_parts(url: str) -> tuple[str, str, str, str, str, str]:
    """(user, password, host, port, dbname, query) of a server URL, still percent-encoded
    but the host; one parser for every engine's `scheme://user:password@host:port/db?query`.

    Parsed by hand rather than with urllib's `hostname`/`port` helpers, which lower-case
    names, reject percent-encoded socket directories and raise on odd ports."""
    match = URL_RE.match(url)
    assert match is not None
    rest, _, query = match["rest"].partition("?")
    netloc, _, dbname = rest.partition("/")
    userinfo, _, hostport = netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    host, port = hostport, ""
    if hostport.startswith("["):  # [IPv6]:port
        end = hostport.find("]")
        if end < 0:
            raise LocationError(f"{redact_url(url)}: malformed IPv6 address")
        host, port = hostport[1:end], hostport[end + 1 :].lstrip(":")
    elif ":" in hostport:
        host, _, port = hostport.rpartition(":")
    if port and not port.isdigit():
        raise LocationError(f"{redact_url(url)}: port '{port}' is not a number")
    return user, password, host, port, dbname, query


def postgres_settings(url: str) -> dict[str, Any]:
    """Parse a libpq-style URL into a Django DATABASES entry (`url_parts`)."""
    user, password, host, port, dbname, query = url_parts(url)
    try:
        options: dict[str, Any] = dict(
            parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
        )
    except ValueError as exc:
        raise LocationError(f"{redact_url(url)}: malformed query string") from exc
    # libpq's precedence: the URL's connect_timeout, else PGCONNECT_TIMEOUT (which the option
    # set here would hide from libpq, so it is read here), else ours, not libpq's "forever".
    options.setdefault(
        "connect_timeout", os.environ.get("PGCONNECT_TIMEOUT") or DEFAULT_CONNECT_TIMEOUT
    )
    name = unquote(dbname) or os.environ.get("PGDATABASE", "")
    if not name and not options.get("service"):
        raise LocationError(
            f"{redact_url(url)}: the URL names no database (postgresql://host/dbname)"
        )
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "USER": unquote(user),
        "PASSWORD": unquote(password),
        "HOST": unquote(options.pop("host", host)),
        "PORT": options.pop("port", port),
        "OPTIONS": options,
    }


def require_mariadb_driver(display: str) -> None:
    """MariaDB/MySQL stores are reached through Django's `mysql` backend over mysqlclient,
    an optional extra (`smtmigrate[mariadb]`: it builds from C source, which the default
    install must not need). Without it: one line with the command that installs it here."""
    try:
        import MySQLdb  # noqa: F401
    except ImportError:  # not installed, or its C library is missing
        pass
    else:
        return
    requirement = _extra_requirement("mariadb", "mysqlclient")
    if (Path(sys.prefix) / "pipx_metadata.json").is_file():  # a venv pipx made and manages
        command = f"pipx inject smtmigrate '{requirement}'"
    else:
        command = f"{sys.executable} -m pip install '{requirement}'"
    raise MissingDriver(
        f"{display}: MariaDB/MySQL stores need the mysqlclient driver, not installed with "
        f"smtmigrate: {command} (it compiles: first apt-get install build-essential "
        "pkg-config libmariadb-dev, or your system's equivalent)"
    )


def _extra_requirement(extra: str, name: str) -> str:
    """The requirement `name` as pyproject.toml's optional extra `extra` pins it (one
    place for the version), e.g. 'mysqlclient>=2.2'; plain `name` if not found."""
    from importlib.metadata import PackageNotFoundError, requires

    try:
        declared = requires("smtmigrate") or []
    except PackageNotFoundError:
        return name
    for line in declared:
        requirement, _, marker = line.partition(";")
        if requirement.strip().startswith(name) and f'"{extra}"' in marker:
            return requirement.strip().replace(" ", "")
    return name


def mariadb_settings(url: str) -> dict[str, Any]:
    """Parse a `mysql://` / `mariadb://` URL into a Django DATABASES entry (Django's MySQL
    backend over mysqlclient, as Sumatra uses it).

    What the URL leaves out comes from where the `mysql` client finds it: the `[client]`
    section of ~/.my.cnf (passed as `read_default_file` when it exists) and MYSQL_PWD (read
    by the client library itself). The session is always strict, UTC and utf8mb4 whatever
    the server's defaults: a non-strict session would truncate values with a warning, and
    Django's default `utf8` is utf8mb3 (no 4-byte characters).
    """
    user, password, host, port, dbname, query = url_parts(url)
    if query:
        raise LocationError(
            f"{redact_url(url)}: ?parameters are not taken in a MariaDB URL (Sumatra ignores "
            f"them too); put client options in {MY_CNF}"
        )
    name = unquote(dbname)
    if not name:
        raise LocationError(f"{redact_url(url)}: the URL names no database (mysql://host/dbname)")
    options: dict[str, Any] = {
        "charset": "utf8mb4",
        "local_infile": 1,
        "connect_timeout": DEFAULT_CONNECT_TIMEOUT,
        "init_command": MARIADB_SESSION,
    }
    option_file = Path(MY_CNF).expanduser()
    if option_file.is_file():
        options["read_default_file"] = str(option_file)
    return {
        "ENGINE": "django.db.backends.mysql",
        "NAME": name,
        "USER": unquote(user),
        "PASSWORD": unquote(password),
        "HOST": unquote(host),
        "PORT": port,
        "OPTIONS": options,
    }


# Every smtmigrate session on MariaDB: strict (values that do not fit are errors, never
# truncated with a warning), UTC (datetimes read and written as Django's USE_TZ does).
MARIADB_SESSION = (
    "SET SESSION sql_mode = 'TRADITIONAL,NO_ENGINE_SUBSTITUTION', time_zone = '+00:00'"
)

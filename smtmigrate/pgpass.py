"""~/.pgpass: where a switched project's PostgreSQL password goes (mode 0600, where libpq
finds it), never the project file; the line libpq looks a store up by."""

from __future__ import annotations

import os
import pwd
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import SmtmigrateError, StoreConnectionError
from .files import write_private

if TYPE_CHECKING:
    from .locations import Store


def pgpass_path(home: Path | None = None) -> Path:
    """libpq's password file: PGPASSFILE, else ~/.pgpass."""
    if home is None and os.environ.get("PGPASSFILE"):
        return Path(os.environ["PGPASSFILE"])
    return (home or Path.home()) / ".pgpass"


def default_pg_user() -> str:
    """The user libpq connects as when the URL names none: PGUSER, else the operating
    system's name for this process's user (libpq asks the password database too)."""
    return os.environ.get("PGUSER") or pwd.getpwuid(os.geteuid()).pw_name


def pgpass_key(store: Store) -> list[str]:
    """host, port, database, user as libpq looks them up (a socket is `localhost`)."""
    s = store.settings
    host = s.get("HOST") or ""
    return [
        "localhost" if not host or host.startswith("/") else host,
        str(s.get("PORT") or 5432),
        s["NAME"],
        s.get("USER") or default_pg_user(),
    ]


def pgpass_line(store: Store, password: str = "PASSWORD") -> str:
    """The ~/.pgpass line for the store, `:` and `\\` escaped as libpq reads them; without
    a password, the placeholder PASSWORD (the line shown for the user to fill in)."""
    return ":".join(_escape(field) for field in [*pgpass_key(store), password])


def _escape(field: str) -> str:
    return field.replace("\\", "\\\\").replace(":", "\\:")


def _pgpass_fields(line: str) -> list[str]:
    """A ~/.pgpass line split as libpq splits it (`\\` escapes `:` and itself)."""
    fields: list[str] = []
    current, escaped = "", False
    for char in line:
        if escaped:
            current, escaped = current + char, False
        elif char == "\\":
            escaped = True
        elif char == ":" and len(fields) < 4:
            fields.append(current)
            current = ""
        else:
            current += char
    return [*fields, current]


def _pgpass_matches(line: str, key: list[str]) -> bool:
    """Whether libpq would take `line` for host:port:db:user `key` (`*` matches all)."""
    if line.startswith("#"):
        return False
    fields = _pgpass_fields(line)
    return len(fields) == 5 and all(f in ("*", k) for f, k in zip(fields, key, strict=False))


def add_pgpass_entry(pgpass: Path, store: Store) -> bool:
    """One line for host:port:db:user in ~/.pgpass (mode 0600); other lines are kept,
    a line for the same key is replaced. libpq takes the first line that matches, so
    ours goes before any other that would (e.g. `*:*:*:user:old`). Returns whether the
    file changed."""
    key = pgpass_key(store)
    escaped_key = ":".join(_escape(f) for f in key)
    line = pgpass_line(store, store.password)
    lines = pgpass.read_text().splitlines() if pgpass.exists() else []
    kept = [existing for existing in lines if not existing.startswith(escaped_key + ":")]
    first = next((i for i, old in enumerate(kept) if _pgpass_matches(old, key)), len(kept))
    wanted = [*kept[:first], line, *kept[first:]]
    if wanted == lines:
        os.chmod(pgpass, 0o600)
        return False
    write_private(pgpass, "\n".join(wanted) + "\n", mode=0o600)
    return True


def check_pgpass(pgpass: Path, store: Store) -> None:
    """Ask libpq itself which password it finds for the store in `pgpass` (it looks the
    file up when it connects, whatever the server then asks for)."""
    import psycopg2

    s = store.settings
    params = {
        "dbname": s["NAME"],
        "user": s.get("USER") or None,
        "host": s.get("HOST") or None,
        "port": s.get("PORT") or None,
        **s.get("OPTIONS", {}),
        "passfile": str(pgpass),
    }
    try:
        # password "": the file is looked up, not PGPASSWORD
        connection = psycopg2.connect(password="", **{k: v for k, v in params.items() if v})
    except psycopg2.Error as exc:
        raise StoreConnectionError(
            f"cannot connect to {store.display} with the password from {pgpass}: "
            f"{store.describe_error(exc)}"
        ) from exc
    try:
        found = connection.info.password
    finally:
        connection.close()
    if found != store.password:
        raise SmtmigrateError(
            f"libpq does not take the new line of {pgpass} for {store.display} (another "
            "line wins): fix that file; the project file was not changed"
        )

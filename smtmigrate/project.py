""".smt/project: point a Sumatra project at another record store, and back.

The project file keeps the store's URL without its password: when the URL carries one it
goes to ~/.pgpass (mode 0600), where libpq finds it, so no password ever sits in a project
directory that may be shared, copied or committed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import LocationError, Refused, SmtmigrateError
from .files import write_private
from .locations import DJANGO_STORE_TYPE, URL_RE, Store, redact_url

PROJECT_FILE = Path(".smt") / "project"
BACKUP_FILE = Path(".smt") / "project.smtmigrate-backup"


@dataclass
class SwitchResult:
    project_file: Path
    backup: Path
    db_file: str  # what the project now names: never holds a password
    pgpass: Path | None  # written when the URL carried a password
    pgpass_changed: bool = False


def project_directory(text: str) -> Path:
    """PROJECT_DIR as typed: a directory, never a store URL (Path would mangle one)."""
    if URL_RE.match(text):
        raise LocationError(
            f"{redact_url(text)}: PROJECT_DIR is a Sumatra project directory, not a store URL"
        )
    return Path(text).expanduser()


def project_file(directory: Path) -> Path:
    path = directory / PROJECT_FILE
    if not path.is_file():
        raise LocationError(f"{directory}: not a Sumatra project (no .smt/project)")
    return path


def store_url(store: Store) -> str:
    """The URL to write into the project file: the store's, without any password."""
    if store.kind == "sqlite":
        assert store.path is not None
        return str(store.path)
    return store.display.replace(":***@", "@")


def check_sumatra_reads(target: Store) -> None:
    """Refuse a target whose URL Sumatra would take for another database.

    Sumatra 0.8.1 parses `db_file` with urlparse and uses the parts as they are: it does
    not decode %-escapes and ignores ?parameters, so a database or role whose name needs
    escaping (or a socket given as ?host=) would send `smt` elsewhere.
    """
    from sumatra.recordstore.django_store import DjangoConfiguration

    url = store_url(target)
    try:
        read = DjangoConfiguration().uri_to_db(url)
    except ValueError as exc:  # e.g. urlparse's port check
        raise Refused(f"Sumatra cannot read {url} ({exc}); nothing was changed") from exc
    ours = target.settings
    if target.kind == "sqlite":
        same = read["NAME"] == url
    else:
        same = (
            read["NAME"] == ours["NAME"]
            and (read["USER"] or "") == (ours.get("USER") or "")
            and (read["HOST"] or "").lower() == (ours.get("HOST") or "").lower()
            and str(read["PORT"] or "") == str(ours.get("PORT") or "")
        )
    if not same:
        seen = f"database {read['NAME']!r}"
        if target.kind != "sqlite":
            seen += f", user {read['USER']!r}, host {read['HOST']!r}, port {read['PORT']!r}"
        raise Refused(
            f"Sumatra would read {url} as {seen}: it takes the URL's parts as they are "
            "(no %-decoding, no ?parameters); nothing was changed. Use a database, role and "
            "path whose names need no escaping."
        )


def switch_project(directory: Path, target: Store, *, home: Path | None = None) -> SwitchResult:
    """Back up the project file, then make it name `target` (password to ~/.pgpass).
    `target` has passed check_sumatra_reads (verify_and_switch checks it first)."""
    path = project_file(directory)
    text = path.read_text(encoding="utf-8")
    try:
        project = json.loads(text)
    except ValueError as exc:
        raise SmtmigrateError(f"{path}: not a readable Sumatra project file ({exc})") from exc
    pgpass = None
    changed = False
    if target.password:
        pgpass = (home or Path.home()) / ".pgpass"
        changed = add_pgpass_entry(pgpass, target)
    backup = directory / BACKUP_FILE
    write_private(backup, text, mode=path.stat().st_mode & 0o777)
    url = store_url(target)
    project["record_store"] = {"type": DJANGO_STORE_TYPE, "db_file": url}
    write_private(path, json.dumps(project, indent=2) + "\n", mode=path.stat().st_mode & 0o777)
    return SwitchResult(path, backup, url, pgpass, changed)


def verify_and_switch(
    directory: Path,
    current: Store,
    new: Store,
    *,
    force: bool = False,
    verified=None,
    dedupe: bool = False,
):
    """Switch only when `new` holds the same records as the project's store (or --force).
    `verified`: a verification of exactly these two stores already made (by `copy`).
    `dedupe`: `new` was made by `copy --dedupe`; compare it with the store deduplicated.
    Returns the verification and the SwitchResult."""
    from .dedupe import find_duplicates, plan_dedupe
    from .schema import inspect_store
    from .verify import verify_stores

    check_sumatra_reads(new)  # before the verification, which can take minutes
    if verified is None:
        source = inspect_store(current)
        plan = plan_dedupe(source, find_duplicates(source)) if dedupe else None
        verified = verify_stores(source, inspect_store(new), dedupe=plan)
    verification = verified
    if not verification.ok and not force:
        raise Refused(
            f"{new.display} does not hold the same records as the project's store "
            f"({verification.summary}); --force switches anyway"
        )
    return verification, switch_project(directory, new)


def switch_back(directory: Path) -> Path:
    """Restore the project file saved by the last switch."""
    path = project_file(directory)
    backup = directory / BACKUP_FILE
    if not backup.is_file():
        raise SmtmigrateError(f"{directory}: no saved project file to go back to ({backup})")
    os.replace(backup, path)
    return path


def pgpass_key(store: Store) -> list[str]:
    s = store.settings
    return [
        s.get("HOST") or "localhost",
        str(s.get("PORT") or 5432),
        s["NAME"],
        s.get("USER") or os.environ.get("PGUSER") or os.environ.get("USER") or "*",
    ]


def _escape(field: str) -> str:
    return field.replace("\\", "\\\\").replace(":", "\\:")


def add_pgpass_entry(pgpass: Path, store: Store) -> bool:
    """One line for host:port:db:user in ~/.pgpass (mode 0600); other lines are kept,
    a line for the same key is replaced. Returns whether the file changed."""
    key = ":".join(_escape(f) for f in pgpass_key(store))
    line = f"{key}:{_escape(store.password)}"
    lines = pgpass.read_text().splitlines() if pgpass.exists() else []
    kept = [existing for existing in lines if not existing.startswith(key + ":")]
    if line in lines and len(kept) == len(lines) - 1:
        os.chmod(pgpass, 0o600)
        return False
    write_private(pgpass, "\n".join([*kept, line]) + "\n", mode=0o600)
    return True

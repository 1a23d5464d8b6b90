""".smt/project: point a Sumatra project at another record store, and back.

The project file keeps the store's URL without its password: when the URL carries one it
goes to ~/.pgpass (mode 0600), where libpq finds it, so no password ever sits in a project
directory that may be shared, copied or committed.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import LocationError, Refused, SmtmigrateError, StoreConnectionError
from .files import check_writable, write_private
from .locations import DJANGO_STORE_TYPE, URL_RE, Store, redact_url, same_store
from .pgpass import add_pgpass_entry, check_pgpass, pgpass_path
from .sumatra_url import store_url

PROJECT_FILE = Path(".smt") / "project"
BACKUP_FILE = Path(".smt") / "project.smtmigrate-backup"


@dataclass
class SwitchResult:
    project_file: Path
    backup: Path
    db_file: str  # what the project now names: never holds a password
    pgpass: Path | None  # written when the URL carried a password
    pgpass_changed: bool = False
    backup_kept: bool = False  # the backup of an earlier switch was kept, not replaced
    switched: bool = True  # False: the project named that store already


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
    if target.engine.is_file:
        same = read["NAME"] == url
    else:
        same = (
            read["NAME"] == ours["NAME"]
            and (read["USER"] or "") == (ours.get("USER") or "")
            and (read["HOST"] or "").lower() == (ours.get("HOST") or "").lower()
            and str(read["PORT"] or "") == str(ours.get("PORT") or "")
        )
    if not target.engine.is_file and "?" in url:
        # sslmode=require, for one, would silently not apply to `smt`
        raise Refused(
            f"Sumatra ignores the ?parameters of {url}: `smt` would connect without them; "
            "nothing was changed. Give them to libpq in the environment of the jobs "
            "instead (PGSSLMODE, PGCONNECT_TIMEOUT, …, or a service file)"
        )
    if not same:
        seen = f"database {read['NAME']!r}"
        if not target.engine.is_file:
            seen += f", user {read['USER']!r}, host {read['HOST']!r}, port {read['PORT']!r}"
        raise Refused(
            f"Sumatra would read {url} as {seen}: it takes the URL's parts as they are "
            "(no %-decoding, no ?parameters); nothing was changed. Use a database, role and "
            "path whose names need no escaping."
        )


MARIADB_DENIED = (1045, 1698)  # access denied for the user: a password (or none) refused
MARIADB_NO_DATABASE_ACCESS = 1044  # the user got in, but may not use the database


def check_sumatra_gets_in(target: Store) -> None:
    """A MariaDB target: Sumatra must be able to connect with what the project file will
    hold. Its connection (Django's MySQL backend as Sumatra configures it) needs a host,
    reads no ~/.my.cnf, and takes a password only from the URL or MYSQL_PWD; smtmigrate
    never writes a password into the project file. So: a URL with a host and without a
    password, and a connection made the way Sumatra's will be."""
    import MySQLdb

    settings = target.settings
    if not settings.get("HOST"):
        raise Refused(
            f"{target.display}: Sumatra cannot connect to a MariaDB URL without a host "
            "(Django's MySQL backend fails on it): use mysql://user@localhost/db for the "
            "local socket; nothing was changed"
        )
    if target.password:
        raise Refused(
            f"{target.display}: Sumatra reads a MariaDB password only from the project file's "
            "URL or MYSQL_PWD, and smtmigrate writes no password into the project file: give "
            "the URL without it and export MYSQL_PWD for the project's smt runs (or use the "
            "server's socket authentication); nothing was changed"
        )
    kwargs: dict[str, object] = {"host": settings["HOST"]}
    if settings.get("USER"):
        kwargs["user"] = settings["USER"]
    if settings.get("PORT"):
        kwargs["port"] = int(settings["PORT"])
    name = settings["NAME"]
    try:
        connection = MySQLdb.connect(connect_timeout=5, **kwargs)
        try:
            cursor = connection.cursor()
            cursor.execute(
                "SELECT count(*) FROM information_schema.schemata WHERE schema_name = %s", [name]
            )
            if cursor.fetchone()[0]:  # else a copy is about to create it
                cursor.execute(f"USE {target.engine.quote_name(name)}")
        finally:
            connection.close()
    except MySQLdb.Error as exc:
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
        if code in MARIADB_DENIED:
            hint = "it reads no ~/.my.cnf: export MYSQL_PWD for the project's smt runs"
        elif code == MARIADB_NO_DATABASE_ACCESS:
            hint = "grant the user the database (smtmigrate createdb, over --admin)"
        else:  # the client's own errors (2000-2999): no server there, a mistyped host
            hint = "check the URL's host and port"
        raise StoreConnectionError(
            f"Sumatra could not connect to {target.display} as the project would "
            f"({target.describe_error(exc)}; {hint}); nothing was changed"
        ) from exc


def check_switch(directory: Path, target: Store, *, home: Path | None = None) -> None:
    """Everything a switch to `target` needs, checked before anything is written (by
    `copy --switch`, before the copy): a project file, a URL Sumatra reads as we do,
    and the files the switch writes, writable."""
    path = project_file(directory)
    check_sumatra_reads(target)
    if target.engine.sumatra_login_unaided:
        check_sumatra_gets_in(target)
    files = [path, directory / BACKUP_FILE]
    if target.password:
        files.append(pgpass_path(home))
    for file in files:
        try:
            check_writable(file)
        except OSError as exc:
            raise SmtmigrateError(
                f"{file}: cannot be written ({exc.strerror}); nothing was changed"
            ) from exc


def switch_project(
    directory: Path, target: Store, *, home: Path | None = None, label_generator: str | None = None
) -> SwitchResult:
    """Back up the project file, then make it name `target` (password to ~/.pgpass) and,
    when asked, label its records with `label_generator` (a LABEL_FIXES key).
    `target` has passed check_switch (verify_and_switch checks it first).

    The backup is the configuration before the first switch: a later switch keeps it
    (it would otherwise save a file that already names a new store), `--back` uses it up.
    """
    path, text, project = read_project(directory)
    pgpass = None
    changed = False
    if target.password:
        pgpass = pgpass_path(home)
        changed = add_pgpass_entry(pgpass, target)
        check_pgpass(pgpass, target)
    backup = directory / BACKUP_FILE
    kept = backup.is_file()
    if not kept:
        write_private(backup, text, mode=path.stat().st_mode & 0o777)
    url = store_url(target)
    project["record_store"] = {"type": DJANGO_STORE_TYPE, "db_file": url}
    if label_generator:
        apply_label_fix(project, label_generator)
    write_private(path, json.dumps(project, indent=2) + "\n", mode=path.stat().st_mode & 0o777)
    return SwitchResult(path, backup, url, pgpass, changed, backup_kept=kept)


def verify_and_switch(
    directory: Path,
    current: Store,
    new: Store,
    *,
    force: bool = False,
    verified=None,
    dedupe: bool = False,
    label_generator: str | None = None,
):
    """Switch only when `new` holds the same records as the project's store (or --force).
    `verified`: a verification of exactly these two stores already made (by `copy`).
    `dedupe`: `new` was made by `copy --dedupe`; compare it with the store deduplicated.
    Returns the verification (None when the project names `new` already: nothing to do)
    and the SwitchResult."""
    from .dedupe import find_duplicates, plan_dedupe
    from .schema import inspect_store
    from .verify import verify_stores

    check_switch(directory, new)  # before the verification, which can take minutes
    if same_store(current, new):
        path = project_file(directory)
        if label_generator:  # the store is already right; the labels may not be
            set_label_generator(directory, label_generator)
        return None, SwitchResult(path, directory / BACKUP_FILE, new.display, None, switched=False)
    verification = verified
    if verification is None:
        from .snapshot import source_snapshot

        # each store read in one state of its own (snapshot.py), not while it moves
        with source_snapshot(current) as before, source_snapshot(new) as after:
            source = inspect_store(before.store)
            plan = plan_dedupe(source, find_duplicates(source)) if dedupe else None
            verification = verify_stores(source, inspect_store(after.store), dedupe=plan)
    if not verification.ok and not force:
        raise Refused(
            f"{new.display} does not hold the same records as the project's store "
            f"({verification.problem}); --force switches anyway"
        )
    return verification, switch_project(directory, new, label_generator=label_generator)


def switch_back(directory: Path) -> Path:
    """Restore the project file saved by the last switch."""
    path = project_file(directory)
    backup = directory / BACKUP_FILE
    if not backup.is_file():
        raise SmtmigrateError(f"{directory}: no saved project file to go back to ({backup})")
    os.replace(backup, path)
    return path


# -- label generator ------------------------------------------------------------------------
# Sumatra 0.8.1 labels a record by `label_generator`: "timestamp" (its default) formats the
# record's creation time with `timestamp_format` (default "%Y%m%d-%H%M%S", one second), "uuid"
# takes the last 12 hex digits of a uuid4. `smt run`s started within one tick of the format
# get the same label: they write and delete the same `<label>.param` file (FileNotFoundError)
# and are saved as one record or as several with one label, which later breaks every `smt`
# command that looks a record up by label (MultipleObjectsReturned). Labels are not unique in
# the schema. Sumatra issue #362.

SUMATRA_LABEL_GENERATOR = "timestamp"  # what `smt init` writes
SUMATRA_TIMESTAMP_FORMAT = "%Y%m%d-%H%M%S"  # sumatra.core.TIMESTAMP_FORMAT
MICROSECOND_FORMAT = "%Y%m%d-%H%M%S-%f"
# --label-generator CHOICE → the two keys `smt configure -g … -t …` would write
LABEL_FIXES = {
    "uuid": {"label_generator": "uuid"},
    "timestamp-us": {"label_generator": "timestamp", "timestamp_format": MICROSECOND_FORMAT},
}
# strftime directives → the finest time step they show, coarse to fine
_RESOLUTIONS = (
    ("1 year", frozenset("yYGC")),
    ("1 month", frozenset("mbBh")),
    ("1 week", frozenset("UWV")),
    ("1 day", frozenset("dejaAuwxDF")),
    ("1 hour", frozenset("HIkl")),
    ("1 minute", frozenset("MR")),
    ("1 second", frozenset("STcrsX")),
    ("1 microsecond", frozenset("f")),
)
_DIRECTIVE = re.compile(r"%[-_0^#]?([%a-zA-Z])")


def timestamp_resolution(timestamp_format: str) -> str | None:
    """The finest step of time a strftime format shows ("1 second"), None if none."""
    shown = {d for d in _DIRECTIVE.findall(timestamp_format) if d != "%"}
    finest = None
    for name, directives in _RESOLUTIONS:
        if shown & directives:
            finest = name
    return finest


@dataclass(frozen=True)
class LabelGenerator:
    """How a project's `smt run`s label their records, and whether concurrent runs collide."""

    project_file: Path
    generator: str
    timestamp_format: str

    @property
    def resolution(self) -> str | None:
        if self.generator != "timestamp":
            return None
        return timestamp_resolution(self.timestamp_format)

    @property
    def collides(self) -> bool:
        """Runs started together can get one label: a timestamp of 1 s or coarser. A
        microsecond timestamp made 100 labels out of 100 runs started together (measured)."""
        return self.generator == "timestamp" and self.resolution != "1 microsecond"

    @property
    def described(self) -> str:
        if self.generator == "timestamp":
            return f"timestamp, format {self.timestamp_format!r} ({self.resolution or 'constant'})"
        return self.generator

    @property
    def problem(self) -> str | None:
        if not self.collides:
            return None
        return (
            f"label generator {self.described}: `smt run`s started within the same "
            f"{(self.resolution or 'run').removeprefix('1 ')} get the same label; they crash "
            "(FileNotFoundError on '<label>.param', MultipleObjectsReturned) or are saved as "
            "several records with one label (Sumatra issue #362)"
        )

    def fix(self, directory: Path | str) -> str:
        return f"smtmigrate switch {directory} --label-generator uuid (or smt configure -g uuid)"

    def to_dict(self, directory: Path | str) -> dict:
        return {
            "project_file": str(self.project_file),
            "label_generator": self.generator,
            "timestamp_format": self.timestamp_format if self.generator == "timestamp" else None,
            "label_resolution": self.resolution,
            "collides": self.collides,
            "problem": self.problem,
            "fix": self.fix(directory) if self.collides else None,
        }


def read_project(directory: Path) -> tuple[Path, str, dict]:
    """The project file, its text and its JSON."""
    path = project_file(directory)
    text = path.read_text(encoding="utf-8")
    try:
        project = json.loads(text)
    except ValueError as exc:
        raise SmtmigrateError(f"{path}: not a readable Sumatra project file ({exc})") from exc
    if not isinstance(project, dict):
        raise SmtmigrateError(f"{path}: not a readable Sumatra project file (not an object)")
    return path, text, project


def label_generator_of(project: dict, path: Path) -> LabelGenerator:
    """Keys missing from an older project file take Sumatra's defaults, as it loads them."""
    return LabelGenerator(
        path,
        str(project.get("label_generator") or SUMATRA_LABEL_GENERATOR),
        str(project.get("timestamp_format") or SUMATRA_TIMESTAMP_FORMAT),
    )


def read_label_generator(directory: Path) -> LabelGenerator:
    path, _, project = read_project(directory)
    return label_generator_of(project, path)


def apply_label_fix(project: dict, choice: str) -> bool:
    """Set the keys `smt configure -g/-t` sets, in place (their order kept); whether any
    changed."""
    changes = LABEL_FIXES[choice]
    changed = any(project.get(key) != value for key, value in changes.items())
    project.update(changes)
    return changed


def sumatra_json(project: dict) -> str:
    """The project file as Sumatra's Project.save writes it (json.dump, indent 2)."""
    return json.dumps(project, indent=2)


@dataclass
class LabelFixResult:
    project_file: Path
    backup: Path | None  # None: nothing to change
    before: LabelGenerator
    after: LabelGenerator


def set_label_generator(directory: Path, choice: str) -> LabelFixResult:
    """Give the project a label generator that does not collide, as `smt configure -g`
    would write it; the file as it was is kept as the switch backup (`switch --back`)
    unless a backup is kept already (the configuration before the first change, as for
    switch_project)."""
    path, text, project = read_project(directory)
    before = label_generator_of(project, path)
    if not apply_label_fix(project, choice):
        return LabelFixResult(path, None, before, before)
    mode = path.stat().st_mode & 0o777
    backup = directory / BACKUP_FILE
    if not backup.is_file():
        write_private(backup, text, mode=mode)
    write_private(path, sumatra_json(project), mode=mode)
    return LabelFixResult(path, backup, before, label_generator_of(project, path))

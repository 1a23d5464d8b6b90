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


def switch_project(
    directory: Path, target: Store, *, home: Path | None = None, label_generator: str | None = None
) -> SwitchResult:
    """Back up the project file, then make it name `target` (password to ~/.pgpass) and,
    when asked, label its records with `label_generator` (a LABEL_FIXES key).
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
    if label_generator:
        apply_label_fix(project, label_generator)
    write_private(path, json.dumps(project, indent=2) + "\n", mode=path.stat().st_mode & 0o777)
    return SwitchResult(path, backup, url, pgpass, changed)


def verify_and_switch(
    directory: Path,
    current: Store,
    new: Store,
    *,
    force: bool = False,
    verified=None,
    label_generator: str | None = None,
):
    """Switch only when `new` holds the same records as the project's store (or --force).
    `verified`: a verification of exactly these two stores already made (by `copy`).
    Returns the verification and the SwitchResult."""
    from .schema import inspect_store
    from .verify import verify_stores

    check_sumatra_reads(new)  # before the verification, which can take minutes
    verification = verified or verify_stores(inspect_store(current), inspect_store(new))
    if not verification.ok and not force:
        raise Refused(
            f"{new.display} does not hold the same records as the project's store "
            f"({verification.summary}); --force switches anyway"
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
    would write it; the previous file is kept as the switch backup (`switch --back`)."""
    path, text, project = read_project(directory)
    before = label_generator_of(project, path)
    if not apply_label_fix(project, choice):
        return LabelFixResult(path, None, before, before)
    mode = path.stat().st_mode & 0o777
    backup = directory / BACKUP_FILE
    write_private(backup, text, mode=mode)
    write_private(path, sumatra_json(project), mode=mode)
    return LabelFixResult(path, backup, before, label_generator_of(project, path))

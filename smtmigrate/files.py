"""Files smtmigrate writes for the user: atomically, and never readable by others."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import SmtmigrateError


def write_private(path: Path, text: str, *, mode: int) -> None:
    """Write atomically (a reader sees the old file or the new one), never wider than
    `mode` and never world-readable."""
    mode &= 0o770
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.unlink(missing_ok=True)  # a leftover of a killed run with our pid
    # O_EXCL: never through a symlink someone planted under that name in a shared project
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def check_writable(path: Path) -> None:
    """Raise PermissionError/OSError unless `path` can be written where it is: a new file
    in its directory (tried for real: root ignores mode bits, not read-only mounts or
    immutable files), and the file itself when it exists. Nothing is left behind."""
    probe = path.with_name(f".{path.name}.probe-{os.getpid()}")
    probe.unlink(missing_ok=True)
    os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    probe.unlink()
    if path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND))


def read_json_state(path: Path, hint: str = "") -> dict | None:
    """A state file smtmigrate wrote (move's, the pooler's), or None when there is none;
    one line naming the file when it cannot be read (`hint`: what to do then)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise SmtmigrateError(f"{path}: not readable ({exc}){hint}") from exc

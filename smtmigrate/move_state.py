"""A move's plan and result (values the commands render) and what it keeps on disk: the
state of a finished move (`.smt/smtmigrate-move.json`) and the one-move-per-project lock."""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .carry import CarryResult
from .errors import Refused, SmtmigrateError
from .files import read_json_state, write_private
from .sumatra_url import store_url
from .verify import DEFAULT_LEVEL, Level

if TYPE_CHECKING:
    from .admin.created import CreatedDatabase
    from .copy import CopyPlan, CopyResult
    from .locations import Store
    from .pooler import PoolerStarted
    from .project import LabelGenerator, SwitchResult

STATE_FILE = Path(".smt") / "smtmigrate-move.json"

LOCK_FILE = Path(".smt") / "smtmigrate-move.lock"


@dataclass
class MoveOptions:
    label_generator: str | None = "uuid"  # a project.LABEL_FIXES key; None keeps it
    level: Level = DEFAULT_LEVEL  # the copy's verification (copy's --verify)
    dedupe: bool = False  # merge duplicate get_or_create rows on the way (copy --dedupe)
    create_role: bool = False
    password: str | None = None  # the new role's, from --password-env
    admin: str | None = None
    pooler: str | None = None  # HOST:PORT: start a PgBouncer there as the last step
    copy_readable: bool = False  # a damaged SQLite store: copy what can be read (copy's)


@dataclass
class MoveStep:
    name: str
    action: str  # one line: what it will do, or why it is not needed
    needed: bool = True


# Where a project stands when `move` looks at it.
FRESH = "fresh"  # on its old store; the target is new or empty

COPIED = "copied"  # on its old store; an earlier run's copy is in the target

REVERTED = "reverted"  # moved, then a job that had started before rewrote .smt/project

MOVED = "moved"  # on the target


@dataclass
class MovePlan:
    directory: Path
    source: Store  # the store the project names now
    target: Store
    label: LabelGenerator
    options: MoveOptions
    steps: list[MoveStep]
    stage: str = FRESH
    copy: CopyPlan | None = None  # None when no copy is to be made
    create_database: bool = False
    create_as_target_user: bool = False  # PostgreSQL: the URL's role may create it itself
    old: Store | None = None  # where late records come from
    after_id: int = 0  # late records: ids past this one (known once the copy is)

    @property
    def refused(self) -> bool:
        return self.copy is not None and self.copy.refused

    def to_dict(self) -> dict:
        return {
            "project": str(self.directory),
            "source": self.source.display,
            "target": self.target.display,
            "stage": self.stage,
            "label_generator": self.label.to_dict(self.directory),
            "steps": [{"step": s.name, "action": s.action, "needed": s.needed} for s in self.steps],
            "copy": None if self.copy is None else self.copy.to_dict(),
        }


@dataclass
class MoveResult:
    plan: MovePlan
    created: CreatedDatabase | None = None
    copy: CopyResult | None = None
    switched: SwitchResult | None = None
    label_fixed: str | None = None  # the label generator the project was given
    late: CarryResult = field(default_factory=CarryResult)
    pooler: PoolerStarted | None = None
    changed: list[str] = field(default_factory=list)  # what this run changed, in order
    created_here: bool = False  # this run created the database
    undone: list[str] = field(default_factory=list)  # what it undid after a failure

    def to_dict(self) -> dict:
        data = self.plan.to_dict()
        data.update(
            {
                "created": None if self.created is None else vars(self.created),
                "copy_result": None if self.copy is None else self.copy.to_dict(),
                "switched": self.switched is not None,
                "label_generator_fixed": self.label_fixed,
                "late_records": self.late.to_dict(),
                "pooler": None if self.pooler is None else self.pooler.status.to_dict(),
            }
        )
        return data


@contextmanager
def project_lock(directory: Path) -> Iterator[None]:
    """Hold the project's move lock (LOCK_FILE) for the body: one `move` of a project at a
    time. An fcntl lock ends with its process, so a file a killed move left blocks nothing;
    the holder writes its pid and host in it for the refusal to name."""
    path = directory / LOCK_FILE
    if not path.parent.is_dir():  # not a project: the plan says so
        yield
        return
    try:
        handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held for the body)
    except OSError as exc:
        raise SmtmigrateError(f"{path}: cannot open the move lock ({exc.strerror})") from exc
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "a process that has not written its name yet"
            raise Refused(
                f"{directory}: another move of this project is running ({holder}); "
                "let it end, or run this one again after it"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_state(directory: Path) -> dict | None:
    return read_json_state(directory / STATE_FILE, "; remove it to start over")


def write_state(plan: MovePlan) -> None:
    assert plan.old is not None
    state = {
        "moved_from": store_url(plan.old),
        "moved_to": store_url(plan.target),
        "copied_through_id": plan.after_id,
    }
    write_private(plan.directory / STATE_FILE, json.dumps(state, indent=2) + "\n", mode=0o600)

"""A job process of a stress run and the ways of running them (api.ApiMode, smt.SmtMode):
the values run.py orchestrates and the modes collect, below both."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..locations import Store


@dataclass
class Job:
    number: int
    process: subprocess.Popen
    out: Path
    err: Path
    ready: bool = False
    killed: bool = False


class Mode(Protocol):
    """A way of running the jobs (api.ApiMode, smt.SmtMode)."""

    name: str
    cwd: Path  # where the jobs run

    def warm_up(self, deadline: float) -> tuple[str, str] | None: ...
    def job_command(self, number: int) -> list[str]: ...
    def collect(self, job: Job, finished: list[float], *, released: bool) -> None: ...
    def count(self, store: Store) -> None: ...

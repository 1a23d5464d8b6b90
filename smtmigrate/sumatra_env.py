"""Whether the project's own `smt` can open a PostgreSQL or MariaDB store.

Sumatra opens a Django store only when Django imports in the Python that runs `smt`, and
the database's driver with it (psycopg2, mysqlclient); without Django it quietly falls back to
a shelve store. That Python is the project's environment, often not smtmigrate's: found as
the `smt` on PATH, else the one beside smtmigrate's Python, and asked in a process of its own.
"""

from __future__ import annotations

import importlib
import json
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import Refused
from .locations import Store

DRIVERS = {"postgresql": ("psycopg2", "postgres"), "mariadb": ("MySQLdb", "mysql")}

_PROBE = """
import importlib, json, sys
found = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception as exc:
        found[name] = f"{type(exc).__name__}: {exc}"
try:
    from importlib.metadata import version
    found["sumatra version"] = version("sumatra")
except Exception:
    pass
print(json.dumps(found))
"""


@dataclass
class SmtPython:
    smt: Path
    python: list[str]  # the interpreter its first line names (with its arguments)


def _probe(names: list[str]) -> dict[str, str]:
    """_PROBE's answer, asked of this very Python."""
    found = {}
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:
            found[name] = f"{type(exc).__name__}: {exc}"
    if not found:
        return found  # the version only names what to install
    try:
        from importlib.metadata import version

        found["sumatra version"] = version("sumatra")
    except Exception:
        pass
    return found


def is_this_python(python: list[str]) -> bool:
    """Whether `python` is the interpreter running smtmigrate (same directory, same file:
    a venv's `python3` beside its `python`, not another venv of the same base Python)."""
    if len(python) != 1:
        return False
    theirs, ours = Path(python[0]), Path(sys.executable)
    try:
        return theirs.parent.resolve() == ours.parent.resolve() and theirs.samefile(ours)
    except OSError:
        return False


def project_smt() -> SmtPython | None:
    """The `smt` the project's runs use, and its Python; None when there is none to find."""
    found = shutil.which("smt")
    smt = Path(found) if found else Path(sys.executable).parent / "smt"
    try:
        first = smt.read_bytes()[:512].split(b"\n", 1)[0].decode()
    except (OSError, UnicodeDecodeError):
        return None
    if not first.startswith("#!"):
        return None
    python = shlex.split(first[2:])
    if python and Path(python[0]).name == "env" and len(python) > 1:
        python = python[1:]
    if not python or not Path(python[0]).name.startswith("python"):
        return None  # a wrapper (a pyenv shim, a shell script): not ours to second-guess
    return SmtPython(smt, python)


class SmtProbe:
    """Whether the project's smt can open `target` (Django and the driver import in its
    Python), asked before anything is changed, in two halves: the probe's process starts
    on entering (Python starting and importing Django there: a tenth of a second and
    more), `check()` waits for its answer and refuses, saying what to install there; so
    `move` plans while it runs. Leaving kills a probe still running."""

    def __init__(self, target: Store) -> None:
        self.target = target
        self.found: SmtPython | None = None
        self.process: subprocess.Popen | None = None
        self.answer: dict[str, str] | None = None  # asked in this process (is_this_python)

    def __enter__(self) -> SmtProbe:
        if self.target.kind not in DRIVERS:
            return self
        self.found = project_smt()
        if self.found is None:
            return self
        driver = DRIVERS[self.target.kind][0]
        if is_this_python(self.found.python):
            # smt runs in smtmigrate's own environment: asked here, no process to start
            self.answer = _probe(["django", driver])
            return self
        try:
            self.process = subprocess.Popen(
                [*self.found.python, "-c", _PROBE, "django", driver],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        except OSError:
            self.process = None  # an smt we cannot ask: its first run will say
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.communicate()

    def check(self) -> None:
        """Wait for the answer; refuse when Django or the driver is missing there."""
        if self.found is None:
            return
        if self.answer is not None:
            answer = self.answer
        elif self.process is None:
            return
        else:
            process, self.process = self.process, None
            try:
                stdout, _ = process.communicate(timeout=120)
                answer = json.loads(stdout or "{}")
            except (OSError, ValueError, subprocess.TimeoutExpired):
                process.kill()
                process.communicate()
                return  # an smt we cannot ask: its first run will say
        driver, extra = DRIVERS[self.target.kind]
        missing = {name: why for name, why in answer.items() if name in ("django", driver)}
        if not missing:
            return
        version = answer.get("sumatra version")
        package = f"sumatra[web,{extra}]" + (f"=={version}" if version else "")
        python = shlex.join(self.found.python)
        why = "; ".join(f"{name}: {reason}" for name, reason in missing.items())
        raise Refused(
            f"the project's smt ({self.found.smt}) cannot open {self.target.display}: its "
            f"Python lacks {' and '.join(missing)} ({why}); install them there with "
            f"`{python} -m pip install '{package}'`, then run move again; nothing was changed"
        )

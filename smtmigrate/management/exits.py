"""How a command run from a shell ends: one line and an exit code, never a traceback.

The one place that turns Ctrl-C, a closed pipe or a user's error into what a shell sees.
It imports nothing of Django's models, so `cli.py` can use it while Django still loads.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.core.management.base import CommandError, SystemCheckError

from .. import interrupts

INTERRUPTED = 130


@contextmanager
def ended(
    prog: str,
    *,
    verdict: Callable[[], int] = lambda: 0,
    one_line_errors: bool = True,
    say: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Run the body as `prog` (e.g. "smtmigrate audit") ends on a command line.

    - Ctrl-C, also when a library saw it as an error of its own (SQLite's and psycopg2's
      callbacks) or Python lost its exception: `PROG: interrupted`, exit 130.
    - The reader went away (`| head`): quiet, with the command's own `verdict()`.
    - With `one_line_errors` (not so under `--traceback`), a `CommandError`:
      `PROG: error: …` with its returncode. A `SystemCheckError` goes on to Django, which
      formats it; any other exception is a bug and keeps its traceback.

    `say` writes the line (the command's own stderr, red on a terminal); default sys.stderr.
    """

    def to_stderr(line: str) -> None:
        sys.stderr.write(line + "\n")

    write: Callable[[str], None] = say or to_stderr
    try:
        with interrupts.watched():
            yield
            interrupts.check()  # a Ctrl-C whose exception Python lost on the way
    except KeyboardInterrupt:
        _stop(write, f"{prog}: interrupted", INTERRUPTED)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(verdict())
    except Exception as exc:
        if interrupts.seen():  # Ctrl-C, seen by a library as an error of its own
            if isinstance(exc, CommandError) and exc.returncode == INTERRUPTED:
                _stop(write, f"{prog}: {exc}", INTERRUPTED)  # says what it had done
            _stop(write, f"{prog}: interrupted", INTERRUPTED)
        if not (one_line_errors and isinstance(exc, CommandError)):
            raise
        if isinstance(exc, SystemCheckError):
            raise
        _stop(write, f"{prog}: error: {exc}", exc.returncode)


def _stop(say: Callable[[str], None], line: str, code: int) -> None:
    say(line)
    sys.exit(code)

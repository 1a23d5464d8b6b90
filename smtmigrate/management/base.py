"""The base of every smtmigrate command: one-line errors and meaningful exit codes."""

from __future__ import annotations

import os
import sys

from django.core.management.base import BaseCommand, CommandError, handle_default_options
from django.db import connections

from .. import interrupts
from ..errors import MariadbNotYet, SmtmigrateError
from ..render import console

INTERRUPTED = 130


class SmtmigrateCommand(BaseCommand):
    """A thin command: parse options, call the library, render the result.

    `handle()` sets `self.exit_code` for outcomes that are not errors but that scripts must
    see (e.g. audit findings). Errors a user can cause are `SmtmigrateError`s and end as one
    line on stderr with their exit code, never a traceback (unless --traceback).
    """

    requires_system_checks = "__all__"
    exit_code = 0

    _no_color = False

    def console(self):
        return console(self.stdout._out, no_color=self._no_color)

    def execute(self, *args, **options):
        self._no_color = bool(options.get("no_color"))
        try:
            return super().execute(*args, **options)
        except MariadbNotYet as exc:  # say which command does not take one yet
            command = exc.command or self.__module__.rsplit(".", 1)[-1].replace("_", "-")
            message = str(MariadbNotYet(exc.display, command))
            raise CommandError(message, returncode=exc.exit_code) from exc
        except SmtmigrateError as exc:
            raise CommandError(str(exc), returncode=exc.exit_code) from exc
        except OSError as exc:
            if isinstance(exc, BrokenPipeError) or exc.filename is None:
                raise
            # A file the command could not write or read, which no check caught first.
            raise CommandError(f"{exc.filename}: {exc.strerror}", returncode=2) from exc

    def run_from_argv(self, argv: list[str]) -> None:
        """Django's, with the error shown as `smtmigrate CMD: error: …` and our exit codes."""
        self._called_from_command_line = True
        parser = self.create_parser(argv[0], argv[1])
        options = parser.parse_args(argv[2:])
        cmd_options = vars(options)
        args = cmd_options.pop("args", ())
        handle_default_options(options)
        try:
            with interrupts.watched():
                self.execute(*args, **cmd_options)
                interrupts.check()  # a Ctrl-C whose exception Python lost on the way
        except KeyboardInterrupt:
            self._interrupted(parser.prog)
        except BrokenPipeError:
            # The reader went away (`| head`): stop quietly with the command's own verdict.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(self.exit_code)
        except Exception as exc:
            if interrupts.seen():  # Ctrl-C, seen by a library as an error of its own
                self._interrupted(parser.prog)
            if not isinstance(exc, CommandError) or options.traceback:
                raise
            self.stderr.write(f"{parser.prog}: error: {exc}")
            sys.exit(exc.returncode)
        finally:
            connections.close_all()
        if self.exit_code:
            sys.exit(self.exit_code)

    def _interrupted(self, prog: str) -> None:
        self.stderr.write(f"{prog}: interrupted")
        sys.exit(INTERRUPTED)


def password_from_env(variable: str | None, create_role: bool) -> str | None:
    """`--password-env VAR` (with `--create-role`): the new role's password, never typed on
    a command line that shells and process lists show."""
    if not variable:
        return None
    if not create_role:
        raise SmtmigrateError("--password-env goes with --create-role")
    password = os.environ.get(variable)
    if not password:
        raise SmtmigrateError(f"environment variable {variable} is not set or empty")
    return password

"""The base of every smtmigrate command: one-line errors and meaningful exit codes.

Django's own `run_from_argv` parses the options, formats a `SystemCheckError` and closes
the connections; this class adds how a command ends on a command line (`exits.ended`) and
the exit code of outcomes that are not errors (`exit_code`).
"""

from __future__ import annotations

import argparse
import os
import sys

from django.core.management.base import BaseCommand, CommandError
from rich.console import Console

from ..engines.sqlite import turn_memory_statistics_off
from ..errors import MariadbNotYet, SmtmigrateError
from ..render import console
from ..verify import DEFAULT_LEVEL, LEVELS
from .exits import ended

# Django's options of every command: kept for `manage.py`, left out of the standalone
# `smtmigrate COMMAND --help` (they still work there: `--traceback` for developers).
DJANGO_OPTIONS = frozenset(
    {
        "--version",
        "-v",
        "--verbosity",
        "--settings",
        "--pythonpath",
        "--traceback",
        "--no-color",
        "--force-color",
        "--skip-checks",
    }
)


class SmtmigrateCommand(BaseCommand):
    """A thin command: parse options, call the library, render the result.

    `handle()` sets `self.exit_code` for outcomes that are not errors but that scripts must
    see (e.g. audit findings). Errors a user can cause are `SmtmigrateError`s and end as one
    line on stderr with their exit code, never a traceback (unless --traceback).
    """

    requires_system_checks = "__all__"
    exit_code = 0
    standalone = False  # set by cli.py: the `smtmigrate` entry point, not manage.py

    _no_color = False

    def console(self, *, stderr: bool = False) -> Console:
        """Where the command's output goes (render.py draws it). Django's OutputWrapper ends
        every write with a newline; rich writes whole lines itself: it gets the stream."""
        wrapper = self.stderr if stderr else self.stdout
        return console(wrapper._out, no_color=self._no_color)

    def create_parser(self, prog_name: str, subcommand: str, **kwargs) -> argparse.ArgumentParser:
        """Django's parser; standalone, its own options work but stay out of --help. (Django's
        `suppressed_base_arguments` cannot reach `--skip-checks`, added outside its hook.)"""
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        if self.standalone:
            for action in parser._actions:
                if DJANGO_OPTIONS.intersection(action.option_strings):
                    action.help = argparse.SUPPRESS
        return parser

    def run_from_argv(self, argv: list[str]) -> None:
        """Django's, then the command's own verdict as the exit code."""
        self._prog = f"{os.path.basename(argv[0])} {argv[1]}"
        turn_memory_statistics_off()  # nothing has opened an SQLite database yet
        super().run_from_argv(argv)
        if self.exit_code:
            sys.exit(self.exit_code)

    def execute(self, *args, **options):
        self._no_color = bool(options.get("no_color"))
        if self.standalone:
            # The standalone CLI's settings are its own (smtmigrate.settings): Django's system
            # checks of them have one answer, clean (tests/unit/test_settings.py), and cost
            # what importing the URL and CSRF machinery costs. manage.py's are checked.
            options["skip_checks"] = True
        if not getattr(self, "_called_from_command_line", False):  # call_command
            return self._execute(*args, **options)
        with ended(
            self._prog,
            verdict=lambda: self.exit_code,
            one_line_errors=not options.get("traceback"),
            say=self.stderr.write,
        ):
            return self._execute(*args, **options)

    def _execute(self, *args, **options):
        """Django's execute, with the errors a user can cause as `CommandError`s."""
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


# -- options that mean the same in several commands, spelled once ----------------------------


def add_format_option(parser: argparse.ArgumentParser) -> None:
    """`--format table|json`: how a command renders its result."""
    parser.add_argument("--format", choices=("table", "json"), default="table")


def add_yes_option(parser: argparse.ArgumentParser) -> None:
    """`--yes`: go ahead without the question a command asks before it changes something."""
    parser.add_argument("--yes", action="store_true", help="do not ask (for scripts)")


def add_project_argument(parser: argparse.ArgumentParser) -> None:
    """PROJECT: the Sumatra project directory a command changes."""
    parser.add_argument("project", help="the Sumatra project directory")


def add_location_argument(parser: argparse.ArgumentParser) -> None:
    """LOCATION: a store as any command that reads one takes it."""
    parser.add_argument(
        "location",
        help="Sumatra project directory, SQLite file, postgresql:// or mysql:// URL",
    )


def add_admin_option(parser: argparse.ArgumentParser, *, help: str) -> None:
    """`--admin URL`: the maintenance connection that creates (or drops) a database."""
    parser.add_argument("--admin", metavar="URL", help=help)


def add_role_options(parser: argparse.ArgumentParser, *, create_help: str) -> None:
    """`--create-role` and its `--password-env VAR` (read by `password_from_env`)."""
    parser.add_argument("--create-role", action="store_true", help=create_help)
    parser.add_argument(
        "--password-env",
        metavar="VAR",
        help="with --create-role: read the new role's password from this environment variable",
    )


def add_copy_options(parser: argparse.ArgumentParser) -> None:
    """How a copy (copy, move) treats duplicate rows and how it is verified."""
    parser.add_argument(
        "--dedupe",
        action="store_true",
        help="merge rows Sumatra's get_or_create cannot tell apart (duplicate executables, "
        "repositories, launch modes, datastores, parameter sets, dependencies, platforms, "
        "data keys) into one row (the lowest id; a data key: its last output), re-pointing "
        "every reference; without it such a store is refused",
    )
    add_copy_readable_option(parser)
    parser.add_argument(
        "--verify",
        choices=LEVELS,
        default=DEFAULT_LEVEL,
        help="what is compared besides every table's row count and every row's checksum: "
        "sample (default) also reads 1,000 records (all, in a smaller store) back through "
        "Sumatra on both sides; full reads every record; rows reads none",
    )


def add_expect_jobs_option(parser: argparse.ArgumentParser) -> None:
    """`--expect-jobs N`: the parallel `smt run`s the user means to start, set against the
    server's connection headroom before any runs."""
    parser.add_argument(
        "--expect-jobs",
        type=int,
        metavar="N",
        help="the smt runs you will start at once: warns when the server's free connections "
        "(each run holds one) do not fit them",
    )


def add_copy_readable_option(parser: argparse.ArgumentParser) -> None:
    """What a command that copies does with an SQLite store that fails SQLite's own check."""
    parser.add_argument(
        "--copy-readable",
        action="store_true",
        help="copy an SQLite store that fails SQLite's own check (quick_check) anyway: every "
        "row that can still be read, indexes rebuilt; the tables that could not be read "
        "whole are reported. Without it such a store is refused (exit 2)",
    )


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

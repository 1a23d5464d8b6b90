"""The `smtmigrate` entry point: configure Django with our own settings, run a command.

The same commands are reachable through `manage.py` of any Django project that has
`smtmigrate` (and Sumatra's `django_store` app) in INSTALLED_APPS.
"""

from __future__ import annotations

import os
import sys

from . import __version__

# Every command, in the order a move uses them, with its one-line summary.
COMMANDS: dict[str, str] = {
    "move": "The whole move of a project, in one command that can be run again.",
    "audit": "Report what in a store would fail, or is bound to fail, on PostgreSQL.",
    "widen": "Plan, write or apply migrations that widen Sumatra's columns.",
    "copy": "Copy every record into PostgreSQL (or a fresh SQLite store), verified.",
    "merge": "Merge many stores (one per node, per machine) into one store, exactly.",
    "verify": "Compare two stores: row counts, checksums, records through Sumatra.",
    "createdb": "Create a role and a UTF8 database with Sumatra's widened schema.",
    "drop-recreate": "Back up, drop and recreate a PostgreSQL store, safely.",
    "switch": "Point a Sumatra project at another store (and back).",
    "protect": "Give a live server store the unique identities parallel runs need.",
    "stress": "Prove a store takes many concurrent `smt run`s without losing one.",
    "pooler": "Run a PgBouncer in front of a project's store: more jobs, server restarts.",
}

USAGE = "usage: smtmigrate [--version] [--help] COMMAND [ARGS]"


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        USAGE,
        "",
        "Move Sumatra record stores off SQLite onto PostgreSQL: safely, completely, fast.",
        "",
        "commands:",
    ]
    for name, summary in COMMANDS.items():
        lines.append(f"  {name:<{width}}  {summary}")
    lines += ["", "Run `smtmigrate COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit code (0 ok, 1 findings/refused, 2 errors, 130 ^C)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"smtmigrate {__version__}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"smtmigrate: error: unknown command '{name}'\n{USAGE}", file=sys.stderr)
        return 2

    os.environ["DJANGO_SETTINGS_MODULE"] = "smtmigrate.settings"
    from .management.exits import ended

    try:
        # Ctrl-C while Django and Sumatra load (a second or more) ends as one line too;
        # a command's errors are its own (an error that reaches here asked for --traceback).
        with ended(f"smtmigrate {name}", one_line_errors=False):
            from django.apps import apps
            from django.conf import settings
            from django.core.management import load_command_class

            # django.setup() but for its URL prefix (it imports django.urls, and with it
            # django.http and the views: a tenth of a second no command needs) and its
            # logging (LOGGING_CONFIG is None: nothing to configure)
            apps.populate(settings.INSTALLED_APPS)
            command = load_command_class("smtmigrate", name.replace("-", "_"))
            command.standalone = True  # Django's own options stay out of --help
            command.run_from_argv(["smtmigrate", name, *argv[1:]])
    except SystemExit as exit:
        return exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 2)
    return 0


def run() -> None:
    sys.exit(main())

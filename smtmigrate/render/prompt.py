"""The questions commands ask on a terminal before they change anything: the only
`input()`s of the package. Each refuses (Refused: nothing was changed) unless answered."""

from __future__ import annotations

import sys

from rich.console import Console

from ..errors import Refused


def confirm_go_ahead(out: Console) -> None:
    """move: `y` or `yes` goes ahead."""
    if not sys.stdin.isatty():
        raise Refused("move changes the project: add --yes to go ahead without a question")
    answer = out.input("Go ahead? [y/N] ")
    if answer.strip().lower() not in ("y", "yes"):
        raise Refused("nothing was changed")


def confirm_database_name(name: str) -> None:
    """drop-recreate: the database's name, typed, goes ahead."""
    if not sys.stdin.isatty():
        raise Refused("not confirmed: no terminal to ask on; pass --yes to drop without asking")
    answer = input(f"Type the database name ({name}) to drop and recreate it: ")
    if answer.strip() != name:
        raise Refused("not confirmed: the name typed does not match; nothing was changed")

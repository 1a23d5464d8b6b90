"""Where output goes: one console per stream, one JSON writer.

Markup safety lives here, once: the console never reads rich markup, so a path, a label or
a database error holding `[bold]` prints as typed. Styles come from `Text` and `style=`.
"""

from __future__ import annotations

import json
from typing import IO, TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from ..snapshot import Snapshot

PIPED_WIDTH = 160


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """Rich would exit 1 (the audit's "findings"); the command ends it instead, with
        its own verdict (management/exits.py)."""
        self.quiet = True
        raise BrokenPipeError


def console(file: IO[str], *, no_color: bool = False) -> Console:
    """A console that wraps to the terminal, or to a wide page when output is piped, and
    prints every string as plain text (never rich markup, nor emoji codes)."""
    is_tty = hasattr(file, "isatty") and file.isatty()
    return _Console(
        file=file,
        no_color=no_color,
        markup=False,
        emoji=False,  # a `:name:` in a label or path stays as it is (and rich's emoji table unread)
        highlight=False,
        width=None if is_tty else PIPED_WIDTH,
    )


def write_json(data: Any, out: Console) -> None:
    """The one JSON writer: the whole document, indented, as it is (no wrapping, no style)."""
    out.file.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    out.file.flush()


def table(*headings: str, right: tuple[str, ...] = (), **options: Any) -> Table:
    """A table with these column headings (`right`: the right-justified ones); long values
    fold onto more lines rather than being cut: every character of a finding matters."""
    new = Table(pad_edge=False, **options)
    for heading in headings:
        new.add_column(heading, justify="right" if heading in right else "left", overflow="fold")
    return new


def say(out: Console, text: str, style: str = "") -> None:
    """One line of plain text, optionally styled as a whole."""
    out.print(Text(text, style=style))


def bold_then(head: str, rest: str) -> Text:
    """`head` in bold, then `rest`: the shape of most first lines."""
    return Text.assemble((head, "bold"), rest)


def number(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


def mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:,.1f}"


def write_lines(out: Console, lines: list[str]) -> None:
    """Lines exactly as they are, never wrapped: SQL for psql, paths to copy."""
    out.file.write("".join(line + "\n" for line in lines))
    out.file.flush()


def render_readable(snapshot: Snapshot, out: Console) -> None:
    """A damaged store read with --copy-readable: what was read, and what could not be."""
    damage = snapshot.damage
    if damage is None or not damage.readable:
        return
    say(
        out,
        f"WARNING: {snapshot.live.display} is damaged ({damage.where}): only what SQLite "
        "could read of it was read (--copy-readable), indexes rebuilt from those rows.",
        "bold yellow reverse",
    )
    if not damage.unreadable:
        say(out, "Every row of every table was read: only indexes were damaged.", "bold")
    for lost in damage.unreadable:
        say(out, f"NOT READ: {lost.described}", "bold red")
    for table, rows in damage.orphans.items():
        say(out, f"LEFT OUT: {table}: {rows:,} rows that refer to rows not read", "bold red")


def render_snapshot(
    snapshot: Snapshot, out: Console, *, role: str, added: str, removed: str
) -> None:
    """`Source as of … UTC: N records`, and, when the live store has changed since, lines
    no one can miss: `added`/`removed` say what that means for the command at hand."""
    say(out, f"{role} {snapshot.summary}", "bold")
    render_readable(snapshot, out)
    changes = snapshot.changes
    if changes is None or not changes.changed:
        return
    for count, consequence in ((changes.added, added), (changes.removed, removed)):
        if count:
            say(
                out,
                f"WARNING: {count:,} record{'s' * (count != 1)} {consequence}.",
                "bold yellow reverse",
            )

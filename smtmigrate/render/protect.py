"""`protect`: what a store had, what was merged, which identities were built and how."""

from __future__ import annotations

from rich.console import Console

from ..protect import ProtectResult
from .console import say


def render_protect(result: ProtectResult, out: Console) -> None:
    before = result.before
    for table, collations in before.unsupported.items():
        say(
            out,
            f"{table}: not protected: collation {', '.join(collations)} is not byte-exact, "
            "so no identity can agree with Sumatra's `=` (copy the store into a database "
            "smtmigrate creates: binary no-pad collation)",
            "yellow",
        )
    if result.already:
        say(
            out, f"{result.store} is protected: {len(before.present)} table(s) have their identity."
        )
        return
    for table, groups in result.duplicates.items():
        extra = sum(len(g.ids) - 1 for g in groups)
        say(out, f"{table}: {len(groups)} group(s) of duplicates, {extra} extra row(s)")
    if result.dry_run:
        what = "merge the duplicates (--dedupe), then " if result.duplicates else ""
        say(
            out, f"Would {what}build {len(before.missing)} identities: {', '.join(before.missing)}."
        )
        return
    if result.merged:
        merged = ", ".join(f"{n:,} {t}" for t, n in result.merged.items())
        text = f"Merged {merged} row(s) into the kept row of their group"
        if result.links_dropped:
            dropped = ", ".join(f"{n:,} {t}" for t, n in result.links_dropped.items())
            text += f"; dropped {dropped} link(s) that became equal"
        say(out, text + ".")
    if result.moved_outputs:
        say(
            out,
            f"{result.moved_outputs} record(s) lost an output DataKey to another record's equal "
            "key (as Sumatra's own sequential saves would have left them).",
            "yellow",
        )
    built = result.built
    if built is not None:
        for table in built.tables:
            how = built.how.get(table, "CREATE UNIQUE INDEX CONCURRENTLY")
            say(out, f"  {table}: {how}")
        say(out, f"Protected {result.store}: {len(built.tables)} identities built.", "bold")

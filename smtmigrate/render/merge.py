"""What `merge` shows: sources, what became of their records, conflicts, the check."""

from __future__ import annotations

from rich.console import Console

from ..merge import MergeResult
from .console import render_readable, say, table

CONFLICTS_SHOWN = 50
CHECKED_HOW = {
    "full": "read back equal through Sumatra",
    "rows": "equal in stored content (fingerprints)",
    "none": "not compared (--verify none)",
}


def render_merge(result: MergeResult, out: Console) -> None:
    """The sources, what happened to their records, conflicts, new rows and the check."""
    for source in result.sources:
        say(out, f"source {source['store']} ({source['layout']}): {source['records']:,} records")
    for snapshot in result.snapshots:
        render_readable(snapshot, out)
    data = result.to_dict()["records"]
    if result.refused:
        say(
            out,
            f"Refused: {len(result.conflicts)} conflict(s) with --on-conflict {result.policy}; "
            "nothing was written.",
            "bold red",
        )
    say(
        out,
        f"{data['incoming']:,} incoming record(s): {data['inserted']:,} new, "
        f"{data['equal']:,} already there (taken once), {data['skipped']:,} skipped, "
        f"{data['renamed']:,} renamed; target {data['target_before']:,} → "
        f"{data['target_after']:,} records.",
    )
    if result.conflicts:
        render_conflicts(result, out)
    for project in result.projects:
        say(
            out,
            f"project {project['project']}: {project['source']} has name "
            f"{project['source_name']!r} / description {project['source_description']!r}; "
            f"kept {project['kept_name']!r} / {project['kept_description']!r}",
        )
    if any(result.rows.values()) and not result.refused:
        new = ", ".join(
            f"{n:,} {t.removeprefix('django_store_')}" for t, n in result.rows.items() if n
        )
        say(out, f"New rows{' (rolled back)' if result.dry_run else ''}: {new}.")
    groups, rows = result.datakey_twins
    if groups:
        say(
            out,
            f"Note: {rows:,} data keys ({groups:,} group(s)) are equal in path, digest, "
            "creation and metadata but outputs of different records; they stay separate "
            "rows (one per record, as read back). A later `smt run` whose input or output "
            "is such a file raises MultipleObjectsReturned in Sumatra's get_or_create.",
            "yellow",
        )
    if result.check is not None:
        _render_check(result, out)
    if result.dry_run:
        say(out, "Dry run: rolled back, nothing was written.")
    elif result.committed:
        say(
            out,
            f"Merged in {result.seconds.get('total', 0):.2f} s; writers of the target were "
            f"held {result.locked:.2f} s.",
        )


def _render_check(result: MergeResult, out: Console) -> None:
    check = result.check
    assert check is not None
    counts = check.counts
    if check.ok:
        say(
            out,
            f"Checked: {check.records:,} inserted record(s) {CHECKED_HOW[check.method]}; "
            f"counts reconcile ({counts.get('target_before', 0):,} + "
            f"{counts.get('inserted', 0):,} = {counts.get('target_after', 0):,}).",
        )
        return
    say(
        out,
        f"Check FAILED, nothing was written: {check.total_differences} difference(s), "
        f"counts {check.counts}",
        "bold red",
    )
    for difference in check.differences:
        say(out, f"  {difference}")


def render_conflicts(result: MergeResult, out: Console) -> None:
    conflicts = table(
        "project", "label", "source", "differs from", "fields", "action",
        title="Conflicts: same (project, label), different content",
    )  # fmt: skip
    for conflict in result.conflicts[:CONFLICTS_SHOWN]:
        action = conflict.action
        if conflict.new_label:
            action += f" → {conflict.new_label}"
        conflicts.add_row(
            conflict.project or "",
            conflict.label,
            conflict.source,
            conflict.against,
            ", ".join(conflict.fields),
            action,
        )
    out.print(conflicts)
    if len(result.conflicts) > CONFLICTS_SHOWN:
        say(out, f"(+{len(result.conflicts) - CONFLICTS_SHOWN} more: see --format json)")

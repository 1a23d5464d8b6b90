"""What `merge` shows a person (to be folded into the render package)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from .merge import MergeResult

CONFLICTS_SHOWN = 50


def render_merge(result: MergeResult, out: Console) -> None:
    """The sources, what happened to their records, conflicts, new rows and the check."""
    for source in result.sources:
        out.print(
            f"source {source['store']} ({source['layout']}): {source['records']:,} records",
            markup=False,
        )
    data = result.to_dict()["records"]
    if result.refused:
        out.print(
            f"Refused: {len(result.conflicts)} conflict(s) with --on-conflict {result.policy}; "
            "nothing was written.",
            style="bold red",
        )
    out.print(
        f"{data['incoming']:,} incoming record(s): {data['inserted']:,} new, "
        f"{data['equal']:,} already there (taken once), {data['skipped']:,} skipped, "
        f"{data['renamed']:,} renamed; target {data['target_before']:,} → "
        f"{data['target_after']:,} records.",
        markup=False,
    )
    if result.conflicts:
        render_conflicts(result, out)
    for project in result.projects:
        out.print(
            f"project {project['project']}: {project['source']} has name "
            f"{project['source_name']!r} / description {project['source_description']!r}; "
            f"kept {project['kept_name']!r} / {project['kept_description']!r}",
            markup=False,
        )
    if any(result.rows.values()) and not result.refused:
        new = ", ".join(
            f"{n:,} {t.removeprefix('django_store_')}" for t, n in result.rows.items() if n
        )
        out.print(f"New rows{' (rolled back)' if result.dry_run else ''}: {new}.", markup=False)
    if result.check is not None:
        check = result.check
        how = {
            "full": "read back equal through Sumatra",
            "rows": "equal in stored content (fingerprints)",
            "none": "not compared (--verify none)",
        }[check.method]
        counts = check.counts
        if check.ok:
            out.print(
                f"Checked: {check.records:,} inserted record(s) {how}; counts reconcile "
                f"({counts.get('target_before', 0):,} + {counts.get('inserted', 0):,} = "
                f"{counts.get('target_after', 0):,}).",
                markup=False,
            )
        else:
            out.print(
                f"Check FAILED, nothing was written: {check.total_differences} difference(s), "
                f"counts {check.counts}",
                style="bold red",
            )
            for difference in check.differences:
                out.print(f"  {difference}", markup=False)
    if result.dry_run:
        out.print("Dry run: rolled back, nothing was written.")
    elif result.committed:
        out.print(
            f"Merged in {result.seconds.get('total', 0):.2f} s; writers of the target were "
            f"held {result.locked:.2f} s.",
            markup=False,
        )


def render_conflicts(result: MergeResult, out: Console) -> None:
    table = Table(pad_edge=False, title="Conflicts: same (project, label), different content")
    for heading in ("project", "label", "source", "differs from", "fields", "action"):
        table.add_column(heading)
    for conflict in result.conflicts[:CONFLICTS_SHOWN]:
        action = conflict.action
        if conflict.new_label:
            action += f" → {conflict.new_label}"
        table.add_row(
            conflict.project or "",
            conflict.label,
            conflict.source,
            conflict.against,
            ", ".join(conflict.fields),
            action,
        )
    out.print(table)
    if len(result.conflicts) > CONFLICTS_SHOWN:
        out.print(f"(+{len(result.conflicts) - CONFLICTS_SHOWN} more: see --format json)")

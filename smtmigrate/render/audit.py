"""What `audit` and `widen` show: findings, the verdict, the advice, widening plans."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..audit import FAILING_KINDS, KINDS, AuditReport, Finding
from ..project import LabelGenerator
from ..widen import WideningPlan
from ..widen_apply import ApplyResult
from .console import bold_then, number, render_snapshot, say, table, write_lines

KIND_STYLES = {
    "damaged": "bold red",
    "invalid": "bold red",
    "overflow": "bold red",
    "duplicate": "bold red",
    "duplicate-label": "yellow",
    "collision": "yellow",
    "charset": "yellow",
    "server": "yellow",
    "unprotected": "yellow",
    "near-limit": "yellow",
    "drift": "magenta",
    "risk": "cyan",
}
EXAMPLE_GROUPS = 3  # duplicate groups shown per finding (JSON lists them all)


def audit_verdict(report: AuditReport) -> str:
    """The audit's answer in one line: FAIL with what fails, or OK with what to watch."""
    counts = report.counts()
    server = report.judged_by  # PostgreSQL, or MariaDB for a MariaDB store
    if report.failing:
        kinds = ("damaged", "overflow", "invalid", "duplicate")
        parts = ", ".join(f"{counts[k]} {k}" for k in kinds if counts[k])
        what = f"would be rejected by {server}"
        if counts["duplicate"]:
            what += " or break Sumatra's lookups"
        if counts["damaged"]:  # SQLite's own check fails: before anything the server says
            others = len(report.failing) - counts["damaged"]
            what = "the store is damaged (SQLite's own check fails)" + (
                f"; {others} {what}" if others else ""
            )
            return f"FAIL: {len(report.failing)} finding(s): {what} ({parts})."
        return f"FAIL: {len(report.failing)} finding(s) {what} ({parts})."
    warnings = ", ".join(f"{counts[k]} {k}" for k in KINDS if k not in FAILING_KINDS and counts[k])
    return f"OK: nothing would fail on {server}" + (f" ({warnings})." if warnings else ".")


def audit_json(
    report: AuditReport, labels: LabelGenerator | None = None, directory: Path | None = None
) -> dict[str, Any]:
    """Everything the audit found (every `risk` column too), with its verdict."""
    data = report.to_dict()
    data["summary"] = {"verdict": audit_verdict(report), **data["summary"]}
    if labels is not None and directory is not None:
        data["project"] = labels.to_dict(directory)
    return data


def render_audit(
    report: AuditReport,
    out: Console,
    *,
    labels: LabelGenerator | None = None,
    directory: Path | None = None,
    show_all: bool = False,
) -> None:
    """What fails first, then what to watch; the `risk` columns (unbounded by nature, fine
    today) as one count unless `show_all`: on real stores they outnumber the answer."""
    out.print(
        bold_then(
            report.location,
            f"  layout {report.layout}, {len(report.row_counts)} tables, "
            f"{sum(report.row_counts.values()):,} rows, scanned in {report.seconds:.2f} s",
        )
    )
    if report.snapshot is not None:
        render_snapshot(
            report.snapshot,
            out,
            role="Audited the store",
            added="were added after the snapshot and were not audited",
            removed="were removed after the snapshot",
        )
    shown = [f for f in report.findings if show_all or f.kind != "risk"]
    if shown:
        out.print(findings_table(shown))
    risks = len(report.findings) - len(shown)
    if risks:
        columns = "1 more column" if risks == 1 else f"{risks} more columns"
        say(
            out,
            f"{columns} could outgrow the limit one day: content unbounded by nature (risk); "
            "--all lists them.",
            KIND_STYLES["risk"],
        )
    if labels is not None and directory is not None:
        render_project(labels, directory, out)
    say(out, audit_verdict(report), "bold red" if report.exit_code else "bold green")
    if report.exit_code:
        say(out, _advice(report.failing))


def render_project(labels: LabelGenerator, directory: Path, out: Console) -> None:
    """The project section of `audit PROJECT_DIR`: its configuration, not the store's data."""
    if labels.collides:
        say(out, f"project: {labels.problem}.", "bold yellow")
        say(out, f"  fix: {labels.fix(directory)}")
    else:
        say(out, f"project: label generator {labels.described}: distinct labels")


def findings_table(findings: list[Finding]) -> Table:
    found = table(
        "kind", "table", "column", "limit", "longest", "rows", "detail / examples",
        right=("limit", "longest", "rows"),
    )  # fmt: skip
    for finding in findings:
        found.add_row(
            Text(finding.kind, style=KIND_STYLES[finding.kind]),
            finding.table,
            finding.column or "",
            number(finding.limit),
            number(finding.max_length),
            number(finding.rows),
            _detail(finding),
        )
    return found


def _detail(finding: Finding) -> str:
    lines = [finding.detail.removeprefix("unbounded by nature: ")] if finding.detail else []
    if finding.kind in ("duplicate", "duplicate-label", "collision"):
        for group in finding.examples[:EXAMPLE_GROUPS]:
            values = ", ".join(f"{k}={v!r}" for k, v in group["values"].items())
            lines.append(f"  ids {', '.join(map(str, group['ids']))}: {values}")
        if len(finding.examples) > EXAMPLE_GROUPS:
            lines.append(f"  (+{len(finding.examples) - EXAMPLE_GROUPS} more groups)")
        return "\n".join(lines)
    for example in finding.examples:
        value = f"{example['value']!r} ({example['length']} chars)"
        if example.get("label") and finding.column != "label":
            lines.append(f"  record {example['label']!r}: {value}")
        else:
            lines.append(f"  id {example['id']}: {value}")
    return "\n".join(lines)


def _advice(failing: list[Finding]) -> str:
    kinds = {f.kind for f in failing} & FAILING_KINDS
    advice = []
    if "damaged" in kinds:
        advice.append(
            "repair the damaged file first (`sqlite3 STORE .recover | sqlite3 NEW`, or "
            "`VACUUM INTO` when only indexes are damaged), or copy what can be read "
            "(smtmigrate copy … --copy-readable)"
        )
    if "overflow" in kinds:
        advice.append("widen the columns (smtmigrate widen, or smtmigrate copy … --widen)")
    if "invalid" in kinds:
        advice.append("fix or remove the invalid values in the source store")
    if "duplicate" in kinds:
        advice.append(
            "merge the duplicate rows (smtmigrate copy … --dedupe; a server store in "
            "place: smtmigrate protect --dedupe STORE)"
        )
    return "To move this store: " + "; ".join(advice) + "."


# -- widen --------------------------------------------------------------------------------


def render_plan(plan: WideningPlan, out: Console, *, title: str) -> None:
    changes = plan.changes
    out.print(
        bold_then(
            title,
            f": policy {plan.policy}"
            + (f", headroom {plan.headroom:g}" if plan.policy == "fit" else "")
            + f"; {len(changes)} of {len(plan.columns)} bounded text columns to widen",
        )
    )
    if not changes:
        return
    changes_table = table(
        "table", "column", "today", "widened to", "longest", "why", right=("longest",)
    )
    for change in changes:
        changes_table.add_row(
            change.table,
            change.column,
            change.current_type,
            Text(change.new_type, style="bold"),
            number(change.longest),
            change.reason,
        )
    out.print(changes_table)


def render_widening_start(display: str, policy: str, out: Console) -> None:
    say(out, f"Widening {display}: policy {policy}")


def render_sql_head(title: str, plan: WideningPlan, out: Console) -> None:
    """`widen --sql` prints only SQL (comments included), so that psql can read it."""
    write_lines(out, [f"-- {title}: policy {plan.policy}, {len(plan.changes)} columns"])


def render_sql(statements: list[str], out: Console) -> None:
    write_lines(out, statements or ["-- nothing to widen"])


def render_written(paths: list[Path], out: Console) -> None:
    for path in paths:
        say(out, f"wrote {path}")


def render_still_failing(after: AuditReport, out: Console) -> None:
    """Say so when the plan leaves some of SOURCE's values too long anyway."""
    overflows = [f for f in after.findings if f.kind == "overflow"]
    if overflows:
        names = ", ".join(f"{f.table}.{f.column}" for f in overflows)
        out.print(
            Text.assemble(("Still too narrow for the source's data:", "bold red"), f" {names}")
        )
    if any(f.kind == "invalid" for f in after.findings):
        out.print(
            Text.assemble(("Note:", "yellow"), " the source also holds invalid values (see audit)")
        )


def render_applied(result: ApplyResult, out: Console) -> None:
    if not result.applied:
        say(out, "Already widened: every column is at least as wide as the plan.", "green")
        return
    applied_table = table("table", "column", "before", "after", "why")
    for change in result.plan.changes:
        key = (change.table, change.column)
        applied_table.add_row(
            change.table, change.column, result.before[key], result.after[key], change.reason
        )
    out.print(applied_table)
    if result.alters is not None:  # MariaDB: one ALTER at a time, each timed
        timings = table("table", "rows", "seconds", "s per 10k rows", "how")
        for alter in result.alters:
            # per 10k rows only where the table is big enough for it to mean something
            per_10k = f"{alter.seconds / alter.rows * 10_000:.2f}" if alter.rows >= 1000 else ""
            timings.add_row(
                alter.table, f"{alter.rows:,}", f"{alter.seconds:.2f}", per_10k, alter.how
            )
        out.print(timings)
        say(
            out,
            f"Widened {len(result.plan.changes)} columns, one ALTER at a time (MariaDB commits "
            f"each by itself); recorded as migration django_store.{result.migration_name}.",
            "bold green",
        )
        return
    say(
        out,
        f"Widened {len(result.plan.changes)} columns in one transaction; recorded as "
        f"migration django_store.{result.migration_name}.",
        "bold green",
    )

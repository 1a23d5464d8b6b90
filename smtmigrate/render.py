"""Everything smtmigrate shows a person: rich tables on a terminal, plain text elsewhere."""

from __future__ import annotations

import json
from typing import IO, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .audit import FAILING_KINDS, AuditReport, Finding
from .widen import ApplyResult, WideningPlan

KIND_STYLES = {
    "invalid": "bold red",
    "overflow": "bold red",
    "near-limit": "yellow",
    "drift": "magenta",
    "risk": "cyan",
}


PIPED_WIDTH = 160


def console(file: IO[str], *, no_color: bool = False) -> Console:
    """A console that wraps to the terminal, or to a wide page when output is piped."""
    is_tty = hasattr(file, "isatty") and file.isatty()
    return Console(
        file=file,
        no_color=no_color,
        highlight=False,
        width=None if is_tty else PIPED_WIDTH,
    )


def write_json(data: Any, file: IO[str]) -> None:
    file.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def render_audit(report: AuditReport, out: Console) -> None:
    out.print(
        f"[bold]{report.location}[/bold]  layout {report.layout}, "
        f"{len(report.row_counts)} tables, {sum(report.row_counts.values()):,} rows, "
        f"scanned in {report.seconds:.2f} s"
    )
    if report.findings:
        table = Table(show_lines=False, pad_edge=False, expand=False)
        for heading, justify in (
            ("kind", "left"),
            ("table", "left"),
            ("column", "left"),
            ("limit", "right"),
            ("longest", "right"),
            ("rows", "right"),
            ("detail / examples", "left"),
        ):
            table.add_column(heading, justify=justify, overflow="fold")
        for finding in report.findings:
            table.add_row(
                Text(finding.kind, style=KIND_STYLES[finding.kind]),
                finding.table,
                finding.column or "",
                _number(finding.limit),
                _number(finding.max_length),
                _number(finding.rows),
                _detail(finding),
            )
        out.print(table)
    style = "bold red" if report.exit_code else "bold green"
    out.print(Text(report.verdict, style=style))
    if report.exit_code:
        out.print(_advice(report.failing))


def _number(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


def _detail(finding: Finding) -> str:
    lines = [finding.detail.removeprefix("unbounded by nature: ")] if finding.detail else []
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
    if "overflow" in kinds:
        advice.append("widen the columns (smtmigrate widen, or smtmigrate copy … --widen)")
    if "invalid" in kinds:
        advice.append("fix or remove the invalid values in the source store")
    return "To move this store: " + "; ".join(advice) + "."


def render_plan(plan: WideningPlan, out: Console, *, title: str) -> None:
    changes = plan.changes
    out.print(
        f"[bold]{title}[/bold]: policy {plan.policy}"
        + (f", headroom {plan.headroom:g}" if plan.policy == "fit" else "")
        + f"; {len(changes)} of {len(plan.columns)} bounded text columns to widen"
    )
    if not changes:
        return
    table = Table(pad_edge=False)
    for heading, justify in (
        ("table", "left"),
        ("column", "left"),
        ("today", "left"),
        ("widened to", "left"),
        ("longest", "right"),
        ("why", "left"),
    ):
        table.add_column(heading, justify=justify, overflow="fold")
    for change in changes:
        table.add_row(
            change.table,
            change.column,
            change.current_type,
            Text(change.new_type, style="bold"),
            _number(change.longest),
            change.reason,
        )
    out.print(table)


def render_applied(result: ApplyResult, out: Console) -> None:
    if not result.applied:
        out.print(
            Text("Already widened: every column is at least as wide as the plan.", style="green")
        )
        return
    table = Table(pad_edge=False)
    for heading in ("table", "column", "before", "after", "why"):
        table.add_column(heading, overflow="fold")
    for change in result.plan.changes:
        key = (change.table, change.column)
        table.add_row(
            change.table, change.column, result.before[key], result.after[key], change.reason
        )
    out.print(table)
    out.print(
        Text(
            f"Widened {len(result.plan.changes)} columns in one transaction; recorded as "
            f"migration django_store.{result.migration_name}.",
            style="bold green",
        )
    )

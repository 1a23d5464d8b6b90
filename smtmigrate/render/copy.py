"""What `copy` and `verify` show: progress, the plan, a refusal, the result, the check."""

from __future__ import annotations

import shlex
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from ..copy import CopyPlan, CopyResult, SilentEvents, TableResult
from ..locations import redact_url
from ..verify import Verification
from .audit import findings_table, render_plan
from .console import bold_then, mb, render_snapshot, say, table


class PlainCopyEvents:
    """Progress for logs and pipes: a line per phase and per table."""

    def __init__(self, out: Console) -> None:
        self.out = out

    def __enter__(self) -> PlainCopyEvents:
        return self

    def __exit__(self, *exc_info) -> None:
        pass

    def phase(self, name: str) -> None:
        say(self.out, f"{name} …")

    def table_start(self, table: str, rows: int) -> None:
        pass

    def table_progress(self, table: str, rows: int, nbytes: int) -> None:
        pass

    def table_done(self, result: TableResult) -> None:
        if not result.bytes:  # rows read from PostgreSQL are not measured in bytes
            say(self.out, f"  {result.table}: {result.rows:,} rows in {result.seconds:.2f} s")
            return
        rate = result.bytes / 1e6 / result.seconds if result.seconds else 0.0
        say(
            self.out,
            f"  {result.table}: {result.rows:,} rows, {mb(result.bytes)} MB "
            f"in {result.seconds:.2f} s ({rate:,.1f} MB/s)",
        )


class _Rate(ProgressColumn):
    def render(self, task) -> Text:
        elapsed = task.elapsed or 0
        nbytes = task.fields.get("bytes", 0)
        return Text(f"{nbytes / 1e6 / elapsed:,.1f} MB/s" if elapsed else "", style="cyan")


class RichCopyEvents(PlainCopyEvents):
    """Progress bars per table (rows, MB/s) on a terminal."""

    def __init__(self, out: Console) -> None:
        super().__init__(out)
        self.progress = Progress(
            TextColumn("{task.description:<34}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("rows"),
            _Rate(),
            TimeElapsedColumn(),
            console=out,
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.progress.stop()

    def phase(self, name: str) -> None:
        if name != "load":
            say(self.progress.console, f"{name} …", "dim")

    def table_start(self, table: str, rows: int) -> None:
        self.tasks[table] = self.progress.add_task(table, total=rows or None, bytes=0)

    def table_progress(self, table: str, rows: int, nbytes: int) -> None:
        self.progress.update(self.tasks[table], completed=rows, bytes=nbytes)

    def table_done(self, result: TableResult) -> None:
        task = self.tasks[result.table]
        self.progress.update(task, completed=result.rows, total=result.rows, bytes=result.bytes)
        self.progress.stop_task(task)  # freezes its elapsed time, and so its MB/s


# Findings about a MariaDB target that a copy plan shows (engines/mariadb.py).
TARGET_KINDS = frozenset({"collision", "server"})


def copy_events(out: Console, *, silent: bool = False):
    """How a copy shows its progress: nothing, a rich progress display on a terminal, or
    plain lines elsewhere. Each is a context manager (only the rich one does anything)."""
    if silent:
        return SilentEvents()
    return RichCopyEvents(out) if out.is_terminal else PlainCopyEvents(out)


def render_copy_plan(plan: CopyPlan, out: Console) -> None:
    target = (
        "a new SQLite store"
        if plan.target.engine.is_file
        else (
            "its existing, empty Sumatra schema"
            if not plan.build_schema
            else "a schema built by Sumatra's own migrations"
        )
    )
    out.print(
        bold_then(
            "Copy plan",
            f": {plan.source.store.display} ({plan.source.layout}) → {plan.target.display}, "
            f"into {target}",
        )
    )
    tables = table("source table", "target table", "rows", right=("rows",))
    for layout in plan.layouts:
        tables.add_row(layout.source_name, layout.name, f"{plan.row_counts[layout.name]:,}")
    out.print(tables)
    if plan.widening is not None:
        render_plan(plan.widening, out, title="Widening, in the same transaction")
    for name, into in plan.folded.items():
        say(out, f"Carried into {into}: {name}")
    if plan.skipped:
        say(
            out,
            "Not copied (the target keeps its own or Sumatra does not use them): "
            + ", ".join(plan.skipped),
        )
    if plan.dedupe is not None:
        say(out, f"Deduplicate: {plan.dedupe.summary}.")
    target_notes = [f for f in plan.report.findings if f.kind in TARGET_KINDS]
    if target_notes:
        say(out, "About the target (warnings; the copy goes ahead):")
        out.print(findings_table(target_notes))


def render_refusal(plan: CopyPlan, source: str, target: str, out: Console) -> None:
    out.print(findings_table(plan.failing))
    say(
        out,
        f"Refused: {len(plan.failing)} finding(s) would be rejected by the target; "
        "nothing was written.",
        "bold red",
    )
    kinds = {f.kind for f in plan.failing}
    # The command to paste: as typed, but never with a password, and shell-quoted (paths
    # and names may hold spaces, quotes or brackets).
    source, target = (shlex.quote(redact_url(text)) for text in (source, target))
    widen = "overflow" in kinds or plan.widening is not None
    dedupe = "duplicate" in kinds
    flags = " --widen" * widen + " --dedupe" * dedupe
    if "overflow" in kinds and plan.widening is None:
        also = " and merge the duplicate rows" if dedupe else ""
        say(
            out,
            f"Widen the target's columns{also} in the same transaction:\n"
            f"  smtmigrate copy {source} {target}{flags}",
        )
    elif dedupe:
        say(
            out,
            "Merge the duplicate rows into one each (every reference re-pointed) on the way:\n"
            f"  smtmigrate copy {source} {target}{flags}",
        )
    if "invalid" in kinds:
        say(out, f"Fix or remove the invalid values first (smtmigrate audit {source}).")


def render_quiet_refusal(plan: CopyPlan, err: Console) -> None:
    """`copy --quiet`: the refusal as one line on stderr."""
    say(
        err,
        f"smtmigrate copy: refused: {len(plan.failing)} finding(s) would be rejected by the "
        "target (see smtmigrate audit)",
    )


def render_copy_result(result: CopyResult, out: Console) -> None:
    copied = table(
        "table", "rows", "MB", "seconds", "MB/s", right=("rows", "MB", "seconds", "MB/s"),
        title="Copied",
    )  # fmt: skip
    for row in result.tables:
        rate = row.bytes / 1e6 / row.seconds if row.seconds and row.bytes else 0
        copied.add_row(
            row.table,
            f"{row.rows:,}",
            mb(row.bytes) if row.bytes else "",
            f"{row.seconds:.2f}",
            f"{rate:,.1f}" if rate else "",
        )
    copied.add_row(
        Text("total", style="bold"),
        f"{sum(r.rows for r in result.tables):,}",
        mb(sum(r.bytes for r in result.tables)),
        f"{result.seconds:.2f}",
        "",
    )
    out.print(copied)
    phases = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in result.phases.items())
    say(out, f"phases: {phases}", "dim")
    if result.plan.dedupe is not None:
        say(out, f"Deduplicated: {result.plan.dedupe.summary}.")
    render_verification(result.verification, out)
    if result.snapshot is not None:
        render_snapshot(
            result.snapshot,
            out,
            role="Source",
            added="were added to the source after the snapshot and are NOT in the target: "
            "copy again to include them (a later move will carry them)",
            removed="were removed from the source after the snapshot but are in the target",
        )


def verification_summary(verification: Verification) -> str:
    """What was compared and found equal, or what differs (the first three)."""
    if not verification.ok:
        return verification.problem
    text = f"{len(verification.tables)} tables and {verification.rows:,} rows identical"
    records = verification.records
    if records is not None:
        text += f"; {records.records:,} records identical through Sumatra"
        if records.population is not None and records.records < records.population:
            text += f" (a sample of the {records.population:,})"
    return text


def verification_json(verification: Verification) -> dict[str, Any]:
    data = verification.to_dict()
    return {"ok": data.pop("ok"), "summary": verification_summary(verification), **data}


def copy_json(
    plan: CopyPlan,
    result: CopyResult | None = None,
    *,
    refused: bool = False,
    failed: Verification | None = None,
) -> dict[str, Any]:
    """The plan, and the result or the verification that failed, as one document."""
    data = plan.to_dict()
    data["refused"] = refused
    if result is not None:
        data.update(result.to_dict())
        data["verification"] = verification_json(result.verification)
    if failed is not None:
        data["verification"] = verification_json(failed)
    return data


def render_verification(verification: Verification, out: Console) -> None:
    if verification.ok:
        say(out, f"Verified: {verification_summary(verification)}.", "bold green")
    else:
        for check in verification.tables:
            if not check.ok:
                say(out, f"  {check.problem}", "red")
        for difference in verification.record_differences:
            say(out, f"  {difference}", "red")
        say(out, "Verification FAILED.", "bold red")
    for role, snapshot in verification.snapshots.items():
        render_snapshot(
            snapshot,
            out,
            role=role.capitalize(),
            added=f"were added to the {role} after its snapshot and were not compared",
            removed=f"were removed from the {role} after its snapshot and were compared",
        )

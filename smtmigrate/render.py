"""Everything smtmigrate shows a person: rich tables on a terminal, plain text elsewhere."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from .audit import FAILING_KINDS, AuditReport, Finding
from .copy import CopyPlan, CopyResult, SilentEvents, TableResult
from .locations import Store, redact_url
from .move import MovePlan, MoveResult
from .project import LabelFixResult, LabelGenerator, SwitchResult
from .snapshot import Snapshot
from .target import CreatedDatabase, DatabaseInfo, pg_hba_line, pgpass_line
from .verify import Verification
from .widen import ApplyResult, WideningPlan

KIND_STYLES = {
    "invalid": "bold red",
    "overflow": "bold red",
    "duplicate": "bold red",
    "duplicate-label": "yellow",
    "collision": "yellow",
    "charset": "yellow",
    "server": "yellow",
    "near-limit": "yellow",
    "drift": "magenta",
    "risk": "cyan",
}


PIPED_WIDTH = 160
EXAMPLE_GROUPS = 3  # duplicate groups shown per finding (JSON lists them all)


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """Rich would exit 1 (the audit's "findings"); the command ends it instead, with
        its own verdict (management/base.py)."""
        self.quiet = True
        raise BrokenPipeError


def console(file: IO[str], *, no_color: bool = False) -> Console:
    """A console that wraps to the terminal, or to a wide page when output is piped."""
    is_tty = hasattr(file, "isatty") and file.isatty()
    return _Console(
        file=file,
        no_color=no_color,
        highlight=False,
        width=None if is_tty else PIPED_WIDTH,
    )


def write_json(data: Any, file: IO[str]) -> None:
    file.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def render_audit(
    report: AuditReport,
    out: Console,
    *,
    labels: LabelGenerator | None = None,
    directory: Path | None = None,
) -> None:
    out.print(
        f"[bold]{escape(report.location)}[/bold]  layout {report.layout}, "
        f"{len(report.row_counts)} tables, {sum(report.row_counts.values()):,} rows, "
        f"scanned in {report.seconds:.2f} s"
    )
    if report.snapshot is not None:
        render_snapshot(
            report.snapshot,
            out,
            role="Audited the store",
            added="were added after the snapshot and were not audited",
            removed="were removed after the snapshot",
        )
    if report.findings:
        out.print(_findings_table(report.findings))
    if labels is not None and directory is not None:
        render_project(labels, directory, out)
    style = "bold red" if report.exit_code else "bold green"
    out.print(Text(report.verdict, style=style))
    if report.exit_code:
        out.print(_advice(report.failing))


def _findings_table(findings: list[Finding]) -> Table:
    table = Table(pad_edge=False)
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
    for finding in findings:
        table.add_row(
            Text(finding.kind, style=KIND_STYLES[finding.kind]),
            Text(finding.table),  # Text, not str: names and values are never rich markup
            Text(finding.column or ""),
            _number(finding.limit),
            _number(finding.max_length),
            _number(finding.rows),
            Text(_detail(finding)),
        )
    return table


def _number(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


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
    if "overflow" in kinds:
        advice.append("widen the columns (smtmigrate widen, or smtmigrate copy … --widen)")
    if "invalid" in kinds:
        advice.append("fix or remove the invalid values in the source store")
    if "duplicate" in kinds:
        advice.append("merge the duplicate rows (smtmigrate copy … --dedupe)")
    return "To move this store: " + "; ".join(advice) + "."


def render_plan(plan: WideningPlan, out: Console, *, title: str) -> None:
    changes = plan.changes
    out.print(
        f"[bold]{escape(title)}[/bold]: policy {plan.policy}"
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


# -- copy ---------------------------------------------------------------------------------


def _mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:,.1f}"


class PlainCopyEvents:
    """Progress for logs and pipes: a line per phase and per table."""

    def __init__(self, out: Console) -> None:
        self.out = out

    def __enter__(self) -> PlainCopyEvents:
        return self

    def __exit__(self, *exc_info) -> None:
        pass

    def phase(self, name: str) -> None:
        self.out.print(f"{name} …")

    def table_start(self, table: str, rows: int) -> None:
        pass

    def table_progress(self, table: str, rows: int, nbytes: int) -> None:
        pass

    def table_done(self, result: TableResult) -> None:
        if not result.bytes:  # rows read from PostgreSQL are not measured in bytes
            self.out.print(f"  {result.table}: {result.rows:,} rows in {result.seconds:.2f} s")
            return
        rate = result.bytes / 1e6 / result.seconds if result.seconds else 0.0
        self.out.print(
            f"  {result.table}: {result.rows:,} rows, {_mb(result.bytes)} MB "
            f"in {result.seconds:.2f} s ({rate:,.1f} MB/s)"
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
            TextColumn("{task.description:<34}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("rows"),
            _Rate(),
            TimeElapsedColumn(),
            console=out,
            transient=False,
        )
        self.tasks: dict[str, int] = {}

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.progress.stop()

    def phase(self, name: str) -> None:
        if name != "load":
            self.progress.console.print(f"[dim]{name} …[/dim]")

    def table_start(self, table: str, rows: int) -> None:
        self.tasks[table] = self.progress.add_task(table, total=rows or None, bytes=0)

    def table_progress(self, table: str, rows: int, nbytes: int) -> None:
        self.progress.update(self.tasks[table], completed=rows, bytes=nbytes)

    def table_done(self, result: TableResult) -> None:
        task = self.tasks[result.table]
        self.progress.update(task, completed=result.rows, total=result.rows, bytes=result.bytes)
        self.progress.stop_task(task)  # freezes its elapsed time, and so its MB/s


def copy_events(out: Console, *, silent: bool = False):
    """How a copy shows its progress: nothing, a rich progress display on a terminal, or
    plain lines elsewhere. Each is a context manager (only the rich one does anything)."""
    if silent:
        return SilentEvents()
    return RichCopyEvents(out) if out.is_terminal else PlainCopyEvents(out)


def render_copy_plan(plan: CopyPlan, out: Console) -> None:
    target = (
        "a new SQLite store"
        if plan.target.kind == "sqlite"
        else (
            "its existing, empty Sumatra schema"
            if not plan.build_schema
            else "a schema built by Sumatra's own migrations"
        )
    )
    out.print(
        f"[bold]Copy plan[/bold]: {escape(plan.source.store.display)} ({plan.source.layout}) → "
        f"{escape(plan.target.display)}, into {target}"
    )
    table = Table(pad_edge=False)
    table.add_column("source table")
    table.add_column("target table")
    table.add_column("rows", justify="right")
    for layout in plan.layouts:
        table.add_row(layout.source_name, layout.name, f"{plan.row_counts[layout.name]:,}")
    out.print(table)
    if plan.widening is not None:
        render_plan(plan.widening, out, title="Widening, in the same transaction")
    for name, into in plan.folded.items():
        out.print(f"Carried into {escape(into)}: {escape(name)}")
    if plan.skipped:
        out.print(
            f"Not copied (the target keeps its own or Sumatra does not use them): "
            f"{escape(', '.join(plan.skipped))}"
        )
    if plan.dedupe is not None:
        out.print(f"Deduplicate: {plan.dedupe.summary}.", markup=False)
    target_notes = [f for f in plan.report.findings if f.kind in TARGET_KINDS]
    if target_notes:
        out.print("About the target (warnings; the copy goes ahead):")
        out.print(_findings_table(target_notes))


# Findings about a MariaDB target that a copy plan shows (engines/mariadb.py).
TARGET_KINDS = frozenset({"collision", "server"})


def render_refusal(plan: CopyPlan, source: str, target: str, out: Console) -> None:
    out.print(_findings_table(plan.failing))
    out.print(
        Text(
            f"Refused: {len(plan.failing)} finding(s) would be rejected by the target; "
            "nothing was written.",
            style="bold red",
        )
    )
    kinds = {f.kind for f in plan.failing}
    # The command to paste: as typed, but never with a password, and shell-quoted (paths
    # and names may hold spaces, quotes or brackets; markup=False keeps rich out of them).
    source, target = (shlex.quote(redact_url(text)) for text in (source, target))
    widen = "overflow" in kinds or plan.widening is not None
    dedupe = "duplicate" in kinds
    flags = " --widen" * widen + " --dedupe" * dedupe
    if "overflow" in kinds and plan.widening is None:
        also = " and merge the duplicate rows" if dedupe else ""
        out.print(
            f"Widen the target's columns{also} in the same transaction:\n"
            f"  smtmigrate copy {source} {target}{flags}",
            markup=False,
        )
    elif dedupe:
        out.print(
            "Merge the duplicate rows into one each (every reference re-pointed) on the way:\n"
            f"  smtmigrate copy {source} {target}{flags}",
            markup=False,
        )
    if "invalid" in kinds:
        out.print(
            f"Fix or remove the invalid values first (smtmigrate audit {source}).", markup=False
        )


def render_copy_result(result: CopyResult, out: Console) -> None:
    table = Table(pad_edge=False, title="Copied")
    for heading, justify in (
        ("table", "left"),
        ("rows", "right"),
        ("MB", "right"),
        ("seconds", "right"),
        ("MB/s", "right"),
    ):
        table.add_column(heading, justify=justify)
    for row in result.tables:
        rate = row.bytes / 1e6 / row.seconds if row.seconds and row.bytes else 0
        table.add_row(
            row.table,
            f"{row.rows:,}",
            _mb(row.bytes) if row.bytes else "",
            f"{row.seconds:.2f}",
            f"{rate:,.1f}" if rate else "",
        )
    table.add_row(
        Text("total", style="bold"),
        f"{sum(r.rows for r in result.tables):,}",
        _mb(sum(r.bytes for r in result.tables)),
        f"{result.seconds:.2f}",
        "",
    )
    out.print(table)
    phases = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in result.phases.items())
    out.print(f"[dim]phases: {phases}[/dim]")
    if result.plan.dedupe is not None:
        out.print(f"Deduplicated: {result.plan.dedupe.summary}.", markup=False)
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


def render_snapshot(
    snapshot: Snapshot, out: Console, *, role: str, added: str, removed: str
) -> None:
    """`Source as of … UTC: N records`, and, when the live store has changed since, lines
    no one can miss: `added`/`removed` say what that means for the command at hand."""
    out.print(Text(f"{role} {snapshot.summary}", style="bold"))
    changes = snapshot.changes
    if changes is None or not changes.changed:
        return
    for count, consequence in ((changes.added, added), (changes.removed, removed)):
        if count:
            out.print(
                Text(
                    f"WARNING: {count:,} record{'s' * (count != 1)} {consequence}.",
                    style="bold yellow reverse",
                )
            )


def render_verification(verification: Verification, out: Console) -> None:
    if verification.ok:
        out.print(Text(f"Verified: {verification.summary}.", style="bold green"))
    else:
        for check in verification.tables:
            if not check.ok:
                out.print(Text(f"  {check.problem}", style="red"))
        for difference in verification.record_differences:
            out.print(Text(f"  {difference}", style="red"))
        out.print(Text("Verification FAILED.", style="bold red"))
    for role, snapshot in verification.snapshots.items():
        render_snapshot(
            snapshot,
            out,
            role=role.capitalize(),
            added=f"were added to the {role} after its snapshot and were not compared",
            removed=f"were removed from the {role} after its snapshot and were compared",
        )


def render_database(info: DatabaseInfo, display: str, owner: str, out: Console) -> None:
    # Database, role and project names are anyone's strings: escaped, never rich markup.
    display, owner = escape(display), escape(owner)
    if not info.exists:
        out.print(f"{display} does not exist yet: it will be created (owner {owner}, UTF8).")
        return
    size = f"{info.size / 1e6:,.1f} MB" if info.size is not None else "?"
    out.print(f"[bold]Drop and recreate {display}[/bold]")
    was = escape(info.owner or "")
    out.print(f"  owner {was} → {owner}, encoding {info.encoding} → UTF8, size {size}")
    if info.records is None:
        tables = f" ({info.other_tables} tables)" if info.other_tables else ", no tables"
        out.print(f"  not a Sumatra store{tables}")
    else:
        projects = escape(", ".join(info.projects)) or "none"
        out.print(
            f"  {info.records:,} Sumatra records in {len(info.projects)} project(s): {projects}"
        )
    if info.sessions:
        out.print(f"  {len(info.sessions)} other session(s) connected, ended by the drop:")
        for pid, user, application, client in info.sessions:
            out.print(f"    pid {pid} {user} {application or '-'} from {client}", markup=False)
    else:
        out.print("  no other sessions connected")


# -- stress -------------------------------------------------------------------------------

from .stress import KINDS, STEPS, StressReport  # noqa: E402


def render_stress(report: StressReport, out: Console) -> None:
    what = (
        "real `smt run`(s) of a scratch copy of the project"
        if report.mode == "smt"
        else "`smt run`(s), five saves each through Sumatra's API,"
    )
    out.print(
        Text.assemble(
            (f"Stress test of {report.location}", "bold"),
            f" ({report.backend}): {report.jobs} concurrent jobs x {report.records_per_job} "
            f"{what} into scratch project {report.project}",
        )
    )
    counts = Table(pad_edge=False, show_header=False)
    counts.add_column("what")
    counts.add_column("records", justify="right")
    counts.add_row("expected", f"{report.expected:,}")
    seen = (
        "runs that ended without an error" if report.mode == "smt" else "saved, as the jobs saw it"
    )
    counts.add_row(seen, f"{report.saved:,}")
    found_style = "bold green" if report.found == report.expected else "bold red"
    counts.add_row("found in the store", Text(f"{report.found:,}", style=found_style))
    if report.incomplete:
        counts.add_row("in the store, last save missing", f"{report.incomplete:,}")
    counts.add_row("missing", f"{report.missing:,}")
    if report.mode == "smt":
        shared = sum(report.duplicate_labels.values())
        counts.add_row(
            "records sharing a label",
            Text(f"{shared:,}", style="bold red" if shared else ""),
        )
    out.print(counts)
    if report.crashed:
        crashed = Table(pad_edge=False, title="Runs that crashed (Sumatra's error)")
        crashed.add_column("runs", justify="right")
        crashed.add_column("error", overflow="fold")
        for line, n in report.crashed.most_common():
            crashed.add_row(f"{n:,}", Text(line))
        out.print(crashed)
    if report.duplicate_labels:
        labels = ", ".join(f"{label} x{n}" for label, n in report.duplicate_labels.items())
        out.print(Text(f"duplicate labels: {labels}", style="red"))
    kinds = [k for k in KINDS if report.errors[k] or report.retries[k]]
    kinds += sorted((set(report.errors) | set(report.retries)) - set(KINDS) - set(kinds))
    if kinds:
        errors = Table(pad_edge=False, title="Errors by kind")
        for heading, justify in (
            ("kind", "left"),
            ("runs failed", "right"),
            ("saves retried", "right"),
            ("example", "left"),
        ):
            errors.add_column(heading, justify=justify, overflow="fold")
        for kind in kinds:
            errors.add_row(
                Text(kind, style="bold red" if report.errors[kind] else "yellow"),
                f"{report.errors[kind]:,}",
                f"{report.retries[kind]:,}",
                Text(report.examples.get(kind, "")),
            )
        out.print(errors)
        if report.failed_steps:
            steps = ", ".join(
                f"{step} {report.failed_steps[step]:,}"
                for step in STEPS
                if report.failed_steps[step]
            )
            out.print(f"`smt run`s failed at the save: {steps}", highlight=False)
    else:
        out.print("errors: none; saves retried: none")
    if report.mode == "smt":
        store = ", ".join(f"{n:,} {kind}" for kind, n in report.store_errors.most_common())
        out.print(f"store errors: {store or 'none'}", highlight=False, markup=False)
    latency = report.latency()
    timing = (
        f"jobs ready in {report.startup_seconds:.1f} s ({report.ready_jobs} of {report.jobs}); "
        f"saving {report.saving_seconds:.2f} s, {report.records_per_second:,.1f} records/s"
    )
    if latency["max"] is not None:
        one = "one `smt run`" if report.mode == "smt" else "one `smt run`'s saves"
        timing += (
            f"; {one}: median {latency['p50']:.3f} s, "
            f"p95 {latency['p95']:.3f} s, max {latency['max']:.3f} s"
        )
    if report.timed_out_jobs:
        timing += f"; {report.timed_out_jobs} job(s) killed at the deadline"
    out.print(timing, highlight=False, markup=False)
    cleanup = report.cleanup
    if cleanup.ok:
        removed = ", ".join(f"{n:,} {table}" for table, n in cleanup.deleted.items())
        out.print(
            f"[dim]cleanup: removed {removed or 'nothing'} in {cleanup.seconds:.1f} s; "
            "nothing of the scratch project is left[/dim]",
            highlight=False,
        )
    else:
        out.print(
            Text(
                f"cleanup FAILED: {cleanup.error}; remove project {report.project} "
                "(e.g. smt delete in a project of that name) before relying on the store",
                style="bold red",
            )
        )
    for note in report.notes:
        out.print(Text(f"note: {note}", style="yellow"))
    out.print(Text(report.verdict, style="bold green" if report.exit_code == 0 else "bold red"))
    out.print(f"total {report.total_seconds:.1f} s", style="dim", highlight=False)


def render_project(labels: LabelGenerator, directory: Path, out: Console) -> None:
    """The project section of `audit PROJECT_DIR`: its configuration, not the store's data."""
    if labels.collides:
        out.print(Text(f"project: {labels.problem}.", style="bold yellow"))
        out.print(Text(f"  fix: {labels.fix(directory)}"))
    else:
        out.print(Text(f"project: label generator {labels.described}: distinct labels"))


def render_created(created: CreatedDatabase, store: Store, out: Console) -> None:
    """What `createdb` did, and the lines the user may need next (names are anyone's
    strings: plain text, never markup)."""
    if created.role_created:
        said = f"created role {created.owner}"
        out.print(Text(said + (" with a password" if created.with_password else "")))
    out.print(Text(f"created database {created.name} (owner {created.owner}, UTF8)"))
    if created.schema_built:
        out.print("built Sumatra's schema (its migrations + the default widening)")
    out.print("For ~/.pgpass (mode 0600), put the password in place of PASSWORD:")
    out.print(f"  {pgpass_line(store)}", markup=False)
    out.print("For pg_hba.conf, if the server asks for passwords:")
    out.print(f"  {pg_hba_line(store, created.owner)}", markup=False)


def switch_lines(result: SwitchResult, verification: Verification | None = None) -> list[str]:
    """What a switch did, one plain line each (paths and URLs are never markup)."""
    if not result.switched:
        return [f"{result.project_file} names {result.db_file} already; nothing was changed"]
    lines = []
    if verification is not None:
        verdict = "verified" if verification.ok else "switched anyway (--force)"
        lines.append(f"{verdict}: {verification.summary}")
    lines.append(
        f"kept {result.backup}, saved by an earlier switch (the project file before it)"
        if result.backup_kept
        else f"saved the previous project file as {result.backup}"
    )
    lines.append(f"{result.project_file} now names {result.db_file}")
    if result.pgpass is not None:
        what = "added the password for it to" if result.pgpass_changed else "password already in"
        lines.append(f"{what} {result.pgpass} (mode 0600); it is not in the project file")
    return lines


def label_fix_lines(result: LabelFixResult) -> list[str]:
    if result.backup is None:
        return [f"{result.project_file} already labels records with {result.after.described}"]
    return [
        f"the project file before the first change is kept as {result.backup}",
        f"{result.project_file} now labels records with {result.after.described} "
        f"(was {result.before.described})",
    ]


def render_move_plan(plan: MovePlan, out: Console) -> None:
    out.print(Text(f"Move plan: {plan.directory} ({plan.source.display}) → {plan.target.display}"))
    table = Table(pad_edge=False)
    table.add_column("step")
    table.add_column("to do")
    table.add_column("what")
    for step in plan.steps:
        table.add_row(step.name, "yes" if step.needed else "no", Text(step.action))
    out.print(table)
    if plan.copy is not None and plan.copy.refused:
        out.print(_findings_table(plan.copy.failing))
        out.print(
            Text(
                f"Refused: {len(plan.copy.failing)} finding(s) would be rejected by the target; "
                "nothing was changed (see smtmigrate audit).",
                style="bold red",
            )
        )


def render_move_result(result: MoveResult, out: Console) -> None:
    plan, created = result.plan, result.created
    if created is not None:
        role = f"role {created.owner} and " if created.role_created else ""
        out.print(Text(f"created {role}database {created.name} (owner {created.owner}, UTF8)"))
    if result.copy is not None:
        render_copy_result(result.copy, out)
    if result.switched is not None:
        for line in switch_lines(result.switched):
            out.print(line, markup=False)
    if result.label_fixed:
        out.print(Text(f"label generator {plan.label.described} → {result.label_fixed}"))
    late = result.late
    if plan.old is not None:
        out.print(
            Text(
                f"late records: {len(late.carried)} carried over from {plan.old.display}, "
                "each read back equal through Sumatra"
            )
        )
    if late.without_project:
        out.print(
            Text(
                f"{late.without_project} late record(s) without a project were left in the "
                "old store (Sumatra cannot save them)",
                style="yellow",
            )
        )
    verb = "Already moved" if plan.stage == "moved" else "Moved"
    out.print(Text(f"{verb}: {plan.directory} uses {plan.target.display}.", style="bold green"))
    if plan.old is not None:
        out.print(
            "A `smt run` that started before the switch still saves to the old store when it "
            "ends, and rewrites .smt/project as it was (Sumatra saves the project file after "
            "every run): once such jobs have ended, run this move again; it points the "
            "project back at the new store and carries their records over.",
            markup=False,
        )

"""What `stress` shows: the counts, the errors by kind, the timings and the verdict."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.text import Text

from ..stress import KINDS, STEPS, StressReport
from ..stress.report import ordered_counts
from .console import say, table


def stress_verdict(report: StressReport) -> str:
    """OK or FAIL with what was lost, and, when the cleanup failed, that it did."""
    if report.mode == "smt":
        text = _smt_verdict(report)
    elif report.all_saved:
        text = f"OK: all {report.expected:,} records saved by {report.jobs} concurrent jobs"
        if report.retries:
            text += f" ({sum(report.retries.values()):,} saves retried by Sumatra)"
        text += "."
    else:
        failed = ", ".join(f"{n:,} {kind}" for kind, n in ordered_counts(report.errors))
        text = (
            f"FAIL: {report.found:,} of {report.expected:,} records saved"
            + (f"; `smt run`s failed: {failed}" if failed else "")
            + "."
        )
    if not report.cleanup.ok:
        text += f" Cleanup of {report.project} FAILED: {report.cleanup.error or 'records left'}."
    return text


def _smt_verdict(report: StressReport) -> str:
    runs = f"{report.expected:,} `smt run`s by {report.jobs} concurrent jobs"
    if report.all_saved:
        text = f"OK: {runs} saved {report.found:,} records with {report.found:,} distinct labels"
        if report.retries:
            text += f" ({sum(report.retries.values()):,} saves retried by Sumatra)"
        return text + "."
    lost = [f"{sum(report.crashed.values()):,} crashed"] if report.crashed else []
    if report.duplicate_labels:
        lost.append(f"{len(report.duplicate_labels):,} labels on more than one record")
    failed = ", ".join(f"{n:,} {kind}" for kind, n in ordered_counts(report.errors))
    text = f"FAIL: {runs}: {report.found:,} records saved" + "".join(f"; {part}" for part in lost)
    text += f"; runs lost by kind: {failed}." if failed else "."
    if report.label_cause:
        text += f" Cause: {report.label_cause}."
    return text


def stress_json(report: StressReport) -> dict[str, Any]:
    """Everything the run counted, with its verdict (before the exit code, as always)."""
    data = report.to_dict()
    at = list(data).index("exit_code")
    items = list(data.items())
    return dict([*items[:at], ("verdict", stress_verdict(report)), *items[at:]])


def render_stress_phase(text: str, out: Console) -> None:
    say(out, f"{text} …", "dim")


def render_stress_interrupted(report: StressReport, out: Console) -> None:
    """After Ctrl-C: whether the scratch project is gone (the error is anyone's text)."""
    if report.cleanup.ok:
        say(out, f"removed the scratch project {report.project}; the store is as it was")
    else:
        say(
            out,
            f"the scratch project {report.project} could not be removed: {report.cleanup.error}",
            "bold red",
        )


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
    counts = table("what", "records", right=("records",), show_header=False)
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
        title = "Runs that crashed (Sumatra's error)"
        crashed = table("runs", "error", right=("runs",), title=title)
        for line, n in report.crashed.most_common():
            crashed.add_row(f"{n:,}", Text(line))
        out.print(crashed)
    if report.duplicate_labels:
        labels = ", ".join(f"{label} x{n}" for label, n in report.duplicate_labels.items())
        say(out, f"duplicate labels: {labels}", "red")
    kinds = [k for k in KINDS if report.errors[k] or report.retries[k]]
    kinds += sorted((set(report.errors) | set(report.retries)) - set(KINDS) - set(kinds))
    if kinds:
        errors = table(
            "kind", "runs failed", "saves retried", "example",
            right=("runs failed", "saves retried"), title="Errors by kind",
        )  # fmt: skip
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
            say(out, f"`smt run`s failed at the save: {steps}")
    else:
        say(out, "errors: none; saves retried: none")
    if report.mode == "smt":
        store = ", ".join(f"{n:,} {kind}" for kind, n in report.store_errors.most_common())
        say(out, f"store errors: {store or 'none'}")
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
    say(out, timing)
    cleanup = report.cleanup
    if cleanup.ok:
        removed = ", ".join(f"{n:,} {table}" for table, n in cleanup.deleted.items())
        say(
            out,
            f"cleanup: removed {removed or 'nothing'} in {cleanup.seconds:.1f} s; "
            "nothing of the scratch project is left",
            "dim",
        )
    else:
        say(
            out,
            f"cleanup FAILED: {cleanup.error}; remove project {report.project} "
            "(e.g. smt delete in a project of that name) before relying on the store",
            "bold red",
        )
    for note in report.notes:
        say(out, f"note: {note}", "yellow")
    say(out, stress_verdict(report), "bold green" if report.exit_code == 0 else "bold red")
    say(out, f"total {report.total_seconds:.1f} s", "dim")

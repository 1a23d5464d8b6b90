from __future__ import annotations

from argparse import ArgumentTypeError
from collections.abc import Callable

from ...headroom import read_headroom
from ...locations import resolve
from ...render import (
    render_headroom,
    render_stress,
    render_stress_interrupted,
    render_stress_phase,
    stress_json,
    write_json,
)
from ...stress import (
    CLEANUP_TIMEOUT,
    DEFAULT_JOBS,
    DEFAULT_RECORDS_PER_JOB,
    DEFAULT_TIMEOUT,
    MAX_JOBS,
    MIN_JOBS,
    MODES,
    StressInterrupted,
    run_stress,
)
from ..base import SmtmigrateCommand, add_format_option, add_location_argument


def whole_number(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number from `low` (to `high`), said in one line if not."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ArgumentTypeError(f"'{text}' is not a whole number") from None
        if high is not None and not low <= value <= high:
            raise ArgumentTypeError(f"must be between {low} and {high}")
        if value < low:
            raise ArgumentTypeError(f"must be at least {low}")
        return value

    return parse


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ArgumentTypeError(f"'{text}' is not a number of seconds") from None
    if not 0 < value < float("inf"):
        raise ArgumentTypeError("must be a positive number of seconds")
    return value


class Command(SmtmigrateCommand):
    help = (
        "Start many `smt run`s at once (real ones by default, or jobs making their saves "
        "through Sumatra's record-store API) into a scratch project of the store; report "
        "runs crashed, records missing, duplicate labels and store errors, then remove the "
        "scratch project. Exit 0: every run saved its record under a label of its own; "
        "1: runs lost, labels shared, a label generator that lets them collide, or the "
        "cleanup failed; 2: usage or I/O error."
    )

    def add_arguments(self, parser):
        add_location_argument(parser)
        parser.add_argument(
            "--jobs",
            type=whole_number(MIN_JOBS, MAX_JOBS),
            default=DEFAULT_JOBS,
            metavar="N",
            help=f"concurrent job processes, {MIN_JOBS} to {MAX_JOBS} (default {DEFAULT_JOBS})",
        )
        parser.add_argument(
            "--records-per-job",
            type=whole_number(1),
            default=DEFAULT_RECORDS_PER_JOB,
            metavar="N",
            help="`smt run`s each job makes, one after the other "
            f"(default {DEFAULT_RECORDS_PER_JOB})",
        )
        parser.add_argument(
            "--timeout",
            type=positive_seconds,
            default=DEFAULT_TIMEOUT,
            metavar="SECONDS",
            help="bound on the whole run; jobs still running then are killed and their "
            f"records count as lost (default {DEFAULT_TIMEOUT:g}; the cleanup after it has "
            f"{CLEANUP_TIMEOUT:g} s of its own)",
        )
        parser.add_argument(
            "--cold",
            action="store_true",
            help="skip the warm-up record: the jobs create the scratch project and the rows "
            "they share together, as the first jobs of a new project do",
        )
        parser.add_argument(
            "--mode",
            choices=MODES,
            default=MODES[0],
            help="smt (default): every job is a real `smt run` of a scratch copy of the "
            "project (its executable, main file name, label generator, …), all started "
            "together; api: every job makes the saves of `smt run` through Sumatra's "
            "record-store API, with labels of its own (the store alone under load)",
        )
        add_format_option(parser)

    def handle(self, location, jobs, records_per_job, timeout, cold, mode, format, **options):
        out = self.console()
        on_phase = None if format == "json" else (lambda text: render_stress_phase(text, out))
        with resolve(location, mariadb=True) as store:
            if on_phase is not None:  # before any job: how many the server takes at once
                render_headroom(read_headroom(store), out, jobs=jobs)
                store.connection.close()
            try:
                report = run_stress(
                    store,
                    jobs=jobs,
                    records_per_job=records_per_job,
                    timeout=timeout,
                    cold=cold,
                    mode=mode,
                    on_phase=on_phase,
                )
            except StressInterrupted as stop:
                render_stress_interrupted(stop.report, out)
                raise KeyboardInterrupt from None
        if format == "json":
            write_json(stress_json(report), out)
        else:
            render_stress(report, out)
        self.exit_code = report.exit_code

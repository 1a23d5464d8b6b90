"""The verification's rendering (render_verification): the OK line, every problem listed."""

from __future__ import annotations

import io

from smtmigrate.records.comparison import (
    RecordComparison,
    RecordDifference,
)
from smtmigrate.render import console, render_verification
from smtmigrate.verify import TableCheck, Verification


def rendered(verification: Verification) -> str:
    buffer = io.StringIO()
    render_verification(verification, console(buffer))
    return buffer.getvalue()


def test_render_verification_ok():
    verification = Verification(
        [TableCheck("django_store_tag", 3, 3, "aa", "aa")],
        records=RecordComparison(records=2, source_records=2, target_records=2),
    )
    assert rendered(verification) == (
        "Verified: 1 tables and 3 rows identical; 2 records identical through Sumatra.\n"
    )


def test_render_verification_failed_lists_every_problem():
    missing = RecordDifference("proj", "20240101-120000", "record", "present", "missing")
    verification = Verification(
        [
            TableCheck("django_store_tag", 3, 3, "aa", "aa"),
            TableCheck("django_store_record", 5, 4, "x", "y"),
            TableCheck("django_store_datakey", 2, 2, "x", "y"),
        ],
        records=RecordComparison(
            records=4, differing_records=1, total_differences=1, differences=[missing]
        ),
    )
    assert rendered(verification) == (
        "  django_store_record: 5 rows in the source, 4 in the target\n"
        "  django_store_datakey: same 2 rows, different values (checksums differ)\n"
        "  proj/20240101-120000: missing in the target\n"
        "Verification FAILED.\n"
    )


def test_the_console_prints_emoji_codes_and_markup_as_they_are():
    """A label or path may hold `:smile:` or `[bold]`: shown as stored, never converted."""
    buffer = io.StringIO()
    console(buffer).print("run:smile: [bold]x[/bold] :+1:")
    assert buffer.getvalue() == "run:smile: [bold]x[/bold] :+1:\n"

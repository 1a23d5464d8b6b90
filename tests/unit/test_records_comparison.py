"""Record comparison (records/comparison.py): field differences by key, previews of where long
values differ, the difference text, read errors as one line with exit code 2."""

from __future__ import annotations

from smtmigrate.errors import (
    RecordReadError,
    SmtmigrateError,
    StoreConnectionError,
)
from smtmigrate.records.comparison import (
    RecordDifference,
    field_differences,
    previews,
)


def test_field_differences_name_list_items_by_their_key():
    source = {"tags": ["a", "b"], "dependencies": [{"name": "numpy", "version": "1.0"}]}
    target = {"tags": ["a"], "dependencies": [{"name": "numpy", "version": "2.0"}]}
    assert list(field_differences(source, target)) == [
        ("tags", ["a", "b"], ["a"]),
        ("dependencies[name=numpy].version", "1.0", "2.0"),
    ]


def test_previews_show_where_long_values_differ():
    a, b = "x" * 200 + "A", "x" * 200 + "B"
    # 80 characters each (PREVIEW), ending just after the first difference
    assert previews(a, b) == ("…" + "x" * 77 + "A…", "…" + "x" * 77 + "B…")
    assert previews(["a", "b"], ["a"]) == ("2 items, only here: ['b']", "1 items, only here: []")


def test_record_difference_text():
    assert str(RecordDifference("p", "", "project", "missing", "present")) == (
        "project p: missing in the source"
    )
    assert str(RecordDifference("p", "L", "reason", "'a'", "'b'")) == "p/L: reason: 'a' != 'b'"


def test_record_read_errors_end_as_one_line_with_exit_code_2():
    assert issubclass(RecordReadError, StoreConnectionError)
    assert issubclass(RecordReadError, SmtmigrateError)
    assert RecordReadError("x").exit_code == 2

"""The synthetic store generator: Sumatra's schema, planted values the audit finds exactly."""

from __future__ import annotations

import pytest

from smtmigrate.audit import audit
from smtmigrate.locations import resolve
from smtmigrate.schema import LAYOUT_08, inspect_store

from ..conftest import sqlite_rows
from ..storegen import generate_store


def test_planted_values_are_what_the_audit_reports(tmp_path):
    generated = generate_store(tmp_path / "g.db", 60, seed=7, overlong=True, projects=2)
    with resolve(str(generated.path)) as store:
        report = audit(inspect_store(store))
    assert report.layout == LAYOUT_08
    overflows = {
        (f.table, f.column): {"rows": f.rows, "max_length": f.max_length}
        for f in report.findings
        if f.kind == "overflow"
    }
    assert overflows == generated.planted
    assert report.row_counts == {
        table: n for table, n in generated.rows.items() if table in report.row_counts
    }
    assert not [f for f in report.findings if f.kind == "invalid"]


def test_without_overlong_nothing_fails(tmp_path):
    generated = generate_store(tmp_path / "g.db", 40, seed=1)
    with resolve(str(generated.path)) as store:
        report = audit(inspect_store(store))
    assert report.exit_code == 0
    assert sqlite_rows(generated.path, "SELECT count(*) FROM django_store_record") == [(40,)]
    assert sqlite_rows(
        generated.path, "SELECT name FROM django_migrations WHERE app = 'django_store'"
    ) == [("0001_initial",), ("0002_tag_taggeditem",)]


def test_refuses_to_overwrite(tmp_path):
    (tmp_path / "x.db").touch()
    with pytest.raises(FileExistsError):
        generate_store(tmp_path / "x.db", 1)

"""`stress` apart from its jobs (stress/): how it classifies a job's error, whatever the case,
and where a job gets its password."""

from __future__ import annotations

import pytest

from smtmigrate.locations import resolve
from smtmigrate.stress import worker_location
from smtmigrate.stress.report import (
    CONNECTION,
    DEADLOCK,
    DUPLICATE_KEY,
    DUPLICATE_ROWS,
    LABEL_COLLISION,
    LOCKED,
    OTHER,
    TOO_LONG,
    classify,
)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (("OperationalError", "database is locked"), LOCKED),
        (("DataError", "value too long for type character varying(100)"), TOO_LONG),
        (("IntegrityError", 'duplicate key value violates unique constraint "k"'), DUPLICATE_KEY),
        (("IntegrityError", "UNIQUE constraint failed: django_store_tag.name"), DUPLICATE_KEY),
        (("Record.MultipleObjectsReturned", "get() returned more than one"), LABEL_COLLISION),
        (("FileNotFoundError", "[Errno 2] No such file: 'run.param'"), LABEL_COLLISION),
        (("FileNotFoundError", "[Errno 2] No such file: 'data.h5'"), OTHER),
        (("Tag.MultipleObjectsReturned", "get() returned more than one"), DUPLICATE_ROWS),
        (("OperationalError", "deadlock detected"), DEADLOCK),
        (("OperationalError", "FATAL: sorry, too many clients already"), CONNECTION),
        (("ValueError", "connection refused"), OTHER),  # not a database error
    ],
)
def test_stress_error_classification(error, kind):
    assert classify(error) == kind


def test_stress_classification_of_an_exception_ignores_case():
    assert classify(RuntimeError("Database Is Locked")) == LOCKED


def test_jobs_get_the_password_from_the_environment_never_the_command_line():
    with resolve("postgresql://alice:s3cr%40t@db.example.org:6543/sumatra?sslmode=require") as s:
        uri, env = worker_location(s)
    assert uri == "postgresql://alice@db.example.org:6543/sumatra"
    assert env == {"PGPASSWORD": "s3cr@t", "PGSSLMODE": "require"}
    with resolve("postgresql://bob@%2Fvar%2Frun%2Fpostgresql/sumatra") as s:
        uri, env = worker_location(s)
    assert uri == "postgresql:///sumatra"
    assert env["PGHOST"] == "/var/run/postgresql" and env["PGUSER"] == "bob"

"""The audit's findings apart from the per-column scan (audit.py): rows today's unique
sets would refuse, duplicates Sumatra's lookups cannot tell apart, missing identities,
malformed IP addresses, a schema that differs from today's models, output links, and
columns whose content is unbounded by nature."""

from __future__ import annotations

import ipaddress
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper

from .dedupe import LABEL_IDENTITY, any_duplicates, duplicate_groups, identity_of, output_column
from .engines import Engine
from .findings import Finding
from .identities import COLUMN as IDENTITY_COLUMN
from .identities import applies_sql, identity_state
from .schema import (
    OUTPUT_LINKS,
    RECORD_TABLE,
    TAGGING_LAYOUTS,
    Inspection,
    ModelColumn,
    StoreColumn,
    StoreTable,
    model_db_type,
)

EXAMPLES = 3
PREVIEW_CHARS = 40


def preview_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    text = str(value)  # a NUL is kept: shown as \x00 by repr() and JSON alike
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def unique_findings(cursor, table: StoreTable, engine: Engine) -> list[Finding]:
    """Duplicates against today's unique constraints the store itself did not enforce."""
    findings = []
    q = engine.quote_name
    for columns in table.model.unique_sets:
        if table.enforces_unique(columns) or not all(c in table.columns for c in columns):
            continue
        cols = ", ".join(q(c) for c in columns)
        not_null = " AND ".join(f"{q(c)} IS NOT NULL" for c in columns)
        findings += _counted_invalid(
            cursor,
            f"SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM {q(table.name)} "
            f"WHERE {not_null} GROUP BY {cols} HAVING count(*) > 1) AS duplicates",
            table.name,
            ", ".join(columns),
            f"duplicate rows against UNIQUE ({', '.join(columns)})",
        )
    return findings


def _counted_invalid(cursor, query: str, table: str, column: str, detail: str) -> list[Finding]:
    """An invalid finding for the rows `query` counts (one number); none when it counts
    none."""
    cursor.execute(query)
    (rows,) = cursor.fetchone()
    return [Finding(table, column, "invalid", rows=int(rows), detail=detail)] if rows else []


def duplicate_key(table: StoreTable, engine: Engine) -> tuple[tuple[str, ...], str | None]:
    """The columns `duplicate_findings` groups a table's rows by (none: it looks for no
    duplicates there) and which rows it groups (a condition; None: all)."""
    if table.model.name == RECORD_TABLE:
        return tuple(c for c in LABEL_IDENTITY if c in table.columns), None
    return identity_of(table) or (), applies_sql(table, engine.quote_name)


def duplicate_findings(
    cursor, table: StoreTable, engine: Engine, repeated: bool | None = None
) -> list[Finding]:
    """Rows Sumatra's lookups cannot tell apart (dedupe.py): shared rows that make the next
    `smt run` fail (failing; `copy --dedupe` merges them), and records sharing a label in
    a project (a warning: copied as they are, but `smt` lookups of that label fail).
    `repeated`: whether the audit's row screen saw an identity twice (False: no
    duplicates; None: not screened, a GROUP BY finds out)."""
    kind = "duplicate"
    detail = (
        "rows Sumatra's get_or_create cannot tell apart: the next `smt run` needing one "
        "fails (MultipleObjectsReturned); copy --dedupe merges them"
    )
    if table.model.name == RECORD_TABLE:
        kind = "duplicate-label"
        detail = (
            "labels shared by records of one project: `smt` lookups of the label fail "
            "(MultipleObjectsReturned); copied as they are"
        )
    identity, where = duplicate_key(table, engine)
    if not identity or repeated is False:
        return []
    if repeated is None and not any_duplicates(cursor, table.name, identity, engine, where):
        return []
    groups = duplicate_groups(
        cursor,
        table.name,
        table.model.primary_key,
        identity,
        engine,
        output_column(table),
        where,
    )
    if not groups:
        return []
    return [
        Finding(
            table.name,
            ", ".join(identity),
            kind,
            rows=sum(len(g.ids) - 1 for g in groups),
            examples=[g.to_dict() for g in groups],
            detail=f"{len(groups)} group(s) of {detail}",
        )
    ]


def identity_findings(inspection: Inspection) -> list[Finding]:
    """A server store's get_or_create tables without their unique identity: parallel
    `smt run`s can create their rows twice (a warning: `smtmigrate protect` adds them)."""
    if inspection.engine.is_file:
        return []
    state = identity_state(inspection)
    findings = [
        Finding(
            table,
            None,
            "unprotected",
            detail="no unique identity: parallel `smt run`s can create the same row twice "
            "(MultipleObjectsReturned); `smtmigrate protect` adds it",
        )
        for table in state.missing
    ]
    findings += [
        Finding(
            table,
            None,
            "unprotected",
            detail=f"collation {', '.join(collations)} is not byte-exact: no identity can "
            "agree with Sumatra's `=` (a copy into MariaDB makes binary no-pad tables)",
        )
        for table, collations in state.unsupported.items()
    ]
    return findings


def ip_findings(cursor, table: StoreTable, engine: Engine) -> list[Finding]:
    """Values the `inet` column of a PostgreSQL store would reject.

    Platform rows are deduplicated by Sumatra, so grouping by value leaves a handful to
    validate in Python.
    """
    if engine.enforces_types:
        return []
    findings = []
    q = engine.quote_name
    for name, column in table.model.columns.items():
        if column.internal_type != "GenericIPAddressField" or name not in table.columns:
            continue
        value = engine.blob(q(name))  # a value that is not UTF-8: a finding, not a crash
        cursor.execute(
            f"SELECT {value}, count(*), min({q(table.model.primary_key)}) "
            f"FROM {q(table.name)} WHERE {q(name)} IS NOT NULL GROUP BY {value}"
        )
        bad = [(value, n, row_id) for value, n, row_id in cursor.fetchall() if not _is_inet(value)]
        if bad:
            findings.append(
                Finding(
                    table.name,
                    name,
                    "invalid",
                    rows=sum(n for _, n, _ in bad),
                    examples=[
                        {
                            "id": row_id,
                            "value": preview_value(value),
                            "length": len(value.decode("utf-8", "replace")),
                        }
                        for value, _, row_id in bad[:EXAMPLES]
                    ],
                    detail="not an IP address (PostgreSQL inet)",
                )
            )
    return findings


def _is_inet(value: Any) -> bool:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return False
    # inet has no IPv6 zone ("fe80::1%eth0"), which Python's ipaddress accepts
    if not isinstance(value, str) or "\x00" in value or "%" in value:
        return False
    try:
        ipaddress.ip_interface(value)  # inet accepts an optional /prefix too
    except ValueError:
        return False
    return True


def structure_findings(
    inspection: Inspection, table: StoreTable, connection: BaseDatabaseWrapper
) -> list[Finding]:
    """Drift: the store declares a column differently from today's model, or lacks it."""
    findings = []
    for name, column in table.model.columns.items():
        stored = table.columns.get(name)
        if stored is None:
            findings.append(
                Finding(table.name, name, "drift", detail="column missing (today's model has it)")
            )
            continue
        expected = _normalise(model_db_type(column, connection))
        declared = _normalise(stored.declared)
        if declared == expected or _is_wider(stored, column, declared):
            continue
        findings.append(
            Finding(
                table.name,
                name,
                "drift",
                limit=column.max_length,
                max_length=None,
                detail=f"declared {declared}, today's model {expected}",
            )
        )
    for name in table.columns.keys() - table.model.columns.keys() - {IDENTITY_COLUMN}:
        findings.append(Finding(table.name, name, "drift", detail="column not in today's model"))
    if inspection.layout in TAGGING_LAYOUTS and table.name != table.model.name:
        findings.append(
            Finding(
                table.name,
                None,
                "drift",
                detail=f"legacy django-tagging table; today's Sumatra uses {table.model.name}",
            )
        )
    return findings


def output_link_findings(cursor, engine: Engine) -> list[Finding]:
    """Sumatra 0.4-0.6: an output link (record_output_data) the copy cannot turn into a
    DataKey.output_from_record, because its data key or its record does not exist."""
    q = engine.quote_name
    findings = []
    for column, parent, key in (
        ("datakey_id", "django_store_datakey", "id"),
        ("record_id", RECORD_TABLE, "db_id"),
    ):
        findings += _counted_invalid(
            cursor,
            f"SELECT count(*) FROM {q(OUTPUT_LINKS)} WHERE {q(column)} NOT IN "
            f"(SELECT {q(key)} FROM main.{q(parent)})",
            OUTPUT_LINKS,
            column,
            f"output link to a missing row of {parent}: it cannot become "
            "DataKey.output_from_record",
        )
    return findings


def _normalise(declared: str) -> str:
    text = " ".join(declared.lower().split())
    for long, short in (("character varying", "varchar"), ("character(", "char(")):
        text = text.replace(long, short)
    return text.replace(" (", "(")


def _is_wider(stored: StoreColumn, column: ModelColumn, declared: str) -> bool:
    """A widened column (text, or a longer varchar) is what smtmigrate widen makes: fine."""
    if not column.is_text or column.max_length is None:
        return False
    if declared in ("text", "varchar", "longtext"):  # unbounded (longtext: MariaDB's)
        return True
    return stored.max_length is not None and stored.max_length >= column.max_length


def risk_findings(
    table: StoreTable, limit_of, longest: dict[str, int], so_far: list[Finding]
) -> list[Finding]:
    """Columns bounded today whose content is unbounded by nature."""
    reported = {(f.table, f.column) for f in so_far if f.kind in ("overflow", "near-limit")}
    findings = []
    for name, column in table.model.columns.items():
        reason = column.unbounded_reason
        limit = limit_of(column)
        if reason is None or limit is None or name not in table.columns:
            continue
        if (table.name, name) in reported:
            continue
        findings.append(
            Finding(
                table.name,
                name,
                "risk",
                limit=limit,
                max_length=longest.get(name),
                detail=f"unbounded by nature: {reason}",
            )
        )
    return findings

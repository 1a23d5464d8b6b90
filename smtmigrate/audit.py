"""Layout + data → findings: what would fail, or is bound to fail later, on PostgreSQL.

Each table is scanned once, by one query that fuses every per-column check into
aggregates (`count(CASE WHEN … END)`, `max(length(…))`), so the cost is one pass over the
data whatever the number of checks. Only when a check finds something does a second,
small query fetch up to three examples. Nothing is read row by row into Python.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from django.db import DatabaseError
from django.db.backends.base.base import BaseDatabaseWrapper

from .dedupe import LABEL_IDENTITY, duplicate_groups, identity_of, output_column
from .engines import Engine, engine_for
from .errors import StoreConnectionError, UnknownLayout
from .findings import FAILING_KINDS, KINDS, Finding
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
    inspect_store,
    model_db_type,
)
from .threads import on_own_connection, threads_read

SCAN_THREADS = 2  # tables of a SQLite snapshot scanned at once (threads.threads_share)
_PYTHON_PER_ROW = threading.Lock()  # held by the scan that calls Python for every row

EXAMPLES = 3
PREVIEW_CHARS = 40


@dataclass
class AuditReport:
    location: str
    layout: str
    vendor: str
    near: float
    findings: list[Finding]
    row_counts: dict[str, int]  # per stored table
    seconds: float
    snapshot: Any = None  # the snapshot.Snapshot audited (set by the caller)

    @property
    def failing(self) -> list[Finding]:
        return [f for f in self.findings if f.kind in FAILING_KINDS]

    @property
    def exit_code(self) -> int:
        return 1 if self.failing else 0

    def counts(self) -> dict[str, int]:
        return {kind: sum(f.kind == kind for f in self.findings) for kind in KINDS}

    def to_dict(self) -> dict[str, Any]:
        return {
            "location": self.location,
            "layout": self.layout,
            "findings": [
                {k: v for k, v in asdict(f).items() if k != "severity"} for f in self.findings
            ],
            "summary": {
                "exit_code": self.exit_code,
                "counts": self.counts(),
                "tables": len(self.row_counts),
                "rows": sum(self.row_counts.values()),
                "row_counts": self.row_counts,
                "near": self.near,
                "seconds": round(self.seconds, 3),
            },
            "snapshot": None if self.snapshot is None else self.snapshot.to_dict(),
        }


@dataclass
class _Check:
    """A condition that marks the rows of one column PostgreSQL would reject."""

    column: str
    kind: str  # "overflow" or "invalid"
    condition: str
    detail: str = ""
    limit: int | None = None
    # Set for the UTF-8 checks: the first pass screens a row's columns in one call of the
    # Python test (a call per value would cost more than the whole rest of the scan).
    screen: str | None = None


def count_if(condition: str) -> str:
    return f"count(CASE WHEN {condition} THEN 1 END)"


def audit(
    inspection: Inspection,
    *,
    near: float = 0.8,
    limits: Mapping[tuple[str, str], int | None] | None = None,
) -> AuditReport:
    """Scan every Sumatra table of the store and return the findings.

    `limits` overrides the length limit of (today's table, column) pairs, e.g. with the
    sizes a widening plan will give them; otherwise a SQLite store is judged against the
    installed Sumatra's models and a PostgreSQL store against its real columns.
    """
    started = time.perf_counter()
    store = inspection.store
    engine = engine_for(store.connection)
    findings: list[Finding] = []
    row_counts: dict[str, int] = {}

    def scan(table: StoreTable) -> tuple[int, list[Finding]]:
        return _table_findings(
            inspection, table, engine, _limit_function(inspection, table, limits), near
        )

    try:
        tables = list(inspection.tables.values())
        if threads_read(inspection):  # SQLite scans without the GIL: two tables at once
            with ThreadPoolExecutor(SCAN_THREADS, thread_name_prefix="audit") as pool:
                scanned = list(pool.map(on_own_connection(scan, store), tables))
        else:
            scanned = [scan(table) for table in tables]
        for table, (rows, table_findings) in zip(tables, scanned, strict=True):
            row_counts[table.name] = rows
            findings += table_findings
        with store.connection.cursor() as cursor:
            if inspection.views and OUTPUT_LINKS in inspection.table_names:
                findings += _output_link_findings(cursor, engine)
            findings += engine.store_findings(inspection, cursor)
        findings += _identity_findings(inspection)
    except DatabaseError as exc:
        raise store.read_error(exc) from exc
    findings.sort(key=lambda f: (f.severity, f.table, f.column or ""))
    return AuditReport(
        location=store.display,
        layout=inspection.layout,
        vendor=inspection.vendor,
        near=near,
        findings=findings,
        row_counts=row_counts,
        seconds=time.perf_counter() - started,
    )


def _table_findings(
    inspection: Inspection, table: StoreTable, engine: Engine, limit_of, near: float
) -> tuple[int, list[Finding]]:
    """One table's row count and findings, on this thread's connection to the store."""
    connection = inspection.store.connection
    with connection.cursor() as cursor:
        engine.register_functions(connection)
        scan = _TableScan(cursor, table, engine, near)
        rows = scan.run(list(_column_checks(inspection, table, engine, limit_of)))
        findings = _structure_findings(inspection, table, connection)
        findings += scan.findings
        findings += _unique_findings(cursor, table, engine)
        findings += _duplicate_findings(cursor, table, engine)
        findings += _ip_findings(cursor, table, engine)
        findings += _risk_findings(table, limit_of, scan.longest, findings)
    return rows, findings


def _limit_function(
    inspection: Inspection,
    table: StoreTable,
    overrides: Mapping[tuple[str, str], int | None] | None,
):
    """The length a column may hold on the PostgreSQL store the data is bound for."""

    def limit_of(column: ModelColumn) -> int | None:
        key = (column.table, column.name)
        if overrides is not None and key in overrides:
            return overrides[key]
        if inspection.vendor == "postgresql":
            stored = table.columns.get(column.name)
            return stored.max_length if stored else column.max_length
        return column.max_length

    return limit_of


def _column_checks(
    inspection: Inspection, table: StoreTable, engine: Engine, limit_of
) -> Iterable[_Check]:
    """Lengths against the target's limits, and the values the store's engine let in
    that PostgreSQL would reject (engines/*.py `invalid_value_checks`)."""
    for name, column in table.model.columns.items():
        stored = table.columns.get(name)
        if stored is None:
            continue
        limit = limit_of(column) if column.is_text else None
        if limit is not None:
            yield _Check(
                name, "overflow", f"{engine.text_length(name)} > {int(limit)}", limit=limit
            )
        for condition, detail, screen in engine.invalid_value_checks(inspection, table, column):
            yield _Check(name, "invalid", condition, detail, screen=screen)


class _TableScan:
    """One table's checks in two passes.

    The first pass reads every row once and computes, per column, only what a healthy
    store needs: the longest value and whether any invalid condition holds at all. A
    column whose longest value exceeds its limit, or that has some invalid rows, earns a
    second, narrower query that counts each condition and fetches examples — rare work,
    done only where something is wrong.
    """

    def __init__(self, cursor, table: StoreTable, engine: Engine, near: float) -> None:
        self.cursor, self.table, self.engine, self.near = cursor, table, engine, near
        self.longest: dict[str, int] = {}
        self.findings: list[Finding] = []

    def run(self, checks: list[_Check]) -> int:
        q = self.engine.quote_name
        text_columns = [
            name
            for name, column in self.table.model.columns.items()
            if column.is_text and name in self.table.columns
        ]
        invalid: dict[str, list[_Check]] = {}
        for check in checks:
            if check.kind == "invalid" and check.screen is None:
                invalid.setdefault(check.column, []).append(check)
        screened = [check for check in checks if check.screen is not None]
        aggregates = ["count(*)"]
        aggregates += [f"max({self.engine.text_length(name)})" for name in text_columns]
        aggregates += [
            count_if(" OR ".join(f"({check.condition})" for check in group))
            for group in invalid.values()
        ]
        self.cursor.execute(f"SELECT {', '.join(aggregates)} FROM {q(self.table.name)}")
        rows, *values = self.cursor.fetchone()
        self.longest = {name: value or 0 for name, value in zip(text_columns, values, strict=False)}
        flags = values[len(text_columns) :]
        flagged_invalid = {column for column, count in zip(invalid, flags, strict=False) if count}
        screen_failed = bool(screened) and self._screen(screened)
        suspects = [
            check
            for check in checks
            if (check.kind == "overflow" and self.longest[check.column] > check.limit)
            or (check.kind == "invalid" and check.column in flagged_invalid)
            or (check.screen is not None and screen_failed)  # rare: now column by column
        ]
        self._count(suspects)
        self._near_limits(checks)
        return rows

    def _screen(self, screened: list[_Check]) -> bool:
        """Whether some row fails a screened check: one call of the Python test per row,
        in a query of its own that one thread runs at a time. Every call takes the GIL:
        two threads calling it at once handed it back and forth so often that a scan on
        two threads took longer than on one; alone, it runs beside the others' scans."""
        values_of_row = ", ".join(check.screen for check in screened)
        condition = count_if(f"NOT {self.engine.all_utf8(values_of_row)}")
        with _PYTHON_PER_ROW:
            self.cursor.execute(
                f"SELECT {condition} FROM {self.engine.quote_name(self.table.name)}"
            )
            return bool(self.cursor.fetchone()[0])

    def _count(self, suspects: list[_Check]) -> None:
        if not suspects:
            return
        counts = ", ".join(count_if(check.condition) for check in suspects)
        self.cursor.execute(f"SELECT {counts} FROM {self.engine.quote_name(self.table.name)}")
        for check, rows in zip(suspects, self.cursor.fetchone(), strict=True):
            if not rows:
                continue
            detail = check.detail
            if check.kind == "overflow":
                detail = f"{rows} value(s) longer than {check.limit} characters"
            self.findings.append(
                Finding(
                    self.table.name,
                    check.column,
                    check.kind,
                    limit=check.limit,
                    max_length=self.longest.get(check.column),
                    rows=rows,
                    examples=self._examples(check),
                    detail=detail,
                )
            )

    def _near_limits(self, checks: list[_Check]) -> None:
        for check in checks:
            longest = self.longest.get(check.column, 0)
            if check.kind == "overflow" and self.near * check.limit <= longest <= check.limit:
                self.findings.append(
                    Finding(
                        self.table.name,
                        check.column,
                        "near-limit",
                        limit=check.limit,
                        max_length=longest,
                        rows=0,
                        detail=f"longest value uses {longest / check.limit:.0%} of the limit",
                    )
                )

    def _examples(self, check: _Check) -> list[dict[str, Any]]:
        """Up to three offending rows: id, the record's label where there is one, a preview."""
        q, table, length = self.engine.quote_name, self.table, self.engine.text_length(check.column)
        pk = table.model.primary_key
        is_record = table.model.name == RECORD_TABLE
        label = self.engine.preview("label", PREVIEW_CHARS + 1) if is_record else "NULL"
        shown = self.engine.preview(check.column, PREVIEW_CHARS + 1)
        order = f"{length} DESC, " if check.kind == "overflow" else ""
        whole = self.engine.value_bytes(q(check.column))
        self.cursor.execute(
            f"SELECT {q(pk)}, {label}, {shown}, {length}, {whole} FROM {q(table.name)} "
            f"WHERE {check.condition} ORDER BY {order}{q(pk)} LIMIT {EXAMPLES}"
        )
        examples = []
        for row_id, record_label, value, value_length, raw in self.cursor.fetchall():
            example: dict[str, Any] = {"id": row_id}
            if is_record:
                example["label"] = _preview(record_label)
            if isinstance(raw, bytes) and b"\x00" in raw:
                value = raw
                value_length = len(raw.decode("utf-8", "surrogateescape"))
            example["value"] = _preview(value)
            example["length"] = value_length
            examples.append(example)
        return examples


def _preview(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    text = str(value)  # a NUL is kept: shown as \x00 by repr() and JSON alike
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def _unique_findings(cursor, table: StoreTable, engine: Engine) -> list[Finding]:
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


def _duplicate_findings(cursor, table: StoreTable, engine: Engine) -> list[Finding]:
    """Rows Sumatra's lookups cannot tell apart (dedupe.py): shared rows that make the next
    `smt run` fail (failing; `copy --dedupe` merges them), and records sharing a label in
    a project (a warning: copied as they are, but `smt` lookups of that label fail)."""
    identity = identity_of(table)
    kind = "duplicate"
    detail = (
        "rows Sumatra's get_or_create cannot tell apart: the next `smt run` needing one "
        "fails (MultipleObjectsReturned); copy --dedupe merges them"
    )
    if table.model.name == RECORD_TABLE:
        identity = tuple(c for c in LABEL_IDENTITY if c in table.columns)
        kind = "duplicate-label"
        detail = (
            "labels shared by records of one project: `smt` lookups of the label fail "
            "(MultipleObjectsReturned); copied as they are"
        )
    if not identity:
        return []
    groups = duplicate_groups(
        cursor,
        table.name,
        table.model.primary_key,
        identity,
        engine,
        output_column(table),
        applies_sql(table, engine.quote_name) if table.model.name != RECORD_TABLE else None,
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


def _identity_findings(inspection: Inspection) -> list[Finding]:
    """A server store's get_or_create tables without their unique identity: parallel
    `smt run`s can create their rows twice (a warning: `smtmigrate protect` adds them)."""
    if inspection.vendor not in ("postgresql", "mysql"):
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


def _ip_findings(cursor, table: StoreTable, engine: Engine) -> list[Finding]:
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
                            "value": _preview(value),
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


def _structure_findings(
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


def _output_link_findings(cursor, engine: Engine) -> list[Finding]:
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


def audit_snapshot(snapshot, *, near: float = 0.8) -> AuditReport:
    """The audit of a command's snapshot (snapshot.Snapshot). A damaged SQLite store's
    damage comes first, as failing findings; then what the scans could read (none of it
    when a scan stopped at a damaged page)."""
    damage = snapshot.damage
    layout = "unknown"
    try:
        inspection = inspect_store(snapshot.store)
        layout = inspection.layout
        report = audit(inspection, near=near)
    except UnknownLayout as exc:  # a finding: the copy could not carry this store
        report = unknown_layout_report(snapshot.live, exc, near)
    except StoreConnectionError:
        if damage is None:
            raise
        report = AuditReport(snapshot.live.display, layout, "sqlite", near, [], {}, 0.0)
    if damage is not None:
        if not damage.owners:
            report.findings.insert(0, Finding("", None, "damaged", detail=damage.said))
        for owner in reversed(damage.owners):
            what = f"index {owner.name}: " if owner.type == "index" else ""
            report.findings.insert(
                0, Finding(owner.table, None, "damaged", detail=what + damage.said)
            )
    report.snapshot = snapshot
    return report


def unknown_layout_report(store, error: UnknownLayout, near: float) -> AuditReport:
    """A store whose layout smtmigrate does not know: one failing finding, the reason."""
    return AuditReport(
        location=store.display,
        layout="unknown",
        vendor=store.connection.vendor,
        near=near,
        findings=[Finding(RECORD_TABLE, None, "invalid", detail=f"cannot be copied: {error}")],
        row_counts={},
        seconds=0.0,
    )


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


def _risk_findings(
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

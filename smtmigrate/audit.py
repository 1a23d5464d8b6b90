"""Layout + data → findings: what would fail, or is bound to fail later, on the server the
store is bound for (an SQLite store: PostgreSQL) or is on (a PostgreSQL or MariaDB store:
against its own columns); `AuditReport.judged_by` names that server.

Each table is scanned once, by one query that fuses every per-column check into
aggregates (`count(CASE WHEN … END)`, `max(length(…))`), so the cost is one pass over the
data whatever the number of checks. Only when a check finds something does a second,
small query fetch up to three examples. Nothing is read row by row into Python.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from django.db import DatabaseError

from .audit_rules import (
    EXAMPLES,
    PREVIEW_CHARS,
    duplicate_findings,
    duplicate_key,
    identity_findings,
    ip_findings,
    output_link_findings,
    preview_value,
    risk_findings,
    structure_findings,
    unique_findings,
)
from .engines import Engine, engine_for
from .errors import StoreConnectionError, UnknownLayout
from .findings import FAILING_KINDS, KINDS, Finding
from .schema import (
    OUTPUT_LINKS,
    RECORD_TABLE,
    Inspection,
    ModelColumn,
    StoreTable,
    inspect_store,
)
from .threads import on_own_connection, threads_read

SCAN_THREADS = 2  # tables of a SQLite snapshot scanned at once (threads.threads_share)
_PYTHON_PER_ROW = threading.Lock()  # held by the scan that calls Python for every row


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

    @property
    def judged_by(self) -> str:
        """The server whose rules the findings apply, as the verdict names it."""
        return engine_for(self.vendor).audited_as

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
                "judged_by": self.judged_by,
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
    # Set for the NUL and UTF-8 checks: the first pass screens a row's columns in one call
    # of the Python test (a call per value would cost more than the whole rest of the scan).
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
    installed Sumatra's models and a PostgreSQL or MariaDB store against its real columns
    (a widened column holds what today's model would not).
    """
    started = time.perf_counter()
    store = inspection.store
    engine = store.engine
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
                findings += output_link_findings(cursor, engine)
            findings += engine.store_findings(inspection, cursor)
        findings += identity_findings(inspection)
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
        scan = _TableScan(connection, cursor, table, engine, near)
        checks = list(_column_checks(inspection, table, engine, limit_of))
        identity, where = duplicate_key(table, engine)
        if (  # hashed by the row screen, if the table has one, instead of a GROUP BY
            identity
            and any(check.screen for check in checks)
            and table.name not in inspection.views
            and engine.plain_collation(cursor, table.name)
        ):
            scan.identity = identity, where
        rows = scan.run(checks)
        findings = structure_findings(inspection, table, connection)
        findings += scan.findings
        findings += unique_findings(cursor, table, engine)
        findings += duplicate_findings(cursor, table, engine, scan.repeated)
        findings += ip_findings(cursor, table, engine)
        findings += risk_findings(table, limit_of, scan.longest, findings)
    return rows, findings


def _limit_function(
    inspection: Inspection,
    table: StoreTable,
    overrides: Mapping[tuple[str, str], int | None] | None,
):
    """The length a column may hold: in a server store, its own column's; in an SQLite
    store (bound for a server), today's model's."""

    def limit_of(column: ModelColumn) -> int | None:
        key = (column.table, column.name)
        if overrides is not None and key in overrides:
            return overrides[key]
        if inspection.engine.enforces_types:  # its declared lengths are real limits
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

    The first pass reads every row once and computes only what a healthy store needs:
    the longest value of each column with a length limit, and whether any of the table's
    invalid conditions holds at all (one aggregate for them all: each aggregate is a
    call per row). When a longest value exceeds its limit, or some row is invalid, a
    second, narrower query counts each suspect condition (and measures the columns it
    names) and fetches examples: rare work, done only where something is wrong.
    """

    def __init__(self, connection, cursor, table: StoreTable, engine: Engine, near: float) -> None:
        self.connection, self.cursor = connection, cursor
        self.table, self.engine, self.near = table, engine, near
        self.longest: dict[str, int] = {}
        self.findings: list[Finding] = []
        # The identity (columns, which rows) the screen hashes; and whether one repeated
        # (None: not hashed, `duplicate_findings` groups the rows itself).
        self.identity: tuple[tuple[str, ...], str | None] | None = None
        self.repeated: bool | None = None

    def run(self, checks: list[_Check]) -> int:
        q = self.engine.quote_name
        limited = list(dict.fromkeys(c.column for c in checks if c.kind == "overflow"))
        invalid = [c for c in checks if c.kind == "invalid" and c.screen is None]
        screened = [check for check in checks if check.screen is not None]
        aggregates = ["count(*)"]
        aggregates += [f"max({self.engine.text_length(name)})" for name in limited]
        if invalid:
            aggregates.append(count_if(" OR ".join(f"({c.condition})" for c in invalid)))
        self.cursor.execute(f"SELECT {', '.join(aggregates)} FROM {q(self.table.name)}")
        rows, *values = self.cursor.fetchone()
        self.longest = {name: value or 0 for name, value in zip(limited, values, strict=False)}
        some_invalid = bool(invalid) and bool(values[len(limited)])
        screen_failed = bool(screened) and self._screen(screened)
        suspects = [
            check
            for check in checks
            if (
                check.kind == "overflow"
                and check.limit is not None
                and self.longest[check.column] > check.limit
            )
            or (check.kind == "invalid" and check.screen is None and some_invalid)
            or (check.screen is not None and screen_failed)  # rare: now column by column
        ]
        self._count(suspects)
        self._near_limits(checks)
        return rows

    def _screen(self, screened: list[_Check]) -> bool:
        """Whether some row fails a screened check: one call of the Python test per row,
        in a query of its own that one thread runs at a time. Every call takes the GIL:
        two threads calling it at once handed it back and forth so often that a scan on
        two threads took longer than on one; alone, it runs beside the others' scans.
        The same call hashes the row's identity (`identity`): the duplicate pre-check."""
        values = list(dict.fromkeys(check.screen or "" for check in screened))
        keyed, keys = "0", []
        if self.identity is not None:
            columns, where = self.identity
            stored = self.table.columns
            keys = [self.engine.screen_key(name, stored[name].declared) for name in columns]
            keyed = f"({where})" if where else "1"
        screen, call = self.engine.row_screen(
            self.connection, keyed, len(keys), keys + [v for v in values if v not in keys]
        )
        with _PYTHON_PER_ROW:
            self.cursor.execute(
                f"SELECT {count_if(f'NOT {call}')} FROM {self.engine.quote_name(self.table.name)}"
            )
            failed = bool(self.cursor.fetchone()[0])
        if self.identity is not None:
            self.repeated = screen.repeated
        return failed

    def _count(self, suspects: list[_Check]) -> None:
        if not suspects:
            return
        # The longest value of a text column that has no limit, for its findings.
        unmeasured = [
            name
            for name in dict.fromkeys(check.column for check in suspects)
            if name not in self.longest and self._is_text(name)
        ]
        counts = [count_if(check.condition) for check in suspects]
        counts += [f"max({self.engine.text_length(name)})" for name in unmeasured]
        self.cursor.execute(
            f"SELECT {', '.join(counts)} FROM {self.engine.quote_name(self.table.name)}"
        )
        counted = list(self.cursor.fetchone())
        for name, value in zip(unmeasured, counted[len(suspects) :], strict=True):
            self.longest[name] = value or 0
        for check, rows in zip(suspects, counted[: len(suspects)], strict=True):
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

    def _is_text(self, name: str) -> bool:
        column = self.table.model.columns.get(name)
        return column is not None and column.is_text and name in self.table.columns

    def _near_limits(self, checks: list[_Check]) -> None:
        for check in checks:
            longest = self.longest.get(check.column, 0)
            if check.kind != "overflow" or check.limit is None:
                continue
            if self.near * check.limit <= longest <= check.limit:
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
                example["label"] = preview_value(record_label)
            if isinstance(raw, bytes) and b"\x00" in raw:
                value = raw
                value_length = len(raw.decode("utf-8", "surrogateescape"))
            example["value"] = preview_value(value)
            example["length"] = value_length
            examples.append(example)
        return examples


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

"""plan → prepare the target → load → verify → report, all or nothing.

`plan_copy` inspects and audits the source against the target's limits. `copy_store`
then runs one function per phase: Sumatra's own migrations build the target's schema (so
`django_migrations` is what Sumatra expects) and the planned widening runs; the target
engine bulk-loads every table (PostgreSQL: COPY streams hashed on the way; SQLite:
INSERT … SELECT); verify.py compares counts, checksums and records; the result is
reported. What "all or nothing" means is the target engine's (engines/): one PostgreSQL
transaction, or a hidden SQLite file renamed into place once verified.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from django.core.management import call_command
from django.db import DatabaseError

from .audit import AuditReport, Finding, audit
from .canonical import Checksum, TableLayout, table_layout
from .dedupe import DedupePlan, Group, plan_dedupe
from .engines import TableResult
from .engines.base import CopyTarget
from .errors import NotASumatraStore, Refused, SmtmigrateError, TargetNotEmpty
from .generations import FOLDED_TABLES
from .identities import build_in_transaction, identity_state
from .locations import Store
from .remaps import Remaps, content_type_remap, merge_remaps
from .schema import (
    CONTENT_TYPE_TABLE,
    LAYOUT_08,
    MIGRATIONS_TABLE,
    Inspection,
    inspect_store,
    sumatra_tables,
)
from .snapshot import Snapshot
from .threads import on_a_thread, threads_read
from .verify import DEFAULT_LEVEL, Level, Verification, verify_stores
from .widen import WideningPlan, plan_widening
from .widen_apply import apply_widening

if TYPE_CHECKING:  # records/ loads Sumatra: only when records are compared
    from .records.comparison import Sample

# Tables Sumatra's migrations create that are not copied: the target has its own.
TARGET_OWNED = frozenset({MIGRATIONS_TABLE, CONTENT_TYPE_TABLE, "sqlite_sequence"})


class CopyEvents(Protocol):
    """What the copy reports while it runs (render.py draws it)."""

    def phase(self, name: str) -> None: ...
    def table_start(self, table: str, rows: int) -> None: ...
    def table_progress(self, table: str, rows: int, nbytes: int) -> None: ...
    def table_done(self, result: TableResult) -> None: ...


class SilentEvents:
    def __enter__(self) -> SilentEvents:
        return self

    def __exit__(self, *exc_info) -> None:
        pass

    def phase(self, name: str) -> None:
        pass

    def table_start(self, table: str, rows: int) -> None:
        pass

    def table_progress(self, table: str, rows: int, nbytes: int) -> None:
        pass

    def table_done(self, result: TableResult) -> None:
        pass


@dataclass
class CopyPlan:
    source: Inspection
    target: Store
    target_inspection: Inspection | None  # an existing, empty Sumatra schema
    report: AuditReport  # the preflight audit, against the target's limits
    widening: WideningPlan | None
    layouts: list[TableLayout]
    row_counts: dict[str, int]  # by today's table name
    failing: list[Finding]  # what the target would reject even after the planned widening
    skipped: list[str]  # source tables that are not copied
    snapshot: Snapshot | None = None  # the state of the source that is read (see snapshot.py)
    # Sumatra 0.4-0.6: source table → where its rows go instead (generations.FOLDED_TABLES)
    folded: dict[str, str] = field(default_factory=dict)
    dedupe: DedupePlan | None = None  # with --dedupe: the duplicate rows merged on the way
    target_findings: list[Finding] = field(default_factory=list)  # the target's own, in report

    @property
    def build_schema(self) -> bool:
        return self.target_inspection is None

    @property
    def refused(self) -> bool:
        return bool(self.failing)

    def to_dict(self) -> dict:
        fields = ("table", "column", "kind", "limit", "max_length", "rows", "detail")
        return {
            "source": self.source.store.display,
            "layout": self.source.layout,
            "target": self.target.display,
            "failing": [{k: getattr(f, k) for k in fields} for f in self.failing],
            "plan": {
                "build_schema": self.build_schema,
                "tables": [
                    {
                        "source_table": layout.source_name,
                        "table": layout.name,
                        "rows": self.row_counts[layout.name],
                    }
                    for layout in self.layouts
                ],
                "widening": None
                if self.widening is None
                else [
                    {"table": c.table, "column": c.column, "from": c.current_type, "to": c.new_type}
                    for c in self.widening.changes
                ],
                "skipped": self.skipped,
                "folded": self.folded,
                "dedupe": None if self.dedupe is None else self.dedupe.to_dict(),
            },
            "snapshot": None if self.snapshot is None else self.snapshot.to_dict(),
        }

    def remaps(self, content_types: Remaps) -> Remaps:
        """Every id the copy rewrites: content types, and the dedupe's re-pointed keys."""
        if self.dedupe is None:
            return content_types
        return merge_remaps(content_types, self.dedupe.remaps)

    def skip(self, table: str) -> frozenset[int]:
        """Ids of the rows of `table` (today's name) that are not copied."""
        return self.dedupe.skip.get(table, frozenset()) if self.dedupe else frozenset()


@dataclass
class CopyResult:
    plan: CopyPlan
    tables: list[TableResult]
    verification: Verification
    phases: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def snapshot(self) -> Snapshot | None:
        return self.plan.snapshot

    def to_dict(self) -> dict:
        return {
            "snapshot": None if self.snapshot is None else self.snapshot.to_dict(),
            "tables": [
                {"table": t.table, "rows": t.rows, "bytes": t.bytes, "seconds": round(t.seconds, 3)}
                for t in self.tables
            ],
            "phases": {name: round(seconds, 3) for name, seconds in self.phases.items()},
            "seconds": round(self.seconds, 3),
            "verification": self.verification.to_dict(),
        }


class VerificationFailed(Refused):
    """The copy was rolled back because the target did not match the source."""

    def __init__(self, verification: Verification) -> None:
        super().__init__(f"verification failed, nothing was kept: {verification.problem}")
        self.verification = verification


# -- planning -----------------------------------------------------------------------------


def plan_copy(
    source: Store | Snapshot,
    target: Store,
    *,
    widen: bool = False,
    dedupe: bool = False,
    new_database: bool = False,
) -> CopyPlan:
    """Inspect both stores and audit the source against what the target will accept.

    Given a `Snapshot` (what the commands pass), everything — this audit, the copy, its
    verification — reads that one state of the source; given a Store, the live store.
    Duplicate rows Sumatra's lookups cannot tell apart are failing findings; with
    `dedupe` they are planned to be merged instead (dedupe.py). `new_database`: the target
    database is yet to be created (a plan only)."""
    snapshot: Snapshot | None = None
    if isinstance(source, Snapshot):
        snapshot, source = source, source.store
    refusal = target.engine.copy_refusal(source.engine)  # a server into its own kind
    if refusal is not None:
        raise SmtmigrateError(f"{source.display}: {refusal}")
    live = snapshot.live if snapshot is not None else source
    if live.path is not None and live.path == target.path:  # one file (servers have none)
        raise SmtmigrateError("SOURCE and TARGET are the same store")
    if source.path is not None and source.path == target.path:
        raise SmtmigrateError("SOURCE and TARGET are the same store")
    inspection = inspect_store(source)
    existing = None if new_database else _check_target(target)
    limits = _target_limits(target, existing)
    report = audit(inspection, limits=limits)
    target_findings = target.engine.target_findings(target, inspection)  # warnings
    report.findings += target_findings
    widening = None
    if widen and not target.engine.is_file:
        widening = target.engine.widening_plan(
            plan_widening("text", report=report, source=inspection, target=existing)
        )
        limits = widening.limits()
    layouts = []
    for name, table in inspection.tables.items():
        layouts.append(table_layout(table.model, name, table.columns))
    missing = [
        f"{layout.name}.{column.name}"
        for layout, table in zip(layouts, inspection.tables.values(), strict=True)
        for column in table.model.columns.values()
        if column.name not in table.columns and not column.null
    ]
    if missing:
        raise Refused(f"{source.display}: the source lacks columns Sumatra needs: {missing}")
    copied = set(inspection.tables)
    failing = remaining_failures(report, inspection, limits)
    merge = None
    if dedupe:
        groups = {
            f.table: [Group.from_dict(g) for g in f.examples]
            for f in report.findings
            if f.kind == "duplicate"
        }
        merge = plan_dedupe(inspection, groups)
        failing = [f for f in failing if f.kind != "duplicate"]
    row_counts = {layout.name: report.row_counts[layout.source_name] for layout in layouts}
    if merge is not None:
        for name, ids in merge.skip.items():
            row_counts[name] -= len(ids)
    return CopyPlan(
        source=inspection,
        target=target,
        target_inspection=existing,
        report=report,
        widening=widening,
        layouts=layouts,
        row_counts=row_counts,
        failing=failing,
        skipped=sorted(inspection.table_names - copied - TARGET_OWNED - FOLDED_TABLES.keys()),
        folded={
            name: into
            for name, into in FOLDED_TABLES.items()
            if inspection.views and name in inspection.table_names
        },
        snapshot=snapshot,
        dedupe=merge,
        target_findings=target_findings,
    )


def plan_for_created(plan: CopyPlan, *, widen: bool, dedupe: bool) -> CopyPlan:
    """The plan made before the target database existed (`new_database`), once it does:
    kept when the database is empty and the target's own findings are as planned (the
    source's inspection and audit would come out the same: one read of the snapshot, not
    two); else planned again against it."""
    if _check_target(plan.target) is None:
        findings = plan.target.engine.target_findings(plan.target, plan.source)
        if findings == plan.target_findings:
            return plan
    source = plan.snapshot if plan.snapshot is not None else plan.source.store
    return plan_copy(source, plan.target, widen=widen, dedupe=dedupe)


def remaining_failures(
    report: AuditReport, inspection: Inspection, limits: dict[tuple[str, str], int | None] | None
) -> list[Finding]:
    """Findings the target would still reject once its columns have `limits`."""
    failing = []
    for finding in report.failing:
        if finding.kind == "overflow" and limits is not None:
            model_table = inspection.tables[finding.table].model.name
            assert finding.column is not None  # an overflow is a column's
            limit = limits.get((model_table, finding.column), finding.limit)
            if limit is None or (finding.max_length or 0) <= limit:
                continue
        failing.append(finding)
    return failing


def _check_target(target: Store) -> Inspection | None:
    """None for a target to build from scratch; an Inspection for an empty Sumatra store.

    Anything holding data is refused: merging is not what a copy does.
    """
    if target.engine.is_file:
        if target.path is not None and target.path.exists():
            raise Refused(f"{target.display} exists; copy writes a new SQLite store")
        return None
    if target.engine.copy_builds_afresh:  # whatever the target holds (engines/)
        target.engine.check_new_target(target)
        return None
    connection = target.connection
    try:
        with connection.cursor() as cursor:
            tables = set(connection.introspection.table_names(cursor))
            if not tables:
                return None
            try:
                inspection = inspect_store(target)
            except NotASumatraStore as exc:
                raise Refused(
                    f"{target.display} is not empty ({len(tables)} tables, e.g. "
                    f"{sorted(tables)[0]}); copy into an empty database"
                ) from exc
            if inspection.layout != LAYOUT_08:
                raise Refused(f"{target.display} holds a {inspection.layout} store")
            for name in sorted(inspection.tables):
                quoted = target.engine.quote_name(name)
                cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {quoted})")
                if cursor.fetchone()[0]:
                    raise TargetNotEmpty(
                        f"{target.display} already holds Sumatra data ({name} is not empty); "
                        "copy only into an empty database or an empty Sumatra store"
                    )
    except DatabaseError as exc:
        raise target.read_error(exc) from exc
    return inspection


def _target_limits(target: Store, existing: Inspection | None):
    """The column sizes the rows must fit: none in SQLite; the real ones in a schema that
    exists; today's models' for a schema yet to be built."""
    if target.engine.is_file:
        return {
            (table.name, name): None
            for table in sumatra_tables().values()
            for name in table.columns
        }
    if target.engine.copy_builds_afresh or existing is None:
        # built from today's models whatever the source's own columns hold (a widened
        # server store's text columns do not carry over without --widen)
        return {
            (table.name, name): column.max_length
            for table in sumatra_tables().values()
            for name, column in table.columns.items()
        }
    limits = {}
    for table in existing.tables.values():
        for name, column in table.columns.items():
            limits[table.model.name, name] = column.max_length
    return limits


# -- the copy: prepare the target → load → verify → report --------------------------------


def copy_store(
    plan: CopyPlan,
    events: CopyEvents | None = None,
    *,
    level: Level = DEFAULT_LEVEL,
    sample: Future[Sample] | None = None,
) -> CopyResult:
    """Run the plan (made by plan_copy), all or nothing. Returns a CopyResult; raises
    Refused/VerificationFailed/… `sample`: the sample's source side, already being read
    (`sample_early`: `move` starts it while the database is created).

    Each phase is one call: the target engine decides what "all or nothing" means (one
    PostgreSQL transaction; a hidden SQLite file renamed into place) and how rows are
    bulk-loaded."""
    if plan.refused:
        raise Refused(f"{len(plan.failing)} finding(s) would be rejected by the target")
    events = events or SilentEvents()
    phase = _Phases(events)
    started = time.perf_counter()
    with plan.target.engine.copy_target(plan, events, phase) as target:
        prepared, remaps = _prepare_target(plan, target, phase)
        if sample is None:
            sample = _sample_ahead(plan, target, level)
        tables, checksums = target.load(plan, remaps, events)
        if not prepared.engine.is_file:  # parallel `smt run`s cannot duplicate shared rows
            with phase("identities"):
                # an empty store createdb made has them already
                build_in_transaction(prepared, identity_state(prepared).missing)
        verification = _verify(plan, target, prepared, checksums, level, phase, sample)
    return _report(plan, tables, verification, phase, started)


def sample_early(plan: CopyPlan, level: Level) -> Future[Sample] | None:
    """The sample's source side (through Sumatra, CPU-bound) read by a thread from now on,
    for `copy_store(sample=…)`: started while this thread waits for the server (CREATE
    DATABASE, Sumatra's migrations), it costs the copy nothing. The same records the
    verification would read later: the plan's snapshot does not change."""
    if level != "sample" or plan.snapshot is None or not threads_read(plan.source):
        return None
    from .records.comparison import read_sample

    return on_a_thread(read_sample, plan.source, plan.source.store, name="sample")


def _sample_ahead(plan: CopyPlan, target: CopyTarget, level: Level) -> Future[Sample] | None:
    """The sample's source side, read through Sumatra by a thread during the load when
    the load leaves the row checks nothing to overlap it with (else verify.py reads it
    during them)."""
    if level != "sample" or not target.checksums_while_loading or not threads_read(plan.source):
        return None
    from .records.comparison import read_sample

    return on_a_thread(read_sample, plan.source, plan.source.store, name="sample")


class _Phases:
    def __init__(self, events: CopyEvents) -> None:
        self.events = events
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        self.events.phase(name)
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started


def _prepare_target(
    plan: CopyPlan, target: CopyTarget, phase: _Phases
) -> tuple[Inspection, Remaps]:
    """Sumatra's schema by its own migrations, the planned widening, and the source's
    content types added to the target's: the ids every copied row is remapped by."""
    with target.schema_store() as store:
        if plan.build_schema:
            with phase("schema"):
                call_command("migrate", database=store.alias, interactive=False, verbosity=0)
        prepared = inspect_store(store)
        if plan.widening is not None:
            with phase("widen"):
                widening = plan_widening(
                    "text", report=plan.report, source=plan.source, target=prepared
                )
                if target.widens_itself:
                    target.widen(widening, prepared)
                else:
                    apply_widening(widening, prepared)
        remaps = plan.remaps(content_type_remap(plan.source, prepared, create=True))
    return prepared, remaps


def _verify(
    plan: CopyPlan,
    target: CopyTarget,
    prepared: Inspection,
    checksums: dict[str, Checksum],
    level: Level,
    phase: _Phases,
    sample: Future[Sample] | None,
) -> Verification:
    """Counts, checksums (the source's as the load computed them) and records, in one
    call of verify.py; a difference undoes the copy."""
    with target.reading(prepared, inspect_store) as loaded:
        if level == "full":
            target.before_reading_records(loaded)
        verification = verify_stores(
            plan.source,
            loaded,
            source_checksums=checksums,
            target_checksums=target.stored_checksums,
            source_sample=sample,
            level=level,
            events=phase,
            dedupe=plan.dedupe,
        )
    if not verification.ok:
        raise VerificationFailed(verification)
    return verification


def _report(
    plan: CopyPlan,
    tables: list[TableResult],
    verification: Verification,
    phase: _Phases,
    started: float,
) -> CopyResult:
    result = CopyResult(plan, tables, verification, phase.seconds, time.perf_counter() - started)
    if plan.snapshot is not None:
        # The target equals the snapshot; say whether the live source has moved on since.
        plan.snapshot.check_changes()
        result.phases["snapshot"] = plan.snapshot.seconds
    return result

"""`smtmigrate move`: a project's whole move onto a database server, as steps that resume.

    plan  → what each step will do, checked before anything is changed
    database → created (and its role) when missing, as `createdb` does
    copy  → `copy --widen`, verified against the source's snapshot, in one transaction
    switch → `.smt/project` names the new store, its label generator fixed
    late records → records the old store gained since the snapshot, carried over

Until the switch the project keeps its old store, so a failure (or a kill) at any step
leaves it as it was, and running `move` again picks up where the last run stopped: a
database an earlier run created is reused while it is empty; a copy an earlier run
committed is verified (every record it holds equal to the project's) and kept; a project
already on the target is reported, and its late records carried over. The state of a
finished move (`.smt/smtmigrate-move.json`: where from, where to, the last record id the
copy took) is what lets a later run find the old store again.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from django.db import DatabaseError

from .admin import admin_for
from .carry import copied_record_id, fold_late_records, in_flight
from .copy import CopyEvents, copy_store, plan_copy, plan_for_created, sample_early
from .dedupe import find_duplicates, plan_dedupe
from .engines.sqlite_damage import COPY_READABLE, REFUSE
from .errors import LocationError, Refused, SmtmigrateError, StoreConnectionError, TargetNotEmpty
from .locations import Store, resolve, same_store
from .move_state import (
    COPIED,
    FRESH,
    MOVED,
    REVERTED,
    MoveOptions,
    MovePlan,
    MoveResult,
    MoveStep,
    read_state,
    write_state,
)
from .project import (
    check_switch,
    read_label_generator,
    set_label_generator,
    switch_project,
)
from .schema import RECORD_TABLE, Inspection, inspect_store
from .snapshot import source_snapshot
from .sumatra_env import SmtProbe
from .verify import verify_stores

# Tests only: "STEP:SIGNAL" (e.g. "copy:KILL") makes `move` signal itself once STEP is done.
SIGNAL_AFTER_STEP = "SMTMIGRATE_TEST_SIGNAL_AFTER"


def _same(a: Store | None, b: Store | None) -> bool:
    """Whether two locations name one store; a database that cannot be reached (say, not
    created yet) is no store the project is on."""
    if a is None or b is None:
        return False
    try:
        return same_store(a, b)
    except StoreConnectionError:
        return False


def plan_move(
    directory: Path, source: Store, target: Store, options: MoveOptions, stack: ExitStack
) -> MovePlan:
    """Look at the project, both stores and the server; change nothing. A copy to make
    reads one snapshot of the project's store, held open on `stack` until the move ends."""
    if target.engine.is_file:
        raise SmtmigrateError(
            f"{target.display}: move takes a postgresql:// or mysql:// URL as TARGET"
        )
    if options.create_role and not target.engine.move_creates_role:
        raise SmtmigrateError(
            "--create-role does not apply to a MariaDB move: Sumatra's runs must get in "
            "before anything is copied; create the user first (smtmigrate createdb "
            "--create-role), then move into its database"
        )
    check_switch(directory, target)  # everything the switch needs, before anything else
    if options.pooler:
        from .pooler import check_pooler  # PgBouncer's modules: only for --pooler

        check_pooler(target, options.pooler)
    # the project's smt asked (in a process of its own, unless it runs in this very
    # Python) while the store is planned
    smt_probe = stack.enter_context(SmtProbe(target))
    plan = MovePlan(directory, source, target, read_label_generator(directory), options, [])
    state = read_state(directory)
    moved_from = moved_to = None
    if state:
        moved_to = resolve(state["moved_to"], base_dir=directory, mariadb=True)
        try:
            moved_from = resolve(state["moved_from"], base_dir=directory, mariadb=True)
        except LocationError:
            moved_from = None  # the old store is gone: nothing late to carry from it
    if _same(source, target):
        plan.stage = MOVED
        if moved_from is not None and _same(moved_to, target):
            plan.old = moved_from
    elif moved_from is not None and _same(moved_from, source) and _same(moved_to, target):
        plan.stage, plan.old = REVERTED, source
    if plan.old is not None:
        plan.after_id = int((state or {}).get("copied_through_id") or 0)
    if plan.stage == FRESH:
        _plan_copy(plan, stack)
    step = {
        FRESH: f"point {directory} at {target.display}",
        COPIED: f"point {directory} at {target.display}",
        REVERTED: f"point {directory} at {target.display} again: a job that started before "
        "the move rewrote .smt/project when it ended (Sumatra saves it after every run)",
        MOVED: f"done: the project is on {target.display}",
    }[plan.stage]
    plan.steps.append(MoveStep("switch", step, needed=plan.stage != MOVED))
    fix = options.label_generator if plan.label.collides else None
    if fix:
        plan.steps.append(MoveStep("labels", f"label generator {plan.label.described} → {fix}"))
    elif plan.label.collides:
        plan.steps.append(MoveStep("labels", f"kept: {plan.label.problem}", needed=False))
    else:
        plan.steps.append(MoveStep("labels", f"{plan.label.described}: no collision", needed=False))
    if plan.stage in (FRESH, COPIED) or plan.old is not None:
        where = plan.old.display if plan.old is not None else source.display
        plan.steps.append(MoveStep("late records", f"carry records saved to {where} meanwhile"))
    if options.pooler:
        plan.steps.append(
            MoveStep("pooler", f"start PgBouncer on {options.pooler}, point {directory} at it")
        )
    smt_probe.check()
    return plan


def _plan_copy(plan: MovePlan, stack: ExitStack) -> None:
    source, target, options = plan.source, plan.target, plan.options
    damaged = COPY_READABLE if options.copy_readable else REFUSE
    snapshot = stack.enter_context(source_snapshot(source, damaged=damaged))
    admin = admin_for(target)
    holds_tables = admin.plan_database(plan)
    if plan.create_database:
        owner = target.settings.get("USER") or "the URL's user"
        role = " and its role" if options.create_role else ""
        what = admin.describe_new(target, owner)
        plan.steps.append(
            MoveStep("database", f"create database {target.settings['NAME']}{role} ({what})")
        )
        plan.copy = plan_copy(
            snapshot, target, widen=True, dedupe=options.dedupe, new_database=True
        )
    elif holds_tables:
        # MariaDB copies build from scratch and refuse any table: tables there are an
        # earlier run's copy, kept if it holds the project's records only.
        plan.steps.append(MoveStep("database", "exists", needed=False))
        plan.after_id = _earlier_copy(snapshot.store, target, options.dedupe)
        plan.stage, plan.old = COPIED, source
    else:
        plan.steps.append(MoveStep("database", "exists", needed=False))
        try:
            plan.copy = plan_copy(snapshot, target, widen=True, dedupe=options.dedupe)
        except TargetNotEmpty:
            plan.after_id = _earlier_copy(snapshot.store, target, options.dedupe)
            plan.stage, plan.old = COPIED, source
    if plan.copy is not None:
        rows = sum(plan.copy.row_counts.values())
        widened = len(plan.copy.widening.changes) if plan.copy.widening else 0
        records = plan.copy.row_counts.get(RECORD_TABLE, 0)
        plan.steps.append(
            MoveStep(
                "copy",
                f"copy {records:,} records ({rows:,} rows), widening {widened} column(s), verified",
            )
        )
    else:
        plan.steps.append(
            MoveStep(
                "copy",
                "made by an earlier run: every record in it equals the project's",
                needed=False,
            )
        )


def _earlier_copy(source: Store, target: Store, dedupe: bool) -> int:
    """An earlier run's copy, kept if every record it holds equals the project's (`source`:
    its snapshot); the project may have saved more since (carried over as late records)."""
    inspection, copied = inspect_store(source), inspect_store(target)
    merged = plan_dedupe(inspection, find_duplicates(inspection)) if dedupe else None
    verification = verify_stores(inspection, copied, dedupe=merged)
    comparison = verification.records
    assert comparison is not None
    subset = (
        comparison.target_records == comparison.records
        and comparison.differing_records == comparison.source_records - comparison.records
    )
    if not subset and not _differs_only_in_flight(inspection, copied):
        raise Refused(
            f"{target.display} already holds Sumatra records that are not the project's "
            f"({verification.problem}); move copies only into an empty database"
        )
    return _max_record_id(target)


class MoveFailed(SmtmigrateError):
    """A step failed, or Ctrl-C came, after an earlier step changed something: says what."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


StepDone = Callable[[str, "MoveResult"], None]  # (step name, the result so far)


def _differs_only_in_flight(source: Inspection, target: Inspection) -> bool:
    """Whether every record of an earlier copy equals the project's, or is still in flight
    in the copy (its job ended since, in the project's store: the late-records step takes
    its final state over)."""
    from sumatra.recordstore.django_store.models import Record

    from .records import canonical, read_records, sumatra_reading

    tags = dict(Record._base_manager.using(target.store.alias).values_list("db_id", "tags"))
    ids = sorted(tags)
    with sumatra_reading():
        copy = {r.db_id: canonical(r) for r in read_records(target, ids)}
        ours = {r.db_id: canonical(r) for r in read_records(source, ids)}
    return all(
        copy[i] == ours.get(copied_record_id(i)) or in_flight(tags[i]) for i in copy
    ) and all(copied_record_id(i) in ours for i in copy)


def run_move(plan: MovePlan, events: CopyEvents, on_step: StepDone | None = None) -> MoveResult:
    """Carry out the plan's needed steps, in order, calling `on_step` as each is done. A
    failure (or Ctrl-C) after something was changed ends as a `MoveFailed` saying what was
    changed and how to finish or undo; a database this run created is dropped again when
    the copy into it did not commit."""
    result = MoveResult(plan)

    def done(name: str) -> None:
        if on_step is not None:
            on_step(name, result)
        _signal_for_tests(name)

    try:
        _run_steps(plan, result, events, done)
    except BaseException as exc:
        if isinstance(exc, SystemExit | GeneratorExit):
            raise
        if result.created_here and result.copy is None:
            _undo_database(plan, result)
        if not result.changed and not result.undone:
            raise
        raise MoveFailed(_failure(plan, result, exc), _exit_code(exc)) from exc
    return result


def _run_steps(
    plan: MovePlan, result: MoveResult, events: CopyEvents, done: Callable[[str], None]
) -> None:
    options = plan.options
    planned = plan.copy
    sample = None if planned is None else sample_early(planned, options.level)
    if plan.create_database:
        admin_for(plan.target).create_for_move(plan, result)
        done("database")
        assert plan.copy is not None  # a new database: planned against it (_plan_copy)
        plan.copy = plan_for_created(plan.copy, widen=True, dedupe=options.dedupe)
    if plan.copy is not None:
        if plan.copy.refused:
            raise Refused(f"{len(plan.copy.failing)} finding(s) would be rejected by the target")
        if plan.copy is not planned:  # planned again: its own inspection of the snapshot
            sample = None
        result.copy = copy_store(plan.copy, events, level=options.level, sample=sample)
        result.changed.append(f"committed the copy of {plan.source.display} (verified)")
        snapshot = plan.copy.snapshot
        plan.old = plan.source
        plan.after_id = (snapshot.max_record_id if snapshot else None) or 0
        done("copy")
    fix = options.label_generator if plan.label.collides else None
    if plan.stage != MOVED:
        switched = switch_project(plan.directory, plan.target, label_generator=fix)
        result.switched = switched
        result.changed.append(
            f"switched {switched.project_file} to {switched.db_file} "
            f"(the previous one saved as {switched.backup})"
        )
        if switched.pgpass_changed:
            result.changed.append(f"wrote the password to {switched.pgpass}")
        write_state(plan)
        done("switch")
    elif fix:
        set_label_generator(plan.directory, fix)
        result.changed.append(f"set the label generator to {fix}")
    result.label_fixed = fix
    done("labels")
    if plan.old is not None:
        result.late = fold_late_records(
            plan.old,
            plan.target,
            after_id=plan.after_id,
            damaged=COPY_READABLE if options.copy_readable else REFUSE,
        )
        if result.late.carried:
            result.changed.append(f"carried {len(result.late.carried)} late record(s)")
        done("late records")
    if options.pooler:  # last: the project then names the pooler, its direct URL kept
        from .pooler import start_pooler

        plan.target.close()
        result.pooler = start_pooler(plan.directory, options.pooler)
        result.changed.append(f"started PgBouncer on {options.pooler}, the project names it")
        done("pooler")


def _signal_for_tests(step: str) -> None:
    """The tests' way to interrupt a move right after a step (SIGNAL_AFTER_STEP)."""
    wanted, _, name = os.environ.get(SIGNAL_AFTER_STEP, "").partition(":")
    if wanted == step:
        os.kill(os.getpid(), getattr(signal, f"SIG{name}"))


def _exit_code(exc: BaseException) -> int:
    if isinstance(exc, KeyboardInterrupt):
        return 130
    return exc.exit_code if isinstance(exc, SmtmigrateError) else 2


def _failure(plan: MovePlan, result: MoveResult, exc: BaseException) -> str:
    """One line: what went wrong, what this run had changed (and undone), how to go on."""
    if isinstance(exc, KeyboardInterrupt):
        what = "interrupted"
    elif isinstance(exc, SmtmigrateError):
        what = str(exc)
    else:
        what = f"{type(exc).__name__}: {exc}"
    parts = [what]
    if result.changed:
        parts.append("already done: " + "; ".join(result.changed))
    if result.undone:
        parts.append("undone: " + "; ".join(result.undone))
    again = f"smtmigrate move {plan.directory} {plan.target.display}"
    if result.switched is not None or plan.stage == MOVED:
        undo = (
            f"or go back with `smtmigrate switch {plan.directory} {plan.old.display}`"
            if plan.old is not None
            else ""
        )
        parts.append(f"the project is on the new store; to finish run `{again}` again {undo}")
    elif result.copy is not None or not any(u.startswith("dropped") for u in result.undone):
        parts.append(
            f"the project is still on {plan.source.display}; to finish run `{again}` again, "
            f"or undo by dropping {plan.target.display}"
        )
    else:
        parts.append(
            f"the project is still on {plan.source.display}, nothing is left to undo; "
            f"run `{again}` again to move it"
        )
    return "; ".join(p.strip() for p in parts)


def _undo_database(plan: MovePlan, result: MoveResult) -> None:
    """Drop the database (and role) this run created: the copy into it did not commit."""
    try:
        admin_for(plan.target).drop_for_move(plan, result)
    except (SmtmigrateError, DatabaseError) as exc:
        result.undone.append(f"could not drop {plan.target.display} again ({exc})")
        return
    result.undone.append(f"dropped {plan.target.display} again (the copy had not committed)")


def _max_record_id(store: Store) -> int:
    with store.connection.cursor() as cursor:
        table = store.engine.quote_name(RECORD_TABLE)
        cursor.execute(f"SELECT coalesce(max(db_id), 0) FROM {table}")
        return int(cursor.fetchone()[0])

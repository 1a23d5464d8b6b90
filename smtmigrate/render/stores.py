"""What the commands that change stores and projects show: `createdb`, `drop-recreate`,
`switch` and `move`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from ..admin.created import CreatedDatabase
from ..admin.postgresql import DatabaseInfo, pg_hba_line
from ..copy import CopyResult
from ..locations import Store
from ..move_state import MovePlan, MoveResult
from ..pgpass import pgpass_line
from ..project import LabelFixResult, SwitchResult
from ..snapshot import Snapshot
from ..verify import Verification
from .audit import findings_table
from .console import say, table, write_lines
from .copy import PlainCopyEvents, render_copy_result, verification_json, verification_summary


def render_database(info: DatabaseInfo, display: str, owner: str, out: Console) -> None:
    """The database `drop-recreate` is about to replace, and who would notice."""
    if not info.exists:
        say(out, f"{display} does not exist yet: it will be created (owner {owner}, UTF8).")
        return
    size = f"{info.size / 1e6:,.1f} MB" if info.size is not None else "?"
    say(out, f"Drop and recreate {display}", "bold")
    say(out, f"  owner {info.owner or ''} → {owner}, encoding {info.encoding} → UTF8, size {size}")
    if info.records is None:
        tables = f" ({info.other_tables} tables)" if info.other_tables else ", no tables"
        say(out, f"  not a Sumatra store{tables}")
    else:
        projects = ", ".join(info.projects) or "none"
        say(
            out,
            f"  {info.records:,} Sumatra records in {len(info.projects)} project(s): {projects}",
        )
    if info.sessions:
        say(out, f"  {len(info.sessions)} other session(s) connected, ended by the drop:")
        for pid, user, application, client in info.sessions:
            say(out, f"    pid {pid} {user} {application or '-'} from {client}")
    else:
        say(out, "  no other sessions connected")


def render_mariadb_database(
    display: str, tables: int | None, records: int | None, out: Console
) -> None:
    """The MariaDB database `drop-recreate` is about to replace."""
    if tables is None:
        say(out, f"{display} does not exist yet: it will be created (utf8mb4_nopad_bin).")
        return
    say(out, f"Drop and recreate {display}", "bold")
    what = "no tables" if not tables else f"a Sumatra store, {records:,} records"
    say(out, f"  {what}")


def render_mariadb_created(name: str, account: str, user_created: bool, out: Console) -> None:
    """What `createdb` did on MariaDB, and where Sumatra's runs find the password."""
    if user_created:
        say(out, f"created user {account}")
    say(out, f"created database {name} (utf8mb4, utf8mb4_nopad_bin), empty")
    say(
        out,
        f"granted {account} all privileges on it and on smtmigrate_partial_* "
        "(where a copy builds before it renames the tables into place)",
    )
    say(out, "Sumatra's smt runs read the password from MYSQL_PWD (not ~/.my.cnf)")


def render_mariadb_recreated(name: str, account: str, schema: bool, out: Console) -> None:
    say(out, f"created {name} (utf8mb4, utf8mb4_nopad_bin), {account} granted")
    if schema:
        say(out, "built Sumatra's schema (its migrations + the default widening)")


def render_backing_up(records: int, path: Path, out: Console) -> None:
    say(out, f"backing up {records:,} records to {path} …")


def render_backup(path: Path, snapshot: Snapshot, result: CopyResult, out: Console) -> None:
    summary = verification_summary(result.verification)
    say(out, f"backup: {path} (the store {snapshot.summary}; {summary})")


def render_dropped(name: str, out: Console) -> None:
    say(out, f"dropped {name}")


def render_recreated(name: str, owner: str, schema: bool, out: Console) -> None:
    say(out, f"created {name} (owner {owner}, UTF8)")
    if schema:
        say(out, "built Sumatra's schema (its migrations + the default widening)")


def render_ready(display: str, out: Console) -> None:
    say(out, f"{display} is ready for Sumatra.", "bold green")


def render_created(created: CreatedDatabase, store: Store, out: Console) -> None:
    """What `createdb` did, and the lines the user may need next."""
    if created.account is not None:  # MariaDB: a user granted, no owner, no schema
        render_mariadb_created(created.name, created.account, created.role_created, out)
        return
    if created.role_created:
        said = f"created role {created.owner}"
        say(out, said + (" with a password" if created.with_password else ""))
    say(out, f"created database {created.name} (owner {created.owner}, UTF8)")
    if created.schema_built:
        say(out, "built Sumatra's schema (its migrations + the default widening)")
    say(out, "For ~/.pgpass (mode 0600), put the password in place of PASSWORD:")
    say(out, f"  {pgpass_line(store)}")
    say(out, "For pg_hba.conf, if the server asks for passwords:")
    say(out, f"  {pg_hba_line(store, created.owner)}")


def switch_lines(result: SwitchResult, verification: Verification | None = None) -> list[str]:
    """What a switch did, one plain line each. With the verification when the command has
    not shown it already (`copy --switch` has: its "Verified: …" line)."""
    if not result.switched:
        return [f"{result.project_file} names {result.db_file} already; nothing was changed"]
    lines = []
    if verification is not None:
        verdict = "verified" if verification.ok else "switched anyway (--force)"
        lines.append(f"{verdict}: {verification_summary(verification)}")
    lines.append(
        f"kept {result.backup}, saved by an earlier switch (the project file before it)"
        if result.backup_kept
        else f"saved the previous project file as {result.backup}"
    )
    lines.append(f"{result.project_file} now names {result.db_file}")
    if result.pgpass is not None:
        what = "added the password for it to" if result.pgpass_changed else "password already in"
        lines.append(f"{what} {result.pgpass} (mode 0600); it is not in the project file")
    return lines


def render_switched(
    result: SwitchResult,
    out: Console,
    *,
    verification: Verification | None = None,
    label_generator: str | None = None,
) -> None:
    lines = switch_lines(result, verification)
    if label_generator:
        lines.append(f"{result.project_file} now labels records with {label_generator}")
    write_lines(out, lines)


def render_label_fix(result: LabelFixResult, out: Console) -> None:
    if result.backup is None:
        lines = [f"{result.project_file} already labels records with {result.after.described}"]
    else:
        lines = [
            f"the project file before the first change is kept as {result.backup}",
            f"{result.project_file} now labels records with {result.after.described} "
            f"(was {result.before.described})",
        ]
    write_lines(out, lines)


def render_restored(restored: Path, out: Console) -> None:
    write_lines(out, [f"restored {restored} as it was before the first switch"])


def render_move_plan(plan: MovePlan, out: Console) -> None:
    say(out, f"Move plan: {plan.directory} ({plan.source.display}) → {plan.target.display}")
    steps = table("step", "to do", "what")
    for step in plan.steps:
        steps.add_row(step.name, "yes" if step.needed else "no", step.action)
    out.print(steps)
    if plan.copy is not None and plan.copy.refused:
        out.print(findings_table(plan.copy.failing))
        duplicates = any(f.kind == "duplicate" for f in plan.copy.failing)
        dedupe = " Add --dedupe to merge the duplicate rows on the way." if duplicates else ""
        say(
            out,
            f"Refused: {len(plan.copy.failing)} finding(s) would be rejected by the target; "
            f"nothing was changed (see smtmigrate audit).{dedupe}",
            "bold red",
        )


def move_plan_json(plan: MovePlan) -> dict[str, Any]:
    return plan.to_dict() | {"refused": plan.refused}


def move_json(result: MoveResult) -> dict[str, Any]:
    data = result.to_dict()
    if result.copy is not None:
        data["copy_result"]["verification"] = verification_json(result.copy.verification)
    return data


def render_move_step(name: str, result: MoveResult, out: Console) -> None:
    """What a step of `move` did, as soon as it is done."""
    plan, created = result.plan, result.created
    if name == "database":
        if created is not None:
            role = f"role {created.owner} and " if created.role_created else ""
            say(out, f"database: created {role}{created.name} (owner {created.owner}, UTF8)")
        else:
            say(out, f"database: created {plan.target.settings['NAME']}")
    elif name == "copy" and result.copy is not None:
        render_copy_result(result.copy, out)
    elif name == "switch" and result.switched is not None:
        for line in switch_lines(result.switched):
            say(out, f"switch: {line}")
    elif name == "labels" and result.label_fixed:
        say(out, f"labels: label generator {plan.label.described} → {result.label_fixed}")
    elif name == "late records":
        late = result.late
        assert plan.old is not None  # late records come from the old store
        say(
            out,
            f"late records: {len(late.carried)} carried over from {plan.old.display}, "
            "each read back equal through Sumatra",
        )
        if late.without_project:
            say(
                out,
                f"{late.without_project} late record(s) without a project were left in the "
                "old store (Sumatra cannot save them)",
                "yellow",
            )


def render_move_result(result: MoveResult, out: Console) -> None:
    """The end of a move (its steps were shown as they were done)."""
    plan = result.plan
    verb = "Already moved" if plan.stage == "moved" else "Moved"
    say(out, f"{verb}: {plan.directory} uses {plan.target.display}.", "bold green")
    if plan.old is not None:
        say(
            out,
            "A `smt run` that started before the switch still saves to the old store when it "
            "ends, and rewrites .smt/project as it was (Sumatra saves the project file after "
            "every run): once such jobs have ended, run this move again; it points the "
            "project back at the new store and carries their records over.",
        )


class RecreateEvents:
    """drop-recreate's steps as lines on `out` (admin/recreate.py)."""

    def __init__(self, out: Console) -> None:
        self.out = out

    def database(self, info: DatabaseInfo, display: str, owner: str) -> None:
        render_database(info, display, owner, self.out)

    def mariadb_database(self, display: str, tables: int | None, records: int | None) -> None:
        render_mariadb_database(display, tables, records, self.out)

    def backing_up(self, records: int, path: Path) -> None:
        render_backing_up(records, path, self.out)

    def copy_events(self) -> PlainCopyEvents:
        return PlainCopyEvents(self.out)

    def backup(self, path: Path, snapshot: Snapshot, result: CopyResult) -> None:
        render_backup(path, snapshot, result, self.out)

    def dropped(self, name: str) -> None:
        render_dropped(name, self.out)

    def recreated(self, name: str, owner: str, schema: bool) -> None:
        render_recreated(name, owner, schema, self.out)

    def mariadb_recreated(self, name: str, account: str, schema: bool) -> None:
        render_mariadb_recreated(name, account, schema, self.out)

    def ready(self, display: str) -> None:
        render_ready(display, self.out)

"""Findings/policy → plan → a Django migration that widens Sumatra's columns.

Django never enforces `max_length` on `save()`, so a PostgreSQL store whose columns are
wider than Sumatra's models keeps working and stops rejecting long values for good.

The plan is data (`WideningPlan`); everything else is Django's own machinery applied to it:
the autodetector turns "Sumatra's migration state" → "the same with wider columns" into
AlterField operations, MigrationWriter writes them as a migration file, and the schema
editor produces (or runs) the SQL. On PostgreSQL ≥ 9.2, `varchar(n)` → a longer `varchar`
or unbounded `varchar` is binary-coercible: no table rewrite, only a brief lock.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING

import sqlparse
from django.db import connections, models, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations import Migration, RunPython
from django.db.migrations.autodetector import MigrationAutodetector
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.operations import AlterField
from django.db.migrations.questioner import NonInteractiveMigrationQuestioner
from django.db.migrations.state import ProjectState
from django.db.migrations.writer import MigrationWriter

from .audit import AuditReport
from .errors import SmtmigrateError
from .files import write_private
from .schema import SUMATRA_APP, Inspection, sumatra_tables

if TYPE_CHECKING:
    from .locations import Store

POLICIES = ("text", "fit")
MIGRATION_NAME = "smtmigrate_widen"
UNBOUNDED = None  # a planned max_length of None: PostgreSQL's unbounded text


@dataclass(frozen=True)
class ColumnChange:
    """One column of Sumatra's schema and the size the plan gives it."""

    table: str  # today's table name
    column: str
    model: str  # model name, lower case, as migrations spell it
    field: str
    current: int | None  # max_length today (of the store when planned against one)
    new: int | None  # planned max_length; None = unbounded
    reason: str
    longest: int | None = None  # longest value in the audited data, if any

    @property
    def current_type(self) -> str:
        return _varchar(self.current)

    @property
    def new_type(self) -> str:
        return _varchar(self.new)

    @property
    def widens(self) -> bool:
        return self.current is not None and (self.new is None or self.new > self.current)


def _varchar(length: int | None) -> str:
    return "text" if length is None else f"varchar({length})"


@dataclass
class WideningPlan:
    policy: str
    headroom: float
    columns: list[ColumnChange]  # every column considered, widened or not

    @property
    def changes(self) -> list[ColumnChange]:
        return [c for c in self.columns if c.widens]

    def migration(self, *, from_current: bool = False) -> Migration:
        """This plan as a Django migration (`build_migration`)."""
        return build_migration(self, from_current=from_current)

    def limits(self) -> dict[tuple[str, str], int | None]:
        """(table, column) → the length each column will have: for auditing against."""
        return {(c.table, c.column): (c.new if c.widens else c.current) for c in self.columns}


def plan_widening(
    policy: str = "text",
    *,
    headroom: float = 2.0,
    report: AuditReport | None = None,
    source: Inspection | None = None,
    target: Inspection | None = None,
) -> WideningPlan:
    """Decide the size of every bounded text column of Sumatra's schema.

    * `text`: every column whose content is unbounded by nature becomes unbounded;
    * `fit`: every column the audit flags (overflow, near-limit, risk) is sized to its
      longest value x `headroom`, rounded up; the others keep their size.
    With a `target`, sizes are compared with its real columns, and a column narrower than
    today's model (drift) is brought up to at least the model's size.
    """
    if policy not in POLICIES:
        raise SmtmigrateError(f"unknown policy '{policy}' (choose {' or '.join(POLICIES)})")
    if policy == "fit" and report is None:
        raise SmtmigrateError("--policy fit sizes columns from the data: give a SOURCE store")
    if headroom < 1:
        raise SmtmigrateError("--headroom must be at least 1.0")
    longest = _longest_values(report, source) if report is not None else {}
    columns = []
    for table in sumatra_tables().values():
        for name, column in table.columns.items():
            if not column.is_text or column.max_length is None or column.field.many_to_one:
                continue
            current: int | None = column.max_length
            if target is not None:
                stored_table = target.table_for(table.name)
                stored = stored_table.columns.get(name) if stored_table else None
                current = stored.max_length if stored else column.max_length
            data = longest.get((table.name, name))
            if policy == "text":
                new = UNBOUNDED if column.unbounded_reason else column.max_length
                reason = column.unbounded_reason or "bounded by nature"
            else:
                new, reason = _fit(column.max_length, data, headroom, column.unbounded_reason)
            if current is not None and new is not None and new < current:
                new = current  # never narrow a column
            columns.append(
                ColumnChange(
                    table.name,
                    name,
                    table.model._meta.model_name,
                    column.field.name,
                    current,
                    new,
                    reason,
                    data,
                )
            )
    return WideningPlan(policy, headroom, columns)


def _fit(limit: int, longest: int | None, headroom: float, nature: str | None):
    """Size for `--policy fit`: over-long data, or unbounded-by-nature data without the
    headroom, gets longest x headroom; anything else keeps its size."""
    if longest is None:
        return limit, "no finding: keeps its size"
    needed = math.ceil(longest * headroom)
    if longest > limit:
        why = "over the limit"
    elif nature and needed > limit:
        why = f"{nature}, less than {headroom:g}x headroom"
    else:
        return limit, "data fits" + ("" if nature else "; bounded by nature")
    return needed, f"{why}: {longest} x {headroom:g} = {needed}"


def _longest_values(report: AuditReport, source: Inspection | None) -> dict[tuple[str, str], int]:
    """Longest values the audit saw, keyed by today's table names."""
    to_model = {}
    if source is not None:
        to_model = {name: table.model.name for name, table in source.tables.items()}
    return {
        (to_model.get(f.table, f.table), f.column): f.max_length
        for f in report.findings
        if f.kind in ("overflow", "near-limit", "risk")
        and f.column is not None
        and f.max_length is not None
    }


# -- the migration ------------------------------------------------------------------------


def sumatra_migration_state() -> tuple[MigrationLoader, ProjectState, tuple[str, str]]:
    """The loader, and the project state after Sumatra's latest migration."""
    loader = MigrationLoader(None, ignore_no_migrations=True)
    (leaf,) = loader.graph.leaf_nodes(SUMATRA_APP)
    return loader, loader.project_state(leaf, at_end=True), leaf


def _with_lengths(state: ProjectState, lengths: dict[tuple[str, str], int | None]) -> ProjectState:
    """A copy of `state` whose fields have the given sizes; None makes a TextField.

    Unbounded becomes TextField rather than CharField(max_length=None): URLField,
    SlugField and Sumatra's TagField drop a None max_length when deconstructed, so a
    migration file would bring their default size back.
    """
    state = state.clone()
    for (model, field_name), length in lengths.items():
        model_state = state.models[SUMATRA_APP, model]
        field = model_state.fields[field_name]
        _, _path, args, kwargs = field.deconstruct()
        if length is None:
            kwargs = {k: v for k, v in kwargs.items() if k not in ("max_length", "allow_unicode")}
            model_state.fields[field_name] = models.TextField(*args, **kwargs)
        else:
            kwargs["max_length"] = length
            model_state.fields[field_name] = field.__class__(*args, **kwargs)
    return state


def build_migration(plan: WideningPlan, *, from_current: bool = False) -> Migration:
    """The widening as a Django migration on app django_store, via the autodetector.

    `from_current`: start from the sizes the plan found in the store (to run the SQL on
    that store) rather than from Sumatra's migration state (for a migration file).
    """
    loader, state, _leaf = sumatra_migration_state()
    if from_current:
        state = _with_lengths(state, {(c.model, c.field): c.current for c in plan.changes})
    to_state = _with_lengths(state, {(c.model, c.field): c.new for c in plan.changes})
    autodetector = MigrationAutodetector(
        state, to_state, NonInteractiveMigrationQuestioner(specified_apps={SUMATRA_APP})
    )
    changes = autodetector.changes(
        loader.graph, trim_to_apps={SUMATRA_APP}, migration_name=MIGRATION_NAME
    )
    (migration,) = changes[SUMATRA_APP]
    migration.initial_state = state  # where apply() starts from: apply() mutates a clone
    return migration


def write_migration(plan: WideningPlan, directory: Path) -> list[Path]:
    """Write the migration file into `directory`, made a migrations package if needed.

    The package re-exports Sumatra's own migrations, so a Django project can apply it with
    MIGRATION_MODULES = {"django_store": "<package>"} and `manage.py migrate`. The file
    alone can also be copied into Sumatra's `django_store/migrations/`.
    """
    migration = build_migration(plan)
    # Django's migrate would leave the foreign key to a widened primary key without its
    # `_like` index and under another name (see `apply_migration`): the file puts both back itself.
    migration.operations.append(RunPython(restore_foreign_keys, RunPython.noop))
    # Files smtmigrate creates are never world-readable: new directories 0750, files 0640;
    # the user shares them further if they want to.
    for missing in reversed([d for d in (directory, *directory.parents) if not d.exists()]):
        missing.mkdir(mode=0o750, exist_ok=True)
    written = []
    init = directory / "__init__.py"
    if not init.exists():
        _write_migration_file(init, "")
        written.append(init)
    package = import_module(f"sumatra.recordstore.{SUMATRA_APP}.migrations").__name__
    for dependency_app, dependency in _sumatra_migration_names():
        shim = directory / f"{dependency}.py"
        if dependency_app == SUMATRA_APP and not shim.exists():
            _write_migration_file(
                shim,
                f'"""Sumatra\'s own migration {dependency}, re-exported for this package."""\n\n'
                "from importlib import import_module\n\n"
                f'Migration = import_module("{package}.{dependency}").Migration\n',
            )
            written.append(shim)
    writer = MigrationWriter(migration, include_header=True)
    path = directory / f"{migration.name}.py"
    _write_migration_file(path, writer.as_string())
    written.append(path)
    return written


def _write_migration_file(path: Path, text: str) -> None:
    """New files 0640; a file written again keeps its mode, less any access for others."""
    write_private(path, text, mode=path.stat().st_mode & 0o777 if path.exists() else 0o640)


def _sumatra_migration_names() -> list[tuple[str, str]]:
    loader = MigrationLoader(None, ignore_no_migrations=True)
    return sorted(key for key in loader.disk_migrations if key[0] == SUMATRA_APP)


def migration_sql(plan: WideningPlan, store: Store | None) -> list[str]:
    """The SQL the migration runs on PostgreSQL, formatted with sqlparse (on MariaDB: its
    online ALTERs, one at a time, as `widen_apply` runs them).

    Against a PostgreSQL store the schema editor looks constraint names up there; without
    one it uses the names Django gives them when Sumatra's migrations build a store.
    """
    connection = store.connection if store is not None else None
    migration = build_migration(plan, from_current=connection is not None)
    if store is not None and connection is not None and not store.engine.can_rollback_ddl:
        statements = mariadb_statements(plan, connection)[0]
        return [sqlparse.format(s, keyword_case="upper") + ";" for s in statements]
    if connection is None:
        editor = _offline_editor()
    else:
        editor = connection.schema_editor(collect_sql=True, atomic=False)
    with editor:
        apply_migration(migration, editor)
    statements = editor.collected_sql
    return [sqlparse.format(s, reindent=True, keyword_case="upper") for s in statements]


def apply_migration(migration: Migration, editor) -> None:
    """Run the migration, then undo two side effects of Django's PostgreSQL schema editor
    on the foreign keys to a primary key it alters (`django_store_record.project_id`, when
    `django_store_project.id` becomes text): it drops their `varchar_pattern_ops` index
    and never makes it again (only the altered column's own), and it recreates their
    constraint under another name (suffix `_fk`, not `_fk_<table>_<column>`). Afterwards
    the store has the schema the widened models get when created afresh
    (tests/commands/test_widen.py compares the catalogs)."""
    before = migration.initial_state
    after = _apply_altered_fields(migration, before, editor)
    widened = {(o.model_name, o.name) for o in migration.operations}
    for model in after.apps.get_app_config(SUMATRA_APP).get_models():
        old_model = before.apps.get_model(SUMATRA_APP, model.__name__)
        for field in model._meta.local_fields:
            if not field.is_relation or (model._meta.model_name, field.name) in widened:
                continue  # Django's AlterField takes care of the field it alters
            old_type = old_model._meta.get_field(field.name).db_type(editor.connection) or ""
            new_type = field.db_type(editor.connection) or ""
            if old_type == new_type:
                continue
            if field.db_constraint:
                table = editor.quote_name(model._meta.db_table)
                made = editor._fk_constraint_name(model, field, "_fk")
                wanted = editor._fk_constraint_name(model, field, "_fk_%(to_table)s_%(to_column)s")
                editor.execute(f"ALTER TABLE {table} RENAME CONSTRAINT {made} TO {wanted}")
            dropped = old_type.startswith("varchar") and not new_type.startswith("varchar")
            if field.db_index and dropped:
                statement = editor._create_like_index_sql(model, field)
                if statement is not None:
                    editor.execute(statement)


def _apply_altered_fields(migration: Migration, before: ProjectState, editor) -> ProjectState:
    """What `migration.apply` does, with the models rendered once instead of once per
    operation.

    Django's `apply` moves the state forward an `AlterField` at a time and re-renders the
    altered model and every model related to it before each one's SQL: 32 renders of
    Sumatra's models, most of a widening's time on a small store. The operations alter
    distinct fields, and each one's SQL reads only its own field before and after (and
    the columns of the foreign keys to it, which no operation alters), so every operation
    can run from `before` to the final state: the same statements, in the same order
    (tests/commands/test_widen.py compares them, and the catalogs)."""
    if not all(isinstance(o, AlterField) for o in migration.operations) or len(
        {(o.model_name, o.name_lower) for o in migration.operations}
    ) != len(migration.operations):
        return migration.apply(before.clone(), editor)
    after = ProjectState(
        {key: model.clone() for key, model in before.models.items()}, before.real_apps
    )
    for operation in migration.operations:
        operation.state_forwards(migration.app_label, after)
    for operation in migration.operations:
        if not editor.atomic_migration and (
            operation.atomic or (migration.atomic and operation.atomic is not False)
        ):  # as Django's apply: each operation atomic in a non-atomic schema editor
            with transaction.atomic(editor.connection.alias):
                operation.database_forwards(migration.app_label, editor, before, after)
        else:
            operation.database_forwards(migration.app_label, editor, before, after)
    return after


def restore_foreign_keys(apps, schema_editor) -> None:
    """Run by a migration that `widen --write` wrote, after its AlterFields: what `apply_migration`
    does on smtmigrate's own paths, decided from the database's catalog (a migration file
    knows no "before"): a foreign key constraint Django renamed gets its name back, an
    indexed foreign key column without its `_like` index gets it. Nothing on other
    engines; nothing twice."""
    from .engines import engine_for  # only a Django connection here, no Store

    connection = schema_editor.connection
    if not engine_for(connection).like_indexes:
        return
    introspection = connection.introspection
    for model in apps.get_app_config(SUMATRA_APP).get_models():
        with connection.cursor() as cursor:
            existing = introspection.get_constraints(cursor, model._meta.db_table)
        for field in model._meta.local_fields:
            if not field.is_relation:
                continue
            table = schema_editor.quote_name(model._meta.db_table)
            made = schema_editor._fk_constraint_name(model, field, "_fk")
            wanted = schema_editor._fk_constraint_name(
                model, field, "_fk_%(to_table)s_%(to_column)s"
            )
            renamed = str(made).strip('"') in existing
            if field.db_constraint and renamed and str(wanted).strip('"') not in existing:
                schema_editor.execute(f"ALTER TABLE {table} RENAME CONSTRAINT {made} TO {wanted}")
            like = [
                name
                for name, info in existing.items()
                if info["index"] and info["columns"] == [field.column] and name.endswith("_like")
            ]
            if field.db_index and not like:
                statement = schema_editor._create_like_index_sql(model, field)
                if statement is not None:
                    schema_editor.execute(statement)


def _offline_editor():
    from django.db.backends.postgresql.base import DatabaseWrapper

    class OfflineSchemaEditor(DatabaseWrapper.SchemaEditorClass):
        """Collects SQL without a server: constraints are named as Django names them."""

        def execute(self, sql, params=()):
            # PostgreSQL's editor merges parameters through a live cursor; ours has none.
            if params:
                raise SmtmigrateError("this widening needs a PostgreSQL store to run against")
            return super(DatabaseWrapper.SchemaEditorClass, self).execute(sql, None)

        def _constraint_names(self, model, column_names=None, foreign_key=None, **kwargs):
            if foreign_key and column_names and len(column_names) == 1:
                field = next(f for f in model._meta.local_fields if f.column == column_names[0])
                suffix = "_fk_%(to_table)s_%(to_column)s"
                return [str(self._fk_constraint_name(model, field, suffix))]
            raise SmtmigrateError("this widening needs a PostgreSQL store to look names up in")

    settings = {"ENGINE": "django.db.backends.postgresql", "NAME": "offline"}
    wrapper = DatabaseWrapper(connections.configure_settings({"default": settings})["default"])
    return OfflineSchemaEditor(wrapper, collect_sql=True, atomic=False)


# -- MariaDB's DDL for the migration (applied in widen_apply.py) --------------------------


def mariadb_statements(plan: WideningPlan, connection: BaseDatabaseWrapper):
    """The DDL Django's MySQL schema editor runs for the widening, collected against a
    MariaDB store (its constraints looked up there; nothing run), and the migration."""
    migration = build_migration(plan, from_current=True)
    with connection.schema_editor(collect_sql=True, atomic=False) as editor:
        migration.apply(migration.initial_state.clone(), editor)
    return _merge_modifies([s.rstrip().rstrip(";") for s in editor.collected_sql]), migration


def _merge_modifies(statements: list[str]) -> list[str]:
    """Consecutive `ALTER TABLE t MODIFY …` of one table as one ALTER: each rebuilds the
    table, so five columns of `django_store_record` cost one rebuild, not five."""
    merged: list[str] = []
    last_table = None
    for statement in statements:
        match = re.fullmatch(r"(ALTER TABLE `[^`]+`) (MODIFY .*)", statement, re.DOTALL)
        if match and match[1] == last_table:
            merged[-1] += f", {match[2]}"
            continue
        merged.append(statement)
        last_table = match[1] if match else None
    return merged

"""A store's layout and real columns, and the limits of the installed Sumatra's models.

Two views meet here:
  * today's models (`sumatra_tables()`): what a PostgreSQL store built by the installed
    Sumatra looks like — every column's type and `max_length`, foreign keys, unique sets;
  * a store's reality (`inspect_store()`): which Sumatra generation wrote it, which tables
    and columns it has and how they are declared.
They are matched by table and column name; legacy table names map onto today's.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from functools import cache

from django.apps import apps
from django.db import DatabaseError, models
from django.db.backends.base.base import BaseDatabaseWrapper

from .errors import NotASumatraStore, UnknownLayout
from .locations import Store

SUMATRA_APP = "django_store"
# Django's tables in a Sumatra store: one spelling each, imported wherever they are named.
CONTENT_TYPE_TABLE = "django_content_type"
MIGRATIONS_TABLE = "django_migrations"
RECORD_TABLE = "django_store_record"
# Store generations, named for the Sumatra releases whose schema they are (see
# docs/generations.md). 0.4-0.6 were made by Django <= 1.6's syncdb and differ in columns:
LAYOUT_04 = "sumatra-0.4"  # no Dependency.source, no Repository.upstream
LAYOUT_05 = "sumatra-0.5"  # + Dependency.source, Repository.upstream; no Record.repeats
LAYOUT_06 = "sumatra-0.6"  # + Record.repeats, wider columns; outputs still an M2M table
LAYOUT_07 = "sumatra-0.7"  # DataKey.output_from_record and creation; no output M2M table
LAYOUT_08 = "sumatra-0.8"  # Sumatra's own migrations, tags in django_store_tag
# Up to 0.6 a record's outputs are rows of this M2M table, not DataKey.output_from_record.
OUTPUT_LINKS = "django_store_record_output_data"
OUTPUT_LINK_LAYOUTS = frozenset({LAYOUT_04, LAYOUT_05, LAYOUT_06})
# Layouts that keep tags in django-tagging's tables (LEGACY_TABLES).
TAGGING_LAYOUTS = OUTPUT_LINK_LAYOUTS | {LAYOUT_07}
SUMATRA_08_MIGRATIONS = frozenset({"0001_initial", "0002_tag_taggeditem"})
# Sumatra <= 0.7 kept tags in django-tagging's tables; today's models live in django_store.
LEGACY_TABLES = {
    "tagging_tag": "django_store_tag",
    "tagging_taggeditem": "django_store_taggeditem",
}
TEXT_TYPES = frozenset({"CharField", "SlugField", "URLField", "TextField", "EmailField"})

# Columns whose content has no natural bound: a store will sooner or later hold a longer
# value than any varchar(n) chosen today. The reason is shown by `audit` (risk) and used by
# `widen --policy text`. Keys are today's table and column names.
UNBOUNDED: dict[tuple[str, str], str] = {
    ("django_store_project", "id"): "project name chosen by the user (smt init)",
    ("django_store_project", "name"): "project name chosen by the user",
    ("django_store_record", "label"): "label chosen by the user (smt run --label)",
    ("django_store_record", "main_file"): "file path",
    ("django_store_record", "version"): "version-control revision string",
    ("django_store_record", "tags"): "comma-joined copy of all the record's tags",
    ("django_store_record", "user"): "user name and e-mail address",
    ("django_store_record", "repeats"): "label of another record",
    ("django_store_executable", "path"): "file path",
    ("django_store_executable", "name"): "program name",
    ("django_store_executable", "version"): "version string printed by the program",
    ("django_store_executable", "options"): "command-line options",
    ("django_store_dependency", "name"): "module or package name",
    ("django_store_dependency", "path"): "file path",
    ("django_store_dependency", "version"): "version string",
    ("django_store_dependency", "source"): "URL",
    ("django_store_repository", "url"): "URL or path",
    ("django_store_repository", "upstream"): "URL",
    ("django_store_launchmode", "parameters"): "repr of a dict of launch parameters",
    ("django_store_datastore", "parameters"): "repr of a dict of datastore parameters",
    ("django_store_datakey", "path"): "file path",
    ("django_store_platforminformation", "architecture_bits"): "platform string",
    ("django_store_platforminformation", "architecture_linkage"): "platform string",
    ("django_store_platforminformation", "machine"): "platform string",
    ("django_store_platforminformation", "network_name"): "host name",
    ("django_store_platforminformation", "processor"): "platform string",
    ("django_store_platforminformation", "release"): "kernel release string",
    ("django_store_platforminformation", "system_name"): "platform string",
    ("django_store_platforminformation", "version"): "kernel version string",
    ("django_store_tag", "name"): "tag chosen by the user (smt run --tag)",
}


@dataclass(frozen=True)
class ModelColumn:
    """One column of today's Sumatra schema, as the installed models define it."""

    table: str
    name: str
    field: models.Field = field(repr=False, compare=False)
    internal_type: str  # Django's get_internal_type() of the field (of its target for FKs)
    max_length: int | None  # the varchar(n) a PostgreSQL store gets; None if unbounded
    null: bool
    references: tuple[str, str] | None = None  # (table, column) of a foreign key

    @property
    def is_text(self) -> bool:
        return self.internal_type in TEXT_TYPES

    @property
    def unbounded_reason(self) -> str | None:
        return UNBOUNDED.get((self.table, self.name))


@dataclass(frozen=True)
class ModelTable:
    name: str
    model: type[models.Model] = field(repr=False, compare=False)
    columns: dict[str, ModelColumn] = field(compare=False)
    primary_key: str
    unique_sets: tuple[tuple[str, ...], ...]  # single unique columns and unique_together


def _model_column(table: str, f: models.Field) -> ModelColumn:
    target = f.target_field if f.many_to_one else f
    internal = target.get_internal_type()
    max_length = target.max_length if internal in TEXT_TYPES else None
    references = None
    if f.many_to_one:
        references = (f.related_model._meta.db_table, f.target_field.column)
    return ModelColumn(table, f.column, f, internal, max_length, f.null, references)


@cache
def sumatra_tables() -> dict[str, ModelTable]:
    """Today's Sumatra tables (incl. auto-created M2M tables), keyed by table name."""
    tables: dict[str, ModelTable] = {}
    app = apps.get_app_config(SUMATRA_APP)
    for model in app.get_models(include_auto_created=True):
        meta = model._meta
        columns = {f.column: _model_column(meta.db_table, f) for f in meta.local_fields}
        by_name = {f.name: f.column for f in meta.local_fields}
        unique = [(f.column,) for f in meta.local_fields if f.unique and not f.primary_key]
        unique += [tuple(by_name[n] for n in names) for names in meta.unique_together]
        tables[meta.db_table] = ModelTable(
            meta.db_table, model, columns, meta.pk.column, tuple(unique)
        )
    return tables


@dataclass(frozen=True)
class StoreColumn:
    """A column as the store declares it."""

    name: str
    declared: str  # e.g. "varchar(100)", "text", "double precision"
    internal_type: str  # Django's reading of the declared type, e.g. "CharField"
    max_length: int | None
    null: bool


@dataclass
class StoreTable:
    name: str  # as stored, e.g. tagging_tag
    model: ModelTable  # today's counterpart
    columns: dict[str, StoreColumn]
    unique_sets: set[frozenset[str]]  # column sets the store itself keeps unique

    def enforces_unique(self, columns: tuple[str, ...]) -> bool:
        return frozenset(columns) in self.unique_sets


@dataclass
class Inspection:
    """What a store looks like: its generation and the tables it has."""

    store: Store
    vendor: str  # Django's connection.vendor: "sqlite" or "postgresql"
    layout: str
    tables: dict[str, StoreTable]  # Sumatra's tables, keyed by stored name
    migrations: frozenset[tuple[str, str]]
    table_names: frozenset[str]  # every table in the database
    # Sumatra 0.4-0.6: the TEMP views that show the store in today's shape (generations.py),
    # by stored table name; other connections to the file install them with attach_views.
    views: dict[str, str] = field(default_factory=dict)

    def table_for(self, model_table: str) -> StoreTable | None:
        return next((t for t in self.tables.values() if t.model.name == model_table), None)

    def stored_name(self, model_table: str) -> str:
        table = self.table_for(model_table)
        return table.name if table else model_table


# What a store column's declared type reads when the store lacks it and smtmigrate derives it
DERIVED = "none: this generation lacks it, smtmigrate derives it"
# The columns that tell the generations apart (read before detect_layout is asked).
LAYOUT_COLUMNS = ("django_store_datakey", "django_store_dependency", "django_store_record")


def detect_layout(
    table_names: set[str],
    store_migrations: set[str],
    display: str,
    columns: Mapping[str, Collection[str]] | None = None,
) -> str:
    """Which Sumatra generation wrote the store, from its schema alone; refuse anything else.

    `columns` holds the column names of the LAYOUT_COLUMNS tables; without it a store with
    django-tagging tables is taken for 0.7 (as before 0.4-0.6 were known)."""
    if RECORD_TABLE not in table_names:
        raise NotASumatraStore(
            f"{display}: not a Sumatra record store (no django_store_record table)"
        )
    if "django_store_tag" in table_names and store_migrations >= SUMATRA_08_MIGRATIONS:
        return LAYOUT_08
    columns = columns or {}
    datakey = set(columns.get("django_store_datakey", ()))
    if "tagging_tag" in table_names and not store_migrations:
        if OUTPUT_LINKS in table_names and "output_from_record_id" not in datakey:
            if "source" not in columns.get("django_store_dependency", ()):
                return LAYOUT_04
            if "repeats" not in columns.get("django_store_record", ()):
                return LAYOUT_05
            return LAYOUT_06
        if OUTPUT_LINKS not in table_names and (not columns or "output_from_record_id" in datakey):
            return LAYOUT_07
    raise UnknownLayout(
        f"{display}: Sumatra tables in an unknown layout (tag tables: "
        f"{sorted(t for t in table_names if t.endswith('tag')) or 'none'}; django_store "
        f"migrations: {sorted(store_migrations) or 'none'}; output links: "
        f"{'M2M table' if OUTPUT_LINKS in table_names else 'none'}, DataKey columns: "
        f"{sorted(datakey) or 'unknown'})"
    )


def inspect_store(store: Store) -> Inspection:
    """Connect, detect the layout and read every Sumatra table's real columns."""
    connection = store.connection
    try:
        with connection.cursor() as cursor:
            table_names = set(connection.introspection.table_names(cursor))
            applied: set[tuple[str, str]] = set()
            if MIGRATIONS_TABLE in table_names:
                cursor.execute("SELECT app, name FROM django_migrations")
                applied = {(app, name) for app, name in cursor.fetchall()}
            columns = {
                name: {c.name for c in connection.introspection.get_table_description(cursor, name)}
                for name in LAYOUT_COLUMNS
                if name in table_names
            }
            layout = detect_layout(
                table_names, {n for a, n in applied if a == SUMATRA_APP}, store.display, columns
            )
            views: dict[str, str] = {}
            if layout in OUTPUT_LINK_LAYOUTS:
                from .generations import install_views

                # from here on this connection reads the old tables in today's shape
                views = install_views(connection, cursor, layout, store.display)
            models_by_table = sumatra_tables()
            tables: dict[str, StoreTable] = {}
            for name in sorted(table_names):
                model_name = LEGACY_TABLES.get(name, name) if layout in TAGGING_LAYOUTS else name
                if model_name in models_by_table:
                    tables[name] = _store_table(
                        connection, cursor, name, models_by_table[model_name]
                    )
    except DatabaseError as exc:
        raise store.read_error(exc) from exc
    return Inspection(
        store, connection.vendor, layout, tables, frozenset(applied), frozenset(table_names), views
    )


def _store_table(
    connection: BaseDatabaseWrapper, cursor, name: str, model: ModelTable
) -> StoreTable:
    from .engines import engine_for  # engines read the schema module: imported late

    introspection = connection.introspection
    declared = engine_for(connection).declared_types(cursor, name)
    columns = {}
    for info in introspection.get_table_description(cursor, name):
        if not info.type_code and info.name in model.columns:
            # a column a 0.4-0.6 store lacks, made by its view (generations.py): untyped
            internal, stated = model.columns[info.name].internal_type, DERIVED
        else:
            internal = introspection.get_field_type(info.type_code, info)
            stated = declared.get(info.name, str(info.type_code))
        size = info.display_size if internal in ("CharField", "SlugField") else None
        columns[info.name] = StoreColumn(
            info.name,
            stated,
            internal,
            size if size and size > 0 else None,
            bool(info.null_ok),
        )
    unique_sets = {
        frozenset(c["columns"])
        for c in introspection.get_constraints(cursor, name).values()
        if c["unique"] or c["primary_key"]
    }
    return StoreTable(name, model, columns, unique_sets)


def model_db_type(column: ModelColumn, connection: BaseDatabaseWrapper) -> str:
    """The type today's model gives the column on this connection's database."""
    return column.field.db_type(connection) or ""

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
from typing import TYPE_CHECKING

from django.db import DatabaseError
from django.db.backends.base.base import BaseDatabaseWrapper

from .errors import NotASumatraStore, UnknownLayout
from .layout import Inspection, StoreColumn, StoreTable
from .tables import (
    CONTENT_TYPE_TABLE,
    LAYOUT_04,
    LAYOUT_05,
    LAYOUT_06,
    LAYOUT_07,
    LAYOUT_08,
    LEGACY_TABLES,
    MIGRATIONS_TABLE,
    OUTPUT_LINK_LAYOUTS,
    OUTPUT_LINKS,
    RECORD_TABLE,
    SUMATRA_08_MIGRATIONS,
    SUMATRA_APP,
    TAGGING_LAYOUTS,
    TEXT_TYPES,
    UNBOUNDED,
    ModelColumn,
    ModelTable,
    sumatra_tables,
)

if TYPE_CHECKING:
    from .engines.base import TableFacts
    from .locations import Store

# Defined in tables.py and layout.py (the values below the engines); read from here too.
__all__ = [
    "CONTENT_TYPE_TABLE",
    "DERIVED",
    "LAYOUT_04",
    "LAYOUT_05",
    "LAYOUT_06",
    "LAYOUT_07",
    "LAYOUT_08",
    "LAYOUT_COLUMNS",
    "LEGACY_TABLES",
    "MIGRATIONS_TABLE",
    "OUTPUT_LINKS",
    "OUTPUT_LINK_LAYOUTS",
    "RECORD_TABLE",
    "SUMATRA_08_MIGRATIONS",
    "SUMATRA_APP",
    "TAGGING_LAYOUTS",
    "TEXT_TYPES",
    "UNBOUNDED",
    "Inspection",
    "ModelColumn",
    "ModelTable",
    "StoreColumn",
    "StoreTable",
    "detect_layout",
    "inspect_store",
    "model_db_type",
    "sumatra_tables",
]

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
            models_by_table = sumatra_tables()
            described = sorted(
                name
                for name in table_names
                if name in LAYOUT_COLUMNS
                or name in models_by_table
                or LEGACY_TABLES.get(name, name) in models_by_table
            )
            facts = store.engine.table_facts(connection, cursor, described)
            columns = {
                name: {c.name for c in facts[name].description}
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
                views = install_views(store, cursor, layout)
                facts = store.engine.table_facts(connection, cursor, described)  # the views'
            tables: dict[str, StoreTable] = {}
            for name in sorted(table_names):
                model_name = LEGACY_TABLES.get(name, name) if layout in TAGGING_LAYOUTS else name
                if model_name in models_by_table:
                    tables[name] = _store_table(
                        store, name, models_by_table[model_name], facts[name]
                    )
    except DatabaseError as exc:
        raise store.read_error(exc) from exc
    return Inspection(
        store, connection.vendor, layout, tables, frozenset(applied), frozenset(table_names), views
    )


def _store_table(store: Store, name: str, model: ModelTable, facts: TableFacts) -> StoreTable:
    introspection = store.connection.introspection
    declared = facts.declared
    columns = {}
    for info in facts.description:
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
    return StoreTable(name, model, columns, facts.unique_sets)


def model_db_type(column: ModelColumn, connection: BaseDatabaseWrapper) -> str:
    """The type today's model gives the column on this connection's database."""
    return column.field.db_type(connection) or ""

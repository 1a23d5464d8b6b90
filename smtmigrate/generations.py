"""Stores of Sumatra 0.4-0.6, read in today's (0.8) shape through temporary views.

Those releases (Django <= 1.6, syncdb) wrote the same tables as today with fewer columns,
and kept a record's outputs in the M2M table `django_store_record_output_data` instead of
`DataKey.output_from_record`. Rather than teach every reader (copy streams, row
checksums, the record-level check through Sumatra's models) about them, a connection that
reads such a store gets TEMP views named like the tables: SQLite resolves an unqualified
name in `temp` before `main`, so every query sees today's columns while the file is only
read (temp views need no write access to it).

What each missing column becomes is what today's Sumatra gives a record that lacks it:
  * `Record.repeats` (0.6+), `Dependency.source`, `Repository.upstream` (0.5+),
    `DataKey.creation` (0.7+): NULL. Today's models declare them null=True, and
    Sumatra 0.8.1 writes NULL itself for a record that is no repeat, a dependency without
    a source, a repository without upstream, a key made without a creation time.
  * `DataKey.output_from_record`: the record that links to the key in the M2M table.
    Those releases' `get_or_create` shares one DataKey row between all records whose
    outputs had the same (path, digest, metadata), e.g. two runs with equal parameters;
    today one row names one record. The record with the lowest id keeps the original row
    (and its id, which inputs keep pointing at); each further record gets a copy of the
    row with a new id: the store's largest DataKey id plus the id of the link row. No
    output is lost or re-pointed, and Sumatra 0.8.1 reads every record's outputs as the
    old release did.
A column a store lacks that today's model requires (NOT NULL) is never invented: the
copy refuses it (copy.plan_copy).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import UnknownLayout
from .tables import LEGACY_TABLES, OUTPUT_LINKS, sumatra_tables

if TYPE_CHECKING:
    from .locations import Store

DATAKEY = "django_store_datakey"
# Tables whose rows the copy carries into other tables (not copied as themselves).
FOLDED_TABLES = {OUTPUT_LINKS: f"{DATAKEY}.output_from_record_id (one DataKey row per output link)"}


def _quote(name: str) -> str:
    """SQLite's quoting (the engines read this module: imported late)."""
    from .engines import SQLITE

    return SQLITE.quote_name(name)


def view_statements(
    table_names: set[str], columns_of: Callable[[str], list[str]]
) -> dict[str, str]:
    """`CREATE TEMP VIEW` text (with `{schema}` for the schema the tables are in) for every
    Sumatra table of the store that lacks some of today's nullable columns, by table."""
    statements = {}
    for model in sumatra_tables().values():
        stored = {v: k for k, v in LEGACY_TABLES.items()}.get(model.name, model.name)
        if stored not in table_names:
            continue
        present = columns_of(stored)
        missing = [c for c in model.columns.values() if c.name not in present and c.null]
        if not missing:
            continue
        if model.name == DATAKEY and OUTPUT_LINKS in table_names:
            select = _datakey_select(present, [c.name for c in missing])
        else:
            nulls = ", ".join(f"NULL AS {_quote(c.name)}" for c in missing)
            select = f"SELECT *, {nulls} FROM {{schema}}.{_quote(stored)}"
        statements[stored] = f"CREATE TEMP VIEW IF NOT EXISTS {_quote(stored)} AS {select}"
    return statements


def _datakey_select(present: list[str], missing: list[str]) -> str:
    """DataKey rows with `output_from_record_id` from the M2M output links (see above):
    keys no record outputs, each key with its first record, a copy per further record.

    Three arms of joins and EXISTS (no window function), so that SQLite pushes a filter on
    `id` or `output_from_record_id` (the record-level check reads keys chunk by chunk) down
    to the primary key and the links' indexes. A copy's id is the store's largest DataKey
    id plus the link's own id: unique, above every original id, the same on every read."""
    k, links = "{schema}." + _quote(DATAKEY), "{schema}." + _quote(OUTPUT_LINKS)

    def columns(new_id: str, record: str) -> str:
        names = present + missing
        values = [new_id if c == "id" else f"k.{_quote(c)}" for c in present]
        values += [record if c == "output_from_record_id" else "NULL" for c in missing]
        return ", ".join(f"{v} AS {_quote(n)}" for v, n in zip(values, names, strict=True))

    linked = f"FROM {links} l JOIN {k} k ON k.id = l.datakey_id"
    earlier = (
        f"EXISTS (SELECT 1 FROM {links} m WHERE m.datakey_id = l.datakey_id "
        "AND m.record_id < l.record_id)"
    )
    return (
        f"SELECT {columns('k.id', 'NULL')} FROM {k} k "
        f"WHERE NOT EXISTS (SELECT 1 FROM {links} m WHERE m.datakey_id = k.id) "
        f"UNION ALL SELECT {columns('k.id', 'l.record_id')} {linked} WHERE NOT {earlier} "
        f"UNION ALL SELECT {columns(f'(SELECT max(id) FROM {k}) + l.id', 'l.record_id')} "
        f"{linked} WHERE {earlier}"
    )


def install_views(store: Store, cursor, layout: str) -> dict[str, str]:
    """Give the store's Django connection (an SQLite store of `layout`) today's shape;
    returns the view statements, for other connections to the same file (`attach_views`)."""
    connection, display = store.connection, store.display
    if not store.engine.is_file:
        raise UnknownLayout(
            f"{display}: a {layout} store outside SQLite; smtmigrate reads that generation "
            "from its SQLite file only"
        )
    tables = set(connection.introspection.table_names(cursor))

    def columns_of(table: str) -> list[str]:
        return [c.name for c in connection.introspection.get_table_description(cursor, table)]

    statements = view_statements(tables, columns_of)
    for statement in statements.values():
        cursor.execute(statement.format(schema="main"))
    return statements

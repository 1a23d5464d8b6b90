"""What `inspect_store` reads of a PostgreSQL store's tables, in three catalog queries.

Django's introspection asks per table: its columns (two queries: pg_attribute, then a
`SELECT * … LIMIT 1` for the cursor's description), its declared types, its constraints
and its indexes (two more): about 75 round trips for Sumatra's 15 tables, a fifth of a
second of a small store's move. Here the same answers come from pg_attribute, pg_constraint
and pg_index for every table at once, built as Django builds them (`FieldInfo`s; the column
sets a table keeps unique, as `Engine.unique_sets` reads `get_constraints`);
tests/engines/test_postgresql_catalog.py compares them with Django's on real stores.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db.backends.postgresql.introspection import FieldInfo

from .base import TableFacts

NUMERIC = 1700  # pg_type oid: psycopg2 reads a numeric's precision and scale from its typmod
VARHDRSZ = 4  # what a typmod counts beyond the size it declares


# A column as a query's result describes it (what Django's `SELECT * … LIMIT 1` reads):
# PostgreSQL sends a domain's base type and typmod (printtup.c), libpq the type's length.
_COLUMNS = """
SELECT c.relname, a.attname,
    CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END,
    CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END,
    CASE WHEN t.typtype = 'd' THEN b.typlen ELSE t.typlen END,
    NOT (a.attnotnull OR (t.typtype = 'd' AND t.typnotnull)),
    pg_get_expr(ad.adbin, ad.adrelid),
    CASE WHEN co.collname = 'default' THEN NULL ELSE co.collname END,
    a.attidentity != '',
    col_description(a.attrelid, a.attnum),
    format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_type b ON b.oid = t.typbasetype
LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
LEFT JOIN pg_collation co ON co.oid = a.attcollation
WHERE c.relname = ANY(%s) AND c.relkind IN ('f', 'm', 'p', 'r', 'v')
    AND n.nspname NOT IN ('pg_catalog', 'pg_toast') AND pg_table_is_visible(c.oid)
    AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY c.relname, a.attnum
"""

# Unique and primary-key constraints: their columns, in the key's order.
_CONSTRAINTS = """
SELECT cl.relname, c.conname, c.contype IN ('p', 'u'),
    array(SELECT ca.attname FROM unnest(c.conkey) WITH ORDINALITY k(attnum, i)
          JOIN pg_attribute ca ON ca.attrelid = c.conrelid AND ca.attnum = k.attnum
          ORDER BY k.i)
FROM pg_constraint c JOIN pg_class cl ON cl.oid = c.conrelid
WHERE cl.relname = ANY(%s) AND pg_table_is_visible(cl.oid)
"""

# Every index (Django lists those no constraint of the same name covers): the columns of
# its key, NULL for an expression.
_INDEXES = """
SELECT c.relname, ic.relname, i.indisunique OR i.indisprimary,
    array(SELECT ca.attname FROM unnest(i.indkey) WITH ORDINALITY k(attnum, n)
          LEFT JOIN pg_attribute ca ON ca.attrelid = i.indrelid AND ca.attnum = k.attnum
          ORDER BY k.n)
FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_class ic ON ic.oid = i.indexrelid
WHERE c.relname = ANY(%s) AND pg_table_is_visible(c.oid)
"""


def _sizes(type_oid: int, typmod: int, length: int) -> tuple[int, int | None, int | None]:
    """(internal_size, precision, scale) as psycopg2 describes a result column."""
    modifier = typmod - VARHDRSZ if typmod > 0 else typmod
    if type_oid == NUMERIC:  # an unconstrained one (typmod -1) too: 65535, 65535
        precision, scale = (modifier >> 16) & 0xFFFF, modifier & 0xFFFF
        return (precision if typmod > 0 else length), precision, scale
    return (modifier if length == -1 else length), None, None


def table_facts(cursor, tables: Sequence[str]) -> dict[str, TableFacts]:
    """Every table's columns, declared types and unique column sets, by three queries;
    a name that is no visible table or view is left out."""
    names = list(tables)
    facts: dict[str, TableFacts] = {}
    cursor.execute(_COLUMNS, [names])
    for row in cursor.fetchall():
        table, name, type_oid, typmod, length, null_ok, default, collation = row[:8]
        is_autofield, comment, declared = row[8:]
        size, precision, scale = _sizes(type_oid, typmod, length)
        here = facts.setdefault(table, TableFacts([], {}, set()))
        here.description.append(
            FieldInfo(
                name,
                type_oid,
                size,  # display_size is always None on psycopg2: Django takes internal_size
                size,
                precision,
                scale,
                null_ok,
                default,
                collation,
                is_autofield,
                comment,
            )
        )
        here.declared[name] = declared
    constraints: dict[str, set[str]] = {}
    cursor.execute(_CONSTRAINTS, [names])
    for table, name, unique, columns in cursor.fetchall():
        constraints.setdefault(table, set()).add(name)
        if unique and table in facts:
            facts[table].unique_sets.add(frozenset(columns))
    cursor.execute(_INDEXES, [names])
    for table, name, unique, columns in cursor.fetchall():
        if unique and table in facts and name not in constraints.get(table, ()):
            facts[table].unique_sets.add(frozenset(columns if columns != [None] else []))
    return facts

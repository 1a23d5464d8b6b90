"""PostgreSQL's catalog queries (engines/postgresql_catalog.py) give what Django's
introspection gives, table by table, on real stores: one built by Sumatra's migrations, one
copied by smtmigrate (widened, with its get_or_create identities: expression indexes), and
a table of the types and indexes Sumatra never makes (domains, numerics, arrays, partial,
INCLUDE and expression unique indexes, a view)."""

from __future__ import annotations

import pytest

from smtmigrate.engines.base import Engine
from smtmigrate.engines.postgresql_catalog import table_facts
from smtmigrate.locations import resolve

from ..conftest import pg_query

pytestmark = pytest.mark.pg

ODD = [
    "CREATE DOMAIN short_label AS varchar(7) NOT NULL",
    "CREATE TABLE odd (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
    "a numeric, b numeric(10, 2), c varchar, d char(3), e bit varying(5), f time(3), "
    "g short_label, h int[], i varchar(4)[], j text COLLATE \"C\" DEFAULT 'x', "
    "k integer NOT NULL, l integer, UNIQUE (k, l), CHECK (k > 0))",
    "COMMENT ON COLUMN odd.c IS 'a comment'",
    "CREATE UNIQUE INDEX odd_expression ON odd (lower(c))",
    "CREATE UNIQUE INDEX odd_mixed ON odd (k, lower(c))",
    "CREATE UNIQUE INDEX odd_partial ON odd (l) WHERE l > 0",
    "CREATE UNIQUE INDEX odd_include ON odd (d) INCLUDE (e)",
    "CREATE INDEX odd_plain ON odd (f)",
    "ALTER TABLE odd DROP COLUMN l",  # a dropped column, and the indexes on it with it
    "CREATE VIEW odd_view AS SELECT id, b, g FROM odd",
]


def djangos(store, names):
    """Django's introspection, table by table: the oracle."""
    connection, engine = store.connection, store.engine
    with connection.cursor() as cursor:
        return {
            name: (
                connection.introspection.get_table_description(cursor, name),
                engine.declared_types(cursor, name),
                Engine.unique_sets(engine, connection, cursor, name),
            )
            for name in names
        }


@pytest.mark.parametrize("made_by", ["sumatra", "copy"])
def test_catalog_queries_give_djangos_introspection(made_by, request, cli, store08):
    if made_by == "sumatra":
        url = request.getfixturevalue("sumatra_pg")
    else:
        url = request.getfixturevalue("pg_database")
        assert cli("copy", store08, url, "--widen").code == 0
    for statement in ODD:
        pg_query(url, statement)
    with resolve(url) as store:
        connection = store.connection
        with connection.cursor() as cursor:
            names = connection.introspection.table_names(cursor, include_views=True)
        assert {"odd", "odd_view", "django_store_record"} <= set(names)
        expected = djangos(store, names)
        with connection.cursor() as cursor:
            ours = table_facts(cursor, [*names, "no_such_table"])
            assert store.engine.table_facts(connection, cursor, names) == ours
    assert set(ours) == set(names)  # a missing table is left out
    for name in names:
        description, declared, unique_sets = expected[name]
        assert ours[name].description == description, name
        assert ours[name].declared == declared, name
        assert ours[name].unique_sets == unique_sets, name
    odd = ours["odd"].unique_sets
    assert {frozenset({"id"}), frozenset(), frozenset({"k", None}), frozenset({"d", "e"})} <= odd
    if made_by == "copy":
        identities = [n for n in names if n.startswith("django_store_")]
        assert any(len(ours[n].unique_sets) > 1 for n in identities)

"""A MariaDB server as smtmigrate reaches it apart from a store's database: a connection to
no database (to create and drop them), the tables a database holds, a scratch database's
name. Read by the engine, its copy target (mariadb_load.py) and the admin layer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from django.db import DatabaseError

if TYPE_CHECKING:
    from ..locations import Store

PARTIAL_PREFIX = "smtmigrate_partial_"  # a copy's scratch database: PARTIAL_PREFIX + name


def database_tables(store: Store) -> int | None:
    """How many tables the store's database holds; None when it does not exist."""
    with server_store(store) as server, server.connection.cursor() as cursor:
        try:
            cursor.execute(
                "SELECT count(t.table_name) FROM information_schema.schemata s "
                "LEFT JOIN information_schema.tables t ON t.table_schema = s.schema_name "
                "WHERE s.schema_name = %s GROUP BY s.schema_name",
                [store.settings["NAME"]],
            )
            row = cursor.fetchone()
        except DatabaseError as exc:
            raise store.read_error(exc) from exc
    return None if row is None else int(row[0])


def server_url(url: str) -> str:
    """An --admin URL names a server, not a database: `mysql://root@localhost` is enough
    (it connects to the `mysql` database)."""
    scheme, _, rest = url.partition("://")
    if rest and "/" not in rest.rstrip("/"):
        return f"{scheme}://{rest.rstrip('/')}/mysql"
    return url


@contextmanager
def server_store(store: Store) -> Iterator[Store]:
    """The same server and user, connected to no database (to create and drop them)."""
    with store.sibling(store.display, {**store.settings, "NAME": ""}) as server:
        yield server

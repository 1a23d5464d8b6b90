"""PgBouncer's admin console (the `pgbouncer` database): the project's own PgBouncer, as the
store's role (`admin_users` in its ini file), and any PgBouncer a store's URL leads to, as
`headroom` asks it how many more clients it takes.

Below pooler.py and headroom.py alike: both ask the console, neither is asked by it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .pooler_config import WILDCARDS, parse_listen, read_auth, url_host

if TYPE_CHECKING:
    from .locations import Store


def admin_connection(folder: Path, state: dict) -> Any:
    """A connection to PgBouncer's admin console, as the store's role (a stats user)."""
    import psycopg2

    host, port = parse_listen(state["listen"])
    role, password = read_auth(folder)
    connection = psycopg2.connect(
        dbname="pgbouncer",
        host=url_host(host) if host not in WILDCARDS else "127.0.0.1",
        port=port,
        user=role,
        password=password,
        connect_timeout=5,
    )
    connection.autocommit = True
    return connection


def show(connection: Any, what: str) -> list[dict]:
    with connection.cursor() as cursor:
        cursor.execute(f"SHOW {what}")  # a fixed word: POOLS, CLIENTS, LISTS, CONFIG
        names = [column.name for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def pooler_clients(store: Store, server_port: int) -> int | None:
    """Behind a PgBouncer: how many more clients it takes (None: not a PgBouncer we can
    ask). Only asked when the URL's port is not the server's own, i.e. something sits
    between; its admin console answers the store's role when it is a stats user (as
    `pooler` configures it)."""
    import psycopg2

    s = store.settings
    port = str(s.get("PORT") or "")
    if not port or int(port) == server_port:
        return None
    try:
        connection = psycopg2.connect(
            dbname="pgbouncer",
            host=s.get("HOST") or None,
            port=port,
            user=s.get("USER") or None,
            # the password libpq found for the store (URL, PGPASSWORD, ~/.pgpass): a
            # ~/.pgpass line names the store's database, not `pgbouncer`
            password=store.connection.connection.info.password or None,
            connect_timeout=3,
        )
    except psycopg2.Error:
        return None
    try:
        connection.autocommit = True
        config = {row["key"]: row["value"] for row in show(connection, "CONFIG")}
        lists = {row["list"]: int(row["items"]) for row in show(connection, "LISTS")}
    except psycopg2.Error:
        return None
    finally:
        connection.close()
    # our own admin connection is one of the used clients
    return max(int(config["max_client_conn"]) - lists.get("used_clients", 0) + 1, 0)

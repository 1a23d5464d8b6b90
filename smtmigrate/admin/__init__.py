"""Administrative workflows on a database server: creating and dropping a store's database
and role, building Sumatra's widened schema in a new one. One interface (`base.ServerAdmin`)
with one implementation per vendor (`postgresql.py`: `Admin` from the maintenance database;
`mariadb.py`: a server connection, no transactional DDL), above the engines and the library
they call; the commands (createdb, drop-recreate) and move ask `admin_for(store)`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..locations import Store
    from .base import ServerAdmin


def admin_for(store: Store) -> ServerAdmin:
    """The admin of the store's server, by its kind as `engines.engine_for` picks an engine
    (PostgreSQL's for anything else: it refuses a URL that is not PostgreSQL's)."""
    from .mariadb import MariadbAdmin
    from .postgresql import PostgresAdmin

    admins: dict[str, type[ServerAdmin]] = {"mariadb": MariadbAdmin}
    return admins.get(store.kind, PostgresAdmin)()

"""How many `smt run`s a store's server can hold at once.

Each `smt run` opens one connection when it starts and keeps it, idle, for its whole life
(Sumatra 0.8.1: no pooling, no CONN_MAX_AGE). So the jobs a server takes at once are the
connections it has free: PostgreSQL's `max_connections` less the slots it reserves
(`superuser_reserved_connections`, and `reserved_connections` on 16+, for roles that cannot
use them) and those in use, within the role's and the database's own limits; MariaDB's
`max_connections` less `Threads_connected`, within `max_user_connections`. Past that a
run waits in `Project.add_record`'s retries (5 s apart) or, on its later saves, crashes.
Behind a PgBouncer in transaction mode the jobs share the pool's few server connections.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import StoreConnectionError
from .locations import Store


@dataclass
class Headroom:
    """A server's connection budget, as seen by the store's role."""

    kind: str  # "postgresql" or "mariadb"
    display: str
    max_connections: int
    reserved: int  # slots this role cannot use (superuser_reserved + reserved_connections)
    in_use: int  # client connections open now, ours not counted
    limits: list[tuple[str, int, int]] = field(default_factory=list)  # (what, limit, in use)
    pooler_clients: int | None = None  # behind a PgBouncer: clients it takes (None: direct)
    version: int = 0  # server_version_num (PostgreSQL)
    poolable: bool = True  # a PgBouncer can stand in front (the engine's has_pooler)

    @property
    def free(self) -> int:
        """Connections the role can still open: the jobs that can run at once."""
        free = self.max_connections - self.reserved - self.in_use
        for _, limit, used in self.limits:
            free = min(free, limit - used)
        return max(free, 0)

    @property
    def jobs(self) -> int:
        return self.pooler_clients if self.pooler_clients is not None else self.free

    def exceeded_by(self, jobs: int | None) -> bool:
        return jobs is not None and jobs > self.jobs

    @property
    def advice(self) -> str:
        """What lets more jobs in."""
        if self.pooler_clients is not None:
            return "raise the pooler's max_client_conn (smtmigrate pooler … --max-clients)"
        server_free = self.max_connections - self.reserved - self.in_use
        binding = [what for what, limit, used in self.limits if limit - used < server_free]
        if binding and not self.poolable:
            return f"raise {' and '.join(binding)}; MariaDB has no PgBouncer"
        if binding:
            return (
                "put a PgBouncer in front (smtmigrate pooler PROJECT --listen HOST:PORT, or "
                f"move … --pooler HOST:PORT), or raise {' and '.join(binding)}"
            )
        if not self.poolable:
            return (
                "raise max_connections (SET GLOBAL max_connections = …, and in the server's "
                "[mysqld] section to keep it) and max_user_connections if set; MariaDB has "
                "no PgBouncer"
            )
        return (
            "put a PgBouncer in front (smtmigrate pooler PROJECT --listen HOST:PORT, or "
            "move … --pooler HOST:PORT): the jobs then share a few server connections; or "
            "raise max_connections (a server restart)"
        )

    def to_dict(self, jobs: int | None = None) -> dict:
        return {
            "store": self.display,
            "kind": self.kind,
            "max_connections": self.max_connections,
            "reserved": self.reserved,
            "in_use": self.in_use,
            "limits": [{"limit": w, "max": m, "in_use": u} for w, m, u in self.limits],
            "pooler_clients": self.pooler_clients,
            "parallel_jobs": self.jobs,
            "expected_jobs": jobs,
            "exceeded": self.exceeded_by(jobs),
            "advice": self.advice if self.exceeded_by(jobs) else None,
        }


_PG_QUERY = """
SELECT current_setting('max_connections')::int,
       r.rolsuper,
       current_setting('superuser_reserved_connections')::int,
       coalesce((SELECT setting::int FROM pg_settings WHERE name = 'reserved_connections'), 0),
       pg_has_role(current_user, 'pg_use_reserved_connections', 'MEMBER')
           AND current_setting('server_version_num')::int >= 160000,
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend') - 1,
       r.rolconnlimit,
       (SELECT count(*) FROM pg_stat_activity
         WHERE backend_type = 'client backend' AND usename = current_user) - 1,
       d.datconnlimit,
       (SELECT count(*) FROM pg_stat_activity
         WHERE backend_type = 'client backend' AND datname = current_database()) - 1,
       current_setting('server_version_num')::int,
       current_setting('port')::int
  FROM pg_roles r, pg_database d
 WHERE r.rolname = current_user AND d.datname = current_database()
"""
# pg_use_reserved_connections exists from 16 on; before, pg_has_role would fail on it.
_PG_QUERY_15 = _PG_QUERY.replace(
    "pg_has_role(current_user, 'pg_use_reserved_connections', 'MEMBER')\n"
    "           AND current_setting('server_version_num')::int >= 160000",
    "false",
)


def read_headroom(store: Store) -> Headroom | None:
    """The headroom of the store's server (None for SQLite: no server, no limit).
    Connects as the store's role; a database that does not exist yet is looked at from
    the server's maintenance database (`postgres`), as `move` does before creating it."""
    from .engines import MARIADB

    if store.engine.is_file:
        return None
    if store.engine is MARIADB:  # its own variables (_mariadb_limits)
        return _mariadb_headroom(store)
    try:
        store.connection  # noqa: B018 (connects)
    except StoreConnectionError:
        with Store(
            "postgresql", store.display, {**store.settings, "NAME": "postgres"}
        ) as maintenance:
            return _pg_headroom(maintenance, store)
    return _pg_headroom(store, store)


def headroom_if_reachable(store: Store) -> Headroom | None:
    """`read_headroom`, or None when the server cannot be asked (a role still to create):
    the report is advice, the command goes on and says what fails itself."""
    try:
        return read_headroom(store)
    except StoreConnectionError:
        return None


def _pg_headroom(store: Store, named: Store) -> Headroom:
    from django.db import DatabaseError

    connection = store.connection
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('server_version_num')::int")
            version = int(cursor.fetchone()[0])
            cursor.execute(_PG_QUERY if version >= 160000 else _PG_QUERY_15)
            row = cursor.fetchone()
    except DatabaseError as exc:
        raise store.read_error(exc) from exc
    (
        limit,
        superuser,
        su_reserved,
        reserved_connections,
        may_use_reserved,
        in_use,
        role_limit,
        role_used,
        db_limit,
        db_used,
        version,
        server_port,
    ) = row
    reserved = 0 if superuser else su_reserved + (0 if may_use_reserved else reserved_connections)
    limits = []
    if role_limit >= 0:
        limits.append(("the role's CONNECTION LIMIT", role_limit, role_used))
    if db_limit >= 0:
        limits.append(("the database's CONNECTION LIMIT", db_limit, db_used))
    headroom = Headroom(
        "postgresql", named.display, limit, reserved, max(in_use, 0), limits, version=version
    )
    from .pooler_console import pooler_clients

    headroom.pooler_clients = pooler_clients(store, server_port)
    return headroom


def _mariadb_headroom(named: Store) -> Headroom:
    from django.db import DatabaseError

    from .engines.mariadb import server_store

    with server_store(named) as store:  # the database may not exist yet (move)
        return _mariadb_limits(store, named, DatabaseError)


def _mariadb_limits(store: Store, named: Store, database_error: type[Exception]) -> Headroom:
    try:
        with store.connection.cursor() as cursor:
            cursor.execute(
                "SELECT @@GLOBAL.max_connections, @@GLOBAL.max_user_connections, "
                "(SELECT variable_value FROM information_schema.global_status "
                "WHERE variable_name = 'THREADS_CONNECTED'), "
                "(SELECT count(*) FROM information_schema.processlist "
                "WHERE user = SUBSTRING_INDEX(CURRENT_USER(), '@', 1))"
            )
            limit, user_limit, connected, user_connected = (int(v) for v in cursor.fetchone())
    except database_error as exc:
        raise store.read_error(exc) from exc
    # MariaDB keeps one extra connection for SUPER (CONNECTION ADMIN) users beyond
    # max_connections: nothing a job can count on, so not counted.
    limits = []
    if user_limit > 0:
        limits.append(("max_user_connections", user_limit, max(user_connected - 1, 0)))
    return Headroom(
        "mariadb", named.display, limit, 0, max(connected - 1, 0), limits, poolable=False
    )

"""A unique identity on every table Sumatra fills with `get_or_create`, so that parallel
`smt run`s cannot create the same shared row twice.

Sumatra 0.8.1 saves a record's shared rows with `get_or_create(**every field but id and
the reverse relations)` (dedupe.py's docstring). Without a unique constraint two jobs
both miss the `get` and both insert; every later `get` raises MultipleObjectsReturned.
With one, the second INSERT fails with an IntegrityError and Django's `get_or_create`
(5.2: `QuerySet.get_or_create`) answers it with a second `get`: the job gets the
winner's row.

The identity must be exactly Sumatra's `=`: Django's `field=value` is SQL `=` and
`field=None` is `IS NULL` (NULL equal to NULL). Columns are long (TextField) and
nullable, so neither engine can put a plain UNIQUE on them:

- PostgreSQL: one unique index per table (`smtmigrate_identity_<table>`) on one
  expression per column, the same on every server version: a text column as
  `coalesce(md5(col::text), '')` (an md5 is 32 hex digits, never '': NULL stays apart
  from every value and equal to NULL), a timestamp as `(col IS NULL), coalesce(col,
  '-infinity')`. Built `CONCURRENTLY` on a live store; inside a copy's transaction
  plainly, after the load.
- MariaDB: a generated column `smtmigrate_identity` = md5 of the columns' md5s
  (`'-'` for NULL; a CHAR column as `rtrim(col)`, its value as read) with a unique key
  on it: VIRTUAL (added instantly, its key built online), STORED if the server refuses.
  `=` agrees with md5 only under a binary, NO PAD collation (what smtmigrate's MariaDB
  tables have: mariadb_findings.COLLATION); a table under another collation gets no
  identity and a finding instead.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError

from .engines.mariadb_findings import NO_COLLISIONS
from .errors import Refused, SmtmigrateError
from .locations import Store
from .schema import Inspection, StoreTable

# Today's table → the columns Sumatra's get_or_create compares (dedupe.py's docstring;
# tests check it against the installed Sumatra: dedupe.sumatra_identity).
IDENTITY: dict[str, tuple[str, ...]] = {
    "django_store_executable": ("path", "name", "version", "options"),
    "django_store_repository": ("type", "url", "upstream"),
    "django_store_launchmode": ("type", "parameters"),
    "django_store_datastore": ("type", "parameters"),
    "django_store_parameterset": ("type", "content"),
    "django_store_dependency": ("name", "path", "version", "diff", "source", "module"),
    "django_store_platforminformation": (
        "architecture_bits",
        "architecture_linkage",
        "machine",
        "network_name",
        "ip_addr",
        "processor",
        "release",
        "system_name",
        "version",
    ),
    # output_from_record_id is set after the lookup (Sumatra's save), so it is no part of it
    "django_store_datakey": ("path", "digest", "creation", "metadata"),
}
# Columns a row must have (NOT NULL) for the identity to apply to it. Every datastore of
# Sumatra 0.7+ sets a DataKey's `creation` (the file's ctime), so no run looks a key up
# with creation NULL; stores of Sumatra 0.4-0.6 have no such column, and a copy gives
# each record its own row of an output they shared (generations.py): equal keys, NULL
# creation, different records, which no identity may forbid.
REQUIRED: dict[str, tuple[str, ...]] = {"django_store_datakey": ("creation",)}
INDEX_PREFIX = "smtmigrate_identity_"
COLUMN = "smtmigrate_identity"  # MariaDB's generated hash column
MAX_NAME = 63  # PostgreSQL's NAMEDATALEN - 1 (MariaDB allows 64)
LOCK_TIMEOUT = 5.0  # seconds a short lock is waited for before giving way to the jobs
LOCK_ATTEMPTS = 5
PG_LOCK_NOT_AVAILABLE = "55P03"
PG_UNIQUE_VIOLATION = "23505"
MARIADB_DUPLICATE = 1062  # ER_DUP_ENTRY
MARIADB_LOCK_WAIT = 1205
MARIADB_NOT_ONLINE = {1845, 1846}
ONLINE = "ALGORITHM=INPLACE, LOCK=NONE"


def index_name(table: str) -> str:
    name = f"{INDEX_PREFIX}{table}"
    if len(name) > MAX_NAME:
        raise ValueError(f"identity name {name!r} is longer than {MAX_NAME} characters")
    return name


def identity_columns(table: StoreTable) -> tuple[str, ...] | None:
    """The identity's columns of this stored table, or None when it has none (not a
    get_or_create table, or a store generation lacking one of them)."""
    columns = IDENTITY.get(table.model.name)
    if columns is None or not all(c in table.columns for c in columns):
        return None
    return columns


def is_timestamp(table: StoreTable, column: str) -> bool:
    return table.model.columns[column].internal_type == "DateTimeField"


def required_columns(table: StoreTable) -> tuple[str, ...]:
    """The columns whose NULL puts a row outside the identity (REQUIRED)."""
    return REQUIRED.get(table.model.name, ())


def applies_sql(table: StoreTable, quote) -> str | None:
    """The condition of the rows the identity covers, or None for all rows."""
    required = required_columns(table)
    return " AND ".join(f"{quote(c)} IS NOT NULL" for c in required) or None


# -- the SQL ---------------------------------------------------------------------------------


def postgres_index(table: StoreTable, *, concurrently: bool) -> str:
    """CREATE UNIQUE INDEX of the table's identity (dedupe.py: NULL equal to NULL)."""
    from .engines import ENGINES

    q = ENGINES["postgresql"].quote_name
    parts = []
    required = required_columns(table)
    for column in identity_columns(table) or ():
        if column in required:
            parts.append(q(column))
        elif is_timestamp(table, column):
            parts += [f"({q(column)} IS NULL)", f"coalesce({q(column)}, '-infinity')"]
        else:  # ::text: an inet ip_addr, or a column widened to text, hash as their text
            parts.append(f"coalesce(md5({q(column)}::text), '')")
    how = " CONCURRENTLY" if concurrently else ""
    where = applies_sql(table, q)
    return (
        f"CREATE UNIQUE INDEX{how} {q(index_name(table.name))} ON {q(table.name)} "
        f"({', '.join(parts)})" + (f" WHERE {where}" if where else "")
    )


def mariadb_hash(table: StoreTable) -> str:
    from .engines import ENGINES

    q = ENGINES["mariadb"].quote_name
    parts = []
    for column in identity_columns(table) or ():
        value = q(column)
        if table.columns[column].declared.lower().startswith("char"):
            # a CHAR (ip_addr) in an indexed generated column must not depend on
            # PAD_CHAR_TO_FULL_LENGTH (error 1901): its value as read, trailing spaces off
            value = f"rtrim({value})"
        parts.append(f"coalesce(md5({value}), '-')")
    digest = f"md5(concat({', '.join(parts)}))"
    where = applies_sql(table, q)
    return f"IF({where}, {digest}, NULL)" if where else digest  # NULLs never collide


def mariadb_column(table: StoreTable, kind: str = "VIRTUAL") -> str:
    from .engines import ENGINES

    q = ENGINES["mariadb"].quote_name
    return (
        f"ALTER TABLE {q(table.name)} ADD COLUMN {q(COLUMN)} "
        "CHAR(32) CHARACTER SET ascii COLLATE ascii_bin "
        f"AS ({mariadb_hash(table)}) {kind}"
    )


def mariadb_key(table: StoreTable) -> str:
    from .engines import ENGINES

    q = ENGINES["mariadb"].quote_name
    return f"ALTER TABLE {q(table.name)} ADD UNIQUE KEY {q(index_name(table.name))} ({q(COLUMN)})"


# -- what a store has ------------------------------------------------------------------------


@dataclass
class IdentityState:
    """Which of a store's get_or_create tables have their identity."""

    present: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    # MariaDB tables whose collation's `=` is not byte-exact: table → the collations
    unsupported: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"present": self.present, "missing": self.missing, "unsupported": self.unsupported}


def identity_state(inspection: Inspection) -> IdentityState:
    """The identities a server store has (valid PostgreSQL indexes, MariaDB unique keys)."""
    store = inspection.store
    state = IdentityState()
    tables = {n: t for n, t in inspection.tables.items() if identity_columns(t) is not None}
    if not tables or inspection.engine.is_file:
        return state
    try:
        with store.connection.cursor() as cursor:
            vendor = _vendor(inspection)
            built = vendor.existing(cursor, tables)
            state.unsupported = vendor.unsupported(cursor, tables)
    except DatabaseError as exc:
        raise store.read_error(exc) from exc
    for name in sorted(tables):
        if index_name(name) in built:
            state.present.append(name)
        elif name not in state.unsupported:
            state.missing.append(name)
    return state


def _mariadb_collations(cursor, tables: dict[str, StoreTable]) -> dict[str, list[str]]:
    """Tables with an identity text column whose collation's `=` is not byte-exact."""
    cursor.execute(
        "SELECT table_name, column_name, collation_name FROM information_schema.columns "
        "WHERE table_schema = database() AND collation_name IS NOT NULL"
    )
    found: dict[str, set[str]] = {}
    for table, column, collation in cursor.fetchall():
        stored = tables.get(table)
        if stored is None or column not in (identity_columns(stored) or ()):
            continue
        if collation not in NO_COLLISIONS:
            found.setdefault(table, set()).add(collation)
    return {t: sorted(c) for t, c in sorted(found.items())}


# -- building them ---------------------------------------------------------------------------


@dataclass
class Built:
    tables: list[str]  # identities built
    how: dict[str, str] = field(default_factory=dict)  # MariaDB: how each was built
    attempts: int = 0


class DuplicatesAppeared(Refused):
    """A unique identity could not be built: the table holds rows it forbids."""

    def __init__(self, store: Store, table: str) -> None:
        super().__init__(
            f"{store.display}: {table} holds duplicate rows, its identity was not built "
            "(nothing half-built is left): run `smtmigrate protect --dedupe`"
        )
        self.table = table


def build_in_transaction(inspection: Inspection, tables: Iterable[str] | None = None) -> Built:
    """The identities of a store nobody else writes yet (a copy's target, a new schema):
    PostgreSQL plain CREATE UNIQUE INDEX in the caller's transaction; MariaDB the
    generated column and its key, on a scratch table, at once."""
    names = _tables(inspection, tables)
    built = Built([])
    vendor = _vendor(inspection)
    with inspection.store.connection.cursor() as cursor:
        for name in names:
            how = vendor.build(cursor, inspection.store, inspection.tables[name], live=False)
            if how is not None:
                built.how[name] = how
            built.tables.append(name)
    return built


def build_live(
    inspection: Inspection,
    tables: Iterable[str] | None = None,
    *,
    lock_timeout: float = LOCK_TIMEOUT,
    lock_attempts: int = LOCK_ATTEMPTS,
) -> Built:
    """The identities of a store jobs are writing to, with short locks: PostgreSQL
    `CREATE UNIQUE INDEX CONCURRENTLY` (outside any transaction; an INVALID index left by
    a failed build is dropped); MariaDB an instant VIRTUAL column, then its key online
    (`ALGORITHM=INPLACE, LOCK=NONE`), a STORED column if the server refuses. A lock not
    granted within `lock_timeout` is given up and asked again (`lock_attempts` in all)."""
    store = inspection.store
    names = _tables(inspection, tables)
    built = Built([])
    connection = store.connection
    vendor = _vendor(inspection)
    with connection.cursor() as cursor:
        vendor.set_lock_timeout(cursor, lock_timeout)
        try:
            for name in names:
                table = inspection.tables[name]
                for attempt in range(1, lock_attempts + 1):
                    built.attempts += 1
                    try:
                        how = vendor.build(cursor, store, table, live=True)
                        if how is not None:
                            built.how[name] = how
                        break
                    except _LockBusy as exc:
                        if attempt == lock_attempts:
                            raise Refused(
                                f"{store.display}: could not lock {name} within "
                                f"{lock_timeout:g} s in {attempt} attempts (long transactions?); "
                                "the identities built so far stay"
                            ) from exc
                        time.sleep(min(attempt, 5))  # let the queued jobs through
                built.tables.append(name)
        finally:
            vendor.reset_lock_timeout(cursor)
    return built


class _LockBusy(Exception):
    pass


class _PostgresIdentities:
    """A unique index on the identity expression; built CONCURRENTLY on a live store."""

    def existing(self, cursor, tables: dict[str, StoreTable]) -> set[str]:
        cursor.execute(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname = ANY(%s) AND i.indisvalid AND i.indisunique "
            "AND pg_table_is_visible(c.oid)",
            [[index_name(n) for n in tables]],
        )
        return {row[0] for row in cursor.fetchall()}

    def unsupported(self, cursor, tables: dict[str, StoreTable]) -> dict[str, list[str]]:
        return {}

    def build(self, cursor, store: Store, table: StoreTable, *, live: bool) -> str | None:
        if live:
            _postgres_live(cursor, store, table)
        else:
            _execute(cursor, store, table, postgres_index(table, concurrently=False))
        return None

    def set_lock_timeout(self, cursor, seconds: float) -> None:
        cursor.execute("SET lock_timeout = %s", [f"{seconds * 1000:.0f}ms"])

    def reset_lock_timeout(self, cursor) -> None:
        cursor.execute("RESET lock_timeout")


class _MariadbIdentities:
    """A generated identity column and its unique key; says how each was built."""

    def existing(self, cursor, tables: dict[str, StoreTable]) -> set[str]:
        cursor.execute(
            "SELECT index_name FROM information_schema.statistics "
            "WHERE table_schema = database() AND non_unique = 0 AND column_name = %s",
            [COLUMN],
        )
        return {row[0] for row in cursor.fetchall()}

    def unsupported(self, cursor, tables: dict[str, StoreTable]) -> dict[str, list[str]]:
        return _mariadb_collations(cursor, tables)

    def build(self, cursor, store: Store, table: StoreTable, *, live: bool) -> str | None:
        return _mariadb_build(cursor, store, table, live=live)

    def set_lock_timeout(self, cursor, seconds: float) -> None:
        cursor.execute("SET SESSION lock_wait_timeout = %s", [max(1, round(seconds))])

    def reset_lock_timeout(self, cursor) -> None:
        pass


# How each server keeps identities, by the store's kind (as engines.engine_for picks).
_VENDORS: dict[str, _PostgresIdentities | _MariadbIdentities] = {
    "postgresql": _PostgresIdentities(),
    "mariadb": _MariadbIdentities(),
}


def _vendor(inspection: Inspection) -> _PostgresIdentities | _MariadbIdentities:
    return _VENDORS[inspection.store.kind]


def identity_tables(inspection: Inspection) -> list[str]:
    """The store's tables that can have an identity."""
    return sorted(n for n, t in inspection.tables.items() if identity_columns(t) is not None)


def _tables(inspection: Inspection, tables: Iterable[str] | None) -> list[str]:
    return list(tables) if tables is not None else identity_tables(inspection)


def _code(exc: BaseException) -> Any:
    cause = exc.__cause__ or exc
    return getattr(cause, "pgcode", None) or (cause.args[0] if cause.args else None)


def _execute(cursor, store: Store, table: StoreTable, statement: str) -> None:
    try:
        cursor.execute(statement)
    except DatabaseError as exc:
        if _code(exc) in (PG_UNIQUE_VIOLATION, MARIADB_DUPLICATE):
            raise DuplicatesAppeared(store, table.name) from exc
        raise


def _postgres_live(cursor, store: Store, table: StoreTable) -> None:
    q = store.connection.ops.quote_name
    name = index_name(table.name)
    cursor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {q(name)}")  # an INVALID one left
    try:
        cursor.execute(postgres_index(table, concurrently=True))
    except DatabaseError as exc:
        cursor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {q(name)}")  # never half-built
        code = _code(exc)
        if code == PG_UNIQUE_VIOLATION:
            raise DuplicatesAppeared(store, table.name) from exc
        if code == PG_LOCK_NOT_AVAILABLE:
            raise _LockBusy from exc
        raise


def _mariadb_build(cursor, store: Store, table: StoreTable, *, live: bool) -> str:
    """The generated column and its unique key; how they were built. A key that cannot be
    built takes its column away again: nothing half-built is left."""
    q = store.connection.ops.quote_name
    for kind, how in (("VIRTUAL", ONLINE), ("STORED", "ALGORITHM=COPY, LOCK=SHARED")):
        suffix = f", {how}" if live else ""
        try:
            cursor.execute(mariadb_column(table, kind) + suffix)
        except DatabaseError as exc:
            if _code(exc) == MARIADB_LOCK_WAIT:
                raise _LockBusy from exc
            if _code(exc) in MARIADB_NOT_ONLINE and kind == "VIRTUAL":
                continue  # the server refuses it online: a STORED column
            raise
        try:
            _execute(cursor, store, table, mariadb_key(table) + suffix)
        except BaseException as exc:
            cursor.execute(f"ALTER TABLE {q(table.name)} DROP COLUMN {q(COLUMN)}")
            code = _code(exc) if isinstance(exc, DatabaseError) else None
            if code in MARIADB_NOT_ONLINE and kind == "VIRTUAL":
                continue
            if code == MARIADB_LOCK_WAIT:
                raise _LockBusy from exc
            raise
        return f"{kind} column + unique key" + (f" ({how})" if live else "")
    raise SmtmigrateError(f"{store.display}: MariaDB built no identity on {table.name}")

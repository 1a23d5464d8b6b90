"""One module per database engine; `engine_for` picks the one a store, an inspection, a
Django connection or a vendor name belongs to. See base.py for the interface."""

from __future__ import annotations

from typing import Any

from .base import INTEGER_TYPES, Engine, TableResult
from .mariadb import MariadbEngine
from .postgresql import PostgresEngine
from .sqlite import SqliteEngine

# Each engine once, typed: a caller that needs one vendor's own methods (a SQLite file's
# backup, psycopg2.sql identifiers) takes it from here.
SQLITE = SqliteEngine()
POSTGRESQL = PostgresEngine()
MARIADB = MariadbEngine()
ENGINES: dict[str, Engine] = {engine.vendor: engine for engine in (SQLITE, POSTGRESQL, MARIADB)}
ENGINES["mysql"] = ENGINES["mariadb"]  # Django's connection.vendor for MariaDB and MySQL

__all__ = [
    "ENGINES",
    "INTEGER_TYPES",
    "MARIADB",
    "POSTGRESQL",
    "SQLITE",
    "Engine",
    "TableResult",
    "engine_for",
]


def engine_for(vendor_or_store: Any) -> Engine:
    """The engine of a vendor name ("sqlite", "postgresql", "mariadb" or Django's
    "mysql"), a Store (its kind), or anything with a `vendor` (an Inspection, a Django
    connection)."""
    vendor = vendor_or_store
    if not isinstance(vendor, str):
        vendor = getattr(vendor_or_store, "kind", None) or vendor_or_store.vendor
    try:
        return ENGINES[vendor]
    except KeyError:
        raise ValueError(f"no engine for {vendor!r}") from None

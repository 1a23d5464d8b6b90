"""A store as inspected (`schema.inspect_store`): its generation, tables and declared
columns. Values only, read by engines and workflows alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .tables import ModelTable

if TYPE_CHECKING:
    from .engines import Engine
    from .locations import Store


@dataclass(frozen=True)
class StoreColumn:
    """A column as the store declares it."""

    name: str
    declared: str  # e.g. "varchar(100)", "text", "double precision"
    internal_type: str  # Django's reading of the declared type, e.g. "CharField"
    max_length: int | None
    null: bool


@dataclass
class StoreTable:
    name: str  # as stored, e.g. tagging_tag
    model: ModelTable  # today's counterpart
    columns: dict[str, StoreColumn]
    unique_sets: set[frozenset[str]]  # column sets the store itself keeps unique

    def enforces_unique(self, columns: tuple[str, ...]) -> bool:
        return frozenset(columns) in self.unique_sets


@dataclass
class Inspection:
    """What a store looks like: its generation and the tables it has."""

    store: Store
    vendor: str  # Django's connection.vendor: "sqlite" or "postgresql"
    layout: str
    tables: dict[str, StoreTable]  # Sumatra's tables, keyed by stored name
    migrations: frozenset[tuple[str, str]]
    table_names: frozenset[str]  # every table in the database
    # Sumatra 0.4-0.6: the TEMP views that show the store in today's shape (generations.py),
    # by stored table name; other connections to the file install them
    # (SqliteEngine.attach_views).
    views: dict[str, str] = field(default_factory=dict)

    @property
    def engine(self) -> Engine:
        return self.store.engine

    def table_for(self, model_table: str) -> StoreTable | None:
        return next((t for t in self.tables.values() if t.model.name == model_table), None)

    def stored_name(self, model_table: str) -> str:
        table = self.table_for(model_table)
        return table.name if table else model_table

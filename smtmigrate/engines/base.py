"""The interface every database engine implements, and what all of them share.

Modelled on Django's per-vendor `DatabaseOperations` / `BaseDatabaseSchemaEditor`: SQL
spellings are class attributes or small methods, there is one `quote_name`, and the rest
of smtmigrate asks the engine (`engines.engine_for(...)`) instead of testing a vendor.
A method an engine cannot offer raises `NotImplementedError` (e.g. a PostgreSQL store
has no file to open read-only).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from django.db import DatabaseError

from ..canonical import UNIT_BITS, Checksum, TableLayout
from ..tables import ModelColumn

if TYPE_CHECKING:
    from ..copy import CopyPlan
    from ..findings import Finding
    from ..layout import Inspection
    from ..locations import Store
    from ..widen import WideningPlan

# Django field types whose values are integers in every engine.
INTEGER_TYPES = frozenset(
    {"AutoField", "BigAutoField", "IntegerField", "BigIntegerField", "PositiveIntegerField"}
)
Remap = Mapping[int, int]  # source id → target id


class TableFacts(NamedTuple):
    """What schema.inspect_store reads of one table (Engine.table_facts)."""

    description: list[Any]  # FieldInfo, as Django's get_table_description gives them
    declared: dict[str, str]  # column → its type as the database spells it
    unique_sets: set[frozenset[str]]


@dataclass
class TableResult:
    """One table loaded by a bulk load."""

    table: str
    rows: int
    bytes: int
    seconds: float


def when_clauses(remap: Remap) -> str:
    """`WHEN old THEN new …` of a CASE that maps ids (integers only: nothing pasted)."""
    return " ".join(f"WHEN {int(old)} THEN {int(new)}" for old, new in remap.items())


def where_not(column: str, skip: Iterable[int] | None) -> str:
    """` WHERE column NOT IN (…)` leaving out rows by id (integers only), or ''."""
    if not skip:
        return ""
    return f" WHERE {column} NOT IN ({', '.join(str(int(i)) for i in sorted(skip))})"


def is_integer(column: ModelColumn) -> bool:
    """Whether the column holds integers (ids of other rows included)."""
    return column.internal_type in INTEGER_TYPES or bool(column.references and not column.is_text)


class Engine:
    """One database engine. Subclasses set the class attributes and implement the
    methods that raise NotImplementedError here."""

    vendor: ClassVar[str]  # Django's connection.vendor and Store.kind
    quote_char: ClassVar[str] = '"'
    length_function: ClassVar[str] = "length"  # characters, not bytes
    chr_function: ClassVar[str] = "chr"  # the chr() used in the canonical escaping
    concat_operator: ClassVar[str] = "||"

    # -- names and values -----------------------------------------------------------------

    def quote_name(self, name: str) -> str:
        """The identifier quoted for this engine: the one quoting smtmigrate uses."""
        q = self.quote_char
        return q + name.replace(q, q + q) + q

    def blob(self, expression: str) -> str:
        """A value as its bytes (SQLite's text may not be UTF-8); as it is by default."""
        return expression

    def integer(self, expression: str) -> str:
        """An expression read as an integer (engines with typed columns: as it is)."""
        return expression

    def remap_case(self, column: str, remap: Remap, *, otherwise: str | None = None) -> str:
        """The CASE that maps a quoted id column's values by `remap`; the ids it does not
        name stay as they are (or become `otherwise`)."""
        key = self.integer(column)
        return f"CASE {key} {when_clauses(remap)} ELSE {otherwise or key} END"

    def text_length(self, column: str) -> str:
        """The length in characters of a column (by its unquoted name)."""
        return f"{self.length_function}({self.quote_name(column)})"

    def preview(self, column: str, chars: int) -> str:
        """The first `chars` characters of a column (by its unquoted name), as text."""
        return f"substr(CAST({self.quote_name(column)} AS TEXT), 1, {int(chars)})"

    def id_list(self, column: str) -> str:
        """An aggregate: the group's values of an integer column, comma-separated."""
        raise NotImplementedError

    def declared_types(self, cursor: Any, table: str) -> dict[str, str]:
        """Column → its type as the database spells it (schema.py compares it with
        today's model)."""
        raise NotImplementedError

    def table_description(self, connection: Any, cursor: Any, table: str) -> list[Any]:
        """The table's columns as Django's introspection describes them (`FieldInfo`s:
        name, type, size, nullability, primary key)."""
        return connection.introspection.get_table_description(cursor, table)

    def table_facts(
        self, connection: Any, cursor: Any, tables: Sequence[str]
    ) -> dict[str, TableFacts]:
        """Each table's description, declared types and unique sets, one table at a time
        (PostgreSQL's asks for all tables at once)."""
        return {
            name: TableFacts(
                self.table_description(connection, cursor, name),
                self.declared_types(cursor, name),
                self.unique_sets(connection, cursor, name),
            )
            for name in tables
        }

    def unique_sets(self, connection: Any, cursor: Any, table: str) -> set[frozenset[str]]:
        """The column sets the table keeps unique: its primary key and every unique
        constraint or index, as Django's `get_constraints` finds them."""
        return {
            frozenset(c["columns"])
            for c in connection.introspection.get_constraints(cursor, table).values()
            if c["unique"] or c["primary_key"]
        }

    def begin_snapshot(self, cursor: Any) -> tuple[datetime, str | None]:
        """A server engine: make the cursor's new transaction a read-only view of one
        state of every table; when it was taken (UTC), and the id other processes join
        it by (None where they cannot)."""
        raise NotImplementedError

    def database_missing(self, exc: BaseException) -> bool:
        """Whether a failed connection failed for want of the store's database."""
        return False

    # The query of `database_identity` (a server engine's).
    identity_sql: ClassVar[str]

    def database_identity(self, store: Store) -> tuple:
        """What names the store's database on its running server whatever host name,
        socket or port reached it (`locations.same_store`)."""
        try:
            with store.connection.cursor() as cursor:
                cursor.execute(self.identity_sql)
                return cursor.fetchone()
        except DatabaseError as exc:
            raise store.read_error(exc) from exc

    def column_types(self, cursor: Any, tables: list[str]) -> dict[tuple[str, str], str]:
        """(table, column) → its real type as the engine spells it, for `tables` of the
        cursor's database (a widening's before and after)."""
        raise NotImplementedError

    def lock_timeout(self, seconds: float) -> tuple[str, list[Any]]:
        """The statement (and its parameters) that bounds this transaction's waits for a
        row lock: a write retried rather than stuck behind a running job."""
        raise NotImplementedError

    def missing_write_privileges(self, cursor: Any, tables: list[str]) -> list[tuple]:
        """(user, table, privilege) Sumatra's jobs would need to write `tables` and the
        cursor's role lacks; nothing where the engine cannot tell beforehand."""
        return []

    # Why a copy from a store of this engine into another of it is not offered (a server
    # into its own kind); None where it is (SQLite: a backup into a new file).
    own_kind_refusal: ClassVar[str | None] = None

    def copy_refusal(self, source: Engine) -> str | None:
        """Why a copy from a store of `source` into one of this engine is not offered, or
        None."""
        return self.own_kind_refusal if source.vendor == self.vendor else None

    # Whether a store of this engine is a file (SQLite), not a database on a server: no
    # server, no widening (every column is unbounded), no identities to build for
    # parallel jobs, a new store made by creating the file.
    is_file: ClassVar[bool] = False
    # Whether a failed DDL statement rolls back with its transaction (Django's feature of
    # the name): False for MariaDB, whose every ALTER commits by itself.
    can_rollback_ddl: ClassVar[bool] = True

    # Whether a snapshot of a store is one that threads on connections of their own read
    # alike (SQLite: a private file); else it is one connection's transaction (threads.py).
    snapshot_shared_by_threads: ClassVar[bool] = False
    # Whether another process can read the snapshot's state too (a SQLite file; a
    # PostgreSQL transaction's exported snapshot); not MariaDB's.
    snapshot_joinable: ClassVar[bool] = True

    # Whether a PgBouncer (transaction mode) can stand in front of a server of this engine
    # (`pooler`, `move --pooler`, headroom's advice): PostgreSQL's.
    has_pooler: ClassVar[bool] = False
    # Whether `merge` reads and writes stores of this engine (merge/sql/ has SQLite's and
    # PostgreSQL's statements).
    merges: ClassVar[bool] = True
    # Whether the project's `smt` reaches the server with nothing but the URL and the
    # client's password variable (MariaDB: MYSQL_PWD; no option or password file, no
    # libpq PG* variables): a job's location carries everything in the URL
    # (`sumatra_url`), and a switch checks first that it gets in (`project`).
    sumatra_login_unaided: ClassVar[bool] = False
    # Whether `move` may create the target's role with its database (PostgreSQL); else
    # the user must exist before the move (MariaDB: Sumatra's runs must get in first).
    move_creates_role: ClassVar[bool] = True

    # -- the audit (audit.py) --------------------------------------------------------------

    # Whether the engine refuses values that do not fit a column's type (PostgreSQL): then
    # the audit checks lengths only, else every value (SQLite stores what it is given).
    enforces_types: ClassVar[bool] = True
    # The server whose rules an audit of a store of this engine applies, as its verdict
    # names it: a server store's own; an SQLite store's checks are PostgreSQL's.
    audited_as: ClassVar[str] = "PostgreSQL"

    def register_functions(self, connection: Any) -> None:
        """Add the Python functions the audit's SQL calls to a Django connection."""

    def invalid_value_checks(
        self, inspection: Inspection, table: Any, column: ModelColumn
    ) -> Iterator[tuple[str, str, str | None]]:
        """(condition, what is wrong, screen) for the values of a column the target would
        reject; `screen` is set for checks run through a Python function, screened row by
        row (`row_screen`). Nothing for an engine that enforces its types."""
        return iter(())

    def store_findings(self, inspection: Inspection, cursor: Any) -> list[Any]:
        """Findings about the store as this engine keeps it (MariaDB: collations, the
        server's sql_mode, utf8mb3 columns); none for most engines."""
        return []

    def all_utf8(self, values: str) -> str:
        """A condition: every one of the comma-separated expressions is valid UTF-8."""
        raise NotImplementedError

    def screen_key(self, column: str, declared: str) -> str:
        """A column of a table's identity as the row screen (`row_screen`) hashes it."""
        raise NotImplementedError

    def row_screen(self, connection: Any, keyed: str, width: int, values: list[str]) -> Any:
        """The Python function that screens a table's rows (the values of its screened
        checks, `invalid_value_checks`) and hashes their identity, registered on a
        connection; and the SQL that calls it. Only engines with screened checks have it."""
        raise NotImplementedError

    def plain_collation(self, cursor: Any, table: str) -> bool:
        """Whether the table's GROUP BY compares text as bytes (`row_screen`'s identity)."""
        return False

    def value_bytes(self, expression: str) -> str:
        """The value's bytes, where the engine's text functions could lose some of them
        (SQLite stops at a NUL); else NULL."""
        return "NULL"

    # -- canonical row text and checksums (canonical.py) ---------------------------------

    def escaped(self, expression: str) -> str:
        """COPY text escaping of a text expression. The same literals parse alike in
        every engine (PostgreSQL's standard_conforming_strings keeps backslashes)."""
        expression = f"replace({expression}, '\\', '\\\\')"
        for code, escape in ((9, "\\t"), (10, "\\n"), (13, "\\r")):
            expression = f"replace({expression}, {self.chr_function}({code}), '{escape}')"
        return expression

    def canonical_expression(self, column: ModelColumn, remap: Remap | None = None) -> str:
        """The canonical text of one column (canonical.py), `\\N` for NULL."""
        raise NotImplementedError

    def line(self, expressions: list[str]) -> str:
        """Column texts joined by tabs into one line."""
        if not expressions:
            return "''"
        return f" {self.concat_operator} {self.chr_function}(9) {self.concat_operator} ".join(
            expressions
        )

    def table_checksum(
        self,
        inspection: Inspection,
        layout: TableLayout,
        remaps: Mapping[str, Remap] | None = None,
        skip: Iterable[int] | None = None,
    ) -> Checksum:
        """A table's checksum computed where the data is, without the rows whose id is
        in `skip`, with the id columns of `remaps` mapped first."""
        store = inspection.store
        try:
            with store.connection.cursor() as cursor:
                return self.checksum(cursor, layout, remaps, skip)
        except DatabaseError as exc:
            raise store.read_error(exc) from exc

    def checksum(self, cursor, layout: TableLayout, remaps=None, skip=None) -> Checksum:
        """`table_checksum` on an open cursor: a server computes it in one query
        (`checksum_sql`: rows, sum of the units' hashes)."""
        cursor.execute(self.checksum_sql(layout, remaps, skip))
        rows, total = cursor.fetchone()
        return Checksum(int(rows), int(total))

    def checksum_sql(self, layout: TableLayout, remaps=None, skip=None) -> str:
        """The query `table_checksum` runs: (row count, sum of the units' hashes)."""
        raise NotImplementedError

    def unit_expression(self, layout: TableLayout) -> str:
        """The unit a row is hashed in (canonical.py): its integer key >> UNIT_BITS, or
        the key itself where it is not an integer (each row its own unit)."""
        key = layout.model.primary_key
        column = layout.model.columns.get(key)
        if column is not None and is_integer(column):
            return f"({self.quote_name(key)} >> {UNIT_BITS})"
        return self.quote_name(key)

    def line_select(
        self,
        layout: TableLayout,
        remaps: Mapping[str, Remap],
        skip: Iterable[int] | None = None,
    ) -> str:
        """SELECT of (unit, canonical line, float columns…) from the source table in key
        order, but the rows whose id is in `skip`. Floats are printed and hashed by Python
        (canonical.py), the same bytes whichever engine built the line."""
        q = self.quote_name
        line = self.line([self.canonical_expression(c, remaps.get(c.name)) for c in layout.columns])
        floats = [q(c.name) for c in layout.floats]
        key = q(layout.model.primary_key)
        return (
            f"SELECT {', '.join([self.unit_expression(layout), line, *floats])} "
            f"FROM {q(layout.source_name)}{where_not(key, skip)} ORDER BY {key}"
        )

    def line_rows(
        self, inspection: Inspection, layout: TableLayout, remaps: Mapping[str, Remap], skip
    ) -> AbstractContextManager[Any]:
        """The rows of one table of a store of this engine as `canonical.Block`s, streamed
        in key order (a copy's source: SQLite, MariaDB): an object whose `fetch()` gives
        the next blocks, [] at the end."""
        raise NotImplementedError(f"copying out of a {self.vendor} store this way")

    def streaming_cursor(self, store: Store) -> AbstractContextManager[Any]:
        """A cursor on the store's connection that does not hold the whole result."""
        return store.connection.chunked_cursor()

    # -- a merge's statements (merge/sql/): PostgreSQL and SQLite targets ------------------

    # What ends a temporary table with the merge's transaction, after its name (SQLite's
    # live as long as the merge's own connection: nothing).
    temp_table_lifetime: ClassVar[str]
    binary_collation: ClassVar[str]  # code-point order of text (the order Python sorts)
    # The collation (for Django's `Collate`) that orders labels by code point where the
    # database's default may not (PostgreSQL: "C"); None where the default does.
    label_collation: ClassVar[str | None] = None
    # Whether Django's schema editor gives an indexed varchar column a second `_like`
    # index and renames foreign keys it recreates (PostgreSQL's): a widening undoes both.
    like_indexes: ClassVar[bool] = False
    defer_constraints: ClassVar[str]  # the statement: foreign keys checked at commit

    def temp_table_as(self, name: str) -> str:
        """`CREATE TEMP TABLE name … AS`, dropped with the merge's transaction."""
        return f"CREATE TEMP TABLE {name}{self.temp_table_lifetime} AS"

    def sorted_join(self, expression: str, *, distinct: bool = False) -> str:
        """An aggregate: the group's values joined in sorted order, chr(30) between (for
        equality: order must not matter)."""
        raise NotImplementedError

    def text_summary(self, expression: str) -> str:
        """An integer that changes when the text does (a cheap sign that rows moved)."""
        raise NotImplementedError

    def register_merge_functions(self, raw: Any) -> None:
        """Add what the merge's statements call and the engine lacks to a DB-API
        connection (nothing by default)."""

    # -- connections ----------------------------------------------------------------------

    def read_only_uri(self, path: Any) -> str:
        """The URI that opens a store file read-only (file-based engines)."""
        raise NotImplementedError(f"{self.vendor} stores are not files")

    # -- copying into a store of this engine (copy.py) -----------------------------------

    def widening_plan(self, plan: WideningPlan) -> WideningPlan:
        """`copy --widen`'s plan as this engine can carry it (MariaDB: keys stay varchar)."""
        return plan

    # Whether a copy builds the target afresh in a scratch database whatever it holds
    # (MariaDB), sized by today's models, rather than into the target's own schema.
    copy_builds_afresh: ClassVar[bool] = False

    def check_new_target(self, store: Store) -> None:
        """Refuse a copy's target before any work (`copy_builds_afresh` engines)."""

    def target_findings(self, store: Store, source: Inspection) -> list[Finding]:
        """What a copy's preflight warns about the target itself (MariaDB: its collation
        and sql_mode); none by default."""
        return []

    def copy_target(
        self, plan: CopyPlan, events: Any, phase: Any
    ) -> AbstractContextManager[CopyTarget]:
        """Where a copy writes: entered once; on a clean exit the loaded, verified
        target is kept (committed, renamed into place), on an error nothing is. An engine
        without transactional DDL builds elsewhere and swaps, as SQLite's does."""
        raise NotImplementedError


class CopyTarget:
    """A copy's target while the copy runs (Engine.copy_target)."""

    # The target's own checksums of tables it computed as soon as each was loaded, where
    # nobody else can write them until the copy ends (a MariaDB scratch database); verify
    # computes the others.
    stored_checksums: Mapping[str, Checksum] = MappingProxyType({})
    # Whether the load leaves the row checks almost nothing to do (it computes
    # `stored_checksums`): the sample's source side is then read during the load.
    checksums_while_loading: ClassVar[bool] = False

    def schema_store(self) -> AbstractContextManager[Store]:
        """The target as a Django store, for Sumatra's migrations and the content types."""
        raise NotImplementedError

    def load(
        self, plan: CopyPlan, remaps: Mapping[str, Mapping[str, Remap]], events: Any
    ) -> tuple[list[TableResult], dict[str, Checksum]]:
        """Bulk-load every table of the plan; the source checksums computed on the way
        (by today's table name; empty when the engine's load cannot compute them)."""
        raise NotImplementedError

    def reading(
        self, prepared: Inspection, inspect: Callable[[Store], Inspection]
    ) -> AbstractContextManager[Inspection]:
        """The loaded target as the verification reads it (`inspect`: schema.inspect_store,
        for a target read on another connection than the one that prepared it)."""
        raise NotImplementedError

    def before_reading_records(self, prepared: Inspection) -> None:
        """Ready the loaded target for reading every record back (`--verify full`)."""

    # Whether the target runs the widening itself (`widen`); else copy applies widen_apply's
    # (PostgreSQL: in the copy's transaction).
    widens_itself: ClassVar[bool] = False

    def widen(self, widening: WideningPlan, prepared: Inspection) -> None:
        """Run the planned widening on the prepared schema (when `widens_itself`)."""
        raise NotImplementedError

"""MariaDB (and MySQL's dialect of it): backtick quoting, canonical text and checksums in
MariaDB's own SQL, and copies into a MariaDB database.

MariaDB's DDL commits implicitly, so a copy cannot be one transaction. It is built in a
scratch database the copy creates (`smtmigrate_partial_<host>_<pid>`, binary no-pad
collation), loaded and verified there, and only then moved into the target database by
one atomic `RENAME TABLE` of every table. Any error drops the scratch database; a copy
killed outright (SIGKILL) leaves it behind, never anything under the target's name, and
the next copy from this host drops it once its process is gone.

Rows are streamed as canonical lines (canonical.py: PostgreSQL's COPY text format, which
is also `LOAD DATA`'s default format) through a named pipe into `LOAD DATA LOCAL INFILE`,
hashed on the way as for PostgreSQL. That copy target is in mariadb_load.py; this
module is the dialect and the server.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from django.db import DatabaseError

from ..canonical import UNIT_BITS, Checksum, RowBlocks, TableLayout, summed
from ..errors import Refused
from ..tables import ModelColumn
from .base import Engine, Remap, is_integer, where_not
from .mariadb_findings import (
    COLLATION,
    LOOKED_UP,
    NO_COLLISIONS,
    UTF8MB3,
    as_text,
    collision_finding,
    collision_groups,
    django_spelling,
    server_findings,
    utf8mb3_finding,
)
from .mariadb_server import database_tables, server_store

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from ..copy import CopyPlan
    from ..findings import Finding
    from ..layout import Inspection
    from ..locations import Store
    from ..widen import WideningPlan
    from .mariadb_load import MariadbCopyTarget

# The longest varchar a primary key can have: InnoDB's 3072-byte index key at 4 bytes a
# character (utf8mb4). Other unbounded columns become longtext (a UNIQUE one is kept by
# MariaDB's hash index); a big varchar would count against the 65,535-byte row limit.
KEY_CHARS = 768
GROUP_CONCAT_MAX = 1 << 30  # bytes: the most the server takes
SIGN_BIT = 2**63
MANTISSA = 2**52
SMALLEST_NORMAL = "2.2250738585072014e-308"


def _chr(code: int) -> str:
    """A character as a binary string: the canonical line is built from bytes, whatever
    the columns' collations (mixing them in CONCAT would be an error)."""
    return f"CHAR({int(code)})"


NULL_SQL = f"CONCAT({_chr(92)}, 'N')"  # canonical.NULL without a backslash literal


class MariadbEngine(Engine):
    vendor = "mariadb"  # Store.kind; Django's connection.vendor is "mysql" (engine_for maps it)
    audited_as = "MariaDB"
    can_rollback_ddl = False
    copy_builds_afresh = True
    snapshot_joinable = False
    quote_char = "`"
    length_function = "char_length"
    merges = False
    sumatra_login_unaided = True
    move_creates_role = False

    # The running server (its host name, port and data directory) and the database.
    identity_sql = "SELECT @@hostname, @@port, @@datadir, DATABASE()"
    own_kind_refusal = (
        "copying from MariaDB into MariaDB is not supported yet "
        "(into MariaDB: from an SQLite or a PostgreSQL store)"
    )

    def column_types(self, cursor, tables: list[str]) -> dict[tuple[str, str], str]:
        cursor.execute(
            "SELECT table_name, column_name, column_type FROM information_schema.columns "
            "WHERE table_schema = DATABASE()"
        )
        return {(t, c): str(type_) for t, c, type_ in cursor.fetchall()}

    def lock_timeout(self, seconds: float) -> tuple[str, list]:
        return "SET SESSION innodb_lock_wait_timeout = %s", [max(1, round(seconds))]

    def text(self, expression: str) -> str:
        """The expression's text as bytes (UTF-8 for a text column)."""
        return f"CAST({expression} AS BINARY)"

    def preview(self, column: str, chars: int) -> str:
        return f"SUBSTRING(CAST({self.quote_name(column)} AS CHAR), 1, {int(chars)})"

    def id_list(self, column: str) -> str:
        c = self.quote_name(column)
        return f"GROUP_CONCAT({c} ORDER BY {c} SEPARATOR ',')"

    def declared_types(self, cursor, table: str) -> dict[str, str]:
        """As Django's MySQL backend spells them (`integer AUTO_INCREMENT`, `double
        precision`), so that a store Sumatra built shows no drift."""
        cursor.execute(
            "SELECT column_name, column_type, extra FROM information_schema.columns "
            "WHERE table_schema = DATABASE() AND table_name = %s",
            [table],
        )
        types = {}
        for column, column_type, extra in cursor.fetchall():
            spelled = django_spelling(as_text(column_type))
            if "auto_increment" in as_text(extra).lower():
                spelled += " AUTO_INCREMENT"
            types[as_text(column)] = spelled
        return types

    # -- the audit: MariaDB's own traps (audit.py) ----------------------------------------

    def store_findings(self, inspection: Inspection, cursor) -> list[Finding]:
        """A MariaDB store's traps: a server whose default sessions are not strict,
        utf8mb3 columns, and values Sumatra looks up that its columns' collations make
        equal (each group listed)."""
        cursor.execute("SELECT @@GLOBAL.sql_mode")
        findings = server_findings(cursor.fetchone()[0])
        cursor.execute(
            "SELECT table_name, column_name, character_set_name, collation_name "
            "FROM information_schema.columns WHERE table_schema = DATABASE() "
            "AND character_set_name IS NOT NULL ORDER BY table_name, column_name"
        )
        collations = {}
        for table, column, charset, collation in cursor.fetchall():
            collations[table, column] = collation
            if charset in UTF8MB3 and table in inspection.tables:
                findings.append(utf8mb3_finding(table, column, charset))
        for model_table, column, scope in LOOKED_UP:
            table = inspection.table_for(model_table)
            collation = collations.get((table.name, column)) if table else None
            if table is None or collation is None or collation in NO_COLLISIONS:
                continue
            finding = self._collisions(cursor, table, column, scope, collation)
            if finding is not None:
                findings.append(finding)
        return findings

    def _collisions(self, cursor, table, column: str, scope: str | None, collation: str):
        """Groups of different values (as bytes) that the column's collation makes equal."""
        q = self.quote_name
        pk = q(table.model.primary_key)
        keys = [q(column)] if scope is None else [q(scope), q(column)]
        cursor.execute(
            f"SELECT GROUP_CONCAT({pk} ORDER BY {pk}), "
            f"GROUP_CONCAT(DISTINCT HEX(CAST({q(column)} AS BINARY))) "
            f"FROM {q(table.name)} WHERE {q(column)} IS NOT NULL GROUP BY {', '.join(keys)} "
            f"HAVING COUNT(DISTINCT CAST({q(column)} AS BINARY)) > 1 ORDER BY MIN({pk})"
        )
        groups = collision_groups(cursor.fetchall())
        if not groups:
            return None
        return collision_finding(
            table.name,
            column,
            groups,
            f"equal under the column's collation {collation}: Sumatra's lookups of one "
            "return them all",
        )

    def target_findings(self, store: Store, source: Inspection) -> list[Finding]:
        """What a copy's preflight reports about a MariaDB target: a non-strict server
        default, and, in an existing database whose default collation is not binary
        no-pad, the source's tag names and labels that it would make equal. Warnings:
        the copy's own tables are utf8mb4_nopad_bin and its sessions strict."""
        try:
            with server_store(store) as server, server.connection.cursor() as cursor:
                cursor.execute(
                    "SELECT @@GLOBAL.sql_mode, (SELECT default_collation_name "
                    "FROM information_schema.schemata WHERE schema_name = %s)",
                    [store.settings["NAME"]],
                )
                sql_mode, collation = cursor.fetchone()
        except DatabaseError as exc:
            raise store.read_error(exc) from exc
        findings = server_findings(sql_mode)
        if collation is None or collation in NO_COLLISIONS:
            return findings
        if not re.fullmatch(r"[A-Za-z0-9_]+", collation):
            return findings
        for model_table, column, scope in LOOKED_UP:
            table = source.table_for(model_table)
            if table is None or column not in table.columns:
                continue
            groups = self._source_collisions(store, source, table, column, scope, collation)
            if groups:
                findings.append(
                    collision_finding(
                        table.name,
                        column,
                        groups,
                        f"equal under {store.display}'s default collation {collation}; the "
                        f"copy's tables are {COLLATION}, where they stay distinct, but tables "
                        "made later with the database's default would not keep them apart",
                    )
                )
        return findings

    def _source_collisions(self, store, source, table, column, scope, collation):
        """The source's values grouped by the target server under `collation`, in a
        temporary table of the target's connection."""
        q = self.quote_name
        pk = table.model.primary_key
        reader = source.store.connection
        with reader.cursor() as cursor:
            sq = reader.ops.quote_name
            scope_sql = sq(scope) if scope else "''"
            cursor.execute(
                f"SELECT {sq(pk)}, {scope_sql}, {sq(column)} FROM {sq(table.name)} "
                f"WHERE {sq(column)} IS NOT NULL"
            )
            rows = [
                (row_id, str(scope_value or ""), value) for row_id, scope_value, value in cursor
            ]
        if len(rows) < 2:
            return []
        connection = store.connection
        with connection.cursor() as cursor:
            cursor.execute(
                "CREATE TEMPORARY TABLE smtmigrate_values (id bigint, scope longtext "
                f"COLLATE utf8mb4_nopad_bin, v longtext CHARACTER SET utf8mb4 COLLATE {collation})"
            )
            try:
                for start in range(0, len(rows), 1000):
                    cursor.executemany(
                        "INSERT INTO smtmigrate_values VALUES (%s, %s, %s)",
                        rows[start : start + 1000],
                    )
                cursor.execute(
                    "SELECT GROUP_CONCAT(id ORDER BY id), "
                    "GROUP_CONCAT(DISTINCT HEX(CAST(v AS BINARY))) FROM smtmigrate_values "
                    "GROUP BY scope, v HAVING COUNT(DISTINCT CAST(v AS BINARY)) > 1 "
                    "ORDER BY MIN(id)"
                )
                groups = cursor.fetchall()
            finally:
                cursor.execute(f"DROP TEMPORARY TABLE {q('smtmigrate_values')}")
        return collision_groups(groups)

    # -- snapshots (snapshot.py) ---------------------------------------------------------

    def begin_snapshot(self, cursor) -> tuple[datetime, str | None]:
        return self.consistent_snapshot(cursor), None  # no exported snapshots in MariaDB

    def consistent_snapshot(self, cursor) -> datetime:
        """Start a read-only repeatable-read transaction that sees one state of every
        InnoDB table (Django's sessions default to READ COMMITTED); when it was taken."""
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cursor.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        cursor.execute("SELECT UTC_TIMESTAMP(6)")
        (taken_at,) = cursor.fetchone()
        return taken_at.replace(tzinfo=timezone.utc)

    # -- canonical text -------------------------------------------------------------------

    def escaped(self, expression: str) -> str:
        expression = f"REPLACE({expression}, {_chr(92)}, CONCAT({_chr(92)}, {_chr(92)}))"
        for code, letter in ((9, "t"), (10, "n"), (13, "r")):
            expression = f"REPLACE({expression}, {_chr(code)}, CONCAT({_chr(92)}, '{letter}'))"
        return expression

    def line(self, expressions: list[str]) -> str:
        if not expressions:
            return "''"
        return f"CONCAT_WS({_chr(9)}, {', '.join(expressions)})"

    def canonical_expression(self, column: ModelColumn, remap: Remap | None = None) -> str:
        c = self.quote_name(column.name)
        if remap:
            return f"COALESCE({self.text(f'({self.remap_case(c, remap)})')}, {NULL_SQL})"
        if column.internal_type == "DateTimeField":
            # DATETIME(6) holds what Django wrote: UTC, naive (USE_TZ), to the microsecond
            formatted = self.text(f"DATE_FORMAT({c}, '%Y-%m-%d %H:%i:%s.%f+00')")
            return f"COALESCE({formatted}, {NULL_SQL})"
        if is_integer(column):
            return f"COALESCE({self.text(c)}, {NULL_SQL})"
        # as UTF-8 whatever the column's character set (utf8mb3, latin1 in old stores)
        return f"COALESCE({self.escaped(self.text(f'CONVERT({c} USING utf8mb4)'))}, {NULL_SQL})"

    def float_bits(self, column: str) -> str:
        """The IEEE-754 bits of a double column as 16 hex digits (canonical.float_bits),
        by exact arithmetic: scaling by a power of two loses nothing, so the exponent and
        mantissa come out whole. MariaDB keeps no -0.0, NaN or infinities."""
        a = f"ABS({column})"
        e0 = f"CAST(FLOOR(LOG2({a})) AS SIGNED)"
        # log2 may round to the next integer; 2^-e stays finite where 2^e would not
        e = f"({e0} + ({a} * POW(2, -{e0}) >= 2) - ({a} * POW(2, -{e0}) < 1))"
        sign = f"IF({column} < 0, {SIGN_BIT}, 0)"
        mantissa = f"CAST(({a} * POW(2, -{e}) - 1) * {MANTISSA} AS UNSIGNED)"
        normal = f"{sign} + ({e} + 1023) * {MANTISSA} + {mantissa}"
        subnormal = f"{sign} + CAST({a} * POW(2, 1022) * POW(2, 52) AS UNSIGNED)"
        hex_of = "LPAD(LOWER(CONV({}, 10, 16)), 16, '0')"
        return (
            f"CASE WHEN {column} IS NULL THEN {NULL_SQL} "
            f"WHEN {column} = 0 THEN '0000000000000000' "
            f"WHEN {a} < {SMALLEST_NORMAL} THEN {hex_of.format(subnormal)} "
            f"ELSE {hex_of.format(normal)} END"
        )

    @contextmanager
    def streaming_cursor(self, store: Store) -> Iterator:
        """An unbuffered MySQLdb cursor (SSCursor) on the store's own connection, so in
        its snapshot's transaction: rows come as they are read, memory stays flat."""
        from MySQLdb.cursors import SSCursor

        cursor = store.connection.connection.cursor(SSCursor)
        try:
            yield cursor
        finally:
            cursor.close()

    @contextmanager
    def line_blocks(self, inspection, layout: TableLayout, remaps, skip) -> Iterator:
        with self.streaming_cursor(inspection.store) as cursor:
            cursor.execute(self.line_select(layout, remaps, skip))
            yield RowBlocks(cursor, bool(layout.floats))

    def unit_expression(self, layout: TableLayout) -> str:
        """MariaDB shifts a signed integer as unsigned: FLOOR of an exact DECIMAL division
        is the arithmetic shift the other engines do, negative keys too."""
        expression = super().unit_expression(layout)
        if expression.startswith("("):
            return f"FLOOR({self.quote_name(layout.model.primary_key)} / {1 << UNIT_BITS})"
        return expression

    def checksum(self, cursor, layout: TableLayout, remaps=None, skip=None) -> Checksum:
        """In the server, unit by unit; a table with a unit longer than the server
        returns (GROUP_CONCAT cuts it at max_allowed_packet, with a mere warning) is
        hashed by Python from its lines instead."""
        cursor.execute(f"SET SESSION group_concat_max_len = {GROUP_CONCAT_MAX}")
        cursor.execute(self.checksum_sql(layout, remaps, skip))
        rows, total, longest, cap = cursor.fetchone()
        if longest is not None and longest >= cap:
            return self._checksum_in_python(cursor, layout, remaps or {}, skip)
        return Checksum(int(rows), int(total))

    def _checksum_in_python(self, cursor, layout: TableLayout, remaps, skip) -> Checksum:
        from MySQLdb.cursors import SSCursor

        wrapper = getattr(cursor, "db", None)  # a Django cursor, or MySQLdb's own
        connection = wrapper.connection if wrapper is not None else cursor.connection
        streaming = connection.cursor(SSCursor)  # on the same connection: its snapshot
        try:
            streaming.execute(self.line_select(layout, remaps, skip))
            return summed(RowBlocks(streaming, bool(layout.floats)))
        finally:
            streaming.close()

    def checksum_sql(self, layout: TableLayout, remaps=None, skip=None) -> str:
        """count(*) and the sum of the units' hashes (canonical.py: the first 8 bytes of a
        unit's md5, read as a signed 64-bit integer), summed exactly as DECIMAL; then the
        longest unit and the length GROUP_CONCAT cuts at."""
        q = self.quote_name
        remaps = remaps or {}
        parts = [self.canonical_expression(c, remaps.get(c.name)) for c in layout.columns]
        parts += [self.float_bits(q(c.name)) for c in layout.floats]
        key = q(layout.model.primary_key)
        units = (
            f"SELECT count(*) AS n, GROUP_CONCAT(CONCAT({self.line(parts)}, CHAR(10)) "
            f"ORDER BY {key} SEPARATOR '') AS t FROM {q(layout.source_name)}"
            f"{where_not(key, skip)} GROUP BY {self.unit_expression(layout)}"
        )
        # unsigned to signed wraps to the two's complement (a note, not a warning); SUM of
        # BIGINTs is an exact DECIMAL.
        unsigned = "CAST(CONV(LEFT(MD5(t), 16), 16, 10) AS UNSIGNED)"
        return (
            f"SELECT COALESCE(SUM(n), 0), COALESCE(SUM(CAST({unsigned} AS SIGNED)), 0), "
            "MAX(LENGTH(t)), LEAST(@@group_concat_max_len, @@max_allowed_packet) "
            f"FROM ({units}) AS u"
        )

    # -- the widening ---------------------------------------------------------------------

    def widening_plan(self, plan: WideningPlan) -> WideningPlan:
        """Unbounded columns become longtext, but a primary key (an index key is at most
        3072 bytes): varchar(768)."""
        from dataclasses import replace

        from ..tables import sumatra_tables

        tables = sumatra_tables()
        columns = []
        for change in plan.columns:
            field = tables[change.table].columns[change.column].field
            if field.primary_key and change.new is None:
                change = replace(change, new=max(KEY_CHARS, change.current or 0))
            columns.append(change)
        return replace(plan, columns=columns)

    # -- the server -----------------------------------------------------------------------

    def check_new_target(self, store: Store) -> None:
        """A copy writes into a database that does not exist yet (it is created) or that
        holds no table: anything else is refused before any work."""
        tables = database_tables(store)
        if tables:
            raise Refused(
                f"{store.display} is not empty ({tables} tables); copy into a new database "
                "(smtmigrate creates it) or an empty one"
            )

    # -- copies into MariaDB (mariadb_load.py) --------------------------------------------

    def copy_target(
        self, plan: CopyPlan, events, phase
    ) -> AbstractContextManager[MariadbCopyTarget]:
        """Build in a scratch database, verify there, then RENAME every table into the
        target at once; on any error the scratch database is dropped (mariadb_load.py)."""
        from .mariadb_load import copy_target

        return copy_target(self, plan, events, phase)

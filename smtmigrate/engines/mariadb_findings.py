"""MariaDB's traps, as audit findings: values that collide under a collation, utf8mb3
columns, a non-strict server; and MariaDB's column types as Django spells them."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..findings import Finding

# The collation of every table a copy creates: binary and NO PAD, so 'Tag' <> 'tag',
# 'élevée' <> 'elevee' and 'tag' <> 'tag ' as in SQLite and PostgreSQL (`utf8mb4_bin`
# still pads: 'tag' = 'tag ' under it).
COLLATION = "utf8mb4_nopad_bin"


# Columns Sumatra finds rows by (a unique name, a label within a project, a project id):
# (today's table, column, the column that scopes the lookup).
LOOKED_UP = (
    ("django_store_tag", "name", None),
    ("django_store_record", "label", "project_id"),
    ("django_store_project", "id", None),
)
# Collations under which two different strings are never equal.
NO_COLLISIONS = frozenset({COLLATION, "utf8mb4_0900_bin", "binary"})
UTF8MB3 = frozenset({"utf8", "utf8mb3"})
STRICT_MODES = ("STRICT_TRANS_TABLES", "STRICT_ALL_TABLES")


def server_findings(sql_mode: str) -> list[Finding]:
    """A server whose sessions are not strict by default: Sumatra's own (Django sets no
    sql_mode) truncate an over-long value with a warning instead of failing."""
    from ..findings import Finding

    modes = set(sql_mode.upper().split(","))
    if modes & set(STRICT_MODES) or "TRADITIONAL" in modes:
        return []
    return [
        Finding(
            "(server)",
            "sql_mode",
            "server",
            detail=f"the server's default sql_mode ({sql_mode or 'empty'}) is not strict: "
            "Sumatra's sessions truncate over-long values with only a warning (smtmigrate's "
            "own sessions are always strict); add STRICT_TRANS_TABLES to the server's sql_mode",
        )
    ]


def utf8mb3_finding(table: str, column: str, charset: str) -> Finding:
    from ..findings import Finding

    return Finding(
        table,
        column,
        "charset",
        detail=f"{charset} column: cannot hold 4-byte characters (emoji, some CJK); "
        "a copy makes every column utf8mb4",
    )


def collision_finding(
    table: str, column: str, groups: list[tuple[list[int], list[str]]], why: str
) -> Finding:
    """One finding listing every group: ids and the variants that collide."""
    from ..findings import Finding

    return Finding(
        table,
        column,
        "collision",
        rows=sum(len(ids) - 1 for ids, _ in groups),
        examples=[{"ids": ids, "values": {column: variants}} for ids, variants in groups],
        detail=f"{len(groups)} group(s) of values {why}",
    )


def django_spelling(column_type: str) -> str:
    """MariaDB's column_type as Django's db_type spells it: display widths go, `int` is
    `integer`, `double` is `double precision`."""
    text = column_type.lower()
    match = re.fullmatch(r"(tinyint|smallint|int|bigint)\(\d+\)(.*)", text)
    if match:
        return ("integer" if match[1] == "int" else match[1]) + match[2]
    return "double precision" if text == "double" else text


def as_text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def collision_groups(rows) -> list[tuple[list[int], list[str]]]:
    """(ids, distinct values) of each group a `GROUP_CONCAT(id), GROUP_CONCAT(DISTINCT
    HEX(value))` query returns: the values as text whatever the column's bytes."""
    return [
        (
            [int(i) for i in as_text(ids).split(",")],
            [bytes.fromhex(v).decode("utf-8", "replace") for v in as_text(hexes).split(",")],
        )
        for ids, hexes in rows
    ]

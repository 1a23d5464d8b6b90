"""What an audit finds: a `Finding` and its kinds. A value module, below the engines (whose
vendor-specific checks make findings too) and the audit alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Severity order: the first three make a copy fail, the others are warnings.
KINDS = (
    "damaged",  # SQLite's own check fails (engines/sqlite_damage.py)
    "invalid",
    "overflow",
    "duplicate",
    "duplicate-label",
    "collision",  # MariaDB: values a collation makes equal
    "charset",  # MariaDB: utf8mb3 columns
    "server",  # MariaDB: a server whose default sessions are not strict
    "unprotected",  # a server store's get_or_create table without its identity (identities.py)
    "near-limit",
    "drift",
    "risk",
)
FAILING_KINDS = frozenset({"damaged", "invalid", "overflow", "duplicate"})


@dataclass
class Finding:
    table: str  # as stored, e.g. tagging_tag in a legacy store
    column: str | None
    kind: str
    limit: int | None = None
    max_length: int | None = None
    rows: int | None = None
    examples: list[dict[str, Any]] = field(default_factory=list)
    detail: str = ""

    @property
    def severity(self) -> int:
        return KINDS.index(self.kind)

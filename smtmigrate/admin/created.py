"""What the admin layer reports it created: a value, below both the admin workflows and
the move's state (`move_state.MoveResult.created`), so neither imports the other."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CreatedDatabase:
    """What `createdb` (or `move`) created."""

    name: str
    owner: str  # the owning role (PostgreSQL); the account granted on it (MariaDB)
    role_created: bool
    with_password: bool
    schema_built: bool
    # MariaDB: the account (`'user'@'host'`) granted every privilege; its databases have no
    # owner and no schema is built (a copy fills an empty database). None on PostgreSQL.
    account: str | None = None

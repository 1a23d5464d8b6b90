"""The one interface of the admin layer: what `createdb`, `drop-recreate` and `move`'s
database step ask of a server, whichever vendor it is. One implementation per vendor
(`postgresql.PostgresAdmin`, `mariadb.MariadbAdmin`); `admin.admin_for(store)` picks the
store's, so no caller asks which vendor it is talking to."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .created import CreatedDatabase

if TYPE_CHECKING:
    from ..locations import Store
    from ..move_state import MovePlan, MoveResult
    from .backup import RecreateEvents


class ServerAdmin:
    """A database server's administrative workflows (subclasses implement each)."""

    def create(
        self,
        store: Store,
        *,
        owner: str | None,
        create_role: bool,
        password: str | None,
        admin: str | None,
    ) -> CreatedDatabase:
        """`createdb`: the store's database (and its role/user with `create_role`), ready
        for Sumatra; everything checked first, what was made dropped again on a failure."""
        raise NotImplementedError

    def plan_database(self, plan: MovePlan) -> bool:
        """`move`'s plan: set `plan.create_database` (and how it is to be created); change
        nothing. Returns whether an existing database holds tables already (an earlier
        run's copy, where copies build afresh)."""
        raise NotImplementedError

    def describe_new(self, target: Store, owner: str) -> str:
        """How `move`'s plan describes the database it is to create."""
        raise NotImplementedError

    def create_for_move(self, plan: MovePlan, result: MoveResult) -> None:
        """`move`'s database step: create it empty (the copy builds the schema), and say
        so in `result` (`created_here`, `changed`)."""
        raise NotImplementedError

    def drop_for_move(self, plan: MovePlan, result: MoveResult) -> None:
        """Drop the database (and role) `create_for_move` made: the copy did not commit."""
        raise NotImplementedError

    def recreate(
        self,
        store: Store,
        *,
        owner: str | None,
        backup: str | None,
        schema: bool,
        admin: str | None,
        confirm: Callable[[str], None],
        events: RecreateEvents,
    ) -> None:
        """`drop-recreate`: back the database up, confirm, drop it and create it again
        (empty, or with Sumatra's widened schema); everything that could stop it is checked
        before anything is dropped."""
        raise NotImplementedError

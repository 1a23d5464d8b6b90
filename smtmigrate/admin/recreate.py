"""drop-recreate: back a Sumatra database up, drop it, create it again empty with Sumatra's
widened schema. Each vendor's admin does it (`ServerAdmin.recreate`; the backup they share
is backup.py); everything that could stop it is checked before anything is dropped. What it
does is told to `events` (render/stores.py), the question asked through `confirm`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from . import admin_for

if TYPE_CHECKING:
    from ..locations import Store
    from .backup import RecreateEvents


def drop_recreate(
    store: Store,
    *,
    owner: str | None,
    backup: str | None,
    schema: bool,
    admin: str | None,
    confirm: Callable[[str], None],
    events: RecreateEvents,
) -> None:
    """Back up, confirm, drop and create the store's database again (see the module)."""
    admin_for(store).recreate(
        store,
        owner=owner,
        backup=backup,
        schema=schema,
        admin=admin,
        confirm=confirm,
        events=events,
    )

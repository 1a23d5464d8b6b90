"""Django connections added at run time for the stores a user names."""

from __future__ import annotations

import itertools
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections

_aliases = itertools.count(1)


def register_database(settings_dict: dict[str, Any], prefix: str = "store") -> str:
    """Add a database to `django.db.connections` under a fresh alias and return the alias.

    Django fills the defaults (TIME_ZONE, OPTIONS, TEST, ...) only for the databases it
    was configured with, so the new entry goes through the same `configure_settings`.
    """
    alias = f"{prefix}{next(_aliases)}"
    configured = connections.configure_settings({DEFAULT_DB_ALIAS: {}, alias: dict(settings_dict)})
    connections.settings[alias] = configured[alias]
    return alias


def unregister_database(alias: str) -> None:
    """Close the connection and forget the alias."""
    if alias in connections.settings:
        connections[alias].close()
        del connections[alias]
        del connections.settings[alias]

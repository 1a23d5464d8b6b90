"""Errors a user can cause. Each carries the exit code the CLI ends with.

Exit codes are the tool's contract with scripts:
  0  done, nothing wrong
  1  refused, or findings (a store that would fail on its server), verification differences
  2  usage, I/O or connection errors: the command could not look at what it was given
130  interrupted (Ctrl-C)
"""

from __future__ import annotations


class SmtmigrateError(Exception):
    """Base class: a one-line message for the user and an exit code."""

    exit_code = 2


class LocationError(SmtmigrateError):
    """What the user typed does not name a store smtmigrate can open."""


class NotASumatraStore(LocationError):
    """The database opens but does not hold Sumatra's tables."""


class UnsupportedStore(LocationError):
    """A Sumatra store of a kind smtmigrate does not move (shelve, http, MySQL)."""


class StoreConnectionError(SmtmigrateError):
    """The database server or file could not be reached or read."""


class DatabaseMissing(StoreConnectionError):
    """The server answers, but the store's database does not exist (yet)."""


class RecordReadError(StoreConnectionError):
    """Records could not be read back from a store (an odd store, or its reader failed)."""


class MissingDriver(SmtmigrateError):
    """A store whose database driver is an optional extra that is not installed here
    (mysqlclient, for MariaDB/MySQL: `smtmigrate[mariadb]`)."""


class PoolerError(SmtmigrateError):
    """PgBouncer is missing, or did not start or stop (`pooler`, `move --pooler`)."""


class UnknownLayout(SmtmigrateError):
    """Sumatra's tables are there, but not in a layout smtmigrate knows."""


class Refused(SmtmigrateError):
    """The command looked and decided not to act (e.g. target not empty)."""

    exit_code = 1


class TargetNotEmpty(Refused):
    """A copy's target already holds Sumatra data (move then looks for its earlier copy)."""


class MariadbNotYet(UnsupportedStore):
    """A MariaDB/MySQL store given to a command that does not handle one yet. The command
    (management/base.py) names itself in the message when the library did not."""

    def __init__(self, display: str, command: str | None = None) -> None:
        self.display, self.command = display, command
        what = f"`smtmigrate {command}`" if command else "this command"
        super().__init__(
            f"{display}: MySQL/MariaDB stores are not supported by {what} yet "
            f"(so far: {MARIADB_SUPPORTED})"
        )


MARIADB_SUPPORTED = (
    "audit, verify, switch, createdb, drop-recreate, move, protect, stress, widen, "
    "copy from SQLite or PostgreSQL into MariaDB and out of MariaDB"
)


class StoreDamaged(SmtmigrateError):
    """An SQLite store fails SQLite's own check: a command that copies it refuses (the audit
    reports the damage as a finding instead)."""

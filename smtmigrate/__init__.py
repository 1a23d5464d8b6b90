"""smtmigrate: move Sumatra record stores off SQLite onto PostgreSQL, safely and fast."""

__version__ = "0.1.0"

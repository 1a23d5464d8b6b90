"""Synthetic Sumatra 0.8.1 SQLite record stores, for benchmarks and tests (not shipped).

The schema is made by Sumatra's own migrations, so it is exactly what `smt init` creates; the
rows are then bulk-loaded with the plain `sqlite3` module (Django's ORM would take hours for
100k records), as tuples in the column order of `smtmigrate.schema.sumatra_tables()` (the
installed models), from which the INSERT statements are built. Rows are shaped like the
ones `DjangoRecordStore.save()` writes: shared rows (executables, dependencies, launch
modes, ...) are deduplicated pools, the tag tables agree with the denormalised
`Record.tags`, and every value reads back through Sumatra's `to_sumatra()`.

`overlong=True` plants a few values longer than their column's `max_length` (as real stores
hold); `GeneratedStore.planted` says exactly which, so an audit can be checked against it.

    python -m tests.storegen PATH --records N [--seed S] [--overlong] [--projects P]
    (from the repository root; `vocabulary` holds the pools of names, `builder` the rows)
"""

from __future__ import annotations

import argparse
import errno
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .builder import _TABLES, _Builder, _columns
from .vocabulary import MIN_RECORDS_OVERLONG

__all__ = ["MIN_RECORDS_OVERLONG", "GeneratedStore", "generate_store", "main"]


@dataclass
class GeneratedStore:
    """What `generate_store` wrote.

    `rows`: row count per table (every table in the file, read back after the load).
    `planted`: `{(table, column): {"rows": n, "max_length": m}}` for the values planted over
    their column's max_length (empty unless `overlong=True`); nothing else exceeds a limit.
    """

    path: Path
    rows: dict[str, int]
    planted: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    projects: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


def ensure_django() -> None:
    """Set Django up with smtmigrate's settings unless the caller already did."""
    from django.apps import apps

    if not apps.ready:
        import django

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "smtmigrate.settings")
        django.setup()


def _create_schema(path: Path) -> Callable[[str], str]:
    """Let Sumatra's migrations build the schema, exactly as `smt init` would; return the
    identifier quoting of that (SQLite) connection."""
    from django.core.management import call_command
    from django.db import connections

    from smtmigrate.db import register_database, unregister_database

    alias = register_database({"ENGINE": "django.db.backends.sqlite3", "NAME": str(path)})
    try:
        call_command("migrate", database=alias, run_syncdb=True, verbosity=0, interactive=False)
        return connections[alias].ops.quote_name
    finally:
        unregister_database(alias)


def _inserts(quote: Callable[[str], str]) -> dict[str, str]:
    """The INSERT statement of every table filled, derived from `sumatra_tables()`."""
    inserts = {}
    for table in _TABLES:
        columns = _columns(table)
        inserts[table] = (
            f"INSERT INTO {quote(f'django_store_{table}')} "
            f"({', '.join(map(quote, columns))}) VALUES ({', '.join('?' * len(columns))})"
        )
    return inserts


def _record_content_type(con: sqlite3.Connection) -> int:
    """Id of ('django_store', 'record') in this file; post_migrate normally created it."""
    query = "SELECT id FROM django_content_type WHERE app_label = ? AND model = ?"
    row = con.execute(query, ("django_store", "record")).fetchone()
    if row is None:
        con.execute(
            "INSERT INTO django_content_type (app_label, model) VALUES (?, ?)",
            ("django_store", "record"),
        )
        row = con.execute(query, ("django_store", "record")).fetchone()
    return int(row[0])


def generate_store(
    path: str | Path,
    records: int,
    *,
    seed: int = 0,
    overlong: bool = False,
    projects: int = 1,
    progress: Callable[[int], None] | None = None,
) -> GeneratedStore:
    """Write a new Sumatra 0.8.1 SQLite store of `records` synthetic records at `path`.

    Same arguments, same file contents (bar the `django_migrations.applied` times).
    `progress`, if given, is called with the number of records written so far.
    Raises FileExistsError rather than touch an existing file.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(errno.EEXIST, "will not overwrite an existing file", str(path))
    started = time.perf_counter()
    builder = _Builder(records, seed, overlong, projects)  # validates before creating anything
    ensure_django()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        quote = _create_schema(path)
        inserts = _inserts(quote)
        con = sqlite3.connect(path, isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode=OFF")  # a failed load is deleted, not rolled back
            con.execute("PRAGMA synchronous=OFF")
            con.execute("PRAGMA cache_size=-32768")  # 32 MiB keeps the hot index pages cached
            con.execute("BEGIN")
            content_type = _record_content_type(con)
            for table in ("project", "executable", "repository", "launchmode", "datastore",
                          "platforminformation", "dependency"):  # fmt: skip
                con.executemany(inserts[table], builder.pools[table])
            done = 0
            for batch in builder.batches(content_type):
                for table, rows in batch.items():
                    if rows:
                        con.executemany(inserts[table], rows)
                if "record" in batch:
                    done += len(batch["record"])
                    if progress is not None:
                        progress(done)
            # Last: planting tags over 255 joined characters adds tags while records are made.
            con.executemany(inserts["tag"], builder.pools["tag"])
            con.execute("COMMIT")
            con.execute("PRAGMA journal_mode=DELETE")  # what Django/Sumatra leave by default
            tables = [
                name
                for (name,) in con.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite_%' ORDER BY name"
                )
            ]
            count = "SELECT COUNT(*) FROM {}"
            counts = {t: con.execute(count.format(quote(t))).fetchone()[0] for t in tables}
        finally:
            con.close()
    except BaseException:
        path.unlink(missing_ok=True)  # journal_mode=OFF: a half-written file is worthless
        raise
    return GeneratedStore(
        path=path,
        rows=counts,
        planted=builder.planted,
        projects=[p["id"] for p in builder.projects],
        seconds=time.perf_counter() - started,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.storegen",
        description="Generate a synthetic Sumatra 0.8.1 SQLite record store.",
    )
    parser.add_argument("path", type=Path, help="new SQLite file (must not exist)")
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overlong", action="store_true", help="plant over-long values")
    parser.add_argument("--projects", type=int, default=1)
    args = parser.parse_args(argv)

    def report(done: int) -> None:
        print(f"\r{done:,}/{args.records:,} records", end="", file=sys.stderr, flush=True)

    try:
        store = generate_store(
            args.path,
            args.records,
            seed=args.seed,
            overlong=args.overlong,
            projects=args.projects,
            progress=report if sys.stderr.isatty() else None,
        )
    except (FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if sys.stderr.isatty():
        print(file=sys.stderr)
    width = max(map(len, store.rows))
    for table, count in store.rows.items():
        print(f"{table:<{width}}  {count:>12,}")
    print(f"{'total':<{width}}  {store.total_rows:>12,}")
    for (table, column), info in sorted(store.planted.items()):
        print(f"planted {table}.{column}: {info['rows']} rows, max length {info['max_length']}")
    size = store.path.stat().st_size
    print(f"projects: {', '.join(store.projects)}")
    print(f"file: {store.path} ({size / 2**20:,.1f} MiB)")
    print(f"elapsed: {store.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Time the two bulk paths into MariaDB on the same rows: `LOAD DATA LOCAL INFILE` fed by
a named pipe (what `smtmigrate copy` does) against batched multi-row INSERTs (mysqlclient's
`executemany`, 2,000 rows a statement). Both load every django_store_* table of an SQLite
store into empty copies (`CREATE TABLE … LIKE`) of the tables of SCHEMA_DB, a database
`smtmigrate copy` made from that store; foreign-key checks off, strict session.

    .venv/bin/python bench/mariadb_load.py STORE.sqlite SCHEMA_DB [--user root]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import threading
import time

import MySQLdb

BATCH = 2_000
SESSION = "SET foreign_key_checks = 0, sql_mode = 'TRADITIONAL'"


def escaped(value: object) -> bytes:
    """One field in LOAD DATA's default format (the canonical line's escaping)."""
    if value is None:
        return b"\\N"
    data = value if isinstance(value, bytes) else repr(value).encode()
    for raw, escape in ((b"\\", b"\\\\"), (b"\t", b"\\t"), (b"\n", b"\\n"), (b"\r", b"\\r")):
        data = data.replace(raw, escape)
    return data


def columns(source: sqlite3.Connection, table: str) -> list[str]:
    return [row[1].decode() for row in source.execute(f"PRAGMA table_info(`{table}`)")]


def load_data(source, tables, connect) -> float:
    conn = connect(local_infile=1)
    cursor = conn.cursor()
    cursor.execute(SESSION)
    pipe = os.path.join(tempfile.mkdtemp(), "rows")
    os.mkfifo(pipe, 0o600)
    started = time.perf_counter()
    for table in tables:
        names = columns(source, table)

        def write(table: str = table) -> None:
            with open(pipe, "wb", buffering=1 << 20) as out:
                for row in source.execute(f"SELECT * FROM `{table}`"):
                    out.write(b"\t".join(map(escaped, row)) + b"\n")

        writer = threading.Thread(target=write)
        writer.start()
        cursor.execute(
            f"LOAD DATA LOCAL INFILE %s INTO TABLE `{table}` CHARACTER SET utf8mb4 "
            f"({', '.join(f'`{n}`' for n in names)})",
            [pipe],
        )
        writer.join()
    conn.commit()
    conn.close()
    return time.perf_counter() - started


def inserts(source, tables, connect) -> float:
    conn = connect()
    cursor = conn.cursor()
    cursor.execute(SESSION)
    started = time.perf_counter()
    for table in tables:
        names = columns(source, table)
        statement = (
            f"INSERT INTO `{table}` ({', '.join(f'`{n}`' for n in names)}) "
            f"VALUES ({', '.join(['%s'] * len(names))})"
        )
        rows = source.execute(f"SELECT * FROM `{table}`")
        while chunk := rows.fetchmany(BATCH):
            cursor.executemany(statement, chunk)
    conn.commit()
    conn.close()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store")
    parser.add_argument("schema_db")
    parser.add_argument("--user", default="root")
    args = parser.parse_args()
    admin = MySQLdb.connect(user=args.user, charset="utf8mb4")
    cursor = admin.cursor()
    cursor.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
        "AND table_name LIKE 'django\\_store\\_%%'",
        [args.schema_db],
    )
    tables = sorted(name for (name,) in cursor.fetchall())
    source = sqlite3.connect(args.store, check_same_thread=False)
    source.text_factory = bytes
    for name, run in (("LOAD DATA LOCAL (named pipe)", load_data), ("multi-row INSERT", inserts)):
        database = f"smtm_bench_load_{os.getpid()}"
        cursor.execute(f"CREATE DATABASE `{database}` COLLATE utf8mb4_nopad_bin")
        try:
            for table in tables:
                cursor.execute(
                    f"CREATE TABLE `{database}`.`{table}` LIKE `{args.schema_db}`.`{table}`"
                )

            def connect(database: str = database, **options) -> MySQLdb.Connection:
                return MySQLdb.connect(
                    user=args.user, charset="utf8mb4", database=database, **options
                )

            print(f"{name}: {run(source, tables, connect):.2f} s")
        finally:
            cursor.execute(f"DROP DATABASE `{database}`")


if __name__ == "__main__":
    main()

"""A writer that keeps changing a Sumatra store while smtmigrate reads it (test_snapshot.py).

    python snapshot_writer.py MODE STORE LOG STOP

STORE is an SQLite file or a postgresql:// URL. Until the file STOP exists, in a loop
(numbering on from where an earlier writer on the same store stopped):
  toggle   one transaction: add (odd n) or remove (even n) the tag `snapshot-toggle` of
           record 1 in django_store_taggeditem and in Record.tags, and set its reason to
           `toggle n`;
  insert   one transaction: a new record `w-n` (a copy of record 1) + its platform link +
           its tag `baseline`;
  sumatra  Sumatra's own `DjangoRecordStore.save` of a record labelled `w-n` (Sumatra
           commits statement by statement).
After each commit it appends `n <unix time>` to LOG: the committed states, for the oracle.
"""

from __future__ import annotations

import os
import sys
import time

TAG = "snapshot-toggle"
BASE_TAGS = "baseline,_finished_"
LOST = 3  # exit code: the connection was killed (the database dropped)


def connect(store: str):
    if store.startswith("postgresql://"):
        import psycopg2

        conn = psycopg2.connect(store)
        return conn, "%s", "postgresql"
    import sqlite3

    conn = sqlite3.connect(store, timeout=30, isolation_level=None)
    return conn, "?", "sqlite"


def begin(conn, vendor: str):
    cur = conn.cursor()
    if vendor == "sqlite":
        cur.execute("BEGIN IMMEDIATE")
    return cur


def commit(conn, vendor: str) -> None:
    if vendor == "sqlite":
        conn.execute("COMMIT")
    else:
        conn.commit()


def record_content_type(cur, p: str) -> int:
    cur.execute(
        f"SELECT id FROM django_content_type WHERE app_label = {p} AND model = {p}",
        ("django_store", "record"),
    )
    return cur.fetchone()[0]


def tag_id(cur, p: str, name: str) -> int:
    cur.execute(f"SELECT id FROM django_store_tag WHERE name = {p}", (name,))
    row = cur.fetchone()
    if row is None:
        cur.execute(f"INSERT INTO django_store_tag (name) VALUES ({p})", (name,))
        cur.execute(f"SELECT id FROM django_store_tag WHERE name = {p}", (name,))
        row = cur.fetchone()
    return row[0]


def toggle(conn, p: str, vendor: str, n: int) -> None:
    cur = begin(conn, vendor)
    ct = record_content_type(cur, p)
    tag = tag_id(cur, p, TAG)
    if n % 2:
        cur.execute(
            "INSERT INTO django_store_taggeditem (object_id, content_type_id, tag_id) "
            f"VALUES (1, {p}, {p})",
            (ct, tag),
        )
        tags = f"{BASE_TAGS},{TAG}"
    else:
        cur.execute(
            f"DELETE FROM django_store_taggeditem WHERE object_id = 1 AND tag_id = {p}", (tag,)
        )
        tags = BASE_TAGS
    cur.execute(
        f"UPDATE django_store_record SET tags = {p}, reason = {p} WHERE db_id = 1",
        (tags, f"toggle {n}"),
    )
    commit(conn, vendor)


def insert(conn, p: str, vendor: str, n: int, columns: list[str]) -> None:
    cur = begin(conn, vendor)
    ct = record_content_type(cur, p)
    tag = tag_id(cur, p, "baseline")
    names = ", ".join(f'"{c}"' for c in columns)
    values = ", ".join(
        p if c in ("label", "tags") else f'"{c}"' for c in columns
    )  # label and tags are new, the rest is record 1's
    cur.execute(
        f"INSERT INTO django_store_record ({names}) "
        f"SELECT {values} FROM django_store_record WHERE db_id = 1",
        (f"w-{n}", "baseline"),
    )
    cur.execute(f"SELECT db_id FROM django_store_record WHERE label = {p}", (f"w-{n}",))
    new = cur.fetchone()[0]
    cur.execute(
        "INSERT INTO django_store_record_platforms (record_id, platforminformation_id) "
        f"SELECT {p}, platforminformation_id FROM django_store_record_platforms "
        "WHERE record_id = 1",
        (new,),
    )
    cur.execute(
        "INSERT INTO django_store_taggeditem (object_id, content_type_id, tag_id) "
        f"VALUES ({p}, {p}, {p})",
        (new, ct, tag),
    )
    commit(conn, vendor)


def record_columns(conn, vendor: str) -> list[str]:
    cur = conn.cursor()
    if vendor == "sqlite":
        cur.execute("PRAGMA table_info(django_store_record)")
        names = [row[1] for row in cur.fetchall()]
    else:
        cur.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'django_store_record' ORDER BY ordinal_position"
        )
        names = [row[0] for row in cur.fetchall()]
        conn.commit()
    return [name for name in names if name != "db_id"]


def last_state(conn, vendor: str) -> int:
    """The n an earlier writer on this store stopped at: numbering goes on from there."""
    cur = conn.cursor()
    cur.execute("SELECT reason FROM django_store_record WHERE db_id = 1")
    (reason,) = cur.fetchone()
    cur.execute("SELECT count(*) FROM django_store_record WHERE substr(label, 1, 2) = 'w-'")
    (inserted,) = cur.fetchone()
    if vendor == "postgresql":
        conn.commit()
    return int(reason.split()[1]) if reason.startswith("toggle ") else inserted


def sumatra_loop(store: str, log, stop: str) -> None:
    import copy

    from sumatra.recordstore.django_store import DjangoRecordStore

    records = DjangoRecordStore(store)
    (project,) = records.list_projects()
    template = records.list(project)[0]
    n = 0
    while not os.path.exists(stop):
        n += 1
        record = copy.deepcopy(template)
        record.label = f"w-{n}"
        record.tags = {"baseline", f"w-{n}"}
        records.save(project, record)
        log.write(f"{n} {time.time()}\n")
        log.flush()


def main(mode: str, store: str, log_path: str, stop: str) -> None:
    with open(log_path, "a", buffering=1) as log:
        if mode == "sumatra":
            sumatra_loop(store, log, stop)
            return
        conn, p, vendor = connect(store)
        columns = record_columns(conn, vendor)
        n = last_state(conn, vendor)
        while not os.path.exists(stop):
            n += 1
            try:
                if mode == "toggle":
                    toggle(conn, p, vendor, n)
                else:
                    insert(conn, p, vendor, n, columns)
            except Exception as exc:
                if "terminat" in str(exc) or "closed" in str(exc):
                    sys.exit(LOST)  # the database was dropped under us (drop-recreate)
                raise
            log.write(f"{n} {time.time()}\n")
            log.flush()
            time.sleep(0.002)  # a busy store, not a lock hog: others get their turn
        conn.close()


if __name__ == "__main__":
    main(*sys.argv[1:5])

"""A damaged SQLite store: SQLite's own check of a snapshot file, which table or index owns
the damaged pages, and (on request) a new file holding what can still be read.

Every reader of an SQLite store reads its snapshot (snapshot.py), a byte copy (a
rollback-journal store) or a page copy (a WAL store, the backup API) of the store: neither
parses a page, so the snapshot holds the store's damage exactly, and checking the snapshot
checks what every reader of the command reads. A store that fails the check may lose rows
on its next read (a scan that ends at a damaged page, an index lookup that misses), so a
command that copies it refuses (`StoreDamaged`), the audit reports it as a finding, and
`--copy-readable` copies what can be read into a new snapshot file first.
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import StoreDamaged

# What a command does with a damaged SQLite store (snapshot.source_snapshot's `damaged`).
REFUSE = "refuse"  # StoreDamaged, exit 2: copy, move, merge, verify, a backup
REPORT = "report"  # the snapshot carries the damage: the audit reports it as a finding
COPY_READABLE = "copy-readable"  # read what can be read into a new snapshot file
DAMAGED_MODES = (REFUSE, REPORT, COPY_READABLE)

# `quick_check` checks every page of every b-tree (cells, free space, overflow chains,
# the freelist) and NULL/CHECK constraints, but not that each index holds exactly its
# table's rows. Measured on the 100k-record store (337 MB, page cache warm): quick_check
# ~0.6 s against ~2.5 s for integrity_check (see docs/damaged-stores.md).
CHECK = "quick_check"
MAX_MESSAGES = 100  # SQLite's own default: the check stops after this many errors
SHOWN = 1  # messages in one line (the audit's JSON has them all)

_PAGE_PATTERNS = (
    re.compile(r"\b[Tt]ree (\d+) page (\d+)"),  # root page, then the page
    re.compile(r"\bOn tree page (\d+)"),
    re.compile(r"\bpage (\d+)"),
)
_INDEX_NAMED = re.compile(r"\bindex (\S+)$")


@dataclass(frozen=True)
class Owner:
    """A table or index that holds damaged pages."""

    name: str
    type: str  # "table" or "index"
    table: str  # the table it belongs to (itself for a table)

    @property
    def described(self) -> str:
        if self.type == "index":
            return f"index {self.name} of table {self.table}"
        return f"table {self.name}"


@dataclass
class Unreadable:
    """A table `--copy-readable` could not read whole."""

    table: str
    rows_read: int
    rows_expected: int | None  # count(*) when SQLite could still count them (an index)
    error: str

    @property
    def described(self) -> str:
        lost = ""
        if self.rows_expected is not None:
            lost = f", {max(self.rows_expected - self.rows_read, 0):,} could not be"
        return f"{self.table}: {self.rows_read:,} rows read{lost} ({self.error})"


@dataclass
class Damage:
    """What SQLite's check said about a store, and where."""

    check: str
    messages: list[str]
    owners: list[Owner]
    seconds: float
    unreadable: list[Unreadable] = field(default_factory=list)  # set by copy_readable
    # Rows left out because they refer to rows that could not be read: per table.
    orphans: dict[str, int] = field(default_factory=dict)
    readable: bool = False  # the snapshot now holds what could be read (copy_readable)

    @property
    def only_indexes(self) -> bool:
        """Only indexes are damaged: every table's rows can be read (VACUUM INTO rebuilds
        the indexes from them)."""
        return bool(self.owners) and all(o.type == "index" for o in self.owners)

    @property
    def said(self) -> str:
        """SQLite's first messages, in one line."""
        shown = "; ".join(self.messages[:SHOWN])
        more = len(self.messages) - SHOWN
        return shown + (f" (and {more} more)" if more > 0 else "")

    @property
    def where(self) -> str:
        if not self.owners:
            return "no table or index could be named"
        return ", ".join(o.described for o in self.owners)

    def repair_hint(self, store: Path | str) -> str:
        """How to repair the store, and the option that copies it anyway."""
        if self.only_indexes:
            return (
                f"Only indexes are damaged: rebuild them into a new file "
                f"(`sqlite3 {store} \"VACUUM INTO 'NEW'\"`: REINDEX in place fails on the "
                "damaged pages) and use that; or copy it with --copy-readable (copy, move, "
                "merge), which rebuilds them"
            )
        return (
            f"Repair it into a new file (`sqlite3 {store} .recover | sqlite3 NEW`, with a "
            f"shell built with .recover, or `smtmigrate copy {store} NEW --copy-readable`) "
            "and use that; or copy what can be read with --copy-readable (copy, move, merge)"
        )

    def to_dict(self) -> dict:
        return {
            "check": self.check,
            "messages": self.messages,
            "owners": [asdict(o) for o in self.owners],
            "seconds": round(self.seconds, 3),
            "only_indexes": self.only_indexes,
            "readable_copy": self.readable,
            "unreadable": [asdict(u) for u in self.unreadable],
            "orphans_left_out": self.orphans,
        }


@dataclass(frozen=True)
class CheckResult:
    """The check of one snapshot: its cost, and the damage (None: SQLite found none)."""

    seconds: float
    damage: Damage | None

    def to_dict(self) -> dict:
        return {"pragma": CHECK, "seconds": round(self.seconds, 3), "ok": self.damage is None}


def check_file(path: Path) -> CheckResult:
    """SQLite's `CHECK` of the file at `path` (a snapshot: only this process reads it)."""
    started = time.perf_counter()
    messages, missing = _truncation(path)
    said = _said(path)
    if said is None:
        return CheckResult(time.perf_counter() - started, None)
    messages += said
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        _past_the_end(connection)
        owners = _owners(connection, messages, missing)
    finally:
        connection.close()
    seconds = time.perf_counter() - started
    return CheckResult(seconds, Damage(CHECK, messages, owners, seconds))


def _said(path: Path) -> list[str] | None:
    """The check's messages (None: "ok"). On some damage the check itself fails with
    "database disk image is malformed" in one process and lists the damage in the next
    (seen with 3.40.1): a damaged store is asked again, on new connections, for details."""
    error = None
    for _ in range(3):
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = connection.execute(f"PRAGMA {CHECK}({MAX_MESSAGES})").fetchall()
        except sqlite3.DatabaseError as exc:  # e.g. the schema itself cannot be read
            error = str(exc)
            continue
        finally:
            connection.close()
        lines = [line for (text,) in rows for line in str(text).splitlines()]
        if lines == ["ok"]:
            return None
        return [line for line in lines if not line.startswith("*** in database")]
    return [error or "the check failed"]


def refusal(display: str, live: Path | str, damage: Damage) -> StoreDamaged:
    """The one line a command that will not read a damaged store ends with."""
    return StoreDamaged(
        f"{display} is damaged: SQLite's {damage.check} says: {damage.said} "
        f"[{damage.where}]; nothing was written. {damage.repair_hint(live)}"
    )


def _truncation(path: Path) -> tuple[list[str], range]:
    """A file shorter than the page count its header gives (a copy cut short, a full disk):
    what to say, and the pages missing."""
    with path.open("rb") as fh:
        header = fh.read(100)
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        return [], range(0)
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    size = path.stat().st_size
    if not pages or size >= pages * page_size:
        return [], range(0)
    message = (
        f"the file is truncated: {size:,} bytes, its header counts {pages:,} pages of "
        f"{page_size:,} bytes ({pages * page_size:,} bytes)"
    )
    return [message], range(size // page_size + 1, pages + 1)


def _past_the_end(connection: sqlite3.Connection) -> None:
    """Let `connection` read a truncated file as far as it goes. SQLite refuses a file
    shorter than its header says at the first read; `writable_schema` skips that check
    (and nothing else: the connection is read-only), and pages past the end read as zeros,
    i.e. as damaged pages."""
    connection.execute("PRAGMA writable_schema = ON")


def _owners(connection: sqlite3.Connection, messages: list[str], missing: range) -> list[Owner]:
    """The tables and indexes the messages point at: pages looked up in the `dbstat`
    virtual table (it walks every b-tree), else the root pages in `sqlite_master`."""
    try:
        schema = connection.execute(
            "SELECT name, type, tbl_name, rootpage FROM sqlite_master "
            "WHERE type IN ('table', 'index')"
        ).fetchall()
    except sqlite3.DatabaseError:
        return []
    by_name = {name: Owner(name, kind, table) for name, kind, table, _ in schema}
    by_root = {root: by_name[name] for name, _, _, root in schema if root}
    pages: set[int] = set(missing)
    found: dict[str, Owner] = {}
    for message in messages:
        named = _INDEX_NAMED.search(message)  # "row 5 missing from index X", …
        if named and named.group(1) in by_name:
            found[named.group(1)] = by_name[named.group(1)]
        for pattern in _PAGE_PATTERNS:
            match = pattern.search(message)
            if match:
                for page in match.groups():
                    pages.add(int(page))
                break
    try:  # the pages named, and those dbstat itself finds corrupted (SQLite takes `IN ()`)
        placeholders = ", ".join("?" * len(pages))
        rows = connection.execute(
            f"SELECT DISTINCT name FROM dbstat "
            f"WHERE pagetype = 'corrupted' OR pageno IN ({placeholders})",
            sorted(pages),
        ).fetchall()
    except sqlite3.DatabaseError:  # no dbstat in this build, or it cannot walk the tree
        rows = [(by_root[p].name,) for p in sorted(pages) if p in by_root]
    for (name,) in rows:
        if name in by_name:
            found.setdefault(name, by_name[name])
    return sorted(found.values(), key=lambda o: (o.type, o.name))


# --------------------------------------------------------------------------- readable copy


def copy_readable(display: str, damaged: Path, path: Path, damage: Damage) -> None:
    """Every row of `damaged` SQLite can still read, into the new file `path`, with the same
    schema; indexes are built anew from those rows. A table whose scan stops at a damaged
    page is read from both ends (rowid ascending, then descending up to the damage); what
    could not be read is in `damage.unreadable`. Raises StoreDamaged when not even the
    schema can be read."""
    source = sqlite3.connect(f"file:{damaged}?mode=ro", uri=True)
    target = sqlite3.connect(path, isolation_level=None)
    _past_the_end(source)
    try:
        try:
            schema = source.execute(
                "SELECT type, name, sql FROM sqlite_master "
                "WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
                "ORDER BY type != 'table', rowid"
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreDamaged(
                f"{display} is damaged beyond --copy-readable: not even its schema can be read "
                f"({exc}); nothing was written"
            ) from exc
        target.execute("PRAGMA journal_mode = OFF")
        target.execute("PRAGMA synchronous = OFF")
        target.execute("BEGIN")
        tables = [name for kind, name, _ in schema if kind == "table"]
        for _, _, sql in [row for row in schema if row[0] == "table"]:
            target.execute(sql)
        if _has(target, "sqlite_sequence"):  # made by the first AUTOINCREMENT table
            tables.append("sqlite_sequence")
        for name in tables:
            lost = _copy_table(source, target, name)
            if lost is not None:
                damage.unreadable.append(lost)
        damage.orphans = _drop_orphans(target, {u.table for u in damage.unreadable})
        for kind, _, sql in schema:
            if kind != "table":
                target.execute(sql)  # indexes built from the rows read, views, triggers
        target.execute("COMMIT")
    finally:
        source.close()
        target.close()
    damage.readable = True


def _drop_orphans(connection: sqlite3.Connection, lost: set[str]) -> dict[str, int]:
    """Rows that refer to rows of `lost` tables that could not be read, removed (and, in
    turn, those that refer to them), so the copy holds no reference to nothing. Dangling
    references the store had already are kept: the audit reports them as it always does."""
    dropped: dict[str, int] = {}
    while lost:
        orphans: dict[str, list[int]] = {}
        for table, rowid, parent, _ in connection.execute("PRAGMA foreign_key_check"):
            if parent in lost and rowid is not None:
                orphans.setdefault(table, []).append(rowid)
        for table, rowids in orphans.items():
            quoted = '"' + table.replace('"', '""') + '"'
            connection.executemany(f"DELETE FROM {quoted} WHERE rowid = ?", [[r] for r in rowids])
            dropped[table] = dropped.get(table, 0) + len(rowids)
        lost = set(orphans)
    return dropped


def _has(connection: sqlite3.Connection, table: str) -> bool:
    return bool(
        connection.execute("SELECT 1 FROM sqlite_master WHERE name = ?", [table]).fetchone()
    )


def _copy_table(
    source: sqlite3.Connection, target: sqlite3.Connection, table: str
) -> Unreadable | None:
    quoted = '"' + table.replace('"', '""') + '"'
    try:
        columns = [row[1] for row in source.execute(f"PRAGMA table_info({quoted})")]
    except sqlite3.DatabaseError as exc:
        return Unreadable(table, 0, None, str(exc))
    insert = f"INSERT OR IGNORE INTO {quoted} VALUES ({', '.join('?' * len(columns))})"
    _, error = _scan(source, target, quoted, insert, descending=False)
    if error is None:
        return None
    _scan(source, target, quoted, insert, descending=True)  # the rows after the damage
    read = target.execute(f"SELECT count(*) FROM {quoted}").fetchone()[0]
    try:
        expected = source.execute(f"SELECT count(*) FROM {quoted}").fetchone()[0]
    except sqlite3.DatabaseError:
        expected = None
    return Unreadable(table, read, expected, error)


def _scan(
    source: sqlite3.Connection,
    target: sqlite3.Connection,
    quoted: str,
    insert: str,
    *,
    descending: bool,
) -> tuple[int, str | None]:
    """A table's rows in rowid order into `insert` until the scan meets a damaged page: how
    many, and the error (None: it read them all).

    Python's sqlite3 steps to the next row before it hands out the current one: a scan
    that fails drops the last good row. From there, rows are fetched one query each
    (`LIMIT 1` stops without stepping on) until that fails too."""
    order, after = ("DESC", "<") if descending else ("ASC", ">")
    select = f"SELECT rowid, * FROM {quoted}"
    count, last, batch = 0, None, []
    try:
        for row in source.execute(f"{select} ORDER BY rowid {order}"):
            batch.append(row[1:])
            last = row[0]
            if len(batch) == 2_000:
                target.executemany(insert, batch)
                count, batch = count + len(batch), []
        target.executemany(insert, batch)
        return count + len(batch), None
    except sqlite3.DatabaseError as exc:
        error = str(exc)
    target.executemany(insert, batch)
    count += len(batch)
    one = f"{select} WHERE ? IS NULL OR rowid {after} ? ORDER BY rowid {order} LIMIT 1"
    while True:
        try:
            row = source.execute(one, [last, last]).fetchone()
        except sqlite3.DatabaseError:
            return count, error
        if row is None:
            return count, error
        target.execute(insert, row[1:])
        count, last = count + 1, row[0]

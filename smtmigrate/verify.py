"""Two stores → are they the same? Row counts, row checksums, records through Sumatra.

Three levels, cheapest first:
  1. every table's row count;
  2. a checksum of every row's canonical values (canonical.py): the md5 of each unit of
     1,024 keys (its rows' canonical lines in key order), summed; every engine builds the
     lines in SQL, so a server store is checked by the server itself, floats by their
     exact bits;
  3. every record of every project read back through Sumatra's own models on both sides
     and compared field by field, tags included (records/); at level "sample", an even
     spread of 1,000 of them (`records.compare_sample`): Sumatra reads the target as it
     reads the source, while level 2 already proves every value arrived exactly.
Content-type ids differ between stores (each database numbers its own); they are mapped
by (app_label, model) before comparing. After a copy with `--dedupe` the source side is
read as deduplicated (dedupe.py): merged-away rows and dropped links left out, foreign
keys re-pointed; its records are compared as they are (see `compare_records`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .canonical import Checksum, TableLayout, table_layout
from .dedupe import DedupePlan
from .remaps import content_type_remap, merge_remaps
from .schema import Inspection, sumatra_tables
from .threads import on_a_thread, on_own_connection, threads_read

if TYPE_CHECKING:  # records/ loads Sumatra: only when records are compared
    from .records import RecordComparison, RecordDifference
    from .records.comparison import Sample

Phase = Callable[[str], AbstractContextManager]
CHECK_THREADS = 2  # tables checksummed at once (see verify_stores)
Level = Literal["full", "sample", "rows"]
# What each level reads back through Sumatra on both sides, beyond every table's row count
# and every row's checksum: every record; a sample of them (records/); none.
LEVELS: tuple[Level, ...] = ("full", "sample", "rows")
# A copy's (and move's) verification unless told otherwise.
DEFAULT_LEVEL: Level = "sample"


@dataclass
class TableCheck:
    table: str  # today's name
    source_rows: int
    target_rows: int
    source_checksum: str
    target_checksum: str

    @property
    def ok(self) -> bool:
        return (self.source_rows, self.source_checksum) == (self.target_rows, self.target_checksum)

    @property
    def problem(self) -> str:
        if self.source_rows != self.target_rows:
            return (
                f"{self.table}: {self.source_rows:,} rows in the source, "
                f"{self.target_rows:,} in the target"
            )
        return f"{self.table}: same {self.source_rows:,} rows, different values (checksums differ)"


@dataclass
class Verification:
    tables: list[TableCheck]
    records: RecordComparison | None = None  # None: records were not compared
    seconds: dict[str, float] = field(default_factory=dict)
    # "source"/"target" → the snapshot.Snapshot that side was read in (set by the caller)
    snapshots: dict[str, Any] = field(default_factory=dict)

    @property
    def record_differences(self) -> list[RecordDifference]:
        return [] if self.records is None else list(self.records.differences)

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tables) and not self.record_differences

    @property
    def rows(self) -> int:
        return sum(t.source_rows for t in self.tables)

    @property
    def problem(self) -> str:
        """What differs, in one line (the first three differences): for error messages."""
        problems = [t.problem for t in self.tables if not t.ok]
        problems += [str(d) for d in self.record_differences]
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        return "; ".join(problems[:3]) + more

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "tables": [
                {
                    "table": t.table,
                    "source_rows": t.source_rows,
                    "target_rows": t.target_rows,
                    "source_checksum": t.source_checksum,
                    "target_checksum": t.target_checksum,
                    "ok": t.ok,
                }
                for t in self.tables
            ],
            "records": None
            if self.records is None
            else {
                "compared": self.records.records,
                "source_records": self.records.source_records,
                "target_records": self.records.target_records,
                "differences": [str(d) for d in self.record_differences],
                "sampled_from": self.records.population,
            },
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "snapshots": {role: s.to_dict() for role, s in self.snapshots.items()},
        }


def layouts_of(inspection: Inspection) -> dict[str, TableLayout]:
    """Today's table name → the layout of that table in this store."""
    return {
        table.model.name: table_layout(table.model, name, table.columns)
        for name, table in inspection.tables.items()
    }


def table_checksum(inspection: Inspection, layout: TableLayout, remaps=None, skip=None) -> Checksum:
    """A table's checksum, computed where the data is by the store's engine, without the
    rows whose id is in `skip`."""
    return inspection.engine.table_checksum(inspection, layout, remaps, skip)


def verify_stores(
    source: Inspection,
    target: Inspection,
    *,
    source_checksums: Mapping[str, Checksum] | None = None,
    target_checksums: Mapping[str, Checksum] | None = None,
    source_sample: Future[Sample] | None = None,
    level: Level = "full",
    events: Phase | None = None,
    dedupe: DedupePlan | None = None,
) -> Verification:
    """Compare two stores; `source_checksums` and `target_checksums` are reused when the
    copy computed them (the target's by its server, of the rows it stored: CopyTarget),
    and `source_sample`, the sample's source side, when the copy read it ahead.
    `level`: how many records are also read through Sumatra (see LEVELS). With `dedupe`,
    the target is compared with the source as that plan deduplicates it."""
    phase = events or (lambda name: nullcontext())
    started = time.perf_counter()
    remaps = content_type_remap(source, target, create=False)
    if dedupe is not None:
        remaps = merge_remaps(remaps, dedupe.remaps)
    source_layouts, target_layouts = layouts_of(source), layouts_of(target)
    # A sample is read through Sumatra by a thread while the row checks wait for the
    # databases (SQLite, libpq and mysqlclient release the GIL): both sides when threads
    # may read both (two SQLite snapshots), else the source's side (unless a copy read it
    # during its load: `source_sample`).
    collapse = dedupe is not None
    ahead, compared = source_sample, None
    if level == "sample" and ahead is None and threads_read(source):
        from .records import compare_sample
        from .records.comparison import read_sample

        if threads_read(target):

            def sample_both(_: None) -> tuple[RecordComparison, float]:
                started = time.perf_counter()
                result = compare_sample(source, target, collapse_links=collapse)
                return result, time.perf_counter() - started

            compared = on_a_thread(sample_both, None, source.store, target.store, name="sample")
        else:
            ahead = on_a_thread(read_sample, source, source.store, name="sample")
    names = [n for n in sumatra_tables() if n in source_layouts or n in target_layouts]
    given, stored = source_checksums or {}, target_checksums or {}

    def check(name: str) -> TableCheck:
        source_sum = given.get(name)
        if source_sum is None:
            source_sum = (
                table_checksum(
                    source,
                    source_layouts[name],
                    remaps.get(name),
                    dedupe.skip.get(name) if dedupe is not None else None,
                )
                if name in source_layouts
                else Checksum()
            )
        target_sum = stored.get(name)
        if target_sum is None and name in target_layouts:
            # the source's column set decides what is compared
            layout = source_layouts.get(name, target_layouts[name])
            target_sum = table_checksum(target, layout.in_store(target_layouts[name].source_name))
        if target_sum is None:  # not in the target
            target_sum = Checksum()
        return TableCheck(
            name, source_sum.rows, target_sum.rows, source_sum.digest, target_sum.digest
        )

    # Two tables at a time when every store read can be read from threads: the servers
    # (and SQLite) compute the checksums, in a process or a thread of their own each.
    computes_source = any(n in source_layouts and given.get(n) is None for n in names)
    read = [target, source] if computes_source else [target]
    with phase("verify rows"):
        if all(threads_read(side) for side in read):
            stores = [side.store for side in read]
            with ThreadPoolExecutor(CHECK_THREADS, thread_name_prefix="checksum") as pool:
                checks = list(pool.map(on_own_connection(check, *stores), names))
        else:
            checks = [check(name) for name in names]
    seconds = {"rows": time.perf_counter() - started}
    comparison = None
    if compared is not None:
        with phase("verify records"):  # what is left of it once the row checks are done
            comparison, seconds["records"] = compared.result()
    elif level != "rows":
        from .records import compare_records, compare_sample

        with phase("verify records"):
            record_started = time.perf_counter()
            if level == "full":
                comparison = compare_records(source, target, collapse_links=collapse)
            else:
                sample = None if ahead is None else ahead.result()
                comparison = compare_sample(source, target, sample=sample, collapse_links=collapse)
            seconds["records"] = time.perf_counter() - record_started
    return Verification(checks, comparison, seconds)

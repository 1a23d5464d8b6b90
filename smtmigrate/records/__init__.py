"""Record-level verification: every record read back through Sumatra's own API, compared.

Each record of every project is rebuilt by Sumatra's own `models.Record.to_sumatra()` and
turned into a dict by Sumatra's `formatting.record2dict` (what `smt export` writes), then
the records of two stores are compared field by field, tags included. A difference names
the project, the record's label and the field (`executable.options`,
`dependencies[name=numpy].version`, `tags`, ...).

The package, along its seams:
  * `sumatra_compat`: the process-wide patches of Sumatra that make reading side-effect
    free (`sumatra_reading`);
  * `reader`: a store's records in chunks, shared rows memoised, as canonical dicts
    (`iter_records`, `read_records`, `canonical`);
  * `comparison`: two stores' streams merged and compared (`compare_records`, its
    `RecordComparison` and `RecordDifference`s), or a sample of them (`compare_sample`);
  * `remote`: one of the two stores read by a second Python process.
"""

from __future__ import annotations

from .comparison import (
    RecordComparison,
    RecordDifference,
    compare_records,
    compare_sample,
    field_differences,
    previews,
)
from .reader import canonical, iter_records, read_records
from .sumatra_compat import sumatra_reading

__all__ = [
    "RecordComparison",
    "RecordDifference",
    "canonical",
    "compare_records",
    "compare_sample",
    "field_differences",
    "iter_records",
    "previews",
    "read_records",
    "sumatra_reading",
]

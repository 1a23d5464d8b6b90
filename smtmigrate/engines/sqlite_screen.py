"""The audit's one Python call per row of a SQLite table (`audit._TableScan._screen`):
whether the row's values are text PostgreSQL takes (no NUL, valid UTF-8), and, in the
same call, whether the row's identity repeats. SQL cannot tell valid UTF-8, and a NUL is
cheaper to find in Python (memchr) than with `instr` in SQL; the identity's hash in the
same call spares the duplicate pre-check a GROUP BY: a sort, and a second read of the
table."""

from __future__ import annotations

from typing import Any

SCREEN = "smtmigrate_screen"  # the Python function the screen's SQL calls
# Identities hashed at most (about 90 bytes of memory each): a bigger table's duplicates
# are left to the GROUP BY, so the audit's memory stays bounded whatever the store's size.
MOST_HASHED = 500_000


class RowScreen:
    """Called once per row as `SCREEN(keyed, key..., value...)`: the first `width` values
    are the row's identity (hashed when `keyed`), every value bytes if it is text.

    `repeated` is True once an identity's hash was seen before: a repeat, or (rarely) a
    collision, which the exact GROUP BY then tells apart; None past `MOST_HASHED` rows
    (unknown: the GROUP BY decides). Values SQL's GROUP BY counts
    equal are equal here (text as its bytes under a BINARY collation, integers and reals
    by value, NULL as None), so a table whose `repeated` stays False has no duplicates."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.hashes: set[int] = set()
        self.repeated: bool | None = False

    def __call__(self, keyed: int, *values: Any) -> bool:
        if keyed and self.repeated is False:
            hashes = self.hashes
            size = len(hashes)
            hashes.add(hash(values[: self.width]))
            if len(hashes) == size:
                self.repeated = True
            elif size == MOST_HASHED:
                self.repeated, self.hashes = None, set()
        return _clean(values)


def _clean(values: tuple[Any, ...]) -> bool:
    """Whether no value's bytes hold a NUL or are invalid UTF-8 as PostgreSQL means it
    (Python's strict decoder has its rules: no surrogates, no overlong forms, nothing
    above U+10FFFF). Numbers and NULL are clean."""
    for value in values:
        if type(value) is not bytes or (value.isascii() and 0 not in value):
            continue
        if 0 in value:  # an int needle: memchr (a bytes one is ten times slower)
            return False
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True

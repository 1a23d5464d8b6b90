"""Ctrl-C, remembered and acted on at points where stopping is safe.

Python raises KeyboardInterrupt wherever the main thread happens to be. Inside SQLite's or
psycopg2's callbacks it comes out as their own error; inside a weakref callback or a
`__del__` it is printed as "Exception ignored" and lost, and the work would go on to commit.
So the handler also records that Ctrl-C was pressed, and long-running library code calls
`check()` where stopping is safe: between chunks of a load and before anything commits.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

_seen = False


def _handler(signum, frame) -> None:
    global _seen
    _seen = True
    signal.default_int_handler(signum, frame)


def seen() -> bool:
    """Whether Ctrl-C was pressed since `watched()` began."""
    return _seen


def check() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed, even if its exception was lost."""
    if _seen:
        raise KeyboardInterrupt


@contextmanager
def watched() -> Iterator[None]:
    """Record Ctrl-C for the duration (main thread only: signals go nowhere else). A
    KeyboardInterrupt Python cannot raise (inside a weakref callback) is not printed as
    "Exception ignored …": it is recorded, and `check()` acts on it."""
    global _seen
    _seen = False
    try:
        previous = signal.signal(signal.SIGINT, _handler)
    except ValueError:  # not the main thread: nothing to watch
        yield
        return
    unraisable = sys.unraisablehook

    def quiet_about_ctrl_c(info) -> None:
        if not isinstance(info.exc_value, KeyboardInterrupt):
            unraisable(info)

    sys.unraisablehook = quiet_about_ctrl_c
    try:
        yield
    finally:
        sys.unraisablehook = unraisable
        if signal.getsignal(signal.SIGINT) is _handler:
            signal.signal(signal.SIGINT, previous)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold Ctrl-C until the block ends, then raise it: for a step and its bookkeeping
    (a database created, then recorded as made so that an interrupted command drops it
    again), which a KeyboardInterrupt between the two would split. An error in the block
    goes on as it is."""
    global _seen
    held: list[int] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    except ValueError:  # not the main thread: signals go nowhere else
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if held:
        _seen = _seen or previous is _handler
        raise KeyboardInterrupt

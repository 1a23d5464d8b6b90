"""Which stores threads may read at once, and work on a thread with connections of its own.
Below the engines: they load and hash tables on threads too."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from django.db import connections

if TYPE_CHECKING:
    from .layout import Inspection
    from .locations import Store

T = TypeVar("T")
R = TypeVar("R")


def threads_share(store: Store) -> bool:
    """Whether threads of this process, each on its own connection, read exactly what
    this one reads: a SQLite snapshot file, a MariaDB copy's scratch database (written by
    nobody else). A live store's connections could see different states; a PostgreSQL or
    MariaDB snapshot is one connection's transaction (`Store.threads_share`)."""
    return store.threads_share()


def threads_read(inspection: Inspection) -> bool:
    """`threads_share`, for a store as inspected: a Sumatra 0.4-0.6 store is read through
    TEMP views that only the connection that made them has (generations.py)."""
    return threads_share(inspection.store) and not inspection.views


def on_own_connection(work: Callable[[T], R], *stores: Store) -> Callable[[T], R]:
    """`work` for a pool thread (see `threads_share`): Django gives each thread its own
    connections to the stores, closed here once the work is done."""

    def run(item: T) -> R:
        try:
            return work(item)
        finally:
            for store in stores:
                connections[store.alias].close()

    return run


def on_a_thread(work: Callable[[T], R], item: T, *stores: Store, name: str) -> Future[R]:
    """`work(item)` started on a thread of its own, with connections of its own to
    `stores` (`on_own_connection`); its result, or its error, from the Future."""
    pool = ThreadPoolExecutor(1, thread_name_prefix=name)
    try:
        return pool.submit(on_own_connection(work, *stores), item)
    finally:
        pool.shutdown(wait=False)  # the thread ends with its work

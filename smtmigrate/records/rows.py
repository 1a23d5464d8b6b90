"""The rows `Record.to_sumatra()` runs on: light stand-ins and memoised shared rows.

Reading a store is dominated by building Python objects; these keep that to what Sumatra's
own methods need. Shared, deduplicated rows (executables, repositories, launch modes,
datastores, parameter sets, dependencies, platforms, input keys) are real Django model
instances loaded once per store, their `to_sumatra()` memoised; records and output keys
are slotted stand-ins that borrow Sumatra's methods (`row_classes`).
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Iterable
from functools import cache
from operator import attrgetter
from typing import Any

from django.db import connections
from django.db.models import BooleanField
from django.db.models.expressions import RawSQL

from ..engines import engine_for
from .sumatra_compat import TAGS_ATTR

MEMO_SIZE = 4_096  # shared rows kept per model (least recently used ones go): bounds memory
MEMO_SIZES = {"parameterset": 2_000}  # big, and shared only by records with equal parameters

# Record's foreign keys to shared rows (all of them are read by `Record.to_sumatra`).
FOREIGN_KEYS = (
    "executable",
    "repository",
    "launch_mode",
    "datastore",
    "input_datastore",
    "parameters",
)
# Record's many-to-many fields (to shared rows).
MANY_TO_MANY = ("input_data", "dependencies", "platforms")
_MISSING = object()  # a memo not computed yet


class _Memo:
    """A shared row's `to_sumatra()`, built once by Sumatra's own method and then reused.

    Installed as the instance attribute `to_sumatra`, so `Record.to_sumatra()` calling
    `self.executable.to_sumatra()` gets it. An error is not cached: it is raised again by
    a fresh call, for every record that uses the row. It holds its instance weakly: a
    strong reference would make a cycle (instance → memo → instance) that only the
    cyclic collector frees, so rows dropped from the bounded memos piled up between its
    rare full passes (+170 MB reading 20,000 records).
    """

    __slots__ = ("instance", "value")

    def __init__(self, instance) -> None:
        self.instance = weakref.ref(instance)
        self.value = _MISSING

    def __call__(self):
        if self.value is _MISSING:
            instance = self.instance()
            self.value = type(instance).to_sumatra(instance)
        return self.value


class SharedRows:
    """Shared rows of one store, by model and pk, each with its memoised `to_sumatra()`.

    Real model instances, so Sumatra's `to_sumatra()` runs on what Django reads. Bounded:
    each model keeps its `MEMO_SIZE` most recently used rows (parameter sets, big and
    rarely shared, fewer), so memory does not grow with the store.
    """

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.quote = engine_for(connections[alias]).quote_name
        self.rows: dict[type, OrderedDict[Any, Any]] = {}

    def get_many(self, model, pks: Iterable, *, sortable: bool = False) -> dict[Any, Any]:
        """The rows of these pks (those that exist); `sortable` gives each its sort key."""
        cache = self.rows.get(model)
        if cache is None:
            cache = self.rows[model] = OrderedDict()
        wanted = set(pks)
        wanted.discard(None)
        missing = []
        for pk in wanted:
            if pk in cache:
                cache.move_to_end(pk)
            else:
                missing.append(pk)
        if missing:
            column = model._meta.pk.column
            found = model._base_manager.using(self.alias).filter(
                RawSQL(f"{self.quote(column)} IN ({in_list(missing)})", (), BooleanField())
            )
            for instance in found.order_by():
                instance.to_sumatra = _Memo(instance)
                if sortable:
                    instance._smtmigrate_key = _content_key(instance)
                cache[instance.pk] = instance
        rows = {pk: cache[pk] for pk in wanted if pk in cache}
        size = MEMO_SIZES.get(model._meta.model_name, MEMO_SIZE)
        while len(cache) > size:
            cache.popitem(last=False)
        return rows


class Related(list):
    """A record's related rows, as its related manager hands them to `to_sumatra()`."""

    __slots__ = ()

    def all(self) -> Related:
        return self


@cache
def row_classes() -> tuple[type, type, tuple[str, ...], tuple[str, ...]]:
    """Stand-ins for `Record` and output `DataKey` instances that run Sumatra's own methods.

    A model instance costs ~40 µs to build and each related manager that
    `Record.to_sumatra()` touches another ~10 µs; these carry the same values (read through
    Django, with its converters: aware datetimes, floats, ...) in slots, and borrow
    `to_sumatra` (and `DataKey.get_metadata`) from Sumatra's models unchanged.
    """
    from sumatra.recordstore.django_store import models as sm

    record_columns = tuple(f.attname for f in sm.Record._meta.concrete_fields)
    key_columns = ("output_from_record_id", "path", "digest", "creation", "metadata")

    class RecordRow:
        __slots__ = (*record_columns, *FOREIGN_KEYS, *MANY_TO_MANY, "output_data", TAGS_ATTR)
        to_sumatra = sm.Record.to_sumatra

    class DataKeyRow:
        __slots__ = (*key_columns, "_smtmigrate_key")
        get_metadata = sm.DataKey.get_metadata
        to_sumatra = sm.DataKey.to_sumatra

    return RecordRow, DataKeyRow, record_columns, key_columns


def in_list(ids: list[int]) -> str:
    """`IN (...)` of integers read from the store itself: inlined, no parameter limits."""
    return ", ".join(str(int(i)) for i in ids)


def _content_key(instance) -> str:
    """A sort key from a row's own values: not its id nor its foreign keys, which another
    store numbers differently."""
    return repr(
        tuple(
            getattr(instance, f.attname)
            for f in instance._meta.concrete_fields
            if not f.primary_key and not f.is_relation
        )
    )


SORT_KEY = attrgetter("_smtmigrate_key")

"""Process-wide patches of Sumatra, applied only while records are being read back.

Why patch at all: verification rebuilds every record with Sumatra's own `to_sumatra()`, so
that what is compared is what Sumatra would show. Left alone, Sumatra would, for each
record, query the `default` database (a dummy in our settings) for tags, create data store
directories, open version-control working copies and search PATH or run programs for their
versions. Each patch below (see `_patches`) removes one such side effect and nothing else;
`sumatra_reading()` applies them for as long as any reader needs them.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

GC_THRESHOLD = 10_000  # allocations between young-generation collections while reading
TAGS_ATTR = "_smtmigrate_tags"  # a record instance's tag names, fetched in bulk by the reader

_patch_lock = threading.Lock()
_patch_depth = 0
_patch_undo: list[tuple[object, str, object]] = []
_gc_threshold: tuple[int, ...] = ()
_MISSING = object()


class _Tag:
    """What `Record.to_sumatra()` needs of a tag: its name."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


def _patches() -> list[tuple[object, str, object]]:
    """(owner, attribute, replacement) for every patch `sumatra_reading()` applies.

    Each exists because reading a record back must neither touch the `default` database
    (a dummy in our settings), nor the file system, nor the environment:

    * `TagManager.get_for_object`: `Record.to_sumatra()` asks it for the record's tags, a
      query per record on the `default` database. The replacement returns the tags that
      were fetched in bulk from the record's own store and attached to the record
      instance; for any other object it defers to the original.
    * `FileSystemDataStore.root` (a property whose setter mkdirs the root, also used by
      `Record()` through `datastore.copy()`): verification must never create directories.
      The replacement stores the value, as the original does, without looking at the disk.
    * `GitRepository._get_upstream` (and Mercurial's): when the stored upstream is empty,
      Sumatra opens the repository on disk to read its remote. That is slow, the path may
      not exist here, and it would show the working copy's remote instead of what the store
      holds (hiding a difference in the stored `upstream`). The replacement returns None:
      the stored value is what is compared.
    * `Executable._find_executable` / `_get_version` (and subclasses' `_get_version`): when
      the stored path does not exist or the stored version is empty, Sumatra searches PATH
      (printing "Using ..."), or runs the program (`--version`, a subprocess, files written
      by GENESIS). `DistributedLaunchMode()` does the same for its `mpirun`. The
      replacements keep the stored path and version.
    """
    from sumatra import programs, versioncontrol
    from sumatra.core import get_registered_components
    from sumatra.datastore.filesystem import FileSystemDataStore
    from sumatra.recordstore.django_store.tagging import TagManager

    original_get_for_object = TagManager.get_for_object

    def get_for_object(self, obj):
        names = getattr(obj, TAGS_ATTR, None)
        if names is None:
            return original_get_for_object(self, obj)
        return [_Tag(name) for name in names]

    def set_root(self, value):
        self._root = value

    root = property(FileSystemDataStore.root.fget, set_root)

    patches: list[tuple[object, str, object]] = [
        (TagManager, "get_for_object", get_for_object),
        (FileSystemDataStore, "root", root),
        (programs.Executable, "_find_executable", lambda self, name: name),
    ]
    executables = {programs.Executable, *get_registered_components(programs.Executable).values()}
    for cls in sorted(executables, key=lambda c: c.__qualname__):
        if "_get_version" in vars(cls):
            patches.append((cls, "_get_version", lambda self: ""))
    for module in versioncontrol.vcs_list:
        for obj in vars(module).values():
            if isinstance(obj, type) and "_get_upstream" in vars(obj):
                patches.append((obj, "_get_upstream", lambda self: None))
    return patches


@contextmanager
def sumatra_reading() -> Iterator[None]:
    """Patch Sumatra (see `_patches`) for as long as any reader is inside.

    Re-entrant and shared: the merge of two stores interleaves two readers, so the patches
    are applied when the first enters and undone when the last leaves. Every replacement is
    stateless (per-record data travels on the record instance), so nesting is harmless.
    The patches are process-wide while active: nothing else in the process should build
    Sumatra objects meanwhile expecting Sumatra's side effects.

    Also runs the young-generation garbage collector less often (`GC_THRESHOLD`): reading
    allocates millions of short-lived, acyclic objects (freed by reference counting) that
    the default threshold (700) makes it scan over and over, ~8 % of the time.
    """
    global _patch_depth, _gc_threshold
    with _patch_lock:
        if _patch_depth == 0:
            _gc_threshold = gc.get_threshold()
            gc.set_threshold(max(_gc_threshold[0], GC_THRESHOLD), *_gc_threshold[1:])
            for owner, name, replacement in _patches():
                _patch_undo.append((owner, name, vars(owner).get(name, _MISSING)))
                setattr(owner, name, replacement)
        _patch_depth += 1
    try:
        yield
    finally:
        with _patch_lock:
            _patch_depth -= 1
            if _patch_depth == 0:
                while _patch_undo:
                    owner, name, original = _patch_undo.pop()
                    if original is _MISSING:
                        delattr(owner, name)
                    else:
                        setattr(owner, name, original)
                gc.set_threshold(*_gc_threshold)

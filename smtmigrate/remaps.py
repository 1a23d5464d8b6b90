"""Ids that differ between a source and its copy, and the maps that rewrite them.

Each database numbers its own content types, so a source's content-type ids are mapped to
the target's by (app_label, model); `copy --dedupe` re-points foreign keys from merged-away
rows to the kept ones (dedupe.py). The copy rewrites ids by these maps on the way (the
engines' `remap_case`), and the verification reads the source through the same maps.
"""

from __future__ import annotations

from .schema import CONTENT_TYPE_TABLE, Inspection

Remaps = dict[str, dict[str, dict[int, int]]]  # table → column → {source id: target id}


def merge_remaps(*remaps: Remaps) -> Remaps:
    """One table → column → mapping from several (they name different columns)."""
    merged: Remaps = {}
    for remap in remaps:
        for table, columns in remap.items():
            for column, mapping in columns.items():
                merged.setdefault(table, {}).setdefault(column, {}).update(mapping)
    return merged


def content_type_remap(source: Inspection, target: Inspection, *, create: bool) -> Remaps:
    """Source content-type ids → the target's, by (app_label, model), for every column of
    Sumatra's tables that points at django_content_type. With `create`, content types the
    target lacks are added to it (inside the caller's transaction)."""
    columns = [
        (table, column)
        for table in source.tables.values()
        for column in table.model.columns.values()
        if column.references
        and column.references[0] == CONTENT_TYPE_TABLE
        and column.name in table.columns
    ]
    if not columns:
        return {}
    q_src = source.engine.quote_name
    q_target = target.engine.quote_name
    with source.store.connection.cursor() as cursor:
        cursor.execute(f"SELECT id, app_label, model FROM {q_src(CONTENT_TYPE_TABLE)}")
        source_types = {row[0]: (row[1], row[2]) for row in cursor.fetchall()}
        used: dict[tuple[str, str], set[int]] = {}
        for table, column in columns:
            cursor.execute(
                f"SELECT DISTINCT {q_src(column.name)} FROM {q_src(table.name)} "
                f"WHERE {q_src(column.name)} IS NOT NULL"
            )
            used[table.model.name, column.name] = {row[0] for row in cursor.fetchall()}
    with target.store.connection.cursor() as cursor:
        cursor.execute(f"SELECT app_label, model, id FROM {q_target(CONTENT_TYPE_TABLE)}")
        target_types = {(app, model): id_ for app, model, id_ in cursor.fetchall()}
        remaps: Remaps = {}
        for (table_name, column_name), ids in used.items():
            mapping = {}
            for old in sorted(ids):
                key = source_types.get(old)
                if key is None:
                    continue  # a dangling id: the audit reports it, the checksum catches it
                if key not in target_types and create:
                    cursor.execute(
                        f"INSERT INTO {q_target(CONTENT_TYPE_TABLE)} (app_label, model) "
                        "VALUES (%s, %s)",
                        list(key),
                    )
                    cursor.execute(
                        f"SELECT id FROM {q_target(CONTENT_TYPE_TABLE)} "
                        "WHERE app_label = %s AND model = %s",
                        list(key),
                    )
                    target_types[key] = cursor.fetchone()[0]
                if key in target_types and target_types[key] != old:
                    mapping[old] = target_types[key]
            if mapping:
                remaps.setdefault(table_name, {})[column_name] = mapping
    return remaps

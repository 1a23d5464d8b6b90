"""The statements of the identity check: candidates, content fingerprints, collisions."""

from __future__ import annotations

from collections.abc import Sequence

from ...schema import ModelColumn
from .statements import (
    KEYS,
    Quote,
    _chr,
    _temp,
    hashed_key,
    key_expression,
    mapping,
    same_key,
    stage,
    target_engine,
    target_sharing_a_key,
)


def candidate_table(staged: bool) -> str:
    return "smtm_c_s" if staged else "smtm_c_t"


def fingerprint_table(staged: bool) -> str:
    return "smtm_fp_s" if staged else "smtm_fp_t"


def candidates(q: Quote, table: str, staged: bool) -> str:
    """The records of colliding keys, on one side: (src,) db_id."""
    source = q(stage(table)) if staged else q(table)
    columns = "r.src, r.db_id" if staged else "r.db_id"
    return (
        f"{_temp(candidate_table(staged))} SELECT {columns} FROM {source} r "
        f"JOIN {KEYS} k ON {same_key('k', 'r')}"
    )


def fingerprints(
    q: Quote,
    staged: bool,
    record_columns: Sequence[ModelColumn],
    foreign_keys: Sequence[tuple[str, str, Sequence[ModelColumn]]],
    links: Sequence[tuple[str, str, str, str, Sequence[ModelColumn]]],
    key_columns: Sequence[ModelColumn],
) -> str:
    """md5 of everything a record reads back as, computed from the stored values: its own
    columns (not ids, label, project), each shared row's content, the sorted distinct
    contents of its links, its sorted tag names (parameter: the record content type) and
    its outputs. Equal fingerprints are equal records; different ones are read back
    through Sumatra to decide (they may still be equal)."""

    def t(name: str) -> str:
        return q(stage(name)) if staged else q(name)

    def same(alias: str, other: str = "r") -> str:
        return f" AND {alias}.src = {other}.src" if staged else ""

    cand = candidate_table(staged)
    src = "src, " if staged else ""
    # The target side reads only the records of colliding keys; the staging side reads
    # all (a (src, id) semi-join there leads the planner astray, and most staged records
    # collide whenever any do: the same node stores, merged again).
    in_cand = "TRUE" if staged else f"{{}} IN (SELECT db_id FROM {cand})"
    # Each table's key computed in a subquery of its own (one table in scope: the
    # engine's canonical text names columns unqualified), once per row, then joined.
    fk_columns = ", ".join(q(column) for column, _table, _columns in foreign_keys)
    record = (
        f"(SELECT {src}db_id, {fk_columns}, {key_expression(record_columns)} AS h "
        f"FROM {t('django_store_record')} WHERE {in_cand.format('db_id')})"
    )
    parts = ["r.h"]
    joins = []
    for n, (column, table, columns) in enumerate(foreign_keys):
        alias = f"f{n}"
        hashed = f"(SELECT {src}id, {key_expression(columns)} AS h FROM {t(table)})"
        joins.append(f"LEFT JOIN {hashed} {alias} ON {alias}.id = r.{q(column)}{same(alias)}")
        parts.append(f"coalesce({alias}.h, '')")
    aggregates = []
    for link, record_column, other, table, columns in links:
        hashed = f"(SELECT {src}id, {hashed_key(columns)} AS h FROM {t(table)})"
        aggregates.append(
            f"SELECT {'l.src, ' if staged else ''}l.{q(record_column)} AS rid, "
            f"{_sorted_join('o.h', distinct=True)} AS v FROM {t(link)} l "
            f"JOIN {hashed} o ON o.id = l.{q(other)}{same('o', 'l')} "
            f"WHERE {in_cand.format('l.' + q(record_column))} "
            f"GROUP BY {'l.src, ' if staged else ''}l.{q(record_column)}"
        )
    aggregates.append(
        f"SELECT {'l.src, ' if staged else ''}l.object_id AS rid, "
        f"{_sorted_join('g.name', distinct=True)} AS v "
        f"FROM {t('django_store_taggeditem')} l JOIN {t('django_store_tag')} g "
        f"ON g.id = l.tag_id{same('g', 'l')} WHERE l.content_type_id = %s "
        f"AND {in_cand.format('l.object_id')} GROUP BY {'l.src, ' if staged else ''}l.object_id"
    )
    outputs = (
        f"(SELECT {src}output_from_record_id AS rid, {hashed_key(key_columns)} AS h "
        f"FROM {t('django_store_datakey')} "
        f"WHERE {in_cand.format('output_from_record_id')})"
    )
    aggregates.append(
        f"SELECT {'l.src, ' if staged else ''}l.rid, {_sorted_join('l.h')} AS v "
        f"FROM {outputs} l GROUP BY {'l.src, ' if staged else ''}l.rid"
    )
    for n, aggregate in enumerate(aggregates):
        alias = f"a{n}"
        joins.append(f"LEFT JOIN ({aggregate}) {alias} ON {alias}.rid = r.db_id{same(alias)}")
        parts.append(f"coalesce({alias}.v, '')")
    return (
        f"{_temp(fingerprint_table(staged))} "
        f"SELECT {'r.src, ' if staged else ''}r.db_id, "
        f"md5({f' || {_chr(29)} || '.join(parts)}) AS fp "
        f"FROM {record} r "
        f"JOIN {cand} c ON c.db_id = r.db_id{same('c')} {' '.join(joins)}"
    )


def _sorted_join(expression: str, *, distinct: bool = False) -> str:
    return target_engine().sorted_join(expression, distinct=distinct)


def occurrences_with_fingerprints(q: Quote, table: str) -> str:
    """`occurrences`, each with its fingerprint."""
    s, t = q(stage(table)), q(table)
    on = same_key("k", "r")
    binary = target_engine().binary_collation  # code-point order: as Python sorts labels
    return (
        f"SELECT origin, db_id, project_id, label, fp FROM ("
        f"SELECT -1 AS origin, r.db_id, r.project_id, r.label, f.fp FROM {t} r "
        f"JOIN {KEYS} k ON {on} JOIN smtm_fp_t f ON f.db_id = r.db_id "
        f"UNION ALL "
        f"SELECT r.src, r.db_id, r.project_id, r.label, f.fp FROM {s} r "
        f"JOIN {KEYS} k ON {on} JOIN smtm_fp_s f ON f.src = r.src AND f.db_id = r.db_id) o "
        f"ORDER BY project_id NULLS FIRST, label COLLATE {binary}, origin, db_id"
    )


def collision_state(q: Quote, table: str) -> str:
    """A summary of the target's records that share a key with a staged one: taken before
    the identity check (unlocked) and again under the lock, equal when no writer touched
    them in between."""
    s, t = q(stage(table)), q(table)
    return (
        f"SELECT count(*), coalesce(sum(r.db_id), 0), "
        f"coalesce(sum({target_engine().text_summary('r.label')}), 0) "
        f"{target_sharing_a_key(s, t)}"
    )


def drop_identity_tables() -> list[str]:
    names = [KEYS, *map(candidate_table, (True, False)), *map(fingerprint_table, (True, False))]
    return [f"DROP TABLE IF EXISTS {name}" for name in names]


def inserted_candidates(q: Quote, table: str, staged: bool) -> str:
    """The inserted records as fingerprint candidates: staged (src, old id) or new id."""
    columns = "src, old_id AS db_id" if staged else "new_id AS db_id"
    return (
        f"{_temp(candidate_table(staged))} SELECT {columns} FROM {q(mapping(table))} WHERE inserted"
    )


def fingerprint_mismatches(q: Quote, table: str) -> str:
    """Inserted records whose fingerprint in the target differs from the staged one's:
    (count compared, count differing)."""
    return (
        f"SELECT count(*), coalesce(sum(CASE WHEN a.fp IS DISTINCT FROM b.fp THEN 1 END), 0) "
        f"{_mismatch_join(q, table)}"
    )


def fingerprint_mismatch_labels(q: Quote, table: str) -> str:
    return (
        f"SELECT m.label {_mismatch_join(q, table)} AND a.fp IS DISTINCT FROM b.fp "
        f"ORDER BY m.label LIMIT 20"
    )


def _mismatch_join(q: Quote, table: str) -> str:
    return (
        f"FROM {q(mapping(table))} m "
        f"LEFT JOIN smtm_fp_s a ON a.src = m.src AND a.db_id = m.old_id "
        f"LEFT JOIN smtm_fp_t b ON b.db_id = m.new_id WHERE m.inserted"
    )

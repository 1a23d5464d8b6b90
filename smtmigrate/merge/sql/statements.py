"""The statements of staging, shared rows, records, links and tags (see __init__)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

from ...engines import POSTGRESQL, Engine
from ...schema import ModelColumn

Quote = Callable[[str], str]
PREFIX = "django_store_"
DECISION = "smtm_decision"
KEYS = "smtm_keys"


_ENGINE: ContextVar[Engine] = ContextVar("merge_sql_engine", default=POSTGRESQL)


@contextmanager
def dialect(engine: Engine) -> Iterator[None]:
    """The target's engine (PostgreSQL's or SQLite's) for every statement built inside."""
    token = _ENGINE.set(engine)
    try:
        yield
    finally:
        _ENGINE.reset(token)


def sqlite() -> bool:
    """Whether the target is an SQLite file (its statements differ where noted)."""
    return _ENGINE.get().is_file


def target_engine() -> Engine:
    """The target's engine: quoting and every vendor-specific expression come from it."""
    return _ENGINE.get()


def _temp(name: str) -> str:
    return target_engine().temp_table_as(name)


def _chr(code: int) -> str:
    return f"{target_engine().chr_function}({code})"


def short(table: str) -> str:
    return table.removeprefix(PREFIX)


def stage(table: str) -> str:
    return f"smtm_s_{short(table)}"


def need(table: str) -> str:
    return f"smtm_n_{short(table)}"


def mapping(table: str) -> str:
    return f"smtm_m_{short(table)}"


def same_key(a: str, b: str) -> str:
    """Rows `a` and `b` are of one record identity: the same label in the same project
    (or both in none)."""
    return f"{a}.label = {b}.label AND {a}.project_id IS NOT DISTINCT FROM {b}.project_id"


def target_sharing_a_key(s: str, t: str) -> str:
    """FROM the target's records (`r`) that share a key with a staged one; `s`, `t`: the
    quoted staging and target tables."""
    return f"FROM {t} r WHERE EXISTS (SELECT 1 FROM {s} x WHERE {same_key('x', 'r')})"


def inserted(q: Quote, record: str, alias: str, column: str) -> str:
    """JOIN the record mapping (`m`) of the inserted record that staged row `alias`
    points at through `column` (as it stands in SQL)."""
    return (
        f"JOIN {q(mapping(record))} m "
        f"ON m.src = {alias}.src AND m.old_id = {alias}.{column} AND m.inserted"
    )


def remapped_columns(q: Quote, names: Sequence[str], remapped: dict[str, str]) -> tuple[str, str]:
    """Staged row `x`'s columns, those in `remapped` (column → mapping table) in the
    target's ids: (the select list, its joins)."""
    values, joins = [], []
    for n, name in enumerate(names):
        if name in remapped:
            alias = f"r{n}"
            joins.append(
                f"LEFT JOIN {q(remapped[name])} {alias} "
                f"ON {alias}.src = x.src AND {alias}.old_id = x.{q(name)}"
            )
            values.append(f"{alias}.new_id AS {q(name)}")
        else:
            values.append(f"x.{q(name)}")
    return ", ".join(values), " ".join(joins)


def column_types() -> str:
    """(name, type) of a table's columns, in order; parameter: the quoted table name."""
    return (
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
    )


def create_stage(q: Quote, table: str, columns: Sequence[tuple[str, str]]) -> str:
    """A staging table like `table`, text for varchar (a source value may be longer: the
    insert into the target judges it), no constraints, plus the source number."""
    parts = ["src integer NOT NULL DEFAULT 0"]
    for name, kind in columns:
        kind = "text" if kind.startswith("character varying") else kind
        parts.append(f"{q(name)} {kind}")
    return f"CREATE TEMP TABLE {q(stage(table))} ({', '.join(parts)}) ON COMMIT DROP"


def create_stage_like(q: Quote, table: str) -> str:
    """SQLite: a staging table with the target table's columns, plus the source number."""
    return f"CREATE TEMP TABLE {q(stage(table))} AS SELECT 0 AS src, * FROM {q(table)} WHERE 0"


def insert_stage(q: Quote, table: str, columns: Sequence[str]) -> str:
    """SQLite: rows of one source into the staging table (values as parameters)."""
    marks = ", ".join(["%s"] * (len(columns) + 1))
    return f"INSERT INTO {q(stage(table))} (src, {', '.join(map(q, columns))}) VALUES ({marks})"


def stage_source(q: Quote, table: str, src: int) -> str:
    return f"ALTER TABLE {q(stage(table))} ALTER COLUMN src SET DEFAULT {int(src)}"


def copy_in(q: Quote, table: str, columns: Sequence[str]) -> str:
    return f"COPY {q(stage(table))} ({', '.join(map(q, columns))}) FROM STDIN"


def lock(q: Quote, tables: Sequence[str]) -> str:
    """Writers (INSERT/UPDATE/DELETE) wait, readers do not: Sumatra's get_or_create must
    see the merged shared rows, never insert a twin of one while the merge runs."""
    return f"LOCK TABLE {', '.join(map(q, tables))} IN SHARE ROW EXCLUSIVE MODE"


def defer_constraints() -> str:
    """Foreign keys checked at commit: data keys may name records inserted after them."""
    return target_engine().defer_constraints


def analyze(q: Quote, tables: Sequence[str]) -> str:
    return f"ANALYZE {', '.join(map(q, tables))}"


def content_type_id() -> str:
    return "SELECT id FROM django_content_type WHERE app_label = %s AND model = %s"


def count(q: Quote, table: str) -> str:
    return f"SELECT count(*) FROM {q(table)}"


# -- projects -------------------------------------------------------------------------------


def insert_projects(q: Quote, table: str) -> str:
    """Projects the target lacks, the first source's row of each (merged by id)."""
    s, t = q(stage(table)), q(table)
    insert = f"INSERT INTO {t} (id, name, description)"
    values = "id, coalesce(name, ''), coalesce(description, '')"
    missing = f"WHERE NOT EXISTS (SELECT 1 FROM {t} p WHERE p.id = x.id)"
    if sqlite():  # the row of the lowest src: SQLite's bare columns of a min() aggregate
        return (
            f"{insert} SELECT {values} "
            f"FROM (SELECT id, name, description, min(src) FROM {s} x {missing} GROUP BY id)"
        )
    return f"{insert} SELECT DISTINCT ON (id) {values} FROM {s} x {missing} ORDER BY id, src"


def differing_projects(q: Quote, table: str) -> str:
    s, t = q(stage(table)), q(table)
    return (
        f"SELECT x.src, x.id, x.name, x.description, p.name, p.description FROM {s} x "
        f"JOIN {t} p ON p.id = x.id "
        f"WHERE x.name IS DISTINCT FROM p.name OR x.description IS DISTINCT FROM p.description "
        f"ORDER BY x.id, x.src"
    )


# -- record identity --------------------------------------------------------------------------


def colliding_keys(q: Quote, table: str) -> str:
    """(project, label) seen more than once over the sources and the target."""
    s, t = q(stage(table)), q(table)
    return (
        f"{_temp(KEYS)} "
        f"SELECT project_id, label FROM ("
        f"SELECT project_id, label FROM {s} UNION ALL "
        f"SELECT r.project_id, r.label {target_sharing_a_key(s, t)}) k "
        f"GROUP BY project_id, label HAVING count(*) > 1"
    )


def labels_taken(q: Quote, table: str, count: int) -> str:
    """Which of `count` labels (parameters, after the project) a project already has, in
    the target or among the staged records."""
    s, t = q(stage(table)), q(table)
    where = f"project_id IS NOT DISTINCT FROM %s AND label IN ({', '.join(['%s'] * count)})"
    return (
        f"SELECT -1, db_id, label FROM {t} WHERE {where} "
        f"UNION ALL SELECT src, db_id, label FROM {s} WHERE {where}"
    )


def create_decisions() -> str:
    return (
        f"CREATE TEMP TABLE {DECISION} (src integer, old_id integer, action char(1), "
        f"target_id integer, label text){target_engine().temp_table_lifetime}"
    )


def insert_decisions() -> str:
    """For psycopg2's execute_values (PostgreSQL) or executemany (SQLite)."""
    values = "(%s, %s, %s, %s, %s)" if sqlite() else "%s"
    return f"INSERT INTO {DECISION} (src, old_id, action, target_id, label) VALUES {values}"


def map_records(q: Quote, table: str, pk: str) -> str:
    """Every staged record that is kept → its id in the target: the equal record's id
    ('e'), or a fresh one from the target's own sequence (new, or renamed 'i'). Skipped
    ('s') records are left out."""
    s, pk_ = q(stage(table)), q(pk)
    fresh = "nextval(pg_get_serial_sequence(%s, %s))"
    if sqlite():  # past the largest id ever given (AUTOINCREMENT's sqlite_sequence)
        fresh = (
            f"max(coalesce((SELECT max({pk_}) FROM {q(table)}), 0), coalesce((SELECT seq "
            f"FROM sqlite_sequence WHERE name = %s), 0)) + row_number() OVER "
            f"(PARTITION BY d.action IS 'e' ORDER BY x.src, x.{pk_})"
        )
    return (
        f"{_temp(q(mapping(table)))} "
        f"SELECT x.src, x.{pk_} AS old_id, "
        f"CASE WHEN d.action = 'e' THEN d.target_id "
        f"ELSE {fresh} END AS new_id, "
        f"d.action IS DISTINCT FROM 'e' AS inserted, coalesce(d.label, x.label) AS label "
        f"FROM {s} x LEFT JOIN {DECISION} d ON d.src = x.src AND d.old_id = x.{pk_} "
        f"WHERE d.action IS DISTINCT FROM 's'"
    )


# -- shared rows ----------------------------------------------------------------------------


def map_records_params(table: str, pk: str) -> list[str]:
    return [table] if sqlite() else [table, pk]


def key_expression(columns: Sequence[ModelColumn]) -> str:
    """The canonical text of a row's identifying columns (NULL and '' apart, escaped), the
    equality Sumatra's get_or_create uses, as one hashable value. Unqualified names: used
    where one table is in scope."""
    engine = target_engine()
    return engine.line([engine.canonical_expression(c) for c in columns])


def create_need(
    q: Quote,
    table: str,
    columns: Sequence[ModelColumn],
    refs: Sequence[str],
    remapped: dict[str, str] | None = None,
) -> str:
    """The staged rows of `table` that `refs` (SELECTs of (src, id)) point at, with
    `remapped` columns (column → mapping table) already in the target's ids."""
    values, joins = remapped_columns(q, [c.name for c in columns], remapped or {})
    union = " UNION ".join(refs)
    return (
        f"{_temp(q(need(table)))} "
        f"SELECT x.src, x.id, {values} FROM {q(stage(table))} x "
        f"{joins} WHERE (x.src, x.id) IN ({union})"
    )


def hashed_key(columns: Sequence[ModelColumn]) -> str:
    """The md5 of `key_expression`: short keys to hash and join on (parameter sets are
    kilobytes); the check after the merge compares every inserted record in full."""
    return f"md5({key_expression(columns)})"


def insert_missing_shared(q: Quote, table: str, columns: Sequence[ModelColumn]) -> str:
    """Rows whose content the target lacks, once each; ids from the target's sequence."""
    names = ", ".join(q(c.name) for c in columns)
    key = hashed_key(columns)
    if sqlite():  # one row per key, the lowest (src, id): bare columns of min()
        return (
            f"INSERT INTO {q(table)} ({names}) SELECT {names} FROM ("
            f"SELECT *, min(src * 4294967296 + id) FROM "
            f"(SELECT *, {key} AS k FROM {q(need(table))}) n "
            f"WHERE k NOT IN (SELECT {key} FROM {q(table)}) GROUP BY k)"
        )
    return (
        f"INSERT INTO {q(table)} ({names}) SELECT {names} FROM ("
        f"SELECT DISTINCT ON (k) * FROM (SELECT *, {key} AS k FROM {q(need(table))}) n "
        f"WHERE NOT EXISTS (SELECT 1 FROM (SELECT {key} AS k FROM {q(table)}) t "
        f"WHERE t.k = n.k) ORDER BY k, src, id) x"
    )


def map_shared(q: Quote, table: str, columns: Sequence[ModelColumn]) -> str:
    """Every needed staged row → the target's row of equal content (the lowest id)."""
    key = hashed_key(columns)
    return (
        f"{_temp(q(mapping(table)))} "
        f"SELECT n.src, n.id AS old_id, min(t.id) AS new_id "
        f"FROM (SELECT src, id, {key} AS k FROM {q(need(table))}) n "
        f"JOIN (SELECT id, {key} AS k FROM {q(table)}) t ON t.k = n.k "
        f"GROUP BY n.src, n.id"
    )


def staged_refs(q: Quote, table: str, column: str, record: str, record_column: str) -> str:
    """(src, id) of the rows the inserted records reach: `column` of the staged rows of
    `table` whose `record_column` is an inserted record of `record`. The record's own
    foreign keys (`table` is `record`, `record_column` its db_id), a link table's other
    column, or the data keys the records produced (`column` their id)."""
    c = q(column)
    return (
        f"SELECT x.src, x.{c} FROM {q(stage(table))} x "
        f"{inserted(q, record, 'x', q(record_column))} WHERE x.{c} IS NOT NULL"
    )


# -- records, links, tags ---------------------------------------------------------------------


def insert_records(
    q: Quote, table: str, pk: str, columns: Sequence[str], remapped: dict[str, str]
) -> str:
    """The inserted records with their new ids, labels and re-pointed foreign keys."""
    values, joins = remapped_columns(q, columns, remapped)
    return (
        f"INSERT INTO {q(table)} ({q(pk)}, label, {', '.join(map(q, columns))}) "
        f"SELECT m.new_id, m.label, {values} FROM {q(stage(table))} x "
        f"{inserted(q, table, 'x', q(pk))} {joins}"
    )


def insert_links(q: Quote, link: str, record_column: str, column: str, record: str) -> str:
    """Links of the inserted records, re-pointed; links that became equal are one."""
    r, o = q(record_column), q(column)
    return (
        f"INSERT INTO {q(link)} ({r}, {o}) SELECT DISTINCT m.new_id, o.new_id "
        f"FROM {q(stage(link))} l {inserted(q, record, 'l', r)} "
        f"JOIN {q(mapping(column_table(link, column)))} o "
        f"ON o.src = l.src AND o.old_id = l.{o}"
    )


_LINK_TARGETS = {
    "dependency_id": "django_store_dependency",
    "platforminformation_id": "django_store_platforminformation",
    "datakey_id": "django_store_datakey",
}


def column_table(link: str, column: str) -> str:
    return _LINK_TARGETS[column]


def insert_tags(q: Quote, tag: str, tagged: str, record: str) -> str:
    """Tag names the inserted records carry that the target lacks (parameter: the target's
    record content type)."""
    return (
        f"INSERT INTO {q(tag)} (name) SELECT DISTINCT g.name "
        f"{_inserted_tags(q, tag, tagged, record)} "
        f"WHERE ti.content_type_id = %s "
        f"AND NOT EXISTS (SELECT 1 FROM {q(tag)} t WHERE t.name = g.name)"
    )


def insert_tagged(q: Quote, tag: str, tagged: str, record: str) -> str:
    """The inserted records' tags, pointing at the target's tag of the same name."""
    return (
        f"INSERT INTO {q(tagged)} (tag_id, content_type_id, object_id) "
        f"SELECT DISTINCT t.id, ti.content_type_id, m.new_id "
        f"{_inserted_tags(q, tag, tagged, record)} "
        f"JOIN {q(tag)} t ON t.name = g.name WHERE ti.content_type_id = %s"
    )


def _inserted_tags(q: Quote, tag: str, tagged: str, record: str) -> str:
    """FROM the staged tag links (`ti`) of the inserted records (`m`), with their staged
    tags (`g`)."""
    return (
        f"FROM {q(stage(tagged))} ti "
        f"JOIN {q(stage(tag))} g ON g.src = ti.src AND g.id = ti.tag_id "
        f"{inserted(q, record, 'ti', 'object_id')}"
    )


def inserted_records(q: Quote, record: str) -> str:
    """(old_id, new_id, label) of one source's (parameter) inserted records, by old id."""
    return (
        f"SELECT old_id, new_id, label FROM {q(mapping(record))} "
        f"WHERE src = %s AND inserted ORDER BY old_id"
    )


def reset_sequence(q: Quote, table: str, pk: str) -> str:
    """The table's sequence past max(id), never backwards (parameters: table, pk)."""
    return (
        f"SELECT setval(s, greatest(coalesce((SELECT max({q(pk)}) FROM {q(table)}), 0), "
        f"coalesce(pg_sequence_last_value(s::regclass), 0), 1)) "
        f"FROM pg_get_serial_sequence(%s, %s) s WHERE s IS NOT NULL"
    )


def new_rows(q: Quote, table: str) -> str:
    """How many rows of the needed ones were not in the target before (after the insert:
    the mapped ids above the old maximum, parameter)."""
    return f"SELECT count(DISTINCT new_id) FROM {q(mapping(table))} WHERE new_id > %s"


def max_id(q: Quote, table: str, pk: str) -> str:
    return f"SELECT coalesce(max({q(pk)}), 0) FROM {q(table)}"


# -- record fingerprints --------------------------------------------------------------------


def datakey_twins(q: Quote, table: str, columns: Sequence[str]) -> str:
    """Groups of data keys equal in the columns Sumatra's get_or_create looks them up by
    (all but the record they are an output of), and how many rows they hold."""
    key = ", ".join(map(q, columns))
    return (
        f"SELECT count(*), coalesce(sum(n), 0) FROM "
        f"(SELECT count(*) AS n FROM {q(table)} GROUP BY {key} HAVING count(*) > 1) twins"
    )

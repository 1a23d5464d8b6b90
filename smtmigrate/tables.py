"""Today's Sumatra tables as the installed models define them, and the names of its tables
and store generations: values every layer reads (engines included), importing nothing above.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

from django.apps import apps
from django.db import models

SUMATRA_APP = "django_store"
# Django's tables in a Sumatra store: one spelling each, imported wherever they are named.
CONTENT_TYPE_TABLE = "django_content_type"
MIGRATIONS_TABLE = "django_migrations"
RECORD_TABLE = "django_store_record"
# Store generations, named for the Sumatra releases whose schema they are (see
# docs/generations.md). 0.4-0.6 were made by Django <= 1.6's syncdb and differ in columns:
LAYOUT_04 = "sumatra-0.4"  # no Dependency.source, no Repository.upstream
LAYOUT_05 = "sumatra-0.5"  # + Dependency.source, Repository.upstream; no Record.repeats
LAYOUT_06 = "sumatra-0.6"  # + Record.repeats, wider columns; outputs still an M2M table
LAYOUT_07 = "sumatra-0.7"  # DataKey.output_from_record and creation; no output M2M table
LAYOUT_08 = "sumatra-0.8"  # Sumatra's own migrations, tags in django_store_tag
# Up to 0.6 a record's outputs are rows of this M2M table, not DataKey.output_from_record.
OUTPUT_LINKS = "django_store_record_output_data"
OUTPUT_LINK_LAYOUTS = frozenset({LAYOUT_04, LAYOUT_05, LAYOUT_06})
# Layouts that keep tags in django-tagging's tables (LEGACY_TABLES).
TAGGING_LAYOUTS = OUTPUT_LINK_LAYOUTS | {LAYOUT_07}
SUMATRA_08_MIGRATIONS = frozenset({"0001_initial", "0002_tag_taggeditem"})
# Sumatra <= 0.7 kept tags in django-tagging's tables; today's models live in django_store.
LEGACY_TABLES = {
    "tagging_tag": "django_store_tag",
    "tagging_taggeditem": "django_store_taggeditem",
}
TEXT_TYPES = frozenset({"CharField", "SlugField", "URLField", "TextField", "EmailField"})

# Columns whose content has no natural bound: a store will sooner or later hold a longer
# value than any varchar(n) chosen today. The reason is shown by `audit` (risk) and used by
# `widen --policy text`. Keys are today's table and column names.
UNBOUNDED: dict[tuple[str, str], str] = {
    ("django_store_project", "id"): "project name chosen by the user (smt init)",
    ("django_store_project", "name"): "project name chosen by the user",
    ("django_store_record", "label"): "label chosen by the user (smt run --label)",
    ("django_store_record", "main_file"): "file path",
    ("django_store_record", "version"): "version-control revision string",
    ("django_store_record", "tags"): "comma-joined copy of all the record's tags",
    ("django_store_record", "user"): "user name and e-mail address",
    ("django_store_record", "repeats"): "label of another record",
    ("django_store_executable", "path"): "file path",
    ("django_store_executable", "name"): "program name",
    ("django_store_executable", "version"): "version string printed by the program",
    ("django_store_executable", "options"): "command-line options",
    ("django_store_dependency", "name"): "module or package name",
    ("django_store_dependency", "path"): "file path",
    ("django_store_dependency", "version"): "version string",
    ("django_store_dependency", "source"): "URL",
    ("django_store_repository", "url"): "URL or path",
    ("django_store_repository", "upstream"): "URL",
    ("django_store_launchmode", "parameters"): "repr of a dict of launch parameters",
    ("django_store_datastore", "parameters"): "repr of a dict of datastore parameters",
    ("django_store_datakey", "path"): "file path",
    ("django_store_platforminformation", "architecture_bits"): "platform string",
    ("django_store_platforminformation", "architecture_linkage"): "platform string",
    ("django_store_platforminformation", "machine"): "platform string",
    ("django_store_platforminformation", "network_name"): "host name",
    ("django_store_platforminformation", "processor"): "platform string",
    ("django_store_platforminformation", "release"): "kernel release string",
    ("django_store_platforminformation", "system_name"): "platform string",
    ("django_store_platforminformation", "version"): "kernel version string",
    ("django_store_tag", "name"): "tag chosen by the user (smt run --tag)",
}


@dataclass(frozen=True)
class ModelColumn:
    """One column of today's Sumatra schema, as the installed models define it."""

    table: str
    name: str
    field: models.Field = field(repr=False, compare=False)
    internal_type: str  # Django's get_internal_type() of the field (of its target for FKs)
    max_length: int | None  # the varchar(n) a PostgreSQL store gets; None if unbounded
    null: bool
    references: tuple[str, str] | None = None  # (table, column) of a foreign key

    @property
    def is_text(self) -> bool:
        return self.internal_type in TEXT_TYPES

    @property
    def unbounded_reason(self) -> str | None:
        return UNBOUNDED.get((self.table, self.name))


@dataclass(frozen=True)
class ModelTable:
    name: str
    model: type[models.Model] = field(repr=False, compare=False)
    columns: dict[str, ModelColumn] = field(compare=False)
    primary_key: str
    unique_sets: tuple[tuple[str, ...], ...]  # single unique columns and unique_together


def _model_column(table: str, f: models.Field) -> ModelColumn:
    target = f.target_field if f.many_to_one else f
    internal = target.get_internal_type()
    max_length = target.max_length if internal in TEXT_TYPES else None
    references = None
    if f.many_to_one:
        references = (f.related_model._meta.db_table, f.target_field.column)
    return ModelColumn(table, f.column, f, internal, max_length, f.null, references)


@cache
def sumatra_tables() -> dict[str, ModelTable]:
    """Today's Sumatra tables (incl. auto-created M2M tables), keyed by table name."""
    tables: dict[str, ModelTable] = {}
    app = apps.get_app_config(SUMATRA_APP)
    for model in app.get_models(include_auto_created=True):
        meta = model._meta
        columns = {f.column: _model_column(meta.db_table, f) for f in meta.local_fields}
        by_name = {f.name: f.column for f in meta.local_fields}
        unique = [(f.column,) for f in meta.local_fields if f.unique and not f.primary_key]
        unique += [tuple(by_name[n] for n in names) for names in meta.unique_together]
        tables[meta.db_table] = ModelTable(
            meta.db_table, model, columns, meta.pk.column, tuple(unique)
        )
    return tables

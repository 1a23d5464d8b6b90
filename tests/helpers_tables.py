"""Sumatra 0.8.1's tables, named once for the tests' own SQL oracles (which never read
smtmigrate's lists of them)."""

from __future__ import annotations

# Tables whose rows Sumatra 0.8.1 looks up with get_or_create on every column but the id.
LOOKED_UP = (
    "django_store_executable",
    "django_store_repository",
    "django_store_launchmode",
    "django_store_datastore",
    "django_store_parameterset",
    "django_store_dependency",
    "django_store_platforminformation",
)

# Every table of Sumatra's own models in a 0.8.1 store.
SUMATRA_TABLES = (
    "django_store_project",
    "django_store_record",
    "django_store_record_dependencies",
    "django_store_record_input_data",
    "django_store_record_platforms",
    *LOOKED_UP,
    "django_store_datakey",
    "django_store_tag",
    "django_store_taggeditem",
)

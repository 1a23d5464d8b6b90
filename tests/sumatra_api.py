"""Drive Sumatra 0.8.1's own record-store API in a process of its own, as `smt` does.

Sumatra configures Django itself (the store becomes its `default` database) and runs its
own `migrate` when it opens a store, which is part of what the tests check. Usage:

    python sumatra_api.py import STORE PROJECT EXPORT.json   save every record of an export
    python sumatra_api.py export STORE                        JSON of every project's records
    python sumatra_api.py decode EXPORT.json                  the same JSON for an export file
    python sumatra_api.py long STORE PROJECT EXPORT.json N    save a record whose every
                                                              string field is N chars long,
                                                              read it back, compare
    python sumatra_api.py running STORE PROJECT LABEL         save a copy of the project's
                                                              latest record as a new row
                                                              labelled LABEL, tagged _running_
                                                              (as two runs do when their saves
                                                              race: both miss Sumatra's lookup)
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import sys
import tempfile

from sumatra.recordstore import serialization
from sumatra.recordstore.django_store import DjangoRecordStore


def canonical(record) -> dict:
    """A record as Sumatra serialises it; tags sorted so the comparison is order-free."""
    data = json.loads(serialization.encode_record(record))
    data["tags"] = sorted(data["tags"])
    return data


def stretch(text: str, length: int, marker: str) -> str:
    base = f"{marker}:{text}:" if text else f"{marker}:"
    return (base * (length // len(base) + 1))[:length]


def long_record(template, length: int, scratch: str):
    """A record built from a real one, with every string field `length` characters long."""
    record = copy.deepcopy(template)
    record.label = stretch("label-é-µ", length, "L")
    record.main_file = stretch("src/main.py", length, "M")
    record.version = stretch("v", length, "V")
    record.user = stretch("Ann Example <ann@example.org>", length, "U")
    record.reason = stretch("reason", length, "R")
    record.outcome = stretch("outcome 🧪", length, "O")
    record.script_arguments = stretch("--arg", length, "A")
    record.stdout_stderr = stretch("out", length, "S")
    record.diff = stretch("diff", length, "D")
    record.tags = {stretch(f"tag{i}", length, f"T{i}") for i in range(3)}
    executable = record.executable
    executable.path = stretch("/usr/bin/python", length, "EP")
    executable.version = stretch("3", length, "EV")
    executable.options = stretch("-W ignore", length, "EO")
    record.repository.url = stretch("/srv/repo", length, "RU")
    record.repository.upstream = stretch("https://example.org/repo.git", length, "UP")
    for i, dependency in enumerate(record.dependencies):
        dependency.name = stretch(dependency.name, length, f"DN{i}")
        dependency.path = stretch(dependency.path, length, f"DP{i}")
        dependency.version = stretch(dependency.version, length, f"DV{i}")
        dependency.source = stretch("https://example.org/pkg", length, f"DS{i}")
    # directories are created on load: keep the path valid (components under 255 bytes)
    deep = os.path.join(scratch, *["d" * 200] * (length // 201 + 1))
    record.launch_mode.working_directory = deep
    record.datastore.root = deep
    record.input_datastore.root = deep
    for i, key in enumerate(record.output_data + record.input_data):
        key.path = stretch(key.path, length, f"K{i}")
    for platform in record.platforms:
        for attribute in (
            "architecture_bits",
            "architecture_linkage",
            "machine",
            "network_name",
            "processor",
            "release",
            "system_name",
            "version",
        ):
            setattr(platform, attribute, stretch(getattr(platform, attribute), length, "P"))
    return record


def main(argv: list[str]) -> int:
    command, store_url = argv[0], argv[1]
    if command == "decode":
        with open(store_url) as fh:
            records = serialization.decode_records(fh.read())
        print(json.dumps([canonical(r) for r in records], sort_keys=True))
        return 0
    store = DjangoRecordStore(store_url)
    if command == "running":
        project, label = argv[2], argv[3]
        record = store.get(project, store.most_recent(project))
        record.label, record.tags = label, {"_running_"}
        record.timestamp = datetime.datetime.now()  # a run of its own, started now
        record.duration = record.outcome = None
        models = store._get_models()

        def new_row(project_name, record):  # the lookup that missed: a row of its own
            row = models.Record(label=record.label, project=store._get_db_project(project_name))
            row._state.db = store._db_label
            return row

        store._get_db_record = new_row
        store.save(project, record)
        print(label)
        return 0
    if command == "export":
        data = {p: [canonical(r) for r in store.list(p)] for p in sorted(store.list_projects())}
        print(json.dumps(data, sort_keys=True))
        return 0
    project, export_file = argv[2], argv[3]
    with open(export_file) as fh:
        records = serialization.decode_records(fh.read())
    if command == "import":
        for record in records:
            store.save(project, record)
        print(len(records))
        return 0
    if command == "long":
        length = int(argv[4])
        with tempfile.TemporaryDirectory() as scratch:
            template = max(records, key=lambda r: len(r.dependencies) + len(r.output_data))
            record = long_record(template, length, scratch)
            store.save(project, record)
            back = store.get(project, record.label)
            expected, got = canonical(record), canonical(back)
            if expected != got:
                diff = {k: (expected[k], got.get(k)) for k in expected if expected[k] != got.get(k)}
                print(json.dumps(diff)[:2000], file=sys.stderr)
                return 1
        print(record.label[:20])
        return 0
    raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

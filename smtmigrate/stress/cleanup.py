"""Removing the scratch project: the cleanup process (python -m smtmigrate.stress.cleanup,
Sumatra's API and Django's ORM on the store, no smtmigrate settings) and the orchestrator's
call of it, verified through smtmigrate's own connection."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

from .report import (
    CLEANUP_TIMEOUT,
    CONNECTION,
    DEADLOCK,
    LOCKED,
    STATUSES,
    CleanupResult,
    classify,
    emit,
    events,
    first_line,
    last_line,
    run_child,
)

if TYPE_CHECKING:
    from ..locations import Store

CLEANUP_MODULE = "smtmigrate.stress.cleanup"


def cleanup(
    store: Store,
    uri: str,
    env: dict[str, str],
    scratch: Path,
    project: str,
    before: dict[str, int],
    *,
    mode: str = "api",
) -> CleanupResult:
    """Remove the scratch project through Sumatra, then check through our connection."""
    from django.db import DatabaseError

    from ..errors import SmtmigrateError
    from ..locations import redact_text

    result = CleanupResult()
    started = time.monotonic()
    command = [
        sys.executable,
        "-m",
        CLEANUP_MODULE,
        "--uri",
        uri,
        "--project",
        project,
        "--root",
        str(scratch),
        "--mode",
        mode,
        "--before",
        json.dumps(before),
        "--timeout",
        str(CLEANUP_TIMEOUT),
    ]
    try:
        done = run_child(
            command,
            env,
            scratch,
            CLEANUP_TIMEOUT + 30,
            start_new_session=True,  # a Ctrl-C on the terminal must not kill it half-way
        )
        said = [e for e in events(done.stdout) if e.get("event") == "cleanup"]
        if said and said[-1].get("ok"):
            result.deleted = said[-1].get("deleted") or {}
        elif said:
            result.error = said[-1].get("message") or "cleanup failed"
        else:
            result.error = last_line(done.stderr) or f"exit status {done.returncode}"
    except subprocess.TimeoutExpired:
        result.error = f"the cleanup did not finish within {CLEANUP_TIMEOUT:g} s"
    try:
        with store.connection.cursor() as cursor:
            cursor.execute(
                "SELECT COUNT(*) FROM django_store_record WHERE project_id = %s", [project]
            )
            result.left_records = int(cursor.fetchone()[0])
            cursor.execute("SELECT COUNT(*) FROM django_store_project WHERE id = %s", [project])
            result.left_project = bool(cursor.fetchone()[0])
    except (DatabaseError, SmtmigrateError) as exc:
        result.error = result.error or store.describe_error(exc)
    result.ok = result.error is None and result.left_records == 0 and not result.left_project
    if result.error is None and not result.ok:
        result.error = f"{result.left_records} record(s) left in {project}"
    if result.error:
        result.error = redact_text(result.error, store.password)
    result.seconds = time.monotonic() - started
    return result


def _cleanup_worker(out: IO[str], args: argparse.Namespace) -> int:
    """Remove the scratch project: Sumatra's delete, then what it leaves behind."""
    deadline = time.monotonic() + args.timeout
    before: dict[str, int] = json.loads(args.before)
    while True:
        try:
            deleted = _remove_project(args.uri, args.project, args.root, before, args.mode)
        except Exception as exc:
            if classify(exc) in (LOCKED, DEADLOCK, CONNECTION) and time.monotonic() < deadline:
                time.sleep(1.0)
                continue
            emit(out, event="cleanup", ok=False, message=first_line(exc))
            return 1
        emit(out, event="cleanup", ok=True, deleted=deleted)
        return 0


def _remove_project(
    uri: str, project: str, root: Path, before: dict[str, int], mode: str
) -> dict[str, int]:
    from sumatra.recordstore.django_store import DjangoRecordStore

    store = DjangoRecordStore(uri)
    models = store._get_models()  # Django is configured from here on
    from django.contrib.contenttypes.models import ContentType
    from django.db import connections, transaction
    from django.db.models import Q
    from sumatra.core import STATUS_FORMAT
    from sumatra.recordstore.django_store.tagging import Tag, TaggedItem

    connections.close_all()  # a fresh connection for every attempt
    Record = models.Record
    deleted: dict[str, int] = {}
    with transaction.atomic():
        records = Record.objects.filter(project_id=project)
        ids = list(records.values_list("db_id", flat=True))
        referenced: dict[str, set[int]] = {
            "executable": set(records.values_list("executable_id", flat=True)),
            "repository": set(records.values_list("repository_id", flat=True)),
            "launchmode": set(records.values_list("launch_mode_id", flat=True)),
            "datastore": set(records.values_list("datastore_id", flat=True))
            | set(records.values_list("input_datastore_id", flat=True)),
            "parameterset": set(records.values_list("parameters_id", flat=True)),
            "dependency": set(
                Record.dependencies.through.objects.filter(record_id__in=ids).values_list(
                    "dependency_id", flat=True
                )
            ),
            "platforminformation": set(
                Record.platforms.through.objects.filter(record_id__in=ids).values_list(
                    "platforminformation_id", flat=True
                )
            ),
            "datakey": set(
                Record.input_data.through.objects.filter(record_id__in=ids).values_list(
                    "datakey_id", flat=True
                )
            ),
        }
        content_type = ContentType.objects.get_for_model(Record)
        items = TaggedItem.objects.filter(content_type=content_type, object_id__in=ids)
        referenced["tag"] = set(items.values_list("tag_id", flat=True))
        # what Sumatra's delete does (get by label, then delete), per record: a label that
        # concurrent `smt run`s gave to several records makes its get() fail
        doomed_records = list(Record.objects.filter(project_id=project))
        for db_record in doomed_records:
            db_record.delete()
        deleted["record"] = len(doomed_records)
        deleted["taggeditem"] = items.delete()[0]  # Sumatra's delete leaves the links
        unreferenced = {
            "executable": Q(record__isnull=True),
            "repository": Q(record__isnull=True),
            "launchmode": Q(record__isnull=True),
            "datastore": Q(record__isnull=True, input_to_records__isnull=True),
            "parameterset": Q(record__isnull=True),
            "dependency": Q(record__isnull=True),
            "platforminformation": Q(record__isnull=True),
            "datakey": Q(input_to_records__isnull=True, output_from_record__isnull=True),
            "tag": Q(items__isnull=True),
        }
        model_of = {
            "executable": models.Executable,
            "repository": models.Repository,
            "launchmode": models.LaunchMode,
            "datastore": models.Datastore,
            "parameterset": models.ParameterSet,
            "dependency": models.Dependency,
            "platforminformation": models.PlatformInformation,
            "datakey": models.DataKey,
            "tag": Tag,
        }
        # rows this run made that no record of it references (any more): duplicates from
        # jobs racing to create a shared row, a job killed between two saves, the warm-up's
        # status tags. Found by their values.
        if mode == "api":
            from .worker import shared_objects, sumatra_lookup

            shared = shared_objects(root)
            ours = {
                table: Q(**sumatra_lookup(model_of[table], obj)) for table, obj in shared.items()
            }
            ours |= {
                "parameterset": Q(content__contains=f'project = "{project}"'),
                "datakey": Q(path__startswith=f"{project}/"),
            }
        else:  # real `smt run`s: rows naming the scratch directory, copies of the rows used
            ours = {
                table: _copies_of(model_of[table], referenced[table])
                for table in ("executable", "dependency", "platforminformation")
            }
            ours |= {
                "repository": Q(url__startswith=str(root)),
                "launchmode": Q(parameters__contains=str(root)),
                "datastore": Q(parameters__contains=str(root)),
                "parameterset": Q(content__contains=project),
            }
        ours["tag"] = Q(name__in=[STATUS_FORMAT % status for status in STATUSES])
        for table, model in model_of.items():
            candidates = set(referenced[table])
            if table in ours:
                candidates.update(
                    model.objects.filter(ours[table], pk__gt=before[table]).values_list(
                        "pk", flat=True
                    )
                )
            candidates = {i for i in candidates if i is not None and i > before[table]}
            if not candidates:
                continue
            doomed = list(
                model.objects.filter(pk__in=candidates)
                .filter(unreferenced[table])
                .values_list("pk", flat=True)
                .distinct()
            )
            if doomed:
                model.objects.filter(pk__in=doomed).delete()
                deleted[table] = len(doomed)
        deleted["project"] = models.Project.objects.filter(id=project).delete()[0]
    return {table: n for table, n in deleted.items() if n}


def _copies_of(model, ids: set[int]):
    """Rows holding the same values as one of the rows `ids` (Sumatra's get_or_create
    looks shared rows up by value; racing jobs each create one)."""
    from django.db.models import Q

    fields = [f.name for f in model._meta.concrete_fields if not f.primary_key]
    same = Q(pk__in=[])
    for values in model.objects.filter(pk__in=[i for i in ids if i]).values(*fields):
        same |= Q(**values)
    return same


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m smtmigrate.stress.cleanup")
    parser.add_argument("--uri", required=True)
    parser.add_argument("--project", required=True)
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--mode", choices=("api", "smt"), default="api")
    parser.add_argument("--before", default="{}")
    parser.add_argument("--timeout", type=float, default=CLEANUP_TIMEOUT)
    args = parser.parse_args(argv)
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    sys.stdout = sys.stderr  # Sumatra's prints stay off our JSON lines
    return _cleanup_worker(out, args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

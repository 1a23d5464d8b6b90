from __future__ import annotations

from argparse import ArgumentTypeError

from ...audit import audit_snapshot
from ...engines.sqlite_damage import REPORT
from ...locations import resolve
from ...project import read_label_generator
from ...render import audit_json, render_audit, write_json
from ...snapshot import source_snapshot
from ..base import SmtmigrateCommand, add_format_option, add_location_argument


def fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise ArgumentTypeError("must be a fraction in (0, 1]")
    return value


class Command(SmtmigrateCommand):
    help = (
        "Report what in a Sumatra store would fail, or is bound to fail: an SQLite store on "
        "PostgreSQL, a PostgreSQL or MariaDB store on its own server (against its real "
        "columns; MariaDB's collations, utf8mb3 columns and sql_mode too). "
        "Given a project directory, also checks its label generator (concurrent `smt run`s that "
        "would share a label); that never changes the exit code. "
        "A damaged SQLite store (SQLite's own quick_check fails) is a finding. "
        "Exit 0: nothing would fail; 1: damage, overflow, invalid values or duplicates; 2: "
        "usage or I/O error."
    )

    def add_arguments(self, parser):
        add_location_argument(parser)
        add_format_option(parser)
        parser.add_argument(
            "--near",
            type=fraction,
            default=0.8,
            help="report columns whose longest value reaches this fraction of the limit "
            "(default 0.8)",
        )
        parser.add_argument(
            "--all",
            action="store_true",
            dest="show_all",
            help="list every `risk` column (content unbounded by nature that fits today), "
            "not only their count; --format json always lists them",
        )

    def handle(self, location, format, near, show_all, **options):
        with (
            resolve(location, mariadb=True) as store,
            source_snapshot(store, damaged=REPORT) as snapshot,
        ):
            report = audit_snapshot(snapshot, near=near)
            snapshot.check_changes()
        self.exit_code = report.exit_code  # also when the reader stops early (`| head`)
        directory = store.project_dir
        # the project's configuration, not the store's data: reported, exit code unchanged
        labels = read_label_generator(directory) if directory else None
        out = self.console()
        if format == "json":
            write_json(audit_json(report, labels, directory), out)
        else:
            render_audit(report, out, labels=labels, directory=directory, show_all=show_all)

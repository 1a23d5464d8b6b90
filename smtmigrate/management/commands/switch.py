from __future__ import annotations

from ...errors import SmtmigrateError
from ...headroom import headroom_if_reachable
from ...locations import resolve
from ...project import (
    LABEL_FIXES,
    project_directory,
    set_label_generator,
    switch_back,
    verify_and_switch,
)
from ...render import render_headroom, render_label_fix, render_restored, render_switched
from ..base import SmtmigrateCommand, add_expect_jobs_option, add_project_argument


class Command(SmtmigrateCommand):
    help = (
        "Point a Sumatra project at another record store once it holds the same records "
        "(verified), and/or give it a label generator under which concurrent `smt run`s get "
        "distinct labels, keeping a copy of .smt/project; --back restores it."
    )

    def add_arguments(self, parser):
        add_project_argument(parser)
        parser.add_argument("target", nargs="?", help="the store to switch to")
        parser.add_argument(
            "--force", action="store_true", help="switch even if the records differ"
        )
        parser.add_argument(
            "--dedupe",
            action="store_true",
            help="TARGET was made by `copy --dedupe`: compare it with the project's store "
            "as that copy deduplicated it",
        )
        parser.add_argument(
            "--label-generator",
            choices=sorted(LABEL_FIXES),
            help="also (or, without TARGET, only) set the project's label generator as "
            "`smt configure` does: uuid (`-g uuid`) or timestamp-us (`-t "
            "%%Y%%m%%d-%%H%%M%%S-%%f`, microsecond timestamps)",
        )
        parser.add_argument("--back", action="store_true", help="restore the saved project file")
        add_expect_jobs_option(parser)

    def handle(self, project, target, force, dedupe, label_generator, back, expect_jobs, **options):
        out = self.console()
        directory = project_directory(project)
        if back:
            if target or label_generator:
                raise SmtmigrateError("--back takes no TARGET and no --label-generator")
            restored = switch_back(directory)
            render_restored(restored, out)
            return
        if not target:
            if not label_generator:
                raise SmtmigrateError(
                    "give the TARGET store to switch to, --label-generator, or --back"
                )
            render_label_fix(set_label_generator(directory, label_generator), out)
            return
        with (
            resolve(str(directory), mariadb=True) as current,
            resolve(target, mariadb=True) as new,
        ):
            verification, result = verify_and_switch(
                directory,
                current,
                new,
                force=force,
                dedupe=dedupe,
                label_generator=label_generator,
            )
            headroom = headroom_if_reachable(new)  # before the project's runs start on it
        render_switched(result, out, verification=verification, label_generator=label_generator)
        render_headroom(headroom, out, jobs=expect_jobs)

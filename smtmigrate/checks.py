"""System checks: smtmigrate reads Sumatra's models, so their apps must be installed."""

import sys

from django.apps import apps
from django.conf import settings
from django.core.checks import Error, register

CONTENTTYPES = "django.contrib.contenttypes"
SUMATRA_APP = "sumatra.recordstore.django_store"
REQUIRED_APPS = (CONTENTTYPES, SUMATRA_APP)


def missing_app(name: str) -> Error:
    return Error(
        f"smtmigrate needs '{name}' in INSTALLED_APPS.",
        hint="smtmigrate compares stores with the installed Sumatra's models.",
        id="smtmigrate.E001",
    )


@register()
def check_required_apps(app_configs, **kwargs) -> list[Error]:
    return [missing_app(name) for name in REQUIRED_APPS if not apps.is_installed(name)]


def stop_before_sumatra_models() -> None:
    """Sumatra's models import contenttypes' models, which Django refuses to load (a
    RuntimeError traceback in django.setup(), before any check runs) when that app is not
    installed: end with the check's own message instead, as Django ends failed checks."""
    installed = [entry.split(".apps.")[0] for entry in settings.INSTALLED_APPS]
    if SUMATRA_APP in installed and CONTENTTYPES not in installed:
        sys.exit(
            "SystemCheckError: System check identified some issues:\n\nERRORS:\n"
            f"{missing_app(CONTENTTYPES)}\n\nSystem check identified 1 issue (0 silenced)."
        )

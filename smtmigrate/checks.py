"""System checks: smtmigrate reads Sumatra's models, so their apps must be installed."""

from django.apps import apps
from django.core.checks import Error, register

REQUIRED_APPS = ("django.contrib.contenttypes", "sumatra.recordstore.django_store")


@register()
def check_required_apps(app_configs, **kwargs) -> list[Error]:
    return [
        Error(
            f"smtmigrate needs '{name}' in INSTALLED_APPS.",
            hint="smtmigrate compares stores with the installed Sumatra's models.",
            id="smtmigrate.E001",
        )
        for name in REQUIRED_APPS
        if not apps.is_installed(name)
    ]

from django.apps import AppConfig


class SmtmigrateConfig(AppConfig):
    name = "smtmigrate"
    verbose_name = "Sumatra store migration"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)

from django.apps import AppConfig


class SmtmigrateConfig(AppConfig):
    name = "smtmigrate"
    verbose_name = "Sumatra store migration"

    def __init__(self, app_name, app_module) -> None:
        super().__init__(app_name, app_module)
        from .checks import stop_before_sumatra_models

        stop_before_sumatra_models()  # app configs are made before any app's models load

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)

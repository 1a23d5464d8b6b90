"""Minimal settings for the standalone `smtmigrate` CLI.

Stores named on the command line are added to `django.db.connections` at run time
(see `smtmigrate.locations`); the `default` alias stays a dummy so that nothing is ever
written anywhere the user did not name.
"""

SECRET_KEY = "smtmigrate-standalone"  # never used for signing anything
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "sumatra.recordstore.django_store",
    "smtmigrate",
]
DATABASES: dict = {}
USE_TZ = True  # Sumatra stores aware datetimes, naive UTC strings in SQLite
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
LOGGING_CONFIG = None

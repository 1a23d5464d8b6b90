"""A user's own Django project that adds smtmigrate to INSTALLED_APPS."""

SECRET_KEY = "example"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "sumatra.recordstore.django_store",
    "smtmigrate",
]
DATABASES: dict = {}
USE_TZ = True
TIME_ZONE = "Europe/Paris"

"""A Django project that forgot Sumatra's app: smtmigrate's system check says so."""

SECRET_KEY = "example"
INSTALLED_APPS = ["django.contrib.contenttypes", "smtmigrate"]
DATABASES: dict = {}

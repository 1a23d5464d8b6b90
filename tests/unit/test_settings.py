"""The standalone CLI's own settings: Django's system checks of them pass.

`smtmigrate COMMAND` skips the checks (management/base.py: its settings are fixed); this
is where they run instead, every check Django and the installed apps register."""

from __future__ import annotations

from django.conf import settings
from django.core import checks


def test_the_standalone_settings_pass_every_system_check():
    assert settings.SETTINGS_MODULE == "smtmigrate.settings"
    assert checks.run_checks(include_deployment_checks=False) == []

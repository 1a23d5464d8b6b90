#!/usr/bin/env python
"""Django's command-line utility, set up with smtmigrate's own settings.

`python manage.py audit fixtures/sumatra-0.8` runs the same command as `smtmigrate audit`.
"""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "smtmigrate.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)

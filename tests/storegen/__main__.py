"""`python -m tests.storegen PATH --records N ...` (from the repository root)."""

import sys

from . import main

sys.exit(main())

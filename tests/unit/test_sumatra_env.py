"""Which `smt` Python move may ask in its own process instead of starting one."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from smtmigrate.sumatra_env import is_this_python


def test_this_python_and_its_sibling_names_are_this_python(tmp_path):
    assert is_this_python([sys.executable])
    sibling = Path(sys.executable).parent / "python3"
    if sibling.exists() and sibling.samefile(sys.executable):
        assert is_this_python([str(sibling)])


def test_the_same_interpreter_elsewhere_or_with_options_is_not(tmp_path):
    """A venv's python is a link to its base interpreter: another venv of the same base
    Python has other packages."""
    elsewhere = tmp_path / "bin" / "python"
    elsewhere.parent.mkdir()
    os.symlink(os.path.realpath(sys.executable), elsewhere)
    assert not is_this_python([str(elsewhere)])
    assert not is_this_python([sys.executable, "-I"])
    assert not is_this_python([str(tmp_path / "missing" / "python")])

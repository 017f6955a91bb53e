"""Test modules have unique file names.

pytest imports test files by their base name (the folders hold no
`__init__.py`), so two `*_test.py` files with one name in different folders
break collection of one of them.
"""

import collections
import pathlib

_TESTS = pathlib.Path(__file__).resolve().parent


def test_test_module_names_are_unique():
  names = collections.Counter(p.name for p in _TESTS.rglob("*.py"))
  assert not [n for n, count in names.items() if count > 1], names

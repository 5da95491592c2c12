"""Makes python/tests a package, so a bare `python3 -m unittest` in python/ discovers it.

The test modules import their helpers as a top-level `support` module (as they do under
`python3 -m unittest discover -s python/tests`, where this directory is the top level),
so this directory goes on sys.path too.
"""
import sys
from pathlib import Path

_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

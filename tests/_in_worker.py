"""Callables for workers that join a mount namespace.

Kept apart from the test modules: a worker imports a callable's module, and
after a mount-namespace join it can load no extension module that the
caller's process did not already have (a test module imports pytest's).
"""

from __future__ import annotations

import os

from nsworkers._worker import caller_open


def read_both(path: str) -> tuple[str, str]:
    """*path* as the target shows it, and as the caller does."""
    with open(path) as mine:
        target_view = mine.read()
    fd = caller_open(path)
    with os.fdopen(fd) as theirs:
        return target_view, theirs.read()

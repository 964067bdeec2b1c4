"""Callables the tests send to workers, in a module that is light to import.

A worker imports the module a callable came from. A test module imports
pytest (and with it ``uuid``, whose import caches the host name in
``platform``), so the zygote's trial refuses it and every worker imports it
itself: a third of a second of CPU per worker, most of the suite's time.
This module is learned once per pool instead. It also matters after a
mount-namespace join, where a worker can load no extension module that the
caller's process did not already have.
"""

from __future__ import annotations

import os

from nsworkers._worker import caller_open


def my_netns() -> str:
    return os.readlink("/proc/self/ns/net")


def read_both(path: str) -> tuple[str, str]:
    """*path* as the target shows it, and as the caller does."""
    with open(path) as mine:
        target_view = mine.read()
    fd = caller_open(path)
    with os.fdopen(fd) as theirs:
        return target_view, theirs.read()

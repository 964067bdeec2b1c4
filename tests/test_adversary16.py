"""Breaks of issue 16's changes found from the outside (adversary review of the pool, round two).

Each test is one minimal reproduction: it fails while the break is there.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest

from nsworkers import Pool

pytestmark = pytest.mark.privileged


documented: Callable[[], str | None] = lambda: documented.__doc__  # noqa: E731 -- a lambda goes by value
documented.__doc__ = "v1"


def _annotated(x: int) -> str:
    return str(inspect.signature(annotated).parameters["x"].annotation)


_annotated.__qualname__ = "<by value>._annotated"  # as a nested function's: sent by value
annotated = _annotated


def test_a_docstring_or_annotation_changed_after_numbering_is_sent_again(pool: Pool, netns: str) -> None:
    """A function sent by value carries its ``__doc__`` and ``__annotations__`` (dill sends both).

    Broke: once numbered, the worker kept the copy it got first, so after
    ``f.__doc__ = ...`` (or a changed annotation) it ran a function whose
    docstring/annotations the caller no longer had: code that reads them
    (argument parsers built from docstrings, ``inspect.signature``
    validation) behaved as the stale version. What ``_calls._inputs``
    compared left both out.
    """

    assert [pool.run(netns, documented) for _ in range(3)] == ["v1"] * 3
    documented.__doc__ = "v2"
    assert pool.run(netns, documented) == "v2"
    assert [pool.run(netns, annotated, 1) for _ in range(3)] == [str(annotated(1))] * 3
    annotated.__annotations__["x"] = "float"  # in place
    assert pool.run(netns, annotated, 1) == "float"
    annotated.__annotations__ = {"x": "bytes"}  # rebound
    assert pool.run(netns, annotated, 1) == "bytes"


LEVEL = "v0"
read_level: Callable[..., str] = lambda *_: LEVEL  # noqa: E731 -- a lambda goes by value, with the globals it reads


class _RebindsLevel:
    """An argument that rebinds ``LEVEL`` each time it is pickled, where a racing thread could."""

    def __init__(self, values: list[str]) -> None:
        self.values = values

    def __reduce__(self) -> tuple[object, tuple[()]]:
        global LEVEL
        if self.values:
            LEVEL = self.values.pop(0)
        return (str, ())


def test_a_global_rebound_and_restored_around_the_registration_is_not_kept_stale(pool: Pool, netns: str) -> None:
    """The number a worker keeps must stand for what the registration carried, not what was there after.

    Broke: another thread rebinds a global the function reads after the
    call was numbered (v0 -> v1) and back while the registration is pickled
    (v1 -> v0). The registration carried v1, the check after pickling saw
    v0 again -- the snapshot's object -- and the worker kept the v1 copy
    under the v0 number: every later call ran with v1, a value the caller
    no longer had. Here the argument's ``__reduce__`` stands for that
    thread, at the two moments it has to hit.
    """
    global LEVEL
    try:
        assert [pool.run(netns, read_level) for _ in range(2)] == ["v0", "v0"]  # numbered from the second call
        with Pool() as fresh:  # its worker has to be sent the function, under its number
            # Pickled twice: for the number-only payload (-> v1), then after the function in the registration (-> v0).
            fresh.run(netns, read_level, _RebindsLevel(["v1", "v0"]))
            assert LEVEL == "v0"
            assert fresh.run(netns, read_level) == "v0"
    finally:
        LEVEL = "v0"

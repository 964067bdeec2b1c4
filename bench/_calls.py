"""Callables the benchmarks send: in an importable module, as a library user's would be."""


def noop() -> None:
    """Do nothing: the round trip is all that is measured."""
    return None

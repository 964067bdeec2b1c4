"""The public surface: every exported name exists and is documented; import stays cheap."""

from __future__ import annotations

import subprocess
import sys

import nsworkers
import nsworkers.errors


def test_all_is_a_tuple_of_existing_documented_names() -> None:
    assert isinstance(nsworkers.__all__, tuple)
    assert len(set(nsworkers.__all__)) == len(nsworkers.__all__)
    for name in nsworkers.__all__:
        obj = getattr(nsworkers, name)
        if callable(obj) and name != "Target":
            assert obj.__doc__, f"{name} has no docstring"


def test_design_contract_names() -> None:
    for name in (
        "Pool",
        "Namespace",
        "NamespaceType",
        "run",
        "NsWorkersError",
        "WorkerCrashedError",
        "WorkerTimeoutError",
        "SerializationError",
        "NamespaceNotFoundError",
        "NotANamespaceError",
        "NamespaceTypeError",
        "SO_MARK",
    ):
        assert name in nsworkers.__all__
    for method in ("run", "submit", "map", "arun", "shutdown", "workers", "options"):
        assert callable(getattr(nsworkers.Pool, method))


def test_every_error_derives_from_the_base() -> None:
    for name in nsworkers.errors.__all__:
        obj = getattr(nsworkers.errors, name)
        if name != "RemoteTraceback":
            assert issubclass(obj, nsworkers.NsWorkersError), name
        assert name in nsworkers.__all__
    assert issubclass(nsworkers.WorkerTimeoutError, TimeoutError)
    assert issubclass(nsworkers.NamespaceNotFoundError, FileNotFoundError)


def test_import_is_cheap() -> None:
    heavy = "('pyroute2', 'psutil', 'dill', 'asyncio', 'multiprocess', 'threading', 'nsworkers._pool')"
    code = f"import sys, nsworkers; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_zygote_imports_no_module_with_an_at_fork_hook() -> None:
    # threading (and logging, subprocess, the pool, which import it) registers an
    # at-fork hook that would run in, and dirty the pages of, every forked worker.
    hooked = "('threading', 'logging', 'subprocess', 'random', 'nsworkers._pool', 'nsworkers._spawners')"
    code = f"""
import sys, nsworkers
with nsworkers.Pool(preload=("nsworkers.netlink",)) as pool:
    print(pool.run("/proc/self/ns/uts", eval, "sorted(m for m in {hooked} if m in __import__('sys').modules)"))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

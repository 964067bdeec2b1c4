"""Callables the tests send to workers, in a module that is light to import.

A worker imports the module a callable came from. A test module imports
pytest and the conftest, which the zygote's trial refuses ("it read
namespace state at import", says ``$NSWORKERS_TRIAL_LOG``), so every worker
imports it itself: a third of a second of CPU per worker, most of the
suite's time.
This module is learned once per pool instead. It also matters after a
mount-namespace join, where a worker can load no extension module that the
caller's process did not already have.
"""

from __future__ import annotations

import importlib
import os
import signal
import socket
import time
from typing import Any

from nsworkers._worker import caller_open


def my_netns() -> str:
    return os.readlink("/proc/self/ns/net")


def pid() -> int:
    return os.getpid()


def interfaces() -> list[str]:
    return sorted(name for _, name in socket.if_nameindex())


def sleep_then(seconds: float, value: str) -> str:
    time.sleep(seconds)
    return value


def wait_for_file(path: str, value: str) -> str:
    """A call that lasts until the test creates *path* (a gate, not a clock)."""
    deadline = time.monotonic() + 60
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.005)
    return value


def rendezvous_pid(directory: str, parties: int) -> int:
    """Returns only once *parties* calls are in here at the same time."""
    open(os.path.join(directory, str(os.getpid())), "w").close()
    wait_for_file_count(directory, parties)
    return os.getpid()


def wait_for_file_count(directory: str, count: int) -> None:
    deadline = time.monotonic() + 60
    while len(os.listdir(directory)) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(os.listdir(directory))} of {count} calls ever ran at once")
        time.sleep(0.005)


def read_both(path: str) -> tuple[str, str]:
    """*path* as the target shows it, and as the caller does."""
    with open(path) as mine:
        target_view = mine.read()
    fd = caller_open(path)
    with os.fdopen(fd) as theirs:
        return target_view, theirs.read()


def started_then_block(marker: str) -> int:
    """Say it runs (create *marker*, holding the pid), then block until killed."""
    with open(marker + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(marker + ".tmp", marker)
    time.sleep(3600)
    return -1


def started_then_wait(marker: str, gate: str, value: Any) -> Any:
    open(marker, "w").close()
    return wait_for_file(gate, value)


def ns_link(kind: str) -> str:
    return os.readlink(f"/proc/self/ns/{kind}")


def unshare(flags: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def import_value(name: str) -> str:
    value: str = importlib.import_module(name).VALUE
    return value


def fork_sleeper() -> int:
    """Leave a forked child running (it holds copies of every fd of the worker); return its pid."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        time.sleep(120)
        os._exit(0)
    return pid


def mp_sleeper() -> int:
    """The same through a multiprocessing "fork" Process."""
    import multiprocessing  # not at the top: its import draws a random authkey, which the zygote's trial refuses

    process = multiprocessing.get_context("fork").Process(target=time.sleep, args=(120,))
    process.start()
    assert process.pid is not None
    return process.pid


def fork_then_die(pidfile: str, via: str) -> None:
    """Leave a child running, note its pid, then die mid-call."""
    pid = fork_sleeper() if via == "fork" else mp_sleeper()
    with open(pidfile, "w") as f:
        f.write(str(pid))
    os.kill(os.getpid(), signal.SIGKILL)


class ReduceRaises:
    """A result whose pickling raises a BaseException that is not an Exception."""

    def __init__(self, error: type[BaseException]) -> None:
        self.error = error

    def __reduce__(self) -> Any:
        raise self.error()


def unpicklable_result(error: type[BaseException]) -> ReduceRaises:
    return ReduceRaises(error)


def recurse(n: int = 0) -> int:
    return recurse(n + 1)


def exhaust_memory() -> None:
    bytearray(1 << 60)

"""``deny_namespace_changes``: after it, no namespace change is possible; everything else still works.

Each test forks a child (the filter cannot be removed), installs the filter
there or not, tries things and reports over a pipe.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from typing import Any

import pytest

from nsworkers import _sys

from .conftest import in_child, run_python

pytestmark = pytest.mark.privileged

NAMESPACE_FLAGS = {
    "mnt": _sys.CLONE_NEWNS,
    "uts": _sys.CLONE_NEWUTS,
    "ipc": _sys.CLONE_NEWIPC,
    "net": _sys.CLONE_NEWNET,
    "pid": _sys.CLONE_NEWPID,
    "cgroup": _sys.CLONE_NEWCGROUP,
    "user": _sys.CLONE_NEWUSER,
    "time": _sys.CLONE_NEWTIME,
}
CLONE_FILES = 0x00000400  # include/uapi/linux/sched.h
SYS_CLONE = {"x86_64": 56, "aarch64": 220}[os.uname().machine]
SYS_CLONE3 = 435


def errno_of(call: Callable[[], object]) -> int:
    """0 if *call* succeeds, else its errno."""
    try:
        call()
    except OSError as exc:
        return exc.errno or -1
    return 0


def raw_syscall(number: int, *args: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    ret = int(libc.syscall(ctypes.c_long(number), *(ctypes.c_long(a) for a in args)))
    if ret == 0 and number == SYS_CLONE:  # pragma: no cover - the clone child, when the filter let it through
        os._exit(0)
    if ret > 0 and number == SYS_CLONE:
        os.waitpid(ret, 0)
        return 0
    return 0 if ret == 0 else ctypes.get_errno()


def unshare_in_grandchild(flag: int) -> int:
    """errno of ``unshare(flag)`` in a forked grandchild, so the child itself never moves."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the grandchild
        code = unshare_ctypes(flag)
        os.write(write_end, str(code).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        code = int(reader.read() or b"-1")
    os.waitpid(pid, 0)
    return code


def unshare_ctypes(flag: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    return 0 if libc.unshare(flag) == 0 else ctypes.get_errno()


def attempts() -> dict[str, Any]:
    """Every namespace change the filter must stop, and what happened."""
    with open("/proc/self/ns/net", "rb") as net:  # its own: owned by our user namespace
        setns = errno_of(lambda: _sys.setns(net.fileno(), 0))
    return {
        "setns": setns,
        "unshare": {name: unshare_in_grandchild(flag) for name, flag in NAMESPACE_FLAGS.items()},
        "clone": {
            name: raw_syscall(SYS_CLONE, flag | signal.SIGCHLD, 0, 0, 0, 0)
            for name, flag in NAMESPACE_FLAGS.items()
            if flag != _sys.CLONE_NEWTIME  # clone(2) reads that bit as part of the exit signal
        },
        "clone3": raw_syscall(SYS_CLONE3, 0, 0),
    }


def test_without_the_filter_the_attempts_succeed() -> None:
    # The control: the same attempts are really possible here, so the EPERMs below come from the filter.
    result = in_child(attempts)
    assert result["setns"] == 0
    assert all(code in (0, errno.EINVAL) for code in result["unshare"].values()), result  # EINVAL: not built in
    assert result["unshare"]["net"] == result["unshare"]["mnt"] == 0
    assert set(result["clone"].values()) <= {0, errno.EINVAL}, result
    assert result["clone3"] != errno.ENOSYS  # EFAULT: a NULL struct clone_args


def test_the_filter_denies_every_namespace_change() -> None:
    def body() -> dict[str, Any]:
        return {"installed": _sys.deny_namespace_changes(), **attempts()}

    result = in_child(body)
    assert result["installed"] is True
    assert result["setns"] == errno.EPERM
    assert result["unshare"] == dict.fromkeys(NAMESPACE_FLAGS, errno.EPERM)
    assert set(result["clone"].values()) == {errno.EPERM}
    assert result["clone3"] == errno.ENOSYS


def test_after_the_filter_fork_threads_and_subprocesses_work() -> None:
    def body() -> dict[str, Any]:
        assert _sys.deny_namespace_changes()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the grandchild
            os._exit(7)
        _, status = os.waitpid(pid, 0)
        seen: list[int] = []
        thread = threading.Thread(target=lambda: seen.append(threading.get_native_id()))
        thread.start()
        thread.join()
        true = subprocess.run(["true"], check=False).returncode
        unshare = subprocess.run(["unshare", "-m", "true"], capture_output=True, text=True, check=False)
        return {
            "fork": os.WEXITSTATUS(status),
            "thread": len(seen),
            "true": true,
            "unshare_m": [unshare.returncode, unshare.stderr],
            "unshare_files": unshare_in_grandchild(CLONE_FILES),
        }

    result = in_child(body)
    assert result["fork"] == 7
    assert result["thread"] == 1
    assert result["true"] == 0
    assert result["unshare_m"][0] != 0
    assert "Operation not permitted" in result["unshare_m"][1]
    assert result["unshare_files"] == 0


def test_threads_started_before_the_filter_are_covered_too() -> None:
    def body() -> dict[str, Any]:
        go = threading.Event()
        outcome: list[int] = []

        def later() -> None:
            go.wait()
            outcome.append(unshare_ctypes(_sys.CLONE_NEWUTS))  # unshare of uts is allowed per thread

        thread = threading.Thread(target=later)
        thread.start()
        installed = _sys.deny_namespace_changes()
        go.set()
        thread.join()
        return {"installed": installed, "thread": outcome}

    assert in_child(body) == {"installed": True, "thread": [errno.EPERM]}


def test_without_cap_sys_admin_nothing_is_installed() -> None:
    code = "from nsworkers import _sys\nprint(_sys.deny_namespace_changes())"
    done = run_python(code, no_caps=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "False"

"""Named and temporary network namespaces, interoperable with ``ip netns``.

``create(name)`` does what ``ip netns add`` does: make ``/run/netns`` a
shared mount point, create an empty file there, and bind-mount a fresh
network namespace onto it. The ``unshare`` happens in a short-lived helper
process, so no thread of the caller ever changes namespace. A failure at any
step removes what was made: no half-made namespace is left behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import subprocess
import sys
from collections.abc import Iterator

from ._namespace import NETNS_RUN_DIRS, Namespace, NamespaceType, check_netns_name
from ._sys import CLONE_NEWNET, recv_fds
from .errors import NamespaceExistsError, NamespaceNotFoundError, NamespacePermissionError, NsWorkersError

__all__ = ("NETNS_RUN_DIR", "create", "delete", "list_named", "path_of", "temporary")

NETNS_RUN_DIR = NETNS_RUN_DIRS[0]

_MS_BIND = 0x1000
_MS_REC = 0x4000
_MS_SHARED = 1 << 20
_MNT_DETACH = 2

# Runs in the helper interpreter: unshare a new netns, then bind it to a path
# or hand its fd back over a socket. Kept import-light: it starts per call.
_HELPER_CONSTANTS = f"CLONE_NEWNET, MS_BIND = {CLONE_NEWNET}, {_MS_BIND}\n"
_HELPER = r"""
import ctypes, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
def check(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        sys.stderr.write(f"{err} {what}: {os.strerror(err)}\n")
        sys.exit(1)
check(libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
mode, arg = sys.argv[1], sys.argv[2]
if mode == "bind":
    check(libc.mount(b"/proc/self/ns/net", arg.encode(), b"none", MS_BIND, None), "bind mount")
else:
    fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    socket.send_fds(socket.socket(fileno=int(arg)), [b"n"], [fd])
"""


def _libc_call(name: str, *args: object) -> int:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    ret: int = getattr(libc, name)(*args)
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def path_of(name: str) -> str:
    """``/run/netns/NAME`` after validating *name* the way ``ip netns`` does."""
    check_netns_name(name)
    return f"{NETNS_RUN_DIR}/{name}"


def _ensure_shared_run_dir() -> None:
    os.makedirs(NETNS_RUN_DIR, mode=0o755, exist_ok=True)
    try:
        _libc_call("mount", b"", NETNS_RUN_DIR.encode(), b"none", _MS_SHARED | _MS_REC, None)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        # Not a mount point yet: bind it onto itself, then make it shared (as iproute2 does).
        _libc_call("mount", NETNS_RUN_DIR.encode(), NETNS_RUN_DIR.encode(), b"none", _MS_BIND | _MS_REC, None)
        _libc_call("mount", b"", NETNS_RUN_DIR.encode(), b"none", _MS_SHARED | _MS_REC, None)


def _helper(mode: str, arg: str, pass_fds: tuple[int, ...] = ()) -> None:
    done = subprocess.run(
        [sys.executable or "python3", "-I", "-c", _HELPER_CONSTANTS + _HELPER, mode, arg],
        pass_fds=pass_fds,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        message = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
        code, _, text = message.partition(" ")
        err = int(code) if code.isdigit() else errno.EIO
        if err in (errno.EPERM, errno.EACCES):
            raise NamespacePermissionError(err, f"cannot create a network namespace: {text}")
        raise NsWorkersError(f"cannot create a network namespace: {message}")


def create(name: str) -> Namespace:
    """Create the named network namespace ``/run/netns/NAME``; return an open handle to it.

    Raises :class:`NamespaceExistsError` if the name is taken. ``ip netns
    list/exec`` see the result, and :func:`delete` removes namespaces made
    by ``ip netns add`` alike.
    """
    path = path_of(name)
    _ensure_shared_run_dir()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0)
    except FileExistsError:
        raise NamespaceExistsError(errno.EEXIST, "network namespace exists", name) from None
    os.close(fd)
    try:
        _helper("bind", path)
        return Namespace.open(path, NamespaceType.NET)
    except BaseException:
        with contextlib.suppress(OSError):
            _libc_call("umount2", path.encode(), _MNT_DETACH)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


def delete(name: str) -> None:
    """Remove the named network namespace (unmount and unlink, like ``ip netns del``).

    The namespace itself lives on while a process or fd still holds it (a
    worker, for example). Raises :class:`NamespaceNotFoundError` if there is
    no such name.
    """
    path = path_of(name)
    if not os.path.lexists(path):
        raise NamespaceNotFoundError(errno.ENOENT, "no such named network namespace", name)
    try:
        _libc_call("umount2", path.encode(), _MNT_DETACH)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # EINVAL: not mounted (a stale file)
            raise
    os.unlink(path)


@contextlib.contextmanager
def temporary() -> Iterator[Namespace]:
    """An anonymous network namespace that lives as long as the handle (the Go ``TempNetNS``).

    Nothing is mounted or named: the namespace disappears when the handle is
    closed and no worker or process is left in it.
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with ours, theirs:
        _helper("fd", str(theirs.fileno()), (theirs.fileno(),))
        _, fds, _, _ = recv_fds(ours, 1, 1)
    if len(fds) != 1:
        raise NsWorkersError("the helper did not pass back a namespace fd")
    try:
        ns = Namespace.from_fd(fds[0], NamespaceType.NET)
    finally:
        os.close(fds[0])
    with ns:
        yield ns


def list_named() -> list[str]:
    """Names of the network namespaces in ``/run/netns`` (and ``/var/run/netns`` if separate)."""
    names: list[str] = []
    seen: set[tuple[int, int]] = set()
    for base in NETNS_RUN_DIRS:
        try:
            entries = sorted(os.listdir(base))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            try:
                st = os.stat(f"{base}/{entry}")
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen and entry not in names:
                seen.add((st.st_dev, st.st_ino))
                names.append(entry)
    return names

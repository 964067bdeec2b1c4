"""Thin wrappers around the Linux system calls nsworkers needs.

Python 3.12 has ``os.setns``; older versions go through ctypes, which is
imported only when one of these wrappers is first used, so ``import
nsworkers`` stays cheap.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from typing import Any

NSFS_MAGIC = 0x6E736673
PROC_SUPER_MAGIC = 0x9FA0

NS_GET_USERNS = 0xB701
NS_GET_PARENT = 0xB702
NS_GET_NSTYPE = 0xB703

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15

# openat2(2) resolve flags, include/uapi/linux/openat2.h
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

# System call numbers shared by every architecture (include/uapi/asm-generic/unistd.h).
SYS_PIDFD_OPEN = 434
SYS_OPENAT2 = 437
SYS_PIDFD_GETFD = 438

_libc: Any = None


def _get_libc() -> Any:
    global _libc
    if _libc is None:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _check(ret: int) -> int:
    if ret == -1:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def setns(fd: int, nstype: int = 0) -> None:
    """Move the calling thread into the namespace behind *fd*."""
    if hasattr(os, "setns"):
        os.setns(fd, nstype)
    else:  # Python < 3.12
        _check(_get_libc().setns(fd, nstype))


def prctl(option: int, arg: int | bytes) -> None:
    """Call ``prctl(option, arg, 0, 0, 0)``."""
    _check(_get_libc().prctl(option, arg, 0, 0, 0))


def set_process_name(name: str) -> None:
    """Name the calling thread (what ``ps -o comm``/``top`` show); 15 bytes at most."""
    prctl(PR_SET_NAME, name.encode()[:15])


def fstatfs_type(fd: int) -> int:
    """Return ``f_type`` of the filesystem holding *fd* (``fstatfs(2)``)."""
    import ctypes

    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit
    _check(_get_libc().fstatfs(fd, buf))
    return ctypes.c_long.from_buffer(buf).value


def ns_ioctl(fd: int, request: int) -> int:
    """Issue an argument-less nsfs ioctl; returns its result (an int or an fd)."""
    return fcntl.ioctl(fd, request)


def nstype_of_fd(fd: int) -> int | None:
    """The ``CLONE_NEW*`` type of namespace *fd*, or None if the kernel lacks NS_GET_NSTYPE."""
    try:
        return ns_ioctl(fd, NS_GET_NSTYPE)
    except OSError as exc:
        if exc.errno in (errno.ENOTTY, errno.EINVAL):
            return None
        raise


def recv_fds(sock: socket.socket, bufsize: int, maxfds: int) -> tuple[bytes, list[int], int, Any]:
    """``socket.recv_fds`` with ``MSG_CMSG_CLOEXEC``: received fds are close-on-exec from the start.

    (``socket.recv_fds`` on Python < 3.12 ignores its *flags* argument.)
    """
    import array

    fds = array.array("i")
    msg, ancdata, flags, addr = sock.recvmsg(bufsize, socket.CMSG_LEN(maxfds * fds.itemsize), socket.MSG_CMSG_CLOEXEC)
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    return msg, list(fds), flags, addr


def openat2(dir_fd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """``openat2(2)`` (Linux 5.6+): open *path* relative to *dir_fd* under the *resolve* restrictions."""
    import ctypes

    class OpenHow(ctypes.Structure):
        _fields_ = (("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64))

    how = OpenHow(flags, mode, resolve)
    libc = _get_libc()
    libc.syscall.restype = ctypes.c_long
    fd = libc.syscall(
        ctypes.c_long(SYS_OPENAT2),
        ctypes.c_int(dir_fd),
        ctypes.c_char_p(os.fsencode(path)),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    return _check(int(fd))

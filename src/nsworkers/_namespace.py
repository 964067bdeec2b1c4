"""Validated, open references to kernel namespaces.

A :class:`Namespace` holds an ``O_CLOEXEC`` file descriptor on an nsfs file
(``/proc/PID/ns/TYPE``, a bind mount of one such as ``/run/netns/NAME``, or an
fd passed in), and is identified by the inode behind it, like the kernel does:
two references to the same namespace compare equal whatever path opened them.
"""

from __future__ import annotations

import enum
import errno
import os
import socket
import stat
from collections.abc import Iterable
from typing import Any

from . import _sys
from .errors import (
    InvalidTargetError,
    NamespaceClosedError,
    NamespaceNotFoundError,
    NamespacePermissionError,
    NamespaceTypeError,
    NotANamespaceError,
)

__all__ = ("SO_MARK", "Namespace", "NamespaceType", "TypeLike")

#: ``SO_MARK`` socket option (Linux): set the fwmark of packets sent by a socket.
SO_MARK: int = getattr(socket, "SO_MARK", 36)

NETNS_RUN_DIRS = ("/run/netns", "/var/run/netns")

_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK


class NamespaceType(enum.Enum):
    """The eight kernel namespace types; the value is the name used in ``/proc/PID/ns``."""

    CGROUP = "cgroup"
    IPC = "ipc"
    MNT = "mnt"
    NET = "net"
    PID = "pid"
    TIME = "time"
    USER = "user"
    UTS = "uts"

    @property
    def flag(self) -> int:
        """The ``CLONE_NEW*`` constant of this type."""
        return _FLAGS[self]

    @classmethod
    def from_flag(cls, flag: int) -> NamespaceType:
        """The type whose ``CLONE_NEW*`` constant is *flag*."""
        for kind, value in _FLAGS.items():
            if value == flag:
                return kind
        raise ValueError(f"unknown namespace type flag {flag:#x}")

    @classmethod
    def coerce(cls, value: TypeLike) -> NamespaceType:
        """Accept a ``NamespaceType``, its name (``"net"``) or its ``CLONE_NEW*`` flag."""
        if isinstance(value, NamespaceType):
            return value
        if isinstance(value, str):
            try:
                return cls(value.lower())
            except ValueError:
                names = ", ".join(t.value for t in cls)
                raise ValueError(f"unknown namespace type {value!r} (one of: {names})") from None
        if isinstance(value, int) and not isinstance(value, bool):
            return cls.from_flag(value)
        raise TypeError(f"namespace type must be a NamespaceType, str or int, not {type(value).__name__}")


_FLAGS = {
    NamespaceType.CGROUP: _sys.CLONE_NEWCGROUP,
    NamespaceType.IPC: _sys.CLONE_NEWIPC,
    NamespaceType.MNT: _sys.CLONE_NEWNS,
    NamespaceType.NET: _sys.CLONE_NEWNET,
    NamespaceType.PID: _sys.CLONE_NEWPID,
    NamespaceType.TIME: _sys.CLONE_NEWTIME,
    NamespaceType.USER: _sys.CLONE_NEWUSER,
    NamespaceType.UTS: _sys.CLONE_NEWUTS,
}

#: Order in which several namespaces are joined: util-linux ``nsenter`` order.
JOIN_ORDER = (
    NamespaceType.USER,
    NamespaceType.CGROUP,
    NamespaceType.IPC,
    NamespaceType.UTS,
    NamespaceType.NET,
    NamespaceType.PID,
    NamespaceType.MNT,
    NamespaceType.TIME,
)

TypeLike = NamespaceType | str | int

_nsfs_dev: int | None = None


def nsfs_dev() -> int:
    """``st_dev`` shared by every nsfs inode (one internal superblock)."""
    global _nsfs_dev
    if _nsfs_dev is None:
        _nsfs_dev = os.stat("/proc/self/ns/net").st_dev
    return _nsfs_dev


def _type_from_link(fd: int) -> NamespaceType | None:
    # Kernels before 4.11 lack NS_GET_NSTYPE; nsfs fds still read as "net:[4026531833]".
    try:
        link = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    name, sep, _ = link.partition(":[")
    if sep:
        try:
            return NamespaceType(name)
        except ValueError:
            return None
    return None


def type_of_fd(fd: int) -> NamespaceType:
    """The type of the namespace behind nsfs *fd*."""
    flag = _sys.nstype_of_fd(fd)
    kind = NamespaceType.from_flag(flag) if flag is not None else _type_from_link(fd)
    if kind is None:
        raise NotANamespaceError(f"cannot tell the type of namespace fd {fd}")
    return kind


def _open_error(exc: OSError, path: str) -> Exception:
    if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ESRCH):
        return NamespaceNotFoundError(errno.ENOENT, "no such namespace", path)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return NamespacePermissionError(exc.errno, "permission denied opening namespace", path)
    if exc.errno == errno.ELOOP:
        return NotANamespaceError(f"not a namespace: {path!r} (too many levels of symbolic links)")
    return NotANamespaceError(f"not a namespace: {path!r} ({os.strerror(exc.errno or 0)})")


def check_path(path: str) -> os.stat_result:
    """``stat`` *path* and check it is an nsfs file, without opening it."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise _open_error(exc, path) from None
    if not stat.S_ISREG(st.st_mode) or st.st_dev != nsfs_dev():
        raise NotANamespaceError(f"not a namespace: {path!r} ({_describe(st)})")
    return st


def _describe(st: os.stat_result) -> str:
    if stat.S_ISDIR(st.st_mode):
        return "a directory"
    if stat.S_ISREG(st.st_mode):
        return "a regular file, not on nsfs"
    return "a special file"


def open_fd(path: str, want: NamespaceType | None = None) -> tuple[int, NamespaceType, os.stat_result]:
    """Open and validate a namespace path; return ``(fd, type, fstat)``. The fd is ``O_CLOEXEC``.

    Open first, check after, on the fd: the path is opened ``O_PATH`` (which
    opens nothing for I/O: a FIFO or a device swapped in by another user is
    never opened, whatever the race), checked to be an nsfs file, and only
    then reopened for real through ``/proc/self/fd`` -- the same inode, not
    the path again.
    """
    try:
        probe = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError as exc:
        raise _open_error(exc, path) from None
    try:
        st = os.fstat(probe)
        if not stat.S_ISREG(st.st_mode) or _sys.fstatfs_type(probe) != _sys.NSFS_MAGIC:
            raise NotANamespaceError(f"not a namespace: {path!r} ({_describe(st)})")
        try:
            fd = os.open(f"/proc/self/fd/{probe}", _OPEN_FLAGS)
        except OSError as exc:
            raise _open_error(exc, path) from None
    finally:
        os.close(probe)
    try:
        return (fd, *validate_fd(fd, path, want))
    except BaseException:
        os.close(fd)
        raise


def validate_fd(fd: int, label: str, want: NamespaceType | None) -> tuple[NamespaceType, os.stat_result]:
    """Check that *fd* is an nsfs file (of type *want*); return ``(type, fstat)``."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or _sys.fstatfs_type(fd) != _sys.NSFS_MAGIC:
        raise NotANamespaceError(f"not a namespace: {label!r} ({_describe(st)})")
    kind = type_of_fd(fd)
    if want is not None and kind is not want:
        raise NamespaceTypeError(f"{label!r} is a {kind.value} namespace, not {want.value}")
    return kind, st


class Namespace:
    """An open, validated reference to one kernel namespace.

    Build one with :meth:`open`, :meth:`from_pid`, :meth:`from_thread`,
    :meth:`from_name`, :meth:`from_fd` or :meth:`current`. It owns an
    ``O_CLOEXEC`` fd, so the namespace stays alive while the handle is open;
    close it with :meth:`close` or a ``with`` block. Equality and hash follow
    the kernel identity :attr:`id`, whatever path opened it.
    """

    __slots__ = ("_fd", "_id", "_path", "_type", "__weakref__")

    def __init__(self, fd: int, path: str, kind: NamespaceType, ident: tuple[int, int]) -> None:
        # Private: use the classmethods, which validate.
        self._fd = fd
        self._path = path
        self._type = kind
        self._id = ident

    # -- constructors -------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str], type: TypeLike | None = None) -> Namespace:
        """Open the namespace file at *path* (``/run/netns/x``, ``/proc/1/ns/net``, a bind mount).

        Raises :class:`NamespaceNotFoundError` if it does not exist,
        :class:`NotANamespaceError` if it is not an nsfs file and
        :class:`NamespaceTypeError` if *type* is given and does not match.
        """
        text = fspath(path)
        want = None if type is None else NamespaceType.coerce(type)
        fd, kind, st = open_fd(text, want)
        return cls(fd, text, kind, (st.st_dev, st.st_ino))

    @classmethod
    def from_pid(cls, pid: int, type: TypeLike = "net") -> Namespace:
        """The namespace of *type* that process *pid* is in (``/proc/PID/ns/TYPE``)."""
        kind = NamespaceType.coerce(type)
        _check_id("pid", pid)
        return cls.open(f"/proc/{pid}/ns/{kind.value}", kind)

    @classmethod
    def from_thread(cls, pid: int, tid: int, type: TypeLike = "net") -> Namespace:
        """The namespace of *type* that thread *tid* of process *pid* is in."""
        kind = NamespaceType.coerce(type)
        _check_id("pid", pid)
        _check_id("tid", tid)
        return cls.open(f"/proc/{pid}/task/{tid}/ns/{kind.value}", kind)

    @classmethod
    def from_name(cls, name: str) -> Namespace:
        """A named network namespace, as ``ip netns`` names them (``/run/netns/NAME``)."""
        check_netns_name(name)
        for base in NETNS_RUN_DIRS:
            path = f"{base}/{name}"
            try:
                return cls.open(path, NamespaceType.NET)
            except NamespaceNotFoundError:
                continue
        raise NamespaceNotFoundError(errno.ENOENT, "no such named network namespace", name)

    @classmethod
    def from_fd(cls, fd: int, type: TypeLike | None = None) -> Namespace:
        """Validate and duplicate *fd*; the caller keeps and closes its own fd."""
        want = None if type is None else NamespaceType.coerce(type)
        if not isinstance(fd, int) or isinstance(fd, bool) or fd < 0:
            raise NamespaceNotFoundError(errno.EBADF, "invalid file descriptor", str(fd))
        try:
            own = fcntl_dupfd_cloexec(fd)
        except OSError:
            raise NamespaceNotFoundError(errno.EBADF, "file descriptor is not open", str(fd)) from None
        try:
            kind, st = validate_fd(own, f"fd {fd}", want)
        except BaseException:
            os.close(own)
            raise
        return cls(own, f"/proc/{os.getpid()}/fd/{own}", kind, (st.st_dev, st.st_ino))

    @classmethod
    def from_container(cls, id_or_prefix: str, type: TypeLike = "net") -> Namespace:
        """The namespace of *type* of a container, found by (a prefix of) its id in ``/proc/*/cgroup``.

        Works for every runtime the attribution recognises (docker, containerd,
        CRI-O, podman), without talking to the engine. An unknown id raises
        :class:`NamespaceNotFoundError`; a prefix matching several containers
        :class:`AmbiguousContainerError` listing them.
        """
        from ._attribution import container_processes
        from .errors import AmbiguousContainerError

        prefix = id_or_prefix.strip().lower()
        if not prefix or any(c not in "0123456789abcdef" for c in prefix):
            raise ValueError(f"not a container id: {id_or_prefix!r}")
        matches = {cid: pids for cid, pids in container_processes().items() if cid.startswith(prefix)}
        if not matches:
            raise NamespaceNotFoundError(errno.ESRCH, "no running container with that id", id_or_prefix)
        if len(matches) > 1:
            raise AmbiguousContainerError(id_or_prefix, sorted(matches))
        (pids,) = matches.values()
        for pid in sorted(pids):
            try:
                return cls.from_pid(pid, type)
            except NamespaceNotFoundError:
                continue  # exited meanwhile
        raise NamespaceNotFoundError(errno.ESRCH, "the container's processes are gone", id_or_prefix)

    @classmethod
    def current(cls, type: TypeLike = "net") -> Namespace:
        """The calling thread's namespace of *type*."""
        kind = NamespaceType.coerce(type)
        return cls.open(f"/proc/thread-self/ns/{kind.value}", kind)

    # -- properties ---------------------------------------------------------

    @property
    def fd(self) -> int:
        """The owned file descriptor; :class:`NamespaceClosedError` after :meth:`close`."""
        if self._fd < 0:
            raise NamespaceClosedError(f"{self!r} is closed")
        return self._fd

    def fileno(self) -> int:
        """Same as :attr:`fd`, so a ``Namespace`` can be passed where a file is expected."""
        return self.fd

    @property
    def path(self) -> str:
        """The path this reference was opened from."""
        return self._path

    @property
    def type(self) -> NamespaceType:
        """The namespace type, from the ``NS_GET_NSTYPE`` ioctl."""
        return self._type

    @property
    def id(self) -> tuple[int, int]:
        """The kernel identity ``(st_dev, st_ino)``."""
        return self._id

    @property
    def inode(self) -> int:
        """The namespace's inode number (what ``lsns`` shows as NS)."""
        return self._id[1]

    @property
    def unique_id(self) -> str:
        """``"net:[4026531833]"``: the form ``readlink /proc/PID/ns/net`` prints."""
        return f"{self._type.value}:[{self._id[1]}]"

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._fd < 0

    def close(self) -> None:
        """Close the fd; safe to call twice."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> Namespace:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        fd = getattr(self, "_fd", -1)
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Namespace):
            return NotImplemented
        return self._id == other._id

    def __hash__(self) -> int:
        return hash(self._id)

    def __repr__(self) -> str:
        state = " closed" if self._fd < 0 else ""
        return f"<Namespace {self.unique_id} {self._path!r}{state}>"

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError("a Namespace holds a file descriptor and cannot be pickled; send its path")


def fspath(path: object) -> str:
    """A namespace path as ``str``; anything else (``None``, ``int``, ``bytes``) is a TypeError."""
    if isinstance(path, str):
        text = path
    elif isinstance(path, os.PathLike):
        text = os.fspath(path)
        if not isinstance(text, str):
            raise InvalidTargetError(f"namespace path must be str, got {type(text).__name__}")
    else:
        raise InvalidTargetError(
            f"namespace target must be a path (str or os.PathLike), a Namespace or a sequence of "
            f"Namespace, not {type(path).__name__}"
        )
    if not text or "\0" in text:
        raise NotANamespaceError(f"not a namespace path: {text!r}")
    return text


def check_netns_name(name: str) -> None:
    """Reject names ``ip netns`` would reject: empty, ``.``/``..``, with ``/``, too long."""
    if not isinstance(name, str):
        raise TypeError(f"namespace name must be str, not {type(name).__name__}")
    if not name or name in (".", "..") or "/" in name or "\0" in name or len(name) > 255:
        raise ValueError(f"invalid network namespace name: {name!r}")


def _check_id(what: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise NamespaceNotFoundError(errno.ESRCH, f"invalid {what}", str(value))


def fcntl_dupfd_cloexec(fd: int) -> int:
    """``fcntl(fd, F_DUPFD_CLOEXEC, 0)``: a close-on-exec duplicate."""
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 0)


def sort_for_join(items: Iterable[NamespaceType]) -> list[NamespaceType]:
    """Types in ``nsenter`` join order."""
    present = set(items)
    return [t for t in JOIN_ORDER if t in present]

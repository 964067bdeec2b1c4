"""What a call names -> which kernel namespaces, and fresh fds to join them.

A target is a path, a :class:`Namespace`, or a sequence of ``Namespace`` of
different types. :func:`resolve` turns it into a :class:`Target` whose
``key`` -- the ``(st_dev, st_ino)`` of each namespace, in join order -- is the
identity the pool files workers under. Resolving a path costs one ``stat``
(no open: ``stat`` has no side effect on a FIFO or a device), so a namespace
deleted and re-created under the same name gets a new key, and so a new
worker. The fds a new worker joins are opened only when one is started
(:meth:`Target.open_specs`), open-then-check, and compared with the key.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from typing import Union

from ._namespace import (
    JOIN_ORDER,
    Namespace,
    NamespaceType,
    check_path,
    fcntl_dupfd_cloexec,
    fspath,
    open_fd,
)
from .errors import (
    InvalidTargetError,
    NamespaceClosedError,
    NamespaceNotFoundError,
    NamespaceTypeError,
)

__all__ = ("Key", "Target", "TargetLike", "resolve")

#: What a call can target: a path, a Namespace, or several Namespaces of different types.
TargetLike = Union[str, "os.PathLike[str]", Namespace, Sequence[Namespace]]

#: Kernel identities ``((dev, ino), ...)`` of a target's namespaces, in join order.
Key = tuple[tuple[int, int], ...]

#: A namespace for a new worker to join: (fd, CLONE_NEW* flag, type name, (dev, ino)).
Spec = tuple[int, int, str, tuple[int, int]]


class Target:
    """A resolved target: its identity, and how to name it in messages."""

    __slots__ = ("key", "namespaces", "path")

    def __init__(self, key: Key, path: str | None, namespaces: tuple[Namespace, ...]) -> None:
        self.key = key
        self.path = path
        self.namespaces = namespaces

    @property
    def label(self) -> str:
        """How messages name the target: its path, or the namespaces' unique ids."""
        if self.path is not None:
            return self.path
        if len(self.namespaces) == 1:
            ns = self.namespaces[0]
            return f"{ns.unique_id} ({ns.path})"
        return "+".join(ns.unique_id for ns in self.namespaces)

    def open_specs(self) -> list[Spec]:
        """Fresh fds for a new worker to join, checked to still be the namespaces of ``key``."""
        if self.path is not None:
            fd, kind, st = open_fd(self.path)
            if (st.st_dev, st.st_ino) != self.key[0]:
                os.close(fd)
                raise NamespaceNotFoundError(errno.ENOENT, "namespace was replaced while its worker started", self.path)
            return [(fd, kind.flag, kind.value, self.key[0])]
        specs: list[Spec] = []
        try:
            for ns in self.namespaces:
                specs.append((fcntl_dupfd_cloexec(ns.fd), ns.type.flag, ns.type.value, ns.id))
        except BaseException:
            for spec in specs:
                os.close(spec[0])
            raise
        return specs


_by_path: dict[str, Target] = {}  # the last Target of each path, reused while its identity holds
_MAX_PATHS = 4096
_stat = os.stat


def resolve(target: object) -> Target:
    """The :class:`Target` behind *target*; typed errors before anything is spawned."""
    if type(target) is Namespace:  # the fast path, first
        if target._fd < 0:
            raise NamespaceClosedError(f"{target!r} is closed")
        return Target((target._id,), None, (target,))
    if type(target) is str:
        # A path is re-checked on every call: a stat (no side effect on whatever it names) gives the
        # identity now; if it is the one this path had last time, it is the same nsfs inode.
        try:
            st = _stat(target)
        except (OSError, ValueError):
            pass  # check_path says what is wrong
        else:
            known = _by_path.get(target)
            if known is not None and known.key[0] == (st.st_dev, st.st_ino):
                return known
    if isinstance(target, str):
        path = fspath(target)
        st = check_path(path)
        resolved = Target(((st.st_dev, st.st_ino),), path, ())
        if type(target) is str:
            if len(_by_path) >= _MAX_PATHS:
                _by_path.clear()
            _by_path[target] = resolved
        return resolved
    if isinstance(target, Namespace):
        if target.closed:
            raise NamespaceClosedError(f"{target!r} is closed")
        return Target((target.id,), None, (target,))
    if isinstance(target, os.PathLike):
        return resolve(fspath(target))
    if isinstance(target, Sequence) and not isinstance(target, (bytes, bytearray)) and target:
        items = list(target)
        if not all(isinstance(item, Namespace) for item in items):
            raise InvalidTargetError("a multi-namespace target must hold Namespace objects only")
        seen: dict[NamespaceType, Namespace] = {}
        for ns in items:
            if ns.closed:
                raise NamespaceClosedError(f"{ns!r} is closed")
            if ns.type in seen and seen[ns.type] != ns:
                raise NamespaceTypeError(f"two different {ns.type.value} namespaces in one target")
            seen[ns.type] = ns
        ordered = tuple(seen[t] for t in JOIN_ORDER if t in seen)
        if len(ordered) == 1:
            return resolve(ordered[0])
        return Target(tuple(ns.id for ns in ordered), None, ordered)
    fspath(target)  # raises InvalidTargetError with the message for non-paths
    raise InvalidTargetError(f"invalid namespace target: {target!r}")

"""Every exception nsworkers raises, under one base class.

Each error also subclasses the builtin it resembles, so code that already
catches ``FileNotFoundError``, ``PermissionError`` or ``TimeoutError`` keeps
working::

    NsWorkersError
    ├── NamespaceError
    │   ├── NamespaceNotFoundError      (FileNotFoundError)  path/pid/name/fd missing
    │   ├── NotANamespaceError          (ValueError)         exists, but is not an nsfs file
    │   ├── NamespaceTypeError          (ValueError)         a namespace of another type
    │   ├── NamespaceClosedError        (ValueError)         a ``Namespace`` used after close()
    │   ├── NamespacePermissionError    (PermissionError)    may not open it
    │   ├── NamespaceExistsError        (FileExistsError)    netns.create() of a taken name
    │   ├── AmbiguousContainerError     (LookupError)        a container id prefix that matches several
    │   └── NamespaceJoinError          (OSError)            the worker's setns() failed (errno kept)
    ├── WorkerError
    │   ├── WorkerCrashedError          (RuntimeError)       worker died mid-call (exit code / signal)
    │   ├── WorkerTimeoutError          (TimeoutError)       call past its timeout; worker killed
    │   ├── WorkerStartError            (RuntimeError)       could not start a worker or the zygote
    │   └── WorkerStateError            (RuntimeError)       the callable moved the worker to another namespace
    ├── InvalidTargetError              (TypeError)          a target that is not a path, Namespace or sequence of them
    ├── LinkNotFoundError               (LookupError)        netlink.link() of an interface that does not exist
    ├── NetlinkWriteError               (OSError)            the kernel refused a netlink write (errno kept)
    ├── SerializationError              (pickle.PickleError) argument / result / callable cannot be sent
    ├── ProtocolError                   (RuntimeError)       a malformed frame on a worker channel
    ├── RemoteError                     (RuntimeError)       a remote exception that could not be sent as itself
    └── PoolClosedError                 (RuntimeError)       the pool was shut down

An exception raised by the callable itself is re-raised in the caller with its
own type; the worker's formatted traceback is chained as ``__cause__``
(a :class:`RemoteTraceback`).
"""

from __future__ import annotations

import pickle

__all__ = (
    "AmbiguousContainerError",
    "InvalidTargetError",
    "LinkNotFoundError",
    "NamespaceClosedError",
    "NamespaceError",
    "NamespaceExistsError",
    "NamespaceJoinError",
    "NamespaceNotFoundError",
    "NamespacePermissionError",
    "NamespaceTypeError",
    "NetlinkWriteError",
    "NotANamespaceError",
    "NsWorkersError",
    "PoolClosedError",
    "ProtocolError",
    "RemoteError",
    "RemoteTraceback",
    "SerializationError",
    "WorkerCrashedError",
    "WorkerError",
    "WorkerStartError",
    "WorkerStateError",
    "WorkerTimeoutError",
)


class NsWorkersError(Exception):
    """Base class of every error raised by nsworkers itself."""


class NamespaceError(NsWorkersError):
    """A namespace reference could not be opened, validated or joined."""


class NamespaceNotFoundError(NamespaceError, FileNotFoundError):
    """The path, process, thread, name or fd does not exist."""


class NotANamespaceError(NamespaceError, ValueError):
    """The object exists but is not a namespace file (nsfs)."""


class NamespaceTypeError(NamespaceError, ValueError):
    """The namespace is of another type than the one asked for."""


class NamespaceClosedError(NamespaceError, ValueError):
    """A :class:`~nsworkers.Namespace` was used after ``close()``."""


class NamespacePermissionError(NamespaceError, PermissionError):
    """The caller may not open the namespace reference."""


class NamespaceExistsError(NamespaceError, FileExistsError):
    """A named namespace of that name exists already."""


class AmbiguousContainerError(NamespaceError, LookupError):
    """A container id prefix matches several containers; ``candidates`` lists their ids."""

    def __init__(self, prefix: str, candidates: list[str]) -> None:
        shown = ", ".join(c[:12] for c in candidates[:10])
        super().__init__(f"container id prefix {prefix!r} matches {len(candidates)} containers: {shown}")
        self.prefix = prefix
        self.candidates = candidates


class NamespaceJoinError(NamespaceError, OSError):
    """The worker could not ``setns()`` into the target; ``errno`` is kept."""


class WorkerError(NsWorkersError):
    """A worker process failed in a way unrelated to the callable's result."""


class WorkerCrashedError(WorkerError, RuntimeError):
    """The worker died while serving the call (exit code or signal in the message)."""


class WorkerTimeoutError(WorkerError, TimeoutError):
    """The call ran past its timeout; its worker was killed and will be replaced."""


class WorkerStartError(WorkerError, RuntimeError):
    """A worker (or the zygote that forks workers) could not be started."""


class WorkerStateError(WorkerError, RuntimeError):
    """The callable left its worker in another namespace; the worker was discarded."""


class InvalidTargetError(NsWorkersError, TypeError):
    """A target is neither a path, a ``Namespace`` nor a sequence of ``Namespace``."""


class LinkNotFoundError(NsWorkersError, LookupError):
    """:func:`nsworkers.netlink.link` found no interface of that name or index."""


class NetlinkWriteError(NsWorkersError, OSError):
    """The kernel refused a netlink write; ``errno`` is the kernel's, the message names the namespace."""


class SerializationError(NsWorkersError, pickle.PickleError):
    """The callable, its arguments or its result cannot be serialized."""


class ProtocolError(NsWorkersError, RuntimeError):
    """A worker channel carried a malformed or oversized frame."""


class PoolClosedError(NsWorkersError, RuntimeError):
    """The pool has been shut down and accepts no more calls."""


class RemoteError(NsWorkersError, RuntimeError):
    """An exception raised in the worker that could not be sent as itself.

    ``type_name`` is the qualified name of the original type, ``message`` its
    ``str()`` and ``remote_traceback`` the worker's formatted traceback.
    """

    def __init__(self, type_name: str, message: str, remote_traceback: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback

    def __reduce__(self) -> tuple[type[RemoteError], tuple[str, str, str]]:
        return (type(self), (self.type_name, self.message, self.remote_traceback))


class RemoteTraceback(Exception):
    """Carries the worker's formatted traceback; set as ``__cause__`` of re-raised errors."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'

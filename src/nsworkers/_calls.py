"""Call payloads, function numbering, and the one place a reply or a failure becomes a result or a typed error."""

from __future__ import annotations

import threading
import types
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from . import _messages as m
from .errors import (
    ProtocolError,
    RemoteError,
    RemoteTraceback,
    SerializationError,
    WorkerCrashedError,
    WorkerStateError,
    WorkerTimeoutError,
)

_CACHEABLE = (types.FunctionType, types.BuiltinFunctionType, type)
_MAX_INDEXED = 4096
_fn_index: dict[Callable[..., Any], int] = {}
_fn_index_lock = threading.Lock()


def index_of(fn: Callable[..., Any]) -> int | None:
    """A process-wide number for a callable that pickle sends by reference, or None.

    A worker keeps the functions it has loaded by these numbers, so a repeated
    call names its function with a small int instead of ``module.qualname``
    (about 1 us less per call on the two sides). Only what pickle would send
    by name qualifies -- module-level functions, classes and module-level
    builtins -- so reusing the worker's copy is the same as reloading it.
    Anything carrying state (partials, bound methods, callable instances,
    code sent by value) is pickled afresh on every call.
    """
    if type(fn) not in _CACHEABLE:
        return None
    index = _fn_index.get(fn)
    if index is not None:
        return index
    if m.by_value(fn) or (isinstance(fn, types.BuiltinFunctionType) and not isinstance(fn.__self__, types.ModuleType)):
        return None
    with _fn_index_lock:
        if len(_fn_index) >= _MAX_INDEXED:
            return None
        return _fn_index.setdefault(fn, len(_fn_index))


class Call:
    """A serialized call (a ``CALL`` body); keeps the objects in case the worker asks for dill.

    ``payload`` names the function by its :func:`index_of` number when it has
    one; a worker that has not seen that number yet gets :meth:`registration`.
    """

    __slots__ = ("args", "codec", "fn", "index", "kwargs", "payload")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if not callable(fn):
            raise TypeError(f"{fn!r} is not callable")
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.index = index = index_of(fn)
        if index is not None:
            self.codec, self.payload = m.dumps((index, args, kwargs, None))
            if self.codec == m.PICKLE:
                return
            self.index = None
        self.codec, self.payload = m.dumps((fn, args, kwargs, None))

    def registration(self) -> tuple[int, bytes]:
        """The body that sends the function itself and asks the worker to keep it under ``index``."""
        return m.dumps((self.fn, self.args, self.kwargs, self.index))

    def as_dill(self) -> bool:
        """Switch to sending everything by value; False if it already was."""
        if self.codec == m.DILL:
            return False
        self.index = None
        self.codec, self.payload = m.DILL, m.dill_dumps((self.fn, self.args, self.kwargs, None))
        return True

    @property
    def name(self) -> str:
        return getattr(self.fn, "__qualname__", None) or repr(self.fn)


class Where(Protocol):
    """Which worker a call went to, for messages (the scheduler's ``Worker`` is one)."""

    @property
    def pid(self) -> int: ...

    @property
    def label(self) -> str: ...  #: the target as first named


class Failure(NamedTuple):
    """A call that got no reply: what interrupted it, and how its worker ended (``describe_status`` text)."""

    error: BaseException
    status: str


#: Reply kinds after which the worker is still good for the next call.
KEEPS_WORKER = frozenset((m.OK, m.RAISED, m.RAISED_RAW, m.UNSENDABLE, m.UNLOADABLE))
#: Kinds a worker may answer a CALL with.
REPLY_KINDS = KEEPS_WORKER | {m.TAINTED, m.FATAL}


def settle(outcome: m.Frame | Failure, call: Call, where: Where, timeout: float | None) -> Any:
    """Turn a reply frame into the call's result, or a reply or a failure into the typed error it means.

    The only place that decides what the caller sees: the callable's own
    exception with the worker's traceback as ``__cause__``, or one of
    nsworkers' errors naming the worker, the target and the cause.
    """
    if isinstance(outcome, Failure):
        error = outcome.error
        if isinstance(error, TimeoutError):
            raise WorkerTimeoutError(
                f"{call.name}() in {where.label} did not finish within {timeout}s; worker {where.pid} was killed"
            ) from None
        if isinstance(error, m.ChannelClosed):
            raise WorkerCrashedError(
                f"worker {where.pid} serving {where.label} died during {call.name}(): {outcome.status}"
            ) from None
        raise error
    kind, _, codec, payload = outcome
    try:
        body = m.loads(codec, payload)
    except SerializationError as exc:
        what = "result" if kind == m.OK else "reply"
        raise SerializationError(f"the {what} of {call.name}() in {where.label} {exc}") from exc.__cause__
    if kind == m.OK:
        return body
    if kind == m.RAISED:
        remote = body.exception
        remote.__cause__ = RemoteTraceback(body.traceback)
        raise remote
    if kind == m.RAISED_RAW:
        raise RemoteError(body.type_name, body.message, body.traceback) from RemoteTraceback(body.traceback)
    if kind == m.UNSENDABLE:
        raise SerializationError(f"the result of {call.name}() in {where.label} {body}")
    if kind == m.UNLOADABLE:
        raise SerializationError(f"the worker for {where.label} could not load the call to {call.name}(): {body}")
    if kind == m.TAINTED:
        raise WorkerStateError(f"{call.name}() in {where.label}: {body}; the worker was discarded")
    if kind == m.FATAL:
        try:
            settle((body.kind, 0, body.codec, body.payload), call, where, timeout)
        except BaseException as exc:
            raise WorkerCrashedError(
                f"worker {where.pid} serving {where.label} hit {type(exc).__name__} in {call.name}(); "
                "its state is suspect, so it was replaced"
            ) from exc
    raise ProtocolError(f"unexpected reply kind {kind!r} from worker {where.pid}")

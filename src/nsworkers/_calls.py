"""Call payloads, function numbering, and the one place a reply or a failure becomes a result or a typed error."""

from __future__ import annotations

import threading
import types
import weakref
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
#: Functions sent by value, seen once or numbered, and what they carried then (see _Snapshot).
_by_value: weakref.WeakKeyDictionary[types.FunctionType, _Snapshot] = weakref.WeakKeyDictionary()
_MAX_CHANGES = 3  # a function whose inputs change more often than this is sent whole every time
_next_index = 0


def index_of(fn: Callable[..., Any]) -> int | None:
    """A process-wide number for a callable the worker can keep, or None.

    A worker keeps the functions it has loaded by these numbers, so a repeated
    call names its function with a small int instead of ``module.qualname``
    (about 1 us less per call on the two sides) or, for code sent by value,
    instead of the whole code (a ``__main__`` function or a lambda: ~50x
    less). What pickle sends by name qualifies -- module-level functions,
    classes and module-level builtins -- so reusing the worker's copy is the
    same as reloading it. A function sent by value qualifies from its second
    call while everything it would carry is unchanged (:func:`_inputs`);
    when its code, defaults, closure or a global it reads changes, it gets a
    new number and so goes whole again: a worker never runs stale code.
    Anything carrying other state (partials, bound methods, callable
    instances, functions reading a list or an instance) is pickled afresh on
    every call.
    """
    if type(fn) not in _CACHEABLE:
        return None
    index = _fn_index.get(fn)
    if index is not None:
        return index
    if m.by_value(fn):
        return _index_by_value(fn) if type(fn) is types.FunctionType else None
    if isinstance(fn, types.BuiltinFunctionType) and not isinstance(fn.__self__, types.ModuleType):
        return None
    with _fn_index_lock:
        index = _fn_index.get(fn)
        if index is None:
            index = _new_index_locked()
            if index is not None:
                _fn_index[fn] = index
        return index


def _new_index_locked() -> int | None:
    global _next_index
    if _next_index >= _MAX_INDEXED:
        return None
    _next_index += 1
    return _next_index - 1  # never reused: a worker may still keep the function of an old number


class _Snapshot:
    """What a function sent by value carried when it was last numbered (or first seen)."""

    __slots__ = ("changes", "ids", "index", "inputs")

    def __init__(self, inputs: list[object]) -> None:
        self.inputs = inputs  # kept alive, so their ids cannot be reused by other objects
        self.ids = [id(obj) for obj in inputs]
        self.index: int | None = None
        self.changes = 0


def _index_by_value(fn: types.FunctionType) -> int | None:
    try:
        inputs = _inputs(fn, set())
    except Exception:  # e.g. 3.14's lazy __annotations__ naming something undefined: just not numbered
        return None
    if inputs is None:
        return None
    ids = [id(obj) for obj in inputs]
    with _fn_index_lock:
        snap = _by_value.get(fn)
        if snap is None:
            _by_value[fn] = _Snapshot(inputs)  # numbered from its second call: a lambda made per call never is
            return None
        if snap.ids == ids:
            if snap.index is None and snap.changes <= _MAX_CHANGES:
                snap.index = _new_index_locked()
            return snap.index
        snap.inputs, snap.ids, snap.index = inputs, ids, None
        snap.changes += 1
        return None


def _still_numbered(fn: Callable[..., Any], index: int) -> bool:
    """After pickling *fn* for a worker to keep as *index*: did what it carries stay what the number stands for?"""
    if not isinstance(fn, types.FunctionType) or fn not in _by_value:
        return True  # sent by name: nothing of it travels
    snap = _by_value[fn]
    try:
        inputs = _inputs(fn, set())
    except Exception:
        return False
    return inputs is not None and snap.index == index and snap.ids == [id(obj) for obj in inputs]


_ATOMS = (type(None), bool, int, float, complex, str, bytes, types.CodeType, types.ModuleType)
_MISSING = object()
_ROOT = object()


def _inputs(fn: types.FunctionType, seen: set[int], root: object = None) -> list[object] | None:
    """Everything dill would send for *fn* by value, as objects compared by identity; None if some can change unseen.

    Its code, name, docstring, annotations, defaults, closure cells and the
    globals its code (and nested code) names; recursively the same for the
    functions it uses that go by value. A value that can change without
    being rebound -- a list, a dict, an instance, a class sent by value, a
    function with attributes -- makes the function unnumberable.
    The function itself, met again (it calls itself), is ``_ROOT``: its
    snapshot must not keep it alive. Another function that goes by value is
    held as its ``weakref.ref`` (one per live function: still compared by
    identity, without keeping it alive).
    """
    if root is None:
        root = fn
    if id(fn) in seen:
        return []
    seen.add(id(fn))
    if fn.__dict__:
        return None
    out: list[object] = [fn.__code__, fn.__name__, fn.__qualname__, fn.__defaults__, fn.__kwdefaults__]
    out += (fn.__doc__, fn.__module__, fn.__annotations__)  # dill sends them too; code may read them
    out += (item for pair in fn.__annotations__.items() for item in pair)  # by identity: types are never copied
    values: list[object] = list(fn.__defaults__ or ())
    values += (fn.__kwdefaults__ or {}).values()
    for cell in fn.__closure__ or ():
        try:
            values.append(cell.cell_contents)
        except ValueError:  # an empty cell
            values.append(_MISSING)
    names = fn.__globals__
    values += (names.get(name, _MISSING) for name in _global_names(fn.__code__))
    for value in values:
        if value is root:
            out.append(_ROOT)
            continue
        if type(value) is types.FunctionType and m.by_value(value):
            # Weakly, by identity (one ref object per live function): two functions that call
            # each other, each numbered, would otherwise keep each other alive through their snapshots.
            out.append(weakref.ref(value))
            more = _inputs(value, seen, root)
            if more is None:
                return None
            out += more
            continue
        out.append(value)
        if value is _MISSING or isinstance(value, _ATOMS):
            if isinstance(value, types.ModuleType) and value.__name__ == "__main__":
                return None
            continue
        if isinstance(value, (types.FunctionType, types.BuiltinFunctionType, type)) and not m.by_value(value):
            continue  # sent by name
        elif type(value) in (tuple, frozenset) and all(isinstance(item, _ATOMS) for item in value):  # type: ignore[attr-defined]
            continue
        else:
            return None
    return out


_names_of_code: dict[int, tuple[types.CodeType, tuple[str, ...]]] = {}  # by id: hashing code is slow


def _global_names(code: types.CodeType) -> tuple[str, ...]:
    """Names *code* and the code nested in it may read as globals (a superset: attribute names too)."""
    known = _names_of_code.get(id(code))
    if known is not None and known[0] is code:
        return known[1]
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.update(_global_names(const))
    if len(_names_of_code) >= 1024:
        _names_of_code.clear()
    _names_of_code[id(code)] = (code, tuple(sorted(names)))
    return _names_of_code[id(code)][1]


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
        """The body that sends the function itself and asks the worker to keep it under ``index``.

        Code sent by value is checked again right before and right after
        pickling: if what it uses is not what the number stands for at either
        moment (another thread rebound something since the call was numbered,
        or meanwhile), it goes without the number. Both checks, because a
        value rebound and then restored around the pickling passes the check
        after (it is the snapshot's object again) while the worker got the
        other one. (Left open: two rebinds, away and back, both inside one
        pickling.)
        """
        if self.index is not None and not _still_numbered(self.fn, self.index):
            return self._unnumbered()
        body = m.dumps((self.fn, self.args, self.kwargs, self.index))
        if self.index is not None and not _still_numbered(self.fn, self.index):
            return self._unnumbered()
        return body

    def _unnumbered(self) -> tuple[int, bytes]:
        self.index = None
        self.codec, self.payload = m.dumps((self.fn, self.args, self.kwargs, None))
        return self.codec, self.payload

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

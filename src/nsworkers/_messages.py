"""Everything said between the caller, the zygote and the workers, and how it travels.

Data flow (one cold call, then warm ones)::

    caller thread                    zygote (single-threaded)            spare / worker (in the target)
    -------------                    ------------------------            ------------------------------
    Pool.run(target, fn, *args)
      resolve target -> key, fds
      scheduler: idle worker? ------------------------------------------------------------------+
      no: SpawnRequest(id, targets, learn)  ==SEQPACKET==>                                      |
          + ns fds (learn: fn's module)  a module new here? a throw-away                        |
                                     child imports it first; if that                            |
                                     stayed harmless, import it here                            |
                                     (later spares inherit it)                                  |
                                     hand the fds to a spare           SpareAssignment + fds    |
                                     (or fork one) ===================> join (nsenter order),   |
      <== Spawned(id, pid) + channel fds + pidfd                         verify /proc/self/ns   |
      (the spawner's reader thread routes replies by id)                                        |
      <---------------------------------------- frame READY(id 0, Ready(pid, joined)) ---------+
      frame CALL(id n, CallBody) ---------------------------------------------------------------> fn(*args, **kwargs)
      <---------------------------------------- frame OK(id n, result) | RAISED | ... ---------
                                     <== after its first call only: what it imported (text) ==
                                     learned when no request waits (same trial)
      _calls.outcome(): result, or the typed error
      ReapRequest(id, pid, kill) ==> waitpid / kill         <== Reaped(id, pid, status, killed)

Three transports:

* **caller <-> zygote**: one ``SOCK_SEQPACKET`` socketpair, one pickled record
  per datagram (:class:`SpawnRequest`, :class:`ReapRequest` one way;
  :class:`Spawned`, :class:`Reaped`, :class:`RequestFailed` the other), fds by
  ``SCM_RIGHTS``. These are rare; they travel as the named records below.
* **worker -> zygote**: the spare's ``SOCK_SEQPACKET`` socketpair, which
  carried its :class:`SpareAssignment`, carries back one datagram after the
  worker's first call: the modules that call imported, as plain text
  (``name NUL file NUL ...``, never a pickle: the worker ran a callable in a
  target), so that the zygote can learn them too. Then it is closed. (A
  worker forked on request, ``spare_workers=0``, has none: it reports nothing.)
* **caller <-> worker**: two private pipes (one per direction) carrying
  frames. A frame's header names its kind and request id, so neither costs a
  pickle on the hot path::

    +----------------+-------+------+------------+------------------------+
    | length (u64)   | codec | kind | request id | payload (length bytes) |
    +----------------+-------+------+------------+------------------------+

  The payload is the body of that kind (see :data:`BODIES`), pickle protocol 5
  (codec ``PICKLE``) or dill for code that goes by value (``DILL``).

The rule that keeps the promise: every request carries an id its reply
echoes. A reply whose id or kind does not fit, or an exchange interrupted
half-way (a signal's exception, a timeout, a dead peer), marks that channel
broken: the worker is killed and discarded, the zygote's unanswered request
abandoned (its late reply is cleaned up, never taken for another one's). A
channel is never reused out of step.
"""

from __future__ import annotations

import _thread
import errno
import importlib
import io
import math
import os
import pickle
import select
import struct
import sys
import types
from time import monotonic as _monotonic
from typing import Any, NamedTuple

from .errors import ProtocolError, SerializationError

# ---------------------------------------------------------------------------
# caller <-> zygote records (pickled, one per SEQPACKET datagram)


class TargetWire(NamedTuple):
    """One namespace to join, as sent to the zygote and a spare (the fd travels by SCM_RIGHTS)."""

    fd_index: int  #: position of its fd among the fds passed with the message
    flag: int  #: its ``CLONE_NEW*`` constant
    type_name: str  #: ``"net"``, ``"mnt"`` ... as in ``/proc/PID/ns``
    ident: tuple[int, int]  #: ``(st_dev, st_ino)`` the worker must see after joining


class ZygoteConfig(NamedTuple):
    """Caller -> zygote, once at start."""

    sys_path: list[str]
    preload: tuple[str, ...]
    spares: int


class ZygoteReady(NamedTuple):
    """Zygote -> caller, once at start: it is serving."""

    pid: int


class ZygoteFailed(NamedTuple):
    """Zygote -> caller, once at start: it could not get ready (a preload failed)."""

    message: str


class SpawnRequest(NamedTuple):
    """Caller -> zygote: start a worker for *targets* (their fds attached, in order).

    ``native`` names extension modules the worker imports before joining a
    mount namespace (the caller's own, see ``_spawners.native_modules``):
    after the join it can load no native code.

    ``learn``: the module the callable comes from, with its parent packages,
    as ``(name, file)`` pairs from the caller's ``sys.modules`` (see
    ``_spawners.module_chain``). The zygote imports it before starting this
    worker, if a throw-away child shows the import is harmless and resolves
    to the same files (see ``_zygote.trial_import``), so that every later
    worker inherits it. ``relearn``: the caller reloaded that module since
    it last offered it; the zygote reloads its copy too.
    """

    request_id: int
    targets: tuple[TargetWire, ...]
    native: tuple[str, ...] = ()
    learn: tuple[tuple[str, str], ...] = ()
    relearn: bool = False


class Spawned(NamedTuple):
    """Zygote -> caller: the worker *pid* exists; attached: the caller's read end, write end and a pidfd."""

    request_id: int
    pid: int


class ReapRequest(NamedTuple):
    """Caller -> zygote: the worker *pid* is finished with; SIGKILL it first if *kill*."""

    request_id: int
    pid: int
    kill: bool


class Reaped(NamedTuple):
    """Zygote -> caller: how worker *pid* ended (``status``: a wait status, None if unknown, RUNNING if not yet)."""

    request_id: int
    pid: int
    status: int | None
    killed: bool


class RequestFailed(NamedTuple):
    """Zygote -> caller: the request could not be done (``errno`` 0 when there is none)."""

    request_id: int
    errno: int
    message: str


class SpareAssignment(NamedTuple):
    """Zygote -> spare: become the worker for *targets*; attached: their fds, then the channel's read and write ends."""

    targets: tuple[TargetWire, ...]
    native: tuple[str, ...] = ()


ZygoteRequest = SpawnRequest | ReapRequest
ZygoteReply = Spawned | Reaped | RequestFailed

#: Largest control datagram (a spawn request of eight namespaces is ~600 bytes).
CONTROL_BUFFER = 1 << 16

# ---------------------------------------------------------------------------
# caller <-> worker frames: kinds and their bodies

# caller -> worker
CALL = 1
STOP = 2
# worker -> caller
READY = 10
JOIN_FAILED = 11
OK = 12
RAISED = 13
RAISED_RAW = 14
UNSENDABLE = 15
UNLOADABLE = 16
TAINTED = 17
FATAL = 18


class CallBody(NamedTuple):
    """Body of ``CALL``. Sent as a plain 4-tuple in this order (a NamedTuple pickles ~8x slower).

    ``fn`` is the callable, or the number of one the worker already keeps
    (``_calls.index_of``); ``keep_as``, when not None, asks the worker to keep
    ``fn`` under that number.
    """

    fn: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    keep_as: int | None


class Ready(NamedTuple):
    """Body of ``READY`` (request id 0): the worker joined; ``joined`` lists ``(type, (dev, ino))``."""

    pid: int
    joined: list[tuple[str, tuple[int, int]]]


class JoinFailed(NamedTuple):
    """Body of ``JOIN_FAILED`` (request id 0): ``setns`` or the check after it failed."""

    errno: int
    message: str


class Raised(NamedTuple):
    """Body of ``RAISED``: the callable's exception (pickled as itself) and its formatted traceback."""

    exception: BaseException
    traceback: str


class RaisedRaw(NamedTuple):
    """Body of ``RAISED_RAW``: an exception that could not travel as itself."""

    type_name: str
    message: str
    traceback: str


class Fatal(NamedTuple):
    """Body of ``FATAL``: the callable hit MemoryError or RecursionError; the worker exits.

    Carries the exception reply, still encoded: it may not decode either.
    """

    kind: int
    codec: int
    payload: bytes


#: What each kind's payload holds (``OK``: the result itself; the text kinds: a ``str``; ``STOP``: None).
BODIES: dict[int, str] = {
    CALL: "CallBody (as a plain tuple)",
    STOP: "None",
    READY: "Ready",
    JOIN_FAILED: "JoinFailed",
    OK: "the result",
    RAISED: "Raised",
    RAISED_RAW: "RaisedRaw",
    UNSENDABLE: "str: why the result could not be serialized (the worker is kept)",
    UNLOADABLE: "str: why the call could not be deserialized there (the worker is kept)",
    TAINTED: "str: how the callable moved the worker (it exits)",
    FATAL: "Fatal",
}

# ---------------------------------------------------------------------------
# serialization

PICKLE = 0
DILL = 1
CODECS = (PICKLE, DILL)


class _NeedDill(Exception):
    """Raised inside the pickler: this object must be sent by value."""


def by_value(obj: object) -> bool:
    """Code that pickle would send as ``module.qualname`` but that the peer can't import."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", "")
    return module == "__main__" or module is None or "<" in qualname


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, (types.FunctionType, type)) and by_value(obj):
            raise _NeedDill
        return NotImplemented


def dumps(obj: object, *, main_by_name: bool = False, contain: bool = False) -> tuple[int, bytes]:
    """Serialize *obj*; return ``(codec, payload)``. Raises :class:`SerializationError`.

    Plain ``pickle.dumps`` first (the C fast path). If that fails, or its output
    names ``__main__`` (a cheap substring test; a false positive only costs the
    slow path), a pickler that spots code needing to go by value decides.

    *main_by_name*: names in our ``__main__`` are the peer's too, so pickle's
    references to them can stand. True for a worker's replies: its
    ``__main__`` only holds what its caller sent from the caller's own
    (see ``_worker.adopt_main_names``), and by name the caller gets back its
    own classes -- an exception it can catch, an instance ``isinstance`` knows.

    *contain*: any exception of the object's own reducers, even
    ``KeyboardInterrupt`` or ``SystemExit``, becomes a SerializationError. A
    worker serializing a result passes it: SIGINT is ignored there, so such an
    exception is the result's own doing and must not kill the worker.
    """
    caught: type[BaseException] = BaseException if contain else Exception
    try:
        data = pickle.dumps(obj, protocol=5)
    except caught:
        pass
    else:
        if main_by_name or b"__main__" not in data:
            return PICKLE, data
    buf = io.BytesIO()
    try:
        _Pickler(buf, protocol=5).dump(obj)
        return PICKLE, buf.getvalue()
    except _NeedDill:
        pass
    except RecursionError as exc:
        raise SerializationError(f"cannot serialize: {exc}") from None
    except caught as exc:
        raise SerializationError(f"cannot serialize: {_describe(exc)}") from None
    return DILL, dill_dumps(obj, contain=contain)


_dill_pickler: Any = None


def _import_dill() -> Any:
    """``import dill``, which a signal handler's exception can never leave half-done.

    A handler's exception (Ctrl-C) lands only in the main thread; dill's
    first import, interrupted there, leaves a half-made package behind and
    every later use of code by value in the process fails. So a main thread
    that has threads at hand has another thread import it and waits: the
    wait may be interrupted, the import is not (a later call finds it done,
    or waits for it on the import lock).
    """
    done = sys.modules.get("dill")
    if done is not None and not getattr(getattr(done, "__spec__", None), "_initializing", False):
        return done
    threading = sys.modules.get("threading")  # never imported here for this: the zygote runs without it
    if threading is not None and threading.current_thread() is threading.main_thread():
        loader = threading.Thread(target=_import_quietly, args=("dill",), name="nsworkers-import-dill", daemon=True)
        loader.start()
        loader.join()
    import dill  # installed with multiprocess; imported only when needed

    return dill


def _import_quietly(name: str) -> None:
    try:
        importlib.import_module(name)
    except BaseException:  # the waiting thread imports it again and raises what is wrong
        pass


def _get_dill_pickler() -> Any:
    """A dill pickler that sends importable modules by name.

    Plain dill sends any module outside the interpreter's prefix (a project
    on ``PYTHONPATH``, a ``src/`` checkout) *by value*, its whole ``__dict__``
    included, which fails on the first unpicklable global and would hand the
    worker a stale copy. Modules the worker can import go by reference.
    """
    global _dill_pickler
    if _dill_pickler is None:
        dill_pickler: Any = _import_dill().Pickler

        class Pickler(dill_pickler):  # type: ignore[misc]
            dispatch = dill_pickler.dispatch.copy()

        base = dill_pickler.dispatch[types.ModuleType]

        def save_module(pickler: Any, module: types.ModuleType) -> None:
            name = module.__name__
            if name != "__main__" and sys.modules.get(name) is module and getattr(module, "__spec__", None):
                pickler.save_reduce(importlib.import_module, (name,), obj=module)
            else:
                base(pickler, module)

        Pickler.dispatch[types.ModuleType] = save_module
        _guard_globalvars(sys.modules["dill.detect"])
        _dill_pickler = Pickler
    return _dill_pickler


_globalvars_walk = _thread._local()  # the functions one globalvars() walk has entered (not threading: see _zygote)


def _guard_globalvars(detect: Any) -> None:
    """Make dill's ``detect.globalvars`` enter each function once per walk.

    With ``recurse=True``, dill finds the globals a function uses by walking
    the functions it calls; its walk has no memory, so a nested function
    that calls itself (its closure holds it) or two functions that call
    each other recursed until RecursionError, and the call could not be
    sent. A function met again in the same walk adds nothing (its globals
    are already counted where it was first entered), so it is skipped.
    Both wrappers are installed in ``dill.detect`` for the whole process, so
    another dill user in the caller gets them too: the same names, found
    without recursing for ever or swapping ``sys.stdout``.
    """
    original = detect.globalvars
    if getattr(original, "nsworkers_guard", False):
        return

    def globalvars(func: Any, recurse: bool = True, builtin: bool = False) -> dict[str, Any]:
        entered = getattr(_globalvars_walk, "entered", None)
        if entered is not None:
            if id(func) in entered:
                return {}
            entered.add(id(func))
            return original(func, recurse, builtin)  # type: ignore[no-any-return]
        _globalvars_walk.entered = {id(func)}
        try:
            return original(func, recurse, builtin)  # type: ignore[no-any-return]
        finally:
            _globalvars_walk.entered = None

    globalvars.nsworkers_guard = True  # type: ignore[attr-defined]
    detect.globalvars = globalvars
    code_of = detect.code

    def nestedglobals(func: Any, recurse: bool = True) -> list[str]:
        return _nested_globals(code_of(func))

    detect.nestedglobals = nestedglobals


def _nested_globals(top: types.CodeType | None) -> list[str]:
    """The global names code *top* and the code nested in it use, as dill's ``detect.nestedglobals`` finds them.

    Dill's reads them from ``dis.dis`` printed to a ``sys.stdout`` it swaps
    for a buffer: process-wide, so two threads sending calls at once lost
    names (the worker then raised NameError for a global the caller had)
    and could leave the caller's ``sys.stdout`` a buffer for good, and what
    another thread printed meanwhile vanished. The same names, from the
    instructions themselves (``dis.dis`` recurses into nested code whatever
    dill's *recurse* says).
    """
    import dis

    names: set[str] = set()
    pending = [top]
    while pending:
        code = pending.pop()
        if code is None:
            continue
        names.update(ins.argval for ins in dis.get_instructions(code) if "_GLOBAL" in ins.opname)
        pending += (const for const in code.co_consts if isinstance(const, types.CodeType))
    return list(names)


def dill_dumps(obj: object, *, contain: bool = False) -> bytes:
    """Serialize with dill, code by value (``recurse=True`` takes only the globals it uses)."""
    buf = io.BytesIO()
    caught: type[BaseException] = BaseException if contain else Exception
    try:
        _get_dill_pickler()(buf, protocol=5, recurse=True).dump(obj)
    except caught as exc:
        raise SerializationError(f"cannot serialize: {_describe(exc)}") from None
    return buf.getvalue()


def loads(codec: int, payload: bytes | bytearray | memoryview) -> Any:
    """Deserialize a payload. Any failure raises :class:`SerializationError`."""
    try:
        if codec == PICKLE:
            return pickle.loads(payload)
        if codec == DILL:
            return _import_dill().loads(bytes(payload))
    except Exception as exc:
        raise SerializationError(f"cannot deserialize: {_describe(exc)}") from exc
    raise ProtocolError(f"unknown codec {codec}")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------------------
# frames on a worker's pipes

HEADER = struct.Struct("<QBBI")
_HSIZE = HEADER.size
_pack = HEADER.pack
_unpack_from = HEADER.unpack_from
_os_read = os.read
_os_write = os.write
MAX_FRAME = 1 << 40  # 1 TiB: no real payload gets here; garbage lengths do
_SMALL = 1 << 16  # frames below this go out in one write
_READ_SIZE = 1 << 14  # first read of a frame: replies are mostly small; a big buffer costs a malloc
_POLLIN = select.POLLIN
_POLLOUT = select.POLLOUT

#: A received frame: ``(kind, request_id, codec, payload)``.
Frame = tuple[int, int, int, "bytes | bytearray"]


class ChannelClosed(EOFError):
    """The peer closed the channel (EOF or reset), or its process exited."""


class Channel:
    """Length-prefixed frames over a pair of pipes (one per direction).

    Pipes rather than a socketpair: about 6 us less per round trip here. The
    common case -- a small frame that arrives whole -- costs one ``read`` and
    one ``write`` per direction (plus one ``poll`` on the caller's side).

    The caller's side is given the worker's *pidfd*: every wait polls it with
    the pipe, so the worker's death is seen from the process itself even when
    a child the callable forked keeps a copy of the pipe open; and its write
    end is non-blocking, so a write to a stalled worker honours the deadline.
    A worker's side (no pidfd) blocks. Not thread-safe: one user at a time.
    """

    __slots__ = ("_pending", "_poller", "max_frame", "pidfd", "rfd", "wfd")

    def __init__(self, rfd: int, wfd: int, pidfd: int = -1, max_frame: int = MAX_FRAME) -> None:
        self.rfd = rfd
        self.wfd = wfd
        self.pidfd = pidfd
        self.max_frame = max_frame
        self._pending = b""  # bytes read past the end of the previous frame
        self._poller: select.poll | None = None
        if pidfd >= 0:
            os.set_blocking(wfd, False)

    def fileno(self) -> int:
        return self.rfd

    def close(self) -> None:
        fds, self.rfd, self.wfd, self.pidfd = (self.rfd, self.wfd, self.pidfd), -1, -1, -1
        for fd in fds:
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass

    # -- waiting --------------------------------------------------------------

    def _wait(self, events: int, deadline: float | None) -> None:
        """Until our fd is ready for *events*: ChannelClosed if the worker exited first, TimeoutError at *deadline*."""
        fd = self.rfd if events == _POLLIN else self.wfd
        if fd < 0:
            raise ChannelClosed("the channel was closed")  # by the pool shutting down under us
        poller = self._poller if events == _POLLIN else None
        if poller is None:  # reads (every call) keep theirs; a write that must wait makes one
            poller = select.poll()
            poller.register(fd, events)
            if self.pidfd >= 0:
                poller.register(self.pidfd, _POLLIN)
            if events == _POLLIN:
                self._poller = poller
        while True:
            if deadline is None:
                ready = poller.poll()
            else:
                remaining = deadline - _monotonic()
                if remaining <= 0:
                    raise TimeoutError("timed out waiting for the worker")
                ready = poller.poll(max(1, math.ceil(remaining * 1000)))
                if not ready:
                    continue  # re-check the deadline
            for ready_fd, _ in ready:
                if ready_fd == fd:
                    return  # data (or EOF/error, which the read/write then reports)
            raise ChannelClosed("the worker exited")

    # -- sending ------------------------------------------------------------

    def send(self, kind: int, request_id: int, codec: int, payload: bytes, deadline: float | None = None) -> None:
        """Send one frame: one ``write`` for small frames, no copy of large ones."""
        try:
            if len(payload) < _SMALL:
                data = _pack(len(payload), codec, kind, request_id) + payload
                try:
                    sent = _os_write(self.wfd, data)
                except BlockingIOError:
                    sent = 0
                if sent != len(data):
                    self._write_all(data[sent:], deadline)  # a full pipe, or a partial write
            else:
                self._write_all(_pack(len(payload), codec, kind, request_id), deadline)
                self._write_all(payload, deadline)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ChannelClosed(str(exc)) from None
        except OSError as exc:
            if exc.errno == errno.EBADF:  # closed under us
                raise ChannelClosed(str(exc)) from None
            raise

    def _write_all(self, data: bytes, deadline: float | None) -> None:
        with memoryview(data) as view:
            done = 0
            while done < len(view):
                if self.pidfd >= 0 or deadline is not None:
                    self._wait(_POLLOUT, deadline)
                try:
                    done += os.write(self.wfd, view[done:])
                except BlockingIOError:
                    continue

    def send_obj(self, kind: int, request_id: int, obj: object, deadline: float | None = None) -> None:
        codec, payload = dumps(obj)
        self.send(kind, request_id, codec, payload, deadline)

    def unsent_bytes(self) -> int:
        """Bytes we wrote that nobody has read yet (``FIONREAD`` works on a pipe's write end too)."""
        import fcntl
        import termios

        try:
            buf = fcntl.ioctl(self.wfd, termios.FIONREAD, b"\0\0\0\0")
        except OSError:
            return -1
        return int.from_bytes(buf, sys.byteorder)

    # -- receiving ----------------------------------------------------------

    def _read(self, size: int, deadline: float | None) -> bytes:
        if self.pidfd >= 0 or deadline is not None:
            self._wait(_POLLIN, deadline)
        try:
            data = _os_read(self.rfd, size)
        except OSError as exc:
            raise ChannelClosed(str(exc)) from None
        if not data:
            raise ChannelClosed("channel closed by peer")
        return data

    def recv(self, deadline: float | None = None) -> Frame:
        """Receive one frame. Raises ChannelClosed, TimeoutError, ProtocolError.

        The common case -- nothing pending, one small frame arriving whole --
        is one ``read``; large frames are read into one buffer, not copied.
        """
        data = self._pending
        if data:
            self._pending = b""
        else:
            data = self._read(_READ_SIZE, deadline)
        if len(data) > _HSIZE:
            length, codec, kind, request_id = _unpack_from(data)
            if len(data) == _HSIZE + length and codec in CODECS and length <= self.max_frame:
                return kind, request_id, codec, data[_HSIZE:]  # a copy of a few bytes is cheaper than a view
        return self._recv_slow(data, deadline)

    def _recv_slow(self, data: bytes, deadline: float | None) -> Frame:
        while len(data) < _HSIZE:
            data += self._read(_SMALL, deadline)
        length, codec, kind, request_id = _unpack_from(data)
        if codec not in CODECS or length > self.max_frame:
            raise ProtocolError(f"malformed frame header (length {length}, codec {codec})")
        end = _HSIZE + length
        if len(data) >= end:
            self._pending = data[end:]
            return kind, request_id, codec, data[_HSIZE:end]
        return kind, request_id, codec, self._recv_rest(data, length, deadline)

    def _recv_rest(self, head: bytes, length: int, deadline: float | None) -> bytearray:
        try:
            out = bytearray(length)
        except MemoryError:
            raise ProtocolError(f"frame of {length} bytes does not fit in memory") from None
        have = len(head) - _HSIZE
        out[:have] = memoryview(head)[_HSIZE:]
        with memoryview(out) as view:
            while have < length:
                if self.pidfd >= 0 or deadline is not None:
                    self._wait(_POLLIN, deadline)
                try:
                    got = os.readv(self.rfd, [view[have:]])
                except OSError as exc:
                    raise ChannelClosed(str(exc)) from None
                if not got:
                    raise ChannelClosed("channel closed by peer mid-frame")
                have += got
        return out


def channel_pipes() -> tuple[tuple[int, int], tuple[int, int]]:
    """Two ``O_CLOEXEC`` pipes for a channel: ``((our_r, our_w), (their_r, their_w))``."""
    to_worker_r, to_worker_w = os.pipe2(os.O_CLOEXEC)
    to_caller_r, to_caller_w = os.pipe2(os.O_CLOEXEC)
    return (to_caller_r, to_worker_w), (to_worker_r, to_caller_w)

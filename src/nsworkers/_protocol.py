"""Framing and serialization on a worker's private channel.

A frame is a 9-byte header -- payload length (little-endian u64) and a codec
byte -- followed by the payload::

    +----------------+-------+------------------------+
    | length (u64)   | codec | payload (length bytes) |
    +----------------+-------+------------------------+

Codec ``PICKLE`` is plain pickle protocol 5, the fast path. ``DILL`` is used
only when pickle would send code by reference that the other side cannot
import: lambdas, closures, nested functions and classes, and anything defined
in the caller's ``__main__`` (a worker forked from the zygote has its own
``__main__``). Other objects pickle cannot carry (open files, generators,
locks) are refused with :class:`SerializationError` instead of being
half-carried by dill.

A channel carries one request and one reply at a time; a frame larger than
``max_frame`` is a :class:`ProtocolError` (a misbehaving peer must not make
the caller allocate without bound).
"""

from __future__ import annotations

import errno
import importlib
import io
import math
import os
import pickle
import select
import struct
import sys
import time
import types
from typing import Any

from .errors import ProtocolError, SerializationError

PICKLE = 0
DILL = 1
CODECS = (PICKLE, DILL)

HEADER = struct.Struct("<QB")
_HSIZE = HEADER.size
_pack = HEADER.pack
_unpack_from = HEADER.unpack_from
_os_read = os.read
_os_write = os.write
MAX_FRAME = 1 << 40  # 1 TiB: no real payload gets here; garbage lengths do
_SMALL = 1 << 16  # frames below this go out in one write
_READ_SIZE = 1 << 14  # first read of a frame: replies are mostly small; a big buffer costs a malloc


class _NeedDill(Exception):
    """Raised inside the pickler: this object must be sent by value."""


def by_value(obj: object) -> bool:
    # Code that pickle would send as "module.qualname" but that the peer can't import.
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", "")
    return module == "__main__" or module is None or "<" in qualname


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, (types.FunctionType, type)) and by_value(obj):
            raise _NeedDill
        return NotImplemented


def dumps(obj: object, *, main_by_name: bool = False) -> tuple[int, bytes]:
    """Serialize *obj*; return ``(codec, payload)``. Raises :class:`SerializationError`.

    Plain ``pickle.dumps`` first (the C fast path). If that fails, or its output
    names ``__main__`` (a cheap substring test; a false positive only costs the
    slow path), a pickler that spots code needing to go by value decides.

    *main_by_name*: names in our ``__main__`` are the peer's too, so pickle's
    references to them can stand. True for a worker's replies: its
    ``__main__`` only holds what its caller sent from the caller's own
    (see ``_worker.adopt_main_names``), and by name the caller gets back its
    own classes -- an exception it can catch, an instance ``isinstance`` knows.
    """
    try:
        data = pickle.dumps(obj, protocol=5)
    except Exception:
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
    except Exception as exc:
        raise SerializationError(f"cannot serialize: {_describe(exc)}") from None
    return DILL, dill_dumps(obj)


_dill_pickler: Any = None


def _get_dill_pickler() -> Any:
    """A dill pickler that sends importable modules by name.

    Plain dill sends any module outside the interpreter's prefix (a project
    on ``PYTHONPATH``, a ``src/`` checkout) *by value*, its whole ``__dict__``
    included, which fails on the first unpicklable global and would hand the
    worker a stale copy. Modules the worker can import go by reference.
    """
    global _dill_pickler
    if _dill_pickler is None:
        import dill  # installed with multiprocess; imported only when needed

        class Pickler(dill.Pickler):  # type: ignore[misc]
            dispatch = dill.Pickler.dispatch.copy()

        base = dill.Pickler.dispatch[types.ModuleType]

        def save_module(pickler: Any, module: types.ModuleType) -> None:
            name = module.__name__
            if name != "__main__" and sys.modules.get(name) is module and getattr(module, "__spec__", None):
                pickler.save_reduce(importlib.import_module, (name,), obj=module)
            else:
                base(pickler, module)

        Pickler.dispatch[types.ModuleType] = save_module
        _dill_pickler = Pickler
    return _dill_pickler


def dill_dumps(obj: object) -> bytes:
    """Serialize with dill, code by value (``recurse=True`` takes only the globals it uses)."""
    buf = io.BytesIO()
    try:
        _get_dill_pickler()(buf, protocol=5, recurse=True).dump(obj)
    except Exception as exc:
        raise SerializationError(f"cannot serialize: {_describe(exc)}") from None
    return buf.getvalue()


def loads(codec: int, payload: bytes | bytearray | memoryview) -> Any:
    """Deserialize a payload. Any failure raises :class:`SerializationError`."""
    try:
        if codec == PICKLE:
            return pickle.loads(payload)
        if codec == DILL:
            import dill

            return dill.loads(bytes(payload))
    except Exception as exc:
        raise SerializationError(f"cannot deserialize: {_describe(exc)}") from exc
    raise ProtocolError(f"unknown codec {codec}")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class ChannelClosed(EOFError):
    """The peer closed the channel (EOF or reset)."""


class Channel:
    """Length-prefixed frames over a pair of pipes (one per direction).

    Pipes rather than a socketpair: about 6 us less per round trip here. The
    common case -- a small frame that arrives whole -- costs one ``read`` and
    one ``write`` per direction. EOF on the read side means the peer is gone.
    Not thread-safe: a channel has one user at a time (the pool hands a worker
    to one caller per call).
    """

    __slots__ = ("_pending", "_poller", "max_frame", "rfd", "wfd")

    def __init__(self, rfd: int, wfd: int, max_frame: int = MAX_FRAME) -> None:
        self.rfd = rfd
        self.wfd = wfd
        self.max_frame = max_frame
        self._pending = b""  # bytes read past the end of the previous frame
        self._poller: select.poll | None = None

    def fileno(self) -> int:
        return self.rfd

    def close(self) -> None:
        rfd, wfd, self.rfd, self.wfd = self.rfd, self.wfd, -1, -1
        for fd in (rfd, wfd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass

    # -- sending ------------------------------------------------------------

    def send(self, codec: int, payload: bytes) -> None:
        """Send one frame: one ``write`` for small frames, no copy of large ones."""
        try:
            if len(payload) < _SMALL:
                data = _pack(len(payload), codec) + payload
                if _os_write(self.wfd, data) != len(data):  # pragma: no cover - pipes take 64 KiB whole
                    raise ProtocolError("short write on a worker channel")
            else:
                self._write_all(_pack(len(payload), codec))
                self._write_all(payload)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ChannelClosed(str(exc)) from None
        except OSError as exc:
            if exc.errno == errno.EBADF:  # closed under us
                raise ChannelClosed(str(exc)) from None
            raise

    def _write_all(self, data: bytes) -> None:
        with memoryview(data) as view:
            done = 0
            while done < len(view):
                done += os.write(self.wfd, view[done:])

    def send_obj(self, obj: object) -> None:
        codec, payload = dumps(obj)
        self.send(codec, payload)

    # -- receiving ----------------------------------------------------------

    def _wait(self, deadline: float) -> None:
        # poll, not select: a pool with many workers holds fds past FD_SETSIZE (1024)
        remaining = deadline - time.monotonic()
        if remaining > 0:
            if self._poller is None:
                self._poller = select.poll()
                self._poller.register(self.rfd, select.POLLIN)
            if self._poller.poll(max(1, math.ceil(remaining * 1000))):
                return
        raise TimeoutError("timed out waiting for the worker")

    def _read(self, size: int, deadline: float | None) -> bytes:
        if deadline is not None:
            self._wait(deadline)
        try:
            data = _os_read(self.rfd, size)
        except OSError as exc:
            raise ChannelClosed(str(exc)) from None
        if not data:
            raise ChannelClosed("channel closed by peer")
        return data

    def recv(self, deadline: float | None = None) -> tuple[int, bytes | bytearray]:
        """Receive one frame; ``(codec, payload)``. Raises ChannelClosed, TimeoutError, ProtocolError.

        The common case -- nothing pending, one small frame arriving whole --
        is one ``read``; large frames are read into one buffer, not copied.
        """
        data = self._pending
        if data:
            self._pending = b""
        else:
            data = self._read(_READ_SIZE, deadline)
        if len(data) > _HSIZE:
            length, codec = _unpack_from(data)
            if len(data) == _HSIZE + length and codec in CODECS and length <= self.max_frame:
                return codec, data[_HSIZE:]  # a copy of a few bytes is cheaper than a view
        return self._recv_slow(data, deadline)

    def _recv_slow(self, data: bytes, deadline: float | None) -> tuple[int, bytes | bytearray]:
        while len(data) < _HSIZE:
            data += self._read(_SMALL, deadline)
        length, codec = _unpack_from(data)
        if codec not in CODECS or length > self.max_frame:
            raise ProtocolError(f"malformed frame header (length {length}, codec {codec})")
        end = _HSIZE + length
        if len(data) >= end:
            self._pending = data[end:]
            return codec, data[_HSIZE:end]
        return codec, self._recv_rest(data, length, deadline)

    def _recv_rest(self, head: bytes, length: int, deadline: float | None) -> bytearray:
        try:
            out = bytearray(length)
        except MemoryError:
            raise ProtocolError(f"frame of {length} bytes does not fit in memory") from None
        have = len(head) - HEADER.size
        out[:have] = memoryview(head)[HEADER.size :]
        with memoryview(out) as view:
            while have < length:
                if deadline is not None:
                    self._wait(deadline)
                try:
                    got = os.readv(self.rfd, [view[have:]])
                except OSError as exc:
                    raise ChannelClosed(str(exc)) from None
                if not got:
                    raise ChannelClosed("channel closed by peer mid-frame")
                have += got
        return out

    def recv_obj(self, deadline: float | None = None) -> Any:
        codec, payload = self.recv(deadline)
        return loads(codec, payload)


def channel_pipes() -> tuple[tuple[int, int], tuple[int, int]]:
    """Two ``O_CLOEXEC`` pipes for a channel: ``((our_r, our_w), (their_r, their_w))``."""
    to_worker_r, to_worker_w = os.pipe2(os.O_CLOEXEC)
    to_caller_r, to_caller_w = os.pipe2(os.O_CLOEXEC)
    return (to_caller_r, to_worker_w), (to_worker_r, to_caller_w)

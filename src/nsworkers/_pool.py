"""The pool: namespace identity -> worker processes, and the calls between them.

Data flow of one call. A synchronous ``run`` does its I/O in the calling
thread, with no hand-off to another thread::

    pool.run(target, fn, *args, **kwargs)
      | resolve target -> key (dev, ino)    stat; typed errors before anything is spawned
      | serialize (fn, args, kwargs)        pickle protocol 5, dill for code sent by value
      | acquire a worker for key            idle one | spawn via the zygote | wait
      |                                     (LRU-evicts an idle worker at max_workers)
      |--- frame ---> worker (in the namespace): fn(*args, **kwargs)
      |<-- frame ---  (OK, result) | (RAISED, exc, traceback) | ...
      | release the worker                  idle again, or retired after max_tasks_per_worker
      v result, or the callable's exception with the remote traceback as __cause__

``submit``/``map``/``arun`` put jobs on the namespace's queue; a drain thread
per worker of that namespace (at most ``workers_per_namespace``) takes them
through the same path. A worker serves one call at a time and one namespace
for its whole life.
"""

from __future__ import annotations

import atexit
import collections
import errno
import os
import socket as _socket
import threading
import time
import types
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any, NamedTuple, ParamSpec, TypeVar, Union

if TYPE_CHECKING:
    from concurrent.futures import Future

from . import _protocol as proto
from . import _worker as msg
from ._namespace import (
    JOIN_ORDER,
    Namespace,
    NamespaceType,
    check_path,
    fcntl_dupfd_cloexec,
    fspath,
    open_fd,
)
from ._zygote import ForkSpawner, Spawner, ZygoteSpawner, describe_status
from .errors import (
    InvalidTargetError,
    NamespaceClosedError,
    NamespaceJoinError,
    NamespaceNotFoundError,
    NamespaceTypeError,
    PoolClosedError,
    ProtocolError,
    RemoteError,
    RemoteTraceback,
    SerializationError,
    WorkerCrashedError,
    WorkerStartError,
    WorkerStateError,
    WorkerTimeoutError,
)

__all__ = ("Pool", "Target", "WorkerInfo", "default_pool", "run")

_T = TypeVar("_T")
_P = ParamSpec("_P")

#: What a call can target: a path, a Namespace, or several Namespaces of different types.
Target = Union[str, "os.PathLike[str]", Namespace, Sequence[Namespace]]

_monotonic = time.monotonic
_START_TIMEOUT = 60.0  # a worker that is not ready by then is not coming
Key = tuple[tuple[int, int], ...]


# ---------------------------------------------------------------------------
# targets


class _Target:
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

    def open_specs(self) -> list[tuple[int, int, str, tuple[int, int]]]:
        """Fresh fds for the worker to join, checked to still be the namespaces of ``key``."""
        if self.path is not None:
            fd, kind, st = open_fd(self.path)
            if (st.st_dev, st.st_ino) != self.key[0]:
                os.close(fd)
                raise NamespaceNotFoundError(errno.ENOENT, "namespace was replaced while its worker started", self.path)
            return [(fd, kind.flag, kind.value, self.key[0])]
        specs: list[tuple[int, int, str, tuple[int, int]]] = []
        try:
            for ns in self.namespaces:
                specs.append((fcntl_dupfd_cloexec(ns.fd), ns.type.flag, ns.type.value, ns.id))
        except BaseException:
            for spec in specs:
                os.close(spec[0])
            raise
        return specs


def _resolve(target: object) -> _Target:
    if type(target) is Namespace:  # the fast path, first
        if target._fd < 0:
            raise NamespaceClosedError(f"{target!r} is closed")
        return _Target((target._id,), None, (target,))
    if isinstance(target, str):
        path = fspath(target)
        st = check_path(path)
        return _Target(((st.st_dev, st.st_ino),), path, ())
    if isinstance(target, Namespace):
        if target.closed:
            raise NamespaceClosedError(f"{target!r} is closed")
        return _Target((target.id,), None, (target,))
    if isinstance(target, os.PathLike):
        return _resolve(fspath(target))
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
            return _resolve(ordered[0])
        return _Target(tuple(ns.id for ns in ordered), None, ordered)
    return _resolve_error(target)


def _resolve_error(target: object) -> _Target:
    fspath(target)  # raises InvalidTargetError with the message for non-paths
    raise InvalidTargetError(f"invalid namespace target: {target!r}")


# ---------------------------------------------------------------------------
# calls and workers


_CACHEABLE = (types.FunctionType, types.BuiltinFunctionType, type)
_MAX_INDEXED = 4096
_fn_index: dict[Callable[..., Any], int] = {}
_fn_index_lock = threading.Lock()


def _index_of(fn: Callable[..., Any]) -> int | None:
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
    if proto.by_value(fn) or (
        isinstance(fn, types.BuiltinFunctionType) and not isinstance(fn.__self__, types.ModuleType)
    ):
        return None
    with _fn_index_lock:
        if len(_fn_index) >= _MAX_INDEXED:
            return None
        return _fn_index.setdefault(fn, len(_fn_index))


class _Call:
    """A serialized call; keeps the objects in case the worker asks for dill.

    ``payload`` names the function by its :func:`_index_of` number when it has
    one; a worker that has not seen that number yet gets :meth:`registration`.
    """

    __slots__ = ("args", "codec", "fn", "index", "kwargs", "payload")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if not callable(fn):
            raise TypeError(f"{fn!r} is not callable")
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.index = index = _index_of(fn)
        if index is not None:
            self.codec, self.payload = proto.dumps((index, args, kwargs))
            if self.codec == proto.PICKLE:
                return
            self.index = None
        self.codec, self.payload = proto.dumps((fn, args, kwargs))

    def registration(self) -> tuple[int, bytes]:
        """The frame that sends the function itself and asks the worker to keep it under ``index``."""
        return proto.dumps((self.fn, self.args, self.kwargs, self.index))

    def as_dill(self) -> bool:
        if self.codec == proto.DILL:
            return False
        self.index = None
        self.codec, self.payload = proto.DILL, proto.dill_dumps((self.fn, self.args, self.kwargs))
        return True

    @property
    def name(self) -> str:
        return getattr(self.fn, "__qualname__", None) or repr(self.fn)


class _StaleWorker(Exception):
    """The request could not even be sent: the worker was already gone."""


_OK, _UNLOADABLE, _TAINTED, _FATAL = msg.OK, msg.UNLOADABLE, msg.TAINTED, msg.FATAL
_LOAD_FAILED = -1  # local reply tag: the worker's reply could not be deserialized here
IDLE = "idle"
BUSY = "busy"


class _Worker:
    __slots__ = ("calls", "chan", "key", "known", "label", "last_used", "pid", "slot", "started", "state")

    def __init__(self, pid: int, chan: proto.Channel, key: Key, label: str) -> None:
        self.pid = pid
        self.chan = chan
        self.key = key
        self.label = label
        self.state = BUSY
        self.calls = 0
        self.started = self.last_used = time.monotonic()
        self.known: set[int] = set()  # function numbers this worker keeps (see _index_of)
        self.slot: _Slot | None = None  # set once the pool files it under its namespace


class _Slot:
    """Everything the pool keeps for one namespace identity."""

    __slots__ = ("cond", "drains", "idle", "jobs", "key", "label", "spawning", "starved", "waiters", "workers")

    def __init__(self, key: Key, label: str) -> None:
        self.key = key
        self.label = label
        self.workers: list[_Worker] = []
        self.idle: list[_Worker] = []
        self.spawning = 0
        self.waiters = 0  # callers waiting for a worker here
        self.starved = 0  # of those, the ones that could spawn but the pool is at max_workers
        self.cond: threading.Condition | None = None  # on the pool's lock; made when a caller first waits
        self.drains = 0
        self.jobs: collections.deque[_Job] = collections.deque()

    def take_idle(self, lru: collections.OrderedDict[_Worker, None]) -> _Worker | None:
        """Under the pool lock: an idle worker of this namespace, now busy, or None."""
        if not self.idle:
            return None
        worker = self.idle.pop()
        del lru[worker]
        worker.state = BUSY
        return worker

    def unused(self) -> bool:
        return not (self.workers or self.spawning or self.waiters or self.drains or self.jobs)


class _Job:
    __slots__ = ("call", "future", "target", "timeout")

    def __init__(self, future: Future[Any], target: _Target, call: _Call, timeout: float | None) -> None:
        self.future = future
        self.target = target
        self.call = call
        self.timeout = timeout


class WorkerInfo(NamedTuple):
    """One worker as :meth:`Pool.workers` reports it."""

    pid: int
    namespace: str  #: the target as first named (path or ``unique_id``)
    key: Key  #: kernel identities ``((dev, ino), ...)`` of the joined namespaces
    state: str  #: ``"idle"`` or ``"busy"``
    calls: int  #: calls served so far
    age: float  #: seconds since the worker started
    idle_for: float  #: seconds since its last call ended (0 while busy)
    rss: int | None  #: resident set size in bytes (psutil), None if unavailable
    uss: int | None  #: unique set size in bytes (psutil), None if unavailable


class _Threads:
    """A minimal pool of daemon threads for drains (they must never block interpreter exit)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._queue: SimpleQueue[Callable[[], None] | None] = SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._count = 0
        self._lock = threading.Lock()

    def submit(self, fn: Callable[[], None]) -> None:
        self._queue.put(fn)
        if self._idle.acquire(blocking=False):
            return
        with self._lock:
            if self._count < self._limit:
                self._count += 1
                threading.Thread(target=self._loop, name=f"nsworkers-drain-{self._count}", daemon=True).start()

    def _loop(self) -> None:
        while True:
            fn = self._queue.get()
            if fn is None:
                return
            fn()
            del fn
            self._idle.release()

    def shutdown(self) -> None:
        with self._lock:
            for _ in range(self._count):
                self._queue.put(None)
            self._count = 0


_pools: weakref.WeakSet[Pool] = weakref.WeakSet()


def _check_timeout(timeout: float | None, what: str = "timeout") -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"{what} must be a positive number of seconds or None, not {timeout!r}")
    return float(timeout)


class Pool:
    """Run callables inside namespaces, one long-lived worker process per namespace.

    Args:
        max_workers: cap on live workers across all namespaces; at the cap the
            least recently used idle worker is stopped to make room.
        timeout: default seconds a call may take (None: no limit). A call past
            it raises :class:`WorkerTimeoutError` and its worker is killed.
            Override per call with :meth:`options`.
        idle_timeout: seconds after which an idle worker is stopped (None:
            never). A worker keeps its namespace alive, so this also decides
            how long a deleted namespace lingers.
        max_tasks_per_worker: replace a worker after this many calls (None: never).
        workers_per_namespace: workers (and so parallel calls) per namespace.
        start_method: ``"zygote"`` (default) forks workers from a small
            single-threaded fork server; ``"fork"`` forks the caller itself, so
            workers see its state (only safe in a single-threaded caller).
        preload: modules the zygote imports before forking, so workers start
            with them loaded and shared (e.g. ``("pyroute2",)``).
        spare_workers: processes the zygote keeps forked ahead of need, not
            yet in any namespace, so that a cold call skips the fork (about
            1 ms); each is an idle process of ~1.5 MB. 0: fork on request.
    """

    def __init__(
        self,
        max_workers: int = 64,
        *,
        timeout: float | None = None,
        idle_timeout: float | None = 60.0,
        max_tasks_per_worker: int | None = None,
        workers_per_namespace: int = 1,
        start_method: str = "zygote",
        preload: Iterable[str] = (),
        spare_workers: int = 1,
    ) -> None:
        for name, value in (("max_workers", max_workers), ("workers_per_namespace", workers_per_namespace)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, not {value!r}")
        if isinstance(spare_workers, bool) or not isinstance(spare_workers, int) or not 0 <= spare_workers <= 64:
            raise ValueError(f"spare_workers must be an int from 0 to 64, not {spare_workers!r}")
        if max_tasks_per_worker is not None and (
            isinstance(max_tasks_per_worker, bool)
            or not isinstance(max_tasks_per_worker, int)
            or max_tasks_per_worker < 1
        ):
            raise ValueError(f"max_tasks_per_worker must be a positive int or None, not {max_tasks_per_worker!r}")
        if start_method not in ("zygote", "fork"):
            raise ValueError(f"start_method must be 'zygote' or 'fork', not {start_method!r}")
        self._max_workers = max_workers
        self._timeout = _check_timeout(timeout)
        self._idle_timeout = _check_timeout(idle_timeout, "idle_timeout")
        self._max_tasks = max_tasks_per_worker
        self._per_ns = workers_per_namespace
        self._start_method = start_method
        self._spawner: Spawner = (
            ZygoteSpawner(tuple(preload), spare_workers) if start_method == "zygote" else ForkSpawner()
        )
        self._init_state()
        _pools.add(self)

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._slots: dict[Key, _Slot] = {}
        self._lru: collections.OrderedDict[_Worker, None] = collections.OrderedDict()
        self._total = 0  # live + spawning workers
        self._inflight = 0  # calls running or queued
        self._sleepers = 0  # threads waiting on self._cond (shutdown waiting for the last calls)
        self._waiting: dict[_Slot, None] = {}  # slots with starved callers (see _Slot.starved), oldest first
        self._closing = False  # no new calls
        self._closed = False  # workers stopped
        self._threads = _Threads(self._max_workers)
        self._reaper: threading.Thread | None = None

    # -- public API ---------------------------------------------------------

    def run(self, target: Target, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Call ``fn(*args, **kwargs)`` inside *target* and return its result.

        Blocks the calling thread, which does the I/O itself. The callable's
        own exception is re-raised here with the worker's traceback as
        ``__cause__``.
        """
        return self._run(target, fn, args, kwargs, self._timeout)  # type: ignore[no-any-return]

    def submit(self, target: Target, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        """Queue ``fn(*args, **kwargs)`` for *target*; returns a :class:`concurrent.futures.Future`.

        Target and arguments are checked now: a bad target or an argument that
        cannot be serialized raises here, and nothing is queued.
        """
        return self._submit(target, fn, args, kwargs, self._timeout)

    def map(
        self,
        fn: Callable[..., _T],
        namespaces: Iterable[Target],
        *,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        return_exceptions: bool = False,
    ) -> Iterator[tuple[Any, _T]]:
        """Call ``fn(*args, **kwargs)`` once in each namespace; yield ``(namespace, result)`` as they complete.

        At most ``2 * max_workers`` calls are queued at a time, so memory stays
        bounded over thousands of namespaces. With *return_exceptions* an
        exception (including a bad namespace) is yielded in place of the
        result; otherwise the first one is raised and the remaining calls
        are cancelled.
        """
        return self._map(fn, namespaces, args, kwargs or {}, return_exceptions, self._timeout)

    async def arun(self, target: Target, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """``await`` version of :meth:`run`; cancelling the task cancels a call not yet started."""
        import asyncio

        return await asyncio.wrap_future(self._submit(target, fn, args, kwargs, self._timeout))

    def socket(self, target: Target, family: int = 2, type: int = 1, proto: int = 0) -> _socket.socket:
        """A socket created inside *target* by its worker and handed back to the caller.

        The socket lives in the target's network namespace (binds, connects
        and routes there) while the caller uses it from its own. The worker
        creates it; the caller takes a duplicate of the fd with
        ``pidfd_getfd(2)`` (Linux 5.6+), and the worker then closes its copy.
        No process is forked per socket.
        """
        _, (fd,) = self._take_fds(target, _worker_socket, (family, type, proto), self._timeout)
        return _socket.socket(fileno=fd)

    def _take_fds(
        self, target: Target, fn: Callable[..., tuple[Any, list[int]]], args: tuple[Any, ...], timeout: float | None
    ) -> tuple[Any, list[int]]:
        """Run *fn* in *target*'s worker; it returns ``(info, fds it opened)``; take copies of those fds.

        The caller gets ``(info, its own duplicates)`` (``pidfd_getfd(2)``,
        close-on-exec); the worker then closes its copies. An fd keeps the
        namespace it was opened in: a netlink socket keeps talking to it, a
        ``/proc/net`` or ``/proc/sys/net`` file keeps reading its values.
        """
        resolved = _resolve(target)
        with self._lock:
            if self._closing:
                raise PoolClosedError("the pool is shut down")
            self._inflight += 1
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            worker = self._acquire(resolved, deadline, timeout)
        except BaseException:
            self._release(None, False)
            raise
        healthy = False
        taken: list[int] = []
        try:
            make = _Call(fn, args, {})
            try:
                reply = self._roundtrip(worker, make, deadline, timeout)
            except _StaleWorker:
                raise WorkerCrashedError(f"the worker for {worker.label} was gone; try again") from None
            if reply[0] != msg.OK:
                healthy = reply[0] != msg.TAINTED
                self._outcome(reply, worker, make)
            info, remote = reply[1]
            try:
                for remote_fd in remote:
                    taken.append(_pidfd_getfd(worker.pid, remote_fd))
            except BaseException:
                for fd in taken:
                    os.close(fd)
                raise
            finally:
                self._roundtrip(worker, _Call(_close_fds, (remote,), {}), deadline, timeout)
            healthy = True
        finally:
            self._release(worker, healthy)
        return info, taken

    def options(self, *, timeout: float | None = None) -> PoolOptions:
        """A view of this pool with per-call options, which cannot collide with the callable's keywords::

        pool.options(timeout=2.5).run("/run/netns/blue", fn, timeout=10)  # fn gets timeout=10
        """
        return PoolOptions(self, _check_timeout(timeout))

    def workers(self, memory: bool = True) -> list[WorkerInfo]:
        """A snapshot of the live workers; *memory* adds RSS/USS from psutil (a few ms per worker)."""
        now = time.monotonic()
        with self._lock:
            rows = [
                (
                    w.pid,
                    w.label,
                    w.key,
                    w.state,
                    w.calls,
                    now - w.started,
                    0.0 if w.state == BUSY else now - w.last_used,
                )
                for slot in self._slots.values()
                for w in slot.workers
            ]
        result = []
        for pid, label, key, state, calls, age, idle_for in rows:
            rss = uss = None
            if memory:
                rss, uss = _memory(pid)
            result.append(WorkerInfo(pid, label, key, state, calls, age, idle_for, rss, uss))
        return result

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting calls, then stop every worker and the zygote.

        With *wait*, block until queued and running calls finish; otherwise
        they finish in the background. *cancel_futures* cancels queued calls
        that have not started.
        """
        cancelled: list[_Job] = []
        with self._lock:
            self._closing = True
            if cancel_futures:
                for slot in self._slots.values():
                    cancelled.extend(slot.jobs)
                    self._inflight -= len(slot.jobs)
                    slot.jobs.clear()
            self._wake_all_locked()
        for job in cancelled:
            job.future.cancel()
        if wait:
            self._finish()
        else:
            threading.Thread(target=self._finish, name="nsworkers-shutdown", daemon=True).start()

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown(wait=True)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "closing" if self._closing else "open"
        return f"<nsworkers.Pool {state} workers={self._total}/{self._max_workers}>"

    # -- the call path ------------------------------------------------------

    def _run(
        self,
        target: object,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> Any:
        if self._closing:
            raise PoolClosedError("the pool is shut down")
        resolved = _resolve(target)
        call = _Call(fn, args, kwargs)
        with self._lock:  # one lock round for the count and, usually, an idle worker
            if self._closing:
                raise PoolClosedError("the pool is shut down")
            self._inflight += 1
            slot = self._slots.get(resolved.key)
            worker = slot.take_idle(self._lru) if slot is not None else None
        return self._execute(resolved, call, timeout, worker)

    def _execute(self, target: _Target, call: _Call, timeout: float | None, worker: _Worker | None = None) -> Any:
        """Run one counted call (``_inflight`` was raised by the caller; lowered here, once).

        *worker*, if given, is an idle worker of the target the caller already took.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        for attempt in (0, 1):
            if worker is None:  # _acquire takes an idle worker first, if there is one
                try:
                    worker = self._acquire(target, deadline, timeout)
                except BaseException:
                    self._release(None, False)
                    raise
            try:
                reply = self._roundtrip(worker, call, deadline, timeout)
            except _StaleWorker:
                # It died while idle (killed, OOM, its zygote gone) before our request
                # reached it: the call never started, so one retry on a fresh worker is safe.
                self._release(worker, False, done=bool(attempt))
                if attempt:
                    raise WorkerCrashedError(
                        f"the worker for {worker.label} died twice before starting {call.name}()"
                    ) from None
                worker = None
                continue
            except BaseException:
                self._release(worker, False)
                raise
            tag = reply[0]
            if tag == _OK:
                self._release(worker, True)
                return reply[1]
            healthy = tag not in (_TAINTED, _FATAL)  # those workers exit by themselves
            self._release(worker, healthy)
            if not healthy:
                self._spawner.forget(worker.pid)
            return self._outcome(reply, worker, call)
        raise AssertionError("unreachable")  # pragma: no cover

    def _roundtrip(self, worker: _Worker, call: _Call, deadline: float | None, timeout: float | None) -> Any:
        """Send *call* to *worker* and return its reply (a tagged tuple); failures become typed errors."""
        chan = worker.chan
        first = True
        try:
            while True:
                index = call.index
                learn = index is not None and index not in worker.known
                if learn:
                    codec, payload = call.registration()
                else:
                    codec, payload = call.codec, call.payload
                try:
                    chan.send(codec, payload)
                except proto.ChannelClosed:
                    if first:
                        raise _StaleWorker from None
                    raise
                codec, data = chan.recv(deadline)
                try:
                    reply = proto.loads(codec, data)
                except SerializationError as exc:
                    reply = (_LOAD_FAILED, exc)  # the worker is fine; only this reply is lost
                else:
                    if reply[0] == _UNLOADABLE:
                        if first and call.as_dill():
                            # The worker could not import something pickle sent by reference: resend by value.
                            first = False
                            continue
                    elif learn:
                        worker.known.add(index)  # type: ignore[arg-type]
                worker.calls += 1
                return reply
        except _StaleWorker:
            self._spawner.reap(worker.pid)
            raise
        except TimeoutError:
            self._kill(worker)
            raise WorkerTimeoutError(
                f"{call.name}() in {worker.label} did not finish within {timeout}s; worker {worker.pid} was killed"
            ) from None
        except proto.ChannelClosed:
            status, killed = self._spawner.reap(worker.pid)
            raise WorkerCrashedError(
                f"worker {worker.pid} serving {worker.label} died during {call.name}(): "
                f"{describe_status(status, killed)}"
            ) from None
        except BaseException:
            # Interrupted mid-frame (KeyboardInterrupt, a garbage frame ...): the
            # channel is in an unknown state, so the worker goes.
            self._kill(worker)
            raise

    def _kill(self, worker: _Worker) -> None:
        self._spawner.reap(worker.pid, kill=True)

    def _outcome(self, reply: Any, worker: _Worker, call: _Call) -> Any:
        tag = reply[0]
        if tag == msg.OK:
            return reply[1]
        if tag == msg.RAISED:
            exc = reply[1]
            exc.__cause__ = RemoteTraceback(reply[2])
            raise exc
        if tag == msg.RAISED_RAW:
            raise RemoteError(reply[1], reply[2], reply[3]) from RemoteTraceback(reply[3])
        if tag == msg.UNSENDABLE:
            raise SerializationError(f"the result of {call.name}() in {worker.label} {reply[1]}")
        if tag == msg.UNLOADABLE:
            raise SerializationError(
                f"the worker for {worker.label} could not load the call to {call.name}(): {reply[1]}"
            )
        if tag == _LOAD_FAILED:
            raise reply[1]
        if tag == msg.FATAL:
            codec, data = reply[1]
            try:
                self._outcome(proto.loads(codec, data), worker, call)
            except BaseException as exc:
                raise WorkerCrashedError(
                    f"worker {worker.pid} serving {worker.label} hit {type(exc).__name__} in {call.name}(); "
                    "its state is suspect, so it was replaced"
                ) from exc
        if tag == msg.TAINTED:
            raise WorkerStateError(f"{call.name}() in {worker.label}: {reply[1]}")
        raise ProtocolError(f"unexpected reply tag {tag!r} from worker {worker.pid}")

    # -- worker bookkeeping -------------------------------------------------

    def _acquire(self, target: _Target, deadline: float | None, timeout: float | None) -> _Worker:
        evicted: list[_Worker] = []
        try:
            with self._lock:
                while True:
                    if self._closed:
                        raise PoolClosedError("the pool is shut down")
                    slot = self._slots.get(target.key)
                    if slot is None:
                        slot = self._slots[target.key] = _Slot(target.key, target.label)
                    worker = slot.take_idle(self._lru)
                    if worker is not None:
                        return worker
                    if len(slot.workers) + slot.spawning < self._per_ns:
                        if self._total >= self._max_workers and self._lru:
                            victim = next(iter(self._lru))
                            self._remove_locked(victim)
                            evicted.append(victim)
                        if self._total < self._max_workers:
                            slot.spawning += 1
                            self._total += 1
                            break
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        self._drop_if_unused_locked(slot)
                        raise WorkerTimeoutError(f"no worker for {target.label} became free within {timeout}s")
                    starved = len(slot.workers) + slot.spawning < self._per_ns
                    if slot.cond is None:
                        slot.cond = threading.Condition(self._lock)
                    slot.waiters += 1
                    if starved:  # any worker going idle or away anywhere can help
                        slot.starved += 1
                        self._waiting[slot] = None
                    try:
                        slot.cond.wait(remaining)
                    finally:
                        slot.waiters -= 1
                        if starved:
                            slot.starved -= 1
                            if not slot.starved:
                                self._waiting.pop(slot, None)
        finally:
            for victim in evicted:
                self._stop(victim)
        return self._spawn(target, slot, deadline, timeout)

    def _spawn(self, target: _Target, slot: _Slot, deadline: float | None, timeout: float | None) -> _Worker:
        try:
            worker = self._start_worker(target, deadline, timeout)
        except BaseException:
            with self._lock:
                slot.spawning -= 1
                self._total -= 1
                self._drop_if_unused_locked(slot)
                self._wake_locked(slot)
            raise
        with self._lock:
            slot.spawning -= 1
            slot.workers.append(worker)
            worker.slot = slot
        return worker

    def _start_worker(self, target: _Target, deadline: float | None, timeout: float | None) -> _Worker:
        specs = target.open_specs()
        try:
            pid, fds = self._spawner.spawn(specs)
        finally:
            for spec in specs:
                os.close(spec[0])
        chan = proto.Channel(*fds)
        try:
            reply = chan.recv_obj(deadline if deadline is not None else time.monotonic() + _START_TIMEOUT)
        except BaseException as exc:
            chan.close()
            status, killed = self._spawner.reap(pid, kill=True)
            if isinstance(exc, TimeoutError):
                raise WorkerTimeoutError(f"the worker for {target.label} was not ready within {timeout}s") from None
            if isinstance(exc, (proto.ChannelClosed, ProtocolError, SerializationError)):
                raise WorkerStartError(
                    f"the worker for {target.label} died during start-up: {describe_status(status, killed)}"
                ) from None
            raise
        if reply[0] == msg.JOIN_FAILED:
            chan.close()
            self._spawner.reap(pid)
            raise NamespaceJoinError(reply[1], f"cannot join {target.label}: {reply[2]}")
        if reply[0] != msg.READY:
            chan.close()
            self._spawner.reap(pid, kill=True)
            raise ProtocolError(f"unexpected start-up reply {reply[0]!r} from worker {pid}")
        return _Worker(pid, chan, target.key, target.label)

    def _release(self, worker: _Worker | None, healthy: bool, done: bool = True) -> None:
        """Give *worker* back (or drop it if not *healthy*) and, if *done*, count the call as finished."""
        retire = False
        with self._lock:
            if done:
                self._inflight -= 1
            if worker is not None:
                worker.last_used = _monotonic()
                if healthy and not self._closed and (self._max_tasks is None or worker.calls < self._max_tasks):
                    worker.state = IDLE
                    worker.slot.idle.append(worker)  # type: ignore[union-attr]  # (a live worker has its slot)
                    self._lru[worker] = None
                    if self._reaper is None and self._idle_timeout is not None:
                        self._start_reaper_locked()
                else:
                    self._remove_locked(worker)
                    retire = healthy
                if self._waiting or (worker.slot is not None and worker.slot.waiters):
                    self._wake_locked(worker.slot)
            if self._sleepers and not self._inflight:
                self._cond.notify_all()
        if retire and worker is not None:
            self._stop(worker)
        elif not healthy and worker is not None:
            worker.chan.close()

    def _wake_locked(self, slot: _Slot | None) -> None:
        """A worker of *slot* became idle, or one went away: wake one caller that can use it.

        A caller waiting on *slot* takes the idle worker or spawns in the room
        left; otherwise the longest-starved caller of another namespace evicts
        the idle worker or spawns in the freed capacity. One thread per event,
        not all of them: with many caller threads, a wake-everyone herd costs
        more than the calls.
        """
        if slot is not None and slot.waiters and slot.cond is not None:
            slot.cond.notify()
            return
        for other in self._waiting:
            other.cond.notify()  # type: ignore[union-attr]  # (a starved slot has its condition)
            return

    def _wake_all_locked(self) -> None:
        for slot in self._slots.values():
            if slot.cond is not None:
                slot.cond.notify_all()
        self._cond.notify_all()

    def _remove_locked(self, worker: _Worker) -> None:
        slot = self._slots.get(worker.key)
        self._lru.pop(worker, None)
        if slot is not None:
            if worker in slot.idle:
                slot.idle.remove(worker)
            if worker in slot.workers:
                slot.workers.remove(worker)
                self._total -= 1
            self._drop_if_unused_locked(slot)

    def _drop_if_unused_locked(self, slot: _Slot) -> None:
        if slot.unused() and self._slots.get(slot.key) is slot:
            del self._slots[slot.key]

    def _stop(self, worker: _Worker) -> None:
        """Stop an idle worker politely: it exits on STOP (or EOF)."""
        try:
            worker.chan.send_obj(msg.STOP)
        except (OSError, EOFError):
            pass
        worker.chan.close()
        self._spawner.forget(worker.pid)

    # -- submit / map -------------------------------------------------------

    def _submit(
        self,
        target: object,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> Future[Any]:
        if self._closing:
            raise PoolClosedError("the pool is shut down")
        from concurrent.futures import Future

        resolved = _resolve(target)
        job = _Job(Future(), resolved, _Call(fn, args, kwargs), timeout)
        with self._lock:
            if self._closing:
                raise PoolClosedError("the pool is shut down")
            slot = self._slots.get(resolved.key)
            if slot is None:
                slot = self._slots[resolved.key] = _Slot(resolved.key, resolved.label)
            slot.jobs.append(job)
            self._inflight += 1
            start = slot.drains < self._per_ns
            if start:
                slot.drains += 1
        if start:
            self._threads.submit(lambda: self._drain(slot))
        return job.future

    def _drain(self, slot: _Slot) -> None:
        while True:
            with self._lock:
                if not slot.jobs:
                    slot.drains -= 1
                    self._drop_if_unused_locked(slot)
                    return
                job = slot.jobs.popleft()
            if not job.future.set_running_or_notify_cancel():
                self._release(None, False)
                continue
            try:
                result = self._execute(job.target, job.call, job.timeout)
            except BaseException as exc:
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)
            del job

    def _map(
        self,
        fn: Callable[..., Any],
        namespaces: Iterable[Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        return_exceptions: bool,
        timeout: float | None,
    ) -> Iterator[tuple[Any, Any]]:
        done: SimpleQueue[tuple[Any, Future[Any]]] = SimpleQueue()
        pending: set[Future[Any]] = set()
        window = 2 * self._max_workers
        source = iter(namespaces)
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < window:
                    ns = next(source, _END)
                    if ns is _END:
                        exhausted = True
                        break
                    try:
                        future = self._submit(ns, fn, args, kwargs, timeout)
                    except Exception as exc:
                        if not return_exceptions:
                            raise
                        yield ns, exc
                        continue
                    pending.add(future)
                    future.add_done_callback(_Notify(done, ns))
                if not pending:
                    return
                ns, future = done.get()
                pending.discard(future)
                error = future.exception()
                if error is None:
                    yield ns, future.result()
                elif return_exceptions:
                    yield ns, error
                else:
                    raise error
        finally:
            for future in pending:
                future.cancel()

    # -- idle reaping and shutdown -----------------------------------------

    def _start_reaper_locked(self) -> None:
        if self._reaper is None and self._idle_timeout is not None:
            self._reaper = threading.Thread(
                target=_reap_idle, args=(weakref.ref(self),), name="nsworkers-reaper", daemon=True
            )
            self._reaper.start()

    def _expire_idle(self) -> float | None:
        """Stop workers idle past ``idle_timeout``; return seconds until the next may expire."""
        assert self._idle_timeout is not None
        expired = []
        now = time.monotonic()
        with self._lock:
            if self._closed:
                return None
            for worker in self._lru:
                if now - worker.last_used < self._idle_timeout:
                    break
                expired.append(worker)
            for worker in expired:
                self._remove_locked(worker)
            nxt = next(iter(self._lru), None)
            wait = self._idle_timeout if nxt is None else nxt.last_used + self._idle_timeout - now
        for worker in expired:
            self._stop(worker)
        return max(wait, 0.01)

    def _finish(self) -> None:
        with self._lock:
            while self._inflight:
                self._sleepers += 1
                try:
                    self._cond.wait()
                finally:
                    self._sleepers -= 1
            if self._closed:
                return
            self._closed = True
            workers = [w for slot in self._slots.values() for w in slot.workers]
            for worker in workers:
                self._remove_locked(worker)
            self._wake_all_locked()
        for worker in workers:
            self._stop(worker)
        self._spawner.close()
        self._threads.shutdown()

    def _terminate(self) -> None:
        """At interpreter exit: close every channel (workers exit on EOF) and the zygote."""
        with self._lock:
            self._closing = self._closed = True
            workers = [w for slot in self._slots.values() for w in slot.workers]
        for worker in workers:
            worker.chan.close()
        self._spawner.close()

    def _after_fork_in_child(self) -> None:
        # The child shares our sockets with the parent: drop its copies, never talk on them.
        for slot in self._slots.values():
            for worker in slot.workers:
                worker.chan.close()
        self._spawner.close_in_child()
        self._init_state()
        self._closing = self._closed = True


_END = object()


def _worker_socket(family: int, kind: int, proto: int) -> tuple[None, list[int]]:
    """Runs in the worker: a new socket's fd, left open for the caller to duplicate."""
    return None, [_socket.socket(family, kind, proto).detach()]


def _close_fds(fds: list[int]) -> None:
    """Runs in the worker: close the fds the caller has taken copies of."""
    for fd in fds:
        os.close(fd)


def _pidfd_getfd(pid: int, fd: int) -> int:
    """Duplicate *fd* of process *pid* into this process, close-on-exec."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        new = libc.syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0)  # the new fd is O_CLOEXEC
        if new < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"pidfd_getfd from worker {pid}: {os.strerror(err)}")
        return int(new)
    finally:
        os.close(pidfd)


_SYS_PIDFD_GETFD = 438  # the same number on every architecture (asm-generic)


class _Notify:
    """Done-callback of a map() future: queue ``(namespace, future)``."""

    __slots__ = ("done", "ns")

    def __init__(self, done: SimpleQueue[tuple[Any, Future[Any]]], ns: Any) -> None:
        self.done = done
        self.ns = ns

    def __call__(self, future: Future[Any]) -> None:
        self.done.put((self.ns, future))


def _memory(pid: int) -> tuple[int | None, int | None]:
    import psutil

    try:
        info = psutil.Process(pid).memory_full_info()
    except (psutil.Error, OSError):
        return None, None
    return info.rss, getattr(info, "uss", None)


def _reap_idle(ref: weakref.ref[Pool]) -> None:
    while True:
        pool = ref()
        if pool is None:
            return
        wait = pool._expire_idle()
        del pool
        if wait is None:
            return
        time.sleep(min(wait, 1.0))


class PoolOptions:
    """A :class:`Pool` seen with per-call options (see :meth:`Pool.options`)."""

    __slots__ = ("_pool", "_timeout")

    def __init__(self, pool: Pool, timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout

    def run(self, target: Target, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """:meth:`Pool.run` with these options."""
        return self._pool._run(target, fn, args, kwargs, self._timeout)  # type: ignore[no-any-return]

    def submit(self, target: Target, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        """:meth:`Pool.submit` with these options."""
        return self._pool._submit(target, fn, args, kwargs, self._timeout)

    async def arun(self, target: Target, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """:meth:`Pool.arun` with these options."""
        import asyncio

        return await asyncio.wrap_future(self._pool._submit(target, fn, args, kwargs, self._timeout))

    def map(
        self,
        fn: Callable[..., _T],
        namespaces: Iterable[Target],
        *,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        return_exceptions: bool = False,
    ) -> Iterator[tuple[Any, _T]]:
        """:meth:`Pool.map` with these options."""
        return self._pool._map(fn, namespaces, args, kwargs or {}, return_exceptions, self._timeout)


# ---------------------------------------------------------------------------
# the default pool

_default: Pool | None = None
_default_lock = threading.Lock()


def default_pool() -> Pool:
    """The process-wide pool behind :func:`run`, created on first use, shut down at exit."""
    global _default
    with _default_lock:
        if _default is None or _default._closing:
            _default = Pool()
        return _default


def run(target: Target, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Call ``fn(*args, **kwargs)`` inside *target* on the default pool (see :meth:`Pool.run`)."""
    return default_pool().run(target, fn, *args, **kwargs)


def _at_exit() -> None:
    for pool in list(_pools):
        try:
            pool._terminate()
        except Exception:
            pass


def _after_fork_in_child() -> None:
    global _default, _default_lock
    _default = None
    _default_lock = threading.Lock()
    for pool in list(_pools):
        pool._after_fork_in_child()


atexit.register(_at_exit)
os.register_at_fork(after_in_child=_after_fork_in_child)

"""The pool: public behaviour. Its parts live next door, each in a module named after it.

A synchronous ``run`` does its I/O in the calling thread, with no hand-off::

    pool.run(target, fn, *args, **kwargs)
      | _target.resolve(target) -> key (dev, ino)     typed errors before anything is spawned
      | _calls.Call(fn, args, kwargs)                 pickle protocol 5, dill for code sent by value
      | _scheduler: idle worker | room to start one (_spawners -> zygote) | wait
      |--- CALL frame (request id n) ---> worker (in the namespace): fn(*args, **kwargs)
      |<-- reply frame (request id n) ---
      | _calls.settle(): the result, or the typed error
      v release the worker (idle, handed to a waiter, or retired)

``submit``/``map``/``arun`` go through ``_dispatch`` (futures, per-namespace
queues drained by pool threads) into the same path. The messages and the
whole caller -> zygote -> worker data flow are in ``_messages``.
"""

from __future__ import annotations

import atexit
import functools
import os
import select
import signal
import socket as _socket
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator
from queue import Empty, SimpleQueue
from typing import TYPE_CHECKING, Any, NamedTuple, ParamSpec, TypeVar

if TYPE_CHECKING:
    from concurrent.futures import Future

from . import _messages as m
from . import _sys
from ._calls import KEEPS_WORKER, REPLY_KINDS, Call, Failure, settle
from ._dispatch import (
    CallCancelled,
    CallFuture,
    Dispatcher,
    NamespaceExecutor,
    in_pool_thread,
    map_unordered,
)
from ._scheduler import BUSY, Abandoned, Reservation, Scheduler, Ticket, Worker
from ._spawners import ForkSpawner, Spawner, ZygoteSpawner, describe_status
from ._target import Key, TargetLike, resolve
from ._target import Target as Resolved
from .errors import (
    NamespaceJoinError,
    NamespaceTypeError,
    PoolClosedError,
    ProtocolError,
    SerializationError,
    WorkerCrashedError,
    WorkerStartError,
    WorkerTimeoutError,
)

__all__ = ("Pool", "PoolOptions", "Target", "WorkerInfo", "default_pool", "run")

_T = TypeVar("_T")
_P = ParamSpec("_P")

#: What a call can target (the public name): a path, a Namespace, or several Namespaces of different types.
Target = TargetLike

_monotonic = time.monotonic
_START_TIMEOUT = 60.0  # a worker that is not ready by then is not coming
_STOP_TIMEOUT = 1.0  # how long a polite STOP may take to write
_REQUEST_IDS = 0xFFFFFFFF  # request ids are u32 on the wire; 0 is the worker's start-up reply
_FINISH_POLL = 0.25  # seconds between looks at the running calls while shutdown(wait=True) waits for them


#: How many calls this thread is inside: a signal handler calling shutdown(wait=True) there
#: must not wait for the call it interrupted.
_in_call = threading.local()


class _Stale(Exception):
    """The request could not even be sent: the worker was already gone, so the call never started."""


class _Link:
    """The pool's side of one worker: its channel, the function numbers it keeps, the last request id."""

    __slots__ = ("chan", "known", "last_id", "relayed")

    def __init__(self, chan: m.Channel, relayed: bool = False) -> None:
        self.chan = chan
        self.known: set[int] = set()
        self.last_id = 0
        # A pid or time namespace was joined: the process serving calls is a child of the one
        # we hold (see _worker._fork_into_children_namespaces), so its fds are not that one's.
        self.relayed = relayed


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


def _check_timeout(timeout: float | None, what: str = "timeout") -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < float("inf"):
        raise ValueError(f"{what} must be a positive number of seconds or None, not {timeout!r}")
    return float(timeout)


class _Caller:
    """``run``, ``submit``, ``arun`` and ``map``, written once for :class:`Pool` and :class:`PoolOptions`."""

    __slots__ = ()

    def _target_pool(self) -> Pool:
        raise NotImplementedError

    def _call_timeout(self) -> float | None:
        raise NotImplementedError

    def run(self, target: TargetLike, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Call ``fn(*args, **kwargs)`` inside *target* and return its result.

        Blocks the calling thread, which does the I/O itself. The callable's
        own exception is re-raised here with the worker's traceback as
        ``__cause__``.
        """
        return self._target_pool()._run(target, fn, args, kwargs, self._call_timeout())  # type: ignore[no-any-return]

    def submit(self, target: TargetLike, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        """Queue ``fn(*args, **kwargs)`` for *target*; returns a :class:`concurrent.futures.Future`.

        Target and arguments are checked now: a bad target or an argument that
        cannot be serialized raises here, and nothing is queued.

        The future's ``cancel()`` also stops a call that is already running:
        its worker is killed (the next call gets a fresh one), ``cancel()``
        returns True and ``result()`` raises ``CancelledError``. Once the
        reply is in, ``cancel()`` returns False.
        """
        return self._target_pool()._submit(target, fn, args, kwargs, self._call_timeout())

    async def arun(self, target: TargetLike, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """``await`` version of :meth:`run`.

        Cancelling the task cancels the call: one not started yet never runs,
        and a running one is stopped (its worker is killed and replaced, as
        for :meth:`concurrent.futures.Future.cancel` of a :meth:`submit`).
        """
        import asyncio

        pool = self._target_pool()
        return await asyncio.wrap_future(pool._submit(target, fn, args, kwargs, self._call_timeout()))

    def map(
        self,
        fn: Callable[..., _T],
        namespaces: Iterable[TargetLike],
        *,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        return_exceptions: bool = False,
        buffersize: int | None = None,
    ) -> Iterator[tuple[Any, _T]]:
        """Call ``fn(*args, **kwargs)`` once in each namespace; yield ``(namespace, result)`` as they complete.

        At most *buffersize* calls are submitted ahead of the results the
        consumer has taken (as CPython 3.14's ``Executor.map(buffersize=)``;
        default ``2 * max_workers``), so memory stays bounded over thousands
        of namespaces and a slow consumer holds back the calls. With
        *return_exceptions* an exception (including a bad namespace) is
        yielded in place of the result; otherwise the first one is raised
        and the calls not started yet are cancelled (as when the consumer
        stops early; running ones finish).
        """
        if buffersize is not None and (
            isinstance(buffersize, bool) or not isinstance(buffersize, int) or buffersize < 1
        ):
            raise ValueError(f"buffersize must be a positive int or None, not {buffersize!r}")
        pool, timeout, kw = self._target_pool(), self._call_timeout(), kwargs or {}
        window = 2 * pool._max_workers if buffersize is None else buffersize
        return map_unordered(lambda ns: pool._submit(ns, fn, args, kw, timeout), namespaces, window, return_exceptions)

    def executor(self, target: TargetLike) -> NamespaceExecutor:
        """A :class:`concurrent.futures.Executor` whose calls all run in *target*.

        For code that expects an executor, e.g. ``loop.run_in_executor(ex,
        fn, *args)``. ``submit``, ordered ``map`` (with ``timeout``,
        ``buffersize``) and ``shutdown(wait, cancel_futures)`` behave as
        CPython 3.14 defines them; ``shutdown`` ends only this executor's
        use, never the pool. The target is resolved at each call, so a
        namespace re-created under the same path gets a new worker.
        Cancelling a future stops its call even while it runs, as for
        :meth:`submit`.
        """
        return NamespaceExecutor(self, target)


class PoolOptions(_Caller):
    """A :class:`Pool` seen with per-call options (see :meth:`Pool.options`)."""

    __slots__ = ("_pool", "_timeout")

    def __init__(self, pool: Pool, timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout

    def _target_pool(self) -> Pool:
        return self._pool

    def _call_timeout(self) -> float | None:
        return self._timeout


_pools: weakref.WeakSet[Pool] = weakref.WeakSet()


class Pool(_Caller):
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
            with them loaded and shared (e.g. ``("pyroute2",)``). Without it,
            the zygote learns the modules of the callables workers start for
            and what their first calls import (see ``_zygote``).
        spare_workers: processes the zygote keeps forked ahead of need, not
            yet in any namespace, so that a cold call skips the fork (about
            1 ms); each is an idle process of ~1.5 MB. 0: fork on request.
        initializer: called as ``initializer(*initargs)`` in each worker
            after it joined its namespaces (so it sees them) and before its
            first call; sent like any callable. If it raises (or the worker
            dies in it), the call that needed the worker fails with
            :class:`WorkerStartError` whose ``__cause__`` is the initializer's
            exception (its remote traceback chained to it), the worker is
            discarded, and the next call tries a fresh one.
        initargs: arguments of *initializer* (serialized now: one that cannot
            be raises :class:`SerializationError` here).
        max_memory_per_worker: bytes of resident memory. When a call leaves
            its worker's RSS above it, the worker is retired (stopped
            politely, the call's result still delivered; the next call gets a
            fresh worker). Read by the caller from the host's
            ``/proc/PID/statm``, never from the worker; None (default): no
            bound and no cost.

    A pool dropped without :meth:`shutdown` (or a ``with`` block) is closed
    when it is garbage-collected, with a :class:`ResourceWarning`, like an
    unclosed file.
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
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        max_memory_per_worker: int | None = None,
    ) -> None:
        self._closed = True  # until fully built: __del__ of a half-made pool must do nothing
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
        if max_memory_per_worker is not None and (
            isinstance(max_memory_per_worker, bool)
            or not isinstance(max_memory_per_worker, int)
            or max_memory_per_worker < 1
        ):
            raise ValueError(
                f"max_memory_per_worker must be a positive int (bytes) or None, not {max_memory_per_worker!r}"
            )
        if initializer is not None and not callable(initializer):
            raise TypeError(f"initializer must be callable or None, not {initializer!r}")
        self._initializer = initializer
        self._initargs = tuple(initargs)
        if initializer is not None:
            Call(initializer, self._initargs, {})  # cannot be serialized: fail here, not in every cold call
        self._max_memory = max_memory_per_worker
        self._max_workers = max_workers
        self._timeout = _check_timeout(timeout)
        self._idle_timeout = _check_timeout(idle_timeout, "idle_timeout")
        self._max_tasks = max_tasks_per_worker
        self._per_ns = workers_per_namespace
        self._spawner: Spawner = (
            ZygoteSpawner(tuple(preload), spare_workers) if start_method == "zygote" else ForkSpawner()
        )
        self._init_state()
        self._closed = False
        _pools.add(self)

    def _init_state(self) -> None:
        self._sched = Scheduler(self._max_workers, self._per_ns)
        self._dispatch = Dispatcher(self._execute, self._leave, self._per_ns, self._max_workers)
        self._state_lock = threading.Lock()  # guards the calls and the flags below
        # A call ended while closing: _finish looks again. A C queue, not a Condition on the lock:
        # a Condition's wait() releases and retakes the lock in Python code, where a signal's
        # exception can leave it released, or release it under another thread.
        self._wake: SimpleQueue[None] = SimpleQueue()
        # Calls running or queued (their Call objects): a set, so that counting one out is idempotent,
        # and both adding and removing are one C call, whole or not done, wherever a signal lands.
        self._calls: set[Call] = set()
        self._closing = False  # no new calls
        self._reaper: threading.Thread | None = None
        self._reaper_stop = threading.Event()
        self._forced: str | None = None  # "kill_workers()" or "terminate_workers()" once called
        self._initializing: set[Worker] = set()  # running the initializer: not in the scheduler yet

    def _target_pool(self) -> Pool:
        return self

    def _call_timeout(self) -> float | None:
        return self._timeout

    # -- public API beside run/submit/arun/map --------------------------------

    def socket(self, target: TargetLike, family: int = 2, type: int = 1, proto: int = 0) -> _socket.socket:
        """A socket created inside *target* by its worker and handed back to the caller.

        The socket lives in the target's network namespace (binds, connects
        and routes there) while the caller uses it from its own. The worker
        creates it; the caller takes a duplicate of the fd with
        ``pidfd_getfd(2)`` (Linux 5.6+), and the worker then closes its copy.
        No process is forked per socket. A worker that died while idle is
        replaced, as for :meth:`run`.
        """
        _, (fd,) = self._take_fds(target, _sys.new_socket_fd, (family, type, proto), self._timeout)
        return _socket.socket(fileno=fd)

    def _take_fds(
        self, target: TargetLike, fn: Callable[..., tuple[Any, list[int]]], args: tuple[Any, ...], timeout: float | None
    ) -> tuple[Any, list[int]]:
        """Run *fn* in *target*'s worker; it returns ``(info, fds it opened)``; take copies of those fds.

        The caller gets ``(info, its own duplicates)`` (``pidfd_getfd(2)``,
        close-on-exec); the worker then closes its copies. An fd keeps the
        namespace it was opened in: a netlink socket keeps talking to it, a
        ``/proc/net`` or ``/proc/sys/net`` file keeps reading its values.
        """
        resolved = resolve(target)
        call = Call(fn, args, {})
        deadline = None if timeout is None else _monotonic() + timeout

        def take(worker: Worker, reply: tuple[Any, list[int]]) -> tuple[Any, list[int]]:
            info, remote = reply
            link: _Link = worker.conn
            if link.relayed:
                raise NamespaceTypeError(
                    f"cannot take fds from the worker for {worker.label}: a pid or time namespace puts it "
                    "behind a relay process; leave those types out of the target"
                )
            taken: list[int] = []
            try:
                for remote_fd in remote:
                    taken.append(_sys.pidfd_getfd(link.chan.pidfd, worker.pid, remote_fd))
                close = Call(_sys.close_fds, (remote,), {})  # the worker's copies go whatever happened
                settle(self._exchange(worker, close, deadline), close, worker, timeout)
            except BaseException:
                for fd in taken:
                    os.close(fd)
                raise
            return info, taken

        return self._execute(resolved, call, timeout, hold=take, enter=True)  # type: ignore[no-any-return]

    def options(self, *, timeout: float | None = None) -> PoolOptions:
        """A view of this pool with per-call options, which cannot collide with the callable's keywords::

        pool.options(timeout=2.5).run("/run/netns/blue", fn, timeout=10)  # fn gets timeout=10
        """
        return PoolOptions(self, _check_timeout(timeout))

    def workers(self, memory: bool = True) -> list[WorkerInfo]:
        """A snapshot of the live workers; *memory* adds RSS/USS from psutil (a few ms per worker)."""
        now = _monotonic()
        rows = [
            (w.pid, w.label, w.key, w.state, w.calls, now - w.started, 0.0 if w.state == BUSY else now - w.last_used)
            for w in self._sched.workers()
        ]
        result = []
        for pid, label, key, state, calls, age, idle_for in rows:
            rss = uss = None
            if memory:
                rss, uss = _memory(pid)
            result.append(WorkerInfo(pid, label, key, state, calls, age, idle_for, rss, uss))
        return result

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting calls, then stop every worker and the zygote, and join the pool's threads.

        With *wait*, block until queued and running calls finish; otherwise
        they finish in the background. *cancel_futures* cancels queued calls
        that have not started. Called from one of the pool's own threads (a
        future's done-callback) or from a signal handler that interrupted a
        call of this pool, it cannot wait for that thread's own call: it
        returns at once and the pool closes in the background. Called from
        another pool's thread, it waits for the calls but not for this pool's
        threads: a future may then still be settling (its callbacks to run).
        """
        with self._state_lock:
            self._closing = True
        depth = getattr(_in_call, "depth", 0)
        try:
            if cancel_futures and depth and threading.current_thread() is threading.main_thread():
                # Maybe a handler that interrupted a call of ours holding the dispatcher's lock.
                threading.Thread(target=self._dispatch.cancel_queued, name="nsworkers-cancel", daemon=True).start()
            elif cancel_futures:
                self._dispatch.cancel_queued()
        except BaseException:  # a done-callback's KeyboardInterrupt: the pool still closes
            threading.Thread(target=self._finish, name="nsworkers-shutdown", daemon=True).start()
            raise
        if wait and not in_pool_thread(self._dispatch.mark) and not depth:
            self._finish()
        else:
            threading.Thread(target=self._finish, name="nsworkers-shutdown", daemon=True).start()

    def terminate_workers(self) -> None:
        """Shut the pool down and send every worker SIGTERM now (CPython 3.14 ``terminate_workers``).

        As ``shutdown(wait=False, cancel_futures=True)``: no new calls,
        queued ones are cancelled; then each worker, idle or busy, gets the
        signal at once. A running call fails with :class:`WorkerCrashedError`
        naming the signal and this method; a call still waiting for a worker,
        or whose worker was starting, fails with :class:`PoolClosedError`.
        The zygote and the pool's threads end in the background (a worker
        whose callable catches SIGTERM is killed with the zygote once
        running calls are over). Callable from any thread, a done-callback
        included.
        """
        self._force("terminate_workers()", signal.SIGTERM)

    def kill_workers(self) -> None:
        """Shut the pool down and SIGKILL every worker now (CPython 3.14 ``kill_workers``).

        Like :meth:`terminate_workers` with SIGKILL, which no worker can catch.
        """
        self._force("kill_workers()", signal.SIGKILL)

    def _force(self, name: str, signum: int) -> None:
        depth: int = getattr(_in_call, "depth", 0)
        if depth and threading.current_thread() is threading.main_thread():
            # Maybe a signal handler that interrupted a call of ours (holding a lock we need).
            threading.Thread(target=self._force, args=(name, signum), name="nsworkers-kill", daemon=True).start()
            return
        with self._state_lock:
            if self._forced is None:
                self._forced = name
            self._closing = True
            for worker in self._initializing:  # under the lock: its starter takes it out before closing it
                _signal(worker, signum)
        try:
            self._dispatch.cancel_queued()
        finally:  # also when a done-callback raised (KeyboardInterrupt): the workers are signalled all the same
            # Each worker is signalled under the scheduler's lock, before any caller can release it
            # and close its pidfd. An idle one is ours to close now; a busy one, its caller's.
            for worker in self._sched.close(each=functools.partial(_signal, signum=signum)):
                if worker.state != BUSY:
                    worker.conn.chan.close()
                    self._spawner.forget(worker.pid)
            self.shutdown(wait=False)

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown(wait=True)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "closing" if self._closing else "open"
        return f"<nsworkers.Pool {state} workers={self._sched.total}/{self._max_workers}>"

    def __del__(self) -> None:
        if getattr(self, "_closed", True):
            return
        warnings.warn(f"unclosed {self!r}: use shutdown() or a with block", ResourceWarning, source=self, stacklevel=1)
        self._terminate()

    # -- counting calls -------------------------------------------------------

    # A signal handler's exception (Ctrl-C) may land in the caller's thread after any call, and
    # also at the start of any Python function: so a call is added inside the ``try`` whose
    # ``finally`` removes it, and removed before anything else is called there. A count that
    # lost or gained one made ``shutdown()`` wait for ever.

    def _count_in(self, call: Call) -> None:
        """Count *call* in, unless the pool is closing; called inside the ``try`` that counts it out.

        No lock: a handler runs after a C call such as the add, and one that
        shut the pool down would wait for a lock its own thread held. Added
        before the look at ``_closing``: shutdown() sets it, then looks at the
        calls, so one of the two sees the other.
        """
        self._calls.add(call)
        if self._closing:
            raise PoolClosedError("the pool is shut down")  # the caller's finally/except counts it out

    def _leave(self, call: Call) -> None:
        """Count out a call that ended without running (a cancelled job); in a pool thread."""
        self._calls.discard(call)
        self._closed_when_done()

    def _closed_when_done(self) -> None:
        if self._closing and not self._calls:
            self._wake.put(None)

    # -- the call path ------------------------------------------------------

    def _run(
        self,
        target: object,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> Any:
        resolved = resolve(target)
        call = Call(fn, args, kwargs)
        return self._execute(resolved, call, timeout, idle_first=True, enter=True)

    def _submit(
        self,
        target: object,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> Future[Any]:
        resolved = resolve(target)
        job = self._dispatch.job(resolved, Call(fn, args, kwargs), timeout)
        # A signal handler that shuts the pool down from here must not wait for this call: only
        # this frame, stopped under the handler, can queue it or count it out.
        _in_call.depth = getattr(_in_call, "depth", 0) + 1
        try:
            self._count_in(job.call)
            self._dispatch.submit(job)
        except BaseException:
            if not job.queued:  # else its drain counts it out
                self._calls.discard(job.call)
                self._closed_when_done()
            raise
        finally:
            _in_call.depth -= 1
        return job.future

    def _execute(
        self,
        target: Resolved,
        call: Call,
        timeout: float | None,
        watch: CallFuture | None = None,
        idle_first: bool = False,
        hold: Callable[[Worker, Any], Any] | None = None,
        enter: bool = False,
    ) -> Any:
        """Run one call to its end, and count it out.

        *enter*: count it in first (a call made in the caller's thread); a
        submitted one was counted in when it was queued.

        *watch*: the call's future; its ``cancel()`` kills the worker while a
        request is out, and the call then ends in :class:`CallCancelled`.
        *idle_first*: try the one-lock-round idle path before the general one.
        *hold*: called with the worker and the result while the worker is still ours.
        A signal's exception may arrive between any two lines: a worker is held
        only inside the ``try`` that gives it back or drops it.
        """
        worker: Worker | None = None
        _in_call.depth = getattr(_in_call, "depth", 0) + 1
        try:
            if enter:
                self._count_in(call)
            deadline = None if timeout is None else _monotonic() + timeout
            for attempt in (0, 1):
                try:
                    if idle_first and not attempt:
                        worker = self._sched.take_idle(target.key)
                    if worker is None:
                        worker = self._acquire(target, deadline, call.fn, watch)
                    if watch is not None and not watch.arm(functools.partial(_kill_now, worker)):
                        given, worker = worker, None  # not ours once given back, even if a signal lands here
                        self._give_back(given)  # cancelled before anything was sent: it is as good as it was
                        raise CallCancelled
                    frame = self._exchange(worker, call, deadline)
                except _Stale:
                    assert worker is not None
                    if watch is not None and not watch.disarm(final=False):
                        self._discard(worker, kill=True)
                        raise CallCancelled from None
                    # It died while idle (killed, OOM, its zygote gone) before our request
                    # reached it: the call never started, so one retry on a fresh worker is safe.
                    status = self._discard(worker, kill=False)
                    if attempt:
                        raise WorkerCrashedError(
                            f"the worker for {worker.label} died twice before starting {call.name}(): {status}"
                        ) from None
                    worker = None
                    continue
                except BaseException as exc:
                    if worker is None:
                        raise  # no worker was ours yet (_acquire cleans up after itself)
                    if watch is not None and not watch.disarm():
                        self._discard(worker, kill=True)  # the cancel killed it: the outcome is the cancellation
                        raise CallCancelled from None
                    # No reply, or one out of step: the channel is in an unknown state, so the worker goes
                    # (killed, unless it is already dying: then its own exit status says why).
                    if isinstance(exc, m.ChannelClosed):  # it died: its exit status says how
                        status = self._discard(worker, kill=False)
                        if self._forced is not None:
                            status = f"{status}: the pool's workers were stopped by {self._forced}"
                        return settle(Failure(exc, status), call, worker, timeout)
                    self._drop(worker)  # killed in the background: the error is due now
                    return settle(Failure(exc, ""), call, worker, timeout)
                if watch is not None and not watch.disarm():
                    self._discard(worker, kill=True)  # a cancel came before we could take the reply
                    raise CallCancelled
                healthy = frame[0] in KEEPS_WORKER
                if not healthy:
                    self._discard(worker, kill=False)  # it exits by itself (TAINTED, FATAL)
                try:
                    result = settle(frame, call, worker, timeout)
                    if hold is not None:
                        try:
                            result = hold(worker, result)
                        except BaseException:
                            healthy = False
                            self._discard(worker, kill=True)
                            raise
                finally:
                    if healthy:
                        self._give_back(worker)
                return result
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            _in_call.depth -= 1
            self._calls.discard(call)  # no call before it here: a signal cannot land in between
            self._closed_when_done()

    def _exchange(self, worker: Worker, call: Call, deadline: float | None) -> m.Frame:
        """Send *call* to *worker* and return its reply frame, checked to answer this request."""
        link: _Link = worker.conn
        chan = link.chan
        first = True
        while True:
            index = call.index
            learn = index is not None and index not in link.known
            if learn:
                codec, payload = call.registration()
                learn = call.index is not None  # dropped if what it carries changed meanwhile
            else:
                codec, payload = call.codec, call.payload
            link.last_id = request_id = link.last_id % _REQUEST_IDS + 1
            try:
                chan.send(m.CALL, request_id, codec, payload, deadline)
            except m.ChannelClosed:
                if first:
                    raise _Stale from None
                raise
            try:
                frame = chan.recv(deadline)
            except m.ChannelClosed:
                # Dead before it read our request: it died while idle, and the write succeeded
                # because a child the callable forked holds the pipe. The call never started.
                if first and chan.unsent_bytes() == m.HEADER.size + len(payload):
                    raise _Stale from None
                raise
            kind = frame[0]
            if frame[1] != request_id or kind not in REPLY_KINDS:
                raise ProtocolError(
                    f"worker {worker.pid} answered request {request_id} with kind {kind} for request {frame[1]}: "
                    "out of step; the worker was discarded"
                )
            if kind == m.UNLOADABLE and first and call.as_dill():
                first = False  # it could not import something pickle sent by reference: resend by value
                continue
            if learn and kind != m.UNLOADABLE:
                link.known.add(index)  # type: ignore[arg-type]
            worker.calls += 1
            return frame

    # -- workers --------------------------------------------------------------

    def _acquire(
        self, target: Resolved, deadline: float | None, fn: object = None, watch: CallFuture | None = None
    ) -> Worker:
        """A worker for *target*; *watch*: the call's future, whose ``cancel()`` ends a wait for one."""
        got, evicted = self._sched.try_acquire(target.key, target.label)
        try:
            for victim in evicted:
                self._stop(victim)
            if isinstance(got, Ticket):
                ticket = got
                if watch is not None and not watch.arm(functools.partial(self._sched.abandon, ticket)):
                    self._sched.abandon(ticket)  # cancelled already: the wait below withdraws it
                try:
                    got = self._sched.wait(ticket, deadline)
                except Abandoned:
                    raise CallCancelled from None
                finally:
                    still_wanted = watch is None or watch.disarm(final=False)
                if not still_wanted:  # cancelled as it was granted: given back below
                    raise CallCancelled
        except BaseException:
            if isinstance(got, Reservation):
                self._sched.cancelled(got)
            elif isinstance(got, Worker):
                self._sched.release(got, healthy=True)
            raise
        if isinstance(got, Worker):
            return got
        return self._fill(got, target, deadline, fn)

    def _fill(self, reservation: Reservation, target: Resolved, deadline: float | None, fn: object) -> Worker:
        worker = None
        try:
            worker = self._start_worker(target, deadline, fn)
            self._sched.added(reservation, worker)
        except BaseException:
            if worker is not None and worker.slot is None:  # started, never filed: nobody will use it
                worker.conn.chan.close()
                self._spawner.kill(worker.pid)
            if worker is None or worker.slot is None:
                self._sched.cancelled(reservation)
            else:
                self._drop(worker)
            raise
        self._start_reaper()
        return worker

    def _start_worker(self, target: Resolved, deadline: float | None, fn: object) -> Worker:
        """A new worker joined to *target*; *fn* (its first callable) tells the zygote which module to learn."""
        specs = target.open_specs()
        try:
            new = self._spawner.spawn(specs, deadline, fn)
        except WorkerTimeoutError as exc:
            raise WorkerTimeoutError(f"no worker for {target.label} could be started in time: {exc}") from None
        finally:
            for spec in specs:
                os.close(spec[0])
        chan = m.Channel(new.rfd, new.wfd, new.pidfd)
        try:
            kind, request_id, codec, payload = chan.recv(
                deadline if deadline is not None else _monotonic() + _START_TIMEOUT
            )
            body = m.loads(codec, payload)
        except BaseException as exc:
            chan.close()
            if not isinstance(exc, m.ChannelClosed):
                self._spawner.kill(new.pid)  # no waiting: the error is due now
            if isinstance(exc, TimeoutError):
                raise WorkerTimeoutError(f"the worker for {target.label} was not ready in time") from None
            if isinstance(exc, m.ChannelClosed):
                status, killed = self._spawner.reap(new.pid)
                raise WorkerStartError(
                    f"the worker for {target.label} died during start-up: {describe_status(status, killed)}"
                ) from None
            if isinstance(exc, (ProtocolError, SerializationError)):
                raise WorkerStartError(f"the worker for {target.label} sent garbage at start-up: {exc}") from None
            raise
        if kind == m.JOIN_FAILED and request_id == 0 and isinstance(body, m.JoinFailed):
            chan.close()
            self._spawner.reap(new.pid)
            raise NamespaceJoinError(body.errno, f"cannot join {target.label}: {body.message}")
        if kind != m.READY or request_id != 0 or not isinstance(body, m.Ready):
            chan.close()
            self._spawner.reap(new.pid, kill=True)
            raise ProtocolError(f"unexpected start-up reply (kind {kind}) from worker {new.pid}")
        relayed = any(name in ("pid", "time") for name, _ in body.joined)
        worker = Worker(new.pid, target.key, target.label, _Link(chan, relayed))
        if self._initializer is not None:
            self._initialize(worker, deadline)
        return worker

    def _initialize(self, worker: Worker, deadline: float | None) -> None:
        """Run the pool's initializer in a new *worker*; on any failure the worker is gone and the error raised."""
        assert self._initializer is not None
        call = Call(self._initializer, self._initargs, {})  # a Call of its own: as_dill() changes it
        link: _Link = worker.conn
        with self._state_lock:
            forced = self._forced
            if forced is None:
                self._initializing.add(worker)  # kill_workers() and terminate_workers() signal it too
        try:
            if forced is not None:
                raise PoolClosedError(f"the pool's workers were stopped by {forced}")
            frame = self._exchange(worker, call, deadline)
        except BaseException as exc:
            self._initialized(worker)
            link.chan.close()
            if isinstance(exc, (_Stale, m.ChannelClosed)):
                status, killed = self._spawner.reap(worker.pid)
                why = describe_status(status, killed)
                if self._forced is not None:
                    why = f"{why}: the pool's workers were stopped by {self._forced}"
                raise WorkerStartError(
                    f"the worker for {worker.label} died in its initializer {call.name}(): {why}"
                ) from None
            self._spawner.kill(worker.pid)  # no waiting: the error is due now
            if isinstance(exc, TimeoutError):
                raise WorkerTimeoutError(
                    f"the initializer {call.name}() of the worker for {worker.label} did not finish in time"
                ) from None
            raise
        self._initialized(worker)
        worker.calls = 0  # the initializer is not one of the calls max_tasks_per_worker counts
        if frame[0] in (m.OK, m.UNSENDABLE):  # it ran; what it returned is of no interest
            return
        link.chan.close()
        status, killed = self._spawner.reap(worker.pid, kill=frame[0] in KEEPS_WORKER)
        try:
            settle(frame, call, worker, None)
        except BaseException as exc:
            raise WorkerStartError(
                f"the initializer {call.name}() failed in the worker for {worker.label}; the worker was discarded"
            ) from exc
        raise ProtocolError(f"unexpected reply to the initializer from worker {worker.pid}")  # pragma: no cover

    def _initialized(self, worker: Worker) -> None:
        """*worker* left its initializer: no longer signalled from here, so its channel may be closed."""
        with self._state_lock:
            self._initializing.discard(worker)

    def _give_back(self, worker: Worker) -> None:
        try:
            retire = (self._max_tasks is not None and worker.calls >= self._max_tasks) or (
                self._max_memory is not None and _rss(worker) > self._max_memory
            )
        except BaseException:  # interrupted reading its RSS: never leave it busy for ever
            self._drop(worker)
            raise
        if self._sched.release(worker, True, retire):
            self._stop(worker)

    def _discard(self, worker: Worker, kill: bool) -> str:
        """Drop a worker whose channel is broken or that is exiting; returns how it ended."""
        self._sched.release(worker, healthy=False)
        link: _Link = worker.conn
        link.chan.close()
        status, killed = self._spawner.reap(worker.pid, kill=kill)
        return describe_status(status, killed)

    def _drop(self, worker: Worker) -> None:
        """Drop a worker whose channel is out of step: close it, have it killed, wait for nothing."""
        self._sched.release(worker, healthy=False)
        link: _Link = worker.conn
        link.chan.close()
        self._spawner.kill(worker.pid)

    def _stop(self, worker: Worker) -> None:
        """Stop an idle worker politely: it exits on STOP (or EOF)."""
        link: _Link = worker.conn
        try:
            link.chan.send(m.STOP, 0, m.PICKLE, b"", _monotonic() + _STOP_TIMEOUT)
        except (OSError, EOFError, TimeoutError):
            pass
        link.chan.close()
        self._spawner.forget(worker.pid)

    # -- idle reaping and shutdown -----------------------------------------

    def _start_reaper(self) -> None:
        if self._reaper is not None or self._idle_timeout is None:
            return
        with self._state_lock:
            if self._reaper is not None or self._closing:
                return
            self._reaper = threading.Thread(
                target=_reap_idle,
                args=(weakref.ref(self), self._reaper_stop, self._idle_timeout),
                name="nsworkers-reaper",
                daemon=True,
            )
            self._reaper.start()

    def _expire_idle(self, idle_timeout: float) -> float:
        """Stop workers idle past *idle_timeout*; return seconds until the next may expire."""
        expired, wait = self._sched.expire(idle_timeout, _monotonic())
        for worker in expired:
            self._stop(worker)
        return wait

    def _finish(self) -> None:
        while self._calls:  # one added once closing sees _closing and is taken out again
            try:
                # Also on a timer: the wake-up may come from the caller's thread, where a signal can stop it.
                self._wake.get(timeout=_FINISH_POLL)
            except Empty:
                pass
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
        for worker in self._sched.close():
            self._stop(worker)
        self._spawner.close()
        self._dispatch.shutdown(join=True)
        self._reaper_stop.set()
        reaper = self._reaper
        if reaper is not None and reaper is not threading.current_thread():
            reaper.join()

    def _terminate(self) -> None:
        """At interpreter exit or garbage collection: close every channel (workers exit on EOF) and the zygote."""
        self._closing = self._closed = True
        for worker in self._sched.close():
            worker.conn.chan.close()
        self._spawner.close()
        self._dispatch.shutdown(join=False)
        self._reaper_stop.set()

    def _after_fork_in_child(self) -> None:
        # The child shares our fds with the parent: drop its copies, never talk on them, take no lock
        # (another thread of the parent may have held one at the fork).
        for slot in self._sched._slots.values():
            for worker in slot.workers:
                worker.conn.chan.close()
        self._spawner.close_in_child()
        self._init_state()
        self._sched.closed = True
        self._closing = self._closed = True


def _kill_now(worker: Worker) -> None:
    """SIGKILL a busy worker from any thread (a cancel); its caller sees it die and discards it.

    The caller that owns the worker closes the channel (and so the pidfd)
    only after it disarmed the future, which waits for this.
    """
    _signal(worker, signal.SIGKILL)


def _signal(worker: Worker, signum: int) -> None:
    """Send *signum* to *worker* by its pidfd: the zygote reaps its children, so a bare pid may name another process."""
    link: _Link = worker.conn
    try:
        if link.chan.pidfd >= 0:
            signal.pidfd_send_signal(link.chan.pidfd, signum)
        elif link.chan.rfd >= 0:  # a kernel without pidfds (< 5.3); a closed channel: maybe reaped, maybe reused
            os.kill(worker.pid, signum)
    except (OSError, ValueError):
        pass  # gone already


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _rss(worker: Worker) -> int:
    """Resident bytes of *worker* (and of the process serving behind a relay), from the caller's ``/proc``.

    Never from the worker, which runs code we do not trust, nor from a
    target's ``/proc``. A worker that died meanwhile (its pid may be another
    process's by now) counts as over any bound: it has to go anyway.
    """
    link: _Link = worker.conn
    pid = worker.pid
    try:
        pids = [pid]
        if link.relayed:
            pids += [int(child) for child in _read(f"/proc/{pid}/task/{pid}/children").split()]
        pages = 0
        for each in pids:
            pages += int(_read(f"/proc/{each}/statm").split()[1])
    except (OSError, ValueError, IndexError):
        return 1 << 62
    if link.chan.pidfd >= 0:
        poller = select.poll()
        poller.register(link.chan.pidfd, select.POLLIN)
        if poller.poll(0):
            return 1 << 62  # it exited while we read: what we read may be another process's
    return pages * _PAGE_SIZE


def _read(path: str) -> bytes:
    """A small /proc file in one read (os.open: half the cost of open() here, ~7 us)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


def _memory(pid: int) -> tuple[int | None, int | None]:
    import psutil

    try:
        info = psutil.Process(pid).memory_full_info()
    except (psutil.Error, OSError):
        return None, None
    return info.rss, getattr(info, "uss", None)


def _reap_idle(ref: weakref.ref[Pool], stop: threading.Event, idle_timeout: float) -> None:
    while not stop.is_set():
        pool = ref()
        if pool is None:
            return
        wait = pool._expire_idle(idle_timeout)
        del pool
        stop.wait(min(max(wait, 0.01), idle_timeout))


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


def run(target: TargetLike, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
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

"""Calls that do not block their caller: futures, the map window, and the asyncio bridge.

``submit`` queues a job per namespace; at most ``workers_per_namespace``
drain threads per namespace take jobs from that queue and run each through
the pool's synchronous call path (``Pool._execute``), so a future's call
obeys the same deadlines, retries and typed errors as ``run``.

A :class:`CallFuture` can be cancelled while its call runs: the call path
*arms* it with a way to kill the worker just before the request goes out,
and *disarms* it as soon as the exchange ended. Both, and ``cancel()``,
decide under the future's own lock, so a cancel racing with the reply gives
either the result or a cancellation, never both; a worker killed by a
cancel is never given back.
"""

from __future__ import annotations

import collections
import functools
import itertools
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, PENDING, RUNNING
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from ._calls import Call
from ._target import Key, Target
from .errors import PoolClosedError

if TYPE_CHECKING:
    from ._pool import _Caller

_T = TypeVar("_T")
_P = ParamSpec("_P")

#: Runs one counted call to its end (the pool's ``_execute``), watched by its future.
Execute = Callable[[Target, Call, "float | None", "CallFuture"], Any]


class CallCancelled(Exception):
    """Raised by the call path when its :class:`CallFuture` was cancelled (it is already settled)."""


class CallFuture(Future[Any]):
    """A :class:`concurrent.futures.Future` whose :meth:`cancel` also stops a call that is running.

    ``cancel()`` of a running call kills its worker (the pool replaces it)
    and returns True; ``result()`` then raises ``CancelledError`` and the
    done-callbacks run once. Once the worker's reply is in, ``cancel()``
    returns False as for any finished call.
    """

    _stop: Callable[[], None] | None = None  # kills the worker while a request is out (armed)
    _settling = False  # the exchange ended: too late to cancel
    _callbacks_due = False  # cancelled while running: the callbacks are still to run

    def cancel(self) -> bool:
        with self._condition:
            if self._state != RUNNING:
                if self._state != PENDING:
                    return self._state in (CANCELLED, CANCELLED_AND_NOTIFIED)
                return super().cancel()
            if self._settling:
                return False
            stop = self._stop
            if stop is not None:
                stop()  # first: interrupted after this, the call fails as a crash, still one outcome
            self._state = CANCELLED_AND_NOTIFIED
            self._callbacks_due = True
            for waiter in self._waiters:
                waiter.add_cancelled(self)
            self._condition.notify_all()
        self.run_callbacks_due()
        return True

    def cancel_pending(self) -> bool:
        """Cancel the call only if it has not started (the plain ``Future.cancel``)."""
        return super().cancel()

    def run_callbacks_due(self) -> None:
        """Run the done-callbacks of a running call's cancellation, once, in whichever thread gets here first."""
        with self._condition:
            due, self._callbacks_due = self._callbacks_due, False
        if due:
            self._invoke_callbacks()  # type: ignore[attr-defined]  # Future's own, in every version

    def arm(self, stop: Callable[[], None]) -> bool:
        """A request is about to go out; *stop* kills its worker. False: cancelled already (send nothing)."""
        with self._condition._lock:  # type: ignore[attr-defined]  # the RLock itself: C-level, no Python frame
            if self._state != RUNNING:
                return False
            self._stop = stop
            return True

    def disarm(self, final: bool = True) -> bool:
        """The exchange ended. False: it was cancelled meanwhile (its worker is killed).

        *final*: the reply or error is the call's outcome, so a ``cancel()``
        from now on returns False; not final: a retry on a fresh worker follows.
        """
        with self._condition._lock:  # type: ignore[attr-defined]
            self._stop = None
            if self._state != RUNNING:
                return False
            self._settling = final
            return True


def cancel_pending(future: Future[Any]) -> None:
    """Cancel *future* only if its call has not started (a ``CallFuture``'s ``cancel`` would stop it)."""
    if isinstance(future, CallFuture):
        future.cancel_pending()
    else:
        future.cancel()


class _Job:
    __slots__ = ("call", "future", "queued", "target", "timeout")

    def __init__(self, future: CallFuture, target: Target, call: Call, timeout: float | None) -> None:
        self.future = future
        self.target = target
        self.call = call
        self.timeout = timeout
        self.queued = False  # set by Dispatcher.submit with no call before the queueing: then a drain owns it


class _Queue:
    __slots__ = ("drains", "jobs")

    def __init__(self) -> None:
        self.jobs: collections.deque[_Job] = collections.deque()
        self.drains = 0


_in_pool_thread = threading.local()


def in_pool_thread(owner: object) -> bool:
    """True while running as *owner*'s thread (:func:`as_pool_thread`): it must not wait for *owner*'s calls."""
    return owner in getattr(_in_pool_thread, "owners", ())


def as_pool_thread(owner: object, fn: Callable[..., object], *args: object) -> None:
    """Run *fn* as a thread of *owner*'s: a done-callback it runs that shuts *owner* down does not wait.

    Per owner, not one flag: a callback that shuts another pool down waits
    for that pool's calls (found by helper-18), though not for its threads
    (:meth:`_Threads.shutdown`).
    """
    owners: set[object] = _in_pool_thread.__dict__.setdefault("owners", set())
    fresh = owner not in owners
    owners.add(owner)
    try:
        fn(*args)
    finally:
        if fresh:
            owners.discard(owner)


class _Threads:
    """A minimal pool of daemon threads for drains; joined at shutdown, but from a pool's thread.

    The count of idle threads is kept under a plain lock, not in a
    ``threading.Semaphore``: a semaphore's lock is taken by Python code, and
    a signal handler's exception landing in the caller's thread just after
    that lock was taken left it held for good (every drain thread then hung
    giving itself back, and ``shutdown()`` waited for ever).
    """

    def __init__(self, limit: int, owner: object) -> None:
        self._limit = limit
        self._owner = owner  # whose threads these are (:func:`in_pool_thread`)
        self._queue: SimpleQueue[Callable[[], None] | None] = SimpleQueue()
        self.put = self._queue.put  # after reserve(); a C call: done whole or not at all
        self._idle = 0  # threads waiting for work, not yet promised a job
        self._threads: list[threading.Thread] = []
        self._unlisted = 0  # threads whose start() failed or was interrupted: some may run all the same
        self._lock = threading.Lock()

    def reserve(self) -> None:
        """Make sure a thread will take the next :attr:`put`: promise an idle one, or start one.

        Called before the put, which is one C call: a signal handler's exception
        in between costs at most a thread that waits for work. At the limit the
        put waits for a thread to finish its job.
        """
        with self._lock:
            if self._idle:
                self._idle -= 1
                return
            # A thread never started (its start() raised: "can't start new thread", or a signal's
            # exception) must not hold a place under the limit: with all places held, no drain ran.
            started = [thread for thread in self._threads if thread.ident is not None]
            self._unlisted += len(self._threads) - len(started)
            self._threads = started
            if len(self._threads) < self._limit:
                thread = threading.Thread(
                    target=as_pool_thread,
                    args=(self._owner, self._loop),
                    name=f"nsworkers-drain-{len(self._threads) + 1}",
                    daemon=True,
                )
                self._threads.append(thread)
                thread.start()

    def _loop(self) -> None:
        while True:
            fn = self._queue.get()
            if fn is None:
                return
            fn()
            del fn
            with self._lock:
                self._idle += 1

    def unreserve(self) -> None:
        """Give back what :meth:`reserve` promised, unused."""
        with self._lock:
            self._idle += 1

    def shutdown(self, join: bool) -> None:
        with self._lock:
            threads, self._threads = self._threads, []
            unlisted, self._unlisted = self._unlisted, 0
        for _ in range(len(threads) + unlisted):  # one each, also for any unlisted one that runs
            self._queue.put(None)
        # Not while running as any pool's thread (a drain, or a user's thread in cancel_queued):
        # two pools' done-callbacks that shut each other down each joined the thread running
        # the other's. The calls are over by now (Pool._finish); a future may still be settling.
        if join and not getattr(_in_pool_thread, "owners", None):
            current = threading.current_thread()
            for thread in threads:
                # Not started: reserve() was stopped (a signal's exception, no thread left) between
                # listing it and starting it. It has nothing to finish; join() would raise.
                if thread is not current and thread.ident is not None:
                    thread.join()


class Dispatcher:
    """Per-namespace job queues and the threads that drain them."""

    def __init__(self, execute: Execute, dropped: Callable[[Call], None], per_namespace: int, max_threads: int) -> None:
        self._execute = execute
        self._dropped = dropped  # a counted call ended without running (its future was cancelled)
        self._per_ns = per_namespace
        self._lock = threading.Lock()
        self._queues: dict[Key, _Queue] = {}
        # What this dispatcher's threads are marked with (in_pool_thread); not the dispatcher,
        # which holds its pool: a drain thread would keep a dropped pool alive for ever.
        self.mark = object()
        self._threads = _Threads(max_threads, self.mark)

    @staticmethod
    def job(target: Target, call: Call, timeout: float | None) -> _Job:
        """A job for :meth:`submit`; its future completes with the result or the typed error."""
        return _Job(CallFuture(), target, call, timeout)

    def submit(self, job: _Job) -> None:
        """Queue a counted job: once ``job.queued`` is set, a drain runs it and counts it out.

        A signal handler's exception may land in the caller's thread after any
        call (CPython checks for one there). So the drain is sent first, then
        ``job.queued`` is set with no call between it and the queueing: an
        exception in between leaves that drain an empty queue, which it
        leaves at once, and the job the caller's to count out. Under the lock
        only C code runs (but for a rare :meth:`_Threads.reserve`): a handler
        that calls into the pool there would wait for the lock for ever.
        """
        key = job.target.key
        seen = self._queues.get(key)  # a look without the lock: is a drain likely needed?
        reserved = seen is None or seen.drains < self._per_ns
        if reserved:
            self._threads.reserve()  # may start a thread: not under our lock
        fresh = _Queue()
        drain = None
        with self._lock:
            queue = self._queues.setdefault(key, fresh)
            if queue.drains < self._per_ns:
                drain = functools.partial(self._drain, key, queue)
                if not reserved:
                    self._threads.reserve()  # a drain ended since the look
                    reserved = True
                queue.drains += 1
                self._threads.put(drain)
            job.queued = True
            queue.jobs.append(job)
        if reserved and drain is None:
            self._threads.unreserve()  # a drain started since the look

    def _drain(self, key: Key, queue: _Queue) -> None:
        while True:
            with self._lock:
                if not queue.jobs:
                    queue.drains -= 1
                    if not queue.drains and self._queues.get(key) is queue:
                        del self._queues[key]
                    return
                job = queue.jobs.popleft()
            try:
                self.run(job)
            except BaseException:  # a done-callback's KeyboardInterrupt or SystemExit (Future lets them through)
                # Reported, not raised: it would end this drain, and its namespace would never drain again.
                threading.excepthook(threading.ExceptHookArgs((*sys.exc_info(), threading.current_thread())))
            del job

    def run(self, job: _Job) -> None:
        """Make a job's call (in a drain thread) and complete its future."""
        future = job.future
        if not future.set_running_or_notify_cancel():
            self._dropped(job.call)
            return
        try:
            result = self._execute(job.target, job.call, job.timeout, future)
        except CallCancelled:
            future.run_callbacks_due()  # if cancel() itself was interrupted before it could
        except BaseException as exc:
            _settle(future, exc, True)
        else:
            _settle(future, result, False)

    def cancel_queued(self) -> None:
        """Cancel every job not started yet.

        In the main thread, a helper thread does it: a signal handler's exception
        there, once the jobs were taken out of their queues, left the rest
        pending and counted for ever (``shutdown(wait=True)`` then hung). What
        a done-callback raised is raised here, once every job is done with.
        Either way the loop runs as the pool's thread (see :func:`as_pool_thread`).
        """
        if threading.current_thread() is not threading.main_thread():
            as_pool_thread(self.mark, self._cancel_queued)
            return
        raised: list[BaseException] = []

        def cancel() -> None:
            try:  # as the pool's: a done-callback's shutdown() must not wait for calls this counts out
                as_pool_thread(self.mark, self._cancel_queued)
            except BaseException as exc:
                raised.append(exc)

        helper = threading.Thread(target=cancel, name="nsworkers-cancel", daemon=True)
        helper.start()
        helper.join()
        if raised:
            raise raised[0]

    def _cancel_queued(self) -> None:
        with self._lock:
            jobs = [job for queue in self._queues.values() for job in queue.jobs]
            for queue in self._queues.values():
                queue.jobs.clear()
        first: BaseException | None = None
        for job in jobs:  # each one, whatever a done-callback raises (KeyboardInterrupt gets past Future's catch)
            try:
                job.future.cancel_pending()
            except BaseException as exc:
                first = first or exc
            finally:
                if job.future._state == CANCELLED:
                    # CANCELLED_AND_NOTIFIED, as a drain that met it would leave it: only then do
                    # concurrent.futures.wait() and as_completed() count it done (they hung).
                    job.future.set_running_or_notify_cancel()
                self._dropped(job.call)
        if first is not None:
            raise first

    def shutdown(self, join: bool) -> None:
        self._threads.shutdown(join)


def map_unordered(
    submit: Callable[[Any], Future[Any]],
    namespaces: Iterable[Any],
    window: int,
    return_exceptions: bool,
) -> Iterator[tuple[Any, Any]]:
    """``(namespace, result)`` as calls complete, at most *window* queued at a time."""
    done: SimpleQueue[tuple[Any, Future[Any]]] = SimpleQueue()
    pending: set[Future[Any]] = set()
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
                    future = submit(ns)
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
            cancel_pending(future)  # a call already running is left to finish


def _settle(future: CallFuture, value: Any, failed: bool) -> None:
    """Complete *future* unless a cancel() came in after the call path's last look (it then stays cancelled)."""
    if not future._settling:  # the call ended before it was armed (set only by this thread: no lock to read)
        with future._condition._lock:  # type: ignore[attr-defined]
            if future._state != RUNNING:
                return
            future._settling = True  # cancel() now returns False
    if failed:
        future.set_exception(value)
    else:
        future.set_result(value)


_END = object()


class _Notify:
    """Done-callback of a map() future: queue ``(namespace, future)``."""

    __slots__ = ("done", "ns")

    def __init__(self, done: SimpleQueue[tuple[Any, Future[Any]]], ns: Any) -> None:
        self.done = done
        self.ns = ns

    def __call__(self, future: Future[Any]) -> None:
        self.done.put((self.ns, future))


class NamespaceExecutor(Executor):
    """A :class:`concurrent.futures.Executor` running every call in one target of a pool (``Pool.executor``).

    ``submit``, ``map`` and ``shutdown`` follow CPython 3.14's ``Executor``;
    ``shutdown`` ends this executor only, not the pool. The target is
    resolved by the pool at each call.
    """

    def __init__(self, pool: _Caller, target: Any) -> None:
        self._pool = pool
        self._target = target
        self._lock = threading.Lock()
        self._closed = False
        self._futures: set[Future[Any]] = set()  # not done yet

    def __repr__(self) -> str:
        state = "shut down" if self._closed else "open"
        return f"<nsworkers executor {state} for {self._target!r}>"

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        """Queue ``fn(*args, **kwargs)`` in the target (see ``Pool.submit``); PoolClosedError after shutdown."""
        with self._lock:
            if self._closed:
                raise PoolClosedError("cannot schedule new futures after shutdown")
            future = self._pool.submit(self._target, fn, *args, **kwargs)
            self._futures.add(future)
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: Future[Any]) -> None:
        with self._lock:
            self._futures.discard(future)

    def map(
        self,
        fn: Callable[..., _T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> Iterator[_T]:
        """``fn(*args)`` for the items of *iterables* zipped, results in order (CPython 3.14 ``Executor.map``).

        *timeout* bounds the whole iteration (``TimeoutError``); *buffersize*
        caps the calls submitted ahead of the results taken (TypeError if not
        an int, ValueError if below 1, as in CPython); *chunksize* is
        accepted and ignored, as by ``ThreadPoolExecutor``. When the iterator
        is closed early or raises, calls not started yet are cancelled.
        """
        if buffersize is not None and (isinstance(buffersize, bool) or not isinstance(buffersize, int)):
            raise TypeError("buffersize must be an integer or None")
        if buffersize is not None and buffersize < 1:
            raise ValueError("buffersize must be None or > 0")
        end_time = None if timeout is None else timeout + time.monotonic()
        zipped = zip(*iterables)  # noqa: B905 - Executor.map stops at the shortest, as zip does
        if buffersize:
            futures = collections.deque(self.submit(fn, *args) for args in itertools.islice(zipped, buffersize))
        else:
            futures = collections.deque(self.submit(fn, *args) for args in zipped)
        executor = weakref.ref(self)
        return _ordered_results(futures, zipped if buffersize else None, executor, fn, end_time)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new calls through this executor; the pool and its workers stay up for its other users.

        *cancel_futures* cancels this executor's calls not started yet;
        *wait* waits for the others to finish.
        """
        with self._lock:
            self._closed = True
            futures = list(self._futures)
        if cancel_futures:
            for future in futures:
                cancel_pending(future)
        if wait:
            for future in futures:
                try:
                    future.exception()  # waits; a cancelled one raises
                except BaseException:
                    pass


def _ordered_results(
    futures: collections.deque[Future[_T]],
    more: Iterator[tuple[Any, ...]] | None,
    executor: weakref.ref[NamespaceExecutor],
    fn: Callable[..., _T],
    end_time: float | None,
) -> Iterator[_T]:
    """Results of *futures* in order; with *more*, one new call submitted per result taken (``buffersize``)."""
    try:
        while futures:
            if more is not None:
                owner = executor()
                args = next(more, None) if owner is not None else None
                if owner is not None and args is not None:
                    futures.append(owner.submit(fn, *args))
                del owner
            future = futures.popleft()
            try:
                if end_time is None:
                    yield future.result()
                else:
                    yield future.result(end_time - time.monotonic())
            finally:
                cancel_pending(future)
            del future
    finally:
        for future in futures:
            cancel_pending(future)

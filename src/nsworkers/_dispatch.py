"""Calls that do not block their caller: futures, the map window, and the asyncio bridge.

``submit`` queues a job per namespace; at most ``workers_per_namespace``
drain threads per namespace take jobs from that queue and run each through
the pool's synchronous call path (``Pool._execute``), so a future's call
obeys the same deadlines, retries and typed errors as ``run``.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from queue import SimpleQueue
from typing import Any

from ._calls import Call
from ._target import Key, Target

#: Runs one counted call to its end (the pool's ``_execute``).
Execute = Callable[[Target, Call, "float | None"], Any]


class _Job:
    __slots__ = ("call", "future", "target", "timeout")

    def __init__(self, future: Future[Any], target: Target, call: Call, timeout: float | None) -> None:
        self.future = future
        self.target = target
        self.call = call
        self.timeout = timeout


class _Queue:
    __slots__ = ("drains", "jobs")

    def __init__(self) -> None:
        self.jobs: collections.deque[_Job] = collections.deque()
        self.drains = 0


_in_pool_thread = threading.local()


def in_pool_thread() -> bool:
    """True in a thread of a pool (a drain thread): it must not wait for the pool's own calls to end."""
    return getattr(_in_pool_thread, "value", False)


class _Threads:
    """A minimal pool of daemon threads for drains; joined at shutdown."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._queue: SimpleQueue[Callable[[], None] | None] = SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def submit(self, fn: Callable[[], None]) -> None:
        self._queue.put(fn)
        if self._idle.acquire(blocking=False):
            return
        with self._lock:
            if len(self._threads) < self._limit:
                thread = threading.Thread(
                    target=self._loop, name=f"nsworkers-drain-{len(self._threads) + 1}", daemon=True
                )
                self._threads.append(thread)
                thread.start()

    def _loop(self) -> None:
        _in_pool_thread.value = True
        while True:
            fn = self._queue.get()
            if fn is None:
                return
            fn()
            del fn
            self._idle.release()

    def shutdown(self, join: bool) -> None:
        with self._lock:
            threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(None)
        if join:
            current = threading.current_thread()
            for thread in threads:
                if thread is not current:
                    thread.join()


class Dispatcher:
    """Per-namespace job queues and the threads that drain them."""

    def __init__(self, execute: Execute, dropped: Callable[[], None], per_namespace: int, max_threads: int) -> None:
        self._execute = execute
        self._dropped = dropped  # a counted call ended without running (its future was cancelled)
        self._per_ns = per_namespace
        self._lock = threading.Lock()
        self._queues: dict[Key, _Queue] = {}
        self._threads = _Threads(max_threads)

    def submit(self, target: Target, call: Call, timeout: float | None) -> Future[Any]:
        """Queue a counted call; its future completes with the result or the typed error."""
        job = _Job(Future(), target, call, timeout)
        with self._lock:
            queue = self._queues.get(target.key)
            if queue is None:
                queue = self._queues[target.key] = _Queue()
            queue.jobs.append(job)
            start = queue.drains < self._per_ns
            if start:
                queue.drains += 1
        if start:
            self._threads.submit(lambda: self._drain(target.key, queue))
        return job.future

    def _drain(self, key: Key, queue: _Queue) -> None:
        while True:
            with self._lock:
                if not queue.jobs:
                    queue.drains -= 1
                    if not queue.drains and self._queues.get(key) is queue:
                        del self._queues[key]
                    return
                job = queue.jobs.popleft()
            if not job.future.set_running_or_notify_cancel():
                self._dropped()
                continue
            try:
                result = self._execute(job.target, job.call, job.timeout)
            except BaseException as exc:
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)
            del job

    def cancel_queued(self) -> int:
        """Cancel every job not started yet; returns how many."""
        with self._lock:
            jobs = [job for queue in self._queues.values() for job in queue.jobs]
            for queue in self._queues.values():
                queue.jobs.clear()
        for job in jobs:
            job.future.cancel()
            self._dropped()
        return len(jobs)

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
            future.cancel()


_END = object()


class _Notify:
    """Done-callback of a map() future: queue ``(namespace, future)``."""

    __slots__ = ("done", "ns")

    def __init__(self, done: SimpleQueue[tuple[Any, Future[Any]]], ns: Any) -> None:
        self.done = done
        self.ns = ns

    def __call__(self, future: Future[Any]) -> None:
        self.done.put((self.ns, future))

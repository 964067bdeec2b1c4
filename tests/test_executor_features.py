"""What a 2026 process-pool user expects (issue 16, item 4), against real namespaces and workers.

Cancelling a running call, an initializer, ``map(buffersize=)``, recycling a
worker whose memory grew, ``kill_workers``/``terminate_workers``, and an
``Executor`` bound to one namespace. No clocks: a call that must be running
says so by creating a file, and a call that must last waits for a gate file.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import random
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future
from pathlib import Path

import pytest

import nsworkers
from nsworkers import Pool, _dispatch
from nsworkers.errors import (
    PoolClosedError,
    RemoteTraceback,
    SerializationError,
    WorkerCrashedError,
    WorkerStartError,
)

from ._in_worker import my_netns, pid, started_then_block, started_then_wait, wait_for_file
from .conftest import _children, dead, ip, wait_for

pytestmark = pytest.mark.privileged


def wait_started(marker: Path) -> int:
    """The pid of the worker that runs :func:`started_then_block` once it does."""
    assert wait_for(marker.exists), "the call never started"
    return int(marker.read_text())


# -- cancel() of a running call --------------------------------------------------


def test_cancel_stops_a_running_call(pool: Pool, netns: str, tmp_path: Path) -> None:
    first = pool.run(netns, pid)
    future = pool.submit(netns, started_then_block, str(tmp_path / "started"))
    assert wait_started(tmp_path / "started") == first
    assert future.running()
    callbacks: list[Future[int]] = []
    future.add_done_callback(callbacks.append)
    assert future.cancel()
    assert future.cancelled() and future.done()
    assert callbacks == [future]
    with pytest.raises(CancelledError):
        future.result(timeout=60)
    assert future.cancel()  # again: still cancelled
    assert wait_for(lambda: dead(first))
    second = pool.run(netns, pid)  # the slot is not lost: a fresh worker serves the namespace
    assert second != first
    assert [w.pid for w in pool.workers(memory=False)] == [second]
    assert callbacks == [future]  # once


def test_cancel_wakes_waiters_of_a_running_call(pool: Pool, netns: str, tmp_path: Path) -> None:
    future = pool.submit(netns, started_then_block, str(tmp_path / "started"))
    wait_started(tmp_path / "started")
    waited: list[set[Future[int]]] = []
    waiter = threading.Thread(target=lambda: waited.append(concurrent.futures.wait([future]).done))
    waiter.start()
    assert future.cancel()
    waiter.join(60)
    assert waited == [{future}]


def test_cancel_after_the_reply_returns_false(pool: Pool, netns: str) -> None:
    future = pool.submit(netns, pid)
    worker = future.result(timeout=60)
    assert not future.cancel()
    assert not future.cancelled()
    assert pool.run(netns, pid) == worker  # the worker was kept


def test_cancel_while_the_worker_starts(pool: Pool, make_netns: Callable[[], str]) -> None:
    """Cancelled while its worker is still starting: the call never runs, the new worker is kept."""
    for _ in range(5):
        path = f"/run/netns/{make_netns()}"
        future = pool.submit(path, pid)
        future.cancel()
        assert future.done()
        if future.cancelled():
            with pytest.raises(CancelledError):
                future.result()
        assert pool.options(timeout=60).run(path, my_netns) == f"net:[{os.stat(path).st_ino}]"


def test_cancel_of_a_call_waiting_for_a_worker_withdraws_it(make_netns: Callable[[], str], tmp_path: Path) -> None:
    """Cancelled while it waits for room in a full pool: it lets go at once.

    Broke: its dispatcher thread kept waiting; once the busy call ended, the
    pool evicted that worker to start one for the cancelled call (which then
    did not run).
    """
    busy_ns, queued_ns = (f"/run/netns/{make_netns()}" for _ in range(2))
    started, gate = tmp_path / "started", tmp_path / "gate"
    with Pool(max_workers=1) as pool, concurrent.futures.ThreadPoolExecutor(1) as caller:
        # The only worker is held by a plain run() in a thread of the caller's (not a drain thread).
        busy = caller.submit(pool.run, busy_ns, started_then_wait, str(started), str(gate), 7)
        assert wait_for(started.exists)
        queued = pool.submit(queued_ns, pid)
        assert wait_for(lambda: len(pool._sched._waiting) == 1)  # it waits for room
        assert queued.cancel()
        assert wait_for(lambda: not pool._sched._waiting)  # ... no longer
        first = pool.workers(memory=False)[0].pid
        gate.touch()
        assert busy.result(timeout=60) == 7
        assert pool.run(busy_ns, pid) == first  # kept, not evicted for the cancelled call
        assert [w.namespace for w in pool.workers(memory=False)] == [busy_ns]


def test_cancel_racing_with_the_reply(pool: Pool, netns: str) -> None:
    """Cancel at random moments around the reply: one outcome each, callbacks once, no dead worker kept."""
    rng = random.Random(16)
    outcomes = {"cancelled": 0, "result": 0}
    for _ in range(200):
        future = pool.submit(netns, pid)
        calls: list[object] = []
        future.add_done_callback(calls.append)
        for _ in range(rng.randrange(0, 2000)):
            pass
        cancelled = future.cancel()
        try:
            got = future.result(timeout=60)
        except CancelledError:
            assert cancelled and future.cancelled()
            outcomes["cancelled"] += 1
        else:
            assert not cancelled and not future.cancelled() and got > 0
            outcomes["result"] += 1
        assert calls == [future]
        for worker in pool.workers(memory=False):  # whatever is kept is alive
            assert not dead(worker.pid)
    assert pool.options(timeout=60).run(netns, pid) > 0


def test_asyncio_task_cancellation_stops_the_call(pool: Pool, netns: str, tmp_path: Path) -> None:
    marker = tmp_path / "started"

    async def main() -> int:
        task = asyncio.create_task(pool.arun(netns, started_then_block, str(marker)))
        worker = await asyncio.to_thread(wait_started, marker)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return worker

    worker = asyncio.run(main())
    assert wait_for(lambda: dead(worker))
    assert pool.run(netns, pid) != worker


class _Interrupted(Exception):
    """What the signal handler below raises, as a KeyboardInterrupt would."""


def _raise_interrupted(signum: int, frame: object) -> None:
    raise _Interrupted


def test_cancel_interrupted_after_the_kill(
    pool: Pool, netns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signal's exception in cancel() right after it killed the worker: the call fails as a crash, once."""
    arm = _dispatch.CallFuture.arm

    def arm_then_interrupt(self: _dispatch.CallFuture, stop: Callable[[], None]) -> bool:
        def stop_then_interrupt() -> None:
            stop()
            raise _Interrupted

        return arm(self, stop_then_interrupt)

    monkeypatch.setattr(_dispatch.CallFuture, "arm", arm_then_interrupt)
    future = pool.submit(netns, started_then_block, str(tmp_path / "started"))
    worker = wait_started(tmp_path / "started")
    calls: list[object] = []
    future.add_done_callback(calls.append)
    with pytest.raises(_Interrupted):
        future.cancel()
    with pytest.raises(WorkerCrashedError):
        future.result(timeout=60)
    assert calls == [future]
    assert pool.run(netns, pid) != worker


def test_cancel_interrupted_before_the_callbacks(
    pool: Pool, netns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signal's exception in cancel() before it ran the done-callbacks: the pool's thread runs them, once."""
    run_callbacks_due = _dispatch.CallFuture.run_callbacks_due
    main = threading.current_thread()

    def interrupted_in_main(self: _dispatch.CallFuture) -> None:
        if threading.current_thread() is main:
            raise _Interrupted
        run_callbacks_due(self)

    monkeypatch.setattr(_dispatch.CallFuture, "run_callbacks_due", interrupted_in_main)
    future = pool.submit(netns, started_then_block, str(tmp_path / "started"))
    worker = wait_started(tmp_path / "started")
    calls: list[object] = []
    future.add_done_callback(calls.append)
    with pytest.raises(_Interrupted):
        future.cancel()
    assert future.cancelled()
    assert wait_for(lambda: calls == [future])
    assert wait_for(lambda: dead(worker))
    assert pool.run(netns, pid) != worker
    assert calls == [future]


def test_shutdown_during_a_cancel(netns: str, tmp_path: Path) -> None:
    before = _children()
    pool = Pool()
    future = pool.submit(netns, started_then_block, str(tmp_path / "started"))
    worker = wait_started(tmp_path / "started")
    closer = threading.Thread(target=pool.shutdown)  # waits for the running call
    closer.start()
    assert future.cancel()
    closer.join(60)
    assert not closer.is_alive()
    assert wait_for(lambda: dead(worker))
    assert wait_for(lambda: not (_children() - before))


# -- initializer ------------------------------------------------------------------

_initialized: list[str] = []


def remember_netns(tag: str) -> None:
    _initialized.append(f"{tag} {os.readlink('/proc/self/ns/net')}")


def initialized() -> list[str]:
    return _initialized


def getenv(name: str) -> str | None:
    return os.environ.get(name)


def fail_once(marker: str) -> None:
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise ValueError("first worker refuses")


def exit_in_initializer() -> None:
    os._exit(7)


def test_initializer_runs_once_per_worker_inside_the_namespace(netns: str) -> None:
    with Pool(initializer=remember_netns, initargs=("init",)) as pool:
        inside = pool.run(netns, my_netns)
        assert pool.run(netns, initialized) == [f"init {inside}"]
        assert pool.run(netns, initialized) == [f"init {inside}"]  # not again for the next call


def test_initializer_sent_by_value(netns: str) -> None:
    with Pool(initializer=lambda: os.environ.__setitem__("NSW_TEST_INIT", "lambda")) as pool:  # dill
        assert pool.run(netns, getenv, "NSW_TEST_INIT") == "lambda"


def test_initializer_counts_no_task(netns: str) -> None:
    with Pool(initializer=remember_netns, initargs=("x",), max_tasks_per_worker=2) as pool:
        pids = [pool.run(netns, pid) for _ in range(3)]
    assert pids[0] == pids[1] != pids[2]


def test_a_failing_initializer_fails_the_call_and_discards_the_worker(netns: str, tmp_path: Path) -> None:
    before = _children()
    with Pool(initializer=fail_once, initargs=(str(tmp_path / "failed"),)) as pool:
        with pytest.raises(WorkerStartError) as raised:
            pool.run(netns, pid)
        assert "fail_once" in str(raised.value)
        cause = raised.value.__cause__
        assert isinstance(cause, ValueError) and str(cause) == "first worker refuses"
        assert isinstance(cause.__cause__, RemoteTraceback) and "fail_once" in str(cause.__cause__)
        assert pool.workers(memory=False) == []
        assert pool.run(netns, pid) > 0  # the pool stays usable: the next worker initializes fine
        assert len(pool.workers(memory=False)) == 1
    assert wait_for(lambda: not (_children() - before))


def test_a_worker_dying_in_its_initializer(netns: str) -> None:
    with Pool(initializer=exit_in_initializer) as pool:
        future = pool.submit(netns, pid)
        with pytest.raises(WorkerStartError, match=r"died in its initializer.*exit"):
            future.result(timeout=60)
        assert pool.workers(memory=False) == []


def block_on_first_worker(marker: str) -> None:
    """Initializer: the first worker says it runs it (pid in *marker*), then blocks; later ones pass."""
    if not os.path.exists(marker):
        started_then_block(marker)


def test_a_signal_during_the_initializer(netns: str, tmp_path: Path) -> None:
    """A signal handler's exception while the caller waits for the initializer: worker killed, slot kept."""
    marker = tmp_path / "started"
    before = _children()
    previous = signal.signal(signal.SIGUSR1, _raise_interrupted)
    try:
        with Pool(initializer=block_on_first_worker, initargs=(str(marker),)) as pool:

            def interrupt() -> None:
                wait_started(marker)
                os.kill(os.getpid(), signal.SIGUSR1)

            sender = threading.Thread(target=interrupt)
            sender.start()
            with pytest.raises(_Interrupted):
                pool.run(netns, pid)
            sender.join()
            first = int(marker.read_text())
            assert wait_for(lambda: dead(first))
            assert pool.workers(memory=False) == []
            assert pool.options(timeout=60).run(netns, pid) != first
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert wait_for(lambda: not (_children() - before))


def test_initializer_checked_when_the_pool_is_made() -> None:
    with pytest.raises(TypeError):
        Pool(initializer=42)  # type: ignore[arg-type]
    with pytest.raises(SerializationError):
        Pool(initializer=remember_netns, initargs=(threading.Lock(),))


# -- map(buffersize=) ---------------------------------------------------------------


def test_map_buffersize_bounds_calls_ahead_of_the_consumer(pool: Pool, netns: str) -> None:
    pulled = 0

    def targets() -> Iterator[str]:
        nonlocal pulled
        for _ in range(12):
            pulled += 1
            yield netns

    taken = 0
    for _, result in pool.map(pid, targets(), buffersize=3):
        taken += 1
        assert result > 0
        assert pulled - taken <= 2  # with the one just taken: 3 submitted ahead of what was taken before
    assert taken == 12


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_map_buffersize_validated(pool: Pool, bad: object) -> None:
    with pytest.raises(ValueError, match="buffersize"):
        pool.map(pid, [], buffersize=bad)  # type: ignore[arg-type]


# -- max_memory_per_worker ----------------------------------------------------------

_ballast: list[bytes] = []


def grow(megabytes: int) -> int:
    _ballast.append(b"\x01" * (megabytes << 20))
    return os.getpid()


def test_max_memory_per_worker_retires_a_grown_worker(netns: str) -> None:
    with Pool(max_memory_per_worker=96 << 20) as pool:
        first = pool.run(netns, pid)
        assert pool.run(netns, pid) == first  # small: kept
        assert pool.run(netns, grow, 160) == first  # the result still comes back
        assert wait_for(lambda: dead(first))
        second = pool.run(netns, pid)
        assert second != first
        assert pool.run(netns, pid) == second


@pytest.mark.parametrize("bad", [0, -5, 1.5, True, "1G"])
def test_max_memory_per_worker_validated(bad: object) -> None:
    with pytest.raises(ValueError, match="max_memory_per_worker"):
        Pool(max_memory_per_worker=bad)  # type: ignore[arg-type]


# -- kill_workers / terminate_workers -----------------------------------------------


@pytest.mark.parametrize(
    ("method", "signum"), [("kill_workers", signal.SIGKILL), ("terminate_workers", signal.SIGTERM)]
)
def test_kill_and_terminate_workers(make_netns: Callable[[], str], tmp_path: Path, method: str, signum: int) -> None:
    busy_ns, idle_ns = (f"/run/netns/{make_netns()}" for _ in range(2))
    before = _children()
    pool = Pool()
    idle = pool.run(idle_ns, pid)
    running = pool.submit(busy_ns, started_then_block, str(tmp_path / "started"))
    busy = wait_started(tmp_path / "started")
    queued = pool.submit(busy_ns, pid)
    getattr(pool, method)()
    with pytest.raises(WorkerCrashedError, match=rf"{method}\(\)") as raised:
        running.result(timeout=60)
    assert signal.Signals(signum).name in str(raised.value)
    assert queued.cancelled()
    assert wait_for(lambda: dead(idle) and dead(busy))
    with pytest.raises(PoolClosedError):
        pool.run(idle_ns, pid)
    assert wait_for(lambda: not (_children() - before))
    assert wait_for(lambda: not [t for t in threading.enumerate() if t.name.startswith("nsworkers-drain")])
    getattr(pool, method)()  # again: nothing left to do
    pool.shutdown()


def test_kill_workers_from_a_done_callback(pool: Pool, make_netns: Callable[[], str], tmp_path: Path) -> None:
    a, b = (f"/run/netns/{make_netns()}" for _ in range(2))
    running = pool.submit(b, started_then_block, str(tmp_path / "started"))
    busy = wait_started(tmp_path / "started")
    pool.submit(a, pid).add_done_callback(lambda f: pool.kill_workers())  # runs in a pool thread
    with pytest.raises(WorkerCrashedError):
        running.result(timeout=60)
    assert wait_for(lambda: dead(busy))


def test_kill_workers_during_cold_starts(make_netns: Callable[[], str]) -> None:
    paths = [f"/run/netns/{make_netns()}" for _ in range(6)]
    before = _children()
    pool = Pool(spare_workers=0)
    futures = [pool.submit(path, pid) for path in paths]
    pool.kill_workers()
    for future in futures:
        concurrent.futures.wait([future], timeout=60)
        assert future.done()
        assert future.cancelled() or isinstance(future.exception(), (PoolClosedError, WorkerCrashedError))
    assert wait_for(lambda: not (_children() - before))
    pool.shutdown()


@pytest.mark.parametrize("stop", ["kill_workers", "shutdown(cancel_futures=True)"])
def test_calls_a_stop_cancelled_in_the_queue_are_done_for_wait(netns: str, tmp_path: Path, stop: str) -> None:
    """``concurrent.futures.wait()`` and ``as_completed()`` return for queued calls a stop cancelled.

    Broke: those futures were left CANCELLED, never CANCELLED_AND_NOTIFIED
    (what a drain that meets a cancelled call leaves), and ``wait()`` without
    a timeout waited for them for ever.
    """
    started, gate = tmp_path / "started", tmp_path / "gate"
    pool = Pool()
    try:
        running = pool.submit(netns, started_then_wait, str(started), str(gate), "ran")
        assert wait_for(started.exists)
        queued = [pool.submit(netns, pid) for _ in range(3)]  # one drain per namespace: these wait behind it
        if stop == "kill_workers":
            pool.kill_workers()
        else:
            pool.shutdown(wait=False, cancel_futures=True)
        assert not concurrent.futures.wait(queued, timeout=60).not_done  # a detector of a hang, not a timing
        assert all(future.cancelled() for future in queued)
        assert set(concurrent.futures.as_completed(queued, timeout=60)) == set(queued)
    finally:
        gate.touch()
        pool.shutdown()
    assert running.done()


def test_a_drain_thread_that_never_started_does_not_break_shutdown(netns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``submit()`` stopped between listing a new drain thread and starting it.

    A second Ctrl-C can land there, and so can "can't start new thread" at a
    thread limit. Broke: ``shutdown()`` then raised "cannot join thread
    before it is started" (a traceback after two Ctrl-C in ``watch``); and
    the thread that never started kept its place under the limit, so with
    ``max_workers=1`` no later call ever ran (found by helper-16's review).
    """
    with Pool(max_workers=1) as pool:
        worker = pool.run(netns, pid)  # the zygote and its reader thread are up: the next thread started is a drain
        start = threading.Thread.start

        def fail_once(self: threading.Thread) -> None:
            monkeypatch.setattr(threading.Thread, "start", start)
            raise RuntimeError("can't start new thread")

        monkeypatch.setattr(threading.Thread, "start", fail_once)
        with pytest.raises(RuntimeError, match="can't start new thread"):
            pool.submit(netns, pid)
        assert pool.submit(netns, pid).result(timeout=60) == worker  # the pool is as it was


def test_a_handler_that_stops_the_pool_inside_submit_does_not_deadlock(
    netns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signal handler that calls ``kill_workers()`` while the main thread is inside ``submit()``.

    Broke: ``submit()`` started drain threads under the dispatcher's lock,
    and ``Thread.start()`` waits in Python code, where handlers run; the
    handler's ``kill_workers()`` then waited for that same lock for ever.
    Here the "handler" runs where ``submit()`` starts a thread.
    """
    with Pool() as pool:
        pool.run(netns, pid)
        reserve = _dispatch._Threads.reserve

        def handler_runs_here(self: _dispatch._Threads) -> None:
            monkeypatch.setattr(_dispatch._Threads, "reserve", reserve)
            pool.kill_workers()
            reserve(self)

        monkeypatch.setattr(_dispatch._Threads, "reserve", handler_runs_here)
        try:
            future = pool.submit(netns, pid)
        except PoolClosedError:
            return
        concurrent.futures.wait([future], timeout=60)  # a detector of a hang, not a timing
        assert future.done()


def test_a_done_callback_that_raises_keyboardinterrupt_does_not_hang_shutdown(netns: str, tmp_path: Path) -> None:
    """``shutdown(cancel_futures=True)`` cancels queued calls; one's done-callback raises KeyboardInterrupt.

    ``Future`` catches only ``Exception`` from a callback. Broke: the
    interrupt ended the loop over the queued calls, already taken out of
    their queues: the rest were never cancelled nor counted out, and
    ``shutdown(wait=True)`` waited for them for ever (found by helper-16).
    """
    started, gate = tmp_path / "started", tmp_path / "gate"
    pool = Pool()
    try:
        pool.submit(netns, started_then_wait, str(started), str(gate), "ran")
        assert wait_for(started.exists)
        queued = [pool.submit(netns, pid) for _ in range(3)]

        def interrupt(_: object) -> None:
            raise KeyboardInterrupt

        queued[0].add_done_callback(interrupt)
        with contextlib.suppress(KeyboardInterrupt):
            pool.shutdown(wait=False, cancel_futures=True)
        assert not concurrent.futures.wait(queued, timeout=60).not_done  # a detector of a hang, not a timing
    finally:
        gate.touch()
        closer = threading.Thread(target=pool.shutdown)
        closer.start()
        closer.join(120)  # a detector of a hang, not a timing
        hung = closer.is_alive()
    assert not hung, "shutdown(wait=True) waited for calls that were never counted out"


def test_a_stop_from_a_users_thread_whose_done_callback_shuts_down_does_not_hang(netns: str, tmp_path: Path) -> None:
    """A user's own thread cancels queued calls; one's done-callback calls ``shutdown(wait=True)``.

    Broke: outside the main thread the cancelling loop ran in the caller's
    thread, not marked as the pool's, so the callback's ``shutdown()`` waited
    for the queued calls that very loop had yet to count out: for ever.
    """
    started, gate = tmp_path / "started", tmp_path / "gate"
    pool, hung = Pool(), False
    try:
        pool.submit(netns, started_then_wait, str(started), str(gate), "ran")
        assert wait_for(started.exists)
        queued = [pool.submit(netns, pid) for _ in range(3)]
        queued[0].add_done_callback(lambda _: pool.shutdown(wait=True))
        stopper = threading.Thread(target=pool.shutdown, kwargs={"wait": False, "cancel_futures": True})
        stopper.start()
        stopper.join(60)  # a detector of a hang, not a timing
        hung = stopper.is_alive()
        assert not hung, "the done-callback's shutdown(wait=True) waited for calls its own stop had to count out"
        assert all(future.cancelled() for future in queued)
    finally:
        gate.touch()
        pool.shutdown(wait=not hung)


def test_a_done_callback_of_one_pool_that_shuts_down_another_still_waits_for_the_other(
    make_netns: Callable[[], str], tmp_path: Path
) -> None:
    """While pool A cancels its queue, a done-callback calls ``B.shutdown(wait=True)``: that waits for B's calls.

    Broke (found by helper-18): being a pool's thread was one flag shared by
    every pool, so B's ``shutdown(wait=True)`` returned at once, B's call
    still running.
    """
    a_ns, b_ns = (f"/run/netns/{make_netns()}" for _ in range(2))
    a_started, a_gate, b_started, b_gate = (tmp_path / name for name in ("a", "a-gate", "b", "b-gate"))
    seen: list[bool] = []
    a, b = Pool(), Pool()
    try:
        a.submit(a_ns, started_then_wait, str(a_started), str(a_gate), "ran")
        running_b = b.submit(b_ns, started_then_wait, str(b_started), str(b_gate), "ran")
        assert wait_for(a_started.exists) and wait_for(b_started.exists)
        queued = a.submit(a_ns, pid)

        def shut_b(_: object) -> None:
            b.shutdown(wait=True)
            seen.append(running_b.done())

        queued.add_done_callback(shut_b)
        stopper = threading.Thread(target=a.shutdown, kwargs={"wait": False, "cancel_futures": True})
        stopper.start()
        assert wait_for(lambda: b._closing)  # the callback is in B's shutdown(): only now may B's call end
        b_gate.touch()
        stopper.join(60)  # a detector of a hang, not a timing
        assert seen == [True]
    finally:
        a_gate.touch()
        b_gate.touch()
        a.shutdown()
        b.shutdown()


def test_two_pools_whose_done_callbacks_shut_each_other_down_do_not_hang(make_netns: Callable[[], str]) -> None:
    """A's done-callback shuts B down, B's shuts A down, both at once, each with ``wait=True``.

    Broke (found by helper-19): each waited for the other's drain threads,
    one of them the thread running the other callback: for ever.
    """
    a_ns, b_ns = (f"/run/netns/{make_netns()}" for _ in range(2))
    a, b = Pool(), Pool()
    both_in = threading.Barrier(2, timeout=60)
    done: list[str] = []

    def shut(other: Pool, tag: str) -> Callable[[object], None]:
        def callback(_: object) -> None:
            both_in.wait()
            other.shutdown(wait=True)
            done.append(tag)

        return callback

    try:
        a.submit(a_ns, pid).add_done_callback(shut(b, "a shut b"))
        b.submit(b_ns, pid).add_done_callback(shut(a, "b shut a"))
        assert wait_for(lambda: len(done) == 2, timeout=60), done  # a detector of a hang, not a timing
    finally:
        both_in.abort()
        for pool in (a, b):
            pool.shutdown(wait=False)


def test_a_handler_that_shuts_down_just_after_a_call_is_counted_gets_a_typed_error(netns: str) -> None:
    """A handler runs after any C call: here, after ``submit()`` counts its call in, it shuts the pool down.

    Broke (593eb5d, found by helper-17): the call was counted in under the
    pool's state lock, so the handler's ``shutdown()`` waited for that lock,
    held by its own thread, for ever.
    """

    class HandlerAfterAdd(set):  # type: ignore[type-arg]
        def add(self, call: object) -> None:
            super().add(call)
            pool.shutdown(wait=False)  # what a handler landing right after the add would do

    pool = Pool()
    pool.run(netns, pid)
    pool._calls = HandlerAfterAdd()
    with pytest.raises(PoolClosedError):
        pool.submit(netns, pid)
    pool.shutdown()


def _raise_keyboardinterrupt(_: object) -> None:
    raise KeyboardInterrupt


def test_kill_workers_kills_even_when_a_done_callback_raises_keyboardinterrupt(netns: str, tmp_path: Path) -> None:
    """``kill_workers()`` cancels a queued call whose done-callback raises, then still kills the workers.

    Broke (found by helper-17): the callback's KeyboardInterrupt left
    ``kill_workers()`` before any worker was signalled; the running call
    went on for ever.
    """
    pool = Pool()
    running = pool.submit(netns, started_then_block, str(tmp_path / "started"))
    wait_started(tmp_path / "started")
    queued = pool.submit(netns, pid)
    queued.add_done_callback(_raise_keyboardinterrupt)
    with contextlib.suppress(KeyboardInterrupt):
        pool.kill_workers()
    assert isinstance(running.exception(timeout=60), WorkerCrashedError)
    pool.shutdown()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # reported, by design
def test_a_done_callback_that_raises_keyboardinterrupt_does_not_end_the_namespaces_drain(netns: str) -> None:
    """A call ends normally; its done-callback raises KeyboardInterrupt in the drain thread.

    Broke (found by helper-17): the exception ended the drain thread with
    the namespace's drain still counted, so no later call to that namespace
    ever ran.
    """
    with Pool() as pool:
        first = pool.submit(netns, pid)
        first.add_done_callback(_raise_keyboardinterrupt)
        worker = first.result(timeout=60)
        assert pool.submit(netns, pid).result(timeout=60) == worker


# -- pool.executor(target) ----------------------------------------------------------


def twice(x: int) -> int:
    return 2 * x


def add(x: int, y: int) -> int:
    return x + y


def test_executor_submit_map_and_shutdown(pool: Pool, netns: str, tmp_path: Path) -> None:
    inside = pool.run(netns, my_netns)
    executor = pool.executor(netns)
    assert isinstance(executor, concurrent.futures.Executor)
    assert executor.submit(my_netns).result(timeout=60) == inside
    assert executor.submit(add, 1, y=2).result(timeout=60) == 3
    assert list(executor.map(add, range(10), range(10, 30))) == [2 * i + 10 for i in range(10)]
    assert list(executor.map(twice, range(7), buffersize=2, timeout=60)) == [2 * i for i in range(7)]
    # shutdown(cancel_futures=True): the call that runs finishes, the queued one is cancelled
    gate = tmp_path / "gate"
    running = executor.submit(started_then_wait, str(tmp_path / "started"), str(gate), "ran")
    assert wait_for((tmp_path / "started").exists)
    queued = executor.submit(twice, 1)
    closer = threading.Thread(target=executor.shutdown, kwargs={"cancel_futures": True})
    closer.start()
    assert wait_for(queued.cancelled)
    gate.touch()
    closer.join(60)
    assert running.result(timeout=0) == "ran"
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(twice, 1)
    assert pool.run(netns, my_netns) == inside  # the pool is still up
    with pool.executor(netns) as other:
        assert other.submit(twice, 4).result(timeout=60) == 8


def test_executor_map_buffersize(pool: Pool, netns: str) -> None:
    executor = pool.executor(netns)
    pulled = 0

    def items() -> Iterator[int]:
        nonlocal pulled
        for i in range(10):
            pulled += 1
            yield i

    results = executor.map(twice, items(), buffersize=3)
    assert pulled == 3  # submitted at once, before the first result is asked for
    for taken, result in enumerate(results, 1):
        assert result == 2 * (taken - 1)
        assert pulled - taken <= 3
    with pytest.raises(TypeError):
        executor.map(twice, [1], buffersize=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="buffersize"):
        executor.map(twice, [1], buffersize=0)


def test_executor_map_timeout(pool: Pool, netns: str, tmp_path: Path) -> None:
    executor = pool.executor(netns)
    results = executor.map(wait_for_file, [str(tmp_path / "gate")], ["x"], timeout=0.01)
    with pytest.raises(concurrent.futures.TimeoutError):  # the builtin TimeoutError from 3.11 on
        next(results)
    (tmp_path / "gate").touch()


def test_executor_with_run_in_executor(pool: Pool, netns: str) -> None:
    executor = pool.executor(netns)

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        return await asyncio.gather(*(loop.run_in_executor(executor, my_netns) for _ in range(3)))

    assert asyncio.run(main()) == [pool.run(netns, my_netns)] * 3


def test_executor_resolves_the_target_at_each_call(pool: Pool, make_netns: Callable[[], str]) -> None:
    name = make_netns()
    executor = pool.executor(f"/run/netns/{name}")
    first = executor.submit(my_netns).result(timeout=60)
    ip("netns", "del", name)
    subprocess.run(["ip", "netns", "add", name], check=True)
    assert executor.submit(my_netns).result(timeout=60) != first


def test_executor_of_a_pool_view_keeps_its_timeout(pool: Pool, netns: str, tmp_path: Path) -> None:
    executor = pool.options(timeout=0.2).executor(netns)
    with pytest.raises(nsworkers.WorkerTimeoutError):
        executor.submit(wait_for_file, str(tmp_path / "never"), "1").result(timeout=60)


def test_kill_workers_stops_a_worker_in_its_initializer(make_netns: Callable[[], str], tmp_path: Path) -> None:
    """A worker still running the initializer is one of "every worker": killed now, its call fails."""
    marker = tmp_path / "started"
    before = _children()
    pool = Pool(initializer=block_on_first_worker, initargs=(str(marker),))
    try:
        future = pool.submit(f"/run/netns/{make_netns()}", pid)
        first = wait_started(marker)
        pool.kill_workers()
        assert wait_for(lambda: dead(first))
        with pytest.raises(WorkerStartError, match=r"kill_workers\(\)"):
            future.result(timeout=60)
    finally:
        pool.kill_workers()
        pool.shutdown()
    assert wait_for(lambda: not (_children() - before))

"""The scheduler's policy, driven with plain calls: no process, no thread, no clock."""

from __future__ import annotations

import pytest

from nsworkers import PoolClosedError, WorkerTimeoutError
from nsworkers._scheduler import IDLE, Reservation, Scheduler, Ticket, Worker
from nsworkers._target import Key

A: Key = ((1, 1),)
B: Key = ((1, 2),)
C: Key = ((1, 3),)
_pids = iter(range(1000, 10**6))


def start(sched: Scheduler, key: Key) -> Worker:
    """Ask for a worker of *key*, which must come as room to start one; start it."""
    got, evicted = sched.try_acquire(key, str(key))
    assert isinstance(got, Reservation) and not evicted
    worker = Worker(next(_pids), key, str(key))
    sched.added(got, worker)
    return worker


def test_idle_worker_is_reused() -> None:
    sched = Scheduler(max_workers=4, per_namespace=1)
    worker = start(sched, A)
    assert sched.release(worker, healthy=True) is False
    assert worker.state == IDLE
    assert sched.take_idle(A) is worker
    assert sched.take_idle(A) is None  # busy again


def test_per_namespace_limit_makes_a_ticket_granted_the_released_worker() -> None:
    sched = Scheduler(max_workers=4, per_namespace=1)
    worker = start(sched, A)
    ticket, evicted = sched.try_acquire(A, "a")
    assert isinstance(ticket, Ticket) and not evicted
    sched.release(worker, healthy=True)
    assert ticket.granted is worker  # handed over directly, never idle in between
    assert sched.take_idle(A) is None


def test_lru_idle_worker_is_evicted_at_the_cap() -> None:
    sched = Scheduler(max_workers=2, per_namespace=1)
    a, b = start(sched, A), start(sched, B)
    sched.release(a, True)
    sched.release(b, True)
    got, evicted = sched.try_acquire(C, "c")
    assert isinstance(got, Reservation)
    assert evicted == [a]  # least recently used first
    assert sched.take_idle(A) is None and sched.take_idle(B) is b


def test_a_freed_worker_goes_to_the_starved_caller_that_can_use_it() -> None:
    # T's worker is busy with a second caller waiting for it; S's worker is busy; U's caller
    # is starved (the pool is full). When S's call ends, U's caller gets the room: S's idle
    # worker is evicted for it. T's waiter could do nothing with it.
    sched = Scheduler(max_workers=2, per_namespace=1)
    t_worker, s_worker = start(sched, A), start(sched, B)
    t_waiter, _ = sched.try_acquire(A, "t")
    u_waiter, _ = sched.try_acquire(C, "u")
    assert isinstance(t_waiter, Ticket) and isinstance(u_waiter, Ticket)
    assert sched.release(s_worker, healthy=True) is True  # the pool must stop it
    assert isinstance(u_waiter.granted, Reservation)
    assert t_waiter.granted is None
    sched.release(t_worker, healthy=True)
    assert t_waiter.granted is t_worker


def test_an_unhealthy_worker_frees_room_for_a_waiter() -> None:
    sched = Scheduler(max_workers=1, per_namespace=1)
    worker = start(sched, A)
    ticket, _ = sched.try_acquire(B, "b")
    assert isinstance(ticket, Ticket)
    assert sched.release(worker, healthy=False) is False  # already killed by the pool
    assert isinstance(ticket.granted, Reservation)
    assert sched.total == 1


def test_a_failed_start_gives_the_room_to_the_next_waiter() -> None:
    sched = Scheduler(max_workers=1, per_namespace=1)
    got, _ = sched.try_acquire(A, "a")
    assert isinstance(got, Reservation)
    ticket, _ = sched.try_acquire(B, "b")
    sched.cancelled(got)
    assert isinstance(ticket, Ticket) and isinstance(ticket.granted, Reservation)


def test_a_waiter_that_gave_up_is_skipped() -> None:
    sched = Scheduler(max_workers=4, per_namespace=1)
    worker = start(sched, A)
    first, _ = sched.try_acquire(A, "first")
    second, _ = sched.try_acquire(A, "second")
    assert isinstance(first, Ticket) and isinstance(second, Ticket)
    with pytest.raises(WorkerTimeoutError):
        sched.wait(first, deadline=0.0)  # its deadline passed before any worker was free
    sched.release(worker, True)
    assert first.granted is None and second.granted is worker
    assert sched.wait(second, deadline=0.0) is worker  # granted: taken even at the deadline


def test_retired_workers_are_stopped_and_expiry_is_oldest_first() -> None:
    sched = Scheduler(max_workers=4, per_namespace=1)
    a, b = start(sched, A), start(sched, B)
    assert sched.release(a, healthy=True, retire=True) is True
    sched.release(b, True)
    b.last_used = 100.0
    expired, wait = sched.expire(idle_timeout=10.0, now=105.0)
    assert expired == [] and wait == 5.0
    expired, wait = sched.expire(idle_timeout=10.0, now=110.0)
    assert expired == [b] and wait == 10.0
    assert sched.total == 0


def test_close_wakes_every_waiter_with_a_typed_error() -> None:
    sched = Scheduler(max_workers=1, per_namespace=1)
    worker = start(sched, A)
    ticket, _ = sched.try_acquire(B, "b")
    assert isinstance(ticket, Ticket)
    assert sched.close() == [worker]
    with pytest.raises(PoolClosedError):
        sched.wait(ticket, deadline=None)
    with pytest.raises(PoolClosedError):
        sched.try_acquire(A, "a")

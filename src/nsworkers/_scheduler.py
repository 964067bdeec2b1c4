"""Which worker serves a call: slots per namespace, the idle list, LRU eviction, and waiting callers.

The scheduler does no I/O and starts no process. A caller asks it for a
worker of a namespace key and gets one of three answers: an idle
:class:`Worker` (now busy), a :class:`Reservation` (room to start one, which
the caller fills with :meth:`Scheduler.added` or gives back with
:meth:`Scheduler.cancelled`), or a :class:`Ticket` to wait on. A freed worker
or freed room is *handed* to the oldest ticket that can use it -- one
waiter woken per event, never a herd -- so the policy is testable without
threads or clocks (``tests/test_scheduler.py`` drives it with plain calls).

Policy:

* a namespace gets at most ``per_namespace`` workers, the pool ``max_workers``;
* at the cap, the least recently used idle worker of another namespace is
  evicted to make room;
* a worker released idle goes first to a caller waiting for its namespace,
  else it is evicted for the oldest caller starved of room, else it idles;
* idle workers past ``idle_timeout`` are expired oldest first.

Every method takes the scheduler's lock for a few dict operations and never
blocks under it; :meth:`wait` waits on the ticket's gate, holding no lock.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any

from ._sys import Gate
from ._target import Key
from .errors import PoolClosedError, WorkerTimeoutError

IDLE = "idle"
BUSY = "busy"


class Worker:
    """The scheduler's view of one worker process; ``conn`` is whatever the pool talks to it through."""

    __slots__ = ("calls", "conn", "key", "label", "last_used", "pid", "slot", "started", "state")

    def __init__(self, pid: int, key: Key, label: str, conn: Any = None) -> None:
        self.pid = pid
        self.key = key
        self.label = label
        self.conn = conn
        self.state = BUSY
        self.calls = 0
        self.started = self.last_used = time.monotonic()
        self.slot: _Slot | None = None

    def __repr__(self) -> str:
        return f"<Worker {self.pid} {self.state} {self.label}>"


class Reservation:
    """Room for one more worker of a namespace: start it, then :meth:`Scheduler.added` (or ``cancelled``)."""

    __slots__ = ("slot",)

    def __init__(self, slot: _Slot) -> None:
        self.slot = slot


class Abandoned(Exception):
    """The ticket's caller gave up (:meth:`Scheduler.abandon`): its wait ends, the ticket is withdrawn."""


class Ticket:
    """A caller waiting for a worker of ``slot`` (or for room to start one)."""

    __slots__ = ("abandoned", "gate", "granted", "slot")

    def __init__(self, slot: _Slot) -> None:
        self.slot = slot
        self.gate = Gate()  # opened when granted (a Condition's wait is not safe against signals: see Gate)
        self.granted: Worker | Reservation | PoolClosedError | None = None
        self.abandoned = False


class _Slot:
    """Everything the scheduler keeps for one namespace identity."""

    __slots__ = ("idle", "key", "label", "spawning", "tickets", "workers")

    def __init__(self, key: Key, label: str) -> None:
        self.key = key
        self.label = label
        self.workers: list[Worker] = []
        self.idle: list[Worker] = []  # most recently used last
        self.spawning = 0
        self.tickets: collections.deque[Ticket] = collections.deque()

    def has_room(self, per_namespace: int) -> bool:
        return len(self.workers) + self.spawning < per_namespace

    def unused(self) -> bool:
        return not (self.workers or self.spawning or self.tickets)


class Scheduler:
    """Slots, the idle LRU and the waiting callers of one pool (see the module docstring)."""

    def __init__(self, max_workers: int, per_namespace: int) -> None:
        self.max_workers = max_workers
        self.per_namespace = per_namespace
        self.lock = threading.Lock()
        self._slots: dict[Key, _Slot] = {}
        self._lru: collections.OrderedDict[Worker, None] = collections.OrderedDict()  # idle workers, oldest first
        self._waiting: collections.deque[Ticket] = collections.deque()  # every ticket, oldest first
        self.total = 0  # live and starting workers
        self.closed = False

    # -- asking for a worker --------------------------------------------------

    def try_acquire(self, key: Key, label: str) -> tuple[Worker | Reservation | Ticket, list[Worker]]:
        """An idle worker, room to start one, or a ticket to wait on; and idle workers evicted for room (stop them)."""
        with self.lock:
            if self.closed:
                raise PoolClosedError("the pool is shut down")
            slot = self._slots.get(key)
            if slot is None:
                slot = self._slots[key] = _Slot(key, label)
            if slot.idle:
                return self._take_idle_locked(slot), []
            evicted: list[Worker] = []
            if slot.has_room(self.per_namespace):
                if self.total >= self.max_workers and self._lru:
                    victim = next(iter(self._lru))
                    self._remove_locked(victim)
                    evicted.append(victim)
                if self.total < self.max_workers:
                    return self._reserve_locked(slot), evicted
            ticket = Ticket(slot)
            slot.tickets.append(ticket)
            self._waiting.append(ticket)
            return ticket, evicted

    def take_idle(self, key: Key) -> Worker | None:
        """An idle worker of *key*, now busy, or None (the hot path: one lock round)."""
        with self.lock:
            slot = self._slots.get(key)
            if slot is None or not slot.idle or self.closed:
                return None
            return self._take_idle_locked(slot)

    def wait(self, ticket: Ticket, deadline: float | None) -> Worker | Reservation:
        """Wait for *ticket* to be granted; WorkerTimeoutError at *deadline*, Abandoned after :meth:`abandon`.

        Either way the ticket is then withdrawn (what it was granted meanwhile is passed on).
        """
        try:
            while True:
                with self.lock:
                    granted = ticket.granted
                    if granted is not None:
                        break
                if ticket.abandoned:
                    raise Abandoned
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise WorkerTimeoutError(f"no worker for {ticket.slot.label} became free in time")
                ticket.gate.wait(remaining)  # holds no lock
        except BaseException:
            with self.lock:
                self._withdraw_locked(ticket)
            raise
        if isinstance(granted, PoolClosedError):
            raise granted
        return granted

    @staticmethod
    def abandon(ticket: Ticket) -> None:
        """From any thread (no lock taken): end *ticket*'s wait in :class:`Abandoned` (unless granted first)."""
        ticket.abandoned = True
        ticket.gate.set()

    def _withdraw_locked(self, ticket: Ticket) -> None:
        """A waiter gave up: forget its ticket, and pass on whatever it was granted meanwhile."""
        if ticket in ticket.slot.tickets:
            ticket.slot.tickets.remove(ticket)
        if ticket in self._waiting:
            self._waiting.remove(ticket)
        granted, ticket.granted = ticket.granted, None
        if isinstance(granted, Worker):
            self._idle_or_hand_on_locked(granted)
        elif isinstance(granted, Reservation):
            granted.slot.spawning -= 1
            self.total -= 1
            self._grant_room_locked()
        self._drop_if_unused_locked(ticket.slot)

    # -- filling a reservation -------------------------------------------------

    def added(self, reservation: Reservation, worker: Worker) -> None:
        """The reserved worker started: it is busy serving its starter. PoolClosedError if the pool closed meanwhile."""
        with self.lock:
            if self.closed:
                raise PoolClosedError("the pool was shut down while the worker started")
            slot = reservation.slot
            slot.spawning -= 1
            slot.workers.append(worker)
            worker.slot = slot
            worker.state = BUSY

    def cancelled(self, reservation: Reservation) -> None:
        """The reserved worker could not be started: the room goes to the next waiter."""
        with self.lock:
            reservation.slot.spawning -= 1
            self.total -= 1
            self._grant_room_locked()
            self._drop_if_unused_locked(reservation.slot)

    # -- giving a worker back ------------------------------------------------

    def release(self, worker: Worker, healthy: bool, retire: bool = False) -> bool:
        """A call on *worker* ended. True if the pool must now stop it (*retire*, or evicted for a starved caller).

        An unhealthy worker is dropped (the pool already killed it); a
        healthy one goes to a waiter of its namespace, or is evicted for the
        oldest caller starved of room, or idles.
        """
        with self.lock:
            worker.last_used = time.monotonic()
            if not healthy or retire or self.closed:
                self._remove_locked(worker)
                self._grant_room_locked()
                return healthy
            return self._idle_or_hand_on_locked(worker)

    def _idle_or_hand_on_locked(self, worker: Worker) -> bool:
        slot = worker.slot
        assert slot is not None
        if slot.tickets:
            ticket = slot.tickets.popleft()
            self._waiting.remove(ticket)
            worker.state = BUSY
            self._grant_locked(ticket, worker)
            return False
        if self._waiting and any(t.slot.has_room(self.per_namespace) for t in self._waiting):
            self._remove_locked(worker)  # evicted: its room serves a starved caller
            self._grant_room_locked()
            return True
        worker.state = IDLE
        slot.idle.append(worker)
        self._lru[worker] = None
        return False

    def remove(self, worker: Worker) -> None:
        """Forget *worker* (it died or was stopped outside a call)."""
        with self.lock:
            self._remove_locked(worker)
            self._grant_room_locked()

    # -- idle expiry and shutdown --------------------------------------------

    def expire(self, idle_timeout: float, now: float) -> tuple[list[Worker], float]:
        """Remove workers idle for *idle_timeout* at *now* (stop them); and seconds until the next expires."""
        expired = []
        with self.lock:
            for worker in self._lru:
                if now - worker.last_used < idle_timeout:
                    break
                expired.append(worker)
            for worker in expired:
                self._remove_locked(worker)
            if expired:
                self._grant_room_locked()
            oldest = next(iter(self._lru), None)
        wait = idle_timeout if oldest is None else oldest.last_used + idle_timeout - now
        return expired, max(wait, 0.0)

    def close(self, each: Callable[[Worker], None] | None = None) -> list[Worker]:
        """No more workers: every waiter gets PoolClosedError; returns every worker (stop them).

        *each* is called with every worker under the lock: before any caller
        can release its worker (and close its channel).
        """
        with self.lock:
            self.closed = True
            workers = [w for slot in self._slots.values() for w in slot.workers]
            for worker in workers:
                if each is not None:
                    each(worker)
                self._remove_locked(worker)
            for ticket in list(self._waiting):
                ticket.slot.tickets.clear()
                self._grant_locked(ticket, PoolClosedError("the pool is shut down"))
            self._waiting.clear()
            return workers

    def workers(self) -> list[Worker]:
        with self.lock:
            return [w for slot in self._slots.values() for w in slot.workers]

    # -- internals (under the lock) -------------------------------------------

    def _take_idle_locked(self, slot: _Slot) -> Worker:
        worker = slot.idle.pop()
        del self._lru[worker]
        worker.state = BUSY
        return worker

    def _reserve_locked(self, slot: _Slot) -> Reservation:
        slot.spawning += 1
        self.total += 1
        return Reservation(slot)

    def _grant_locked(self, ticket: Ticket, grant: Worker | Reservation | PoolClosedError) -> None:
        ticket.granted = grant
        ticket.gate.set()

    def _grant_room_locked(self) -> None:
        """Hand free room to the oldest waiters whose namespace can use it."""
        if self.closed:
            return
        for ticket in list(self._waiting):
            if self.total >= self.max_workers:
                return
            if ticket.slot.has_room(self.per_namespace):
                ticket.slot.tickets.remove(ticket)
                self._waiting.remove(ticket)
                self._grant_locked(ticket, self._reserve_locked(ticket.slot))

    def _remove_locked(self, worker: Worker) -> None:
        self._lru.pop(worker, None)
        slot = worker.slot
        if slot is None:
            return
        if worker in slot.idle:
            slot.idle.remove(worker)
        if worker in slot.workers:
            slot.workers.remove(worker)
            self.total -= 1
        self._drop_if_unused_locked(slot)

    def _drop_if_unused_locked(self, slot: _Slot) -> None:
        if slot.unused() and self._slots.get(slot.key) is slot:
            del self._slots[slot.key]

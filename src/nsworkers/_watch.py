"""One merged stream of network change events from many namespaces.

Each watched namespace has a worker that subscribed to the rtnetlink
multicast groups (:func:`nsworkers.netlink.watch_events`) and is long-polled
by the caller: one call in flight per namespace, so events stay in kernel
order per namespace. Namespaces that appear join the stream (when watching
every namespace); a namespace whose path no longer leads to it, or whose
worker fails, leaves it with one final ``"left"`` event.

A namespace is one kernel namespace (its inode), whatever paths lead to
it: it joins once and leaves once. The stream never follows nsworkers'
own workers as namespaces (see :func:`nsworkers.network_namespaces`): a
worker still in a deleted namespace would otherwise bring it back.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Generator, Iterable, Sequence
from concurrent.futures import Future
from queue import Empty, SimpleQueue
from typing import Any

from ._namespace import Namespace
from ._pool import Pool
from .errors import NotANamespaceError

__all__ = ("watch",)

Event = dict[str, Any]


def watch(
    namespaces: Iterable[str] | None = None,
    what: Sequence[str] = ("links", "addresses", "routes", "neighbours"),
    *,
    pool: Pool | None = None,
    poll: float = 1.0,
    rescan: float = 2.0,
    duration: float | None = None,
) -> Generator[Event, None, None]:
    """Yield change events from every given namespace (every network namespace if None), as they happen.

    Events are ``{"namespace", "name", "id", "event", "kind", "record"}``
    with ``event`` ``"new"``/``"del"`` and ``record`` shaped like ``ip -j``;
    ``"joined"`` and ``"left"`` events mark namespaces entering and leaving
    the stream (``"left"`` has a ``"reason"``, and an ``"error"`` when a
    failure, not the namespace's deletion, ended it). A target that cannot
    be watched at all is one ``"error"`` event. Runs until the caller stops
    iterating, every given namespace has left, or *duration* seconds have
    passed (events or not; the namespaces given are all joined or reported
    first, however long that takes).
    """
    from . import netlink
    from ._inspect import _name_of, network_namespaces

    sections = tuple(what)
    unknown = [w for w in sections if w not in netlink._events.GROUPS]
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}; choose from {sorted(netlink._events.GROUPS)}")
    if duration is not None and not duration > 0:
        raise ValueError(f"duration must be a positive number of seconds, got {duration!r}")
    end = None if duration is None else time.monotonic() + duration
    everything = namespaces is None
    own = pool is None
    if pool is None:
        pool = Pool(max_workers=4096, idle_timeout=None, preload=("nsworkers.netlink",))
    done: SimpleQueue[tuple[str, Future[Any]]] = SimpleQueue()
    watched: dict[str, Namespace] = {}  # unique id -> the open namespace (its .path is the path it joined by)
    left: set[str] = set()  # unique ids that left: never rejoin while the kernel still has them
    failed: set[str] = set()  # paths that could not be joined (reported once)

    def expired() -> bool:
        return end is not None and time.monotonic() >= end

    def submit(unique: str) -> None:
        future = pool.submit(watched[unique], netlink.watch_events, sections, poll)
        future.add_done_callback(functools.partial(_report, done, unique))

    def join(paths: Iterable[str]) -> Generator[Event, None, None]:
        for path in paths:  # all of them, even past the deadline: each target is answered for
            if path in failed:
                continue
            try:
                ns = Namespace.open(path, "net")
            except Exception as exc:
                if everything and isinstance(exc, (FileNotFoundError, NotANamespaceError)):
                    continue  # gone between the scan and now (its path now leads to a plain file): nothing failed
                failed.add(path)
                yield {"namespace": path, "name": _name_of(path), "event": "error", "error": str(exc)}
                continue
            unique = ns.unique_id
            if unique in watched or unique in left:
                ns.close()  # another path to a namespace already in (or done with) the stream
                continue
            try:
                pool.run(ns, netlink.watch_events, sections, 0)  # subscribe before reporting "joined"
            except Exception as exc:
                ns.close()
                failed.add(path)
                yield {"namespace": path, "name": _name_of(path), "event": "error", "error": str(exc)}
                continue
            watched[unique] = ns
            yield {"namespace": path, "name": _name_of(path), "id": unique, "event": "joined"}
            submit(unique)

    def rescan_all() -> Generator[Event, None, None]:
        paths = network_namespaces()
        alive = set()
        for path in paths:
            try:
                alive.add(f"net:[{os.stat(path).st_ino}]")
            except OSError:
                continue
        left.intersection_update(alive)  # a freed inode may come back as a new namespace
        yield from join(paths)

    def leave(unique: str, error: BaseException | None) -> Event:
        ns = watched.pop(unique)
        left.add(unique)
        event = {"namespace": ns.path, "name": _name_of(ns.path), "id": unique, "event": "left"}
        if error is not None:
            event.update(reason=f"{type(error).__name__}: {error}", error=str(error))
        else:
            event["reason"] = "namespace gone"
        if own:  # its worker would keep the namespace alive: end it, then let go of our fd
            pool.submit(ns, os._exit, 0).add_done_callback(lambda _: ns.close())
        else:  # the caller's pool: its idle_timeout decides
            ns.close()
        return event

    try:
        yield from join(network_namespaces() if everything else list(namespaces or ()))
        next_scan = time.monotonic() + rescan
        while (watched or everything) and not expired():
            wait = next_scan - time.monotonic()
            if end is not None:
                wait = min(wait, end - time.monotonic())
            try:
                unique, future = done.get(timeout=max(0.0, wait))
            except Empty:
                unique = ""
            if unique:
                ns = watched[unique]
                base = {"namespace": ns.path, "name": _name_of(ns.path), "id": unique}
                error = future.exception()
                if error is None:
                    for event in future.result():
                        yield {**base, **event}
                if error is not None or not _still_there(ns):
                    yield leave(unique, error)
                else:
                    submit(unique)
            if everything and time.monotonic() >= next_scan and not expired():
                # a namespace that went away leaves when its current long-poll returns
                yield from rescan_all()
                next_scan = time.monotonic() + rescan
    finally:
        if own:
            pool.shutdown(wait=False, cancel_futures=True)
        for ns in watched.values():
            ns.close()


def _still_there(ns: Namespace) -> bool:
    """The path it was joined by still leads to this namespace."""
    try:
        st = os.stat(ns.path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == ns.id


def _report(done: SimpleQueue[tuple[str, Future[Any]]], unique: str, future: Future[Any]) -> None:
    done.put((unique, future))

"""One merged stream of network change events from many namespaces.

Each watched namespace has a worker that subscribed to the rtnetlink
multicast groups (:func:`nsworkers.netlink.watch_events`) and is long-polled
by the caller: one call in flight per namespace, so events stay in kernel
order per namespace. Namespaces that appear join the stream (when watching
every namespace); a namespace whose path no longer leads to it, or whose
worker fails, leaves it with a final ``"left"`` event.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Generator, Iterable, Sequence
from concurrent.futures import Future
from queue import Empty, SimpleQueue
from typing import Any

from ._pool import Pool

__all__ = ("watch",)

Event = dict[str, Any]


def watch(
    namespaces: Iterable[str] | None = None,
    what: Sequence[str] = ("links", "addresses", "routes", "neighbours"),
    *,
    pool: Pool | None = None,
    poll: float = 1.0,
    rescan: float = 2.0,
) -> Generator[Event, None, None]:
    """Yield change events from every given namespace (every network namespace if None), as they happen.

    Events are ``{"namespace", "name", "id", "event", "kind", "record"}``
    with ``event`` ``"new"``/``"del"`` and ``record`` shaped like ``ip -j``;
    ``"joined"`` and ``"left"`` events mark namespaces entering and leaving
    the stream. Runs until the caller stops iterating.
    """
    from . import netlink
    from ._inspect import _name_of, network_namespaces

    sections = tuple(what)
    unknown = [w for w in sections if w not in netlink._events.GROUPS]
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}; choose from {sorted(netlink._events.GROUPS)}")
    everything = namespaces is None
    own = pool is None
    if pool is None:
        pool = Pool(max_workers=4096, idle_timeout=None, preload=("nsworkers.netlink",))
    done: SimpleQueue[tuple[str, Future[Any]]] = SimpleQueue()
    watched: dict[str, tuple[int, str]] = {}  # path -> (inode, unique id)

    def submit(path: str, timeout: float) -> None:
        future = pool.submit(path, netlink.watch_events, sections, timeout)
        future.add_done_callback(functools.partial(_report, done, path))

    def join(paths: Iterable[str]) -> Generator[Event, None, None]:
        for path in paths:
            if path in watched:
                continue
            try:
                st = os.stat(path)
                pool.run(path, netlink.watch_events, sections, 0)  # subscribe before reporting "joined"
            except Exception as exc:
                yield {"namespace": path, "name": _name_of(path), "event": "error", "error": str(exc)}
                continue
            unique = f"net:[{st.st_ino}]"
            watched[path] = (st.st_ino, unique)
            yield {"namespace": path, "name": _name_of(path), "id": unique, "event": "joined"}
            submit(path, poll)

    def still_there(path: str) -> bool:
        try:
            return os.stat(path).st_ino == watched[path][0]
        except OSError:
            return False

    try:
        yield from join(network_namespaces() if everything else list(namespaces or ()))
        next_scan = time.monotonic() + rescan
        while watched:
            try:
                path, future = done.get(timeout=max(0.05, next_scan - time.monotonic()))
            except Empty:
                path = ""
            if path:
                unique = watched[path][1]
                base = {"namespace": path, "name": _name_of(path), "id": unique}
                error = future.exception()
                if error is None:
                    for event in future.result():
                        yield {**base, **event}
                if error is not None or not still_there(path):
                    del watched[path]
                    reason = f"{type(error).__name__}: {error}" if error is not None else "namespace gone"
                    yield {**base, "event": "left", "reason": reason}
                else:
                    submit(path, poll)
            if time.monotonic() >= next_scan:
                # a namespace that went away leaves when its current long-poll returns
                next_scan = time.monotonic() + rescan
                if everything:
                    yield from join(network_namespaces())
    finally:
        if own:
            pool.shutdown(wait=False, cancel_futures=True)


def _report(done: SimpleQueue[tuple[str, Future[Any]]], path: str, future: Future[Any]) -> None:
    done.put((path, future))

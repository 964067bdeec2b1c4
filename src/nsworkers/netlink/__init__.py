"""Network inspection functions meant to run *inside* a worker.

Each returns plain JSON-ready data exactly as iproute2 6.1 prints it with
``ip -j`` (and ``-s`` / ``-d`` through ``stats=`` / ``details=``), so jq
scripts written against ``ip -j`` carry over::

    pool.run("/run/netns/blue", nsworkers.netlink.links)                # ip -j link show
    pool.run("/run/netns/blue", nsworkers.netlink.links, stats=True)    # ip -j -s link show
    pool.run("/run/netns/blue", nsworkers.netlink.snapshot)             # links, addresses, routes

Modules, one concern each: ``_wire`` (netlink headers, attributes, dump
requests), ``_names`` (iproute2's name tables and ``/etc/iproute2``),
``_records`` and ``_linkinfo`` (message -> ``ip -j`` record, pure),
``_dumps`` (retried dumps and the sections), ``_conntrack``, ``_xfrm``,
``_events``. Every dump is retried when the kernel marks it interrupted
(``NLM_F_DUMP_INTR``), up to ``attempts`` times; a dump that stayed
interrupted is returned anyway as a :class:`Dump` whose ``interrupted`` is
true, and :func:`snapshot` lists it under ``"inconsistent"``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from ._conntrack import conntrack as conntrack
from ._conntrack import conntrack_delete as conntrack_delete
from ._dumps import DEFAULT_ATTEMPTS as DEFAULT_ATTEMPTS
from ._dumps import Dump as Dump
from ._dumps import Session
from ._dumps import addresses as addresses
from ._dumps import link as link
from ._dumps import links as links
from ._dumps import neighbours as neighbours
from ._dumps import nexthops as nexthops
from ._dumps import proxy_neighbours as proxy_neighbours
from ._dumps import routes as routes
from ._dumps import rules as rules
from ._events import watch_events as watch_events
from ._sockets import sockets as sockets
from ._xfrm import xfrm_policies as xfrm_policies
from ._xfrm import xfrm_states as xfrm_states

__all__ = (
    "DEFAULT_ATTEMPTS",
    "SECTIONS",
    "Dump",
    "addresses",
    "conntrack",
    "conntrack_delete",
    "link",
    "links",
    "neighbours",
    "nexthops",
    "proxy_neighbours",
    "routes",
    "rules",
    "snapshot",
    "sockets",
    "sysctl",
    "watch_events",
    "xfrm_policies",
    "xfrm_states",
)

Record = dict[str, Any]


def sysctl(name: str) -> str:
    """Read ``/proc/sys/<name>`` as the worker sees it (net.* values are per namespace).

    *name* may use dots (``net.ipv4.ip_forward``) or slashes.
    """
    rel = name.replace(".", "/") if "/" not in name else name
    parts = [p for p in rel.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise ValueError(f"invalid sysctl name: {name!r}")
    with open(os.path.join("/proc/sys", *parts)) as f:
        return f.read().strip()


SECTIONS: dict[str, Callable[..., list[Record]]] = {
    "links": links,
    "addresses": addresses,
    "routes": routes,
    "neighbours": neighbours,
    "proxy_neighbours": proxy_neighbours,
    "rules": rules,
    "nexthops": nexthops,
    "conntrack": conntrack,
    "xfrm_policies": xfrm_policies,
    "xfrm_states": xfrm_states,
    "sockets": sockets,
    "unix_sockets": lambda attempts=DEFAULT_ATTEMPTS: sockets(("unix",), attempts=attempts),
}

# which of snapshot()'s options each section takes
_TAKES_STATS = {"links", "addresses", "routes", "neighbours", "nexthops"}
_TAKES_DETAILS = {"links", "addresses", "routes", "rules", "nexthops"}
_TAKES_SESSION = {"links", "addresses", "routes", "neighbours", "proxy_neighbours", "rules", "nexthops"}
_TAKES_ATTEMPTS = _TAKES_SESSION | {"xfrm_policies", "xfrm_states", "sockets", "unix_sockets"}


def snapshot(
    what: Sequence[str] = ("links", "addresses", "routes"),
    attempts: int = DEFAULT_ATTEMPTS,
    *,
    stats: int = 0,
    details: int = 0,
) -> Record:
    """Several sections at once: ``{"id": "net:[...]", "links": [...], ..., "inconsistent": [...]}``.

    *what* names sections of :data:`SECTIONS`; ``"id"`` is the namespace the
    worker is in; ``"inconsistent"`` lists the sections whose dump stayed
    interrupted after *attempts*. *stats* and *details* (``ip -s`` / ``ip -d``)
    go to the sections that take them; one link dump serves every section.
    """
    unknown = [s for s in what if s not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}; choose from {sorted(SECTIONS)}")
    out: Record = {"id": os.readlink("/proc/thread-self/ns/net")}
    inconsistent = []
    session = Session(attempts)
    for section in what:
        kwargs: dict[str, Any] = {}
        if section in _TAKES_SESSION:
            kwargs["session"] = session
        elif section in _TAKES_ATTEMPTS:
            kwargs["attempts"] = attempts
        if stats and section in _TAKES_STATS:
            kwargs["stats"] = stats
        if details and section in _TAKES_DETAILS:
            kwargs["details"] = details
        result = SECTIONS[section](**kwargs)
        out[section] = list(result)
        if getattr(result, "interrupted", False):
            inconsistent.append(section)
    out["inconsistent"] = inconsistent
    return out

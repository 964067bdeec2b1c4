"""Change events: the rtnetlink multicast groups, read inside a worker (``ip monitor``)."""

from __future__ import annotations

import errno
import os
import select
from collections.abc import Sequence
from typing import Any

from . import _names, _records
from . import _wire as w
from ._dumps import Session

Record = dict[str, Any]

# include/uapi/linux/rtnetlink.h RTMGRP_*: section -> groups
GROUPS = {
    "links": 0x1,  # RTMGRP_LINK
    "neighbours": 0x4,  # RTMGRP_NEIGH
    "addresses": 0x10 | 0x100,  # RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR
    "routes": 0x40 | 0x400,  # RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE
}
# message type -> (event, kind)
KINDS = {
    w.RTM_NEWLINK: ("new", "link"),
    w.RTM_DELLINK: ("del", "link"),
    w.RTM_NEWADDR: ("new", "address"),
    w.RTM_DELADDR: ("del", "address"),
    w.RTM_NEWROUTE: ("new", "route"),
    w.RTM_DELROUTE: ("del", "route"),
    w.RTM_NEWNEIGH: ("new", "neighbour"),
    w.RTM_DELNEIGH: ("del", "neighbour"),
}


class Subscription:
    """A socket bound to some groups, and the link table that names interfaces in its events."""

    def __init__(self, mask: int) -> None:
        self.mask = mask
        self.sock = w.NetlinkSocket(w.NETLINK_ROUTE, groups=mask, rcvbuf=4 << 20)
        self.sock.sock.setblocking(False)
        self.links = _records.LinkTable(Session().links()[0])

    def close(self) -> None:
        self.sock.close()

    def event(self, kind: int, payload: bytes) -> Record | None:
        event, what = KINDS[kind]
        names = _names.Names()
        record: Record | None
        if what == "link":
            if event == "new":
                self.links.add(payload)
            record = _records.link(payload, self.links, names)
            if event == "del":
                self.links.remove(payload)
        elif what == "address":
            index, record = _records.address(payload, names)
            record["dev"] = self.links.name(index)
        elif what == "route":
            record = _records.route(payload, self.links, names)
        else:
            record = _records.neighbour(payload, self.links, names, proxy=True)
        if record is None:  # a cached clone, which ip hides too
            return None
        return {"event": event, "kind": what, "record": record}


_current: Subscription | None = None  # this worker's subscription (reopened after a fork)
_owner = 0


def watch_events(
    what: Sequence[str] = ("links", "addresses", "routes", "neighbours"), timeout: float = 1.0
) -> list[Record]:
    """Runs in a worker: the change events of this namespace since the previous call.

    The first call subscribes to the rtnetlink multicast groups of *what*
    and returns at once (``[]``); later calls block until an event arrives or
    *timeout* passes, then return everything queued, in kernel order::

        {"event": "new"|"del", "kind": "link"|"address"|"route"|"neighbour", "record": {... like ip -j ...}}

    If the kernel dropped events because the reader fell behind (ENOBUFS),
    one ``{"event": "overrun"}`` says so: a fresh snapshot is then needed.
    """
    global _current, _owner
    unknown = [s for s in what if s not in GROUPS]
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}; choose from {sorted(GROUPS)}")
    mask = 0
    for section in what:
        mask |= GROUPS[section]
    if _current is None or _current.mask != mask or _owner != os.getpid():
        if _current is not None and _owner == os.getpid():
            _current.close()
        _current = Subscription(mask)
        _owner = os.getpid()
        return []
    sub = _current
    if not select.select([sub.sock.sock], [], [], timeout)[0]:
        return []
    out: list[Record] = []
    while True:
        try:
            data = sub.sock.sock.recv(1 << 17)
        except BlockingIOError:
            return out
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:  # the kernel dropped events
                out.append({"event": "overrun"})
                continue
            raise
        for kind, _flags, _seq, payload in w.messages(data):
            if kind in KINDS:
                event = sub.event(kind, payload)
                if event is not None:
                    out.append(event)

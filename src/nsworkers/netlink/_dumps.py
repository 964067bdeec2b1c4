"""rtnetlink dumps with retry, and the public inspection functions built on them.

One ``NETLINK_ROUTE`` socket per worker process, opened on first use; every
dump is retried while the kernel flags it interrupted (``NLM_F_DUMP_INTR``:
the table changed while it was read), up to ``attempts`` times (5, like
moby's nlwrap). A dump that stayed interrupted is returned anyway as a
:class:`Dump` whose ``interrupted`` is true, with a logged warning.

What several sections share -- the socket, the link dump that names
interfaces -- travels in a :class:`Session`, passed explicitly; nothing is
kept between calls but the socket and the ``/etc/iproute2`` tables.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable
from typing import Any

from . import _names, _records
from . import _wire as w
from ._records import LinkTable, Record

DEFAULT_ATTEMPTS = 5


class Dump(list[Record]):
    """A list of records; ``interrupted`` is true if the kernel flagged every attempt inconsistent."""

    interrupted: bool = False
    attempts: int = 1


def result(records: list[Record], interrupted: bool, attempts: int) -> Dump:
    out = Dump(records)
    out.interrupted = interrupted
    out.attempts = attempts
    return out


def retry(what: str, once: Callable[[], tuple[list[Any], bool]], attempts: int) -> tuple[list[Any], bool, int]:
    """Run a dump until the kernel does not flag it interrupted, at most *attempts* times.

    Returns ``(messages, still_interrupted, attempts_used)``; a dump that
    stayed interrupted is returned anyway, with a logged warning.
    """
    if attempts < 1:
        raise ValueError("attempts must be >= 1")
    for attempt in range(1, attempts + 1):
        msgs, interrupted = once()
        if not interrupted:
            return msgs, False, attempt
    import logging  # not at import time: logging imports threading, whose at-fork hook costs every worker

    logging.getLogger("nsworkers.netlink").warning(
        "%s dump still interrupted after %d attempts; returning an inconsistent result", what, attempts
    )
    return msgs, True, attempts


class SocketHolder:
    """A worker's netlink socket of one protocol (one per process: reopened after a fork)."""

    def __init__(self, protocol: int) -> None:
        self.protocol = protocol
        self.sock: w.NetlinkSocket | None = None

    def get(self) -> w.NetlinkSocket:
        if self.sock is None or self.sock.pid != os.getpid():
            self.sock = w.NetlinkSocket(self.protocol)
        return self.sock

    def drop(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def dump(
        self, what: str, msg_type: int, body: bytes, reply_type: int, attempts: int
    ) -> tuple[list[bytes], bool, int]:
        """Payloads of the *reply_type* messages of one dump, retried (see :func:`retry`)."""

        def once() -> tuple[list[bytes], bool]:
            sock = self.get()
            try:
                msgs, interrupted = sock.dump(msg_type, body)
            except BaseException:
                self.drop()  # a half-read dump would confuse the next one
                raise
            return [payload for kind, _flags, payload in msgs if kind == reply_type], interrupted

        return retry(what, once, attempts)


_ROUTE = SocketHolder(w.NETLINK_ROUTE)


# request bodies: the fixed header of each dump (only the family and a few flags matter)
_IFINFOMSG_REQ = struct.Struct("=BxHiII")
_NDMSG_REQ = struct.Struct("=BxxxiHBB")


def _link_request(stats: bool) -> bytes:
    mask = _records.RTEXT_FILTER_VF | (0 if stats else _records.RTEXT_FILTER_SKIP_STATS)
    return _IFINFOMSG_REQ.pack(0, 0, 0, 0, 0) + w.nla(_records.IFLA_EXT_MASK, struct.pack("=I", mask))


class Session:
    """What the sections of one call share: attempts, the link dump (made once), the name tables."""

    def __init__(self, attempts: int = DEFAULT_ATTEMPTS) -> None:
        if attempts < 1:
            raise ValueError("attempts must be >= 1")
        self.attempts = attempts
        self._links: dict[bool, tuple[list[bytes], bool, int, LinkTable]] = {}
        self._nexthops: tuple[list[bytes], bool, int] | None = None

    def dump(self, what: str, msg_type: int, body: bytes, reply_type: int) -> tuple[list[bytes], bool, int]:
        """Payloads of the *reply_type* messages of one retried dump."""
        return _ROUTE.dump(what, msg_type, body, reply_type, self.attempts)

    def links(self, stats: bool = False) -> tuple[list[bytes], bool, int, LinkTable]:
        """The link dump (with statistics if asked), made once per session."""
        cached = self._links.get(stats) or (self._links.get(True) if not stats else None)
        if cached is None:
            payloads, interrupted, used = self.dump("link", w.RTM_GETLINK, _link_request(stats), w.RTM_NEWLINK)
            cached = (payloads, interrupted, used, LinkTable(payloads))
            self._links[stats] = cached
        return cached

    def nexthops(self) -> tuple[list[bytes], bool, int]:
        """The nexthop dump, made once per session (routes with details name their nexthops from it too)."""
        if self._nexthops is None:
            self._nexthops = self.dump("nexthop", w.RTM_GETNEXTHOP, bytes(8), w.RTM_NEWNEXTHOP)
        return self._nexthops


def _families(family: int | None) -> tuple[int, ...]:
    return (socket.AF_INET, socket.AF_INET6) if family is None else (family,)


# -- the sections ---------------------------------------------------------------


def links(
    attempts: int = DEFAULT_ATTEMPTS, *, stats: int = 0, details: int = 0, session: Session | None = None
) -> Dump:
    """Every interface, like ``ip -j link show`` (``-s``: *stats*, ``-d``: *details*; 2 for ``-s -s``)."""
    s = session or Session(attempts)
    payloads, interrupted, used, table = s.links(bool(stats))
    names = _names.Names()
    out = [_records.link(p, table, names, stats=int(stats), details=int(details)) for p in payloads]
    return result(out, interrupted, used)


def link(name_or_index: str | int, attempts: int = DEFAULT_ATTEMPTS, *, stats: int = 0, details: int = 0) -> Record:
    """One interface by name, alternative name or index, like ``ip -j link show dev NAME`` (a single record).

    Raises :class:`~nsworkers.errors.LinkNotFoundError` if there is none.
    """
    from ..errors import LinkNotFoundError

    by_index = isinstance(name_or_index, int) and not isinstance(name_or_index, bool)
    for rec in links(attempts, stats=stats, details=details):
        if by_index:
            if rec["ifindex"] == name_or_index:
                return rec
        elif rec["ifname"] == name_or_index or name_or_index in rec.get("altnames", ()):
            return rec
    here = os.readlink("/proc/thread-self/ns/net")
    raise LinkNotFoundError(f"no interface {name_or_index!r} in {here}")


def addresses(
    attempts: int = DEFAULT_ATTEMPTS, *, stats: int = 0, details: int = 0, session: Session | None = None
) -> Dump:
    """Interfaces with their addresses, like ``ip -j addr show`` (``addr_info`` per interface)."""
    s = session or Session(attempts)
    link_payloads, li, lu, table = s.links(bool(stats))
    addr_payloads, ai, au = s.dump("addr", w.RTM_GETADDR, bytes(8), w.RTM_NEWADDR)
    names = _names.Names()
    by_link: dict[int, list[Record]] = {}
    for payload in addr_payloads:
        index, rec = _records.address(payload, names)
        by_link.setdefault(index, []).append(rec)
    out = []
    for payload in link_payloads:
        rec = _records.link(payload, table, names, do_link=False, details=int(details))
        rec["addr_info"] = by_link.get(_records.link_index(payload), [])
        if stats:
            found = _records.link_stats(payload, int(stats))
            if found is not None:
                rec[found[0]] = found[1]
        out.append(rec)
    return result(out, li or ai, max(lu, au))


def _nexthop_table(s: Session, table: LinkTable, stats: int, details: int) -> tuple[dict[int, Record], bool, int]:
    payloads, interrupted, used = s.nexthops()
    names = _names.Names()
    out = {}
    for payload in payloads:
        rec = _records.nexthop(payload, table, names, stats=stats, details=details)
        out[rec["id"]] = rec
    return out, interrupted, used


def routes(
    family: int | None = None,
    attempts: int = DEFAULT_ATTEMPTS,
    *,
    stats: int = 0,
    details: int = 0,
    session: Session | None = None,
) -> Dump:
    """Routes of every table, IPv4 then IPv6, each like ``ip -j [-6] route show table all``.

    *family* (``socket.AF_INET`` or ``AF_INET6``) keeps one family only.
    Cached clones (``RTM_F_CLONED``) are left out, as ``ip`` does. With
    *details*, a route using a nexthop object carries it as ``nh_info``.
    """
    s = session or Session(attempts)
    _, interrupted, used, table = s.links()
    nexthops: dict[int, Record] | None = None
    if details:
        nexthops, i, u = _nexthop_table(s, table, int(stats), int(details))
        interrupted, used = interrupted or i, max(used, u)
    out: list[Record] = []
    for fam in _families(family):
        payloads, i, u = s.dump("route", w.RTM_GETROUTE, bytes([fam]) + bytes(11), w.RTM_NEWROUTE)
        interrupted, used = interrupted or i, max(used, u)
        names = _names.Names()
        for payload in payloads:
            rec = _records.route(payload, table, names, nexthops, stats=int(stats), details=int(details))
            if rec is not None:
                out.append(rec)
    return result(out, interrupted, used)


def neighbours(
    family: int | None = None,
    attempts: int = DEFAULT_ATTEMPTS,
    *,
    stats: int = 0,
    proxy: bool = False,
    session: Session | None = None,
) -> Dump:
    """ARP and NDP entries like ``ip -j neigh show`` (which hides ``NOARP`` and ``nud none`` entries).

    *proxy* lists the proxy entries instead, like ``ip -j neigh show proxy``;
    *stats* adds ``ip -s``'s ``refcnt``/``used``/``confirmed``/``updated``/``probes``.
    """
    s = session or Session(attempts)
    _, li, lu, table = s.links()
    flags = _records.NTF_PROXY if proxy else 0
    request = _NDMSG_REQ.pack(0 if family is None else family, 0, 0, flags, 0)
    payloads, i, u = s.dump("neigh", w.RTM_GETNEIGH, request, w.RTM_NEWNEIGH)
    names = _names.Names()
    out = []
    for payload in payloads:
        rec = _records.neighbour(payload, table, names, stats=int(stats), proxy=proxy)
        if rec is not None:
            out.append(rec)
    return result(out, li or i, max(lu, u))


def proxy_neighbours(attempts: int = DEFAULT_ATTEMPTS, *, session: Session | None = None) -> Dump:
    """Proxy ARP/NDP entries, like ``ip -j neigh show proxy``."""
    return neighbours(None, attempts, proxy=True, session=session)


def rules(
    family: int | None = None, attempts: int = DEFAULT_ATTEMPTS, *, details: int = 0, session: Session | None = None
) -> Dump:
    """Policy routing rules, IPv4 then IPv6, each like ``ip -j [-6] rule show``."""
    s = session or Session(attempts)
    out: list[Record] = []
    interrupted, used = False, 1
    protocols = _names.protocols()
    for fam in _families(family):
        payloads, i, u = s.dump("rule", w.RTM_GETRULE, bytes([fam]) + bytes(11), w.RTM_NEWRULE)
        interrupted, used = interrupted or i, max(used, u)
        names = _names.Names()
        out.extend(_records.rule(p, names, protocols, details=int(details)) for p in payloads)
    return result(out, interrupted, used)


def nexthops(
    attempts: int = DEFAULT_ATTEMPTS, *, stats: int = 0, details: int = 0, session: Session | None = None
) -> Dump:
    """Nexthop objects, like ``ip -j nexthop show``; *stats*: a seg6local endpoint's counters, as ``ip -s``."""
    s = session or Session(attempts)
    _, li, lu, table = s.links()
    payloads, i, u = s.nexthops()
    names = _names.Names()
    out = [_records.nexthop(p, table, names, stats=int(stats), details=int(details)) for p in payloads]
    return result(out, li or i, max(lu, u))

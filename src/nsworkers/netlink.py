"""Network inspection functions meant to run *inside* a worker.

Each returns plain JSON-ready data shaped like iproute2's ``ip -j`` output
(same keys, same value formats for the fields ``ip`` prints by default), so
jq scripts written against ``ip -j`` carry over::

    pool.run("/run/netns/blue", nsworkers.netlink.links)      # ~ ip -j link show
    pool.run("/run/netns/blue", nsworkers.netlink.snapshot)   # links, addresses, routes

They share one raw ``NETLINK_ROUTE`` socket per worker process, opened on
first use and read by a small decoder of just the attributes ``ip`` prints
(see ``_rtnl``: pyroute2's generic decoding was most of a snapshot's cost);
conntrack goes through pyroute2. Every dump is retried when the kernel marks it interrupted
(``NLM_F_DUMP_INTR``: the table changed while it was being read), up to
``attempts`` times (5, like moby's nlwrap); a dump that stayed interrupted is
returned anyway as a :class:`Dump` whose ``interrupted`` is true, a warning
is logged, and :func:`snapshot` lists it under ``"inconsistent"``.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

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
    "routes",
    "rules",
    "snapshot",
    "sysctl",
    "watch_events",
    "xfrm_policies",
    "xfrm_states",
)


DEFAULT_ATTEMPTS = 5
NLM_F_DUMP_INTR = 0x10

Record = dict[str, Any]
_M = TypeVar("_M")


class Dump(list[Record]):
    """A list of records; ``interrupted`` is true if the kernel flagged every attempt inconsistent."""

    interrupted: bool = False
    attempts: int = 1


_rtnl_sock: Any = None


def _socket() -> Any:
    """The worker's rtnetlink socket, opened on first use (and again after a fork)."""
    global _rtnl_sock
    if _rtnl_sock is None or _rtnl_sock.pid != os.getpid():
        from ._rtnl import RtnlSocket

        _rtnl_sock = RtnlSocket()
    return _rtnl_sock


def _retry(what: str, once: Callable[[], tuple[list[_M], bool]], attempts: int) -> tuple[list[_M], bool, int]:
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


def _dump(what: str, msg_type: int, family: int, attempts: int) -> tuple[list[Any], bool, int]:
    def once() -> tuple[list[Any], bool]:
        global _rtnl_sock
        sock = _socket()
        try:
            return sock.dump(msg_type, family)  # type: ignore[no-any-return]
        except BaseException:
            sock.close()  # a half-read dump would confuse the next one
            _rtnl_sock = None
            raise

    return _retry(what, once, attempts)


def _result(records: list[Record], interrupted: bool, attempts: int) -> Dump:
    out = Dump(records)
    out.interrupted = interrupted
    out.attempts = attempts
    return out


# ---------------------------------------------------------------------------
# names iproute2 prints

_IFF = [  # (flag, name) in the order iproute2 prints them
    (0x8, "LOOPBACK"),
    (0x2, "BROADCAST"),
    (0x10, "POINTOPOINT"),
    (0x1000, "MULTICAST"),
    (0x80, "NOARP"),
    (0x200, "ALLMULTI"),
    (0x100, "PROMISC"),
    (0x400, "MASTER"),
    (0x800, "SLAVE"),
    (0x4, "DEBUG"),
    (0x8000, "DYNAMIC"),
    (0x4000, "AUTOMEDIA"),
    (0x2000, "PORTSEL"),
    (0x20, "NOTRAILERS"),
    (0x1, "UP"),
    (0x10000, "LOWER_UP"),
    (0x20000, "DORMANT"),
    (0x40000, "ECHO"),
]
_IFF_UP, _IFF_RUNNING = 0x1, 0x40
_OPERSTATES = ["UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP"]
_LINKMODES = ["DEFAULT", "DORMANT"]
_ARPHRD = {
    0: "netrom",
    1: "ether",
    2: "eether",
    3: "ax25",
    4: "pronet",
    5: "chaos",
    6: "ieee802",
    7: "arcnet",
    8: "appletlk",
    15: "dlci",
    19: "atm",
    23: "metricom",
    24: "ieee1394",
    27: "eui64",
    32: "infiniband",
    256: "slip",
    257: "cslip",
    258: "slip6",
    259: "cslip6",
    260: "rsrvd",
    264: "adapt",
    270: "rose",
    271: "x25",
    272: "hwx25",
    280: "can",
    512: "ppp",
    513: "hdlc",
    516: "lapb",
    517: "ddcmp",
    518: "rawhdlc",
    519: "rawip",
    768: "ipip",
    769: "tunnel6",
    770: "frad",
    771: "skip",
    772: "loopback",
    773: "localtlk",
    774: "fddi",
    775: "bif",
    776: "sit",
    777: "ip/ddp",
    778: "gre",
    779: "pimreg",
    780: "hippi",
    781: "ash",
    782: "econet",
    783: "irda",
    784: "fcpp",
    785: "fcal",
    786: "fcpl",
    787: "fcfb0",
    800: "tr",
    801: "tr+rif",
    802: "ieee802.11",
    803: "ieee802.11/prism",
    804: "ieee802.11/radiotap",
    805: "ieee802.15.4",
    806: "ieee802.15.4/monitor",
    820: "phonet",
    821: "phonet_pipe",
    822: "caif",
    823: "ip6gre",
    824: "netlink",
    825: "6lowpan",
    826: "vsockmon",
    0xFFFE: "none",
    0xFFFF: "void",
}
_SCOPES = {0: "global", 200: "site", 253: "link", 254: "host", 255: "nowhere"}
_TABLES = {0: "unspec", 252: "compat", 253: "default", 254: "main", 255: "local"}
_PROTOS = {
    0: "unspec",
    1: "redirect",
    2: "kernel",
    3: "boot",
    4: "static",
    8: "gated",
    9: "ra",
    10: "mrt",
    11: "zebra",
    12: "bird",
    13: "dnrouted",
    14: "xorp",
    15: "ntk",
    16: "dhcp",
    17: "mrouted",
    18: "keepalived",
    42: "babel",
    99: "openr",
    186: "bgp",
    187: "isis",
    188: "ospf",
    189: "rip",
    192: "eigrp",
}
_RTN = [
    "none",
    "unicast",
    "local",
    "broadcast",
    "anycast",
    "multicast",
    "blackhole",
    "unreachable",
    "prohibit",
    "throw",
    "nat",
    "xresolve",
]
_RTNH_F = [
    (1, "dead"),
    (2, "pervasive"),
    (4, "onlink"),
    (8, "offload"),
    (16, "linkdown"),
    (32, "unresolved"),
    (64, "trap"),
]
_NUD = [
    (0x01, "INCOMPLETE"),
    (0x02, "REACHABLE"),
    (0x04, "STALE"),
    (0x08, "DELAY"),
    (0x10, "PROBE"),
    (0x20, "FAILED"),
    (0x40, "NOARP"),
    (0x80, "PERMANENT"),
]
_IFA_F = [  # (IFA_F_* bit, key), in the order ip -j prints them before "dynamic"
    (0x40, "tentative"),
    (0x20, "deprecated"),
    (0x10, "home"),
    (0x02, "nodad"),
    (0x100, "mngtmpaddr"),
    (0x200, "noprefixroute"),
    (0x400, "autojoin"),
]
_IFA_F_LATE = [(0x08, "dadfailed"), (0x04, "optimistic"), (0x800, "stable-privacy")]
_FAMILY = {socket.AF_INET: "inet", socket.AF_INET6: "inet6"}
_FR_ACT = {2: "goto", 3: "nop", 6: "blackhole", 7: "unreachable", 8: "prohibit"}
_HOST_LEN: dict[int, int] = {socket.AF_INET: 32, socket.AF_INET6: 128}


def _table_name(table: int) -> str:
    return _TABLES.get(table, str(table))


def _link_flags(flags: int, master_down: bool = False) -> list[str]:
    out = []
    if flags & _IFF_UP and not flags & _IFF_RUNNING:
        out.append("NO-CARRIER")
    flags &= ~_IFF_RUNNING
    for bit, name in _IFF:
        if flags & bit:
            out.append(name)
            flags &= ~bit
    if flags:
        out.append(f"{flags:x}")
    if master_down:
        out.append("M-DOWN")
    return out


def _attrs(msg: Any) -> dict[str, Any]:
    return {name: value for name, value in msg["attrs"]}


# ---------------------------------------------------------------------------
# links and addresses


def _link_record(msg: Any, names: dict[int, str], flags: dict[int, int], with_linkmode: bool) -> Record:
    a = _attrs(msg)
    rec: Record = {"ifindex": msg["index"]}
    iflink = a.get("IFLA_LINK")
    master_down = False
    if iflink is not None and iflink != msg["index"]:
        if iflink == 0:
            rec["link"] = None
        elif "IFLA_LINK_NETNSID" in a:
            rec["link_index"] = iflink
        else:
            rec["link"] = names.get(iflink, f"if{iflink}")
            master_down = not flags.get(iflink, 0) & _IFF_UP  # iproute2's "M-DOWN": the lower link is down
    rec["ifname"] = a.get("IFLA_IFNAME")
    rec["flags"] = _link_flags(msg["flags"], master_down)
    rec["mtu"] = a.get("IFLA_MTU")
    if "IFLA_QDISC" in a:
        rec["qdisc"] = a["IFLA_QDISC"]
    if "IFLA_MASTER" in a:
        rec["master"] = names.get(a["IFLA_MASTER"], f"if{a['IFLA_MASTER']}")
    if "IFLA_OPERSTATE" in a:
        state = a["IFLA_OPERSTATE"]
        rec["operstate"] = _OPERSTATES[state] if isinstance(state, int) and state < len(_OPERSTATES) else state
    if with_linkmode and "IFLA_LINKMODE" in a:
        mode = a["IFLA_LINKMODE"]
        rec["linkmode"] = _LINKMODES[mode] if isinstance(mode, int) and mode < len(_LINKMODES) else mode
    group = a.get("IFLA_GROUP", 0)
    rec["group"] = "default" if group == 0 else str(group)
    if "IFLA_TXQLEN" in a:
        rec["txqlen"] = a["IFLA_TXQLEN"]
    rec["link_type"] = _ARPHRD.get(msg["ifi_type"], f"[{msg['ifi_type']}]")
    if "IFLA_ADDRESS" in a:
        rec["address"] = a["IFLA_ADDRESS"]
    if "IFLA_PERM_ADDRESS" in a and a["IFLA_PERM_ADDRESS"] != a.get("IFLA_ADDRESS"):
        rec["permaddr"] = a["IFLA_PERM_ADDRESS"]
    if "IFLA_BROADCAST" in a:
        rec["link_pointtopoint" if msg["flags"] & 0x10 else "broadcast"] = a["IFLA_BROADCAST"]
    if "IFLA_LINK_NETNSID" in a:
        rec["link_netnsid"] = a["IFLA_LINK_NETNSID"]
    return rec


_link_cache: tuple[list[Any], bool, int] | None = None  # set for the length of one snapshot()


def _link_msgs(attempts: int) -> tuple[list[Any], bool, int]:
    if _link_cache is not None:
        return _link_cache
    return _dump("link", 18, 0, attempts)  # RTM_GETLINK


def links(attempts: int = DEFAULT_ATTEMPTS) -> Dump:
    """Every interface, like ``ip -j link show``."""
    msgs, interrupted, used = _link_msgs(attempts)
    names, flags = _link_maps(msgs)
    return _result([_link_record(m, names, flags, True) for m in msgs], interrupted, used)


def link(name_or_index: str | int, attempts: int = DEFAULT_ATTEMPTS) -> Record:
    """One interface by name or index, like ``ip -j link show dev NAME`` (a single record).

    Raises :class:`~nsworkers.errors.LinkNotFoundError` if there is none.
    """
    from .errors import LinkNotFoundError

    key = "ifindex" if isinstance(name_or_index, int) and not isinstance(name_or_index, bool) else "ifname"
    for rec in links(attempts):
        if rec[key] == name_or_index:
            return rec
    here = os.readlink("/proc/thread-self/ns/net")
    raise LinkNotFoundError(f"no interface {name_or_index!r} in {here}")


def _link_maps(msgs: list[Any]) -> tuple[dict[int, str], dict[int, int]]:
    return {m["index"]: m.get_attr("IFLA_IFNAME") for m in msgs}, {m["index"]: m["flags"] for m in msgs}


def _addr_record(msg: Any) -> Record:
    a = _attrs(msg)
    family = msg["family"]
    rec: Record = {"family": _FAMILY.get(family, str(family))}
    local = a.get("IFA_LOCAL", a.get("IFA_ADDRESS"))
    rec["local"] = local
    if "IFA_ADDRESS" in a and "IFA_LOCAL" in a and a["IFA_ADDRESS"] != a["IFA_LOCAL"]:
        rec["address"] = a["IFA_ADDRESS"]
    rec["prefixlen"] = msg["prefixlen"]
    if "IFA_BROADCAST" in a:
        rec["broadcast"] = a["IFA_BROADCAST"]
    if "IFA_ANYCAST" in a:
        rec["anycast"] = a["IFA_ANYCAST"]
    scope = msg["scope"]
    rec["scope"] = _SCOPES.get(scope, str(scope))
    flags = a.get("IFA_FLAGS", msg["flags"])
    if flags & 0x01:
        rec["temporary" if family == socket.AF_INET6 else "secondary"] = True
    for bit, key in _IFA_F:
        if flags & bit:
            rec[key] = True
    if not flags & 0x80:  # IFA_F_PERMANENT
        rec["dynamic"] = True
    for bit, key in _IFA_F_LATE:
        if flags & bit:
            rec[key] = True
    if "IFA_LABEL" in a and family == socket.AF_INET:
        rec["label"] = a["IFA_LABEL"]
    info = a.get("IFA_CACHEINFO")
    if info is not None:
        rec["valid_life_time"] = info["ifa_valid"]
        rec["preferred_life_time"] = info["ifa_preferred"]
    return rec


def addresses(attempts: int = DEFAULT_ATTEMPTS) -> Dump:
    """Interfaces with their addresses, like ``ip -j addr show`` (``addr_info`` per interface)."""
    link_msgs, li, lu = _link_msgs(attempts)
    addr_msgs, ai, au = _dump("addr", 22, 0, attempts)  # RTM_GETADDR
    names, flags = _link_maps(link_msgs)
    by_link: dict[int, list[Record]] = {}
    for msg in addr_msgs:
        by_link.setdefault(msg["index"], []).append(_addr_record(msg))
    out = []
    for msg in link_msgs:
        rec = _link_record(msg, names, flags, False)
        rec["addr_info"] = by_link.get(msg["index"], [])
        out.append(rec)
    return _result(out, li or ai, max(lu, au))


# ---------------------------------------------------------------------------
# routes, neighbours, rules


def _prefix(addr: str | None, length: int, family: int) -> str:
    if addr is None:
        return "default" if length == 0 else f"0/{length}"
    return addr if length == _HOST_LEN.get(family, -1) else f"{addr}/{length}"


def _route_record(msg: Any, names: dict[int, str]) -> Record:
    a = _attrs(msg)
    family = msg["family"]
    rec: Record = {}
    if msg["type"] != 1:
        rec["type"] = _RTN[msg["type"]] if msg["type"] < len(_RTN) else str(msg["type"])
    rec["dst"] = _prefix(a.get("RTA_DST"), msg["dst_len"], family)
    if "RTA_SRC" in a or msg["src_len"]:
        rec["src"] = _prefix(a.get("RTA_SRC"), msg["src_len"], family)
    if msg["tos"]:
        rec["tos"] = hex(msg["tos"])
    if "RTA_GATEWAY" in a:
        rec["gateway"] = a["RTA_GATEWAY"]
    if "RTA_OIF" in a:
        rec["dev"] = names.get(a["RTA_OIF"], f"if{a['RTA_OIF']}")
    table = a.get("RTA_TABLE", msg["table"])
    if table != 254:
        rec["table"] = _table_name(table)
    if msg["proto"] != 3:
        rec["protocol"] = _PROTOS.get(msg["proto"], str(msg["proto"]))
    if msg["scope"] != 0:
        rec["scope"] = _SCOPES.get(msg["scope"], str(msg["scope"]))
    if "RTA_PREFSRC" in a:
        rec["prefsrc"] = a["RTA_PREFSRC"]
    if "RTA_PRIORITY" in a:
        rec["metric"] = a["RTA_PRIORITY"]
    rec["flags"] = [name for bit, name in _RTNH_F if msg["flags"] & bit]
    metrics = a.get("RTA_METRICS")
    if metrics and metrics.get("attrs"):
        values = {}
        for name, value in metrics["attrs"]:
            key = name.replace("RTAX_", "").lower()
            if key != "lock":
                values[key] = value
        if values:
            rec["metrics"] = [values]
    if "RTA_MULTIPATH" in a:
        hops = []
        for hop in a["RTA_MULTIPATH"]:
            ha = _attrs(hop)
            h: Record = {}
            if "RTA_GATEWAY" in ha:
                h["gateway"] = ha["RTA_GATEWAY"]
            h["dev"] = names.get(hop["oif"], f"if{hop['oif']}")
            h["weight"] = hop["hops"] + 1
            h["flags"] = [name for bit, name in _RTNH_F if hop["flags"] & bit]
            hops.append(h)
        rec["nexthops"] = hops
    if family == socket.AF_INET6 and "RTA_PREF" in a:
        rec["pref"] = {0: "medium", 1: "high", 3: "low"}.get(a["RTA_PREF"], str(a["RTA_PREF"]))
    return rec


def routes(family: int | None = None, attempts: int = DEFAULT_ATTEMPTS) -> Dump:
    """Routes of every table, IPv4 then IPv6, each like ``ip -j [-6] route show table all``.

    *family* (``socket.AF_INET`` or ``AF_INET6``) keeps one family only.
    Cached clones (``RTM_F_CLONED``) are left out, as ``ip`` does.
    """
    link_msgs, li, lu = _link_msgs(attempts)
    names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in link_msgs}
    out: list[Record] = []
    interrupted, used = li, lu
    for fam in (socket.AF_INET, socket.AF_INET6) if family is None else (family,):
        msgs, i, u = _dump("route", 26, fam, attempts)  # RTM_GETROUTE
        interrupted, used = interrupted or i, max(used, u)
        out.extend(_route_record(m, names) for m in msgs if not m["flags"] & 0x200)
    return _result(out, interrupted, used)


def _neigh_record(msg: Any, names: dict[int, str]) -> Record:
    a = _attrs(msg)
    rec: Record = {"dst": a.get("NDA_DST")}
    rec["dev"] = names.get(msg["ifindex"], f"if{msg['ifindex']}")
    if "NDA_LLADDR" in a:
        rec["lladdr"] = a["NDA_LLADDR"]
    flags = msg["flags"]
    if flags & 0x80:
        rec["router"] = None
    if flags & 0x08:
        rec["proxy"] = None
    if flags & 0x10:
        rec["extern_learn"] = True
    if flags & 0x20:
        rec["offload"] = True
    state = msg["state"]
    rec["state"] = [name for bit, name in _NUD if state & bit] or ["NONE"]
    return rec


def neighbours(family: int | None = None, attempts: int = DEFAULT_ATTEMPTS) -> Dump:
    """ARP and NDP entries like ``ip -j neigh show`` (which hides ``NOARP`` entries and bridge fdb)."""
    link_msgs, li, lu = _link_msgs(attempts)
    names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in link_msgs}
    msgs, i, u = _dump("neigh", 30, 0, attempts)  # RTM_GETNEIGH
    wanted = (socket.AF_INET, socket.AF_INET6) if family is None else (family,)
    out = [
        _neigh_record(m, names)
        for m in msgs
        if m["family"] in wanted and not m["state"] & 0x40 and "NDA_DST" in _attrs(m)
    ]
    return _result(out, li or i, max(lu, u))


def _rule_prefix(rec: Record, key: str, addr: str | None, length: int, family: int) -> bool:
    """Set ``rec[key]`` (and ``rec[key + "len"]``) the way ``ip rule`` prints a selector; False if none."""
    if addr is None and not length:
        rec[key] = "all"
        return False
    rec[key] = addr if addr is not None else "0"
    if addr is None or length != _HOST_LEN[family]:
        rec[f"{key}len"] = length
    return True


def _rule_record(msg: Any) -> Record:
    a = _attrs(msg)
    family = msg["family"]
    rec: Record = {"priority": a.get("FRA_PRIORITY", 0)}
    if msg["flags"] & 0x2:
        rec["not"] = None
    _rule_prefix(rec, "src", a.get("FRA_SRC"), msg["src_len"], family)
    if not _rule_prefix(rec, "dst", a.get("FRA_DST"), msg["dst_len"], family):
        del rec["dst"]  # ip prints "from all" but no "to all"
    if msg["tos"]:
        rec["tos"] = hex(msg["tos"])
    if "FRA_FWMARK" in a or "FRA_FWMASK" in a:
        rec["fwmark"] = hex(a.get("FRA_FWMARK", 0))
        if a.get("FRA_FWMASK", 0xFFFFFFFF) != 0xFFFFFFFF:
            rec["fwmask"] = hex(a["FRA_FWMASK"])
    if "FRA_IIFNAME" in a:
        rec["iif"] = a["FRA_IIFNAME"]
    if "FRA_OIFNAME" in a:
        rec["oif"] = a["FRA_OIFNAME"]
    if a.get("FRA_L3MDEV"):
        rec["l3mdev"] = None
    table = a.get("FRA_TABLE", msg["table"])
    if msg["action"] == 1:
        if table:
            rec["table"] = _table_name(table)
        suppress = a.get("FRA_SUPPRESS_PREFIXLEN", 0xFFFFFFFF)
        if suppress not in (0xFFFFFFFF, -1):
            rec["suppress_prefixlen"] = suppress
    elif msg["action"] == 2:
        rec["action"] = "goto"
        rec["goto"] = a.get("FRA_GOTO")
    else:
        rec["action"] = _FR_ACT.get(msg["action"], str(msg["action"]))
    return rec


def rules(family: int | None = None, attempts: int = DEFAULT_ATTEMPTS) -> Dump:
    """Policy routing rules, IPv4 then IPv6, each like ``ip -j [-6] rule show``."""
    out: list[Record] = []
    interrupted, used = False, 1
    for fam in (socket.AF_INET, socket.AF_INET6) if family is None else (family,):
        msgs, i, u = _dump("rule", 34, fam, attempts)  # RTM_GETRULE
        interrupted, used = interrupted or i, max(used, u)
        out.extend(_rule_record(m) for m in msgs)
    return _result(out, interrupted, used)


# ---------------------------------------------------------------------------
# conntrack

_CT_PROTOS = {1: "icmp", 6: "tcp", 17: "udp", 33: "dccp", 58: "icmpv6", 132: "sctp", 136: "udplite", 47: "gre"}
_CT_STATUS = [  # IPS_* bits, named as conntrack(8) prints them
    (1 << 0, "EXPECTED"),
    (1 << 1, "SEEN_REPLY"),
    (1 << 2, "ASSURED"),
    (1 << 3, "CONFIRMED"),
    (1 << 4, "SRC_NAT"),
    (1 << 5, "DST_NAT"),
    (1 << 7, "SRC_NAT_DONE"),
    (1 << 8, "DST_NAT_DONE"),
    (1 << 9, "DYING"),
    (1 << 10, "FIXED_TIMEOUT"),
    (1 << 11, "TEMPLATE"),
    (1 << 12, "UNTRACKED"),
    (1 << 13, "HELPER"),
    (1 << 14, "OFFLOAD"),
    (1 << 15, "HW_OFFLOAD"),
]
_TCP_STATES = [
    "NONE",
    "SYN_SENT",
    "SYN_RECV",
    "ESTABLISHED",
    "FIN_WAIT",
    "CLOSE_WAIT",
    "LAST_ACK",
    "TIME_WAIT",
    "CLOSE",
    "SYN_SENT2",
]


def _ct_tuple(t: Any) -> Record:
    out: Record = {"src": t.saddr, "dst": t.daddr}
    if t.sport is not None:
        out["sport"] = t.sport
        out["dport"] = t.dport
    for key in ("icmp_type", "icmp_code", "icmp_id"):
        value = getattr(t, key, None)
        if value is not None:
            out[key.replace("icmp_", "")] = value
    return out


def _ct_record(entry: Any, fam: int) -> Record:
    proto = entry.tuple_orig.proto
    rec: Record = {
        "family": "ipv4" if fam == socket.AF_INET else "ipv6",
        "protocol": _CT_PROTOS.get(proto, str(proto)),
    }
    if entry.protoinfo is not None:
        state = entry.protoinfo.state
        rec["state"] = _TCP_STATES[state] if state is not None and state < len(_TCP_STATES) else state
    rec["timeout"] = entry.timeout
    rec["original"] = _ct_tuple(entry.tuple_orig)
    rec["reply"] = _ct_tuple(entry.tuple_reply)
    rec["status"] = [name for bit, name in _CT_STATUS if (entry.status or 0) & bit]
    rec["mark"] = entry.mark or 0
    rec["zone"] = entry.zone or 0
    rec["id"] = entry.id
    rec["use"] = entry.use
    return rec


def _ct_matches(rec: Record, filters: dict[str, Any]) -> bool:
    orig = rec["original"]
    for key, want in filters.items():
        if want is None:
            continue
        if key == "address":
            if want not in (orig.get("src"), orig.get("dst"), rec["reply"].get("src"), rec["reply"].get("dst")):
                return False
        elif key == "port":
            if want not in (orig.get("sport"), orig.get("dport")):
                return False
        elif key in ("src", "dst", "sport", "dport"):
            if orig.get(key) != want:
                return False
        elif rec.get(key) != want:
            return False
    return True


def _ct_entries(family: int | None, filters: dict[str, Any]) -> Iterable[tuple[Any, Any, Record]]:
    from pyroute2 import Conntrack

    unknown = set(filters) - {"address", "src", "dst", "port", "sport", "dport", "protocol", "zone", "mark"}
    if unknown:
        raise TypeError(f"unknown conntrack filter(s): {sorted(unknown)}")
    for fam in (socket.AF_INET, socket.AF_INET6) if family is None else (family,):
        with Conntrack(nfgen_family=fam) as ct:
            for entry in list(ct.dump_entries()):
                if entry.tuple_orig.family != fam:
                    continue
                rec = _ct_record(entry, fam)
                if _ct_matches(rec, filters):
                    yield ct, entry, rec


def conntrack(family: int | None = None, **filters: Any) -> list[Record]:
    """Connection tracking entries of the namespace, IPv4 then IPv6, optionally filtered.

    ``conntrack -L`` prints no JSON; each entry here is::

        {"family": "ipv4", "protocol": "tcp", "state": "ESTABLISHED", "timeout": 431999,
         "original": {"src": ..., "dst": ..., "sport": ..., "dport": ...},
         "reply": {...}, "status": ["ASSURED", "CONFIRMED"], "mark": 0, "zone": 0, "id": ..., "use": 1}

    ``state`` is present for TCP only; ICMP tuples carry ``type``/``code``/``id``
    instead of ports. Filters (all given ones must match): ``address`` (either
    end, either direction), ``src``, ``dst``, ``port`` (either end),
    ``sport``, ``dport`` (of the original direction), ``protocol``
    (``"tcp"``...), ``zone``, ``mark``. Empty until something makes the kernel
    track connections (a ``ct`` rule, or entries added through ctnetlink).
    """
    return [rec for _, _, rec in _ct_entries(family, filters)]


def conntrack_delete(family: int | None = None, **filters: Any) -> int:
    """Delete the conntrack entries matching *filters* (as :func:`conntrack`); return how many went.

    A write: it runs only when called. At least one filter is required, so
    a bare call cannot flush the table by accident. A kernel refusal raises
    :class:`~nsworkers.errors.NetlinkWriteError` naming the namespace and the errno.
    """
    if not any(v is not None for v in filters.values()):
        raise ValueError("conntrack_delete() needs at least one filter (address, port, protocol, zone, mark ...)")
    deleted = 0
    for ct, entry, _ in _ct_entries(family, filters):
        try:
            ct.delete(entry)
        except OSError as exc:
            if exc.errno == 2:  # ENOENT: it expired meanwhile
                continue
            raise _write_error("conntrack delete", exc) from exc
        deleted += 1
    return deleted


def _write_error(what: str, exc: OSError) -> Exception:
    from .errors import NetlinkWriteError

    here = os.readlink("/proc/thread-self/ns/net")
    return NetlinkWriteError(exc.errno or 0, f"{what} in {here} failed: {os.strerror(exc.errno or 0)}")


# ---------------------------------------------------------------------------
# xfrm (pyroute2 has no xfrm support: a raw NETLINK_XFRM dump, parsed here)

_NETLINK_XFRM = 6
_XFRM_MSG_GETSA = 18
_XFRM_MSG_GETPOLICY = 21
_XFRMA_TMPL = 5
_XFRMA_MARK = 21
_XFRMA_IF_ID = 31
_XFRM_DIRS = {0: "in", 1: "out", 2: "fwd"}
_XFRM_ACTIONS = {0: "allow", 1: "block"}
_XFRM_MODES = {0: "transport", 1: "tunnel", 2: "ro", 3: "in_trigger", 4: "beet"}
_IPPROTO_NAMES = {50: "esp", 51: "ah", 108: "comp", 43: "route2", 60: "hao", 255: "ipsec-any"}
_SELECTOR = struct.Struct("=16s16sHHHHHBBBxxxiI")  # struct xfrm_selector, 56 bytes
_POLICY_INFO = 168  # sizeof(struct xfrm_userpolicy_info)
_SA_INFO = 224  # sizeof(struct xfrm_usersa_info)
_TMPL = struct.Struct("=16sIBxxxHxx16sIBBBxIII")  # struct xfrm_user_tmpl, 64 bytes


def _xfrm_addr(raw: bytes, family: int) -> str:
    if family == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, raw)
    return socket.inet_ntop(socket.AF_INET, raw[:4])


def _xfrm_dump(msg_type: int) -> tuple[list[bytes], bool]:
    """One NETLINK_XFRM dump: ``([payload, ...], interrupted)``."""
    from ._rtnl import dump_raw

    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, _NETLINK_XFRM) as sock:
        sock.bind((0, 0))
        raw, interrupted = dump_raw(sock, msg_type, b"", 1)
    return [payload for _, _, payload in raw], interrupted


def _xfrm_attrs(payload: bytes, start: int) -> dict[int, list[bytes]]:
    attrs: dict[int, list[bytes]] = {}
    offset = (start + 3) & ~3
    while offset + 4 <= len(payload):
        length, kind = struct.unpack_from("=HH", payload, offset)
        if length < 4:
            break
        attrs.setdefault(kind & 0x3FFF, []).append(payload[offset + 4 : offset + length])
        offset += (length + 3) & ~3
    return attrs


def _selector(raw: bytes) -> Record:
    daddr, saddr, dport, _dmask, sport, _smask, family, plen_d, plen_s, proto, ifindex, _user = _SELECTOR.unpack_from(
        raw
    )
    sel: Record = {
        "src": f"{_xfrm_addr(saddr, family)}/{plen_s}",
        "dst": f"{_xfrm_addr(daddr, family)}/{plen_d}",
    }
    if proto:
        sel["proto"] = _CT_PROTOS.get(proto, str(proto))
    if sport:
        sel["sport"] = socket.ntohs(sport)
    if dport:
        sel["dport"] = socket.ntohs(dport)
    if ifindex:
        sel["ifindex"] = ifindex
    return sel


def _xfrm_records(what: str, msg_type: int, parse: Callable[[bytes], Record], attempts: int) -> Dump:
    msgs, interrupted, used = _retry(what, lambda: _xfrm_dump(msg_type), attempts)
    return _result([parse(p) for p in msgs], interrupted, used)


def _policy(payload: bytes) -> Record:
    rec = _selector(payload)
    priority, index, direction, action, _flags, _share = struct.unpack_from("=IIBBBB", payload, 152)
    rec.update(
        {
            "dir": _XFRM_DIRS.get(direction, str(direction)),
            "priority": priority,
            "action": _XFRM_ACTIONS.get(action, str(action)),
            "index": index,
        }
    )
    attrs = _xfrm_attrs(payload, _POLICY_INFO)
    templates = []
    for blob in attrs.get(_XFRMA_TMPL, []):
        for off in range(0, len(blob) - _TMPL.size + 1, _TMPL.size):
            daddr, spi, proto, family, saddr, reqid, mode, _share2, optional, _a, _e, _c = _TMPL.unpack_from(blob, off)
            tmpl = _xfrm_id(saddr, daddr, family, proto, spi, reqid, mode)
            if optional:
                tmpl["level"] = "use"
            templates.append(tmpl)
    rec["tmpl"] = templates
    _xfrm_common(rec, attrs)
    return rec


def _xfrm_id(saddr: bytes, daddr: bytes, family: int, proto: int, spi: int, reqid: int, mode: int) -> Record:
    """The fields an SA and a policy template share, as ``ip xfrm`` names them."""
    return {
        "src": _xfrm_addr(saddr, family),
        "dst": _xfrm_addr(daddr, family),
        "proto": _IPPROTO_NAMES.get(proto, str(proto)),
        "spi": f"0x{socket.ntohl(spi):08x}",
        "reqid": reqid,
        "mode": _XFRM_MODES.get(mode, str(mode)),
    }


def _xfrm_common(rec: Record, attrs: dict[int, list[bytes]]) -> None:
    if _XFRMA_MARK in attrs:
        value, mask = struct.unpack_from("=II", attrs[_XFRMA_MARK][0])
        rec["mark"] = f"0x{value:x}/0x{mask:x}"
    if _XFRMA_IF_ID in attrs:
        (rec["if_id"],) = struct.unpack_from("=I", attrs[_XFRMA_IF_ID][0])


def _state(payload: bytes) -> Record:
    sel = _selector(payload)
    daddr, spi, proto = struct.unpack_from("=16sIB", payload, 56)
    saddr = payload[80:96]
    reqid, family, mode, replay_window, flags = struct.unpack_from("=IHBBB", payload, 208)
    rec = _xfrm_id(saddr, daddr, family, proto, spi, reqid, mode)
    rec.update({"replay_window": replay_window, "flags": flags, "sel": sel})
    _xfrm_common(rec, _xfrm_attrs(payload, _SA_INFO))
    return rec


def xfrm_policies(attempts: int = DEFAULT_ATTEMPTS) -> Dump:
    """IPsec policies (``ip xfrm policy``, which prints no JSON); one record each::

        {"src": "10.0.0.0/24", "dst": "10.1.0.0/24", "dir": "out", "priority": 5,
         "action": "allow", "index": 1, "tmpl": [{"src": ..., "dst": ..., "proto": "esp",
         "spi": "0x00000000", "reqid": 0, "mode": "tunnel"}]}

    plus ``proto``/``sport``/``dport``/``ifindex`` of the selector, ``mark`` and
    ``if_id`` when set.
    """
    return _xfrm_records("xfrm policy", _XFRM_MSG_GETPOLICY, _policy, attempts)


def xfrm_states(attempts: int = DEFAULT_ATTEMPTS) -> Dump:
    """IPsec security associations (``ip xfrm state``): src, dst, proto, spi, reqid, mode, selector.

    Keys and algorithms are deliberately left out of the records.
    """
    return _xfrm_records("xfrm state", _XFRM_MSG_GETSA, _state, attempts)


# ---------------------------------------------------------------------------
# change events (rtnetlink multicast groups, read inside the worker)

_GROUPS = {  # section -> RTMGRP_* bits
    "links": 0x1,
    "neighbours": 0x4,
    "addresses": 0x10 | 0x100,
    "routes": 0x40 | 0x400,
}
_EVENT_KINDS = {  # message type -> (event, kind)
    16: ("new", "link"),
    17: ("del", "link"),
    20: ("new", "address"),
    21: ("del", "address"),
    24: ("new", "route"),
    25: ("del", "route"),
    28: ("new", "neighbour"),
    29: ("del", "neighbour"),
}
_watch: Any = None  # (socket, groups mask, pid)
_watch_names: dict[int, str] = {}
_watch_flags: dict[int, int] = {}


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
    global _watch
    import select

    from . import _rtnl

    unknown = [w for w in what if w not in _GROUPS]
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}; choose from {sorted(_GROUPS)}")
    mask = 0
    for section in what:
        mask |= _GROUPS[section]
    if _watch is None or _watch[1] != mask or _watch[2] != os.getpid():
        if _watch is not None:
            _watch[0].close()
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind((0, mask))
        sock.setblocking(False)
        _watch = (sock, mask, os.getpid())
        names, flags = _link_maps(_link_msgs(DEFAULT_ATTEMPTS)[0])
        _watch_names.clear()
        _watch_names.update(names)
        _watch_flags.clear()
        _watch_flags.update(flags)
        return []
    sock = _watch[0]
    if not select.select([sock], [], [], timeout)[0]:
        return []
    out: list[Record] = []
    while True:
        try:
            data = sock.recv(1 << 16)
        except BlockingIOError:
            return out
        except OSError as exc:
            if exc.errno == 105:  # ENOBUFS: the kernel dropped events
                out.append({"event": "overrun"})
                continue
            raise
        offset = 0
        while offset + 16 <= len(data):
            length, kind, flags, _seq, _pid = struct.unpack_from("=IHHII", data, offset)
            if length < 16:
                break
            if kind in _EVENT_KINDS:
                msg = _rtnl._parse(kind & ~1, flags, data[offset + 16 : offset + length])  # DEL* -> NEW* layout
                out.append(_event(kind, msg))
            offset += (length + 3) & ~3


def _event(kind: int, msg: Any) -> Record:
    event, what = _EVENT_KINDS[kind]
    if what == "link":
        name = msg.get_attr("IFLA_IFNAME")
        if event == "new":
            _watch_names[msg["index"]] = name
            _watch_flags[msg["index"]] = msg["flags"]
        record = _link_record(msg, _watch_names, _watch_flags, True)
        if event == "del":
            _watch_names.pop(msg["index"], None)
            _watch_flags.pop(msg["index"], None)
    elif what == "address":
        record = _addr_record(msg)
        record["dev"] = _watch_names.get(msg["index"], f"if{msg['index']}")
    elif what == "route":
        record = _route_record(msg, _watch_names)
    else:
        record = _neigh_record(msg, _watch_names)
    return {"event": event, "kind": what, "record": record}


# ---------------------------------------------------------------------------
# sysctl and snapshots


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


SECTIONS: dict[str, Callable[..., Dump]] = {
    "links": links,
    "addresses": addresses,
    "routes": routes,
    "neighbours": neighbours,
    "rules": rules,
    "conntrack": conntrack,  # type: ignore[dict-item]
    "xfrm_policies": xfrm_policies,
    "xfrm_states": xfrm_states,
}


def snapshot(what: Sequence[str] = ("links", "addresses", "routes"), attempts: int = DEFAULT_ATTEMPTS) -> Record:
    """Several sections at once: ``{"id": "net:[...]", "links": [...], ..., "inconsistent": [...]}``.

    *what* names sections of :data:`SECTIONS`; ``"id"`` is the namespace the
    worker is in; ``"inconsistent"`` lists the sections whose dump stayed
    interrupted after *attempts*.
    """
    unknown = [w for w in what if w not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}; choose from {sorted(SECTIONS)}")
    global _link_cache
    out: Record = {"id": os.readlink("/proc/thread-self/ns/net")}
    inconsistent = []
    if len(set(what) & {"links", "addresses", "routes", "neighbours"}) > 1:
        _link_cache = _link_msgs(attempts)  # one link dump serves every section that names links
    try:
        for section in what:
            result = SECTIONS[section](attempts=attempts)
            out[section] = list(result)
            if result.interrupted:
                inconsistent.append(section)
    finally:
        _link_cache = None
    out["inconsistent"] = inconsistent
    return out

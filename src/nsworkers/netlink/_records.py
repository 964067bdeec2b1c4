"""Netlink message -> ``ip -j`` record: pure functions, testable on recorded bytes.

Each builder takes one message payload (the bytes after ``struct nlmsghdr``)
and returns the dict ``ip -j`` prints for it, following iproute2 6.1:
``ip/ipaddress.c`` (links, addresses), ``ip/iproute.c`` and
``ip/iproute_lwtunnel.c`` (routes), ``ip/ipneigh.c``, ``ip/iprule.c``,
``ip/ipnexthop.c``. What a record needs beyond its own message -- the names
and flags of the other links, the ``/etc/iproute2`` tables -- is passed in
(:class:`LinkTable`, :class:`~._names.Names`), never read from globals.

Where ``ip -j`` prints one key twice in an object (a route's ``dst`` and its
encapsulation's ``dst``), the record holds what ``json.loads`` keeps: the
last value.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable
from typing import Any

from . import _names as n
from . import _wire as w

Record = dict[str, Any]

AF_INET = socket.AF_INET
AF_INET6 = socket.AF_INET6
AF_BRIDGE = 7
_HOST_LEN: dict[int, int] = {AF_INET: 32, AF_INET6: 128}

# -- fixed headers (include/uapi/linux/*.h) -----------------------------------

IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type
FIB_RULE_HDR = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, res1, res2, action, flags
NHMSG = struct.Struct("=BBBBI")  # family, scope, protocol, resvd, flags
RTNEXTHOP = struct.Struct("=HBBi")  # len, flags, hops, ifindex

# include/uapi/linux/if_link.h IFLA_*
IFLA_ADDRESS, IFLA_BROADCAST, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_QDISC = 1, 2, 3, 4, 5, 6
IFLA_STATS, IFLA_MASTER, IFLA_TXQLEN, IFLA_OPERSTATE, IFLA_LINKMODE = 7, 10, 13, 16, 17
IFLA_LINKINFO, IFLA_IFALIAS, IFLA_NUM_VF, IFLA_VFINFO_LIST, IFLA_STATS64 = 18, 20, 21, 22, 23
IFLA_AF_SPEC, IFLA_GROUP, IFLA_PROMISCUITY, IFLA_NUM_TX_QUEUES, IFLA_NUM_RX_QUEUES = 26, 27, 30, 31, 32
IFLA_CARRIER, IFLA_PHYS_PORT_ID, IFLA_CARRIER_CHANGES, IFLA_PHYS_SWITCH_ID = 33, 34, 35, 36
IFLA_LINK_NETNSID, IFLA_PHYS_PORT_NAME, IFLA_PROTO_DOWN, IFLA_GSO_MAX_SEGS, IFLA_GSO_MAX_SIZE = 37, 38, 39, 40, 41
IFLA_XDP, IFLA_EVENT, IFLA_NEW_NETNSID, IFLA_MIN_MTU, IFLA_MAX_MTU, IFLA_PROP_LIST = 43, 44, 45, 50, 51, 52
IFLA_ALT_IFNAME, IFLA_PERM_ADDRESS, IFLA_PROTO_DOWN_REASON = 53, 54, 55
IFLA_PARENT_DEV_NAME, IFLA_PARENT_DEV_BUS_NAME, IFLA_GRO_MAX_SIZE = 56, 57, 58
IFLA_TSO_MAX_SIZE, IFLA_TSO_MAX_SEGS, IFLA_ALLMULTI = 59, 60, 61
IFLA_EXT_MASK = 29
RTEXT_FILTER_VF, RTEXT_FILTER_SKIP_STATS = 1 << 0, 1 << 3
IFLA_INFO_KIND, IFLA_INFO_DATA, IFLA_INFO_XSTATS, IFLA_INFO_SLAVE_KIND, IFLA_INFO_SLAVE_DATA = 1, 2, 3, 4, 5
IFLA_INET6_ADDR_GEN_MODE = 8
IFLA_PROTO_DOWN_REASON_VALUE = 2

# include/uapi/linux/if_addr.h IFA_*
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL, IFA_BROADCAST, IFA_ANYCAST, IFA_CACHEINFO = 1, 2, 3, 4, 5, 6
IFA_FLAGS, IFA_RT_PRIORITY = 8, 9
IFA_F_SECONDARY, IFA_F_DEPRECATED, IFA_F_PERMANENT = 0x01, 0x20, 0x80
INFINITY_LIFE_TIME = 0xFFFFFFFF
# ip/ipaddress.c ifa_flag_data[]: (mask, name) in print order; IFA_F_SECONDARY and
# IFA_F_PERMANENT are special-cased (temporary for IPv6; "dynamic" when absent)
IFA_FLAG_NAMES = (
    (0x01, "secondary"), (0x02, "nodad"), (0x04, "optimistic"), (0x08, "dadfailed"),
    (0x10, "home"), (0x20, "deprecated"), (0x40, "tentative"), (0x80, "permanent"),
    (0x100, "mngtmpaddr"), (0x200, "noprefixroute"), (0x400, "autojoin"), (0x800, "stable-privacy"),
)  # fmt: skip

# include/uapi/linux/rtnetlink.h RTA_*
RTA_DST, RTA_SRC, RTA_IIF, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_PREFSRC = 1, 2, 3, 4, 5, 6, 7
RTA_METRICS, RTA_MULTIPATH, RTA_FLOW, RTA_CACHEINFO, RTA_TABLE, RTA_MARK = 8, 9, 11, 12, 15, 16
RTA_VIA, RTA_NEWDST, RTA_PREF, RTA_ENCAP_TYPE, RTA_ENCAP, RTA_UID = 18, 19, 20, 21, 22, 25
RTA_TTL_PROPAGATE, RTA_NH_ID = 26, 30
RTM_F_NOTIFY, RTM_F_CLONED = 0x100, 0x200
RTN_UNICAST, RTN_NAT = 1, 10
RT_TABLE_MAIN = 254
RTPROT_BOOT, RTPROT_KERNEL = 3, 2
RTAX_LOCK, RTAX_RTT, RTAX_RTTVAR, RTAX_HOPLIMIT, RTAX_FEATURES, RTAX_RTO_MIN, RTAX_CC_ALGO = 1, 4, 5, 10, 12, 13, 16
RTAX_MAX = 17
RTAX_FEATURE_ECN = 1
RTA_CACHEINFO_FMT = struct.Struct("=IIiIIIII")  # clntref, lastuse, expires, error, used, id, ts, tsage
USER_HZ = 100  # sysconf(_SC_CLK_TCK): the kernel reports clock_t in these units
# ip/iproute.c print_rt_flags(): (bit, name) in print order
RT_FLAG_NAMES = (
    (1, "dead"), (4, "onlink"), (2, "pervasive"), (8, "offload"), (64, "trap"), (0x100, "notify"),
    (16, "linkdown"), (32, "unresolved"), (0x2000, "rt_offload"), (0x4000, "rt_trap"),
    (0x20000000, "rt_offload_failed"),
)  # fmt: skip

# include/uapi/linux/lwtunnel.h
LWTUNNEL_ENCAP_TYPES = {
    1: "mpls", 2: "ip", 3: "ila", 4: "ip6", 5: "seg6", 6: "bpf", 7: "seg6local", 8: "rpl", 9: "ioam6", 10: "xfrm",
}  # fmt: skip
LWTUNNEL_ENCAP_IP, LWTUNNEL_ENCAP_IP6, LWTUNNEL_ENCAP_SEG6, LWTUNNEL_ENCAP_SEG6_LOCAL = 2, 4, 5, 7
LWTUNNEL_IP_ID, LWTUNNEL_IP_DST, LWTUNNEL_IP_SRC, LWTUNNEL_IP_TTL, LWTUNNEL_IP_TOS, LWTUNNEL_IP_FLAGS = 1, 2, 3, 4, 5, 6
LWTUNNEL_IP6_ID, LWTUNNEL_IP6_DST, LWTUNNEL_IP6_SRC, LWTUNNEL_IP6_HOPLIMIT, LWTUNNEL_IP6_TC = 1, 2, 3, 4, 5
LWTUNNEL_IP6_FLAGS = 6
# include/uapi/linux/icmpv6.h ICMPV6_ROUTER_PREF_*, as ip/iproute.c print_rt_pref() names them
ROUTER_PREFS = {0: "medium", 1: "high", 3: "low"}
AF_MPLS = 28
TUNNEL_CSUM, TUNNEL_KEY, TUNNEL_SEQ = 0x01, 0x04, 0x08
SEG6_IPTUNNEL_SRH = 1
# ip/iproute_lwtunnel.c seg6_mode_types[]
SEG6_MODES = ("inline", "encap", "l2encap", "encap.red", "l2encap.red")
SR6_FLAG1_HMAC = 1 << 3
# include/uapi/linux/seg6_local.h
SEG6_LOCAL_ACTION, SEG6_LOCAL_SRH, SEG6_LOCAL_TABLE, SEG6_LOCAL_NH4, SEG6_LOCAL_NH6 = 1, 2, 3, 4, 5
SEG6_LOCAL_IIF, SEG6_LOCAL_OIF, SEG6_LOCAL_BPF, SEG6_LOCAL_VRFTABLE, SEG6_LOCAL_COUNTERS = 6, 7, 8, 9, 10
SEG6_LOCAL_FLAVORS = 11
SEG6_LOCAL_CNT_PACKETS, SEG6_LOCAL_CNT_BYTES, SEG6_LOCAL_CNT_ERRORS = 2, 3, 4
SEG6_LOCAL_FLV_OPERATION, SEG6_LOCAL_FLV_LCBLOCK_BITS, SEG6_LOCAL_FLV_LCNODE_FN_BITS = 1, 2, 3
LWT_BPF_PROG_NAME = 2
# ip/iproute_lwtunnel.c seg6_action_names[], seg6_flavor_names[] (iproute2 6.1)
SEG6_ACTIONS = (
    None, "End", "End.X", "End.T", "End.DX2", "End.DX6", "End.DX4", "End.DT6", "End.DT4", "End.B6",
    "End.B6.Encaps", "End.BM", "End.S", "End.AS", "End.AM", "End.BPF", "End.DT46",
)  # fmt: skip
SEG6_FLAVORS = (None, "psp", "usp", "usd", "next-csid")

# include/uapi/linux/neighbour.h
NDA_DST, NDA_LLADDR, NDA_CACHEINFO, NDA_PROBES, NDA_PROTOCOL, NDA_FLAGS_EXT = 1, 2, 3, 4, 12, 15
NTF_PROXY, NTF_EXT_LEARNED, NTF_OFFLOADED, NTF_ROUTER = 0x08, 0x10, 0x20, 0x80
NTF_EXT_MANAGED = 0x01
NUD_NOARP = 0x40
NDA_CACHEINFO_FMT = struct.Struct("=IIII")  # confirmed, used, updated, refcnt

# include/uapi/linux/fib_rules.h
FRA_DST, FRA_SRC, FRA_IIFNAME, FRA_GOTO, FRA_PRIORITY, FRA_FWMARK, FRA_FLOW = 1, 2, 3, 4, 6, 10, 11
FRA_TUN_ID, FRA_SUPPRESS_IFGROUP, FRA_SUPPRESS_PREFIXLEN, FRA_TABLE, FRA_FWMASK = 12, 13, 14, 15, 16
FRA_OIFNAME, FRA_L3MDEV, FRA_UID_RANGE, FRA_PROTOCOL, FRA_IP_PROTO = 17, 19, 20, 21, 22
FRA_SPORT_RANGE, FRA_DPORT_RANGE = 23, 24
FIB_RULE_INVERT, FIB_RULE_UNRESOLVED, FIB_RULE_IIF_DETACHED, FIB_RULE_OIF_DETACHED = 0x2, 0x4, 0x8, 0x10
FR_ACT_TO_TBL, FR_ACT_GOTO, FR_ACT_NOP = 1, 2, 3

# include/uapi/linux/nexthop.h
NHA_ID, NHA_GROUP, NHA_GROUP_TYPE, NHA_BLACKHOLE, NHA_OIF, NHA_GATEWAY = 1, 2, 3, 4, 5, 6
NHA_ENCAP_TYPE, NHA_ENCAP, NHA_FDB, NHA_RES_GROUP = 7, 8, 11, 12
NEXTHOP_GRP = struct.Struct("=IBxH")  # id, weight, resvd
NEXTHOP_GRP_TYPE_MPATH = 0
NHA_RES_GROUP_BUCKETS, NHA_RES_GROUP_IDLE_TIMER, NHA_RES_GROUP_UNBALANCED_TIMER = 1, 2, 3
NHA_RES_GROUP_UNBALANCED_TIME = 4

_STATS64 = struct.Struct("=25Q")
_STATS64_FIELDS = (
    "rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_errors", "tx_errors", "rx_dropped", "tx_dropped",
    "multicast", "collisions", "rx_length_errors", "rx_over_errors", "rx_crc_errors", "rx_frame_errors",
    "rx_fifo_errors", "rx_missed_errors", "tx_aborted_errors", "tx_carrier_errors", "tx_fifo_errors",
    "tx_heartbeat_errors", "tx_window_errors", "rx_compressed", "tx_compressed", "rx_nohandler",
    "rx_otherhost_dropped",
)  # fmt: skip


class LinkTable:
    """ifindex -> name, flags and type of every link of one dump (``ll_index_to_name`` & co.)."""

    __slots__ = ("names", "flags", "types", "parsed")

    def __init__(self, payloads: Iterable[bytes] = ()) -> None:
        self.names: dict[int, str] = {}
        self.flags: dict[int, int] = {}
        self.types: dict[int, int] = {}
        self.parsed: dict[int, tuple[bytes, dict[int, bytes]]] = {}  # index -> (payload, its attributes)
        for payload in payloads:
            self.add(payload)

    def add(self, payload: bytes) -> None:
        _family, kind, index, flags, _change = IFINFOMSG.unpack_from(payload)
        a = w.attrs(payload, IFINFOMSG.size)
        name = a.get(IFLA_IFNAME)
        self.names[index] = w.cstr(name) if name is not None else f"if{index}"
        self.flags[index] = flags
        self.types[index] = kind
        self.parsed[index] = (payload, a)

    def attrs_of(self, index: int, payload: bytes) -> dict[int, bytes]:
        """*payload*'s attributes, parsed once when the table was built (a link section and an address
        section of one snapshot read the same messages)."""
        known = self.parsed.get(index)
        if known is not None and known[0] is payload:
            return known[1]
        return w.attrs(payload, IFINFOMSG.size)

    def remove(self, payload: bytes) -> None:
        index = IFINFOMSG.unpack_from(payload)[2]
        self.names.pop(index, None)
        self.flags.pop(index, None)
        self.types.pop(index, None)
        self.parsed.pop(index, None)

    def name(self, index: int) -> str:
        """``ll_index_to_name``: ``*`` for index 0, ``if<N>`` for an index not in the table."""
        if index == 0:
            return "*"
        name = self.names.get(index)
        return name if name is not None else f"if{index}"


def hex0x(value: int) -> str:
    """``print_0xhex`` in JSON: C's ``%#llx``, which prints zero as ``"0"``."""
    return f"0x{value:x}" if value else "0"


def mac(raw: bytes) -> str:
    """``ll_addr_n2a`` for Ethernet-like types: colon-separated hex (an empty address prints as ``""``)."""
    return ":".join(f"{b:02x}" for b in raw) if raw else ""


def ll_addr(raw: bytes, link_type: int) -> str:
    """``lib/ll_addr.c`` ``ll_addr_n2a``: IP tunnels print their endpoints as addresses."""
    if len(raw) == 4 and link_type in (768, 776, 778):  # ARPHRD_TUNNEL, SIT, IPGRE
        return socket.inet_ntop(AF_INET, raw)
    if len(raw) == 16 and link_type in (769, 823):  # ARPHRD_TUNNEL6, IP6GRE
        return socket.inet_ntop(AF_INET6, raw)
    return mac(raw)


# -- links ---------------------------------------------------------------------


def link_flags(flags: int, master_down: bool) -> list[str]:
    """``print_link_flags``: ``NO-CARRIER`` first, ``IFF_RUNNING`` hidden, unknown bits in hex."""
    out = []
    if flags & n.IFF_UP and not flags & n.IFF_RUNNING:
        out.append("NO-CARRIER")
    flags &= ~n.IFF_RUNNING
    for bit, name in n.IFF_FLAGS:
        if flags & bit:
            out.append(name)
            flags &= ~bit
    if flags:
        out.append(f"{flags:x}")
    if master_down:
        out.append("M-DOWN")
    return out


def stats64(a: dict[int, bytes], level: int) -> tuple[str, Record] | None:
    """``print_stats64``: the ``stats64`` (or, from a shorter struct, ``stats``) object of ``ip -s``."""
    raw = a.get(IFLA_STATS64)
    if raw is not None:
        full = len(raw) >= _STATS64.size
        s = dict(zip(_STATS64_FIELDS, _STATS64.unpack((raw + bytes(_STATS64.size))[: _STATS64.size]), strict=True))
        key = "stats64" if full else "stats"
    else:
        raw = a.get(IFLA_STATS)
        if raw is None:
            return None
        count = min(len(raw) // 4, 24)
        values = struct.unpack_from(f"={count}I", raw) + (0,) * (25 - count)
        s = dict(zip(_STATS64_FIELDS, values, strict=True))
        key = "stats"
    rx: Record = {
        "bytes": s["rx_bytes"], "packets": s["rx_packets"], "errors": s["rx_errors"],
        "dropped": s["rx_dropped"], "over_errors": s["rx_over_errors"], "multicast": s["multicast"],
    }  # fmt: skip
    if s["rx_compressed"]:
        rx["compressed"] = s["rx_compressed"]
    if level > 1:
        rx["length_errors"] = s["rx_length_errors"]
        rx["crc_errors"] = s["rx_crc_errors"]
        rx["frame_errors"] = s["rx_frame_errors"]
        rx["fifo_errors"] = s["rx_fifo_errors"]
        rx["missed_errors"] = s["rx_missed_errors"]
        if s["rx_nohandler"]:
            rx["nohandler"] = s["rx_nohandler"]
        if s["rx_otherhost_dropped"]:
            rx["otherhost"] = s["rx_otherhost_dropped"]
    tx: Record = {
        "bytes": s["tx_bytes"], "packets": s["tx_packets"], "errors": s["tx_errors"],
        "dropped": s["tx_dropped"], "carrier_errors": s["tx_carrier_errors"], "collisions": s["collisions"],
    }  # fmt: skip
    if s["tx_compressed"]:
        tx["compressed"] = s["tx_compressed"]
    if level > 1:
        tx["aborted_errors"] = s["tx_aborted_errors"]
        tx["fifo_errors"] = s["tx_fifo_errors"]
        tx["window_errors"] = s["tx_window_errors"]
        tx["heartbeat_errors"] = s["tx_heartbeat_errors"]
        if IFLA_CARRIER_CHANGES in a:
            tx["carrier_changes"] = w.u32(a[IFLA_CARRIER_CHANGES])
    return key, {"rx": rx, "tx": tx}


def link(
    payload: bytes,
    links: LinkTable,
    names: n.Names,
    *,
    do_link: bool = True,
    stats: int = 0,
    details: int = 0,
) -> Record:
    """``print_linkinfo``: one link as ``ip -j link show`` (*do_link*) or the link part of ``ip -j addr show``."""
    _family, link_type, index, flags, _change = IFINFOMSG.unpack_from(payload)
    a = links.attrs_of(index, payload)
    rec: Record = {"ifindex": index}
    master_down = False
    raw = a.get(IFLA_LINK)
    if raw is not None:
        iflink = w.u32(raw)
        if iflink == 0:
            rec["link"] = None
        elif IFLA_LINK_NETNSID in a:
            rec["link_index"] = iflink
        else:
            rec["link"] = links.name(iflink)
            master_down = not links.flags.get(iflink, 0) & n.IFF_UP
    name = a.get(IFLA_IFNAME)
    rec["ifname"] = w.cstr(name) if name is not None else links.name(index)
    rec["flags"] = link_flags(flags, master_down)
    if IFLA_MTU in a:
        rec["mtu"] = w.u32(a[IFLA_MTU])
    if IFLA_QDISC in a:
        rec["qdisc"] = w.cstr(a[IFLA_QDISC])
    if IFLA_MASTER in a:
        rec["master"] = links.name(w.u32(a[IFLA_MASTER]))
    if IFLA_OPERSTATE in a:
        state = a[IFLA_OPERSTATE][0]
        if state < len(n.OPERSTATES):
            rec["operstate"] = n.OPERSTATES[state]
        else:
            rec["operstate_index"] = state
    if do_link and IFLA_LINKMODE in a:
        mode = a[IFLA_LINKMODE][0]
        if mode < len(n.LINKMODES):
            rec["linkmode"] = n.LINKMODES[mode]
        else:
            rec["linkmode_index"] = mode
    if IFLA_GROUP in a:
        rec["group"] = names.group(w.s32(a[IFLA_GROUP]))
    if IFLA_TXQLEN in a:  # filter.showqueue is set for link and addr show
        qlen = w.s32(a[IFLA_TXQLEN])
        if qlen:
            rec["txqlen"] = qlen
    if IFLA_EVENT in a:
        event = w.u32(a[IFLA_EVENT])
        if event >= len(_LINK_EVENTS):
            rec["event"] = event
        elif event:
            rec["event"] = _LINK_EVENTS[event]
    rec["link_type"] = n.ARPHRD.get(link_type, f"[{link_type}]")
    if IFLA_ADDRESS in a:
        rec["address"] = ll_addr(a[IFLA_ADDRESS], link_type)
    if IFLA_BROADCAST in a:
        if flags & n.IFF_POINTOPOINT:
            rec["link_pointtopoint"] = True
        rec["broadcast"] = ll_addr(a[IFLA_BROADCAST], link_type)
    perm = a.get(IFLA_PERM_ADDRESS)
    if perm is not None and perm != a.get(IFLA_ADDRESS):
        rec["permaddr"] = ll_addr(perm, link_type)
    if IFLA_LINK_NETNSID in a:
        rec["link_netnsid"] = w.s32(a[IFLA_LINK_NETNSID])
    if IFLA_PROTO_DOWN in a:
        _proto_down(rec, a, names)
    if details:
        from ._linkinfo import link_details

        link_details(rec, a, links, do_link=do_link)
    if (do_link or details) and IFLA_IFALIAS in a:
        rec["ifalias"] = w.cstr(a[IFLA_IFALIAS])
    if do_link and stats:
        found = stats64(a, stats)
        if found is not None:
            rec[found[0]] = found[1]
    if IFLA_PROP_LIST in a:
        rec["altnames"] = [w.cstr(v) for k, v in w.attr_list(a[IFLA_PROP_LIST]) if k == IFLA_ALT_IFNAME]
    return rec


# ip/ipaddress.c link_events[]
_LINK_EVENTS = (
    "NONE", "REBOOT", "FEATURE CHANGE", "BONDING FAILOVER", "NOTIFY PEERS", "RESEND IGMP", "BONDING OPTION",
)  # fmt: skip


def _proto_down(rec: Record, a: dict[int, bytes], names: n.Names) -> None:
    """``print_proto_down``, including two quirks of 6.1: it looks for the reason's value among the
    *link's* attributes (number 2, which is ``IFLA_BROADCAST``) and reads only its first byte."""
    if a[IFLA_PROTO_DOWN][0]:
        rec["proto_down"] = True
    reasons = a.get(IFLA_PROTO_DOWN_REASON)
    if reasons is None or IFLA_PROTO_DOWN_REASON_VALUE not in a:
        return
    value = w.attrs(reasons).get(IFLA_PROTO_DOWN_REASON_VALUE)
    reason = value[0] if value else 0
    if reason:
        rec["proto_down_reason"] = [names.protodown_reason(bit) for bit in range(8) if reason >> bit & 1]


def link_stats(payload: bytes, level: int) -> tuple[str, Record] | None:
    """The ``stats64`` object ``ip -s addr show`` appends after ``addr_info``."""
    return stats64(w.attrs(payload, IFINFOMSG.size), level)


def link_index(payload: bytes) -> int:
    return int(IFINFOMSG.unpack_from(payload)[2])


# -- addresses ---------------------------------------------------------------


def address(payload: bytes, names: n.Names) -> tuple[int, Record]:
    """``print_addrinfo``: ``(ifindex, one addr_info entry)``."""
    family, prefixlen, hdr_flags, scope, index = IFADDRMSG.unpack_from(payload)
    a = w.attrs(payload, IFADDRMSG.size)
    flags = w.u32(a[IFA_FLAGS]) if IFA_FLAGS in a else hdr_flags
    local = a.get(IFA_LOCAL, a.get(IFA_ADDRESS))
    peer = a.get(IFA_ADDRESS, local)
    rec: Record = {}
    family_name = n.FAMILIES.get(family)
    if family_name is not None:
        rec["family"] = family_name
    else:
        rec["family_index"] = family
    if local is not None:
        rec["local"] = w.ip(local)
        if peer is not None and peer[: 4 if family == AF_INET else 16] != local[: 4 if family == AF_INET else 16]:
            rec["address"] = w.ip(peer)
        rec["prefixlen"] = prefixlen
        if IFA_RT_PRIORITY in a:
            rec["metric"] = w.u32(a[IFA_RT_PRIORITY])
    if IFA_BROADCAST in a:
        rec["broadcast"] = w.ip(a[IFA_BROADCAST])
    if IFA_ANYCAST in a:
        rec["anycast"] = w.ip(a[IFA_ANYCAST])
    rec["scope"] = names.scope(scope)
    rest = flags
    for mask, name in IFA_FLAG_NAMES:
        if mask == IFA_F_PERMANENT:
            if not flags & mask:
                rec["dynamic"] = True
        elif flags & mask:
            rec["temporary" if mask == IFA_F_SECONDARY and family == AF_INET6 else name] = True
        rest &= ~mask
    if rest:
        rec["ifa_flags"] = f"{rest:02x}"
    if IFA_LABEL in a:
        rec["label"] = w.cstr(a[IFA_LABEL])
    info = a.get(IFA_CACHEINFO)
    if info is not None:
        preferred, valid = struct.unpack_from("=II", info)
        rec["valid_life_time"] = valid
        if preferred != INFINITY_LIFE_TIME and flags & IFA_F_DEPRECATED:
            preferred = struct.unpack("=i", struct.pack("=I", preferred))[0]
        rec["preferred_life_time"] = preferred
    return index, rec


# -- routes ------------------------------------------------------------------


def _prefix(raw: bytes | None, length: int, family: int) -> str:
    if raw is None:
        return f"0/{length}" if length else "default"
    return w.ip(raw) if length == _HOST_LEN.get(family, -1) else f"{w.ip(raw)}/{length}"


def rt_flags(flags: int) -> list[str]:
    return [name for bit, name in RT_FLAG_NAMES if flags & bit]


def _flow(raw: bytes, names: n.Names) -> Record:
    to = w.u32(raw)
    source, to = to >> 16, to & 0xFFFF
    out: Record = {}
    if source:
        out["from"] = names.realm(source)
    out["to"] = names.realm(to)
    return out


def _via(raw: bytes) -> Record:
    family = w.u16(raw)
    return {"family": n.FAMILIES.get(family, "???"), "host": w.ip(raw[2:])}


def encap(
    rec: Record, encap_type: bytes | None, raw: bytes | None, links: LinkTable, names: n.Names, stats: int = 0
) -> None:
    """``lwt_print_encap``: ``encap`` and the keys of its type, written into *rec*."""
    if encap_type is None:
        return
    kind = w.u16(encap_type)
    rec["encap"] = LWTUNNEL_ENCAP_TYPES.get(kind, "unknown")
    if raw is None:
        return
    a = w.attrs(raw)
    if kind == LWTUNNEL_ENCAP_IP:
        if LWTUNNEL_IP_ID in a:
            rec["id"] = w.be64(a[LWTUNNEL_IP_ID])
        if LWTUNNEL_IP_SRC in a:
            rec["src"] = w.ip(a[LWTUNNEL_IP_SRC][:4])
        if LWTUNNEL_IP_DST in a:
            rec["dst"] = w.ip(a[LWTUNNEL_IP_DST][:4])
        if LWTUNNEL_IP_TTL in a:
            rec["ttl"] = a[LWTUNNEL_IP_TTL][0]
        if LWTUNNEL_IP_TOS in a:
            rec["tos"] = a[LWTUNNEL_IP_TOS][0]
        _tunnel_flags(rec, a.get(LWTUNNEL_IP_FLAGS))
    elif kind == LWTUNNEL_ENCAP_IP6:
        if LWTUNNEL_IP6_ID in a:
            rec["id"] = w.be64(a[LWTUNNEL_IP6_ID])
        if LWTUNNEL_IP6_SRC in a:
            rec["src"] = w.ip(a[LWTUNNEL_IP6_SRC][:16])
        if LWTUNNEL_IP6_DST in a:
            rec["dst"] = w.ip(a[LWTUNNEL_IP6_DST][:16])
        if LWTUNNEL_IP6_HOPLIMIT in a:
            rec["hoplimit"] = a[LWTUNNEL_IP6_HOPLIMIT][0]
        if LWTUNNEL_IP6_TC in a:
            rec["tc"] = a[LWTUNNEL_IP6_TC][0]
        _tunnel_flags(rec, a.get(LWTUNNEL_IP6_FLAGS))
    elif kind == LWTUNNEL_ENCAP_SEG6:
        srh = a.get(SEG6_IPTUNNEL_SRH)
        if srh is None:
            return
        mode = w.s32(srh)
        rec["mode"] = SEG6_MODES[mode] if 0 <= mode < len(SEG6_MODES) else "<unknown>"
        _srh(rec, srh[4:])
    elif kind == LWTUNNEL_ENCAP_SEG6_LOCAL:
        _seg6local(rec, a, links, names, stats)


def _srh(rec: Record, header: bytes) -> None:
    """``print_srh``: the segments of an IPv6 segment routing header, last first, and its HMAC key id."""
    hdrlen, first_segment, flags = header[1], header[4], header[5]
    rec["segs"] = [w.ip(header[8 + 16 * i : 24 + 16 * i]) for i in range(first_segment, -1, -1)]
    if flags & SR6_FLAG1_HMAC:
        offset = ((hdrlen + 1) << 3) - 40  # struct sr6_tlv_hmac, its key id after 4 bytes
        rec["hmac"] = hex0x(w.be32(header[offset + 4 : offset + 8]))


def _seg6local(rec: Record, a: dict[int, bytes], links: LinkTable, names: n.Names, stats: int) -> None:
    """``print_encap_seg6local``: an SRv6 endpoint's action and what it takes."""
    if SEG6_LOCAL_ACTION not in a:
        return
    action = w.s32(a[SEG6_LOCAL_ACTION])
    if action < 0 or action >= len(SEG6_ACTIONS):
        rec["action"] = "<invalid>"
    else:
        rec["action"] = SEG6_ACTIONS[action] or "<unknown>"
    if SEG6_LOCAL_SRH in a:
        srh: Record = {}
        _srh(srh, a[SEG6_LOCAL_SRH])
        rec["srh"] = srh
    if SEG6_LOCAL_TABLE in a:
        rec["table"] = names.table(w.u32(a[SEG6_LOCAL_TABLE]))
    if SEG6_LOCAL_VRFTABLE in a:
        rec["vrftable"] = names.table(w.u32(a[SEG6_LOCAL_VRFTABLE]))
    if SEG6_LOCAL_NH4 in a:
        rec["nh4"] = w.ip(a[SEG6_LOCAL_NH4][:4])
    if SEG6_LOCAL_NH6 in a:
        rec["nh6"] = w.ip(a[SEG6_LOCAL_NH6][:16])
    if SEG6_LOCAL_IIF in a:
        rec["iif"] = links.name(w.u32(a[SEG6_LOCAL_IIF]))
    if SEG6_LOCAL_OIF in a:
        rec["oif"] = links.name(w.u32(a[SEG6_LOCAL_OIF]))
    if SEG6_LOCAL_BPF in a:
        prog = w.attrs(a[SEG6_LOCAL_BPF])
        rec["endpoint"] = w.cstr(prog[LWT_BPF_PROG_NAME]) if LWT_BPF_PROG_NAME in prog else "<unknown>"
    if SEG6_LOCAL_COUNTERS in a and stats:
        counters = w.attrs(a[SEG6_LOCAL_COUNTERS])
        rec["stats64"] = {
            key: w.u64(counters[attr]) if attr in counters else 0
            for key, attr in (
                ("packets", SEG6_LOCAL_CNT_PACKETS),
                ("bytes", SEG6_LOCAL_CNT_BYTES),
                ("errors", SEG6_LOCAL_CNT_ERRORS),
            )
        }
    if SEG6_LOCAL_FLAVORS in a:
        flavors = w.attrs(a[SEG6_LOCAL_FLAVORS])
        if SEG6_LOCAL_FLV_OPERATION in flavors:
            bits = w.u32(flavors[SEG6_LOCAL_FLV_OPERATION])
            rec["flavors"] = [name for i, name in enumerate(SEG6_FLAVORS) if name and bits & (1 << i)]
        if SEG6_LOCAL_FLV_LCBLOCK_BITS in flavors:
            rec["lblen"] = flavors[SEG6_LOCAL_FLV_LCBLOCK_BITS][0]
        if SEG6_LOCAL_FLV_LCNODE_FN_BITS in flavors:
            rec["nflen"] = flavors[SEG6_LOCAL_FLV_LCNODE_FN_BITS][0]


def _tunnel_flags(rec: Record, raw: bytes | None) -> None:
    if raw is None:
        return
    flags = w.be16(raw)
    if flags & TUNNEL_KEY:
        rec["key"] = True
    if flags & TUNNEL_CSUM:
        rec["csum"] = True
    if flags & TUNNEL_SEQ:
        rec["seq"] = True


def _metrics(raw: bytes) -> Record:
    """``print_rta_metrics``."""
    mx = w.attrs(raw)
    lock = w.u32(mx[RTAX_LOCK]) if RTAX_LOCK in mx else 0
    out: Record = {}
    for i in range(2, RTAX_MAX + 1):
        value_raw = mx.get(i)
        if value_raw is None and not lock & (1 << i):
            continue
        val = w.u32(value_raw) if value_raw is not None and i != RTAX_CC_ALGO else 0
        if i == RTAX_HOPLIMIT and val == 0xFFFFFFFF:
            continue
        key = n.RTAX_NAMES.get(i)
        if i == RTAX_FEATURES:
            if val & RTAX_FEATURE_ECN:
                out["ecn"] = None
            if val & ~RTAX_FEATURE_ECN:
                out["features"] = hex0x(val)
        elif i in (RTAX_RTT, RTAX_RTTVAR, RTAX_RTO_MIN):
            out[str(key)] = val // 8 if i == RTAX_RTT else val // 4 if i == RTAX_RTTVAR else val
        elif i == RTAX_CC_ALGO:
            out["congestion"] = w.cstr(value_raw) if value_raw is not None else ""
        else:
            out[str(key)] = val
    return out


def route(
    payload: bytes,
    links: LinkTable,
    names: n.Names,
    nexthops: dict[int, Record] | None = None,
    *,
    stats: int = 0,
    details: int = 0,
) -> Record | None:
    """``print_route``; None for what ``ip route show table all`` hides (cached clones)."""
    family, dst_len, src_len, tos, table8, protocol, scope, rtype, flags = RTMSG.unpack_from(payload)
    if flags & RTM_F_CLONED:
        return None
    a = w.attrs(payload, RTMSG.size)
    rec: Record = {}
    if rtype != RTN_UNICAST or details:
        rec["type"] = n.ROUTE_TYPES[rtype] if rtype < len(n.ROUTE_TYPES) else str(rtype)
    rec["dst"] = _prefix(a.get(RTA_DST), dst_len, family)
    if RTA_SRC in a:
        rec["from"] = _prefix(a[RTA_SRC], src_len, family)
    elif src_len:
        rec["src"] = f"0/{src_len}"
    if RTA_NH_ID in a:
        rec["nhid"] = w.u32(a[RTA_NH_ID])
    if RTA_NEWDST in a:
        rec["to"] = w.ip(a[RTA_NEWDST])
    if RTA_ENCAP in a:
        encap(rec, a.get(RTA_ENCAP_TYPE), a[RTA_ENCAP], links, names, stats)
    if tos:
        rec["tos"] = names.dsfield(tos)
    if RTA_GATEWAY in a:
        rec["gateway"] = w.ip(a[RTA_GATEWAY])
    if RTA_VIA in a:
        rec["via"] = _via(a[RTA_VIA])
    if RTA_OIF in a:
        rec["dev"] = links.name(w.u32(a[RTA_OIF]))
    table = w.u32(a[RTA_TABLE]) if RTA_TABLE in a else table8
    if table and (table != RT_TABLE_MAIN or details):
        rec["table"] = names.table(table)
    if protocol != RTPROT_BOOT or details:
        rec["protocol"] = names.protocol(protocol)
    if scope != 0 or details:
        rec["scope"] = names.scope(scope)
    if RTA_PREFSRC in a:
        rec["prefsrc"] = w.ip(a[RTA_PREFSRC])
    if RTA_PRIORITY in a:
        rec["metric"] = w.u32(a[RTA_PRIORITY])
    rec["flags"] = rt_flags(flags)
    if RTA_MARK in a:
        mark = w.u32(a[RTA_MARK])
        if mark:
            rec["mark"] = mark
    if RTA_FLOW in a:
        rec["flow"] = _flow(a[RTA_FLOW], names)
    if RTA_UID in a:
        rec["uid"] = w.u32(a[RTA_UID])
    if family in (AF_INET, AF_INET6) and RTA_CACHEINFO in a:
        _route_cacheinfo(rec, a[RTA_CACHEINFO], stats)
    if RTA_METRICS in a:
        rec["metrics"] = [_metrics(a[RTA_METRICS])]
    if RTA_IIF in a:
        rec["iif"] = links.name(w.u32(a[RTA_IIF]))
    if RTA_PREF in a:
        pref = a[RTA_PREF][0]
        rec["pref"] = ROUTER_PREFS.get(pref, pref)
    if RTA_TTL_PROPAGATE in a:
        rec["ttl-propogate"] = bool(a[RTA_TTL_PROPAGATE][0])
    if RTA_NH_ID in a and details and nexthops is not None:
        info = nexthops.get(w.u32(a[RTA_NH_ID]))
        if info is not None:
            rec["nh_info"] = info
    if RTA_MULTIPATH in a:
        rec["nexthops"] = _multipath(a[RTA_MULTIPATH], family, links, names, stats)
    return rec


def _route_cacheinfo(rec: Record, raw: bytes, stats: int) -> None:
    """``print_rta_cacheinfo``."""
    clntref, lastuse, expires, error, used, ipid, ts, tsage = RTA_CACHEINFO_FMT.unpack_from(raw)
    if expires:
        rec["expires"] = int(expires / USER_HZ)  # C division truncates toward zero
    if error:
        rec["error"] = error
    if stats:
        if clntref:
            rec["users"] = clntref
        if used:
            rec["used"] = used
        if lastuse:
            rec["age"] = lastuse // USER_HZ
    if ipid:
        rec["ipid"] = hex0x(ipid)
    if ts or tsage:
        rec["ts"] = hex0x(ts)
        rec["tsage"] = tsage


def _multipath(raw: bytes, family: int, links: LinkTable, names: n.Names, stats: int) -> list[Record]:
    """``print_rta_multipath``."""
    hops = []
    offset = 0
    while offset + RTNEXTHOP.size <= len(raw):
        length, flags, hops_, ifindex = RTNEXTHOP.unpack_from(raw, offset)
        if length < RTNEXTHOP.size or offset + length > len(raw):
            break
        hop: Record = {}
        if length > RTNEXTHOP.size:
            a = w.attrs(raw[offset + RTNEXTHOP.size : offset + length])
            if RTA_ENCAP in a:
                encap(hop, a.get(RTA_ENCAP_TYPE), a[RTA_ENCAP], links, names, stats)
            if RTA_NEWDST in a:
                hop["to"] = w.ip(a[RTA_NEWDST])
            if RTA_GATEWAY in a:
                hop["gateway"] = w.ip(a[RTA_GATEWAY])
            if RTA_VIA in a:
                hop["via"] = _via(a[RTA_VIA])
            if RTA_FLOW in a:
                hop["flow"] = _flow(a[RTA_FLOW], names)
        hop["dev"] = links.name(ifindex)
        if family != AF_MPLS:
            hop["weight"] = hops_ + 1
        hop["flags"] = rt_flags(flags)
        hops.append(hop)
        offset += (length + 3) & ~3
    return hops


# -- neighbours --------------------------------------------------------------


def neighbour(
    payload: bytes, links: LinkTable, names: n.Names, *, stats: int = 0, proxy: bool = False
) -> Record | None:
    """``print_neigh`` with ``ip neigh show``'s default filter; None for what it hides."""
    _family, ifindex, state, flags, _ntype = NDMSG.unpack_from(payload)
    if not proxy and not (state & (0xFF & ~NUD_NOARP)) and not flags & (NTF_PROXY | NTF_EXT_LEARNED):
        return None
    a = w.attrs(payload, NDMSG.size)
    rec: Record = {}
    if NDA_DST in a:
        rec["dst"] = w.ip(a[NDA_DST])
    if ifindex:
        rec["dev"] = links.name(ifindex)
    if NDA_LLADDR in a:
        rec["lladdr"] = ll_addr(a[NDA_LLADDR], links.types.get(ifindex, 0xFFFF))
    ext_flags = w.u32(a[NDA_FLAGS_EXT]) if NDA_FLAGS_EXT in a else 0
    if flags & NTF_ROUTER:
        rec["router"] = None
    if flags & NTF_PROXY:
        rec["proxy"] = None
    if ext_flags & NTF_EXT_MANAGED:
        rec["managed"] = None
    if flags & NTF_EXT_LEARNED:
        rec["extern_learn"] = None
    if flags & NTF_OFFLOADED:
        rec["offload"] = None
    if stats:
        info = a.get(NDA_CACHEINFO)
        if info is not None:
            confirmed, used, updated, refcnt = NDA_CACHEINFO_FMT.unpack_from(info)
            if refcnt:
                rec["refcnt"] = refcnt
            rec["used"] = used // USER_HZ
            rec["confirmed"] = confirmed // USER_HZ
            rec["updated"] = updated // USER_HZ
        if NDA_PROBES in a:
            rec["probes"] = w.u32(a[NDA_PROBES])
    if state:
        rec["state"] = n.flags_names(state, n.NUD_STATES)
    protocol = a[NDA_PROTOCOL][0] if NDA_PROTOCOL in a else 0
    if protocol:
        rec["protocol"] = names.protocol(protocol)
    return rec


# -- rules -------------------------------------------------------------------


def rule(payload: bytes, names: n.Names, protocols: dict[int, str], *, details: int = 0) -> Record:
    """``print_rule``; *protocols* is ``/etc/protocols`` by number (``inet_proto_n2a``)."""
    family, dst_len, src_len, tos, table8, _r1, _r2, action, flags = FIB_RULE_HDR.unpack_from(payload)
    a = w.attrs(payload, FIB_RULE_HDR.size)
    host_len = _HOST_LEN.get(family, -1)
    rec: Record = {"priority": w.u32(a[FRA_PRIORITY]) if FRA_PRIORITY in a else 0}
    if flags & FIB_RULE_INVERT:
        rec["not"] = None
    if FRA_SRC in a:
        rec["src"] = w.ip(a[FRA_SRC])
        if src_len != host_len:
            rec["srclen"] = src_len
    elif src_len:
        rec["src"] = "0"
        rec["srclen"] = src_len
    else:
        rec["src"] = "all"
    if FRA_DST in a:
        rec["dst"] = w.ip(a[FRA_DST])
        if dst_len != host_len:
            rec["dstlen"] = dst_len
    elif dst_len:
        rec["dst"] = "0"
        rec["dstlen"] = dst_len
    if tos:
        rec["tos"] = names.dsfield(tos)
    if FRA_FWMARK in a or FRA_FWMASK in a:
        mark = w.u32(a[FRA_FWMARK]) if FRA_FWMARK in a else 0
        rec["fwmark"] = hex0x(mark)
        if FRA_FWMASK in a:
            mask = w.u32(a[FRA_FWMASK])
            if mask != 0xFFFFFFFF:
                rec["fwmask"] = hex0x(mask)
    if FRA_IIFNAME in a:
        rec["iif"] = w.cstr(a[FRA_IIFNAME])
        if flags & FIB_RULE_IIF_DETACHED:
            rec["iif_detached"] = None
    if FRA_OIFNAME in a:
        rec["oif"] = w.cstr(a[FRA_OIFNAME])
        if flags & FIB_RULE_OIF_DETACHED:
            rec["oif_detached"] = None
    if FRA_L3MDEV in a and a[FRA_L3MDEV][0]:
        rec["l3mdev"] = None
    if FRA_UID_RANGE in a:
        rec["uid_start"], rec["uid_end"] = struct.unpack_from("=II", a[FRA_UID_RANGE])
    if FRA_IP_PROTO in a:
        proto = a[FRA_IP_PROTO][0]
        rec["ipproto"] = protocols.get(proto, f"ipproto-{proto}")
    for attr, key in ((FRA_SPORT_RANGE, "sport"), (FRA_DPORT_RANGE, "dport")):
        if attr in a:
            start, end = struct.unpack_from("=HH", a[attr])
            if start == end:
                rec[key] = start
            else:
                rec[f"{key}_start"] = start
                rec[f"{key}_end"] = end
    if FRA_TUN_ID in a:
        rec["tun_id"] = w.be64(a[FRA_TUN_ID])
    table = w.u32(a[FRA_TABLE]) if FRA_TABLE in a else table8
    if table:
        rec["table"] = names.table(table)
        if FRA_SUPPRESS_PREFIXLEN in a:
            length = w.s32(a[FRA_SUPPRESS_PREFIXLEN])
            if length != -1:
                rec["suppress_prefixlen"] = length
        if FRA_SUPPRESS_IFGROUP in a:
            group = w.s32(a[FRA_SUPPRESS_IFGROUP])
            if group != -1:
                rec["suppress_ifgroup"] = names.group(group)
    if FRA_FLOW in a:
        to = w.u32(a[FRA_FLOW])
        if to >> 16:
            rec["flow_from"] = names.realm(to >> 16)
        rec["flow_to"] = names.realm(to & 0xFFFF)
    if action == RTN_NAT:
        if RTA_GATEWAY in a:
            rec["nat_gateway"] = w.ip(a[RTA_GATEWAY])
        else:
            rec["masquerade"] = None
    elif action == FR_ACT_GOTO:
        rec["goto"] = w.u32(a[FRA_GOTO]) if FRA_GOTO in a else "none"
        if flags & FIB_RULE_UNRESOLVED:
            rec["unresolved"] = None
    elif action == FR_ACT_NOP:
        rec["nop"] = None
    elif action != FR_ACT_TO_TBL:
        rec["action"] = n.ROUTE_TYPES[action] if action < len(n.ROUTE_TYPES) else str(action)
    if FRA_PROTOCOL in a:
        protocol = a[FRA_PROTOCOL][0]
        if (protocol and protocol != RTPROT_KERNEL) or details:
            rec["protocol"] = names.protocol(protocol)
    return rec


# -- nexthops ----------------------------------------------------------------


def _jiffies_seconds(jiffies: int) -> float | int:
    """``__jiffies_to_tv`` + ``print_tv`` (JSON prints a double)."""
    value = jiffies / USER_HZ
    return int(value) if value == int(value) else value


def nexthop(payload: bytes, links: LinkTable, names: n.Names, *, stats: int = 0, details: int = 0) -> Record:
    """``__print_nexthop_entry``: one nexthop object as ``ip -j nexthop show`` prints it."""
    _family, scope, protocol, _resvd, flags = NHMSG.unpack_from(payload)
    a = w.attrs(payload, NHMSG.size)
    rec: Record = {"id": w.u32(a[NHA_ID]) if NHA_ID in a else 0}
    group = a.get(NHA_GROUP)
    if group:
        members = []
        for offset in range(0, len(group) - NEXTHOP_GRP.size + 1, NEXTHOP_GRP.size):
            member_id, weight, _ = NEXTHOP_GRP.unpack_from(group, offset)
            member: Record = {"id": member_id}
            if weight:
                member["weight"] = weight + 1
            members.append(member)
        rec["group"] = members
    group_type = w.u16(a[NHA_GROUP_TYPE]) if NHA_GROUP_TYPE in a else NEXTHOP_GRP_TYPE_MPATH
    if group_type != NEXTHOP_GRP_TYPE_MPATH:
        rec["type"] = "resilient" if group_type == 1 else "<unknown type>"
    if NHA_RES_GROUP in a:
        res = w.attrs(a[NHA_RES_GROUP])
        rec["resilient_args"] = {
            "buckets": w.u16(res[NHA_RES_GROUP_BUCKETS]) if NHA_RES_GROUP_BUCKETS in res else 0,
            "idle_timer": _jiffies_seconds(
                w.u32(res[NHA_RES_GROUP_IDLE_TIMER]) if NHA_RES_GROUP_IDLE_TIMER in res else 0
            ),
            "unbalanced_timer": _jiffies_seconds(
                w.u32(res[NHA_RES_GROUP_UNBALANCED_TIMER]) if NHA_RES_GROUP_UNBALANCED_TIMER in res else 0
            ),
            "unbalanced_time": _jiffies_seconds(
                w.u64(res[NHA_RES_GROUP_UNBALANCED_TIME]) if NHA_RES_GROUP_UNBALANCED_TIME in res else 0
            ),
        }
    if NHA_ENCAP in a:
        encap(rec, a.get(NHA_ENCAP_TYPE), a[NHA_ENCAP], links, names, stats)
    if NHA_GATEWAY in a:
        rec["gateway"] = w.ip(a[NHA_GATEWAY])
    if NHA_OIF in a:
        oif = w.u32(a[NHA_OIF])
        if oif:
            rec["dev"] = links.name(oif)
    if scope != 0 or details:
        rec["scope"] = names.scope(scope)
    if NHA_BLACKHOLE in a:
        rec["blackhole"] = None
    if protocol != 0 or details:
        rec["protocol"] = names.protocol(protocol)
    rec["flags"] = rt_flags(flags)
    if NHA_FDB in a:
        rec["fdb"] = None
    return rec

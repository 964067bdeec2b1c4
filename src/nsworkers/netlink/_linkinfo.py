"""What ``ip -d`` adds to a link: ``print_linkinfo``'s details block and ``print_linktype``.

The per-kind ``info_data`` / ``info_slave_data`` objects follow the
``print_opt`` functions of iproute2 6.1's ``ip/iplink_<kind>.c``; a kind
with no ``print_opt`` there prints ``info_kind`` alone (veth, ifb ...).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from typing import Any

from . import _records as r
from . import _wire as w

Record = dict[str, Any]
KindPrinter = Callable[[dict[int, bytes], "r.LinkTable"], Record]

# include/uapi/linux/if_link.h IN6_ADDR_GEN_MODE_* as ip/ipaddress.c print_af_spec() names them
_ADDR_GEN_MODES = {0: "eui64", 1: "none", 2: "stable_secret", 3: "random"}
_AF_INET6 = 10

# ip/ipaddress.c print_linkinfo(), show_details block: (IFLA_*, key) printed as u32
_DETAIL_U32_FIRST = ((r.IFLA_PROMISCUITY, "promiscuity"), (r.IFLA_ALLMULTI, "allmulti"))
_DETAIL_MTU = ((r.IFLA_MIN_MTU, "min_mtu"), (r.IFLA_MAX_MTU, "max_mtu"))
_DETAIL_U32_AFTER = (
    (r.IFLA_NUM_TX_QUEUES, "num_tx_queues"),
    (r.IFLA_NUM_RX_QUEUES, "num_rx_queues"),
    (r.IFLA_GSO_MAX_SIZE, "gso_max_size"),
    (r.IFLA_GSO_MAX_SEGS, "gso_max_segs"),
    (r.IFLA_TSO_MAX_SIZE, "tso_max_size"),
    (r.IFLA_TSO_MAX_SEGS, "tso_max_segs"),
    (r.IFLA_GRO_MAX_SIZE, "gro_max_size"),
)


def link_details(rec: Record, a: dict[int, bytes], links: r.LinkTable, *, do_link: bool) -> None:
    """Add ``ip -d``'s keys for one link to *rec* (in ``print_linkinfo``'s order)."""
    for attr, key in _DETAIL_U32_FIRST + _DETAIL_MTU:
        if attr in a:
            rec[key] = w.u32(a[attr])
    if r.IFLA_LINKINFO in a:
        rec["linkinfo"] = linktype(a[r.IFLA_LINKINFO], links)
    if do_link and r.IFLA_AF_SPEC in a:
        inet6 = w.attrs(a[r.IFLA_AF_SPEC]).get(_AF_INET6)
        if inet6 is not None:
            mode = w.attrs(inet6).get(r.IFLA_INET6_ADDR_GEN_MODE)
            if mode is not None:
                rec["inet6_addr_gen_mode"] = _ADDR_GEN_MODES.get(mode[0], f"0x{mode[0]:02x}")
    for attr, key in _DETAIL_U32_AFTER:
        if attr in a:
            rec[key] = w.u32(a[attr])
    for attr, key in ((r.IFLA_PHYS_PORT_NAME, "phys_port_name"),):
        if attr in a:
            rec[key] = w.cstr(a[attr])
    for attr, key in ((r.IFLA_PHYS_PORT_ID, "phys_port_id"), (r.IFLA_PHYS_SWITCH_ID, "phys_switch_id")):
        if attr in a:
            rec[key] = a[attr].hex()
    for attr, key in ((r.IFLA_PARENT_DEV_BUS_NAME, "parentbus"), (r.IFLA_PARENT_DEV_NAME, "parentdev")):
        if attr in a:
            rec[key] = w.cstr(a[attr])


def linktype(raw: bytes, links: r.LinkTable) -> Record:
    """``print_linktype``: the ``linkinfo`` object."""
    info = w.attrs(raw)
    out: Record = {}
    if r.IFLA_INFO_KIND in info:
        kind = w.cstr(info[r.IFLA_INFO_KIND])
        out["info_kind"] = kind
        printer = KINDS.get(kind)
        if printer is not None:
            data = w.attrs(info[r.IFLA_INFO_DATA]) if r.IFLA_INFO_DATA in info else {}
            out["info_data"] = printer(data, links)
    if r.IFLA_INFO_SLAVE_KIND in info:
        kind = w.cstr(info[r.IFLA_INFO_SLAVE_KIND])
        out["info_slave_kind"] = kind
        printer = KINDS.get(f"{kind}_slave")
        if printer is not None:
            data = w.attrs(info[r.IFLA_INFO_SLAVE_DATA]) if r.IFLA_INFO_SLAVE_DATA in info else {}
            out["info_slave_data"] = printer(data, links)
    return out


KINDS: dict[str, KindPrinter] = {}


# -- the per-kind attribute numbers, as iproute2 6.1's copy of the kernel header has them


class BR(enum.IntEnum):
    """``IFLA_BR_*`` (include/uapi/linux/if_link.h)."""

    FORWARD_DELAY = 1
    HELLO_TIME = 2
    MAX_AGE = 3
    AGEING_TIME = 4
    STP_STATE = 5
    PRIORITY = 6
    VLAN_FILTERING = 7
    VLAN_PROTOCOL = 8
    GROUP_FWD_MASK = 9
    ROOT_ID = 10
    BRIDGE_ID = 11
    ROOT_PORT = 12
    ROOT_PATH_COST = 13
    TOPOLOGY_CHANGE = 14
    TOPOLOGY_CHANGE_DETECTED = 15
    HELLO_TIMER = 16
    TCN_TIMER = 17
    TOPOLOGY_CHANGE_TIMER = 18
    GC_TIMER = 19
    GROUP_ADDR = 20
    FDB_FLUSH = 21
    MCAST_ROUTER = 22
    MCAST_SNOOPING = 23
    MCAST_QUERY_USE_IFADDR = 24
    MCAST_QUERIER = 25
    MCAST_HASH_ELASTICITY = 26
    MCAST_HASH_MAX = 27
    MCAST_LAST_MEMBER_CNT = 28
    MCAST_STARTUP_QUERY_CNT = 29
    MCAST_LAST_MEMBER_INTVL = 30
    MCAST_MEMBERSHIP_INTVL = 31
    MCAST_QUERIER_INTVL = 32
    MCAST_QUERY_INTVL = 33
    MCAST_QUERY_RESPONSE_INTVL = 34
    MCAST_STARTUP_QUERY_INTVL = 35
    NF_CALL_IPTABLES = 36
    NF_CALL_IP6TABLES = 37
    NF_CALL_ARPTABLES = 38
    VLAN_DEFAULT_PVID = 39
    PAD = 40
    VLAN_STATS_ENABLED = 41
    MCAST_STATS_ENABLED = 42
    MCAST_IGMP_VERSION = 43
    MCAST_MLD_VERSION = 44
    VLAN_STATS_PER_PORT = 45
    MULTI_BOOLOPT = 46
    MCAST_QUERIER_STATE = 47


class BRPORT(enum.IntEnum):
    """``IFLA_BRPORT_*`` (include/uapi/linux/if_link.h)."""

    STATE = 1
    PRIORITY = 2
    COST = 3
    MODE = 4
    GUARD = 5
    PROTECT = 6
    FAST_LEAVE = 7
    LEARNING = 8
    UNICAST_FLOOD = 9
    PROXYARP = 10
    LEARNING_SYNC = 11
    PROXYARP_WIFI = 12
    ROOT_ID = 13
    BRIDGE_ID = 14
    DESIGNATED_PORT = 15
    DESIGNATED_COST = 16
    ID = 17
    NO = 18
    TOPOLOGY_CHANGE_ACK = 19
    CONFIG_PENDING = 20
    MESSAGE_AGE_TIMER = 21
    FORWARD_DELAY_TIMER = 22
    HOLD_TIMER = 23
    FLUSH = 24
    MULTICAST_ROUTER = 25
    PAD = 26
    MCAST_FLOOD = 27
    MCAST_TO_UCAST = 28
    VLAN_TUNNEL = 29
    BCAST_FLOOD = 30
    GROUP_FWD_MASK = 31
    NEIGH_SUPPRESS = 32
    ISOLATED = 33
    BACKUP_PORT = 34
    MRP_RING_OPEN = 35
    MRP_IN_OPEN = 36
    MCAST_EHT_HOSTS_LIMIT = 37
    MCAST_EHT_HOSTS_CNT = 38
    LOCKED = 39


class VXLAN(enum.IntEnum):
    """``IFLA_VXLAN_*`` (include/uapi/linux/if_link.h)."""

    ID = 1
    GROUP = 2
    LINK = 3
    LOCAL = 4
    TTL = 5
    TOS = 6
    LEARNING = 7
    AGEING = 8
    LIMIT = 9
    PORT_RANGE = 10
    PROXY = 11
    RSC = 12
    L2MISS = 13
    L3MISS = 14
    PORT = 15
    GROUP6 = 16
    LOCAL6 = 17
    UDP_CSUM = 18
    UDP_ZERO_CSUM6_TX = 19
    UDP_ZERO_CSUM6_RX = 20
    REMCSUM_TX = 21
    REMCSUM_RX = 22
    GBP = 23
    REMCSUM_NOPARTIAL = 24
    COLLECT_METADATA = 25
    LABEL = 26
    GPE = 27
    TTL_INHERIT = 28
    DF = 29
    VNIFILTER = 30


class TUN(enum.IntEnum):
    """``IFLA_TUN_*`` (include/uapi/linux/if_link.h)."""

    OWNER = 1
    GROUP = 2
    TYPE = 3
    PI = 4
    VNET_HDR = 5
    PERSIST = 6
    MULTI_QUEUE = 7
    NUM_QUEUES = 8
    NUM_DISABLED_QUEUES = 9


class MACVLAN(enum.IntEnum):
    """``IFLA_MACVLAN_*`` (include/uapi/linux/if_link.h)."""

    MODE = 1
    FLAGS = 2
    MACADDR_MODE = 3
    MACADDR = 4
    MACADDR_DATA = 5
    MACADDR_COUNT = 6
    BC_QUEUE_LEN = 7
    BC_QUEUE_LEN_USED = 8


# -- value printers shared by the kinds ------------------------------------------


def _u8(raw: bytes) -> int:
    return raw[0]


def _on_off(raw: bytes) -> bool:
    """``print_on_off``: JSON prints a bool."""
    return bool(raw[0])


def _timer(raw: bytes) -> float:
    """``_bridge_print_timer``: clock ticks printed as ``%i.%.2i`` seconds."""
    ticks = w.u64(raw)
    return float(f"{ticks // r.USER_HZ}.{ticks % r.USER_HZ * 100 // r.USER_HZ:02d}")


def _bridge_id(raw: bytes) -> str:
    """``br_dump_bridge_id``: priority in hex, then the MAC as ``ether_ntoa`` prints it (no leading zeros)."""
    return f"{raw[0]:02x}{raw[1]:02x}." + ":".join(f"{b:x}" for b in raw[2:8])


def _hex16(raw: bytes) -> str:
    return r.hex0x(w.u16(raw))


_VLAN_PROTOCOLS = {0x8100: "802.1Q", 0x88A8: "802.1ad"}  # lib/ll_proto.c llproto_names[]


def _vlan_protocol(raw: bytes) -> str:
    proto = w.be16(raw)
    return _VLAN_PROTOCOLS.get(proto, f"[{proto}]")


Field = tuple[int, str, Callable[[bytes], Any]]


def _fields(data: dict[int, bytes], fields: tuple[Field, ...], out: Record) -> None:
    for attr, key, decode in fields:
        raw = data.get(attr)
        if raw is not None:
            out[key] = decode(raw)


# ip/iplink_bridge.c bridge_print_opt(), IFLA_BR_* from include/uapi/linux/if_link.h
_BRIDGE_HEAD: tuple[Field, ...] = (
    (BR.FORWARD_DELAY, "forward_delay", w.u32),
    (BR.HELLO_TIME, "hello_time", w.u32),
    (BR.MAX_AGE, "max_age", w.u32),
    (BR.AGEING_TIME, "ageing_time", w.u32),
    (BR.STP_STATE, "stp_state", w.u32),
    (BR.PRIORITY, "priority", w.u16),
    (BR.VLAN_FILTERING, "vlan_filtering", _u8),
    (BR.VLAN_PROTOCOL, "vlan_protocol", _vlan_protocol),
)
_BRIDGE_MIDDLE: tuple[Field, ...] = (
    (BR.ROOT_PORT, "root_port", w.u16),
    (BR.ROOT_PATH_COST, "root_path_cost", w.u32),
    (BR.TOPOLOGY_CHANGE, "topology_change", _u8),
    (BR.TOPOLOGY_CHANGE_DETECTED, "topology_change_detected", _u8),
    (BR.HELLO_TIMER, "hello_timer", _timer),
    (BR.TCN_TIMER, "tcn_timer", _timer),
    (BR.TOPOLOGY_CHANGE_TIMER, "topology_change_timer", _timer),
    (BR.GC_TIMER, "gc_timer", _timer),
    (BR.VLAN_DEFAULT_PVID, "vlan_default_pvid", w.u16),
    (BR.VLAN_STATS_ENABLED, "vlan_stats_enabled", _u8),
    (BR.VLAN_STATS_PER_PORT, "vlan_stats_per_port", _u8),
    (BR.GROUP_FWD_MASK, "group_fwd_mask", _hex16),
    (BR.GROUP_ADDR, "group_addr", r.mac),
    (BR.MCAST_SNOOPING, "mcast_snooping", _u8),
)
_BRIDGE_TAIL: tuple[Field, ...] = (
    (BR.MCAST_ROUTER, "mcast_router", _u8),
    (BR.MCAST_QUERY_USE_IFADDR, "mcast_query_use_ifaddr", _u8),
    (BR.MCAST_QUERIER, "mcast_querier", _u8),
    (BR.MCAST_HASH_ELASTICITY, "mcast_hash_elasticity", w.u32),
    (BR.MCAST_HASH_MAX, "mcast_hash_max", w.u32),
    (BR.MCAST_LAST_MEMBER_CNT, "mcast_last_member_cnt", w.u32),
    (BR.MCAST_STARTUP_QUERY_CNT, "mcast_startup_query_cnt", w.u32),
    (BR.MCAST_LAST_MEMBER_INTVL, "mcast_last_member_intvl", w.u64),
    (BR.MCAST_MEMBERSHIP_INTVL, "mcast_membership_intvl", w.u64),
    (BR.MCAST_QUERIER_INTVL, "mcast_querier_intvl", w.u64),
    (BR.MCAST_QUERY_INTVL, "mcast_query_intvl", w.u64),
    (BR.MCAST_QUERY_RESPONSE_INTVL, "mcast_query_response_intvl", w.u64),
    (BR.MCAST_STARTUP_QUERY_INTVL, "mcast_startup_query_intvl", w.u64),
    (BR.MCAST_STATS_ENABLED, "mcast_stats_enabled", _u8),
    (BR.MCAST_IGMP_VERSION, "mcast_igmp_version", _u8),
    (BR.MCAST_MLD_VERSION, "mcast_mld_version", _u8),
    (BR.NF_CALL_IPTABLES, "nf_call_iptables", _u8),
    (BR.NF_CALL_IP6TABLES, "nf_call_ip6tables", _u8),
    (BR.NF_CALL_ARPTABLES, "nf_call_arptables", _u8),
)
_BR_BOOLOPT_NO_LL_LEARN, _BR_BOOLOPT_MCAST_VLAN_SNOOPING = 0, 1


def bridge(data: dict[int, bytes], links: r.LinkTable) -> Record:
    out: Record = {}
    _fields(data, _BRIDGE_HEAD, out)
    if BR.BRIDGE_ID in data:
        out["bridge_id"] = _bridge_id(data[BR.BRIDGE_ID])
    if BR.ROOT_ID in data:  # iproute2 6.1 prints IFLA_BR_BRIDGE_ID here too (a bug kept for parity)
        out["root_id"] = _bridge_id(data[BR.BRIDGE_ID]) if BR.BRIDGE_ID in data else _bridge_id(data[BR.ROOT_ID])
    _fields(data, _BRIDGE_MIDDLE, out)
    if BR.MULTI_BOOLOPT in data:  # IFLA_BR_MULTI_BOOLOPT: struct br_boolopt_multi {optval, optmask}
        optval, optmask = struct.unpack_from("=II", data[BR.MULTI_BOOLOPT])
        if optmask & 1 << _BR_BOOLOPT_NO_LL_LEARN:
            out["no_linklocal_learn"] = int(bool(optval & 1 << _BR_BOOLOPT_NO_LL_LEARN))
        if optmask & 1 << _BR_BOOLOPT_MCAST_VLAN_SNOOPING:
            out["mcast_vlan_snooping"] = int(bool(optval & 1 << _BR_BOOLOPT_MCAST_VLAN_SNOOPING))
    _fields(data, _BRIDGE_TAIL, out)
    return out


# ip/iplink_bridge_slave.c bridge_slave_print_opt(), IFLA_BRPORT_*
_PORT_STATES = ("disabled", "listening", "learning", "forwarding", "blocking")
_FWD_MASK_NAMES = {0: "stp", 2: "lacp", 14: "lldp"}
_PORT_HEAD: tuple[Field, ...] = (
    (BRPORT.PRIORITY, "priority", w.u16),
    (BRPORT.COST, "cost", w.u32),
    (BRPORT.MODE, "hairpin", _on_off),
    (BRPORT.GUARD, "guard", _on_off),
    (BRPORT.PROTECT, "root_block", _on_off),
    (BRPORT.FAST_LEAVE, "fastleave", _on_off),
    (BRPORT.LEARNING, "learning", _on_off),
    (BRPORT.UNICAST_FLOOD, "flood", _on_off),
    (BRPORT.ID, "id", _hex16),
    (BRPORT.NO, "no", _hex16),
    (BRPORT.DESIGNATED_PORT, "designated_port", w.u16),
    (BRPORT.DESIGNATED_COST, "designated_cost", w.u16),
    (BRPORT.BRIDGE_ID, "bridge_id", _bridge_id),
    (BRPORT.ROOT_ID, "root_id", _bridge_id),
    (BRPORT.HOLD_TIMER, "hold_timer", _timer),
    (BRPORT.MESSAGE_AGE_TIMER, "message_age_timer", _timer),
    (BRPORT.FORWARD_DELAY_TIMER, "forward_delay_timer", _timer),
    (BRPORT.TOPOLOGY_CHANGE_ACK, "topology_change_ack", _u8),
    (BRPORT.CONFIG_PENDING, "config_pending", _u8),
    (BRPORT.PROXYARP, "proxy_arp", _on_off),
    (BRPORT.PROXYARP_WIFI, "proxy_arp_wifi", _on_off),
    (BRPORT.MULTICAST_ROUTER, "multicast_router", _u8),
    (BRPORT.MCAST_FLOOD, "mcast_flood", _on_off),
    (BRPORT.BCAST_FLOOD, "bcast_flood", _on_off),
    (BRPORT.MCAST_TO_UCAST, "mcast_to_unicast", _on_off),
    (BRPORT.NEIGH_SUPPRESS, "neigh_suppress", _on_off),
)
_PORT_TAIL: tuple[Field, ...] = (
    (BRPORT.VLAN_TUNNEL, "vlan_tunnel", _on_off),
    (BRPORT.ISOLATED, "isolated", _on_off),
    (BRPORT.LOCKED, "locked", _on_off),
)


def _fwd_mask_str(mask: int) -> str:
    """``_bitmask2str``."""
    parts = [_FWD_MASK_NAMES.get(i, f"0x{1 << i:x}") for i in range(16) if mask >> i & 1]
    return ",".join(parts) if parts else "0x0"


def bridge_slave(data: dict[int, bytes], links: r.LinkTable) -> Record:
    out: Record = {}
    if BRPORT.STATE in data:
        state = data[BRPORT.STATE][0]
        if state < len(_PORT_STATES):
            out["state"] = _PORT_STATES[state]
        else:
            out["state_index"] = state
    _fields(data, _PORT_HEAD, out)
    if BRPORT.GROUP_FWD_MASK in data:
        mask = w.u16(data[BRPORT.GROUP_FWD_MASK])
        out["group_fwd_mask"] = r.hex0x(mask)
        out["group_fwd_mask_str"] = _fwd_mask_str(mask)
    _fields(data, _PORT_TAIL, out)
    if BRPORT.BACKUP_PORT in data:
        out["backup_port"] = links.name(w.u32(data[BRPORT.BACKUP_PORT]))
    return out


# ip/iplink_macvlan.c macvlan_print_opt(), IFLA_MACVLAN_*
_MACVLAN_MODES = {1: "private", 2: "vepa", 4: "bridge", 8: "passthru", 16: "source"}


def macvlan(data: dict[int, bytes], links: r.LinkTable) -> Record:
    out: Record = {}
    if 1 not in data or len(data[MACVLAN.MODE]) < 4:
        return out
    mode = w.u32(data[MACVLAN.MODE])
    out["mode"] = _MACVLAN_MODES.get(mode, "unknown")
    flags = w.u16(data[MACVLAN.FLAGS]) if MACVLAN.FLAGS in data and len(data[MACVLAN.FLAGS]) >= 2 else 0
    if flags & 1:
        out["nopromisc"] = True
    if flags & 2:
        out["nodst"] = True
    for attr, key in ((MACVLAN.BC_QUEUE_LEN, "bcqueuelen"), (MACVLAN.BC_QUEUE_LEN_USED, "usedbcqueuelen")):
        if attr in data and len(data[attr]) >= 4:
            out[key] = w.u32(data[attr])
    if mode != 16 or 6 not in data or len(data[MACVLAN.MACADDR_COUNT]) < 4:
        return out
    out["macaddr_count"] = w.s32(data[MACVLAN.MACADDR_COUNT])
    if MACVLAN.MACADDR_DATA in data:
        out["macaddr_data"] = [
            r.mac(v[:6]) for k, v in w.attr_list(data[MACVLAN.MACADDR_DATA]) if k == MACVLAN.MACADDR and len(v) >= 6
        ]
    return out


# ip/iptuntap.c tun_print_opt(), IFLA_TUN_*
def _passwd_name(path: str, number: int) -> str | None:
    """The name of *number* in ``/etc/passwd`` or ``/etc/group`` as the caller sees it (``getpwuid``)."""
    from ._names import _read

    for line in (_read(path) or "").splitlines():
        fields = line.split(":")
        if len(fields) > 2 and fields[2] == str(number):
            return fields[0]
    return None


def tun(data: dict[int, bytes], links: r.LinkTable) -> Record:
    out: Record = {}
    if TUN.TYPE in data:
        kind = data[TUN.TYPE][0]
        out["type"] = {1: "tun", 2: "tap"}.get(kind, f"UNKNOWN:{kind}")
    if TUN.PI in data:
        out["pi"] = _on_off(data[TUN.PI])
    if TUN.VNET_HDR in data:
        out["vnet_hdr"] = _on_off(data[TUN.VNET_HDR])
    if TUN.MULTI_QUEUE in data and data[TUN.MULTI_QUEUE][0]:
        out["multi_queue"] = True
        if TUN.NUM_QUEUES in data:
            out["numqueues"] = w.u32(data[TUN.NUM_QUEUES])
        if TUN.NUM_DISABLED_QUEUES in data:
            out["numdisabled"] = w.u32(data[TUN.NUM_DISABLED_QUEUES])
    else:
        out["multi_queue"] = False
    if TUN.PERSIST in data:
        out["persist"] = _on_off(data[TUN.PERSIST])
    for attr, key, path in ((TUN.OWNER, "user", "/etc/passwd"), (TUN.GROUP, "group", "/etc/group")):
        if attr in data:
            number = w.u32(data[attr])
            name = _passwd_name(path, number)
            out[key] = name if name is not None else number
    return out


# ip/iplink_vxlan.c vxlan_print_opt(), IFLA_VXLAN_*
def vxlan(data: dict[int, bytes], links: r.LinkTable) -> Record:
    out: Record = {}
    if VXLAN.COLLECT_METADATA in data and data[VXLAN.COLLECT_METADATA][0]:
        out["external"] = True
    if VXLAN.VNIFILTER in data and data[VXLAN.VNIFILTER][0]:
        out["vnifilter"] = True
    if VXLAN.ID in data and len(data[VXLAN.ID]) >= 4:
        out["id"] = w.u32(data[VXLAN.ID])
    if VXLAN.GROUP in data:
        group = data[VXLAN.GROUP][:4]
        if group != bytes(4):
            out["group" if 224 <= group[0] <= 239 else "remote"] = w.ip(group)
    elif VXLAN.GROUP6 in data:
        group6 = data[VXLAN.GROUP6][:16]
        if group6 != bytes(16):
            out["group6" if group6[0] == 0xFF else "remote6"] = w.ip(group6)
    if VXLAN.LOCAL in data:
        if data[VXLAN.LOCAL][:4] != bytes(4):
            out["local"] = w.ip(data[VXLAN.LOCAL][:4])
    elif VXLAN.LOCAL6 in data and data[VXLAN.LOCAL6][:16] != bytes(16):
        out["local6"] = w.ip(data[VXLAN.LOCAL6][:16])
    if VXLAN.LINK in data:
        link = w.u32(data[VXLAN.LINK])
        if link:
            out["link"] = links.name(link)
    if VXLAN.PORT_RANGE in data:
        low, high = struct.unpack_from("!HH", data[VXLAN.PORT_RANGE])
        out["port_range"] = {"low": low, "high": high}
    if VXLAN.PORT in data:
        out["port"] = w.be16(data[VXLAN.PORT])
    if VXLAN.LEARNING in data:
        out["learning"] = bool(data[VXLAN.LEARNING][0])
    for attr, key in ((VXLAN.PROXY, "proxy"), (VXLAN.RSC, "rsc"), (VXLAN.L2MISS, "l2miss"), (VXLAN.L3MISS, "l3miss")):
        if attr in data and data[attr][0]:
            out[key] = True
    tos = data[VXLAN.TOS][0] if VXLAN.TOS in data else 0
    if tos:
        out["tos"] = r.hex0x(tos)
    if VXLAN.TTL_INHERIT in data and data[VXLAN.TTL_INHERIT][0]:
        pass  # "ttl inherit" is printed to text only
    elif VXLAN.TTL in data:
        out["ttl"] = data[VXLAN.TTL][0]
    if VXLAN.DF in data:
        df = data[VXLAN.DF][0]
        if df < 3:
            out["df"] = ("unset", "set", "inherit")[df]
    if VXLAN.LABEL in data:
        label = w.be32(data[VXLAN.LABEL])
        if label:
            out["label"] = r.hex0x(label)
    if VXLAN.AGEING in data:
        out["ageing"] = w.u32(data[VXLAN.AGEING])
    if VXLAN.LIMIT in data:
        limit = w.u32(data[VXLAN.LIMIT])
        if limit:
            out["limit"] = limit
    for attr, key in (
        (VXLAN.UDP_CSUM, "udp_csum"),
        (VXLAN.UDP_ZERO_CSUM6_TX, "udp_zero_csum6_tx"),
        (VXLAN.UDP_ZERO_CSUM6_RX, "udp_zero_csum6_rx"),
    ):
        if attr in data:
            out[key] = bool(data[attr][0])
    for attr, key in ((VXLAN.REMCSUM_TX, "remcsum_tx"), (VXLAN.REMCSUM_RX, "remcsum_rx")):
        if attr in data and data[attr][0]:
            out[key] = True
    if VXLAN.GBP in data:
        out["gbp"] = True
    if VXLAN.GPE in data:
        out["gpe"] = True
    return out


KINDS.update(
    {
        "bridge": bridge,
        "bridge_slave": bridge_slave,
        "macvlan": macvlan,
        "macvtap": macvlan,
        "tun": tun,
        "vxlan": vxlan,
    }
)

"""What ``ip -d`` adds to a link: ``print_linkinfo``'s details block and ``print_linktype``.

The per-kind ``info_data`` / ``info_slave_data`` objects follow the
``print_opt`` functions of iproute2 6.1's ``ip/iplink_<kind>.c``; a kind
with no ``print_opt`` there prints ``info_kind`` alone (veth, ifb ...).
"""

from __future__ import annotations

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
    (1, "forward_delay", w.u32), (2, "hello_time", w.u32), (3, "max_age", w.u32), (4, "ageing_time", w.u32),
    (5, "stp_state", w.u32), (6, "priority", w.u16), (7, "vlan_filtering", _u8), (8, "vlan_protocol", _vlan_protocol),
)  # fmt: skip
_BRIDGE_MIDDLE: tuple[Field, ...] = (
    (12, "root_port", w.u16), (13, "root_path_cost", w.u32), (14, "topology_change", _u8),
    (15, "topology_change_detected", _u8), (16, "hello_timer", _timer), (17, "tcn_timer", _timer),
    (18, "topology_change_timer", _timer), (19, "gc_timer", _timer), (39, "vlan_default_pvid", w.u16),
    (41, "vlan_stats_enabled", _u8), (45, "vlan_stats_per_port", _u8), (9, "group_fwd_mask", _hex16),
    (20, "group_addr", r.mac), (23, "mcast_snooping", _u8),
)  # fmt: skip
_BRIDGE_TAIL: tuple[Field, ...] = (
    (22, "mcast_router", _u8), (24, "mcast_query_use_ifaddr", _u8), (25, "mcast_querier", _u8),
    (26, "mcast_hash_elasticity", w.u32), (27, "mcast_hash_max", w.u32), (28, "mcast_last_member_cnt", w.u32),
    (29, "mcast_startup_query_cnt", w.u32), (30, "mcast_last_member_intvl", w.u64),
    (31, "mcast_membership_intvl", w.u64), (32, "mcast_querier_intvl", w.u64), (33, "mcast_query_intvl", w.u64),
    (34, "mcast_query_response_intvl", w.u64), (35, "mcast_startup_query_intvl", w.u64),
    (42, "mcast_stats_enabled", _u8), (43, "mcast_igmp_version", _u8), (44, "mcast_mld_version", _u8),
    (36, "nf_call_iptables", _u8), (37, "nf_call_ip6tables", _u8), (38, "nf_call_arptables", _u8),
)  # fmt: skip
_BR_BOOLOPT_NO_LL_LEARN, _BR_BOOLOPT_MCAST_VLAN_SNOOPING = 0, 1


def bridge(data: dict[int, bytes], links: r.LinkTable) -> Record:
    out: Record = {}
    _fields(data, _BRIDGE_HEAD, out)
    if 11 in data:
        out["bridge_id"] = _bridge_id(data[11])
    if 10 in data:  # iproute2 6.1 prints IFLA_BR_BRIDGE_ID here too (a bug kept for parity)
        out["root_id"] = _bridge_id(data[11]) if 11 in data else _bridge_id(data[10])
    _fields(data, _BRIDGE_MIDDLE, out)
    if 46 in data:  # IFLA_BR_MULTI_BOOLOPT: struct br_boolopt_multi {optval, optmask}
        optval, optmask = struct.unpack_from("=II", data[46])
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
    (2, "priority", w.u16), (3, "cost", w.u32), (4, "hairpin", _on_off), (5, "guard", _on_off),
    (6, "root_block", _on_off), (7, "fastleave", _on_off), (8, "learning", _on_off), (9, "flood", _on_off),
    (17, "id", _hex16), (18, "no", _hex16), (15, "designated_port", w.u16), (16, "designated_cost", w.u16),
    (14, "bridge_id", _bridge_id), (13, "root_id", _bridge_id), (23, "hold_timer", _timer),
    (21, "message_age_timer", _timer), (22, "forward_delay_timer", _timer), (19, "topology_change_ack", _u8),
    (20, "config_pending", _u8), (10, "proxy_arp", _on_off), (12, "proxy_arp_wifi", _on_off),
    (25, "multicast_router", _u8), (27, "mcast_flood", _on_off), (30, "bcast_flood", _on_off),
    (28, "mcast_to_unicast", _on_off), (32, "neigh_suppress", _on_off),
)  # fmt: skip
_PORT_TAIL: tuple[Field, ...] = ((29, "vlan_tunnel", _on_off), (33, "isolated", _on_off), (39, "locked", _on_off))


def _fwd_mask_str(mask: int) -> str:
    """``_bitmask2str``."""
    parts = [_FWD_MASK_NAMES.get(i, f"0x{1 << i:x}") for i in range(16) if mask >> i & 1]
    return ",".join(parts) if parts else "0x0"


def bridge_slave(data: dict[int, bytes], links: r.LinkTable) -> Record:
    out: Record = {}
    if 1 in data:
        state = data[1][0]
        if state < len(_PORT_STATES):
            out["state"] = _PORT_STATES[state]
        else:
            out["state_index"] = state
    _fields(data, _PORT_HEAD, out)
    if 31 in data:
        mask = w.u16(data[31])
        out["group_fwd_mask"] = r.hex0x(mask)
        out["group_fwd_mask_str"] = _fwd_mask_str(mask)
    _fields(data, _PORT_TAIL, out)
    if 34 in data:
        out["backup_port"] = links.name(w.u32(data[34]))
    return out


# ip/iplink_macvlan.c macvlan_print_opt(), IFLA_MACVLAN_*
_MACVLAN_MODES = {1: "private", 2: "vepa", 4: "bridge", 8: "passthru", 16: "source"}


def macvlan(data: dict[int, bytes], links: r.LinkTable) -> Record:
    out: Record = {}
    if 1 not in data or len(data[1]) < 4:
        return out
    mode = w.u32(data[1])
    out["mode"] = _MACVLAN_MODES.get(mode, "unknown")
    flags = w.u16(data[2]) if 2 in data and len(data[2]) >= 2 else 0
    if flags & 1:
        out["nopromisc"] = True
    if flags & 2:
        out["nodst"] = True
    for attr, key in ((7, "bcqueuelen"), (8, "usedbcqueuelen")):
        if attr in data and len(data[attr]) >= 4:
            out[key] = w.u32(data[attr])
    if mode != 16 or 6 not in data or len(data[6]) < 4:
        return out
    out["macaddr_count"] = w.s32(data[6])
    if 5 in data:
        out["macaddr_data"] = [r.mac(v[:6]) for k, v in w.attr_list(data[5]) if k == 4 and len(v) >= 6]
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
    if 3 in data:
        kind = data[3][0]
        out["type"] = {1: "tun", 2: "tap"}.get(kind, f"UNKNOWN:{kind}")
    if 4 in data:
        out["pi"] = _on_off(data[4])
    if 5 in data:
        out["vnet_hdr"] = _on_off(data[5])
    if 7 in data and data[7][0]:
        out["multi_queue"] = True
        if 8 in data:
            out["numqueues"] = w.u32(data[8])
        if 9 in data:
            out["numdisabled"] = w.u32(data[9])
    else:
        out["multi_queue"] = False
    if 6 in data:
        out["persist"] = _on_off(data[6])
    for attr, key, path in ((1, "user", "/etc/passwd"), (2, "group", "/etc/group")):
        if attr in data:
            number = w.u32(data[attr])
            name = _passwd_name(path, number)
            out[key] = name if name is not None else number
    return out


# ip/iplink_vxlan.c vxlan_print_opt(), IFLA_VXLAN_*
def vxlan(data: dict[int, bytes], links: r.LinkTable) -> Record:
    out: Record = {}
    if 25 in data and data[25][0]:
        out["external"] = True
    if 30 in data and data[30][0]:
        out["vnifilter"] = True
    if 1 in data and len(data[1]) >= 4:
        out["id"] = w.u32(data[1])
    if 2 in data:
        group = data[2][:4]
        if group != bytes(4):
            out["group" if 224 <= group[0] <= 239 else "remote"] = w.ip(group)
    elif 16 in data:
        group6 = data[16][:16]
        if group6 != bytes(16):
            out["group6" if group6[0] == 0xFF else "remote6"] = w.ip(group6)
    if 4 in data:
        if data[4][:4] != bytes(4):
            out["local"] = w.ip(data[4][:4])
    elif 17 in data and data[17][:16] != bytes(16):
        out["local6"] = w.ip(data[17][:16])
    if 3 in data:
        link = w.u32(data[3])
        if link:
            out["link"] = links.name(link)
    if 10 in data:
        low, high = struct.unpack_from("!HH", data[10])
        out["port_range"] = {"low": low, "high": high}
    if 15 in data:
        out["port"] = w.be16(data[15])
    if 7 in data:
        out["learning"] = bool(data[7][0])
    for attr, key in ((11, "proxy"), (12, "rsc"), (13, "l2miss"), (14, "l3miss")):
        if attr in data and data[attr][0]:
            out[key] = True
    tos = data[6][0] if 6 in data else 0
    if tos:
        out["tos"] = r.hex0x(tos)
    if 28 in data and data[28][0]:
        pass  # "ttl inherit" is printed to text only
    elif 5 in data:
        out["ttl"] = data[5][0]
    if 29 in data:
        df = data[29][0]
        if df < 3:
            out["df"] = ("unset", "set", "inherit")[df]
    if 26 in data:
        label = w.be32(data[26])
        if label:
            out["label"] = r.hex0x(label)
    if 8 in data:
        out["ageing"] = w.u32(data[8])
    if 9 in data:
        limit = w.u32(data[9])
        if limit:
            out["limit"] = limit
    for attr, key in ((18, "udp_csum"), (19, "udp_zero_csum6_tx"), (20, "udp_zero_csum6_rx")):
        if attr in data:
            out[key] = bool(data[attr][0])
    for attr, key in ((21, "remcsum_tx"), (22, "remcsum_rx")):
        if attr in data and data[attr][0]:
            out[key] = True
    if 23 in data:
        out["gbp"] = True
    if 27 in data:
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

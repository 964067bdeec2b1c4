"""What ``ip -d`` adds to a link: ``print_linkinfo``'s details block and ``print_linktype``.

The per-kind ``info_data`` / ``info_slave_data`` objects follow the
``print_opt`` functions of iproute2 6.1's ``ip/iplink_<kind>.c``; a kind
with no ``print_opt`` there prints ``info_kind`` alone (veth, ifb ...).
"""

from __future__ import annotations

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

"""IPsec policies and states from a raw ``NETLINK_XFRM`` dump (pyroute2 has no xfrm support).

``ip xfrm`` prints no JSON; the record shapes are documented on
:func:`xfrm_policies` and :func:`xfrm_states`. Structures mirror
``include/uapi/linux/xfrm.h``.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from typing import Any

from . import _wire as w
from ._dumps import DEFAULT_ATTEMPTS, Dump, result, retry

Record = dict[str, Any]

XFRM_MSG_NEWSA, XFRM_MSG_GETSA = 16, 18
XFRM_MSG_NEWPOLICY, XFRM_MSG_GETPOLICY = 19, 21
XFRMA_TMPL, XFRMA_MARK, XFRMA_IF_ID = 5, 21, 31
_DIRECTIONS = {0: "in", 1: "out", 2: "fwd"}
_ACTIONS = {0: "allow", 1: "block"}
_MODES = {0: "transport", 1: "tunnel", 2: "ro", 3: "in_trigger", 4: "beet"}
_IPSEC_PROTOS = {50: "esp", 51: "ah", 108: "comp", 43: "route2", 60: "hao", 255: "ipsec-any"}
_SELECTOR_PROTOS = {1: "icmp", 6: "tcp", 17: "udp", 33: "dccp", 58: "icmpv6", 132: "sctp", 136: "udplite", 47: "gre"}
SELECTOR = struct.Struct("=16s16sHHHHHBBBxxxiI")  # struct xfrm_selector, 56 bytes
POLICY_INFO_SIZE = 168  # sizeof(struct xfrm_userpolicy_info)
SA_INFO_SIZE = 224  # sizeof(struct xfrm_usersa_info)
USER_TMPL = struct.Struct("=16sIBxxxHxx16sIBBBxIII")  # struct xfrm_user_tmpl, 64 bytes


def _addr(raw: bytes, family: int) -> str:
    if family == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, raw)
    return socket.inet_ntop(socket.AF_INET, raw[:4])


def _dump(msg_type: int, reply_type: int) -> tuple[list[bytes], bool]:
    with w.NetlinkSocket(w.NETLINK_XFRM) as sock:
        msgs, interrupted = sock.dump(msg_type, b"")
    return [payload for kind, _flags, payload in msgs if kind == reply_type], interrupted


def _attrs(payload: bytes, start: int) -> dict[int, list[bytes]]:
    out: dict[int, list[bytes]] = {}
    for kind, value in w.attr_list(payload, w.align(start)):
        out.setdefault(kind, []).append(value)
    return out


def _selector(raw: bytes) -> Record:
    daddr, saddr, dport, _dmask, sport, _smask, family, plen_d, plen_s, proto, ifindex, _user = SELECTOR.unpack_from(
        raw
    )
    sel: Record = {"src": f"{_addr(saddr, family)}/{plen_s}", "dst": f"{_addr(daddr, family)}/{plen_d}"}
    if proto:
        sel["proto"] = _SELECTOR_PROTOS.get(proto, str(proto))
    if sport:
        sel["sport"] = socket.ntohs(sport)
    if dport:
        sel["dport"] = socket.ntohs(dport)
    if ifindex:
        sel["ifindex"] = ifindex
    return sel


def _id(saddr: bytes, daddr: bytes, family: int, proto: int, spi: int, reqid: int, mode: int) -> Record:
    """The fields an SA and a policy template share, as ``ip xfrm`` names them."""
    return {
        "src": _addr(saddr, family),
        "dst": _addr(daddr, family),
        "proto": _IPSEC_PROTOS.get(proto, str(proto)),
        "spi": f"0x{socket.ntohl(spi):08x}",
        "reqid": reqid,
        "mode": _MODES.get(mode, str(mode)),
    }


def _common(rec: Record, attrs: dict[int, list[bytes]]) -> None:
    if XFRMA_MARK in attrs:
        value, mask = struct.unpack_from("=II", attrs[XFRMA_MARK][0])
        rec["mark"] = f"0x{value:x}/0x{mask:x}"
    if XFRMA_IF_ID in attrs:
        rec["if_id"] = w.u32(attrs[XFRMA_IF_ID][0])


def policy(payload: bytes) -> Record:
    """One ``struct xfrm_userpolicy_info`` message as a record."""
    rec = _selector(payload)
    priority, index, direction, action, _flags, _share = struct.unpack_from("=IIBBBB", payload, 152)
    rec.update(
        {
            "dir": _DIRECTIONS.get(direction, str(direction)),
            "priority": priority,
            "action": _ACTIONS.get(action, str(action)),
            "index": index,
        }
    )
    attrs = _attrs(payload, POLICY_INFO_SIZE)
    templates = []
    for blob in attrs.get(XFRMA_TMPL, []):
        for off in range(0, len(blob) - USER_TMPL.size + 1, USER_TMPL.size):
            daddr, spi, proto, family, saddr, reqid, mode, _share2, optional, _a, _e, _c = USER_TMPL.unpack_from(
                blob, off
            )
            tmpl = _id(saddr, daddr, family, proto, spi, reqid, mode)
            if optional:
                tmpl["level"] = "use"
            templates.append(tmpl)
    rec["tmpl"] = templates
    _common(rec, attrs)
    return rec


def state(payload: bytes) -> Record:
    """One ``struct xfrm_usersa_info`` message as a record (keys and algorithms left out)."""
    sel = _selector(payload)
    daddr, spi, proto = struct.unpack_from("=16sIB", payload, 56)
    saddr = payload[80:96]
    reqid, family, mode, replay_window, flags = struct.unpack_from("=IHBBB", payload, 208)
    rec = _id(saddr, daddr, family, proto, spi, reqid, mode)
    rec.update({"replay_window": replay_window, "flags": flags, "sel": sel})
    _common(rec, _attrs(payload, SA_INFO_SIZE))
    return rec


def _records(what: str, msg_type: int, reply_type: int, parse: Callable[[bytes], Record], attempts: int) -> Dump:
    msgs, interrupted, used = retry(what, lambda: _dump(msg_type, reply_type), attempts)
    return result([parse(p) for p in msgs], interrupted, used)


def xfrm_policies(attempts: int = DEFAULT_ATTEMPTS) -> Dump:
    """IPsec policies (``ip xfrm policy``, which prints no JSON); one record each::

        {"src": "10.0.0.0/24", "dst": "10.1.0.0/24", "dir": "out", "priority": 5,
         "action": "allow", "index": 1, "tmpl": [{"src": ..., "dst": ..., "proto": "esp",
         "spi": "0x00000000", "reqid": 0, "mode": "tunnel"}]}

    plus ``proto``/``sport``/``dport``/``ifindex`` of the selector, ``mark`` and
    ``if_id`` when set.
    """
    return _records("xfrm policy", XFRM_MSG_GETPOLICY, XFRM_MSG_NEWPOLICY, policy, attempts)


def xfrm_states(attempts: int = DEFAULT_ATTEMPTS) -> Dump:
    """IPsec security associations (``ip xfrm state``): src, dst, proto, spi, reqid, mode, selector.

    Keys and algorithms are deliberately left out of the records.
    """
    return _records("xfrm state", XFRM_MSG_GETSA, XFRM_MSG_NEWSA, state, attempts)

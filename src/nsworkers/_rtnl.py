"""A small rtnetlink dump reader: just the messages and attributes ``ip -j`` prints.

pyroute2 decodes every attribute of every message through a generic,
pure-Python schema; a link dump there costs ~0.2 ms per interface, most of it
in statistics and per-protocol settings nobody prints. Profiling the batch
snapshot showed that decoding was most of a worker's time, so the dumps
``nsworkers.netlink`` needs are read here: one raw ``NETLINK_ROUTE`` socket
per worker, reused, and only the listed attributes decoded (the rest are
skipped by length). Messages look like pyroute2's (``msg["index"]``,
``msg["attrs"]``, ``msg.get_attr(name)``, ``msg["header"]["flags"]``) so the
record builders read the same either way.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable
from typing import Any

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300

RTM_GETLINK = 18
RTM_GETADDR = 22
RTM_GETROUTE = 26
RTM_GETNEIGH = 30
RTM_GETRULE = 34

_NLMSGHDR = struct.Struct("=IHHII")
_NLA = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_S32 = struct.Struct("=i")

Decoder = Callable[[bytes, int], Any]


def _u8(raw: bytes, family: int) -> int:
    return raw[0]


def _u32(raw: bytes, family: int) -> int:
    return int(_U32.unpack_from(raw)[0])


def _s32(raw: bytes, family: int) -> int:
    return int(_S32.unpack_from(raw)[0])


def _str(raw: bytes, family: int) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def _mac(raw: bytes, family: int) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _ip(raw: bytes, family: int) -> str:
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw)
    if len(raw) == 16:
        return socket.inet_ntop(socket.AF_INET6, raw)
    return raw.hex()


def _cacheinfo(raw: bytes, family: int) -> dict[str, int]:
    preferred, valid, cstamp, tstamp = struct.unpack_from("=IIII", raw)
    return {"ifa_preferred": preferred, "ifa_valid": valid, "cstamp": cstamp, "tstamp": tstamp}


_RTAX = {
    1: "RTAX_LOCK",
    2: "RTAX_MTU",
    3: "RTAX_WINDOW",
    4: "RTAX_RTT",
    5: "RTAX_RTTVAR",
    6: "RTAX_SSTHRESH",
    7: "RTAX_CWND",
    8: "RTAX_ADVMSS",
    9: "RTAX_REORDERING",
    10: "RTAX_HOPLIMIT",
    11: "RTAX_INITCWND",
    12: "RTAX_FEATURES",
    13: "RTAX_RTO_MIN",
    14: "RTAX_INITRWND",
    15: "RTAX_QUICKACK",
    16: "RTAX_CC_ALGO",
    17: "RTAX_FASTOPEN_NO_COOKIE",
}


def _metrics(raw: bytes, family: int) -> dict[str, Any]:
    attrs = []
    for kind, value in _nlas(raw, 0):
        name = _RTAX.get(kind, f"RTAX_{kind}")
        attrs.append((name, _str(value, family) if kind == 16 else _u32(value, family)))
    return {"attrs": attrs}


class Message(dict[str, Any]):
    """One netlink message: header fields as keys, ``attrs`` a list of ``(name, value)``."""

    def get_attr(self, name: str, default: Any = None) -> Any:
        for key, value in self["attrs"]:
            if key == name:
                return value
        return default


def _multipath(raw: bytes, family: int) -> list[Message]:
    hops = []
    offset = 0
    while offset + 8 <= len(raw):
        length, flags, hops_, ifindex = struct.unpack_from("=HBBi", raw, offset)
        if length < 8:
            break
        attrs = [
            (_ROUTE_ATTRS[k][0], _ROUTE_ATTRS[k][1](v, family))
            for k, v in _nlas(raw[offset + 8 : offset + length], 0)
            if k in _ROUTE_ATTRS
        ]
        hops.append(Message(flags=flags, hops=hops_, oif=ifindex, attrs=attrs))
        offset += (length + 3) & ~3
    return hops


_LINK_ATTRS: dict[int, tuple[str, Decoder]] = {
    1: ("IFLA_ADDRESS", _mac),
    2: ("IFLA_BROADCAST", _mac),
    3: ("IFLA_IFNAME", _str),
    4: ("IFLA_MTU", _u32),
    5: ("IFLA_LINK", _u32),
    6: ("IFLA_QDISC", _str),
    10: ("IFLA_MASTER", _u32),
    13: ("IFLA_TXQLEN", _u32),
    16: ("IFLA_OPERSTATE", _u8),
    17: ("IFLA_LINKMODE", _u8),
    27: ("IFLA_GROUP", _u32),
    37: ("IFLA_LINK_NETNSID", _s32),
    54: ("IFLA_PERM_ADDRESS", _mac),
}
_ADDR_ATTRS: dict[int, tuple[str, Decoder]] = {
    1: ("IFA_ADDRESS", _ip),
    2: ("IFA_LOCAL", _ip),
    3: ("IFA_LABEL", _str),
    4: ("IFA_BROADCAST", _ip),
    5: ("IFA_ANYCAST", _ip),
    6: ("IFA_CACHEINFO", _cacheinfo),
    8: ("IFA_FLAGS", _u32),
}
_ROUTE_ATTRS: dict[int, tuple[str, Decoder]] = {
    1: ("RTA_DST", _ip),
    2: ("RTA_SRC", _ip),
    3: ("RTA_IIF", _u32),
    4: ("RTA_OIF", _u32),
    5: ("RTA_GATEWAY", _ip),
    6: ("RTA_PRIORITY", _u32),
    7: ("RTA_PREFSRC", _ip),
    8: ("RTA_METRICS", _metrics),
    9: ("RTA_MULTIPATH", _multipath),
    15: ("RTA_TABLE", _u32),
    20: ("RTA_PREF", _u8),
}
_NEIGH_ATTRS: dict[int, tuple[str, Decoder]] = {
    1: ("NDA_DST", _ip),
    2: ("NDA_LLADDR", _mac),
}
_RULE_ATTRS: dict[int, tuple[str, Decoder]] = {
    1: ("FRA_DST", _ip),
    2: ("FRA_SRC", _ip),
    3: ("FRA_IIFNAME", _str),
    4: ("FRA_GOTO", _u32),
    6: ("FRA_PRIORITY", _u32),
    10: ("FRA_FWMARK", _u32),
    14: ("FRA_SUPPRESS_PREFIXLEN", _u32),
    15: ("FRA_TABLE", _u32),
    16: ("FRA_FWMASK", _u32),
    17: ("FRA_OIFNAME", _str),
    19: ("FRA_L3MDEV", _u8),
    21: ("FRA_PROTOCOL", _u8),
}

# message type -> (fixed header struct, its field names, attribute table)
_KINDS: dict[int, tuple[struct.Struct, tuple[str, ...], dict[int, tuple[str, Decoder]]]] = {
    16: (struct.Struct("=BxHiII"), ("family", "ifi_type", "index", "flags", "change"), _LINK_ATTRS),
    20: (struct.Struct("=BBBBI"), ("family", "prefixlen", "flags", "scope", "index"), _ADDR_ATTRS),
    24: (
        struct.Struct("=BBBBBBBBI"),
        ("family", "dst_len", "src_len", "tos", "table", "proto", "scope", "type", "flags"),
        _ROUTE_ATTRS,
    ),
    28: (struct.Struct("=BxxxiHBB"), ("family", "ifindex", "state", "flags", "ndm_type"), _NEIGH_ATTRS),
    32: (
        struct.Struct("=BBBBBBBBI"),
        ("family", "dst_len", "src_len", "tos", "table", "res1", "res2", "action", "flags"),
        _RULE_ATTRS,
    ),
}
# the request's fixed header (only the family matters for a dump)
_REQUEST_HEADER = {
    RTM_GETLINK: 16,
    RTM_GETADDR: 8,
    RTM_GETROUTE: 12,
    RTM_GETNEIGH: 12,
    RTM_GETRULE: 12,
}


def _nlas(data: bytes, offset: int) -> list[tuple[int, bytes]]:
    out = []
    end = len(data)
    while offset + 4 <= end:
        length, kind = _NLA.unpack_from(data, offset)
        if length < 4:
            break
        out.append((kind & 0x3FFF, data[offset + 4 : offset + length]))
        offset += (length + 3) & ~3
    return out


def _parse(kind: int, flags: int, payload: bytes) -> Message:
    header, names, table = _KINDS[kind]
    msg = Message(zip(names, header.unpack_from(payload), strict=True))
    msg["header"] = {"type": kind, "flags": flags}
    family = msg["family"]
    attrs = []
    for attr, raw in _nlas(payload, header.size):
        known = table.get(attr)
        if known is not None:
            attrs.append((known[0], known[1](raw, family)))
    msg["attrs"] = attrs
    return msg


class RtnlSocket:
    """A ``NETLINK_ROUTE`` socket for dumps, in the namespace of the process that opened it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((0, 0))
        self.seq = 0
        self.pid = os.getpid()

    def close(self) -> None:
        self.sock.close()

    def dump(self, msg_type: int, family: int = 0) -> tuple[list[Message], bool]:
        """Run one dump; return its messages and whether the kernel flagged it interrupted."""
        self.seq += 1
        body = bytes([family]) + bytes(_REQUEST_HEADER[msg_type] - 1)
        raw, interrupted = dump_raw(self.sock, msg_type, body, self.seq)
        return [_parse(kind, flags, payload) for kind, flags, payload in raw if kind in _KINDS], interrupted


def dump_raw(sock: socket.socket, msg_type: int, body: bytes, seq: int) -> tuple[list[tuple[int, int, bytes]], bool]:
    """Send one dump request on a netlink socket and read it to the end.

    Returns ``([(type, flags, payload), ...], interrupted)``; *interrupted* is
    true if the kernel set ``NLM_F_DUMP_INTR`` on any message, the final
    ``NLMSG_DONE`` included. Messages of other sequence numbers are skipped; a
    netlink error raises ``OSError`` with the kernel's errno.
    """
    sock.send(_NLMSGHDR.pack(16 + len(body), msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body)
    out: list[tuple[int, int, bytes]] = []
    interrupted = False
    while True:
        data = sock.recv(1 << 16)
        offset = 0
        while offset + 16 <= len(data):
            length, kind, flags, msg_seq, _pid = _NLMSGHDR.unpack_from(data, offset)
            if length < 16:
                raise OSError("malformed netlink message")
            if msg_seq == seq:
                interrupted |= bool(flags & 0x10)  # NLM_F_DUMP_INTR
                if kind == NLMSG_DONE:
                    return out, interrupted
                if kind == NLMSG_ERROR:
                    (err,) = _S32.unpack_from(data, offset + 16)
                    if err:
                        raise OSError(-err, os.strerror(-err))
                    return out, interrupted
                out.append((kind, flags, data[offset + 16 : offset + length]))
            offset += (length + 3) & ~3

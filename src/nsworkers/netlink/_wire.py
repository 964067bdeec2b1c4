"""Netlink on the wire: message headers, attributes, dump requests.

One walker serves every family nsworkers reads (rtnetlink dumps and events,
xfrm, sock_diag): :func:`messages` splits a datagram into messages,
:func:`attrs` / :func:`attr_list` split a payload into attributes, and
:class:`NetlinkSocket` sends a dump request and reads it to the end. Values
stay raw ``bytes`` until a record builder decodes the few it prints, with the
small decoders below (``u32``, ``ip`` ...). Constants mirror
``include/uapi/linux/netlink.h`` and ``rtnetlink.h``.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator

# include/uapi/linux/netlink.h
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH
NLA_F_NESTED = 0x8000
NLA_F_NET_BYTEORDER = 0x4000
NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xFFFF
NETLINK_ROUTE = 0
NETLINK_SOCK_DIAG = 4
NETLINK_XFRM = 6
NETLINK_NETFILTER = 12

# include/uapi/linux/rtnetlink.h: message types
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
RTM_NEWRULE, RTM_DELRULE, RTM_GETRULE = 32, 33, 34
RTM_NEWNETCONF, RTM_GETNETCONF = 80, 82
RTM_NEWNEXTHOP, RTM_DELNEXTHOP, RTM_GETNEXTHOP = 104, 105, 106

NLMSGHDR = struct.Struct("=IHHII")  # struct nlmsghdr: len, type, flags, seq, pid
NLA = struct.Struct("=HH")  # struct nlattr: len, type
_U16 = struct.Struct("=H")
_BE16 = struct.Struct("!H")
_U32 = struct.Struct("=I")
_BE32 = struct.Struct("!I")
_S32 = struct.Struct("=i")
_U64 = struct.Struct("=Q")
_BE64 = struct.Struct("!Q")


def align(length: int) -> int:
    """``NLMSG_ALIGN`` / ``NLA_ALIGN``: round up to 4 bytes."""
    return (length + 3) & ~3


def attrs(data: bytes, offset: int = 0) -> dict[int, bytes]:
    """The attributes of *data* from *offset* as ``{type: payload}`` (flags masked, the last of a type wins)."""
    out: dict[int, bytes] = {}
    end = len(data) - 4
    unpack = NLA.unpack_from
    while offset <= end:
        length, kind = unpack(data, offset)
        if length < 4:
            break
        out[kind & 0x3FFF] = data[offset + 4 : offset + length]  # NLA_TYPE_MASK, as a literal: the hot loop
        offset += (length + 3) & ~3
    return out


def attr_list(data: bytes, offset: int = 0) -> list[tuple[int, bytes]]:
    """The attributes of *data* from *offset* in order, repeats kept: ``[(type, payload), ...]``."""
    out: list[tuple[int, bytes]] = []
    end = len(data)
    while offset + 4 <= end:
        length, kind = NLA.unpack_from(data, offset)
        if length < 4:
            break
        out.append((kind & NLA_TYPE_MASK, data[offset + 4 : offset + length]))
        offset += (length + 3) & ~3
    return out


def messages(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """The netlink messages of one datagram: ``(type, flags, seq, payload)``."""
    offset = 0
    while offset + NLMSGHDR.size <= len(data):
        length, kind, flags, seq, _pid = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size:
            raise OSError("malformed netlink message")
        yield kind, flags, seq, data[offset + NLMSGHDR.size : offset + length]
        offset += (length + 3) & ~3


def nla(kind: int, payload: bytes) -> bytes:
    """One attribute, padded: for building requests."""
    return NLA.pack(4 + len(payload), kind) + payload + bytes(align(len(payload)) - len(payload))


# -- value decoders ---------------------------------------------------------


def u8(raw: bytes) -> int:
    return raw[0]


def u16(raw: bytes) -> int:
    return int(_U16.unpack_from(raw)[0])


def be16(raw: bytes) -> int:
    return int(_BE16.unpack_from(raw)[0])


def u32(raw: bytes) -> int:
    return int(_U32.unpack_from(raw)[0])


def be32(raw: bytes) -> int:
    return int(_BE32.unpack_from(raw)[0])


def s32(raw: bytes) -> int:
    return int(_S32.unpack_from(raw)[0])


def u64(raw: bytes) -> int:
    return int(_U64.unpack_from(raw)[0])


def be64(raw: bytes) -> int:
    return int(_BE64.unpack_from(raw)[0])


def cstr(raw: bytes) -> str:
    """A NUL-terminated string attribute."""
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def ip(raw: bytes) -> str:
    """An IPv4 or IPv6 address by its length (other lengths as hex)."""
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw)
    if len(raw) == 16:
        return socket.inet_ntop(socket.AF_INET6, raw)
    return raw.hex()


# -- sockets and dumps ------------------------------------------------------


class NetlinkSocket:
    """A netlink socket of one protocol, in the namespace of the process that opened it.

    ``pid`` records the opener so a forked child knows to open its own.
    """

    def __init__(self, protocol: int = NETLINK_ROUTE, groups: int = 0, rcvbuf: int = 1 << 20) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.bind((0, groups))
        except BaseException:
            self.sock.close()
            raise
        self.seq = 0
        self.pid = os.getpid()

    @classmethod
    def adopt(cls, sock: socket.socket) -> NetlinkSocket:
        """Wrap a netlink socket opened elsewhere (a worker's, taken over: it stays in the worker's namespace)."""
        self = cls.__new__(cls)
        self.sock = sock
        self.seq = 0
        self.pid = os.getpid()
        return self

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> NetlinkSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def dump(self, msg_type: int, body: bytes) -> tuple[list[tuple[int, int, bytes]], bool]:
        """Send one dump request (*body* = fixed header + attributes); read it to the end.

        Returns ``([(type, flags, payload), ...], interrupted)``: *interrupted*
        is true if the kernel set ``NLM_F_DUMP_INTR`` on any message, the
        final ``NLMSG_DONE`` included. Messages of other sequence numbers are
        skipped; a netlink error raises ``OSError`` with the kernel's errno.
        """
        self.seq += 1
        seq = self.seq
        sock = self.sock
        sock.send(NLMSGHDR.pack(NLMSGHDR.size + len(body), msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body)
        out: list[tuple[int, int, bytes]] = []
        interrupted = False
        unpack = NLMSGHDR.unpack_from
        while True:
            data = sock.recv(1 << 17)
            offset = 0
            end = len(data)
            while offset + 16 <= end:
                length, kind, flags, msg_seq, _pid = unpack(data, offset)
                if length < 16:
                    raise OSError("malformed netlink message")
                if msg_seq == seq:
                    if flags & NLM_F_DUMP_INTR:
                        interrupted = True
                    if kind == NLMSG_DONE:
                        return out, interrupted
                    if kind == NLMSG_ERROR:
                        (err,) = _S32.unpack_from(data, offset + 16)
                        if err:
                            raise OSError(-err, os.strerror(-err))
                        return out, interrupted
                    out.append((kind, flags, data[offset + 16 : offset + length]))
                offset += (length + 3) & ~3

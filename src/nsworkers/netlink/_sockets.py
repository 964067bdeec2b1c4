"""Sockets of the namespace a worker is in, read through ``NETLINK_SOCK_DIAG`` (what ``ss`` reads).

Runs inside a worker: a sock_diag socket sees the sockets of the network
namespace it was created in. One record per socket, with the fields of
``ss -tuan`` (and ``-x`` for UNIX sockets) as JSON keys::

    {"netid": "tcp", "state": "LISTEN", "recv_q": 0, "send_q": 128,
     "family": "inet", "local_address": "10.244.1.17", "local_port": 8080,
     "peer_address": "0.0.0.0", "peer_port": 0, "interface": null,
     "inode": 123456, "uid": 0, "cookie": 4097}

Addresses are plain (``ss`` brackets IPv6 and writes ``*`` for port 0 and for
a dual-stack ``::``; ``v6only`` on IPv6 records tells those apart), ``interface``
is the device a socket is bound to (``ss`` appends it as ``%eth0``). Which
processes hold a socket is not known here: the caller adds ``users`` from its
own ``/proc`` (:class:`nsworkers._sockets.SocketUsers`), as ``ss -p`` does.
Constants mirror ``include/uapi/linux/sock_diag.h``, ``inet_diag.h`` and
``unix_diag.h``; state names iproute2 6.1 ``misc/ss.c``.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from . import _wire as w
from ._dumps import DEFAULT_ATTEMPTS, Dump, SocketHolder, result

__all__ = ("TCP_STATES", "sockets")

Record = dict[str, Any]

_SOCK_DIAG_BY_FAMILY = 20  # include/uapi/linux/sock_diag.h
# ss's names of the kernel's TCP states (include/net/tcp_states.h; iproute2 misc/ss.c sstate_name[]);
# UDP uses ESTABLISHED for a connected socket and CLOSE ("UNCONN") for the rest.
TCP_STATES = {
    1: "ESTAB",
    2: "SYN-SENT",
    3: "SYN-RECV",
    4: "FIN-WAIT-1",
    5: "FIN-WAIT-2",
    6: "TIME-WAIT",
    7: "UNCONN",
    8: "CLOSE-WAIT",
    9: "LAST-ACK",
    10: "LISTEN",
    11: "CLOSING",
    12: "SYN-RECV",  # TCP_NEW_SYN_RECV: a request socket, shown as ss shows it
}
_ALL_STATES = (1 << 12) - 1  # ss -a: every state it names (SS_ALL)
_INET_DIAG_SKV6ONLY = 11  # include/uapi/linux/inet_diag.h
# struct inet_diag_req_v2 / inet_diag_msg (include/uapi/linux/inet_diag.h)
_REQ = struct.Struct("=BBBxI")
# The older request (struct inet_diag_req, TCPDIAG_GETSOCK) is answered for IPv4 and IPv6 in one pass
# (the kernel's inet_diag_dump_compat asks for AF_UNSPEC): one walk of the host-wide TCP hash table
# instead of two. Each walk visits every bucket, whatever namespace asks: most of a TCP dump's cost.
_TCPDIAG_GETSOCK = 18
_REQ_V1 = struct.Struct("=BBBB48sII")
_SOCKID = struct.Struct("!HH16s16s")  # ports and addresses are big-endian
_MSG_TAIL = struct.Struct("=IIIIIIII")  # if, cookie[2] (host order), expires, rqueue, wqueue, uid, inode
_UNIX_REQ = struct.Struct("=BBxxIIIII")  # struct unix_diag_req
_UNIX_MSG = struct.Struct("=BBBxIII")  # struct unix_diag_msg
_UDIAG_SHOW = 0x1 | 0x4 | 0x10 | 0x40  # NAME | PEER | RQLEN | UID
_UNIX_DIAG_NAME, _UNIX_DIAG_PEER, _UNIX_DIAG_RQLEN, _UNIX_DIAG_UID = 0, 2, 4, 7
_UNIX_NETID = {socket.SOCK_STREAM: "u_str", socket.SOCK_DGRAM: "u_dgr", socket.SOCK_SEQPACKET: "u_seq"}
_PROTOCOLS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}


_DIAG = SocketHolder(w.NETLINK_SOCK_DIAG)


def _dump(body: bytes, attempts: int) -> tuple[list[bytes], bool, int]:
    return _DIAG.dump("sock_diag", _SOCK_DIAG_BY_FAMILY, body, _SOCK_DIAG_BY_FAMILY, attempts)


def _inet_dump(netid: str, attempts: int) -> tuple[list[bytes], bool, int]:
    """The payloads of every TCP or UDP socket, IPv4 and IPv6."""
    if netid == "tcp":
        body = _REQ_V1.pack(socket.AF_INET, 0, 0, 0, bytes(48), _ALL_STATES, 0)
        try:
            return _DIAG.dump("tcp_diag", _TCPDIAG_GETSOCK, body, _TCPDIAG_GETSOCK, attempts)
        except OSError:  # a kernel without the compat request: one dump per family
            pass
    payloads: list[bytes] = []
    interrupted, used = False, 1
    for family in (socket.AF_INET, socket.AF_INET6):
        body = _REQ.pack(family, _PROTOCOLS[netid], 0, _ALL_STATES) + bytes(48)
        found, i, u = _dump(body, attempts)
        payloads += found
        interrupted, used = interrupted or i, max(used, u)
    return payloads, interrupted, used


def _inet(netid: str, payload: bytes, names: dict[int, str]) -> Record:
    fam, state, _timer, _retrans = struct.unpack_from("=BBBB", payload)
    sport, dport, src, dst = _SOCKID.unpack_from(payload, 4)
    ifindex, cookie0, cookie1, _expires, rqueue, wqueue, uid, inode = _MSG_TAIL.unpack_from(payload, 4 + _SOCKID.size)
    size = 4 if fam == socket.AF_INET else 16
    rec: Record = {
        "netid": netid,
        "state": TCP_STATES.get(state, "UNKNOWN"),
        "recv_q": rqueue,
        "send_q": wqueue,
        "family": "inet" if fam == socket.AF_INET else "inet6",
        "local_address": socket.inet_ntop(fam, src[:size]),
        "local_port": sport,
        "peer_address": socket.inet_ntop(fam, dst[:size]),
        "peer_port": dport,
        "interface": _ifname(ifindex, names) if ifindex else None,
        "inode": inode,
        "uid": uid,
        "cookie": cookie0 | cookie1 << 32,
    }
    if fam == socket.AF_INET6:
        flag = w.attrs(payload, 4 + _SOCKID.size + _MSG_TAIL.size).get(_INET_DIAG_SKV6ONLY)
        rec["v6only"] = bool(flag and flag[0])
    return rec


def _ifname(index: int, names: dict[int, str]) -> str:
    if not names:  # asked only when a socket is bound to a device
        names.update(socket.if_nameindex())
    return names.get(index) or f"if{index}"


def _unix(payload: bytes) -> Record:
    _family, kind, state, inode, cookie0, cookie1 = _UNIX_MSG.unpack_from(payload)
    a = w.attrs(payload, _UNIX_MSG.size)
    rqueue = wqueue = 0
    if _UNIX_DIAG_RQLEN in a:
        rqueue, wqueue = struct.unpack_from("=II", a[_UNIX_DIAG_RQLEN])
    name = a.get(_UNIX_DIAG_NAME)
    path = None
    if name is not None:
        path = "@" + name[1:].decode(errors="replace") if name[:1] == b"\0" else name.decode(errors="replace")
    return {
        "netid": _UNIX_NETID.get(kind, str(kind)),
        "state": TCP_STATES.get(state, "UNKNOWN"),
        "recv_q": rqueue,
        "send_q": wqueue,
        "family": "unix",
        "local_address": path,
        "peer_inode": w.u32(a[_UNIX_DIAG_PEER]) if _UNIX_DIAG_PEER in a else None,
        "inode": inode,
        "uid": w.u32(a[_UNIX_DIAG_UID]) if _UNIX_DIAG_UID in a else None,
        "cookie": cookie0 | cookie1 << 32,
    }


def sockets(
    protocols: tuple[str, ...] = ("tcp", "udp"),
    *,
    listening: bool | None = None,
    port: int | None = None,
    attempts: int = DEFAULT_ATTEMPTS,
) -> Dump:
    """The namespace's sockets, TCP and UDP (IPv4, then IPv6) by default, like ``ss -tuan``.

    *protocols* may add ``"unix"`` (like ``ss -x``). With *listening* true
    only listening sockets (TCP ``LISTEN``, unconnected UDP: what ``ss -l``
    shows); false, only the others. *port* keeps sockets whose local or peer
    port is *port*. Each dump is retried, as rtnetlink dumps are, while the
    kernel flags it interrupted.
    """
    unknown = [p for p in protocols if p not in (*_PROTOCOLS, "unix")]
    if unknown:
        raise ValueError(f"unknown protocol(s) {unknown}; choose from tcp, udp, unix")
    names: dict[int, str] = {}
    out: list[Record] = []
    interrupted, used = False, 1
    for netid in protocols:
        if netid == "unix":
            body = _UNIX_REQ.pack(socket.AF_UNIX, 0, 0xFFFFFFFF, 0, _UDIAG_SHOW, 0xFFFFFFFF, 0xFFFFFFFF)
            payloads, i, u = _dump(body, attempts)
            out.extend(_unix(p) for p in payloads)
        else:
            payloads, i, u = _inet_dump(netid, attempts)
            found = [_inet(netid, p, names) for p in payloads]
            found.sort(key=lambda r: r["family"] != "inet")  # IPv4 then IPv6, as ss prints them
            out.extend(found)
        interrupted, used = interrupted or i, max(used, u)
    if listening is not None:
        out = [r for r in out if (r["state"] in ("LISTEN", "UNCONN")) == listening]
    if port is not None:
        out = [r for r in out if port in (r.get("local_port"), r.get("peer_port"))]
    return result(out, interrupted, used)

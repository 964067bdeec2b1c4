"""Connection tracking entries through ctnetlink (pyroute2's ``Conntrack``).

``conntrack -L`` prints no JSON: the record shape is nsworkers' own (see
:func:`conntrack`). pyroute2 is imported only when a conntrack call runs.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from typing import Any

Record = dict[str, Any]

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
    from ..errors import NetlinkWriteError

    here = os.readlink("/proc/thread-self/ns/net")
    return NetlinkWriteError(exc.errno or 0, f"{what} in {here} failed: {os.strerror(exc.errno or 0)}")

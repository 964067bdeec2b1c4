"""Which processes hold a socket: socket inode -> ``(name, pid, fd)``, read from the caller's ``/proc``.

Sockets are listed inside workers (:func:`nsworkers.netlink.sockets`), but a
worker never reads files on the caller's behalf, and pids only mean something
in the caller's pid namespace: so, like ``ss -p``, the caller walks
``/proc/PID/fd`` once, keeps the links that read ``socket:[INODE]``, and
names each process by the ``comm`` field of ``/proc/PID/stat``. Socket inodes
come from one kernel-wide sockfs, so one walk serves every network namespace.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any

__all__ = ("SocketUsers", "scan", "ss_endpoint", "ss_users")

Record = dict[str, Any]


def _comm(pid: str, proc: str) -> str | None:
    try:
        with open(f"{proc}/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.find(b"(") + 1 : stat.rfind(b")")].decode(errors="replace")


def scan(proc: str = "/proc") -> dict[int, list[Record]]:
    """``{inode: [{"name": "python3", "pid": 1234, "fd": 3}, ...]}`` for every socket fd this process can see."""
    found: dict[int, list[Record]] = {}
    with os.scandir(proc) as entries:
        pids = [e.name for e in entries if e.name.isdigit()]
    for pid in pids:
        try:
            with os.scandir(f"{proc}/{pid}/fd") as fds:
                links = []
                for fd in fds:
                    try:
                        target = os.readlink(fd.path)
                    except OSError:  # closed meanwhile
                        continue
                    if target.startswith("socket:["):
                        links.append((int(target[8:-1]), int(fd.name)))
        except OSError:  # gone, or not ours to read
            continue
        if not links:
            continue
        name = _comm(pid, proc)
        if name is None:
            continue
        for inode, fd_number in links:
            found.setdefault(inode, []).append({"name": name, "pid": int(pid), "fd": fd_number})
    for users in found.values():
        users.sort(key=lambda u: (u["pid"], u["fd"]))
    return found


class SocketUsers:
    """A reusable ``/proc`` walk for a batch: :meth:`attach` adds ``"users"`` to socket records.

    A batch that streams results walks ``/proc`` again only when a record names
    an inode the last walk did not see *and* that walk began before the record
    arrived, at most every *min_interval* seconds: a socket opened after the
    last walk within that interval shows ``"users": []``.
    """

    def __init__(self, proc: str = "/proc", min_interval: float = 0.25) -> None:
        self.proc = proc
        self.min_interval = min_interval
        self.table: dict[int, list[Record]] = {}
        self.scanned_at: float | None = None

    def refresh(self) -> None:
        started = time.monotonic()
        self.table = scan(self.proc)
        self.scanned_at = started

    def attach(self, records: Iterable[Record], arrived: float | None = None) -> None:
        """Set each record's ``users`` (a list, empty when no process this caller can see holds it)."""
        records = list(records)
        arrived = time.monotonic() if arrived is None else arrived
        missing = any(r.get("inode") and r["inode"] not in self.table for r in records)
        if self.scanned_at is None or (
            missing and self.scanned_at < arrived and time.monotonic() - self.scanned_at >= self.min_interval
        ):
            self.refresh()
        for rec in records:
            rec["users"] = [dict(u) for u in self.table.get(rec.get("inode") or -1, [])]


def ss_endpoint(rec: Record, side: str) -> str:
    """A record's *side* (local/peer) as ``ss -n`` writes it: ``10.0.0.1:8080``, ``[fe80::1]%eth0:53``, ``*:9090``.

    Mirrors iproute2 6.1 ``misc/ss.c`` ``inet_addr_print()``: port 0 is ``*``,
    IPv6 addresses are bracketed, an IPv6 ``::`` that is not ``v6only`` is
    ``*``, and a bound device follows ``%``. UNIX sockets print their path
    (``*`` when unnamed) and inode, as ``ss -x`` does.
    """
    if rec["family"] == "unix":
        if side == "local":
            return f"{rec.get('local_address') or '*'} {rec['inode']}"
        return f"* {rec.get('peer_inode') or 0}"
    address = rec[f"{side}_address"]
    port = rec[f"{side}_port"]
    if rec["family"] == "inet6":
        address = "*" if address == "::" and not rec.get("v6only") else f"[{address}]"
    device = f"%{rec['interface']}" if rec.get("interface") and side == "local" else ""
    return f"{address}{device}:{port or '*'}"


def ss_users(rec: Record) -> str:
    """``users:(("python3",pid=1234,fd=3))`` as ``ss -p`` writes a record's ``users`` (empty without any)."""
    users = rec.get("users") or []
    if not users:
        return ""
    return "users:(" + ",".join(f'("{u["name"]}",pid={u["pid"]},fd={u["fd"]})' for u in users) + ")"

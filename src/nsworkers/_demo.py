"""``nsworkers demo``: a throwaway three-namespace topology, inspected, then removed.

    client ── a0 ═══ veth ═══ b0 ─┐
                                  br0 (router ns, 10.77.0.254, fd77::fe)
    server ── c0 ═══ veth ═══ b1 ─┘

Everything is configured through workers (pyroute2 inside each namespace),
then ``nsworkers.inspect`` reads it back. All of it is removed at the end,
also when a step fails.
"""

from __future__ import annotations

import os
import time
from typing import Any, TextIO

from . import netns
from ._inspect import inspect
from ._pool import Pool


def _add_veth(local: str, peer: str, peer_ns: str) -> None:
    from pyroute2 import IPRoute

    fd = os.open(peer_ns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with IPRoute() as ipr:
            ipr.link("add", ifname=local, kind="veth", peer=peer)
            (idx,) = ipr.link_lookup(ifname=peer)
            ipr.link("set", index=idx, net_ns_fd=fd)
    finally:
        os.close(fd)


def _configure(
    bridge: dict[str, Any] | None, ifaces: list[tuple[str, list[str]]], routes: list[tuple[str, str]]
) -> None:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        (lo,) = ipr.link_lookup(ifname="lo")
        ipr.link("set", index=lo, state="up")
        if bridge is not None:
            ipr.link("add", ifname=bridge["name"], kind="bridge")
            (br,) = ipr.link_lookup(ifname=bridge["name"])
            for port in bridge["ports"]:
                (idx,) = ipr.link_lookup(ifname=port)
                ipr.link("set", index=idx, master=br, state="up")
        for name, addrs in ifaces:
            (idx,) = ipr.link_lookup(ifname=name)
            ipr.link("set", index=idx, state="up")
            for addr in addrs:
                ip, length = addr.split("/")
                ipr.addr("add", index=idx, address=ip, prefixlen=int(length), flags=0x02)  # nodad: usable at once
        for dst, gateway in routes:
            ipr.route("add", dst=dst, gateway=gateway)


def _unsettled(links: list[dict[str, Any]]) -> list[str]:
    """Links set up whose operational state has not caught up yet (a veth end still DOWN, a bridge coming up).

    Every link of the demo gets a carrier, so it only has to wait; a link
    that never would is given up on at the deadline.
    """
    return [
        link["ifname"] for link in links if "UP" in link["flags"] and link.get("operstate") not in ("UP", "UNKNOWN")
    ]


def _wait_settled(pool: Pool, paths: list[str], timeout: float = 5.0) -> None:
    """Wait until no link of *paths* is still changing state, so the table shows both ends of a veth alike."""
    from . import netlink

    deadline = time.monotonic() + timeout
    while any(_unsettled(pool.run(p, netlink.links)) for p in paths) and time.monotonic() < deadline:
        time.sleep(0.02)


def demo(out: TextIO) -> int:
    """Build, inspect, print and remove the demo topology; returns an exit code."""
    tag = f"nsw-demo-{os.getpid()}"
    names = {role: f"{tag}-{role}" for role in ("client", "router", "server")}
    made: list[str] = []
    try:
        for name in names.values():
            netns.create(name).close()
            made.append(name)
        path = {role: netns.path_of(name) for role, name in names.items()}
        with Pool(preload=("pyroute2",)) as pool:
            pool.run(path["client"], _add_veth, "a0", "b0", path["router"])
            pool.run(path["server"], _add_veth, "c0", "b1", path["router"])
            pool.run(
                path["router"],
                _configure,
                {"name": "br0", "ports": ["b0", "b1"]},
                [("br0", ["10.77.0.254/24", "fd77::fe/64"])],
                [],
            )
            pool.run(
                path["client"],
                _configure,
                None,
                [("a0", ["10.77.0.1/24", "fd77::1/64"])],
                [("10.78.0.0/16", "10.77.0.254"), ("fd78::/64", "fd77::fe")],
            )
            pool.run(
                path["server"],
                _configure,
                None,
                [("c0", ["10.77.0.2/24", "fd77::2/64"])],
                [("0.0.0.0/0", "10.77.0.254")],
            )
            _wait_settled(pool, list(path.values()))
            start = time.perf_counter()
            entries = sorted(inspect(path.values(), pool=pool), key=lambda e: e["namespace"])
            elapsed = time.perf_counter() - start
        from .cli import _table

        _table(entries, out)
        links = sum(len(e.get("links", [])) for e in entries)
        routes = sum(len(e.get("routes", [])) for e in entries)
        out.write(f"\ninspected {len(entries)} namespaces ({links} links, {routes} routes) in {elapsed * 1e3:.1f} ms\n")
        return 0 if all(e["ok"] for e in entries) else 1
    finally:
        for name in made:
            try:
                netns.delete(name)
            except OSError:
                pass

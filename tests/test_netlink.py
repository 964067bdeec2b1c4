"""nsworkers.netlink against iproute2 itself: same records, field by field."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import nsworkers
from nsworkers import Pool, netlink

from .conftest import ip

pytestmark = pytest.mark.privileged


@pytest.fixture(scope="module")
def npool() -> Iterator[Pool]:
    with Pool(preload=("pyroute2",)) as pool:
        yield pool


@pytest.fixture
def topology(make_netns: Callable[[], str]) -> str:
    """veth, bridge, ifb and macvlan links, IPv4+IPv6 addresses, routes in 3 tables, neighbours, rules."""
    ns = make_netns()

    def nsip(*args: str) -> None:
        ip("-n", ns, *args)

    nsip("link", "add", "br0", "type", "bridge")
    nsip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
    nsip("link", "set", "v1", "master", "br0")
    nsip("link", "add", "ifb7", "type", "ifb")
    nsip("link", "add", "mv0", "link", "v0", "type", "macvlan", "mode", "bridge")
    nsip("link", "add", "down0", "type", "veth", "peer", "name", "down1")  # left down: NO-CARRIER etc.
    for link in ("br0", "v0", "v1", "ifb7", "mv0", "down0"):
        nsip("link", "set", link, "up")
    nsip("link", "set", "mv0", "mtu", "1400")
    nsip("addr", "add", "10.9.0.1/24", "brd", "+", "dev", "br0")
    nsip("addr", "add", "10.9.0.7/24", "dev", "br0")  # secondary
    nsip("addr", "add", "fd00:9::1/64", "dev", "br0", "nodad")
    nsip("addr", "add", "192.0.2.1/32", "peer", "192.0.2.2", "dev", "v0")
    nsip("addr", "add", "10.10.0.1/16", "dev", "mv0", "label", "mv0:x")
    nsip("route", "add", "10.99.0.0/16", "via", "10.9.0.2")
    nsip("route", "add", "10.98.0.0/16", "via", "10.9.0.3", "table", "100")
    nsip("route", "add", "10.97.0.0/16", "via", "10.9.0.4", "table", "200", "metric", "7", "proto", "static")
    nsip("route", "add", "blackhole", "10.96.0.0/16")
    nsip("route", "add", "10.95.0.0/16", "dev", "br0", "mtu", "1300", "scope", "link")
    nsip("-6", "route", "add", "fd00:99::/64", "via", "fd00:9::2")
    nsip("-6", "route", "add", "fd00:98::/64", "via", "fd00:9::3", "table", "100")
    nsip("neigh", "add", "10.9.0.2", "lladdr", "02:00:00:00:00:02", "dev", "br0")
    nsip("neigh", "add", "10.9.0.3", "lladdr", "02:00:00:00:00:03", "dev", "br0", "nud", "stale")
    nsip("-6", "neigh", "add", "fd00:9::2", "lladdr", "02:00:00:00:00:04", "dev", "br0", "router")
    nsip("rule", "add", "from", "10.9.0.0/24", "table", "100", "pref", "100")
    nsip("rule", "add", "to", "10.98.0.0/16", "fwmark", "0x10/0xff", "table", "200", "pref", "101")
    nsip("rule", "add", "iif", "br0", "blackhole", "pref", "102")
    nsip("-6", "rule", "add", "from", "fd00:9::/64", "table", "100", "pref", "100")
    return ns


def ip_json(ns: str, *args: str) -> list[dict[str, Any]]:
    out = subprocess.run(["ip", "-n", ns, "-j", *args], capture_output=True, text=True, check=True).stdout
    return json.loads(out) if out.strip() else []


CASES: list[tuple[str, Callable[..., Any], tuple[Any, ...], tuple[str, ...]]] = [
    ("link", netlink.links, (), ("link", "show")),
    ("addr", netlink.addresses, (), ("addr", "show")),
    ("route", netlink.routes, (), ("route", "show", "table", "all")),
    ("route4", netlink.routes, (socket.AF_INET,), ("-4", "route", "show", "table", "all")),
    ("neigh", netlink.neighbours, (), ("neigh", "show")),
    ("rule4", netlink.rules, (socket.AF_INET,), ("rule", "show")),
    ("rule6", netlink.rules, (socket.AF_INET6,), ("-6", "rule", "show")),
]


@pytest.mark.parametrize(("name", "fn", "args", "ip_args"), CASES, ids=[c[0] for c in CASES])
def test_same_as_ip_json(
    npool: Pool, topology: str, name: str, fn: Callable[..., Any], args: tuple[Any, ...], ip_args: tuple[str, ...]
) -> None:
    ours = npool.run(f"/run/netns/{topology}", fn, *args)
    theirs = ip_json(topology, *ip_args)
    assert len(ours) == len(theirs), (ours, theirs)
    for mine, reference in zip(ours, theirs, strict=True):
        assert mine == reference
    assert len(theirs) > 2  # the topology really has something to compare


def test_rules_both_families(npool: Pool, topology: str) -> None:
    both = npool.run(f"/run/netns/{topology}", netlink.rules)
    assert both == ip_json(topology, "rule", "show") + ip_json(topology, "-6", "rule", "show")


def test_sysctl_is_per_namespace(npool: Pool, make_netns: Callable[[], str]) -> None:
    ns = make_netns()
    npool.run(f"/run/netns/{ns}", Path("/proc/sys/net/ipv4/ip_forward").write_text, "1\n")
    assert npool.run(f"/run/netns/{ns}", netlink.sysctl, "net.ipv4.ip_forward") == "1"
    assert npool.run(f"/run/netns/{ns}", netlink.sysctl, "net/ipv4/conf/lo/forwarding") == "1"
    other = make_netns()
    assert npool.run(f"/run/netns/{other}", netlink.sysctl, "net.ipv4.ip_forward") == "0"
    with pytest.raises(ValueError):
        npool.run(f"/run/netns/{ns}", netlink.sysctl, "net/../../etc/passwd")
    with pytest.raises(FileNotFoundError):
        npool.run(f"/run/netns/{ns}", netlink.sysctl, "net.ipv4.no_such_knob")


def test_snapshot(npool: Pool, topology: str) -> None:
    snap = npool.run(f"/run/netns/{topology}", netlink.snapshot, ("links", "routes", "neighbours", "rules"))
    assert set(snap) == {"id", "links", "routes", "neighbours", "rules", "inconsistent"}
    assert snap["inconsistent"] == []
    with nsworkers.Namespace.open(f"/run/netns/{topology}") as ns:
        assert snap["id"] == ns.unique_id
    json.dumps(snap)  # JSON-ready
    with pytest.raises(ValueError):
        npool.run(f"/run/netns/{topology}", netlink.snapshot, ("bogus",))


def churn_links(ns: str, stop: threading.Event) -> None:
    while not stop.is_set():
        subprocess.run(["ip", "-n", ns, "link", "add", "churn0", "type", "ifb"], check=False, capture_output=True)
        subprocess.run(["ip", "-n", ns, "link", "del", "churn0"], check=False, capture_output=True)


def test_interrupted_dumps_are_flagged_not_raised(npool: Pool, make_netns: Callable[[], str]) -> None:
    ns = make_netns()
    batch = "\n".join(f"link add ifb{i} type ifb" for i in range(300))
    subprocess.run(["ip", "-n", ns, "-batch", "-"], input=batch, text=True, check=True)
    path = f"/run/netns/{ns}"

    def dump_many() -> tuple[int, int]:
        flagged = total = 0
        for _ in range(40):
            result = netlink.links(attempts=1)
            total += 1
            flagged += result.interrupted
        return flagged, total

    stop = threading.Event()
    churners = [threading.Thread(target=churn_links, args=(ns, stop)) for _ in range(2)]
    for t in churners:
        t.start()
    try:
        flagged, _total = npool.run(path, dump_many)
        retried = npool.run(path, netlink.snapshot, ("links",), 5)
    finally:
        stop.set()
        for t in churners:
            t.join()
    assert flagged > 0, "the churn never interrupted a dump: the test proves nothing"
    assert isinstance(retried["inconsistent"], list)
    assert npool.run(path, netlink.links, 1).interrupted is False  # quiet again


def add_conntrack_entry(mark: int) -> None:
    """Runs in a worker: a TCP flow entry made through ctnetlink (no traffic needed)."""
    from pyroute2 import Conntrack
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

    orig = NFCTAttrTuple(saddr="10.9.0.1", daddr="10.9.0.2", proto=socket.IPPROTO_TCP, sport=1234, dport=80)
    reply = NFCTAttrTuple(saddr="10.9.0.2", daddr="10.9.0.1", proto=socket.IPPROTO_TCP, sport=80, dport=1234)
    with Conntrack() as ct:
        ct.entry("add", tuple_orig=orig, tuple_reply=reply, timeout=300, mark=mark)


def test_conntrack(npool: Pool, make_netns: Callable[[], str]) -> None:
    path, other = f"/run/netns/{make_netns()}", f"/run/netns/{make_netns()}"
    npool.run(path, add_conntrack_entry, 7)
    (entry,) = npool.run(path, netlink.conntrack)
    assert entry["family"] == "ipv4" and entry["protocol"] == "tcp" and entry["mark"] == 7
    assert entry["original"] == {"src": "10.9.0.1", "dst": "10.9.0.2", "sport": 1234, "dport": 80}
    assert entry["reply"] == {"src": "10.9.0.2", "dst": "10.9.0.1", "sport": 80, "dport": 1234}
    assert "CONFIRMED" in entry["status"] and 0 < entry["timeout"] <= 300
    assert npool.run(other, netlink.conntrack) == []  # per namespace


def test_xfrm_policies_match_ip_xfrm(npool: Pool, make_netns: Callable[[], str]) -> None:
    ns = make_netns()
    ip("-n", ns, "xfrm", "policy", "add", "src", "10.0.0.0/24", "dst", "10.1.0.0/24", "proto", "tcp", "dport", "443",
       "dir", "out", "priority", "5", "mark", "0x10", "tmpl", "src", "192.0.2.1", "dst", "192.0.2.2", "proto", "esp",
       "mode", "tunnel")  # fmt: skip
    ip("-n", ns, "xfrm", "policy", "add", "src", "fd00:1::/64", "dst", "fd00:2::/64", "dir", "in", "action", "block")
    policies = {p["dir"]: p for p in npool.run(f"/run/netns/{ns}", netlink.xfrm_policies)}
    text = ip("-n", ns, "xfrm", "policy")
    out = policies["out"]
    assert f"src {out['src']} dst {out['dst']} proto tcp dport 443" in text
    assert out["priority"] == 5 and out["action"] == "allow" and out["mark"] == "0x10/0xffffffff"
    (tmpl,) = out["tmpl"]
    assert f"tmpl src {tmpl['src']} dst {tmpl['dst']}" in text
    assert (tmpl["proto"], tmpl["mode"]) == ("esp", "tunnel")
    blocked = policies["in"]
    assert (blocked["src"], blocked["dst"], blocked["action"], blocked["tmpl"]) == (
        "fd00:1::/64", "fd00:2::/64", "block", []
    )  # fmt: skip
    # This kernel has no xfrm algorithms, so no state can be added: the dump must still work.
    assert npool.run(f"/run/netns/{ns}", netlink.xfrm_states) == []


def test_socket_from_inside_a_namespace(npool: Pool, topology: str) -> None:
    sock = npool.socket(f"/run/netns/{topology}", socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.bind(("10.9.0.1", 0))  # an address only that namespace has
        assert not os.get_inheritable(sock.fileno())
        peer = npool.socket(f"/run/netns/{topology}", socket.AF_INET, socket.SOCK_DGRAM)
        with peer:
            peer.sendto(b"ping", sock.getsockname())
            assert sock.recv(16) == b"ping"
    sock = npool.socket(f"/run/netns/{topology}")
    with sock:
        import fcntl

        netns_fd = fcntl.ioctl(sock.fileno(), 0x894C)  # SIOCGSKNS: the namespace the socket lives in
        try:
            assert os.fstat(netns_fd).st_ino == os.stat(f"/run/netns/{topology}").st_ino
        finally:
            os.close(netns_fd)
    fds = npool.run(f"/run/netns/{topology}", lambda: len(os.listdir("/proc/self/fd")))
    assert fds <= 8  # the worker kept no copy (stdio, channel, ns dir, netlink, listdir's own)

"""Fidelity: every key of every record equals live ``ip -j`` output, on a rich topology.

The topology uses every link kind this kernel allows (veth, bridge with a
vxlan port, macvlan in every mode incl. one moved to another namespace,
macvtap, ifb, tun/tap), altnames, an alias, a link group, a qdisc, dormant
mode; addresses of every flag and lifetime; routes of every type in several
tables, multipath, nexthop objects, seg6 and ip encapsulation, realms, source
routes, an IPv4 route via an IPv6 gateway, expiring routes, metrics;
neighbours in every NUD state, proxy entries; rules of every selector and
action; nexthop groups. Nothing expected is written here: each record is
compared with ``ip``'s, in plain, ``-s``, ``-d`` and ``-s -d`` modes, and
again with names configured in ``/etc/iproute2`` (in a private mount
namespace, so the host's ``/etc`` is never touched).

Values that move on their own (lifetimes, timers, counters) are checked by
bracketing: ``ip`` runs before and after nsworkers, and nsworkers' value must
equal one of them or lie between them (a neighbour's ages, which the kernel
resets to 0 when it touches the entry, between 0 and the larger). Every other
value must be equal, and every object's keys in ip's order.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from nsworkers import Pool, netlink

from .conftest import IN_USERNS, PREFIX, _counter, ip, wait_for

pytestmark = pytest.mark.privileged

Record = dict[str, Any]
P = functools.partial

# (id, function, ip arguments): every section in the modes ip offers it
CASES: list[tuple[str, Callable[..., Any], tuple[str, ...]]] = [
    ("link", netlink.links, ("link", "show")),
    ("link-s", P(netlink.links, stats=1), ("-s", "link", "show")),
    ("link-s-s", P(netlink.links, stats=2), ("-s", "-s", "link", "show")),
    ("link-d", P(netlink.links, details=1), ("-d", "link", "show")),
    ("link-s-d", P(netlink.links, stats=1, details=1), ("-s", "-d", "link", "show")),
    ("addr", netlink.addresses, ("addr", "show")),
    ("addr-s", P(netlink.addresses, stats=1), ("-s", "addr", "show")),
    ("addr-d", P(netlink.addresses, details=1), ("-d", "addr", "show")),
    ("route4", P(netlink.routes, 2), ("-4", "route", "show", "table", "all")),
    ("route6", P(netlink.routes, 10), ("-6", "route", "show", "table", "all")),
    ("route4-s-d", P(netlink.routes, 2, stats=1, details=1), ("-s", "-d", "-4", "route", "show", "table", "all")),
    ("route6-s-d", P(netlink.routes, 10, stats=1, details=1), ("-s", "-d", "-6", "route", "show", "table", "all")),
    ("neigh", netlink.neighbours, ("neigh", "show")),
    ("neigh-s", P(netlink.neighbours, stats=1), ("-s", "neigh", "show")),
    ("neigh-proxy", netlink.proxy_neighbours, ("neigh", "show", "proxy")),
    ("rule4", P(netlink.rules, 2), ("rule", "show")),
    ("rule6", P(netlink.rules, 10), ("-6", "rule", "show")),
    ("rule4-d", P(netlink.rules, 2, details=1), ("-d", "rule", "show")),
    ("nexthop", netlink.nexthops, ("nexthop", "show")),
    ("nexthop-d", P(netlink.nexthops, details=1), ("-d", "nexthop", "show")),
]

# The topology, as ip commands; "B" in a command is the second namespace.
TOPOLOGY = """
link add a0 type veth peer name b0 netns B
link add br0 type bridge
link add up0 type veth peer name up1
link add vx0 type vxlan id 42 dstport 4789 local 10.1.0.1 dev up0 ttl 64
link set vx0 master br0
link add mvb link up0 type macvlan mode bridge
link add mvp link up0 type macvlan mode private
link add mvv link up0 type macvlan mode vepa
link add mvs link up0 type macvlan mode source
link set mvs type macvlan macaddr add 02:00:00:00:00:aa
link add pt0 type veth peer name pt1
link add mvt link pt0 type macvlan mode passthru
link add mvx link up0 type macvlan mode bridge
link set mvx netns B
link add mtap link up0 type macvtap mode bridge
link add ifb0 type ifb
tuntap add tun0 mode tun
tuntap add tap0 mode tap multi_queue user 65534
link set tap0 mode dormant
link property add dev br0 altname bridge-zero
link property add dev br0 altname br-alt
link set up0 alias uplink-port
link set ifb0 group 5
link set ifb0 txqueuelen 77
link set a0 up
link set br0 up
link set up0 up
link set up1 up
link set vx0 up
link set mvb up
link set mvp up
link set mvv up
link set mvs up
link set pt0 up
link set pt1 up
link set mvt up
link set mtap up
link set ifb0 up
link set tun0 up
link set tap0 up
addr add 10.1.0.1/24 brd + dev br0
addr add 10.1.0.2/24 dev br0 label br0:sec
addr add 192.0.2.1 peer 192.0.2.2/32 dev up0
addr add 10.2.0.1/24 dev ifb0 metric 50
addr add 10.3.0.1/24 dev ifb0 noprefixroute
addr add 10.4.0.1/24 dev ifb0 valid_lft 3600 preferred_lft 1800
addr add fd01::1/64 dev br0 nodad
addr add fd01::2/64 dev br0 nodad valid_lft 3600 preferred_lft 0
addr add fd01::3/64 dev br0 nodad mngtmpaddr
addr add fd01::4/64 dev br0 nodad home
addr add fd02::1/64 dev up0
addr add 239.1.1.1/32 dev br0 autojoin
-6 addr add fd03::1/64 dev ifb0 nodad noprefixroute
nexthop add id 1 via 10.1.0.254 dev br0
nexthop add id 2 dev up0
nexthop add id 3 blackhole
nexthop add id 4 via 10.1.0.253 dev br0 proto zebra
nexthop add id 5 via fd01::fe dev br0
nexthop add id 10 group 1/4,3
nexthop add id 11 group 1/4 type resilient buckets 8 idle_timer 120
nexthop add id 12 encap ip id 7 dst 10.9.9.9 ttl 9 dev up0
nexthop add id 20 via 10.1.0.77 fdb
route add 10.10.0.0/24 via 10.1.0.254
route add 10.11.0.0/24 nhid 1
route add 10.12.0.0/24 nhid 10
route add 10.13.0.0/24 nexthop via 10.1.0.254 weight 3 nexthop via 10.1.0.253 weight 1
-6 route add fd10::/64 nexthop via fd01::fe weight 2 nexthop via fd01::fd weight 5
route add blackhole 10.14.0.0/24
route add unreachable 10.15.0.0/24
route add prohibit 10.16.0.0/24
route add throw 10.17.0.0/24 table 100
route add local 10.18.0.1 dev br0 table 100
route add broadcast 10.18.0.255 dev br0 table 100
route add multicast 239.2.0.0/16 dev br0 table 100
-6 route add anycast fd05::/128 dev br0 table 100
route add 10.19.0.0/24 via 10.1.0.254 table 200 metric 7 proto static
route add 10.20.0.0/24 via 10.1.0.254 proto 17
route add 10.21.0.0/24 via 10.1.0.254 proto 99
route add 10.22.0.0/24 via 10.1.0.254 realm 5
route add 10.23.0.0/24 via 10.1.0.254 realms 3/4
route add 10.24.0.0/24 via 10.1.0.254 tos 0x28
route add 10.25.0.0/24 via 10.1.0.254 tos 4
route add 10.26.0.0/24 via inet6 fd01::fe dev br0
-6 route add fd20::/64 from fd21::/64 via fd01::fe
-6 route add fd22::/64 via fd01::fe expires 300
route add 10.27.0.0/24 via 10.1.0.254 mtu lock 1400 rtt 100ms rttvar 40ms window 1000 cwnd 10 initcwnd 20
route add 10.31.0.0/24 via 10.1.0.254 initrwnd 30 advmss 1300 hoplimit 30 reordering 5 ssthresh 100 rto_min 200ms
route add 10.32.0.0/24 via 10.1.0.254 quickack 1 congctl lock cubic features ecn fastopen_no_cookie 1
route add 10.28.0.0/24 encap ip id 100 dst 10.1.0.9 ttl 10 tos 2 dev up0
-6 route add fd30::/64 encap seg6 mode encap segs fd01::a,fd01::b dev up0
-6 route add fd31::/64 encap seg6 mode inline segs fd01::c dev up0
-6 route add fd32::/64 via fd01::fe pref high
route add 10.29.0.0/24 via 10.1.0.254 dev br0 onlink
route add 10.30.0.0/24 dev ifb0 scope link src 10.2.0.1 table 300
route add default via 10.1.0.254
-6 route add default via fd01::fe metric 2048
neigh add 10.1.0.101 lladdr 02:00:00:00:01:01 dev br0
neigh add 10.1.0.102 lladdr 02:00:00:00:01:02 dev br0 nud reachable
neigh add 10.1.0.103 lladdr 02:00:00:00:01:03 dev br0 nud stale
neigh add 10.1.0.104 lladdr 02:00:00:00:01:04 dev br0 nud delay
neigh add 10.1.0.105 lladdr 02:00:00:00:01:05 dev br0 nud probe
neigh add 10.1.0.106 dev br0 nud failed
neigh add 10.1.0.107 dev br0 nud incomplete
neigh add 10.1.0.108 lladdr 02:00:00:00:01:08 dev br0 nud noarp
neigh add 10.1.0.109 dev br0 nud none
neigh add 10.1.0.110 lladdr 02:00:00:00:01:10 dev br0 extern_learn
neigh add 10.1.0.111 dev br0 managed
neigh add 10.1.0.112 lladdr 02:00:00:00:01:12 dev br0 proto zebra
-6 neigh add fd01::101 lladdr 02:00:00:00:02:01 dev br0 router
neigh add proxy 10.1.0.150 dev br0
-6 neigh add proxy fd01::150 dev br0
rule add from 10.1.0.0/24 table 100 pref 100
rule add not to 10.98.0.0/16 fwmark 0x10/0xff table 200 pref 101
rule add iif br0 blackhole pref 102
rule add oif up0 unreachable pref 103
rule add uidrange 1000-2000 table 100 pref 104
rule add ipproto tcp dport 80 table 100 pref 105
rule add ipproto udp sport 1000-2000 dport 53 table 100 pref 106
rule add goto 110 pref 107
rule add nop pref 108
rule add tun_id 77 table 100 pref 109
rule add realms 3/4 table 100 pref 110
rule add table main suppress_prefixlength 0 pref 111
rule add table main suppress_ifgroup 5 pref 112
rule add l3mdev pref 113
rule add tos 0x10 table 100 pref 114
rule add fwmark 0x5 prohibit pref 115
rule add from 10.5.0.0/16 table 100 proto zebra pref 116
rule add iif nosuch0 table 100 pref 117
rule add to 10.6.0.0/16 table 300 realms 5 pref 118
-6 rule add from fd01::/64 table 100 pref 100
-6 rule add to fd02::1 table 100 pref 101
"""

# /etc/iproute2 for the names pass: every table ip reads, including the .d directories
NAMES_CONFIG = {
    "rt_tables": "255 local\n254 main\n253 default\n0 unspec\n100 blue\n# a comment\n200\tgreen\n",
    "rt_tables.d/extra.conf": "300 red\n",
    "rt_tables.d/ignored": "100 notread\n",
    "rt_protos": "0 unspec\n2 kernel\n3 boot\n4 static\n11 zebra\n17 mrouted\n99 openr\n",
    "rt_protos.d/more.conf": "4 mystatic\n",
    "group": "0 default\n5 fast\n",
    "rt_realms": "0 cosmos\n3 east\n4 west\n0x5 five\n",
    "rt_scopes": "0 global\n255 nowhere\n254 host\n253 link\n200 site\n",
    "rt_dsfield": "0x0 default\n0x10 lowdelay\n0x28 AF11\n",
}


# a neighbour's ages (seconds since used / confirmed / updated) drop to 0 whenever the kernel touches it
AGES = {"used", "confirmed", "updated"}


def ip_json(ns: str, args: tuple[str, ...]) -> list[Record]:
    out = subprocess.run(["ip", "-n", ns, "-j", *args], capture_output=True, text=True, check=True).stdout
    return json.loads(out) if out.strip() else []


def bracketed(ours: Any, before: Any, after: Any, where: str = "") -> list[str]:
    """Where *ours* differs from ip: every key equal, a moving value equal to or between ip's two readings."""
    if isinstance(before, dict) and isinstance(after, dict) and isinstance(ours, dict):
        problems = []
        if list(ours) != list(before) and list(ours) != list(after):
            problems.append(f"{where}: keys {list(ours)} != ip's {list(before)}")
        for key in before:
            if key in ours:
                problems.extend(bracketed(ours[key], before[key], after.get(key), f"{where}.{key}"))
        return problems
    if isinstance(before, list) and isinstance(after, list) and isinstance(ours, list):
        if not len(ours) == len(before) == len(after):
            return [f"{where}: {len(ours)} items, ip has {len(before)} then {len(after)}"]
        return [p for i, item in enumerate(ours) for p in bracketed(item, before[i], after[i], f"{where}[{i}]")]
    if ours in (before, after) and type(ours) in (type(before), type(after)):
        return []
    numbers = (int, float)
    moving = all(isinstance(v, numbers) and not isinstance(v, bool) for v in (ours, before, after))
    if moving and min(before, after) <= ours <= max(before, after):
        return []
    if moving and where.rsplit(".", 1)[-1] in AGES and 0 <= ours <= max(before, after):
        return []
    return [f"{where}: {ours!r}, ip printed {before!r} then {after!r}"]


def compare_all(pool: Pool, ns: str) -> dict[str, list[str]]:
    """Every case against ip: ``{case: [problems]}`` (empty lists when all is equal)."""
    out = {}
    for name, fn, args in CASES:
        before = ip_json(ns, args)
        ours = pool.run(f"/run/netns/{ns}", fn)
        after = ip_json(ns, args)
        problems = bracketed(ours, before, after, name)
        if not before:
            problems.append(f"{name}: ip printed nothing; the topology is missing this section")
        out[name] = problems
    return out


def _settled(ns: str) -> bool:
    """No address still doing duplicate address detection: the routes it adds are in place."""
    links = ip_json(ns, ("-6", "addr", "show"))
    return not any(a.get("tentative") for link in links for a in link.get("addr_info", []))


@contextlib.contextmanager
def rich_topology() -> Iterator[str]:
    """The rich topology in a fresh namespace (plus the one its moved links live in); removed afterwards."""
    main, other = f"{PREFIX}{next(_counter)}", f"{PREFIX}{next(_counter)}"
    try:
        for ns in (main, other):
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
        for line in TOPOLOGY.strip().splitlines():
            args = [other if word == "B" else word for word in line.split()]
            if IN_USERNS and {"tun0", "tap0"} & set(args):
                continue  # a user namespace may not open /dev/net/tun
            if IN_USERNS and "uidrange" in args:
                args[args.index("uidrange") + 1] = "0-0"  # the only uid mapped there
            ip("-n", main, *args)
        subprocess.run(["tc", "-n", main, "qdisc", "add", "dev", "ifb0", "root", "pfifo"], check=True)
        assert wait_for(lambda: _settled(main), timeout=30), "IPv6 DAD did not finish"
        yield main
    finally:
        for ns in (main, other):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


@pytest.fixture(scope="module")
def rich() -> Iterator[str]:
    with rich_topology() as ns:
        yield ns


@pytest.fixture(scope="module")
def fpool() -> Iterator[Pool]:
    with Pool() as pool:
        yield pool


@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_every_key_equals_ip(fpool: Pool, rich: str, case: str) -> None:
    name, fn, args = next(c for c in CASES if c[0] == case)
    before = ip_json(rich, args)
    ours = fpool.run(f"/run/netns/{rich}", fn)
    after = ip_json(rich, args)
    assert before, "ip printed nothing: the topology lacks this section"
    assert bracketed(ours, before, after, name) == []


_NAMES_PASS = """
import json, os, subprocess, sys
sys.path.insert(0, sys.argv[2])
from tests import test_fidelity as t
from nsworkers import Pool
subprocess.run(["mount", "-t", "tmpfs", "nsw-iproute2", "/etc/iproute2"], check=True)
for rel, text in t.NAMES_CONFIG.items():
    path = os.path.join("/etc/iproute2", rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
with Pool() as pool:
    problems = t.compare_all(pool, sys.argv[1])
routes = t.ip_json(sys.argv[1], ("-4", "route", "show", "table", "all"))
print(json.dumps({"problems": problems, "tables": sorted({r.get("table", "main") for r in routes})}))
"""


def test_names_from_etc_iproute2(rich: str) -> None:
    """The same comparison with every iproute2 names file configured, in a private mount namespace."""
    unshare = shutil.which("unshare")
    assert unshare is not None
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    src = os.path.join(root, "src")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, root]))
    done = subprocess.run(
        [unshare, "-m", "--propagation", "private", sys.executable, "-c", _NAMES_PASS, rich, root],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert set(results["problems"]) == {c[0] for c in CASES}
    assert {case: problems for case, problems in results["problems"].items() if problems} == {}
    assert {"blue", "green", "red"} <= set(results["tables"])  # the names were in use there ...
    routes = ip_json(rich, ("-4", "route", "show", "table", "all"))
    assert "blue" not in {r.get("table") for r in routes}  # ... and only there: the host's /etc is untouched


def test_bracketing_catches_a_difference() -> None:
    """The comparison itself can fail: a changed key, a missing key, a value outside ip's two readings."""
    ref = {"a": 1, "b": {"c": "x"}, "t": 5}
    assert bracketed({"a": 1, "b": {"c": "x"}, "t": 4}, ref, {**ref, "t": 3}) == []
    assert bracketed({"a": 2, "b": {"c": "x"}, "t": 5}, ref, ref) != []
    assert bracketed({"a": 1, "b": {}, "t": 5}, ref, ref) != []
    assert bracketed({"a": 1, "b": {"c": "x"}, "t": 9}, ref, {**ref, "t": 3}) != []
    assert bracketed({"a": True, "b": {"c": "x"}, "t": 5}, ref, ref) != []


def test_link_by_name_altname_or_index(fpool: Pool, rich: str) -> None:
    """``link()`` resolves an alternative name as ``ip link show dev ALTNAME`` does."""
    (reference,) = ip_json(rich, ("link", "show", "dev", "bridge-zero"))
    by_altname = fpool.run(f"/run/netns/{rich}", netlink.link, "bridge-zero")
    assert by_altname["ifname"] == reference["ifname"] == "br0"
    assert fpool.run(f"/run/netns/{rich}", netlink.link, reference["ifindex"])["ifname"] == "br0"

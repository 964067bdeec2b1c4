"""The rich topology of the fidelity suite and bench R1, built with ``ip`` (no pytest needed).

Every link kind this kernel has (veth incl. one whose peer lives in a second
namespace, bridge with a vxlan port, macvlan in every mode incl. one moved
away, macvtap, ifb, tun/tap), altnames, an alias, a link group, a qdisc,
dormant mode; addresses of every flag and lifetime; routes of every type in
several tables, multipath, nexthop objects, seg6, seg6local and ip encapsulation,
realms, source routes, an IPv4 route via an IPv6 gateway, expiring routes,
metrics; neighbours in every NUD state and proxy entries; rules of every
selector and action; nexthop groups.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator

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
-6 route add fd4c::/64 encap seg6local action End dev up0
-6 route add fd4c:1::/64 encap seg6local action End.X nh6 fd01::d dev up0
-6 route add fd4c:2::/64 encap seg6local action End.T table 100 dev up0
-6 route add fd4c:3::/64 encap seg6local action End.DX4 nh4 10.1.0.9 dev up0
-6 route add fd4c:4::/64 encap seg6local action End.DX2 oif up1 dev up0
-6 route add fd4c:5::/64 encap seg6local action End.B6.Encaps srh segs fd01::e,fd01::f dev up0
-6 route add fd4c:6::/64 encap seg6local action End count dev up0
-6 route add fd4c:7::/64 encap seg6local action End flavors next-csid lblen 32 nflen 16 dev up0
-6 nexthop add id 13 encap seg6local action End count dev up0
-6 route add fd4c:8::/64 nhid 13
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


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _settled(ns: str) -> bool:
    """No address still doing duplicate address detection: the routes it adds are in place."""
    out = subprocess.run(["ip", "-n", ns, "-j", "-6", "addr", "show"], capture_output=True, text=True, check=True)
    links = json.loads(out.stdout or "[]")
    return not any(a.get("tentative") for link in links for a in link.get("addr_info", []))


@contextlib.contextmanager
def rich_topology(main: str, other: str, *, userns: bool = False) -> Iterator[str]:
    """Namespaces *main* (the topology) and *other* (where moved links live); both removed afterwards.

    *userns*: leave out what a user namespace may not do (open ``/dev/net/tun``, map uid 1000).
    """
    try:
        for ns in (main, other):
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        for line in TOPOLOGY.strip().splitlines():
            args = [other if word == "B" else word for word in line.split()]
            if userns and {"tun0", "tap0"} & set(args):
                continue
            if userns and "uidrange" in args:
                args[args.index("uidrange") + 1] = "0-0"  # the only uid mapped there
            _ip("-n", main, *args)
        subprocess.run(["tc", "-n", main, "qdisc", "add", "dev", "ifb0", "root", "pfifo"], check=True)
        deadline = time.monotonic() + 30
        while not _settled(main):
            if time.monotonic() > deadline:
                raise RuntimeError("IPv6 duplicate address detection did not finish")
            time.sleep(0.05)
        yield main
    finally:
        for ns in (main, other):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)

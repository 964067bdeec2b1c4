"""Fidelity: every key of every record equals live ``ip -j`` output, on a rich topology.

The topology (``tests/_richnet.py``) uses every link kind this kernel has (veth, bridge with a
vxlan port, macvlan in every mode incl. one moved to another namespace,
macvtap, ifb, tun/tap), altnames, an alias, a link group, a qdisc, dormant
mode; addresses of every flag and lifetime; routes of every type in several
tables, multipath, nexthop objects, seg6, seg6local and ip encapsulation, realms, source
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

import functools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from nsworkers import Namespace, Pool, netlink

from ._richnet import rich_topology
from .conftest import IN_USERNS, PREFIX, _counter, ip

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
    ("nexthop-s", P(netlink.nexthops, stats=1), ("-s", "nexthop", "show")),
    ("nexthop-d", P(netlink.nexthops, details=1), ("-d", "nexthop", "show")),
]

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


@pytest.fixture(scope="module")
def rich() -> Iterator[str]:
    with rich_topology(f"{PREFIX}{next(_counter)}", f"{PREFIX}{next(_counter)}", userns=IN_USERNS) as ns:
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


def test_names_never_come_from_a_joined_mount_namespace(fpool: Pool, make_netns: Callable[[], str]) -> None:
    """A worker that joined a container's mount namespace reads the caller's /etc/iproute2, not the container's."""
    ns = make_netns()
    ip("-n", ns, "link", "add", "ifb5", "type", "ifb")
    ip("-n", ns, "link", "set", "ifb5", "up")
    ip("-n", ns, "route", "add", "10.55.0.0/16", "dev", "ifb5", "table", "177")
    script = (
        "mount -t tmpfs nsw-evil /etc/iproute2 && echo '177 evil' > /etc/iproute2/rt_tables && echo ready && sleep 60"
    )
    container = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script], stdout=subprocess.PIPE
    )
    try:
        assert container.stdout is not None and container.stdout.readline() == b"ready\n"
        children = psutil.Process(container.pid).children()  # unshare may exec sh or fork it
        pid = children[0].pid if children else container.pid
        with Namespace.open(f"/run/netns/{ns}") as net, Namespace.from_pid(pid, "mnt") as mnt:
            seen = fpool.run([net, mnt], Path("/etc/iproute2/rt_tables").read_text)
            assert "177 evil" in seen  # the worker really is in the container's mount namespace ...
            routes = fpool.run([net, mnt], netlink.routes, 2)
        (ours,) = [r for r in routes if r["dst"] == "10.55.0.0/16"]
        (theirs,) = [r for r in ip_json(ns, ("-4", "route", "show", "table", "all")) if r["dst"] == "10.55.0.0/16"]
        assert ours == theirs and ours["table"] != "evil"  # ... and named the table as the caller's ip does
    finally:
        container.kill()
        container.wait()
        if container.stdout is not None:
            container.stdout.close()

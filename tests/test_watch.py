"""Issue 8: single-link lookup, conntrack filters and deletion, and the merged change stream."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import nsworkers
from nsworkers import Pool, netlink

from .conftest import ip
from .test_netlink import add_conntrack_entry

pytestmark = pytest.mark.privileged


def test_link_lookup(pool: Pool, netns: str) -> None:
    name = os.path.basename(netns)
    ip("-n", name, "link", "add", "ifb9", "type", "ifb")
    rec = pool.run(netns, netlink.link, "ifb9")
    assert rec == pool.run(netns, netlink.link, rec["ifindex"])
    assert rec["ifname"] == "ifb9"
    with pytest.raises(nsworkers.LinkNotFoundError) as info:
        pool.run(netns, netlink.link, "nope0")
    assert "nope0" in str(info.value) and "net:[" in str(info.value)


def add_flows() -> None:
    """Runs in a worker: three flows with different ports, protocols and marks."""
    from pyroute2 import Conntrack
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

    with Conntrack() as ct:
        for sport, dport, proto, mark in ((1000, 80, 6, 1), (1001, 443, 6, 2), (1002, 53, 17, 2)):
            orig = NFCTAttrTuple(saddr="10.1.0.1", daddr="10.1.0.2", proto=proto, sport=sport, dport=dport)
            reply = NFCTAttrTuple(saddr="10.1.0.2", daddr="10.1.0.1", proto=proto, sport=dport, dport=sport)
            ct.entry("add", tuple_orig=orig, tuple_reply=reply, timeout=300, mark=mark)


def test_conntrack_filters_and_delete(pool: Pool, netns: str) -> None:
    pool.run(netns, add_flows)
    assert len(pool.run(netns, netlink.conntrack)) == 3
    assert [e["original"]["dport"] for e in pool.run(netns, netlink.conntrack, protocol="udp")] == [53]
    assert len(pool.run(netns, netlink.conntrack, mark=2)) == 2
    assert len(pool.run(netns, netlink.conntrack, port=443)) == 1
    assert len(pool.run(netns, netlink.conntrack, address="10.1.0.2", zone=0)) == 3
    with pytest.raises(ValueError):
        pool.run(netns, netlink.conntrack_delete)  # no filter: refused, nothing flushed
    with pytest.raises(TypeError):
        pool.run(netns, netlink.conntrack, colour="red")
    assert pool.run(netns, netlink.conntrack_delete, mark=2) == 2
    (left,) = pool.run(netns, netlink.conntrack)
    assert left["mark"] == 1
    assert pool.run(netns, netlink.conntrack_delete, mark=2) == 0


def test_conntrack_entry_helper_is_reused(pool: Pool, netns: str) -> None:
    pool.run(netns, add_conntrack_entry, 9)
    assert pool.run(netns, netlink.conntrack_delete, mark=9, protocol="tcp", dport=80) == 1


def test_watch_merges_tagged_events_in_order(make_netns: Callable[[], str]) -> None:
    a, b = make_netns(), make_netns()
    paths = {f"/run/netns/{a}": a, f"/run/netns/{b}": b}
    events: list[dict[str, Any]] = []
    stream = nsworkers.watch(list(paths), ("links", "addresses"), poll=0.2)
    joined = 0
    deadline = time.monotonic() + 30

    def change() -> None:
        for name in (a, b):
            ip("-n", name, "link", "add", "w0", "type", "ifb")
            ip("-n", name, "addr", "add", "10.3.0.1/24", "dev", "w0")
            ip("-n", name, "link", "del", "w0")
        ip("netns", "del", b)

    changer = threading.Thread(target=change)
    try:
        for event in stream:
            events.append(event)
            if event["event"] == "joined":
                joined += 1
                if joined == 2:
                    changer.start()
            if event["event"] == "left" or time.monotonic() > deadline:
                break
    finally:
        stream.close()
        if changer.is_alive() or changer.ident is not None:
            changer.join()
    for path, name in paths.items():
        mine = [e for e in events if e["namespace"] == path and e["event"] in ("new", "del")]
        assert all(e["name"] == name for e in mine)
        links = [(e["event"], e["record"]["ifname"]) for e in mine if e["kind"] == "link"]
        assert links[0] == ("new", "w0") and links[-1] == ("del", "w0")  # in order
        addrs = [e for e in mine if e["kind"] == "address" and e["record"]["local"] == "10.3.0.1"]
        assert [e["event"] for e in addrs] == ["new", "del"]  # once each
    (left,) = [e for e in events if e["event"] == "left"]
    assert left["name"] == b and left["reason"] == "namespace gone"


def test_cli_watch(make_netns: Callable[[], str]) -> None:
    name = make_netns()
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(nsworkers.__file__))))
    proc = subprocess.Popen(
        [sys.executable, "-m", "nsworkers", "watch", name, "--what", "links", "--count", "1"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["event"] == "joined" and first["name"] == name
        ip("-n", name, "link", "add", "cli0", "type", "ifb")
        event = json.loads(proc.stdout.readline())
        assert (event["event"], event["kind"], event["record"]["ifname"]) == ("new", "link", "cli0")
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()


def test_watch_bad_section() -> None:
    with pytest.raises(ValueError):
        next(nsworkers.watch(["/proc/self/ns/net"], ("bogus",)))
    with pytest.raises(ValueError):
        netlink.watch_events(("bogus",))

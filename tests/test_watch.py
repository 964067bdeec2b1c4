"""Issue 8: single-link lookup, conntrack filters and deletion, and the merged change stream."""

from __future__ import annotations

import json
import os
import signal
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


def cli_watch(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(nsworkers.__file__))))
    return subprocess.run(
        [sys.executable, "-m", "nsworkers", "watch", *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_watch_duration_ends_a_quiet_stream(make_netns: Callable[[], str]) -> None:
    name = make_netns()
    events: list[dict[str, Any]] = []
    stream = nsworkers.watch([f"/run/netns/{name}"], ("links",), duration=0.5)
    reader = threading.Thread(target=lambda: events.extend(stream))
    reader.start()
    reader.join(60)  # no event ever comes: only the deadline can end it
    assert not reader.is_alive()
    assert [e["event"] for e in events] == ["joined"]


def test_cli_watch_duration_and_exit_codes(make_netns: Callable[[], str]) -> None:
    name = make_netns()
    done = cli_watch(name, "--duration", "0.5")
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["event"] for line in done.stdout.splitlines()] == ["joined"]

    done = cli_watch("/run/netns/nsw-missing-w", "--duration", "0.5")
    assert done.returncode == 3  # nothing could be watched, like inspect
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1

    done = cli_watch(name, "/run/netns/nsw-missing-w", "--duration", "0.5")
    assert done.returncode == 1  # some failed
    assert [json.loads(line)["event"] for line in done.stdout.splitlines()] == ["joined", "error"]


def test_network_namespaces_skips_namespaces_only_workers_keep(pool: Pool, make_netns: Callable[[], str]) -> None:
    name = make_netns()
    path = f"/run/netns/{name}"
    ino = os.stat(path).st_ino
    worker = pool.run(path, os.getpid)
    ip("netns", "del", name)
    assert os.stat(f"/proc/{worker}/ns/net").st_ino == ino  # the worker keeps it alive ...
    assert any(ns.inode == ino for ns in nsworkers.discover(["net"]))  # ... discovery sees it ...
    inodes = set()
    for found in nsworkers.network_namespaces():
        try:
            inodes.add(os.stat(found).st_ino)
        except OSError:
            continue  # someone else's, gone meanwhile
    assert ino not in inodes  # ... but it is no namespace to inspect or watch


def test_watch_everything_one_left_and_no_rejoin(pool: Pool, make_netns: Callable[[], str]) -> None:
    # A outlives its name (a process is in it); its worker too (the caller's pool keeps it).
    # After "left", A must not come back through /proc/PID/ns/net of the process or the worker.
    a = make_netns()
    a_id = f"net:[{os.stat(f'/run/netns/{a}').st_ino}]"
    holder = subprocess.Popen(["ip", "netns", "exec", a, "sleep", "120"])
    b = ""
    events: list[dict[str, Any]] = []
    stream = nsworkers.watch(None, ("links",), pool=pool, poll=0.2, rescan=0.1, duration=120)
    try:
        for event in stream:
            if event.get("id") == a_id or (b and event.get("name") == b):
                events.append(event)
            if event.get("id") == a_id and event["event"] == "joined" and event.get("name") == a:
                ip("netns", "del", a)
            elif event.get("id") == a_id and event["event"] == "left":
                b = make_netns()  # its "joined" proves rescans ran after A left
            elif b and event.get("name") == b and event["event"] == "joined":
                break
        assert holder.poll() is None  # A still existed all along, reachable through the holder
    finally:
        stream.close()
        holder.kill()
        holder.wait()
    assert [(e["event"], e.get("name")) for e in events] == [("joined", a), ("left", a), ("joined", b)]
    assert events[1]["reason"] == "namespace gone" and "error" not in events[1]


def test_cli_watch_two_ctrl_c_end_it_without_a_traceback(make_netns: Callable[[], str]) -> None:
    # `timeout -s INT` and impatient users send SIGINT twice: the second may land during shutdown
    name = make_netns()
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(nsworkers.__file__))))
    proc = subprocess.Popen(
        [sys.executable, "-m", "nsworkers", "watch", name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["event"] == "joined"
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode in (130, -signal.SIGINT), err
        assert "Traceback" not in err
    finally:
        proc.kill()
        proc.wait()

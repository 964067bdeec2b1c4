"""find(): every kind of term, on a small container host, with the exact set of matches."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import nsworkers
from nsworkers._find import Term, parse_term

from ._hostnet import HostNet, host_network

Match = tuple[str, str, str | None]


@pytest.fixture(scope="module")
def net() -> Iterator[HostNet]:
    with host_network() as built:
        yield built


def _find(net: HostNet, term: str) -> tuple[set[Match], list[dict[str, Any]]]:
    matches = nsworkers.find(term, [net.path(r) for r in net.names], attribution=False)
    return {(net.role(m["namespace"]), m["kind"], m["dev"]) for m in matches}, matches


def test_parse_term() -> None:
    assert parse_term("10.0.0.1") == Term("ip", "10.0.0.1")
    assert parse_term("2001:DB8::1") == Term("ip", "2001:db8::1")
    assert parse_term("10.1.2.3/8") == Term("prefix", "10.0.0.0/8")
    assert parse_term("0A-58-0a-F4-01-11") == Term("mac", "0a:58:0a:f4:01:11")
    assert parse_term(":8080") == Term("port", "8080")
    for bad in ("", "eth0", ":0", ":70000", "10.0.0.256", "0a:58:0a"):
        with pytest.raises(ValueError):
            parse_term(bad)


@pytest.mark.privileged
def test_ip(net: HostNet) -> None:
    found, matches = _find(net, "10.10.0.11")
    assert found == {
        ("host", "route", "br0"),  # 10.10.0.0/24 dev br0
        ("pod1", "address", "eth0"),
        ("pod1", "route", "eth0"),
        ("pod1", "socket", None),  # the listener and the accepted connection
        ("pod2", "neighbour", "eth0"),  # learnt when pod2 connected
        ("pod2", "route", "eth0"),
        ("pod2", "socket", None),
        ("pod3", "route", "eth0"),
    }
    sockets = {
        (net.role(m["namespace"]), m["text"].split()[1], tuple(u["pid"] for u in m["users"]))
        for m in matches
        if m["kind"] == "socket"
    }
    assert sockets == {
        ("pod1", "LISTEN", (net.pids["pod1"],)),
        ("pod1", "ESTAB", (net.pids["pod1"],)),
        ("pod2", "ESTAB", (net.pids["pod2"],)),
    }
    address = next(m for m in matches if m["kind"] == "address")
    assert address["text"] == "inet 10.10.0.11/24 scope global" and address["name"] == net.names["pod1"]


@pytest.mark.privileged
def test_ipv6(net: HostNet) -> None:
    found, _ = _find(net, "::1")
    every = {(r, "address", "lo") for r in net.names}  # `::1 dev lo` is a route of table local only: skipped
    assert found == every | {("pod4", "socket", None)}


@pytest.mark.privileged
def test_prefix(net: HostNet) -> None:
    found, matches = _find(net, "10.20.0.0/24")
    assert found == {
        ("host", "address", "uplink0"),
        ("host", "neighbour", "uplink0"),  # 10.20.0.14, learnt when the host connected to pod4
        ("host", "route", "uplink0"),  # 10.20.0.0/24 itself, and 10.30.0.0/16 via 10.20.0.14
        ("host", "socket", None),
        ("pod4", "address", "eth0"),
        ("pod4", "neighbour", "eth0"),
        ("pod4", "route", "eth0"),  # 10.20.0.0/24 and default via 10.20.0.1
        ("pod4", "socket", None),  # the host's connection, queued: IPv4-mapped addresses
    }
    assert sorted(m["text"] for m in matches if m["kind"] == "route" and net.role(m["namespace"]) == "host") == [
        "10.20.0.0/24 dev uplink0",
        "10.30.0.0/16 via 10.20.0.14 dev uplink0",
    ]
    found, _ = _find(net, "10.30.9.0/24")
    assert found == {("host", "route", "uplink0")}


@pytest.mark.privileged
def test_ipv4_mapped_peer_and_no_sockets(net: HostNet) -> None:
    found, matches = _find(net, "10.20.0.1")
    assert ("pod4", "socket", None) in found
    queued = next(m for m in matches if m["kind"] == "socket" and net.role(m["namespace"]) == "pod4")
    assert queued["text"].startswith("tcp ESTAB [::ffff:10.20.0.14]:9090 [::ffff:10.20.0.1]:") and queued["users"] == []
    without = nsworkers.find("10.20.0.1", [net.path(r) for r in net.names], attribution=False, sockets=False)
    assert {(net.role(m["namespace"]), m["kind"], m["dev"]) for m in without} == {k for k in found if k[1] != "socket"}


@pytest.mark.privileged
def test_mac(net: HostNet) -> None:
    mac = json.loads(net.run_in("pod1", "ip", "-j", "link", "show", "eth0"))[0]["address"]
    found, _ = _find(net, mac.upper())
    assert found == {("pod1", "link", "eth0"), ("pod2", "neighbour", "eth0")}
    found, matches = _find(net, "02:00:00:00:00:99")
    assert found == {("host", "neighbour", "br0")}
    assert matches[0]["text"] == "10.10.0.99 lladdr 02:00:00:00:00:99 PERMANENT"


@pytest.mark.privileged
def test_port(net: HostNet) -> None:
    found, matches = _find(net, ":8080")
    assert found == {("pod1", "socket", None), ("pod2", "socket", None)}
    assert len(matches) == 3
    found, matches = _find(net, ":4789")  # the vxlan device's kernel socket: no process holds it
    assert found == {("host", "socket", None)} and matches[0]["users"] == []
    assert _find(net, ":1")[0] == set()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nsworkers", *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.privileged
def test_cli_find(net: HostNet) -> None:
    done = _cli("find", ":5353", *net.names.values())
    assert done.returncode == 0, done.stderr
    header, line = done.stdout.splitlines()
    assert header.split() == ["NAMESPACE", "OWNER", "KIND", "DEV", "MATCH"]
    assert line.split()[:4] == [net.names["pod3"], "-", "socket", "eth0"]
    assert f'users:(("python",pid={net.pids["pod3"]},fd=3))' in line.replace("python3", "python")


@pytest.mark.privileged
def test_cli_find_json(net: HostNet) -> None:  # one CLI run per test: each discovers the host's namespaces
    done = _cli("find", "--json", "10.30.0.0/16", *net.names.values())
    data = json.loads(done.stdout)
    assert (data["kind"], data["term"]) == ("prefix", "10.30.0.0/16")
    assert [(m["name"], m["kind"], m["record"]["gateway"]) for m in data["matches"]] == [
        (net.names["host"], "route", "10.20.0.14")
    ]


@pytest.mark.privileged
def test_cli_find_no_match(net: HostNet) -> None:
    done = _cli("find", "1.2.3.4", *net.names.values())
    assert done.returncode == 0 and done.stdout == "" and "no namespace has 1.2.3.4" in done.stderr


def test_cli_find_bad_term_exits_2() -> None:
    done = _cli("find", "eth0")
    assert done.returncode == 2 and "is not an IP address" in done.stderr and "Traceback" not in done.stderr

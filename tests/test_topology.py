"""topology(): the exact graph of a small container host, checked against ``ip -j``; DOT and SVG."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest

import nsworkers
from nsworkers._topology import Topology

from ._hostnet import HostNet, host_network
from .conftest import PREFIX, _counter

pytestmark = pytest.mark.privileged


@pytest.fixture(scope="module")
def net() -> Iterator[HostNet]:
    with host_network() as built:
        yield built


@pytest.fixture(scope="module")
def graph(net: HostNet) -> Topology:
    return nsworkers.topology([net.path(r) for r in net.names], attribution=False)


def _where(graph: Topology, net: HostNet, node_id: str | None) -> str | None:
    if node_id is None:
        return None
    node = next(n for n in graph["nodes"] if n["id"] == node_id)
    ns = next(n for n in graph["namespaces"] if n["id"] == node["namespace"])
    return f"{net.role(ns['path'])}:{node['ifname']}"


def test_exact_edge_set(graph: Topology, net: HostNet) -> None:
    edges = {(e["kind"], _where(graph, net, e["from"]), _where(graph, net, e["to"])) for e in graph["edges"]}
    veths = {
        frozenset(("host:hv1", "pod1:eth0")),
        frozenset(("host:hv2", "pod2:eth0")),
        frozenset(("host:hv3", "pod3:eth0")),
        frozenset(("host:uplink0", "host:uplink1")),
    }
    assert {frozenset(e[1:]) for e in edges if e[0] == "veth"} == veths
    assert {e for e in edges if e[0] != "veth"} == {
        ("master", "host:hv1", "host:br0"),
        ("master", "host:hv2", "host:br0"),
        ("master", "host:hv3", "host:br0"),
        ("master", "host:vxlan0", "host:br0"),
        ("lower", "pod4:eth0", "host:uplink1"),
        ("underlay", "host:vxlan0", "host:uplink0"),
        ("underlay", "pod3:vx1", "host:uplink0"),  # across namespaces: IFLA_VXLAN_LINK in its link netns
        ("gateway", "pod1:eth0", "host:br0"),
        ("gateway", "pod2:eth0", "host:br0"),
        ("gateway", "pod3:eth0", "host:br0"),
        ("gateway", "pod4:eth0", "host:uplink0"),
        ("gateway", "host:uplink0", "pod4:eth0"),
    }
    assert len(graph["edges"]) == 16  # each veth once
    gateway = next(
        e
        for e in graph["edges"]
        if e["kind"] == "gateway"
        and e["to"]
        and net.role(next(n for n in graph["namespaces"] if e["to"].startswith(n["id"] + "/"))["path"]) == "pod4"
    )
    assert (gateway["dst"], gateway["gateway"]) == ("10.30.0.0/16", "10.20.0.14")
    assert graph["errors"] == []


def test_nodes_match_ip_link_and_addr(graph: Topology, net: HostNet) -> None:
    for ns in graph["namespaces"]:
        role = net.role(ns["path"])
        assert ns["name"] == net.names[role] and ns["label"] == net.names[role] and ns["partial"] is False
        links = json.loads(net.run_in(role, "ip", "-d", "-j", "link", "show"))
        addrs = {a["ifindex"]: a for a in json.loads(net.run_in(role, "ip", "-j", "addr", "show"))}
        nodes = {n["ifindex"]: n for n in graph["nodes"] if n["namespace"] == ns["id"]}
        assert set(nodes) == {link["ifindex"] for link in links}
        for link in links:
            node = nodes[link["ifindex"]]
            assert node["id"] == f"{ns['id']}/{link['ifindex']}"
            assert node["ifname"] == link["ifname"]
            assert node["kind"] == link.get("linkinfo", {}).get("info_kind")
            assert node["address"] == link.get("address")
            assert node["operstate"] == link["operstate"]
            assert node["mtu"] == link["mtu"]
            wanted = [f"{a['local']}/{a['prefixlen']}" for a in addrs[link["ifindex"]]["addr_info"]]
            assert node["addresses"] == wanted
            master = link.get("master")
            assert (_where(graph, net, node["master"]) or "").split(":")[-1] == (master or "")
            data = link.get("linkinfo", {}).get("info_data", {})
            if node["kind"] == "vxlan":
                assert node["info"] == {k: data[k] for k in ("id", "group", "local", "port") if k in data}
                vxlan: dict[str, object] = {"id": 42, "local": "10.20.0.1", "port": 4789}
                assert node["info"] == (vxlan if role == "host" else {"id": 43, "port": 4790})
            if node["kind"] == "macvlan":
                assert node["info"] == {"mode": data["mode"]} == {"mode": "bridge"}


def test_nsids_cost_one_question_per_foreign_link(net: HostNet) -> None:
    # The host's three veths are asked about (and teach the pods' nsids for the host, which pod3's
    # vxlan then uses); the macvlan pod asks once for its parent: two sockets, not one per namespace.
    class CountingPool(nsworkers.Pool):
        made = 0

        def socket(self, target: Any, family: int = 2, type: int = 1, proto: int = 0) -> Any:
            CountingPool.made += 1
            return super().socket(target, family, type, proto)

    with CountingPool() as pool:
        graph = nsworkers.topology([net.path(r) for r in net.names], pool=pool, attribution=False)
    assert len(graph["edges"]) == 16 and all(e["to"] is not None for e in graph["edges"])
    assert CountingPool.made == 2  # pod3's nsid for the host (its vxlan's underlay) came with hv3's answer


def _edges(graph: Topology, net: HostNet) -> set[tuple[str, str | None, str | None]]:
    return {(e["kind"], _where(graph, net, e["from"]), _where(graph, net, e["to"])) for e in graph["edges"]}


def test_one_pod_brings_its_peers_side(net: HostNet) -> None:
    # which host veth belongs to pod1, and what is it plugged into: the host comes in, partially
    graph = nsworkers.topology([net.path("pod1")], attribution=False)
    assert [(net.role(n["path"]), n["partial"]) for n in graph["namespaces"]] == [("pod1", False), ("host", True)] or [
        (net.role(n["path"]), n["partial"]) for n in graph["namespaces"]
    ] == [("host", True), ("pod1", False)]
    assert {_where(graph, net, n["id"]) for n in graph["nodes"]} == {"pod1:lo", "pod1:eth0", "host:hv1", "host:br0"}
    veth = next(e for e in graph["edges"] if e["kind"] == "veth")
    assert {_where(graph, net, veth["from"]), _where(graph, net, veth["to"])} == {"pod1:eth0", "host:hv1"}
    assert {e for e in _edges(graph, net) if e[0] != "veth"} == {
        ("master", "host:hv1", "host:br0"),
        ("gateway", "pod1:eth0", "host:br0"),
    }
    graph = nsworkers.topology([net.path("pod4")], attribution=False)
    assert {e for e in _edges(graph, net) if e[0] != "veth"} == {
        ("lower", "pod4:eth0", "host:uplink1"),
        ("gateway", "pod4:eth0", "host:uplink0"),
        ("gateway", "host:uplink0", "pod4:eth0"),  # the host's 10.30.0.0/16 via 10.20.0.14
    }
    assert {_where(graph, net, n["id"]) for n in graph["nodes"]} == {
        "pod4:lo",
        "pod4:eth0",
        "host:uplink0",
        "host:uplink1",
    }


def test_a_namespace_deleted_meanwhile_is_not_an_error(net: HostNet, monkeypatch: pytest.MonkeyPatch) -> None:
    # `ip netns del` unmounts the namespace, then unlinks the plain file left under it: topology()
    # scans the host's namespaces for peers and must step over a path that is such a file by the
    # time it opens it (seen in CI beside a loop of `ip netns add/del`). The scan's moment is made
    # here: a real plain file, listed as the scan would have listed it a moment before.
    from nsworkers import _inspect

    path = f"/run/netns/{PREFIX}{next(_counter)}"
    open(path, "x").close()
    scan = _inspect.network_namespaces
    monkeypatch.setattr(_inspect, "network_namespaces", lambda: [path, *scan()])
    try:
        graph = nsworkers.topology([net.path("pod1")], attribution=False)
    finally:
        os.unlink(path)
    assert {_where(graph, net, n["id"]) for n in graph["nodes"]} == {"pod1:lo", "pod1:eth0", "host:hv1", "host:br0"}


def test_a_peer_outside_the_selection_stays_unresolved(net: HostNet) -> None:
    graph = nsworkers.topology([net.path("pod1")], attribution=False, peers=False)
    (edge,) = graph["edges"]
    assert edge["kind"] == "veth" and edge["to"] is None
    host_index = json.loads(net.run_in("host", "ip", "-j", "link", "show", "hv1"))[0]["ifindex"]
    assert edge["peer_ifindex"] == host_index and isinstance(edge["netnsid"], int)


def test_json_roundtrip_and_dot(graph: Topology, net: HostNet) -> None:
    assert json.loads(json.dumps(graph)) == dict(graph)
    dot = graph.to_dot()
    for name in net.names.values():
        assert f"\\n{name}" in dot or f'"{name}\\n' in dot
    assert dot.count(" -- ") == 16  # every resolved edge drawn once


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz (dot) is not installed")
def test_svg_is_well_formed_and_names_every_namespace(graph: Topology, net: HostNet) -> None:
    svg = graph.render("svg")
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    texts = {t.text for t in root.iter("{http://www.w3.org/2000/svg}text")}
    for name in net.names.values():
        assert name in texts
    clusters = [g for g in root.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "cluster"]
    assert len(clusters) == len(net.names)
    assert graph.render("png").startswith(b"\x89PNG\r\n")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    import sys

    return subprocess.run(
        [sys.executable, "-m", "nsworkers", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_cli_topology_json(net: HostNet) -> None:
    done = _cli("topology", *net.names.values())
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    assert {n["name"] for n in data["namespaces"]} == set(net.names.values())
    assert len(data["edges"]) == 16


def test_cli_topology_dot(net: HostNet) -> None:  # one CLI run per test: each discovers the host's namespaces
    done = _cli("topology", "--format", "dot", net.names["pod4"], net.names["host"])
    assert done.returncode == 0 and done.stdout.startswith("graph nsworkers {")


def test_cli_topology_bad_format_exits_2() -> None:
    done = _cli("topology", "--format", "gif")
    assert done.returncode == 2 and "invalid choice" in done.stderr and "Traceback" not in done.stderr

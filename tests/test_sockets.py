"""netlink.sockets() with their processes, compared with ``ss -tanp`` / ``ss -uanp`` run in the same namespace."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import nsworkers
from nsworkers._sockets import SocketUsers, ss_endpoint

from ._hostnet import HostNet, host_network

pytestmark = pytest.mark.privileged

_USER = re.compile(r'\("(.*?)",pid=(\d+),fd=(\d+)\)')
Row = tuple[str, str, int, int, str, str, frozenset[tuple[str, int, int]]]


@pytest.fixture(scope="module")
def net() -> Iterator[HostNet]:
    with host_network() as built:
        yield built


def _ss(net: HostNet, role: str) -> set[Row]:
    """Every TCP and UDP socket ``ss -tanp`` / ``ss -uanp`` prints in *role*'s namespace, parsed from its text."""
    rows: set[Row] = set()
    for netid, flag in (("tcp", "-tanp"), ("udp", "-uanp")):
        lines = net.run_in(role, "ss", flag).splitlines()
        assert lines[0].split()[:3] == ["State", "Recv-Q", "Send-Q"]
        for line in lines[1:]:
            state, recv_q, send_q, local, peer, *process = line.split(maxsplit=5)
            users = frozenset((n, int(p), int(f)) for n, p, f in _USER.findall(process[0] if process else ""))
            rows.add((netid, state, int(recv_q), int(send_q), local, peer, users))
    return rows


def _ours(records: list[dict[str, Any]]) -> set[Row]:
    return {
        (
            r["netid"],
            r["state"],
            r["recv_q"],
            r["send_q"],
            ss_endpoint(r, "local"),
            ss_endpoint(r, "peer"),
            frozenset((u["name"], u["pid"], u["fd"]) for u in r["users"]),
        )
        for r in records
    }


def test_every_namespace_matches_ss(net: HostNet) -> None:
    with nsworkers.Pool() as pool:
        for role in net.names:
            records = pool.run(net.path(role), nsworkers.netlink.sockets)
            SocketUsers().attach(records)
            assert _ours(records) == _ss(net, role), role


def test_the_exact_socket_set_with_pids(net: HostNet) -> None:
    entries = {
        net.role(e["namespace"]): e for e in nsworkers.inspect([net.path(r) for r in net.names], what=["sockets"])
    }
    assert all(e["ok"] for e in entries.values())

    def row(role: str, s: dict[str, Any]) -> tuple[Any, ...]:
        return (
            s["netid"],
            s["state"],
            ss_endpoint(s, "local"),
            ss_endpoint(s, "peer"),
            tuple(u["pid"] for u in s["users"]),
        )

    found = {role: {row(role, s) for s in e["sockets"] if s["users"]} for role, e in entries.items()}
    pid = net.pids
    pod1_conn = next(s for s in entries["pod1"]["sockets"] if s["state"] == "ESTAB")
    host_port = next(s["local_port"] for s in entries["host"]["sockets"] if s["peer_port"] == 9090)
    pod2_conn = next(s for s in entries["pod2"]["sockets"] if s["state"] == "ESTAB")
    assert (pod2_conn["local_address"], pod2_conn["local_port"]) == (pod1_conn["peer_address"], pod1_conn["peer_port"])
    assert found == {
        "host": {
            ("tcp", "LISTEN", "10.10.0.1:7000", "0.0.0.0:*", (pid["host"], pid["host"])),
            ("tcp", "ESTAB", f"10.20.0.1:{host_port}", "10.20.0.14:9090", (pid["host"],)),
        },
        "pod1": {
            ("tcp", "LISTEN", "10.10.0.11:8080", "0.0.0.0:*", (pid["pod1"],)),
            ("tcp", "ESTAB", "10.10.0.11:8080", f"10.10.0.12:{pod1_conn['peer_port']}", (pid["pod1"],)),
        },
        "pod2": {("tcp", "ESTAB", f"10.10.0.12:{pod1_conn['peer_port']}", "10.10.0.11:8080", (pid["pod2"],))},
        "pod3": {
            ("udp", "UNCONN", "0.0.0.0%eth0:5353", "0.0.0.0:*", (pid["pod3"],)),
            ("udp", "ESTAB", f"10.10.0.13:{_udp_port(entries['pod3'])}", "10.10.0.1:53", (pid["pod3"],)),
        },
        "pod4": {
            ("tcp", "LISTEN", "*:9090", "*:*", (pid["pod4"],)),
            ("tcp", "LISTEN", "[::1]:9091", "[::]:*", (pid["pod4"],)),
        },
    }
    assert pod1_conn["recv_q"] == 10  # pod2 sent ten bytes nobody read
    # the host's connection waits in pod4's accept queue: an IPv6 socket with IPv4-mapped addresses, no process
    queued = [s for s in entries["pod4"]["sockets"] if s["state"] == "ESTAB"]
    assert [(ss_endpoint(s, "local"), ss_endpoint(s, "peer"), s["users"]) for s in queued] == [
        ("[::ffff:10.20.0.14]:9090", f"[::ffff:10.20.0.1]:{host_port}", [])
    ]
    assert (
        next(s for s in entries["pod4"]["sockets"] if s["local_port"] == 9090 and s["state"] == "LISTEN")["recv_q"] == 1
    )
    listener = next(s for s in entries["host"]["sockets"] if s["local_port"] == 7000)
    assert [u["fd"] for u in listener["users"]] == sorted(u["fd"] for u in listener["users"])
    assert listener["uid"] == 0 and listener["inode"] > 0 and listener["family"] == "inet"


def _udp_port(entry: dict[str, Any]) -> int:
    return int(next(s["local_port"] for s in entry["sockets"] if s["netid"] == "udp" and s["state"] == "ESTAB"))


def test_filters_in_the_worker(net: HostNet) -> None:
    with nsworkers.Pool() as pool:
        listening = pool.run(net.path("pod1"), nsworkers.netlink.sockets, listening=True)
        assert [(s["state"], s["local_port"]) for s in listening] == [("LISTEN", 8080)]
        connected = pool.run(net.path("pod1"), nsworkers.netlink.sockets, listening=False)
        assert [s["state"] for s in connected] == ["ESTAB"]
        assert {s["local_port"] for s in pool.run(net.path("pod2"), nsworkers.netlink.sockets, port=8080)} != set()
        assert pool.run(net.path("pod2"), nsworkers.netlink.sockets, ("udp",)) == []
        with pytest.raises(ValueError, match="unknown protocol"):
            pool.run(net.path("pod2"), nsworkers.netlink.sockets, ("sctp",))


def test_unix_sockets_match_ss_x(net: HostNet) -> None:
    code = (
        "import socket, sys; s = socket.socket(socket.AF_UNIX); s.bind('\\0nswt-unix'); s.listen()\n"
        "print(1, flush=True); sys.stdin.read()"
    )
    proc = subprocess.Popen(
        ["nsenter", f"--net={net.path('pod2')}", sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "1"
        entry = next(nsworkers.inspect([net.path("pod2")], what=["unix_sockets"]))
        mine = [s for s in entry["unix_sockets"] if s["local_address"] == "@nswt-unix"]
        assert [(s["netid"], s["state"], [u["pid"] for u in s["users"]]) for s in mine] == [
            ("u_str", "LISTEN", [proc.pid])
        ]
        out = net.run_in("pod2", "ss", "-xlnp")
        line = next(line for line in out.splitlines() if "@nswt-unix" in line)
        assert line.split()[5] == str(mine[0]["inode"]) and f"pid={proc.pid}," in line
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nsworkers", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_cli_inspect_sockets_table(net: HostNet) -> None:
    done = _cli("inspect", "--what", "sockets", "--format", "table", net.names["pod3"])
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()[1:]]
    assert sorted(r[:4] for r in rows) == [
        [net.names["pod3"], "-", "ESTAB", "udp"],
        [net.names["pod3"], "eth0", "UNCONN", "udp"],
    ]
    assert all(f"pid={net.pids['pod3']}," in r[-1] for r in rows)


def test_cli_sockets_listening(net: HostNet) -> None:
    done = _cli("sockets", "--listening", "--json", *net.names.values())
    assert done.returncode == 0, done.stderr
    ports = {
        (net.role(e["namespace"]), s["local_port"]) for e in json.loads(done.stdout) for s in e["sockets"] if s["users"]
    }
    assert ports == {("host", 7000), ("pod1", 8080), ("pod3", 5353), ("pod4", 9090), ("pod4", 9091)}


def test_cli_sockets_port(net: HostNet) -> None:  # one CLI run per test: each discovers the host's namespaces
    done = _cli("sockets", "--port", "8080", *net.names.values())
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["NAMESPACE", "NETID", "STATE", "RECV-Q", "SEND-Q", "LOCAL", "PEER", "PROCESS"]
    assert sorted(line.split()[0] for line in lines[1:]) == sorted([net.names["pod1"]] * 2 + [net.names["pod2"]])
    assert f"pid={net.pids['pod2']}," in done.stdout


def test_cli_sockets_bad_port_exits_2() -> None:
    done = _cli("sockets", "--port", "99999")
    assert done.returncode == 2 and "must be a port" in done.stderr

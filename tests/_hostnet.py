"""A small container host made of real namespaces, for topology, sockets and find tests.

::

    host:  br0 10.10.0.1/24 (bridge)  <- hv1, hv2, hv3 (veths), vxlan0 (vni 42, underlay uplink0)
           uplink0 10.20.0.1/24 <-veth-> uplink1;  route 10.30.0.0/16 via 10.20.0.14
           neighbour 10.10.0.99 lladdr 02:00:00:00:00:99 on br0;  TCP 10.10.0.1:7000 listening (two fds),
           TCP connected to pod4's dual-stack 10.20.0.14:9090 (never accepted: queued there)
    pod1:  eth0 10.10.0.11/24 (peer of hv1);  TCP 10.10.0.11:8080 listening, one connection accepted
    pod2:  eth0 10.10.0.12/24 (peer of hv2);  TCP connected to 10.10.0.11:8080
    pod3:  eth0 10.10.0.13/24 (peer of hv3);  UDP 0.0.0.0%eth0:5353, UDP connected to 10.10.0.1:53
           vx1 (vni 43, down), made on the host's uplink0 and moved here: its underlay is in the host
    pod4:  eth0 10.20.0.14/24 (macvlan on the host's uplink1);  TCP [::]:9090 (dual stack), [::1]:9091 (v6only)

Pods route by default through the host (10.10.0.1, pod4 10.20.0.1). Each
socket is held by a python process started with ``nsenter --net``; its pid is
in ``HostNet.pids``. Everything is removed on exit, also when a step failed.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

from .conftest import PREFIX, _counter, ip

_SERVER = r"""
import socket, sys, time
socks = []
for spec in sys.argv[1:]:
    kind, *rest = spec.split(",")
    if kind == "listen":
        s = socket.socket(socket.AF_INET6 if ":" in rest[0] else socket.AF_INET)
        if rest[0] == "::1":
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((rest[0], int(rest[1])))
        s.listen(16)
        if len(rest) > 2 and rest[2] == "dup":
            socks.append(socket.socket(fileno=__import__("os").dup(s.fileno())))
        if len(rest) > 2 and rest[2] == "accept":
            print("listening", flush=True)
            conn, _ = s.accept()
            socks.append(conn)
    elif kind == "connect":
        s = socket.create_connection((rest[0], int(rest[1])))
        s.sendall(b"0123456789")
    elif kind == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, rest[2].encode())
        s.bind((rest[0], int(rest[1])))
    elif kind == "udpconnect":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect((rest[0], int(rest[1])))
    socks.append(s)
print("ready", flush=True)
sys.stdin.read()
"""


@dataclass
class HostNet:
    names: dict[str, str] = field(default_factory=dict)  #: role (host, pod1 ...) -> netns name
    pids: dict[str, int] = field(default_factory=dict)  #: role -> pid of its socket holder
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def path(self, role: str) -> str:
        return f"/run/netns/{self.names[role]}"

    def role(self, netns_path_or_name: str) -> str:
        name = netns_path_or_name.rsplit("/", 1)[-1]
        return next(r for r, n in self.names.items() if n == name)

    def run_in(self, role: str, *cmd: str) -> str:
        done = subprocess.run(["nsenter", f"--net={self.path(role)}", *cmd], capture_output=True, text=True, check=True)
        return done.stdout

    def hold(self, role: str, *specs: str) -> None:
        proc = subprocess.Popen(
            ["nsenter", f"--net={self.path(role)}", sys.executable, "-c", _SERVER, *specs],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if line == "listening":
            self.pids[role] = proc.pid
            return  # "ready" comes once a peer connected
        assert line == "ready", f"socket holder in {role} failed"
        self.pids[role] = proc.pid

    def close(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(OSError):
                if proc.stdin is not None:
                    proc.stdin.close()
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        for name in self.names.values():
            if os.path.exists(f"/run/netns/{name}"):
                subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


@contextlib.contextmanager
def host_network(prefix: str | None = None) -> Iterator[HostNet]:
    """Build the topology drawn in the module docstring; remove it afterwards.

    Namespaces are named like the test fixtures' (``nswtPID-N``), or
    ``PREFIX + role`` (``demo-host``, ``demo-pod1`` ...) with *prefix*.
    """
    net = HostNet()
    try:
        for role in ("host", "pod1", "pod2", "pod3", "pod4"):
            name = f"{PREFIX}{next(_counter)}" if prefix is None else f"{prefix}{role}"
            ip("netns", "add", name)
            net.names[role] = name
            ip("-n", name, "link", "set", "lo", "up")
        host = net.names["host"]

        def h(*args: str) -> None:
            ip("-n", host, *args)

        h("link", "add", "br0", "type", "bridge")
        h("addr", "add", "10.10.0.1/24", "dev", "br0")
        h("link", "set", "br0", "up")
        for i in (1, 2, 3):
            pod = net.names[f"pod{i}"]
            h("link", "add", f"hv{i}", "type", "veth", "peer", "name", "eth0", "netns", pod)
            h("link", "set", f"hv{i}", "master", "br0", "up")
            ip("-n", pod, "addr", "add", f"10.10.0.1{i}/24", "dev", "eth0")
            ip("-n", pod, "link", "set", "eth0", "up")
            ip("-n", pod, "route", "add", "default", "via", "10.10.0.1")
        h("link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1")
        h("addr", "add", "10.20.0.1/24", "dev", "uplink0")
        h("link", "set", "uplink0", "up")
        h("link", "set", "uplink1", "up")
        h(
            "link",
            "add",
            "vxlan0",
            "type",
            "vxlan",
            "id",
            "42",
            "dev",
            "uplink0",
            "local",
            "10.20.0.1",
            "dstport",
            "4789",
        )
        h("link", "set", "vxlan0", "master", "br0", "up")
        # a vxlan made on the host's uplink0 and moved into pod3 (left down: no kernel socket there)
        h("link", "add", "vx1", "type", "vxlan", "id", "43", "dev", "uplink0", "dstport", "4790")
        h("link", "set", "vx1", "netns", net.names["pod3"])
        pod4 = net.names["pod4"]
        h("link", "add", "mv0", "link", "uplink1", "type", "macvlan", "mode", "bridge")
        h("link", "set", "mv0", "netns", pod4)
        ip("-n", pod4, "link", "set", "mv0", "name", "eth0")
        ip("-n", pod4, "addr", "add", "10.20.0.14/24", "dev", "eth0")
        ip("-n", pod4, "link", "set", "eth0", "up")
        ip("-n", pod4, "route", "add", "default", "via", "10.20.0.1")
        h("route", "add", "10.30.0.0/16", "via", "10.20.0.14", "dev", "uplink0")
        h("neigh", "add", "10.10.0.99", "lladdr", "02:00:00:00:00:99", "dev", "br0", "nud", "permanent")

        net.hold("pod1", "listen,10.10.0.11,8080,accept")
        net.hold("pod2", "connect,10.10.0.11,8080")
        first = net.procs[0]
        assert first.stdout is not None and first.stdout.readline().strip() == "ready"
        net.hold("pod3", "udp,0.0.0.0,5353,eth0", "udpconnect,10.10.0.1,53")
        net.hold("pod4", "listen,::,9090", "listen,::1,9091")
        net.hold("host", "listen,10.10.0.1,7000,dup", "connect,10.20.0.14,9090")
        yield net
    finally:
        net.close()


if __name__ == "__main__":
    # python -m tests._hostnet PREFIX COMMAND...: build the host as PREFIXhost, PREFIXpod1 ...,
    # run COMMAND with the namespace names appended, remove everything (how docs/topology.svg is made).
    with host_network(sys.argv[1]) as built:
        sys.exit(subprocess.run([*sys.argv[2:], *built.names.values()], check=False).returncode)

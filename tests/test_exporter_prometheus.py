"""A real Prometheus server scrapes `nsworkers exporter`: what it stores equals what the kernel counts.

Prometheus (the Debian package ``prometheus``) listens on 127.0.0.1 on a port
of its own, scrapes the exporter every second and is stopped at the end.
Without the binary the tests skip, except under CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nsworkers import _exporter
from nsworkers._exporter import ExporterOptions, NetnsCollector

from .conftest import IN_USERNS, ip, wait_for
from .test_exporter import send_udp, veth_pair

pytest.importorskip("prometheus_client")

__all__ = ("veth_pair",)  # a fixture, used by name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        message = "the Prometheus server is not installed (Debian: apt-get install prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture
def exporter() -> Iterator[tuple[int, NetnsCollector]]:
    """The exporter on 127.0.0.1, in a thread of this process; each test sets the namespaces it serves."""
    if IN_USERNS:
        ip("link", "set", "lo", "up")  # the session's own network namespace starts with lo down
    collector = NetnsCollector(ExporterOptions(patterns=["none-yet"], max_age=0))
    stop = threading.Event()
    bound: list[int] = []
    thread = threading.Thread(
        target=_exporter.serve, args=(collector, "127.0.0.1", 0, stop, lambda _host, port: bound.append(port))
    )
    thread.start()
    try:
        assert wait_for(lambda: bool(bound), timeout=30)
        yield bound[0], collector
    finally:
        stop.set()
        thread.join()
        collector.close()


class Prometheus:
    """A Prometheus server on 127.0.0.1 and its HTTP query API."""

    def __init__(self, binary: str, target_port: int, workdir: Path) -> None:
        self.port = _free_port()
        config = workdir / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n  - job_name: nsworkers\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{target_port}']\n"
        )
        self.log = (workdir / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as reply:
            return json.load(reply) if path.startswith("/api/") else reply.status

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector of *promql* (``[{"metric": {...}, "value": [t, "v"]}, ...]``)."""
        answer = self.get("/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        assert answer["status"] == "success", answer
        return answer["data"]["result"]  # type: ignore[no-any-return]

    def ready(self) -> bool:
        assert self.proc.poll() is None, "prometheus exited; see its log"
        try:
            return bool(self.get("/-/ready") == 200)
        except OSError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def prometheus(prometheus_binary: str, exporter: tuple[int, NetnsCollector], tmp_path: Path) -> Iterator[Prometheus]:
    server = Prometheus(prometheus_binary, exporter[0], tmp_path)
    try:
        assert wait_for(server.ready, timeout=60, interval=0.2), (tmp_path / "prometheus.log").read_text()
        yield server
    finally:
        server.stop()


def stored(server: Prometheus, promql: str) -> float | None:
    result = server.query(promql)
    return float(result[0]["value"][1]) if len(result) == 1 else None


def reaches(server: Prometheus, promql: str, expected: float) -> bool:
    """Whether the series stores *expected* within a few scrapes (1 s apart; the bound only ends a broken run)."""
    return wait_for(lambda: stored(server, promql) == expected, timeout=60, interval=0.25)


def kernel(name: str, dev: str, direction: str, key: str) -> int:
    link = json.loads(ip("-n", name, "-j", "-s", "link", "show", dev))[0]
    return int(link["stats64"][direction][key])


@pytest.mark.privileged
def test_prometheus_stores_what_the_kernel_counts(
    veth_pair: tuple[str, str], exporter: tuple[int, NetnsCollector], prometheus: Prometheus
) -> None:
    a, b = veth_pair
    exporter[1].options.patterns = [a, b]
    for count in (40, 15):  # twice: the stored series follows the kernel's counters
        send_udp(a, "10.77.0.2", count)
        for name, dev, direction in ((b, "vb", "rx"), (a, "va", "tx")):
            for key in ("bytes", "packets"):
                word = {"rx": "receive", "tx": "transmit"}[direction]
                promql = f'nsworkers_interface_{word}_{key}_total{{netns="{name}",interface="{dev}"}}'
                expected = kernel(name, dev, direction, key)
                assert reaches(prometheus, promql, expected), (promql, expected, prometheus.query(promql))
        promql = f'nsworkers_netns_udp_no_port_errors_total{{netns="{b}",family="inet"}}'
        assert reaches(prometheus, promql, 40 if count == 40 else 55), prometheus.query(promql)
    up = prometheus.query('up{job="nsworkers"}')
    assert [r["value"][1] for r in up] == ["1"]
    assert stored(prometheus, "nsworkers_exporter_namespaces_failed") == 0


@pytest.fixture
def containerd_pod_process() -> Iterator[tuple[int, str, str]]:
    """A process in its own netns, under a cgroup path as containerd's systemd driver makes for a pod's container."""
    hierarchy = Path("/sys/fs/cgroup/pids")
    if not (hierarchy / "cgroup.procs").exists():
        pytest.skip("no cgroup v1 pids hierarchy here")
    cid, uid = os.urandom(32).hex(), "7c3f0a52-9a3e-4f0e-b7d2-5a1b9c0d2e11"
    top = hierarchy / f"nswt{os.getpid()}-kubepods.slice"
    group = top / "kubepods-besteffort.slice" / f"kubepods-besteffort-pod{uid.replace('-', '_')}.slice"
    group = group / f"cri-containerd-{cid}.scope"
    try:
        group.mkdir(parents=True)
    except PermissionError:
        pytest.skip("making a cgroup needs the real root (recorded layouts are tested in test_attribution)")
    proc = subprocess.Popen(["unshare", "-n", "sleep", "120"])
    try:
        home = os.readlink("/proc/self/ns/net")
        assert wait_for(lambda: os.readlink(f"/proc/{proc.pid}/ns/net") != home)
        (group / "cgroup.procs").write_text(str(proc.pid))
        yield proc.pid, cid, uid
    finally:
        proc.kill()
        proc.wait()
        wait_for(lambda: not (group / "cgroup.procs").read_text().strip())
        for path in (group, *group.parents):
            if path == hierarchy:
                break
            path.rmdir()


@pytest.mark.privileged
def test_prometheus_stores_the_attribution_of_a_pods_namespace(
    containerd_pod_process: tuple[int, str, str], exporter: tuple[int, NetnsCollector], prometheus: Prometheus
) -> None:
    pid, cid, uid = containerd_pod_process
    inode = os.stat(f"/proc/{pid}/ns/net").st_ino
    exporter[1].options.patterns = [glob.escape(f"net:[{inode}]")]  # this namespace only, not other people's
    promql = f'nsworkers_netns_info{{container="{cid}"}}'
    assert wait_for(lambda: len(prometheus.query(promql)) == 1, timeout=60, interval=0.25)
    (found,) = prometheus.query(promql)
    labels = found["metric"]
    assert labels["netns"] == f"net:[{inode}]" and labels["id"] == f"net:[{inode}]"
    assert labels["runtime"] == "containerd" and labels["pod_uid"] == uid
    # the PromQL join the info metric is for: the pod's interface counters, with its owner's labels
    info = f'nsworkers_netns_info{{container="{cid}"}}'
    joined = prometheus.query(f"nsworkers_interface_mtu_bytes * on (netns) group_left (pod_uid, container) {info}")
    assert [(r["metric"]["interface"], r["metric"]["pod_uid"]) for r in joined] == [("lo", uid)]

"""`nsworkers exporter`: metrics equal to what the kernel and iproute2 report, coalescing, the command line."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from nsworkers import _exporter
from nsworkers._exporter import ExporterOptions, NetnsCollector, parse_snmp, parse_snmp6, parse_sockstat

from .conftest import dead, ip, run_python, wait_for

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

SOCKSTAT = """sockets: used 7
TCP: inuse 2 orphan 1 tw 3 alloc 4 mem 5
UDP: inuse 1 mem 2
UDPLITE: inuse 0
RAW: inuse 0
FRAG: inuse 0 memory 0
"""
SNMP = """Ip: Forwarding DefaultTTL
Ip: 2 64
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 10 3 1 12 1 0 0 0 0
"""


def test_parsers_on_recorded_text() -> None:
    stat = parse_sockstat(SOCKSTAT)
    assert stat["sockets"] == {"used": 7}
    assert stat["TCP"] == {"inuse": 2, "orphan": 1, "tw": 3, "alloc": 4, "mem": 5}
    assert stat["FRAG"] == {"inuse": 0, "memory": 0}
    snmp = parse_snmp(SNMP)
    assert snmp["Ip"] == {"Forwarding": 2, "DefaultTTL": 64}
    assert snmp["Udp"]["NoPorts"] == 3 and snmp["Udp"]["RcvbufErrors"] == 1
    assert parse_snmp6("Udp6NoPorts                     \t4\nIp6InReceives 9\n") == {
        "Udp6NoPorts": 4,
        "Ip6InReceives": 9,
    }


def samples_of(text: str) -> Samples:
    """Every sample of an exposition, by (name, sorted labels)."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def scrape(collector: NetnsCollector) -> Samples:
    from prometheus_client import generate_latest

    return samples_of(generate_latest(_exporter.registry_for(collector)).decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def in_ns(name: str, *cmd: str) -> str:
    return subprocess.run(["ip", "netns", "exec", name, *cmd], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def veth_pair(make_netns: Callable[[], str]) -> tuple[str, str]:
    """Two namespaces joined by a veth pair with IPv4 addresses; no IPv6, no ARP: no packet sent on its own."""
    a, b = make_netns(), make_netns()
    for name in (a, b):
        ip("netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
        ip("netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")
    ip("link", "add", "va", "netns", a, "type", "veth", "peer", "name", "vb", "netns", b)
    ip("-n", a, "addr", "add", "10.77.0.1/24", "dev", "va")
    ip("-n", b, "addr", "add", "10.77.0.2/24", "dev", "vb")
    ip("-n", a, "link", "set", "va", "up")
    ip("-n", b, "link", "set", "vb", "up")
    # permanent neighbours: no ARP packet can land between a scrape and the reading it is compared with
    for name, dev, peer, addr in ((a, "va", (b, "vb"), "10.77.0.2"), (b, "vb", (a, "va"), "10.77.0.1")):
        mac = json.loads(ip("-n", peer[0], "-j", "link", "show", peer[1]))[0]["address"]
        ip("-n", name, "neigh", "replace", addr, "lladdr", mac, "dev", dev, "nud", "permanent")
    return a, b


def send_udp(src: str, dst_addr: str, count: int, port: int = 9) -> None:
    """*count* UDP datagrams from namespace *src* to *dst_addr* (port 9: nobody listens, so NoPorts counts)."""
    code = (
        f"import socket\ns = socket.socket(2, 2)\nfor _ in range({count}): s.sendto(b'x' * 100, ('{dst_addr}', {port}))"
    )
    subprocess.run(["ip", "netns", "exec", src, sys.executable, "-c", code], check=True)


@pytest.fixture
def collector() -> Iterator[Callable[..., NetnsCollector]]:
    made: list[NetnsCollector] = []

    def make(**options: Any) -> NetnsCollector:
        c = NetnsCollector(ExporterOptions(**options))
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.mark.privileged
def test_counters_equal_the_kernel(veth_pair: tuple[str, str], collector: Callable[..., NetnsCollector]) -> None:
    a, b = veth_pair
    send_udp(a, "10.77.0.2", 25)
    c = collector(patterns=[a, b], max_age=0)
    samples = scrape(c)
    assert value(samples, "nsworkers_exporter_namespaces_scraped") == 2
    assert value(samples, "nsworkers_exporter_namespaces_failed") == 0
    for name, dev in ((a, "va"), (b, "vb")):
        inode = os.stat(f"/run/netns/{name}").st_ino
        info = [dict(labels) for k, labels in samples if k == "nsworkers_netns_info" and ("netns", name) in labels]
        assert [labels["id"] for labels in info] == [f"net:[{inode}]"]
        # every counter of ip -s -s link's stats64, for every interface
        for link in json.loads(ip("-n", name, "-j", "-s", "-s", "link", "show")):
            for direction, keys in _exporter._STATS64_DOCS.items():
                for key, _ in keys:
                    metric = (
                        "carrier_changes"
                        if key == "carrier_changes"
                        else f"{dict(rx='receive', tx='transmit')[direction]}_{key}"
                    )
                    expected = link["stats64"][direction][key]
                    got = value(samples, f"nsworkers_interface_{metric}_total", netns=name, interface=link["ifname"])
                    assert got == expected, (name, link["ifname"], direction, key)
            assert value(samples, "nsworkers_interface_mtu_bytes", netns=name, interface=link["ifname"]) == link["mtu"]
            up = 1 if link["operstate"] == "UP" else 0
            assert value(samples, "nsworkers_interface_up", netns=name, interface=link["ifname"]) == up
            state = link["operstate"]
            assert (
                value(
                    samples,
                    "nsworkers_interface_oper_state_info",
                    netns=name,
                    interface=link["ifname"],
                    operstate=state,
                )
                == 1
            )
        assert value(samples, "nsworkers_interface_speed_bytes", netns=name, interface=dev) == 10_000 * 125_000  # veth
        assert ("nsworkers_interface_speed_bytes", (("interface", "lo"), ("netns", name))) not in samples
        addresses = [x for link in json.loads(ip("-n", name, "-j", "addr")) for x in link["addr_info"]]
        assert value(samples, "nsworkers_netns_addresses", netns=name, family="inet") == len(addresses)
        for table in ("main", "local"):
            routes = json.loads(ip("-n", name, "-j", "-4", "route", "show", "table", table))
            assert value(samples, "nsworkers_netns_routes", netns=name, table=table, family="inet") == len(routes)
        snmp = parse_snmp(in_ns(name, "cat", "/proc/net/snmp"))
        got_noports = value(samples, "nsworkers_netns_udp_no_port_errors_total", netns=name, family="inet")
        assert got_noports == snmp["Udp"]["NoPorts"]
        sockstat = parse_sockstat(in_ns(name, "cat", "/proc/net/sockstat"))  # "used" moves with any socket: not it
        assert value(samples, "nsworkers_netns_sockets_inuse", netns=name, protocol="udp") == sockstat["UDP"]["inuse"]
        assert value(samples, "nsworkers_netns_tcp_timewait_sockets", netns=name) == sockstat["TCP"]["tw"]
        count = int(in_ns(name, "cat", "/proc/sys/net/netfilter/nf_conntrack_count"))
        assert value(samples, "nsworkers_netns_conntrack_entries", netns=name) == count
    assert value(samples, "nsworkers_netns_udp_no_port_errors_total", netns=b, family="inet") == 25
    arp = json.loads(ip("-n", a, "-j", "neigh"))
    states = [s.lower() for n in arp for s in n["state"]]
    for state in set(states):
        assert value(samples, "nsworkers_netns_neighbours", netns=a, family="inet", state=state) == states.count(state)
    # later traffic shows in the next scrape, read through the fds held since the first one
    send_udp(b, "10.77.0.1", 7)
    again = scrape(c)
    link = json.loads(ip("-n", a, "-j", "-s", "link", "show", "va"))[0]
    assert (
        value(again, "nsworkers_interface_receive_packets_total", netns=a, interface="va")
        == link["stats64"]["rx"]["packets"]
    )
    assert value(again, "nsworkers_netns_udp_no_port_errors_total", netns=a, family="inet") == 7
    assert value(again, "nsworkers_exporter_scrapes_total") == 2


@pytest.mark.privileged
def test_labels_exclude_and_globs(veth_pair: tuple[str, str], collector: Callable[..., NetnsCollector]) -> None:
    a, b = veth_pair
    samples = scrape(collector(patterns=[a], labels_on_every_series=True, exclude_interfaces=re.compile("^lo$")))
    series = [labels for name, labels in samples if name == "nsworkers_interface_receive_bytes_total"]
    assert [dict(labels)["interface"] for labels in series] == ["va"]  # lo excluded, b not matched
    for labels in series:
        assert {"pod", "pod_namespace", "pod_uid", "container", "container_name", "runtime", "unit"} <= dict(
            labels
        ).keys()
    assert not any(("netns", b) in labels for _, labels in samples)


@pytest.mark.privileged
def test_gone_namespace_is_let_go(make_netns: Callable[[], str], collector: Callable[..., NetnsCollector]) -> None:
    name = make_netns()
    inode = os.stat(f"/run/netns/{name}").st_ino
    c = collector(patterns=[name], max_age=0)
    scrape(c)
    assert inode in c.probes
    ip("netns", "del", name)
    samples = scrape(c)
    assert inode not in c.probes  # our fds no longer keep it alive
    assert not any(("netns", name) in labels for _, labels in samples)


@pytest.mark.privileged
def test_a_failing_namespace_is_a_labelled_error_not_a_failed_scrape(
    make_netns: Callable[[], str], collector: Callable[..., NetnsCollector]
) -> None:
    name = make_netns()
    c = collector(patterns=[name], max_age=0)
    assert value(scrape(c), "nsworkers_exporter_namespaces_scraped") == 1
    c.options.scrape_timeout = 1e-9  # the next scrape is out of time before it reads the namespace
    samples = scrape(c)
    assert value(samples, "nsworkers_exporter_namespaces_failed") == 1
    assert value(samples, "nsworkers_exporter_namespace_errors_total", netns=name, error="TimeoutError") == 1
    assert not any(k == "nsworkers_netns_info" for k, _ in samples)


@pytest.mark.privileged
def test_the_errors_of_a_gone_namespace_go_with_it(
    make_netns: Callable[[], str], collector: Callable[..., NetnsCollector]
) -> None:
    # Broke: errors were kept per namespace for the whole run, so on a host where pods come
    # and go the exporter's memory and its series grew without bound.
    name, other = make_netns(), make_netns()
    c = collector(patterns=[name, other], max_age=0)
    scrape(c)
    c.options.scrape_timeout = 1e-9
    scrape(c)
    assert {key[0] for key in c.errors} == {name, other}
    ip("netns", "del", name)
    samples = scrape(c)
    assert value(samples, "nsworkers_exporter_namespace_errors_total", netns=other, error="TimeoutError") == 2
    assert not any(("netns", name) in labels for _, labels in samples)
    assert {key[0] for key in c.errors} == {other}


@pytest.mark.privileged
def test_new_namespaces_out_of_time_are_pending_not_failed(
    make_netns: Callable[[], str], collector: Callable[..., NetnsCollector]
) -> None:
    name = make_netns()
    c = collector(patterns=[name], max_age=0, scrape_timeout=1e-9)
    samples = scrape(c)
    assert value(samples, "nsworkers_exporter_namespaces_pending") == 1
    assert value(samples, "nsworkers_exporter_namespaces_failed") == 0
    assert not any(k == "nsworkers_exporter_namespace_errors_total" for k, _ in samples)
    c.options.scrape_timeout = 60
    assert value(scrape(c), "nsworkers_exporter_namespaces_scraped") == 1  # the next scrape goes on


def test_concurrent_and_recent_scrapes_are_coalesced(monkeypatch: pytest.MonkeyPatch) -> None:
    c = NetnsCollector(ExporterOptions(max_age=0), pool=object())  # type: ignore[arg-type]
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def slow_scrape() -> list[Any]:
        calls.append(1)
        started.set()
        release.wait()
        return [f"result {len(calls)}"]

    monkeypatch.setattr(c, "_scrape", slow_scrape)
    results: list[list[Any]] = []
    first = threading.Thread(target=lambda: results.append(c.scrape()))
    first.start()
    started.wait()
    second = threading.Thread(target=lambda: results.append(c.scrape()))
    second.start()
    assert wait_for(second.is_alive)  # waiting for the running scrape, not starting one
    release.set()
    first.join()
    second.join()
    assert results == [["result 1"], ["result 1"]] and len(calls) == 1
    assert c.scrape() == ["result 2"]  # max_age=0: a later scrape runs anew
    c.options.max_age = 3600
    assert c.scrape() == ["result 2"] and len(calls) == 2  # a recent one is served again


# -- the command line


def test_import_and_help_do_not_load_prometheus_client() -> None:
    done = run_python(
        "import sys, contextlib, io, nsworkers.cli\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    nsworkers.cli.main(['exporter', '--help'])\n"
        "assert 'prometheus_client' not in sys.modules, 'loaded'\n"
        "print(out.getvalue())"
    )
    assert done.returncode == 0, done.stderr
    assert "--textfile" in done.stdout and "examples:" in done.stdout and "10025" in done.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["--port", "70000"],
        ["--exclude-interface", "("],
        ["--interval", "0"],
        ["--scrape-timeout", "-1"],
        ["--bogus"],
    ],
)
def test_bad_flags_exit_2_with_one_line(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "nsworkers", "exporter", *args], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("nsworkers exporter: ")


@pytest.mark.privileged
def test_once_and_textfile(veth_pair: tuple[str, str], tmp_path: Path) -> None:
    a, _ = veth_pair
    once = subprocess.run(
        [sys.executable, "-m", "nsworkers", "exporter", "--once", a], capture_output=True, text=True, check=True
    )
    assert value(samples_of(once.stdout), "nsworkers_interface_mtu_bytes", netns=a, interface="va") == 1500
    target = tmp_path / "nsworkers.prom"
    subprocess.run(
        [sys.executable, "-m", "nsworkers", "exporter", "--once", "--textfile", str(target), a],
        capture_output=True,
        check=True,
    )
    assert value(samples_of(target.read_text()), "nsworkers_interface_mtu_bytes", netns=a, interface="va") == 1500
    assert os.listdir(tmp_path) == ["nsworkers.prom"]  # written to a temporary file, then renamed


def _serving(proc: subprocess.Popen[str]) -> int:
    assert proc.stderr is not None
    for line in proc.stderr:
        found = re.search(r"serving http://127\.0\.0\.1:(\d+)/metrics", line)
        if found:
            return int(found.group(1))
    raise AssertionError("the exporter never said where it serves")


@pytest.mark.privileged
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_http_negotiates_and_a_signal_stops_it_cleanly(veth_pair: tuple[str, str], sig: signal.Signals) -> None:
    a, _ = veth_pair
    proc = subprocess.Popen(
        [sys.executable, "-m", "nsworkers", "exporter", "--port", "0", a],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        port = _serving(proc)
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=30) as reply:
            assert reply.headers["Content-Type"].startswith("text/plain")
            assert value(samples_of(reply.read().decode()), "nsworkers_interface_mtu_bytes", netns=a, interface="va")
        request = urllib.request.Request(url, headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        with urllib.request.urlopen(request, timeout=30) as reply:
            assert reply.headers["Content-Type"].startswith("application/openmetrics-text")
            assert reply.read().decode().endswith("# EOF\n")
        helpers = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        assert helpers  # the zygote at least
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 0
        assert wait_for(lambda: all(dead(pid) for pid in helpers))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()

"""Batch inspection and the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

import nsworkers

from .conftest import ip, run_python

pytestmark = pytest.mark.privileged


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    src = os.path.dirname(os.path.dirname(os.path.abspath(nsworkers.__file__)))
    return subprocess.run(
        [sys.executable, "-m", "nsworkers", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=dict(os.environ, PYTHONPATH=src),
    )


def test_inspect_given_namespaces(make_netns: Callable[[], str]) -> None:
    names = [make_netns() for _ in range(3)]
    ip("-n", names[0], "link", "add", "ifb3", "type", "ifb")
    entries = {e["name"]: e for e in nsworkers.inspect([f"/run/netns/{n}" for n in names])}
    assert set(entries) == set(names)
    assert all(e["ok"] and e["inconsistent"] == [] for e in entries.values())
    assert {link["ifname"] for link in entries[names[0]]["links"]} == {"lo", "ifb3"}
    assert "addr_info" in entries[names[1]]["addresses"][0]
    with nsworkers.Namespace.from_name(names[2]) as ns:
        assert entries[names[2]]["id"] == ns.unique_id


def test_inspect_all_finds_named_and_process_namespaces(make_netns: Callable[[], str]) -> None:
    name = make_netns()
    holder = subprocess.Popen(["unshare", "-n", "sleep", "60"])
    try:
        target = f"/proc/{holder.pid}/ns/net"
        import time

        deadline = time.monotonic() + 5
        while os.readlink(target) == os.readlink("/proc/self/ns/net") and time.monotonic() < deadline:
            time.sleep(0.01)
        found = nsworkers.network_namespaces()
        assert f"/run/netns/{name}" in found
        assert os.stat(target).st_ino in {os.stat(p).st_ino for p in found if os.path.exists(p)}
    finally:
        holder.kill()
        holder.wait()


def test_namespace_vanishing_mid_batch(make_netns: Callable[[], str]) -> None:
    names = [make_netns() for _ in range(4)]
    victim = names[2]

    def targets() -> Iterator[str]:
        for name in names:
            if name == victim:
                ip("netns", "del", victim)
            yield f"/run/netns/{name}"

    entries = {e["name"]: e for e in nsworkers.inspect(targets(), what=("links",))}
    assert entries[victim]["ok"] is False
    assert entries[victim]["error"]["type"] == "NamespaceNotFoundError"
    assert all(entries[n]["ok"] for n in names if n != victim)


def test_cli_scan_steps_over_a_namespace_deleted_after_it(
    make_netns: Callable[[], str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `nsworkers inspect` (every namespace): one deleted between the scan and its join (a pod that
    # went away) is not a failure of the run; a namespace named on the command line still is.
    from nsworkers import _inspect
    from nsworkers.cli import main

    kept, victim = make_netns(), make_netns()
    ip("netns", "del", victim)
    monkeypatch.setattr(_inspect, "network_namespaces", lambda: [f"/run/netns/{kept}", f"/run/netns/{victim}"])
    assert main(["inspect", "--what", "links"]) == 0
    out, err = capsys.readouterr()
    assert [e["name"] for e in json.loads(out)] == [kept] and err == ""
    assert main(["inspect", "--what", "links", kept, victim]) == 1


def test_cli_formats_and_exit_codes(make_netns: Callable[[], str]) -> None:
    a, b = make_netns(), make_netns()
    done = cli("inspect", a, f"/run/netns/{b}", "--what", "links,rules")
    assert done.returncode == 0, done.stderr
    entries = json.loads(done.stdout)
    assert {e["name"] for e in entries} == {a, b}
    assert set(entries[0]) >= {"links", "rules", "inconsistent", "id", "ok"}

    done = cli("inspect", a, b, "--format", "jsonl")
    assert done.returncode == 0
    assert len(done.stdout.splitlines()) == 2

    done = cli("inspect", a, "--format", "table")
    assert done.returncode == 0
    assert a in done.stdout and "lo" in done.stdout

    done = cli("inspect", a, "nsw-no-such-namespace")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert {e["ok"] for e in json.loads(done.stdout)} == {True, False}


@pytest.mark.parametrize("bad", [["inspect", ".."], ["inspect", "--what", "bogus"], ["inspect", "--format", "xml"]])
def test_cli_usage_errors(bad: list[str]) -> None:
    done = cli(*bad)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr


def test_cli_all_namespaces_fail(make_netns: Callable[[], str]) -> None:
    done = cli("inspect", "/run/netns/nsw-missing-1")
    assert done.returncode == 3
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", [["inspect"], ["watch", "--duration", "30"], ["demo"]])
def test_cli_without_cap_sys_admin_says_what_is_needed(command: list[str], make_netns: Callable[[], str]) -> None:
    # what a non-root user sees: setns and unshare fail with EPERM (the bounding set drops CAP_SYS_ADMIN)
    name = make_netns()
    argv = [*command, name] if command[0] != "demo" else command
    src = os.path.dirname(os.path.dirname(os.path.abspath(nsworkers.__file__)))
    done = subprocess.run(
        ["setpriv", "--bounding-set=-sys_admin", sys.executable, "-m", "nsworkers", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=dict(os.environ, PYTHONPATH=src),
    )
    assert done.returncode == 3, done.stderr
    error, hint = done.stderr.splitlines()
    assert "Operation not permitted" in error
    assert hint.startswith("hint: this needs root or CAP_SYS_ADMIN") and "sudo nsworkers" in hint
    assert ("unshare -Urnm" in hint) == (command[0] == "demo")


def test_cli_help_is_cheap() -> None:
    done = run_python(
        "import sys\nfrom nsworkers.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('LOADED', sorted(m for m in ('pyroute2', 'psutil', 'dill') if m in sys.modules))"
    )
    assert "nsworkers demo" in done.stdout
    assert "LOADED []" in done.stdout


def test_demo_leaves_nothing() -> None:
    src = os.path.dirname(os.path.dirname(os.path.abspath(nsworkers.__file__)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "nsworkers", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=src),
    )
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "10.77.0.1/24" in out and "br0" in out
    # the demo names its namespaces nsw-demo-PID-ROLE: none of its own may be left
    left = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    assert [n for n in left if n.startswith(f"nsw-demo-{proc.pid}-")] == []
    # both ends of each veth and the bridge are read after their state settled
    rows = [row.split() for row in out.splitlines() if row.startswith("nsw-demo-")]
    states = {row[1]: row[2] for row in rows if row[2] != "route"}
    assert {states.get(port) for port in ("a0", "b0", "b1", "c0", "br0")} == {"UP"}


def test_ls(make_netns: Callable[[], str]) -> None:
    name = make_netns()
    done = cli("ls", "--json")
    assert done.returncode == 0
    assert any(name in row["names"] for row in json.loads(done.stdout)["namespaces"])


def test_inspect_refuses_a_namespace_that_is_not_a_network_namespace(netns: str) -> None:
    """A uts or pid namespace shares some network namespace: printing that one under its name would lie."""
    for kind in ("uts", "pid"):
        entries = list(nsworkers.inspect([f"/proc/{os.getpid()}/ns/{kind}"], attribution=False))
        assert [e["ok"] for e in entries] == [False]
        assert entries[0]["error"]["type"] == "NamespaceTypeError"
    done = cli("inspect", f"/proc/{os.getpid()}/ns/uts", netns)
    assert done.returncode == 1  # one failed, one printed
    by_path = {e["namespace"]: e for e in json.loads(done.stdout)}
    assert by_path[netns]["ok"] and not by_path[f"/proc/{os.getpid()}/ns/uts"]["ok"]
    assert cli("inspect", f"/proc/{os.getpid()}/ns/uts").returncode == 3


def test_inspect_stats_details_and_every_section(make_netns: Callable[[], str]) -> None:
    name = make_netns()
    ip("-n", name, "link", "add", "br9", "type", "bridge")
    ip("-n", name, "nexthop", "add", "id", "7", "blackhole")
    ip("-n", name, "neigh", "add", "proxy", "10.9.9.9", "dev", "br9")
    ip("-n", name, "rule", "add", "from", "10.9.0.0/16", "table", "9", "pref", "99")
    what = "links,addresses,routes,neighbours,proxy_neighbours,rules,nexthops,conntrack,xfrm_policies,xfrm_states"
    done = cli("inspect", name, "-s", "-d", "--what", what)
    assert done.returncode == 0, done.stderr
    (entry,) = json.loads(done.stdout)
    br9 = next(link for link in entry["links"] if link["ifname"] == "br9")
    assert "stats64" in br9 and br9["linkinfo"]["info_kind"] == "bridge"
    assert [nh["id"] for nh in entry["nexthops"]] == [7]
    assert [n["dst"] for n in entry["proxy_neighbours"]] == ["10.9.9.9"]
    assert entry["conntrack"] == [] and entry["xfrm_policies"] == []
    table = cli("inspect", name, "--what", "rules,neighbours,proxy_neighbours,nexthops", "--format", "table")
    assert table.returncode == 0, table.stderr
    assert "99: from 10.9.0.0/16 lookup 9" in table.stdout
    assert "id 7 blackhole" in table.stdout and "10.9.9.9" in table.stdout
    bad = cli("inspect", name, "--what", "links,bogus")
    assert bad.returncode == 2 and "unknown section" in bad.stderr and "Traceback" not in bad.stderr

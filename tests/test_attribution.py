"""Container and pod attribution: recorded runtime cgroup layouts, and one real cgroup on this host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import nsworkers
from nsworkers._attribution import parse_cgroup_path, parse_proc_cgroup

from .conftest import wait_for

CID = "3f2a9c1b7e0d4a5b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d"
UID = "8d3a5c2e-1f4b-4e6a-9c7d-0b1a2c3d4e5f"
UID_ = UID.replace("-", "_")

# (cgroup path as the runtime writes it, expected fields)
RECORDED = [
    # docker, cgroupfs driver (v1 and v2) and systemd driver
    (f"/docker/{CID}", {"runtime": "docker", "container_id": CID}),
    (f"/system.slice/docker-{CID}.scope", {"runtime": "docker", "container_id": CID}),
    # containerd under kubepods, systemd driver, each QoS class
    (f"/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope",
     {"runtime": "containerd", "container_id": CID, "pod_uid": UID, "qos_class": "guaranteed"}),
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{CID}.scope",
     {"runtime": "containerd", "container_id": CID, "pod_uid": UID, "qos_class": "burstable"}),
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope",
     {"runtime": "containerd", "container_id": CID, "pod_uid": UID, "qos_class": "besteffort"}),
    # kubepods, cgroupfs driver (the runtime is not named in the path)
    (f"/kubepods/pod{UID}/{CID}", {"runtime": "cri", "container_id": CID, "pod_uid": UID, "qos_class": "guaranteed"}),
    (f"/kubepods/burstable/pod{UID}/{CID}", {"runtime": "cri", "pod_uid": UID, "qos_class": "burstable"}),
    (f"/kubepods/besteffort/pod{UID}/{CID}", {"runtime": "cri", "pod_uid": UID, "qos_class": "besteffort"}),
    # a pod-level cgroup without a container
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice",
     {"runtime": "cri", "container_id": None, "pod_uid": UID}),
    # CRI-O, and its conmon
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-{CID}.scope",
     {"runtime": "cri-o", "container_id": CID, "pod_uid": UID}),
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-conmon-{CID}.scope",
     {"runtime": "cri-o", "container_id": CID}),
    # podman: rootful, rootless, in a pod, cgroupfs, conmon
    (f"/machine.slice/libpod-{CID}.scope", {"runtime": "podman", "container_id": CID}),
    (f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope",
     {"runtime": "podman", "container_id": CID}),
    (f"/machine.slice/machine-libpod_pod_{CID[:32]}.slice/libpod-{CID}.scope/container",
     {"runtime": "podman", "container_id": CID}),
    (f"/libpod_parent/libpod-{CID}", {"runtime": "podman", "container_id": CID}),
    (f"/machine.slice/libpod-conmon-{CID}.scope", {"runtime": "podman", "container_id": CID}),
    # nerdctl (containerd without Kubernetes)
    (f"/system.slice/nerdctl-{CID}.scope", {"runtime": "containerd", "container_id": CID}),
    # systemd-nspawn, lxc/lxd
    ("/machine.slice/systemd-nspawn@web.service", {"runtime": "systemd-nspawn", "container_name": "web"}),
    ("/machine.slice/machine-web\\x2d1.scope", {"runtime": "systemd-nspawn", "container_name": "web-1"}),
    ("/lxc.payload.c1", {"runtime": "lxc", "container_name": "c1"}),
    ("/lxc/c2", {"runtime": "lxc", "container_name": "c2"}),
    # plain systemd units and sessions
    ("/system.slice/sshd.service", {"runtime": "systemd", "unit": "sshd.service", "container_id": None}),
    ("/user.slice/user-1000.slice/session-3.scope", {"runtime": "systemd", "unit": "session-3.scope"}),
    # unknown is a valid answer
    ("/", {"runtime": None}),
    ("/process_api/20aed6377f248630af9a9629dbec097b", {"runtime": None, "container_id": None}),
    ("/docker/not-an-id", {"runtime": None}),
    ("", {"runtime": None}),
]  # fmt: skip


@pytest.mark.parametrize(("path", "expected"), RECORDED, ids=[p or "empty" for p, _ in RECORDED])
def test_recorded_layouts(path: str, expected: dict[str, object]) -> None:
    found = parse_cgroup_path(path).as_dict()
    for key, value in expected.items():
        assert found[key] == value, (key, found)


def test_proc_cgroup_v1_and_v2() -> None:
    v1 = f"12:pids:/docker/{CID}\n11:memory:/docker/{CID}\n1:name=systemd:/docker/{CID}\n0::/\n"
    assert parse_proc_cgroup(v1).container_id == CID
    v2 = f"0::/system.slice/docker-{CID}.scope\n"
    assert parse_proc_cgroup(v2).runtime == "docker"
    mixed = "9:name=systemd:/system.slice/cron.service\n4:memory:/process_api/abc\n0::/\n"
    found = parse_proc_cgroup(mixed)
    assert (found.runtime, found.unit) == ("systemd", "cron.service")
    assert parse_proc_cgroup("garbage\n\n:::\n").runtime is None


def test_labels() -> None:
    assert parse_cgroup_path(f"/docker/{CID}").label() == f"docker {CID[:12]}"
    assert parse_cgroup_path("/system.slice/sshd.service").label() == "systemd sshd.service"
    assert parse_cgroup_path("/").label() == "-"


@pytest.fixture
def docker_like_process() -> Iterator[tuple[int, str]]:
    """A sleeping process in its own netns, moved into /docker/<id> of the pids cgroup hierarchy."""
    hierarchy = Path("/sys/fs/cgroup/pids")
    if not (hierarchy / "cgroup.procs").exists():
        pytest.skip("no cgroup v1 pids hierarchy here")
    cid = os.urandom(32).hex()
    group = hierarchy / "docker" / cid
    try:
        group.mkdir(parents=True)
    except PermissionError:
        pytest.skip("making a cgroup needs the real root (the layouts are tested on recorded paths above)")
    proc = subprocess.Popen(["unshare", "-n", "sleep", "60"])
    try:
        home = os.readlink("/proc/self/ns/net")
        assert wait_for(lambda: os.readlink(f"/proc/{proc.pid}/ns/net") != home)
        (group / "cgroup.procs").write_text(str(proc.pid))
        yield proc.pid, cid
    finally:
        proc.kill()
        proc.wait()
        wait_for(lambda: not (group / "cgroup.procs").read_text().strip())
        group.rmdir()
        try:
            (hierarchy / "docker").rmdir()
        except OSError:
            pass  # a real docker uses it too


@pytest.mark.privileged
def test_end_to_end_discover_ls_and_from_container(docker_like_process: tuple[int, str]) -> None:
    pid, cid = docker_like_process
    netns = os.readlink(f"/proc/{pid}/ns/net")
    (ns,) = [n for n in nsworkers.discover(["net"]) if n.unique_id == netns]
    assert ns.attribution is not None
    assert (ns.attribution.runtime, ns.attribution.container_id) == ("docker", cid)

    with nsworkers.Namespace.from_container(cid[:10]) as handle:
        assert handle.unique_id == netns
    with pytest.raises(nsworkers.NamespaceNotFoundError):
        nsworkers.Namespace.from_container("ffffffffffff0000")
    with pytest.raises(ValueError):
        nsworkers.Namespace.from_container("not-hex!")

    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(nsworkers.__file__))))
    table = subprocess.run([sys.executable, "-m", "nsworkers", "ls"], capture_output=True, text=True, env=env,
                           check=True).stdout  # fmt: skip
    assert f"docker {cid[:12]}" in table
    out = subprocess.run([sys.executable, "-m", "nsworkers", "ls", "--json", "--runtime", "docker"],
                         capture_output=True, text=True, env=env, check=True).stdout  # fmt: skip
    rows = json.loads(out)["namespaces"]
    assert [r["id"] for r in rows] == [netns]
    assert rows[0]["attribution"]["container_id"] == cid
    out = subprocess.run([sys.executable, "-m", "nsworkers", "inspect", "--container", cid[:8], "--what", "links"],
                         capture_output=True, text=True, env=env, check=True).stdout  # fmt: skip
    (entry,) = json.loads(out)
    assert entry["id"] == netns and entry["attribution"]["runtime"] == "docker"
    assert psutil.pid_exists(pid)


@pytest.mark.privileged
def test_ambiguous_prefix(docker_like_process: tuple[int, str]) -> None:
    _, cid = docker_like_process
    other = Path("/sys/fs/cgroup/pids/docker") / (cid[:4] + os.urandom(30).hex())
    other.mkdir()
    proc = subprocess.Popen(["sleep", "60"])
    try:
        (other / "cgroup.procs").write_text(str(proc.pid))
        with pytest.raises(nsworkers.AmbiguousContainerError) as info:
            nsworkers.Namespace.from_container(cid[:4])
        assert len(info.value.candidates) == 2
        assert isinstance(info.value, LookupError)
    finally:
        proc.kill()
        proc.wait()
        wait_for(lambda: not (other / "cgroup.procs").read_text().strip())
        other.rmdir()

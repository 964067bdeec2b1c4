"""Whose namespace is this? Container and pod attribution from the kernel's own records.

A process's ``/proc/PID/cgroup`` says where its runtime put it; the layouts
are recognised from path shapes alone, so no engine client or API call is
needed. Recognised (cgroup v2 and v1, systemd and cgroupfs drivers):

=================  ==============================================================
runtime            cgroup path shape (``ID`` = 64 hex digits)
=================  ==============================================================
docker             ``/docker/ID``, ``/system.slice/docker-ID.scope``
containerd (CRI)   ``.../kubepods[-QOS]-podUID.slice/cri-containerd-ID.scope``,
                   ``/kubepods/[QOS/]podUID/ID``
cri-o              ``.../crio-ID.scope`` (``crio-conmon-ID.scope`` for conmon)
containerd         ``/system.slice/nerdctl-ID.scope``, ``/NAMESPACE/ID`` is too vague
podman             ``.../libpod-ID.scope``, ``/libpod_parent/libpod-ID``
systemd-nspawn     ``/machine.slice/systemd-nspawn@NAME.service``, ``machine-NAME.scope``
lxc                ``/lxc.payload.NAME``, ``/lxc/NAME``
systemd            any other ``*.service`` / ``*.scope`` (the unit is reported)
=================  ==============================================================

Under ``kubepods`` the pod UID and QoS class (guaranteed, burstable,
besteffort) come from the slice names. Pod name and namespace come from the
runtime's on-disk state where readable: the OCI ``config.json`` annotations
that containerd (``io.kubernetes.cri.sandbox-*``) and CRI-O
(``io.kubernetes.pod.*``) write, or Docker's ``config.v2.json``. Anything
else is unknown, which is a valid answer, never an error.

To add a layout: add a ``(regex, runtime)`` to ``_CONTAINER_PATTERNS`` (the
regex must capture ``id``) and a recorded path to ``tests/test_attribution.py``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ("Attribution", "attribute_pid", "container_processes", "parse_cgroup_path", "parse_proc_cgroup")

_ID = r"(?P<id>[0-9a-f]{64})"
_CONTAINER_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(rf"(?:^|/)cri-containerd-{_ID}\.scope$"), "containerd"),
    (re.compile(rf"(?:^|/)crio-conmon-{_ID}\.scope$"), "cri-o"),
    (re.compile(rf"(?:^|/)crio-{_ID}(?:\.scope)?$"), "cri-o"),
    (re.compile(rf"(?:^|/)docker-{_ID}\.scope$"), "docker"),
    (re.compile(rf"(?:^|/)docker/{_ID}$"), "docker"),
    (re.compile(rf"(?:^|/)libpod-conmon-{_ID}\.scope$"), "podman"),
    (re.compile(rf"(?:^|/)libpod-{_ID}(?:\.scope)?(?:/container)?$"), "podman"),
    (re.compile(rf"(?:^|/)nerdctl-{_ID}\.scope$"), "containerd"),
    (re.compile(rf"(?:^|/)kubepods(?:/(?:burstable|besteffort))?/pod[0-9a-f-]+/{_ID}$"), "kubernetes"),
]
_POD_SLICE = re.compile(
    r"kubepods(?:-(?P<qos1>burstable|besteffort))?-pod(?P<uid1>[0-9a-f_]{36})\.slice"
    r"|kubepods/(?:(?P<qos2>burstable|besteffort)/)?pod(?P<uid2>[0-9a-f-]{36})"
)
_NSPAWN = re.compile(r"(?:^|/)(?:systemd-nspawn@(?P<a>[^/]+)\.service|machine-(?P<b>[^/]+)\.scope)$")
_LXC = re.compile(r"^/(?:lxc\.payload\.(?P<a>[^/]+)|lxc/(?P<b>[^/]+))")
_UNIT = re.compile(r"(?:^|/)(?P<unit>[^/]+\.(?:service|scope))$")


@dataclass
class Attribution:
    """Who a process (and so its namespaces) belongs to; every field may be None."""

    runtime: str | None = None  #: docker, containerd, cri-o, podman, systemd-nspawn, lxc, systemd
    container_id: str | None = None
    container_name: str | None = None
    pod_uid: str | None = None
    pod_name: str | None = None
    pod_namespace: str | None = None
    qos_class: str | None = None  #: guaranteed, burstable, besteffort (Kubernetes)
    unit: str | None = None  #: systemd unit or scope
    cgroup: str | None = None  #: the cgroup path that told

    @property
    def known(self) -> bool:
        """True if a runtime or a unit was recognised."""
        return self.runtime is not None

    def label(self) -> str:
        """A short human label: ``pod kube-system/coredns``, ``docker 3f2a9c1b7e0d``, ``systemd sshd.service``."""
        if self.pod_name:
            return f"pod {self.pod_namespace or '?'}/{self.pod_name}"
        if self.pod_uid:
            return f"pod {self.pod_uid}"
        if self.container_id:
            return f"{self.runtime} {self.container_name or self.container_id[:12]}"
        if self.runtime and self.unit:
            return f"{self.runtime} {self.unit}"
        return "-"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_cgroup_path(path: str) -> Attribution:
    """Attribution from one cgroup path alone (no file is read)."""
    found = Attribution(cgroup=path)
    pod = _POD_SLICE.search(path)
    if pod is not None:
        uid = pod.group("uid1") or pod.group("uid2")
        found.pod_uid = uid.replace("_", "-")
        found.qos_class = pod.group("qos1") or pod.group("qos2") or "guaranteed"
    for pattern, runtime in _CONTAINER_PATTERNS:
        match = pattern.search(path)
        if match is not None:
            found.container_id = match.group("id")
            # cgroupfs-driver kubepods paths do not name the runtime
            found.runtime = runtime if runtime != "kubernetes" else "cri"
            break
    else:
        nspawn = _NSPAWN.search(path)
        lxc = _LXC.search(path)
        if nspawn is not None:
            found.runtime = "systemd-nspawn"
            found.container_name = _unescape_unit(nspawn.group("a") or nspawn.group("b"))
        elif lxc is not None:
            found.runtime = "lxc"
            found.container_name = lxc.group("a") or lxc.group("b")
        elif pod is not None:
            found.runtime = "cri"
    if found.runtime is None or found.runtime == "systemd-nspawn":
        unit = _UNIT.search(path)
        if unit is not None:
            found.unit = _unescape_unit(unit.group("unit"))
            if found.runtime is None:
                found.runtime = "systemd"
    return found


def _unescape_unit(name: str) -> str:
    return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), name)


def parse_proc_cgroup(text: str) -> Attribution:
    """Attribution from the text of ``/proc/PID/cgroup`` (v2 line first, then ``name=systemd``, then the rest)."""
    entries = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        rank = 0 if parts[0] == "0" else 1 if parts[1] == "name=systemd" else 2
        entries.append((rank, parts[2]))
    best = Attribution()
    for _, path in sorted(entries, key=lambda e: e[0]):
        if path in ("/", ""):
            continue
        found = parse_cgroup_path(path)
        if found.container_id or found.pod_uid:
            return found
        if found.known and not best.known:
            best = found
    return best


def attribute_pid(pid: int) -> Attribution:
    """Attribution of process *pid*, enriched from the runtime's on-disk state where readable."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            found = parse_proc_cgroup(f.read())
    except OSError:
        return Attribution()
    if found.container_id:
        _enrich(found)
    return found


_STATE_FILES = (
    ("containerd", "/run/containerd/io.containerd.runtime.v2.task/k8s.io/{id}/config.json"),
    ("containerd", "/run/containerd/io.containerd.runtime.v2.task/moby/{id}/config.json"),
    ("containerd", "/run/containerd/io.containerd.runtime.v2.task/default/{id}/config.json"),
    ("cri-o", "/run/containers/storage/overlay-containers/{id}/userdata/config.json"),
    ("podman", "/run/containers/storage/overlay-containers/{id}/userdata/config.json"),
    ("docker", "/var/lib/docker/containers/{id}/config.v2.json"),
)


def _enrich(found: Attribution) -> None:
    for runtime, template in _STATE_FILES:
        if runtime not in (found.runtime, "containerd" if found.runtime == "cri" else ""):
            continue
        path = template.format(id=found.container_id)
        try:
            with open(path) as f:
                state = json.load(f)
        except (OSError, ValueError):
            continue
        notes = {**state.get("annotations", {}), **(state.get("Config", {}) or {}).get("Labels", {})}
        found.pod_name = found.pod_name or _first(notes, "io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name")
        found.pod_namespace = found.pod_namespace or _first(
            notes, "io.kubernetes.cri.sandbox-namespace", "io.kubernetes.pod.namespace"
        )
        found.pod_uid = found.pod_uid or _first(notes, "io.kubernetes.cri.sandbox-uid", "io.kubernetes.pod.uid")
        found.container_name = (
            found.container_name
            or _first(notes, "io.kubernetes.cri.container-name", "io.kubernetes.container.name")
            or (state.get("Name") or "").lstrip("/")
            or None
        )
        return


def _first(notes: dict[str, Any], *keys: str) -> Any:
    return next((notes[k] for k in keys if notes.get(k)), None)


def container_processes() -> dict[str, list[int]]:
    """Container id -> pids, for every process whose cgroup names a container."""
    out: dict[str, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cgroup") as f:
                found = parse_proc_cgroup(f.read())
        except OSError:
            continue
        if found.container_id:
            out.setdefault(found.container_id, []).append(int(entry))
    return out

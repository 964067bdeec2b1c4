"""deploy/: manifests valid for Kubernetes, consistent with each other, and the least capabilities that work."""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nsworkers import _exporter

from .conftest import wait_for
from .test_exporter import samples_of

kubernetes_validate = pytest.importorskip("kubernetes_validate")
yaml = pytest.importorskip("yaml")

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
LEAST = ("SYS_ADMIN", "SYS_PTRACE")  # what deploy/ grants; the test below shows each is needed and both suffice


def manifest(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / name).read_text())
    return loaded


@pytest.mark.parametrize("name", ["daemonset.yaml", "service.yaml"])
def test_manifests_are_valid_kubernetes(name: str) -> None:
    kubernetes_validate.validate(manifest(name), kubernetes_validate.latest_version(), strict=True)


def test_servicemonitor_is_a_crd_object_that_matches_the_service() -> None:
    monitor, service, daemonset = manifest("servicemonitor.yaml"), manifest("service.yaml"), manifest("daemonset.yaml")
    version = kubernetes_validate.latest_version()
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):  # a CRD: kubernetes-validate has no schema for it ...
        kubernetes_validate.validate(monitor, version, strict=True)
    # ... so its standard parts are validated inside objects it does know
    holder = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": monitor["metadata"]}
    kubernetes_validate.validate(holder, version, strict=True)
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "selector-check"},
        "spec": {"podSelector": monitor["spec"]["selector"]},
    }
    kubernetes_validate.validate(policy, version, strict=True)
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor["spec"]) <= {"selector", "namespaceSelector", "endpoints", "jobLabel"}
    # the monitor selects the service, the service the daemonset's pods, by the same port name and number
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["metadata"]["namespace"] in monitor["spec"]["namespaceSelector"]["matchNames"]
    pod_labels = daemonset["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    (port,) = container["ports"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"] == port["name"]
    assert service["spec"]["ports"][0]["port"] == port["containerPort"] == _exporter.DEFAULT_PORT
    assert f"--port={_exporter.DEFAULT_PORT}" in container["args"]


def test_deploy_grants_exactly_the_tested_capabilities() -> None:
    (container,) = manifest("daemonset.yaml")["spec"]["template"]["spec"]["containers"]
    security = container["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"], "add": list(LEAST)}
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert manifest("daemonset.yaml")["spec"]["template"]["spec"]["hostPID"]
    unit = (DEPLOY / "nsworkers-exporter.service").read_text()
    caps = " ".join(f"CAP_{c}" for c in LEAST)
    assert f"CapabilityBoundingSet={caps}\n" in unit and f"AmbientCapabilities={caps}\n" in unit
    assert re.search(r"^ExecStart=\S*nsworkers exporter ", unit, re.M)


@pytest.fixture
def process_netns() -> Iterator[int]:
    """A root process in an anonymous network namespace (like a pod's sandbox); its pid."""
    proc = subprocess.Popen(["unshare", "-n", "sleep", "120"])
    try:
        home = os.readlink("/proc/self/ns/net")
        assert wait_for(lambda: os.readlink(f"/proc/{proc.pid}/ns/net") != home)
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def scrape_with(caps: tuple[str, ...], *patterns: str) -> dict[Any, float]:
    bounding = ",".join(["-all", *(f"+{c.lower()}" for c in caps)])
    # --no-new-privs as the DaemonSet's allowPrivilegeEscalation: false and the unit's NoNewPrivileges=yes
    cmd = ["setpriv", "--no-new-privs", "--inh-caps=-all", "--ambient-caps=-all", f"--bounding-set={bounding}"]
    done = subprocess.run(
        [*cmd, sys.executable, "-m", "nsworkers", "exporter", "--once", *patterns],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return samples_of(done.stdout)


@pytest.mark.privileged
def test_least_capabilities_found_by_test(netns: str, process_netns: int) -> None:
    named = os.path.basename(netns)
    anonymous = f"net:[{os.stat(f'/proc/{process_netns}/ns/net').st_ino}]"
    patterns = (named, glob.escape(anonymous))

    def info(samples: dict[Any, float]) -> set[str]:
        return {dict(labels)["netns"] for name, labels in samples if name == "nsworkers_netns_info"}

    full = scrape_with(LEAST, *patterns)
    assert info(full) == {named, anonymous}
    assert full[("nsworkers_exporter_namespaces_failed", ())] == 0
    # without SYS_PTRACE: a root process's namespace cannot even be seen (and the exporter says so)
    no_ptrace = scrape_with(("SYS_ADMIN",), *patterns)
    assert info(no_ptrace) == {named}
    assert no_ptrace[("nsworkers_exporter_unreadable_processes", ())] > 0
    # without SYS_ADMIN: no namespace can be joined; each is a labelled error, not a failed scrape
    no_admin = scrape_with(("SYS_PTRACE",), *patterns)
    assert info(no_admin) == set()
    assert no_admin[("nsworkers_exporter_namespace_errors_total", (("error", "NamespaceJoinError"), ("netns", named)))]

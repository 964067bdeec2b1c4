"""nsworkers.netns: create/delete/temporary, interoperable with `ip netns` both ways."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

import nsworkers
from nsworkers import netns

from .conftest import PREFIX, ip

pytestmark = pytest.mark.privileged


@pytest.fixture
def name() -> Iterator[str]:
    n = f"{PREFIX}lc{os.urandom(3).hex()}"
    yield n
    subprocess.run(["ip", "netns", "del", n], check=False, capture_output=True)


def mounts_mentioning(text: str) -> int:
    with open("/proc/self/mountinfo") as f:
        return sum(text in line for line in f)


def test_create_is_seen_by_ip(name: str) -> None:
    home = os.readlink("/proc/self/ns/net")
    with netns.create(name) as ns:
        assert ns.type is nsworkers.NamespaceType.NET
        assert name in ip("netns", "list")
        assert name in netns.list_named()
        assert ip("netns", "exec", name, "readlink", "/proc/self/ns/net").strip() == ns.unique_id
    assert os.readlink("/proc/self/ns/net") == home
    netns.delete(name)
    assert name not in ip("netns", "list")
    assert mounts_mentioning(name) == 0
    assert not os.path.exists(f"/run/netns/{name}")


def test_ip_created_is_deleted_by_us(name: str) -> None:
    ip("netns", "add", name)
    with nsworkers.Namespace.from_name(name):
        pass
    netns.delete(name)
    assert name not in ip("netns", "list")


def test_create_existing_and_delete_missing(name: str) -> None:
    netns.create(name).close()
    with pytest.raises(nsworkers.NamespaceExistsError) as info:
        netns.create(name)
    assert isinstance(info.value, FileExistsError)
    netns.delete(name)
    with pytest.raises(nsworkers.NamespaceNotFoundError):
        netns.delete(name)
    assert mounts_mentioning(name) == 0


@pytest.mark.parametrize("bad", ["", "..", "a/b", "x" * 300])
def test_bad_names_create_nothing(bad: str) -> None:
    # only what this call could have made: other processes add and remove namespaces meanwhile
    could_be = [os.path.join("/run/netns", n) for n in {bad, bad.split("/", maxsplit=1)[0]} - {"", ".."}]
    before = [p for p in could_be if os.path.lexists(p)]
    with pytest.raises(ValueError):
        netns.create(bad)
    assert [p for p in could_be if os.path.lexists(p)] == before


def test_temporary_lives_as_long_as_the_handle() -> None:
    with netns.temporary() as ns:
        inode = ns.inode
        with nsworkers.Pool() as pool:
            assert pool.run(ns, os.readlink, "/proc/self/ns/net") == ns.unique_id
        assert os.readlink("/proc/self/ns/net") != ns.unique_id
    assert ns.closed
    assert mounts_mentioning(str(inode)) == 0


def test_failure_halfway_leaves_nothing(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The file exists and the run dir is shared when the helper fails: both steps must be undone.
    def helper_fails(mode: str, arg: str, pass_fds: tuple[int, ...] = ()) -> None:
        assert os.path.exists(arg)
        raise nsworkers.NamespacePermissionError(1, "simulated failure after the file was made")

    monkeypatch.setattr(netns, "_helper", helper_fails)
    with pytest.raises(nsworkers.NamespacePermissionError):
        netns.create(name)
    assert not os.path.exists(f"/run/netns/{name}")
    assert mounts_mentioning(name) == 0

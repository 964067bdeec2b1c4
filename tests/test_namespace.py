"""Namespace and NamespaceType: opening, validation, identity, lifetime."""

from __future__ import annotations

import fcntl
import os
import socket
import threading
from pathlib import Path

import pytest

import nsworkers
from nsworkers import Namespace, NamespaceType
from nsworkers._namespace import _type_from_link

pytestmark = pytest.mark.privileged


def test_current_matches_proc() -> None:
    with Namespace.current() as ns:
        st = os.stat("/proc/self/ns/net")
        assert ns.id == (st.st_dev, st.st_ino)
        assert ns.type is NamespaceType.NET
        assert ns.unique_id == os.readlink("/proc/self/ns/net")
        assert ns.inode == st.st_ino


@pytest.mark.parametrize("kind", list(NamespaceType))
def test_every_type_from_pid(kind: NamespaceType) -> None:
    with Namespace.from_pid(os.getpid(), kind) as ns:
        assert ns.type is kind
        assert ns.unique_id == os.readlink(f"/proc/self/ns/{kind.value}")


def test_from_thread_sees_the_thread() -> None:
    tid = threading.get_native_id()
    with Namespace.from_thread(os.getpid(), tid, "uts") as ns, Namespace.current("uts") as cur:
        assert ns == cur


def test_from_name_and_path_are_equal(netns: str) -> None:
    name = os.path.basename(netns)
    with Namespace.from_name(name) as a, Namespace.open(netns) as b, Namespace.open(Path(netns), "net") as c:
        assert a == b == c
        assert len({a, b, c}) == 1
        assert a != Namespace.current()


def test_fd_is_cloexec_and_closes() -> None:
    ns = Namespace.current()
    fd = ns.fd
    assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    ns.close()
    ns.close()  # twice is fine
    assert ns.closed
    with pytest.raises(nsworkers.NamespaceClosedError):
        _ = ns.fd
    with pytest.raises(OSError):
        os.fstat(fd)
    assert "closed" in repr(ns)


def test_from_fd_duplicates(netns: str) -> None:
    fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        ns = Namespace.from_fd(fd, "net")
    finally:
        os.close(fd)
    with ns, Namespace.open(netns) as other:
        assert ns == other
        assert os.path.exists(ns.path)


@pytest.mark.parametrize("bad", [-1, 10_000, True])
def test_from_fd_invalid(bad: int) -> None:
    with pytest.raises(nsworkers.NamespaceNotFoundError):
        Namespace.from_fd(bad)


def test_from_fd_not_a_namespace(tmp_path: Path) -> None:
    with open(tmp_path / "f", "w") as f, pytest.raises(nsworkers.NotANamespaceError):
        Namespace.from_fd(f.fileno())


def test_missing_path() -> None:
    with pytest.raises(nsworkers.NamespaceNotFoundError) as info:
        Namespace.open("/run/netns/does-not-exist-nsw")
    assert isinstance(info.value, FileNotFoundError)
    assert "does-not-exist-nsw" in str(info.value)


def test_missing_name() -> None:
    with pytest.raises(nsworkers.NamespaceNotFoundError):
        Namespace.from_name("does-not-exist-nsw")


@pytest.mark.parametrize("name", ["", ".", "..", "a/b"])
def test_invalid_name(name: str) -> None:
    with pytest.raises(ValueError):
        Namespace.from_name(name)


def test_missing_pid() -> None:
    with pytest.raises(nsworkers.NamespaceNotFoundError):
        Namespace.from_pid(2**22 + 12345)
    with pytest.raises(nsworkers.NamespaceNotFoundError):
        Namespace.from_pid(0)


def test_not_a_namespace(tmp_path: Path) -> None:
    regular = tmp_path / "regular"
    regular.write_text("x")
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (regular, tmp_path, "/proc/self/status", "/proc/self/ns", loop, fifo, "/dev/null"):
        with pytest.raises(nsworkers.NotANamespaceError):
            Namespace.open(path)


def test_wrong_type() -> None:
    with pytest.raises(nsworkers.NamespaceTypeError) as info:
        Namespace.open("/proc/self/ns/uts", "net")
    assert "uts" in str(info.value)


@pytest.mark.parametrize("bad", [None, 3, b"/proc/self/ns/net"])
def test_bad_path_types(bad: object) -> None:
    with pytest.raises(nsworkers.InvalidTargetError):
        Namespace.open(bad)  # type: ignore[arg-type]


def test_namespace_type_coerce() -> None:
    assert NamespaceType.coerce("NET") is NamespaceType.NET
    assert NamespaceType.coerce(0x40000000) is NamespaceType.NET
    assert NamespaceType.from_flag(NamespaceType.MNT.flag) is NamespaceType.MNT
    assert len({t.flag for t in NamespaceType}) == 8
    with pytest.raises(ValueError):
        NamespaceType.coerce("nett")
    with pytest.raises(TypeError):
        NamespaceType.coerce(1.5)  # type: ignore[arg-type]


def test_type_fallback_reads_the_link() -> None:
    # The path taken on kernels without NS_GET_NSTYPE.
    with Namespace.from_pid(os.getpid(), "ipc") as ns:
        assert _type_from_link(ns.fd) is NamespaceType.IPC
    with open("/proc/self/status") as f:
        assert _type_from_link(f.fileno()) is None


def test_so_mark() -> None:
    assert nsworkers.SO_MARK == 36
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, nsworkers.SO_MARK, 7)
        assert s.getsockopt(socket.SOL_SOCKET, nsworkers.SO_MARK) == 7


def test_namespace_cannot_be_pickled() -> None:
    import pickle

    with Namespace.current() as ns, pytest.raises(TypeError):
        pickle.dumps(ns)

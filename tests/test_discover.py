"""Discovery (lxkns's cases, and lsns as the reference) and multi-namespace targets."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

import nsworkers
from nsworkers import Namespace, NamespaceType, _discover, _sys

from .conftest import ip, wait_for

pytestmark = pytest.mark.privileged


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start helper processes; kill them and their children after the test."""
    procs: list[subprocess.Popen[str]] = []

    def start(*cmd: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        try:
            kids = psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:
            kids = []
        for kid in kids:
            kid.kill()
        proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()


def found(kind: str = "net") -> dict[int, nsworkers.DiscoveredNamespace]:
    return {ns.inode: ns for ns in nsworkers.discover([kind])}


def inode(path: str) -> int:
    return os.stat(path).st_ino


def test_named_namespace(make_netns: Callable[[], str]) -> None:
    name = make_netns()
    ns = found()[inode(f"/run/netns/{name}")]
    assert name in ns.names
    assert ns.paths[0] == f"/run/netns/{name}"
    assert "bindmount" in ns.sources
    with ns.open() as handle:
        assert handle.unique_id == ns.unique_id


def test_held_only_by_a_bind_mount_elsewhere(make_netns: Callable[[], str], tmp_path: Path) -> None:
    name = make_netns()
    target = tmp_path / "kept"
    target.touch()
    ino = inode(f"/run/netns/{name}")
    subprocess.run(["mount", "--bind", f"/run/netns/{name}", str(target)], check=True)
    try:
        ip("netns", "del", name)
        ns = found()[ino]
        assert str(target) in ns.paths
        assert ns.names == []
        assert nsworkers.run(str(target), os.readlink, "/proc/self/ns/net") == ns.unique_id
        nsworkers.default_pool().shutdown()
    finally:
        subprocess.run(["umount", str(target)], check=False)


def test_held_only_by_an_open_fd(make_netns: Callable[[], str], spawn: Callable[..., subprocess.Popen[str]]) -> None:
    name = make_netns()
    ino = inode(f"/run/netns/{name}")
    proc = spawn(
        sys.executable,
        "-c",
        f"import os,time; fd=os.open('/run/netns/{name}', 0); print(fd, flush=True); time.sleep(60)",
    )
    assert proc.stdout is not None
    fd = int(proc.stdout.readline())
    ip("netns", "del", name)
    ns = found()[ino]
    assert ns.holders == [proc.pid]
    assert ns.pids == []
    assert f"/proc/{proc.pid}/fd/{fd}" in ns.paths
    assert "fd" in ns.sources


def test_thread_in_another_namespace(
    make_netns: Callable[[], str], spawn: Callable[..., subprocess.Popen[str]]
) -> None:
    name = make_netns()
    code = f"""
import ctypes, os, threading, time
def moved():
    fd = os.open('/run/netns/{name}', 0)
    assert ctypes.CDLL(None).setns(fd, 0x40000000) == 0
    print(threading.get_native_id(), flush=True)
    time.sleep(60)
threading.Thread(target=moved, daemon=True).start()
time.sleep(60)
"""
    proc = spawn(sys.executable, "-c", code)
    assert proc.stdout is not None
    tid = int(proc.stdout.readline())
    ns = found()[inode(f"/run/netns/{name}")]
    assert ns.tids == [tid]
    assert proc.pid not in ns.pids
    assert f"/proc/{proc.pid}/task/{tid}/ns/net" in ns.paths


def wait_unshared(pid: int, kind: str) -> int:
    """The pid of the process that `unshare` execs or forks, once it is in its own namespace."""
    home = os.readlink(f"/proc/self/ns/{kind}")
    assert wait_for(
        lambda: any(
            os.readlink(f"/proc/{p.pid}/ns/{kind}") != home
            for p in [psutil.Process(pid), *psutil.Process(pid).children()]
        )
    )
    for p in [psutil.Process(pid), *psutil.Process(pid).children()]:
        if os.readlink(f"/proc/{p.pid}/ns/{kind}") != home:
            return p.pid
    raise AssertionError("unshare did not move")


def test_process_in_its_own_net_uts_ipc(spawn: Callable[..., subprocess.Popen[str]]) -> None:
    proc = spawn("unshare", "-n", "-u", "-i", "sleep", "60")
    pid = wait_unshared(proc.pid, "net")
    everything = nsworkers.discover()
    for kind in ("net", "uts", "ipc"):
        ino = inode(f"/proc/{pid}/ns/{kind}")
        (ns,) = [n for n in everything if n.type.value == kind and n.inode == ino]
        assert ns.pids == [pid]
        assert ns.commands[pid] == "sleep"


def test_same_namespaces_and_pids_as_lsns(spawn: Callable[..., subprocess.Popen[str]]) -> None:
    # Compared on the namespaces this test made only: other processes on the host come and go.
    proc = spawn("unshare", "-n", "-u", "sleep", "60")
    first = wait_unshared(proc.pid, "net")
    second = spawn("nsenter", "-t", str(first), "-n", "-u", "sleep", "60").pid
    assert wait_for(lambda: os.readlink(f"/proc/{second}/ns/uts") == os.readlink(f"/proc/{first}/ns/uts"))
    mine = {(kind, inode(f"/proc/{first}/ns/{kind}")) for kind in ("net", "uts")}
    lsns = json.loads(subprocess.run(["lsns", "-J"], capture_output=True, text=True, check=True).stdout)["namespaces"]
    flat = list(lsns)
    for row in flat:  # lsns may nest rows as a tree (it does inside a user namespace)
        flat.extend(row.get("children", []))
    rows = {(row["type"], int(row["ns"])): row for row in flat if (row["type"], int(row["ns"])) in mine}
    ours = {(ns.type.value, ns.inode): ns for ns in nsworkers.discover()}
    assert set(rows) == mine
    for key, row in rows.items():
        assert int(row["nprocs"]) == 2
        assert int(row["pid"]) == min(first, second)
        assert sorted(ours[key].pids) == sorted([first, second])


def test_user_and_pid_relations(spawn: Callable[..., subprocess.Popen[str]]) -> None:
    proc = spawn("unshare", "-U", "-p", "-f", "sleep", "60")
    pid = wait_unshared(proc.pid, "pid")
    by_id = {(ns.type.value, ns.inode): ns for ns in nsworkers.discover(["user", "pid"])}
    child_pid = by_id[("pid", inode(f"/proc/{pid}/ns/pid"))]
    assert child_pid.parent == os.readlink("/proc/self/ns/pid")
    child_user = by_id[("user", inode(f"/proc/{pid}/ns/user"))]
    assert child_user.parent == os.readlink("/proc/self/ns/user")
    assert child_pid.owner == child_user.unique_id


def test_net_and_uts_of_a_process(spawn: Callable[..., subprocess.Popen[str]]) -> None:
    proc = spawn("unshare", "-n", "-u", "sh", "-c", "hostname nsw-test-host && exec sleep 60")
    pid = wait_unshared(proc.pid, "uts")
    assert wait_for(lambda: Path(f"/proc/{pid}/comm").read_text().strip() == "sleep")
    with Namespace.from_pid(pid, "net") as net, Namespace.from_pid(pid, "uts") as uts, nsworkers.Pool() as pool:
        got = pool.run([net, uts], lambda: (socket.gethostname(), os.readlink("/proc/self/ns/net")))
        assert got == ("nsw-test-host", net.unique_id)
        assert socket.gethostname() != "nsw-test-host"


def test_pid_namespace_target_sees_its_own_pids(spawn: Callable[..., subprocess.Popen[str]]) -> None:
    proc = spawn("unshare", "-p", "-f", "sleep", "60")
    pid = wait_unshared(proc.pid, "pid")
    with Namespace.from_pid(pid, NamespaceType.PID) as pidns, nsworkers.Pool() as pool:
        inner = pool.run(pidns, os.getpid)
        assert inner < 10  # sleep is 1 in there; the worker is one of the next few
        assert pool.run(pidns, os.readlink, "/proc/self/ns/pid") == pidns.unique_id
        worker = pool.workers()[0].pid
        with pytest.raises(nsworkers.WorkerCrashedError, match="code 4"):
            pool.run(pidns, os._exit, 4)
        assert pool.run(pidns, os.getpid) < 10
        assert worker != pool.workers()[0].pid


def test_cli_ls(make_netns: Callable[[], str]) -> None:
    name = make_netns()
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(nsworkers.__file__))))
    out = subprocess.run([sys.executable, "-m", "nsworkers", "ls", "--json", "--type", "all"], capture_output=True,
                         text=True, check=True, env=env).stdout  # fmt: skip
    rows = json.loads(out)["namespaces"]
    assert {r["type"] for r in rows} >= {"net", "uts", "ipc", "mnt", "pid", "user", "cgroup"}
    (row,) = [r for r in rows if name in r["names"]]
    assert set(row) == {"type", "inode", "id", "names", "paths", "pids", "tids", "holders", "commands", "parent",
                        "owner", "sources", "attribution"}  # fmt: skip
    table = subprocess.run(
        [sys.executable, "-m", "nsworkers", "ls"], capture_output=True, text=True, env=env, check=True
    ).stdout
    assert name in table and table.startswith("TYPE")
    bad = subprocess.run(
        [sys.executable, "-m", "nsworkers", "ls", "--type", "bogus"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_pid_namespace_worker_holds_only_its_own_fds(spawn: Callable[..., subprocess.Popen[str]]) -> None:
    proc = spawn("unshare", "-p", "-f", "sleep", "60")
    pid = wait_unshared(proc.pid, "pid")
    with Namespace.from_pid(pid, NamespaceType.PID) as pidns, nsworkers.Pool() as pool:
        fds = pool.run(pidns, _fd_links)
    # A pid-only target leaves no namespace link to check per call, so no /proc fd
    # at all: in particular not the middle process's /proc/PID/ns directory.
    assert not [link for link in fds if link.startswith("/proc/")], fds


def _fd_links() -> list[str]:
    links = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:
            pass  # the listing's own fd
    return sorted(links)


def test_an_over_mounted_bind_mount_is_no_path(make_netns: Callable[[], str]) -> None:
    # A tmpfs over /run/netns (as in a container, or the tests' user namespace) hides the
    # host's names: mountinfo still lists them, but those paths lead elsewhere or nowhere.
    name = make_netns()
    ino = inode(f"/run/netns/{name}")
    code = (
        "import json, os, nsworkers\n"
        f"(paths,) = [n.paths for n in nsworkers.discover(['net']) if n.inode == {ino}] or [[]]\n"
        f"print(json.dumps([[p, os.stat(p).st_ino == {ino}] for p in paths]))\n"
    )
    src = os.path.dirname(os.path.dirname(os.path.abspath(nsworkers.__file__)))
    shell = 'mount -t tmpfs none /run/netns && exec "$@"'
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", shell, "sh", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ, PYTHONPATH=src),
    )
    assert done.returncode == 0, done.stderr
    paths = json.loads(done.stdout)
    assert [f"/run/netns/{name}", False] not in paths and [f"/run/netns/{name}", True] not in paths
    assert all(leads for _, leads in paths), paths  # through /proc/PID/root of the host's mount namespace
    assert found()[ino].paths[0] == f"/run/netns/{name}"  # outside that mount namespace: there it is


#: Runs as a helper: enters new namespaces (argv[1]: unshare flags) and forks a child that, alone in
#: the new network namespace (its parent goes back to the old one, and waits for it), names itself as
#: nsworkers names its workers. argv[2], argv[3]: PR_SET_NAME, CLONE_NEWNET; argv[4]: the child's
#: own unshare flags after the fork (0: none); argv[5]: its uid, if any.
_NAMED_LIKE_A_WORKER = """
import ctypes, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
old_net = os.open("/proc/self/ns/net", os.O_RDONLY)
if libc.unshare(int(sys.argv[1])) != 0:
    raise OSError(ctypes.get_errno(), "unshare")
child = os.fork()
if child == 0:
    if int(sys.argv[4]) and libc.unshare(int(sys.argv[4])) != 0:
        os._exit(1)
    if len(sys.argv) > 5:
        os.setresuid(int(sys.argv[5]), int(sys.argv[5]), int(sys.argv[5]))
    libc.prctl(int(sys.argv[2]), b"nsw-worker", 0, 0, 0)
    signal.pause()
    os._exit(0)
if libc.setns(old_net, int(sys.argv[3])) != 0:
    raise OSError(ctypes.get_errno(), "setns")
print(child, flush=True)
os.waitpid(child, 0)
"""


def _maps_uid(uid: int) -> bool:
    with open("/proc/self/uid_map") as uid_map:
        return any(int(inner) <= uid < int(inner) + int(count) for inner, _, count in map(str.split, uid_map))


@pytest.mark.parametrize(
    ("flags", "own", "uid"),
    [
        pytest.param(_sys.CLONE_NEWNET | _sys.CLONE_NEWPID, 0, None, id="another pid namespace"),
        pytest.param(_sys.CLONE_NEWNET | _sys.CLONE_NEWNS, 0, None, id="another mount namespace"),
        pytest.param(_sys.CLONE_NEWNET, _sys.CLONE_NEWUSER, None, id="another user namespace"),
        pytest.param(_sys.CLONE_NEWNET, 0, 65534, id="another uid"),
    ],
)
def test_a_process_named_like_a_worker_does_not_hide_its_namespace(
    flags: int, own: int, uid: int | None, spawn: Callable[..., subprocess.Popen[str]]
) -> None:
    # Broke: network_namespaces() left out a namespace whose only processes were *named*
    # nsw-worker (a comm anyone sets), so a container, or a user after `unshare -rn`, could
    # hide its network from inspect() and the exporter.
    if uid is not None and not _maps_uid(uid):
        pytest.skip(f"uid {uid} is not mapped in this user namespace")
    names = (str(flags), str(_sys.PR_SET_NAME), str(_sys.CLONE_NEWNET), str(own), *([str(uid)] * (uid is not None)))
    helper = spawn(sys.executable, "-c", _NAMED_LIKE_A_WORKER, *names)
    assert helper.stdout is not None
    pid = int(helper.stdout.readline())
    try:
        assert wait_for(lambda: _discover._comm(pid) == "nsw-worker")
        ino = inode(f"/proc/{pid}/ns/net")
        listed = set()
        for path in nsworkers.network_namespaces():
            try:
                listed.add(inode(path))
            except OSError:
                continue  # someone else's, gone meanwhile
        assert ino in listed
    finally:
        os.kill(pid, signal.SIGKILL)

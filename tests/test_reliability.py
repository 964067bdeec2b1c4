"""Reliability: faults, timeouts, bad input, leaks, stress and IPC hygiene (issue figures R1-R7).

Soak sizes come from NSW_SOAK=1 (100k calls, 10k spawn/evict cycles, 64 threads x 10k
calls); the default run uses shortened versions of every suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import nsworkers
from nsworkers import Namespace, Pool

from ._in_worker import exhaust_memory, my_netns, pid, recurse
from .conftest import PREFIX, dead, ip, thread_netns, wait_for

pytestmark = pytest.mark.privileged
SOAK = os.environ.get("NSW_SOAK") == "1"
NET = "/proc/self/ns/net"


# -- R1 faults -------------------------------------------------------------


@pytest.mark.parametrize(("fault", "cause"), [(exhaust_memory, MemoryError), (recurse, RecursionError)])
def test_fatal_python_errors_replace_the_worker(
    pool: Pool, netns: str, fault: Callable[[], Any], cause: type[BaseException]
) -> None:
    before = pool.run(netns, pid)
    with pytest.raises(nsworkers.WorkerCrashedError) as info:
        pool.run(netns, fault)
    assert isinstance(info.value.__cause__, cause)
    assert cause.__name__ in str(info.value)
    assert pool.run(netns, pid) != before


def test_worker_killed_while_idle_is_replaced_transparently(pool: Pool, netns: str) -> None:
    before = pool.run(netns, pid)
    os.kill(before, signal.SIGKILL)
    assert wait_for(lambda: dead(before))
    assert pool.run(netns, pid) != before  # the request never reached the dead worker: retried


def test_zygote_killed_is_restarted(pool: Pool, make_netns: Callable[[], str]) -> None:
    a, b = f"/run/netns/{make_netns()}", f"/run/netns/{make_netns()}"
    pool.run(a, pid)
    zygote = pool._spawner.zygote_pid  # type: ignore[attr-defined]
    assert zygote is not None
    os.kill(zygote, signal.SIGKILL)
    assert pool.run(b, my_netns) == Namespace.open(b).unique_id  # a new namespace: a new zygote forks it
    assert pool.run(a, my_netns) == Namespace.open(a).unique_id  # its old worker died with the old zygote
    assert pool._spawner.zygote_pid not in (None, zygote)  # type: ignore[attr-defined]


# -- R2 timeouts -----------------------------------------------------------


def test_timeout_precision(pool: Pool, netns: str) -> None:
    pool.run(netns, pid)
    overshoot = []
    for _ in range(5):
        start = time.monotonic()
        with pytest.raises(nsworkers.WorkerTimeoutError):
            pool.options(timeout=0.2).run(netns, time.sleep, 10)
        overshoot.append(time.monotonic() - start - 0.2)
    assert min(overshoot) >= 0  # never early; how late is measured in bench/ (scenario "tm"), not asserted


# -- R4 bad input ----------------------------------------------------------


class _BadReduce:
    def __call__(self) -> None:
        pass

    def __reduce__(self) -> Any:
        raise TypeError("refuses to be pickled")


class _Unrebuildable(Exception):
    def __init__(self, a: int, b: int) -> None:  # pickle rebuilds it with one argument: fails
        super().__init__(f"{a}-{b}")


def _raise_unrebuildable() -> None:
    raise _Unrebuildable(1, 2)


def _generator() -> Any:
    return (i for i in range(3))


def _open_file() -> Any:
    return open("/proc/self/status")


BadCase = tuple[str, Callable[[Pool, str, Path], Any], type[BaseException]]
BAD_INPUT: list[BadCase] = [
    ("missing path", lambda p, ns, tmp: p.run("/run/netns/nsw-no-such", pid), nsworkers.NamespaceNotFoundError),
    ("regular file", lambda p, ns, tmp: p.run(str(tmp / "file"), pid), nsworkers.NotANamespaceError),
    ("directory", lambda p, ns, tmp: p.run(str(tmp), pid), nsworkers.NotANamespaceError),
    ("symlink loop", lambda p, ns, tmp: p.run(str(tmp / "loop"), pid), nsworkers.NotANamespaceError),
    ("/proc/self/status", lambda p, ns, tmp: p.run("/proc/self/status", pid), nsworkers.NotANamespaceError),
    ("wrong type", lambda p, ns, tmp: Namespace.open("/proc/self/ns/uts", "net"), nsworkers.NamespaceTypeError),
    ("closed Namespace", lambda p, ns, tmp: p.run(_closed(ns), pid), nsworkers.NamespaceClosedError),
    ("negative fd", lambda p, ns, tmp: Namespace.from_fd(-1), nsworkers.NamespaceNotFoundError),
    ("invalid fd", lambda p, ns, tmp: Namespace.from_fd(19999), nsworkers.NamespaceNotFoundError),
    ("non-callable", lambda p, ns, tmp: p.run(ns, 42), TypeError),  # type: ignore[arg-type]
    ("unpicklable callable", lambda p, ns, tmp: p.run(ns, _BadReduce()), nsworkers.SerializationError),
    ("unpicklable argument", lambda p, ns, tmp: p.run(ns, id, threading.Lock()), nsworkers.SerializationError),
    ("unpicklable result", lambda p, ns, tmp: p.run(ns, threading.Lock), nsworkers.SerializationError),
    ("unpicklable exception", lambda p, ns, tmp: p.run(ns, _raise_unrebuildable), nsworkers.RemoteError),
    ("generator result", lambda p, ns, tmp: p.run(ns, _generator), nsworkers.SerializationError),
    ("result holding an open file", lambda p, ns, tmp: p.run(ns, _open_file), nsworkers.SerializationError),
    ("None as a path", lambda p, ns, tmp: p.run(None, pid), nsworkers.InvalidTargetError),  # type: ignore[arg-type]
    ("int as a path", lambda p, ns, tmp: p.run(3, pid), nsworkers.InvalidTargetError),  # type: ignore[arg-type]
    ("bytes as a path", lambda p, ns, tmp: p.run(b"/run", pid), nsworkers.InvalidTargetError),  # type: ignore[arg-type]
    ("timeout 0", lambda p, ns, tmp: p.options(timeout=0), ValueError),
    ("negative timeout", lambda p, ns, tmp: p.options(timeout=-1), ValueError),
]


def _closed(path: str) -> Namespace:
    ns = Namespace.open(path)
    ns.close()
    return ns


@pytest.fixture
def bad_paths(tmp_path: Path) -> Path:
    (tmp_path / "file").write_text("x")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    return tmp_path


@pytest.mark.parametrize(("kind", "action", "error"), BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_typed_and_harmless(
    pool: Pool, netns: str, bad_paths: Path, kind: str, action: Callable[[Pool, str, Path], Any], error: type
) -> None:
    with pytest.raises(error) as info:
        action(pool, netns, bad_paths)
    assert "\n" not in str(info.value).strip() or kind == "unpicklable exception"
    assert pool.run(netns, my_netns) == Namespace.open(netns).unique_id  # still usable


def test_deleted_namespace_and_shutdown(make_netns: Callable[[], str]) -> None:
    name = make_netns()
    pool = Pool()
    ip("netns", "del", name)
    with pytest.raises(nsworkers.NamespaceNotFoundError):
        pool.run(f"/run/netns/{name}", pid)
    pool.shutdown()
    with pytest.raises(nsworkers.PoolClosedError):
        pool.submit("/proc/self/ns/net", pid)


def test_512_mib_result(pool: Pool, netns: str) -> None:
    size = 512 << 20
    assert len(pool.run(netns, bytes, size)) == size
    assert pool.run(netns, pid)


# -- R5 leaks --------------------------------------------------------------


def _resources() -> tuple[int, int, set[int]]:
    me = psutil.Process()
    return me.num_fds(), me.num_threads(), {c.pid for c in me.children(recursive=True)}


def _nsfs_mounts_of(paths: list[str]) -> list[str]:
    """Mount points in mountinfo of the namespaces behind *paths* (ours; others' come and go)."""
    inodes = {f"net:[{os.stat(p).st_ino}]" for p in paths}
    with open("/proc/self/mountinfo") as f:
        return sorted(line.split()[4] for line in f if line.split()[3] in inodes)


def test_no_leaks_over_many_calls_and_spawn_cycles(make_netns: Callable[[], str]) -> None:
    calls, cycles = (100_000, 10_000) if SOAK else (20_000, 300)
    paths = [f"/run/netns/{make_netns()}" for _ in range(3)]
    mounts_before = _nsfs_mounts_of(paths)
    fds, threads, children = _resources()
    with Pool(max_workers=2) as pool:
        for _ in range(calls):
            pool.run(paths[0], int)
        for i in range(cycles):  # 3 namespaces, 2 workers: every call evicts one and spawns one
            pool.run(paths[i % 3], int)
    assert wait_for(lambda: _resources()[2] == children)
    assert wait_for(lambda: _resources()[:2] == (fds, threads)), (_resources(), fds, threads)
    assert set(paths) <= set(mounts_before)
    assert _nsfs_mounts_of(paths) == mounts_before  # the pool mounted none of ours anywhere
    assert sorted(n for n in os.listdir("/run/netns") if n.startswith(PREFIX)) == sorted(
        os.path.basename(p) for p in paths
    )


# -- R6 stress -------------------------------------------------------------


def test_stress_mixed_calls_with_random_kills(make_netns: Callable[[], str]) -> None:
    threads_n, calls, spaces = (64, 10_000, 50) if SOAK else (64, 60, 10)
    paths = [f"/run/netns/{make_netns()}" for _ in range(spaces)]
    expected = {p: Namespace.open(p).unique_id for p in paths}
    home = os.readlink("/proc/self/ns/net")
    deadline = time.monotonic() + (1800 if SOAK else 120)
    errors: list[BaseException] = []
    crashes = [0]
    stop = threading.Event()
    seen: set[str] = set()

    with Pool(max_workers=spaces + 8) as pool:

        def killer() -> None:
            rng = random.Random(7)
            while not stop.wait(0.05):
                victims = [w.pid for w in pool.workers(memory=False)]
                if victims:
                    try:
                        os.kill(rng.choice(victims), signal.SIGKILL)
                    except ProcessLookupError:
                        pass

        def sampler() -> None:
            # every 10 ms: a tighter loop holds the GIL so much that it measures itself, not the pool
            while not stop.wait(0.01):
                seen.update(thread_netns())

        def caller(i: int) -> None:
            rng = random.Random(i)
            loop = asyncio.new_event_loop()
            try:
                for _ in range(calls):
                    if time.monotonic() > deadline:
                        raise TimeoutError("global deadline")
                    p = rng.choice(paths)
                    how = rng.randrange(3)
                    # os.readlink, not a function of this module: a respawned worker would import
                    # the test module (and pytest) on its first call, and kills respawn often
                    try:
                        if how == 0:
                            got = pool.run(p, os.readlink, NET)
                        elif how == 1:
                            got = pool.submit(p, os.readlink, NET).result(timeout=60)
                        else:
                            got = loop.run_until_complete(pool.arun(p, os.readlink, NET))
                    except nsworkers.WorkerCrashedError:
                        crashes[0] += 1
                        continue
                    assert got == expected[p], (got, p)
            except BaseException as exc:
                errors.append(exc)
            finally:
                loop.close()

        helpers = [threading.Thread(target=killer), threading.Thread(target=sampler)]
        callers = [threading.Thread(target=caller, args=(i,)) for i in range(threads_n)]
        for t in helpers + callers:
            t.start()
        for t in callers:
            t.join(timeout=max(1.0, deadline - time.monotonic()))
        stop.set()
        for t in helpers:
            t.join()
        assert not any(t.is_alive() for t in callers), "deadlock: callers still running at the deadline"
    assert not errors, errors[:3]
    assert seen == {home}


# -- R7 IPC hygiene --------------------------------------------------------


def _socket_inodes(pid_: int) -> set[int]:
    out = set()
    for fd in os.listdir(f"/proc/{pid_}/fd"):
        try:
            link = os.readlink(f"/proc/{pid_}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            out.add(int(link[8:-1]))
    return out


def test_no_listening_socket_and_no_ipc_path(pool: Pool, make_netns: Callable[[], str]) -> None:
    for _ in range(3):
        pool.run(f"/run/netns/{make_netns()}", pid)
    ours = [os.getpid(), pool._spawner.zygote_pid, *(w.pid for w in pool.workers(memory=False))]  # type: ignore[attr-defined]
    inodes = set().union(*(_socket_inodes(p) for p in ours))
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            fields = line.split()
            if int(fields[6]) in inodes:
                assert len(fields) == 7, f"a unix socket with a path: {line}"  # 8th field is the path
                assert int(fields[3], 16) & 0x10000 == 0, "a listening unix socket"  # __SO_ACCEPTCON
    for p in ours:
        for conn in psutil.Process(p).net_connections(kind="all"):
            assert conn.status != psutil.CONN_LISTEN


def test_every_library_fd_is_cloexec(pool: Pool, netns: str) -> None:
    before = set(os.listdir("/proc/self/fd"))
    ns = Namespace.open(netns)
    pool.run(ns, pid)
    sock = pool.socket(netns, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        new = set(os.listdir("/proc/self/fd")) - before
        assert len(new) >= 4  # the Namespace, a channel's two pipes, the socket (and the zygote's control socket)
        checked = 0
        for fd in new:
            try:
                with open(f"/proc/self/fdinfo/{fd}") as f:
                    flags = int(next(line for line in f if line.startswith("flags:")).split()[1], 8)
                link = os.readlink(f"/proc/self/fd/{fd}")
            except FileNotFoundError:
                continue  # the directory listing's own fd
            assert flags & os.O_CLOEXEC, (fd, link)
            checked += 1
        assert checked >= 4
    finally:
        sock.close()
        ns.close()


def test_worker_fds_are_only_its_own(pool: Pool, netns: str) -> None:
    worker = pool.run(netns, pid)
    kinds = sorted(os.readlink(f"/proc/{worker}/fd/{fd}").split(":")[0] for fd in os.listdir(f"/proc/{worker}/fd"))
    stdio = [k for k in kinds if not k.startswith(("pipe", "/proc"))]
    assert kinds.count("pipe") >= 2 and len(stdio) <= 3, kinds
    mode = os.stat(f"/proc/{worker}/fd/0").st_mode
    assert not stat.S_ISSOCK(mode)


def test_shutdown_after_workers_died_twice_before_a_call(netns: str) -> None:
    # Regression (found by the soak): a call whose worker *and* its replacement died
    # before the request was sent left the pool's in-flight count raised, so
    # shutdown(wait=True) never returned.
    pool = Pool()
    first = pool.run(netns, pid)
    os.kill(first, signal.SIGKILL)
    assert wait_for(lambda: _gone(first))
    real_start = pool._start_worker

    def start_then_die(*args: Any) -> Any:
        worker = real_start(*args)  # ready, then killed before the retried request is sent
        os.kill(worker.pid, signal.SIGKILL)
        assert wait_for(lambda: _gone(worker.pid))
        return worker

    pool._start_worker = start_then_die  # type: ignore[method-assign, assignment]
    with pytest.raises(nsworkers.WorkerCrashedError, match="died twice"):
        pool.run(netns, pid)
    pool._start_worker = real_start  # type: ignore[method-assign]
    assert pool.run(netns, pid) not in (first, None)
    closer = threading.Thread(target=pool.shutdown, daemon=True)
    closer.start()
    closer.join(10)
    assert not closer.is_alive(), "shutdown hung: an in-flight call was never counted as done"


def _gone(pid_: int) -> bool:
    try:
        return psutil.Process(pid_).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


_FREEZER = "/sys/fs/cgroup/freezer"


class _Freezer:
    """Puts processes to uninterruptible sleep (a cgroup-v1 freezer of the test's own): SIGKILL waits for a thaw."""

    def __init__(self, group: str) -> None:
        self.group = group

    def _state(self, value: str | None = None) -> str:
        with open(f"{self.group}/freezer.state", "r+") as state:
            if value is None:
                return state.read().strip()
            state.write(value)
            return value

    def freeze(self, pid: int) -> None:
        with open(f"{self.group}/cgroup.procs", "w") as procs:
            procs.write(str(pid))
        self._state("FROZEN")
        assert wait_for(lambda: self._state() == "FROZEN")

    def thaw(self) -> None:
        self._state("THAWED")


@pytest.fixture
def freezer() -> Iterator[_Freezer]:
    """A :class:`_Freezer`; thawed after the test, its processes moved back out, its cgroup removed."""
    if not os.access(_FREEZER, os.W_OK):
        pytest.skip("no writable cgroup-v1 freezer here")
    group = f"{_FREEZER}/{PREFIX}freeze"
    os.mkdir(group)
    try:
        yield _Freezer(group)
    finally:
        _Freezer(group).thaw()
        with open(f"{group}/cgroup.procs") as procs:
            left = [int(line) for line in procs]
        for pid in left:  # a test that failed before it ended them: back to where cgroups start
            with contextlib.suppress(OSError), open(f"{_FREEZER}/cgroup.procs", "w") as root:
                root.write(str(pid))
        assert wait_for(lambda: not Path(f"{group}/cgroup.procs").read_text())
        os.rmdir(group)


def _returns(fn: Callable[[], Any]) -> tuple[bool, Any]:
    """Run *fn* in a thread: (whether it returned within a generous minute, its result or exception)."""
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(fn())
        except BaseException as exc:
            box.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)  # a guard against a hang, not a speed bound: the sleep below lasts until the test thaws it
    return not thread.is_alive(), box[0] if box else None


@pytest.mark.parametrize("start_method", ["zygote", "fork"])
def test_a_worker_the_kill_cannot_end_yet_holds_up_neither_the_call_nor_the_pool(
    start_method: str, make_netns: Callable[[], str], freezer: _Freezer
) -> None:
    # Broke: after the SIGKILL of a call past its timeout, a blocking waitpid() waited for the
    # worker to exit; one in uninterruptible sleep (a frozen cgroup, a stuck disk) exits only
    # when it wakes. start_method="fork": the call itself hung past its timeout, as long as the
    # sleep lasted. "zygote": the call ended, but the zygote hung, so no worker could be started
    # for any namespace ("the zygote did not answer in time").
    first, second = (f"/run/netns/{make_netns()}" for _ in range(2))
    with Pool(start_method=start_method) as pool:
        worker = pool.run(first, os.getpid)
        freezer.freeze(worker)
        returned, outcome = _returns(lambda: pool.options(timeout=1).run(first, os.getpid))
        assert returned, "the call hung past its timeout"
        assert isinstance(outcome, nsworkers.WorkerTimeoutError), outcome
        returned, outcome = _returns(lambda: pool.options(timeout=60).run(second, os.getpid))
        assert returned and isinstance(outcome, int) and outcome != worker, outcome
        assert not dead(worker)  # all that while, the first one still slept
        freezer.thaw()
        if start_method == "zygote":  # its SIGCHLD handler reaps it when it wakes
            assert wait_for(lambda: not psutil.pid_exists(worker))
        else:  # our own zombie now, reaped by the pool at the latest when it closes
            assert wait_for(lambda: dead(worker))
    assert not psutil.pid_exists(worker)

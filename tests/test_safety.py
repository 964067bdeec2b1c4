"""The safety promise under faults and hostile targets (issue 12), reproduced first.

A call runs in the namespace it names, or it fails with a typed error -- never
silently elsewhere, never hanging past its timeout, never running code the
caller did not send. One test (or more) per numbered symptom of the issue,
plus a stress test of request/reply pairing under random interruptions.

Only the public API and OS-level means are used: signals (SIGSTOP/SIGCONT of
the zygote or a worker, found as a worker's parent through psutil), rlimits
and forks in child interpreters, mount namespaces made here, FIFOs swapped
in. A "hang" symptom is tested through the promise itself (a call with a
timeout must raise :class:`WorkerTimeoutError`); each such test carries a
short ``pytest.mark.timeout`` so a hang fails quickly.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import gc
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import nsworkers
from nsworkers import Namespace, Pool

from ._in_worker import (
    fork_sleeper,
    fork_then_die,
    import_value,
    mp_sleeper,
    my_netns,
    ns_link,
    unpicklable_result,
    unshare,
)
from ._in_worker import (
    pid as getpid,
)
from .conftest import dead, run_python, wait_for

pytestmark = pytest.mark.privileged

NET = "/proc/self/ns/net"
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
SIOCGSKNS = 0x894C  # linux/sockios.h: a socket's network namespace as a new fd


# -- helpers: callables for the workers --------------------------------------


# -- helpers: processes and signals ------------------------------------------


def netns_id(path: str) -> str:
    """What ``readlink /proc/self/ns/net`` shows inside the namespace at *path*."""
    return f"net:[{os.stat(path).st_ino}]"


def worker_pid(pool: Pool, target: str) -> int:
    """The pid of the (only) worker serving *target*, started if need be."""
    pid: int = pool.run(target, getpid)
    assert pid in {w.pid for w in pool.workers(memory=False)}
    return pid


def zygote_pid(pool: Pool, target: str) -> int:
    """The pool's zygote: the parent of a worker, itself a child of this process."""
    parent = psutil.Process(worker_pid(pool, target)).ppid()
    assert parent in {p.pid for p in psutil.Process().children()}, "the zygote is not our child"
    return parent


@contextlib.contextmanager
def stopped(pid: int) -> Iterator[None]:
    """*pid* stopped (SIGSTOP) for the block, continued afterwards whatever happens."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


class Interrupted(Exception):
    """What our signal handler raises in the caller, like KeyboardInterrupt from Ctrl-C."""


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted


@pytest.fixture
def interrupts() -> Iterator[None]:
    """SIGUSR1 raises :class:`Interrupted` in the main thread (SIGALRM is pytest-timeout's)."""
    assert threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGUSR1, _raise_interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR1, old)


def interrupt_main_soon(delay: float) -> threading.Timer:
    timer = threading.Timer(delay, signal.pthread_kill, (threading.main_thread().ident, signal.SIGUSR1))
    timer.start()
    return timer


def wait_until_blocked(tid: int, stop: threading.Event) -> bool:
    """Wait until thread *tid* of this process sleeps (state S) for a while; False if *stop* is set first.

    Whatever it waits on (a socket, a pipe, a condition set by another
    thread), a caller stuck on a stopped zygote or worker sleeps; a thread
    only waiting for the GIL does not stay asleep for 5 polls in a row.
    """
    streak = 0
    while streak < 5:
        if stop.is_set():
            return False
        try:
            state = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            state = "?"
        streak = streak + 1 if state == "S" else 0
        time.sleep(0.02)
    return not stop.is_set()


def interrupt_when_blocked(tid: int, stop: threading.Event) -> None:
    """Runs in a helper thread: SIGUSR1 to the main thread (*tid*) once it blocks, unless stopped."""
    if wait_until_blocked(tid, stop):
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)


@contextlib.contextmanager
def interrupt_main_when_blocked() -> Iterator[None]:
    """Raise :class:`Interrupted` in the main thread once it blocks inside the block."""
    stop = threading.Event()
    helper = threading.Thread(target=interrupt_when_blocked, args=(threading.get_native_id(), stop))
    helper.start()
    try:
        yield
    finally:
        stop.set()
        helper.join()


def all_children() -> set[int]:
    """Our descendants, zombies included."""
    return {p.pid for p in psutil.Process().children(recursive=True)}


def zombies_of(pid: int) -> list[int]:
    try:
        return [c.pid for c in psutil.Process(pid).children() if c.status() == psutil.STATUS_ZOMBIE]
    except psutil.NoSuchProcess:
        return []


def kill_quietly(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


# -- 1. an interrupted cold call must not leave a reply queued ------------------


@pytest.mark.timeout(60)
def test_1_interrupt_during_cold_call_does_not_shift_replies(
    pool: Pool, make_netns: Callable[[], str], interrupts: None
) -> None:
    """Symptom 1: Ctrl-C while a cold call waits for the zygote; later calls must run where they name."""
    a, b, c = (f"/run/netns/{make_netns()}" for _ in range(3))
    zygote = zygote_pid(pool, a)
    # The cold call for b waits on the stopped zygote: interrupt it right there.
    with stopped(zygote), interrupt_main_when_blocked(), pytest.raises(Interrupted):
        pool.run(b, my_netns)
    for target in (c, b, a, c, b):
        assert pool.run(target, my_netns) == netns_id(target)


@pytest.mark.timeout(60)
def test_1_interrupt_during_reap_does_not_shift_replies(
    pool: Pool, make_netns: Callable[[], str], interrupts: None
) -> None:
    """Symptom 1: Ctrl-C while the caller asks the zygote how a crashed worker died; later calls stay in step."""
    a, b, c = (f"/run/netns/{make_netns()}" for _ in range(3))
    zygote = zygote_pid(pool, a)
    # The worker dies mid-call; the caller may ask the stopped zygote how: interrupt it there.
    crashed = (Interrupted, nsworkers.WorkerCrashedError)
    with stopped(zygote), interrupt_main_when_blocked(), pytest.raises(crashed):
        pool.run(a, os._exit, 3)
    for target in (b, c, a, b):
        assert pool.run(target, my_netns) == netns_id(target)


# -- 2. a mount-namespace target must not get code execution ---------------------


@contextlib.contextmanager
def container_over(directory: str, planted: dict[str, str]) -> Iterator[int]:
    """A process in a new mount (and net) namespace where *directory* is a tmpfs holding *planted* files."""
    script = textwrap.dedent(
        """
        mount -t tmpfs nswt-plant "$1" || exit 1
        shift
        while [ $# -gt 0 ]; do mkdir -p "$(dirname "$1")" && printf '%s' "$2" > "$1" || exit 1; shift 2; done
        echo ready
        exec sleep 600
        """
    )
    files = [x for rel, text in planted.items() for x in (os.path.join(directory, rel), text)]
    child = subprocess.Popen(
        ["unshare", "--mount", "--net", "--propagation", "private", "sh", "-c", script, "sh", directory, *files],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready", "could not build the container"
        yield child.pid
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()


def _targets(pid: int, shape: str) -> Any:
    if shape == "mnt":
        return f"/proc/{pid}/ns/mnt"
    return [Namespace.from_pid(pid, "mnt"), Namespace.from_pid(pid, "net")]


def _planted(marker: Path, value: str = "planted") -> str:
    """A module that leaves *marker* (a file in the host's view) when it runs, and answers *value*."""
    return (
        f"open({str(marker)!r}, 'w').write('the container ran this as ' + str(__import__('os').getuid()))\n"
        f"VALUE = {value!r}\n"
        f"def links(*args, **kwargs):\n    return {value!r}\n"
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("shape", ["mnt", "mnt+net"])
def test_2_mount_target_cannot_plant_a_module_on_sys_path(tmp_path: Path, shape: str) -> None:
    """Symptom 2: a container mounting over a sys.path directory must not get its module imported."""
    name = f"nswt_probe_{os.getpid()}_{shape.replace('+', '_')}"
    path_dir, marker = tmp_path / "path", tmp_path / "planted-code-ran"
    path_dir.mkdir()
    (path_dir / f"{name}.py").write_text('VALUE = "genuine"\n')
    sys.path.insert(0, str(path_dir))
    try:
        with Pool() as pool, container_over(str(path_dir), {f"{name}.py": _planted(marker)}) as pid:
            target = _targets(pid, shape)
            try:
                value = pool.run(target, import_value, name)
            finally:
                if not isinstance(target, str):
                    for ns in target:
                        ns.close()
    finally:
        sys.path.remove(str(path_dir))
        sys.modules.pop(name, None)
    assert not marker.exists(), marker.read_text()
    assert value == "genuine"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("shape", ["mnt", "mnt+net"])
def test_2_mount_target_cannot_plant_into_the_package(tmp_path: Path, shape: str) -> None:
    """Symptom 2: a container mounting over the nsworkers package must not get its netlink imported."""
    package = os.path.dirname(os.path.abspath(nsworkers.__file__))
    marker = tmp_path / "planted-code-ran"
    code = _planted(marker)
    # Wherever netlink.links lives (a module, or a package re-exporting it), the planted copy is found first.
    planted = {"netlink.py": code, "netlink/__init__.py": code}
    planted.update({f"netlink/{m}.py": code for m in ("_dumps", "_records", "_wire", "_names", "_links")})
    from nsworkers import netlink

    links: object
    with Pool() as pool, container_over(package, planted) as pid:
        target = _targets(pid, shape)
        try:
            links = pool.run(target, netlink.links)
        except nsworkers.NsWorkersError as exc:
            links = exc
        finally:
            if not isinstance(target, str):
                for ns in target:
                    ns.close()
    assert not marker.exists(), marker.read_text()
    assert isinstance(links, list) and any(link["ifname"] == "lo" for link in links), links


# -- 3. a callable's leftover child must not hide its worker's death ---------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("via", ["fork", "multiprocessing"])
def test_3_leftover_child_does_not_hide_death_mid_call(pool: Pool, netns: str, tmp_path: Path, via: str) -> None:
    """Symptom 3: the worker dies mid-call while its forked child still holds the channel."""
    pidfile = tmp_path / "child.pid"
    try:
        with pytest.raises(nsworkers.WorkerCrashedError):
            pool.run(netns, fork_then_die, str(pidfile), via)
        assert pool.run(netns, my_netns) == netns_id(netns)
    finally:
        if pidfile.exists():
            kill_quietly(int(pidfile.read_text()))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("via", ["fork", "multiprocessing"])
def test_3_leftover_child_does_not_hide_death_while_idle(pool: Pool, netns: str, via: str) -> None:
    """Symptom 3: the worker is killed while idle; the next call must not block on the child's copies."""
    child = pool.run(netns, fork_sleeper if via == "fork" else mp_sleeper)
    try:
        worker = worker_pid(pool, netns)
        os.kill(worker, signal.SIGKILL)
        assert wait_for(lambda: dead(worker))
        assert pool.run(netns, my_netns) == netns_id(netns)
    finally:
        kill_quietly(child)


# -- 4. timeouts are honoured everywhere a caller can block ------------------------


@pytest.mark.timeout(60)
def test_4_cold_call_times_out_on_a_stalled_zygote(pool: Pool, make_netns: Callable[[], str]) -> None:
    """Symptom 4: with the zygote stopped, cold calls with a timeout raise instead of blocking (and queuing)."""
    a, b, c = (f"/run/netns/{make_netns()}" for _ in range(3))
    zygote = zygote_pid(pool, a)
    quick = pool.options(timeout=2)
    with stopped(zygote):
        other = quick.submit(c, my_netns)  # another cold call, from another thread, at the same time
        with pytest.raises(nsworkers.WorkerTimeoutError):
            quick.run(b, my_netns)
        assert isinstance(other.exception(), nsworkers.WorkerTimeoutError)
        assert pool.run(a, my_netns) == netns_id(a)  # a warm call needs no zygote
    for target in (b, c, a):  # the zygote's late replies must not be taken for later requests
        assert pool.run(target, my_netns) == netns_id(target)


@pytest.mark.timeout(60)
def test_4_large_argument_to_a_stalled_worker_times_out(pool: Pool, netns: str) -> None:
    """Symptom 4: a 1 MiB argument fills the pipe of a stopped worker; the write must obey the timeout."""
    worker = worker_pid(pool, netns)
    with stopped(worker), pytest.raises(nsworkers.WorkerTimeoutError):
        pool.options(timeout=2).run(netns, len, b"x" * (1 << 20))
    assert pool.run(netns, my_netns) == netns_id(netns)


# -- 5. a fork of the caller must not inherit a held lock ----------------------------


@pytest.mark.timeout(120)
def test_5_caller_fork_while_spawner_busy_exits_cleanly(make_netns: Callable[[], str]) -> None:
    """Symptom 5: fork while another thread waits on a stalled zygote; the children must exit (atexit)."""
    a, b = (f"/run/netns/{make_netns()}" for _ in range(2))
    code = textwrap.dedent(
        f"""
        import json, os, signal, sys, threading, time
        import psutil, nsworkers

        a, b = {a!r}, {b!r}
        pool = nsworkers.Pool()
        worker = pool.run(a, os.getpid)
        zygote = psutil.Process(worker).ppid()
        os.kill(zygote, signal.SIGSTOP)
        got = {{}}
        caller = threading.Thread(target=lambda: got.setdefault("b", pool.run(b, os.readlink, {NET!r})))
        caller.start()
        time.sleep(1)  # the thread is now inside its cold call, waiting on the stopped zygote
        blocked = caller.is_alive()
        children = []
        for _ in range(3):
            pid = os.fork()
            if pid == 0:
                sys.exit(0)  # a normal interpreter exit: atexit handlers run
            children.append(pid)
        hung = []
        deadline = time.monotonic() + 30
        for pid in children:
            while os.waitpid(pid, os.WNOHANG)[0] == 0:
                if time.monotonic() > deadline:
                    hung.append(pid)
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    break
                time.sleep(0.05)
        os.kill(zygote, signal.SIGCONT)
        caller.join()
        pool.shutdown()
        print(json.dumps({{"blocked": blocked, "hung": len(hung), "b": got.get("b")}}))
        """
    )
    done = run_python(code, timeout=100)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["blocked"], "precondition: the cold call was waiting on the zygote when the caller forked"
    assert report["hung"] == 0, f"{report['hung']} of 3 forked children hung at exit"
    assert report["b"] == netns_id(b)


# -- 6. the zygote must not inherit the caller's signal mask ----------------------


@pytest.mark.timeout(60)
def test_6_blocked_sigchld_in_caller_leaves_no_zombies(make_netns: Callable[[], str]) -> None:
    """Symptom 6: a caller that blocks SIGCHLD before making a pool; evicted workers must be reaped."""
    a, b = (f"/run/netns/{make_netns()}" for _ in range(2))
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    try:
        pool = Pool(max_workers=1)  # the zygote starts from this thread, with SIGCHLD blocked
        try:
            for _ in range(10):  # every call evicts the other namespace's worker
                assert pool.run(a, my_netns) == netns_id(a)
                assert pool.run(b, my_netns) == netns_id(b)
            zygote = psutil.Process(worker_pid(pool, b)).ppid()
            assert wait_for(lambda: not zombies_of(zygote)), f"zombies of the zygote: {zombies_of(zygote)}"
        finally:
            pool.shutdown()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


# -- 7. shutdown(wait=True) from a done-callback ------------------------------------


@pytest.mark.timeout(60)
def test_7_shutdown_from_a_done_callback_returns(netns: str) -> None:
    """Symptom 7: ``shutdown(wait=True)`` in a future's done-callback returns (or raises a clear error)."""
    pool = Pool()
    outcome: list[object] = []
    finished = threading.Event()

    def callback(_: object) -> None:
        try:
            pool.shutdown(wait=True)
            outcome.append("returned")
        except BaseException as exc:
            outcome.append(exc)
        finally:
            finished.set()

    try:
        worker = worker_pid(pool, netns)
        with stopped(worker):  # the calls cannot finish before the callback is in place
            future = pool.submit(netns, my_netns)
            queued = pool.submit(netns, my_netns)  # still queued when the callback runs
            future.add_done_callback(callback)
        assert future.result() == netns_id(netns)
        finished.wait()
        # It returns, or raises a clear error (like concurrent.futures' "cannot join current thread").
        assert outcome and (outcome[0] == "returned" or isinstance(outcome[0], RuntimeError)), outcome
        late = queued.exception()  # the call queued behind it still ends, in its namespace or typed
        assert (late is None and queued.result() == netns_id(netns)) or isinstance(late, nsworkers.NsWorkersError)
    finally:
        if finished.is_set():
            pool.shutdown()


# -- 8. a dropped pool is finalized; shutdown joins its threads ---------------------


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _warm_up(target: str) -> None:
    """One pool used and shut down first: whatever nsworkers keeps per process (not per pool) exists already."""
    with Pool() as pool:
        assert pool.submit(target, my_netns).result() == netns_id(target)


@pytest.mark.timeout(60)
def test_8_dropped_pool_is_finalized_with_a_resource_warning(make_netns: Callable[[], str]) -> None:
    """Symptom 8: a Pool dropped without shutdown leaks no fd, thread or process, and warns."""
    targets = [f"/run/netns/{make_netns()}" for _ in range(2)]
    _warm_up(targets[0])
    fds, threads, children = _fds(), set(threading.enumerate()), all_children()

    def use_and_drop() -> None:
        pool = Pool()
        for target in targets:
            assert pool.run(target, my_netns) == netns_id(target)
            assert pool.submit(target, my_netns).result() == netns_id(target)

    def new_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t not in threads]

    with warnings.catch_warnings(record=True) as caught:  # the warning may come from a pool thread
        warnings.simplefilter("always")
        use_and_drop()

        def collected_and_gone() -> bool:
            # Collected at each look: a pool thread may hold the pool for a moment after use_and_drop()
            # (a drain thread woken by submit() after result() made the call itself), and a cycle that
            # survives one collection waits for the next full one.
            gc.collect()
            return not (all_children() - children)

        assert wait_for(collected_and_gone), f"processes left: {all_children() - children}"
        assert wait_for(lambda: not new_threads()), f"threads left: {new_threads()}"
        assert wait_for(lambda: _fds() <= fds), f"fds left: {sorted(_fds() - fds)}"
    assert any(issubclass(w.category, ResourceWarning) for w in caught), [str(w.message) for w in caught]


@pytest.mark.timeout(60)
def test_8_shutdown_joins_the_pools_threads(netns: str) -> None:
    """Symptom 8: when ``shutdown()`` returns, none of the pool's threads (drains, reaper) still runs."""
    _warm_up(netns)
    threads = set(threading.enumerate())
    pool = Pool(idle_timeout=30)
    assert pool.run(netns, my_netns) == netns_id(netns)
    assert pool.submit(netns, my_netns).result() == netns_id(netns)
    pool.shutdown()
    assert [t for t in threading.enumerate() if t not in threads] == []


# -- 9. BaseException while pickling a result ----------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit])
def test_9_result_reduce_raising_base_exception_is_a_serialization_error(
    pool: Pool, netns: str, error: type[BaseException]
) -> None:
    """Symptom 9: a result whose ``__reduce__`` raises KeyboardInterrupt/SystemExit; the worker stays."""
    before = worker_pid(pool, netns)
    with pytest.raises(nsworkers.SerializationError):
        pool.run(netns, unpicklable_result, error)
    assert worker_pid(pool, netns) == before


# -- 10. EMFILE is named, and the pool stays in step ----------------------------------


@pytest.mark.timeout(120)
def test_10_fd_limit_gives_a_typed_error_naming_emfile(make_netns: Callable[[], str]) -> None:
    """Symptom 10: at the caller's RLIMIT_NOFILE a cold call fails with the cause named, or works."""
    targets = [f"/run/netns/{make_netns()}" for _ in range(6)]
    code = textwrap.dedent(
        f"""
        import json, os, resource
        import nsworkers

        targets = {targets!r}
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        pool = nsworkers.Pool()
        pool.run(targets[0], os.readlink, {NET!r})  # zygote started
        filler = []
        outcomes = []
        def fill():
            while True:
                try:
                    filler.append(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC))
                except OSError:
                    return

        for free, target in enumerate(targets[1:5]):  # 0, 1, 2, 3 fds left free, each a cold call
            fill()
            for _ in range(free):
                os.close(filler.pop())
            try:
                outcomes.append(["ok", pool.run(target, os.readlink, {NET!r})])
            except nsworkers.NsWorkersError as exc:
                outcomes.append(["typed", type(exc).__name__, str(exc)])
            except Exception as exc:
                outcomes.append(["untyped", type(exc).__name__, str(exc)])
        for fd in filler:
            os.close(fd)
        after = [pool.run(target, os.readlink, {NET!r}) for target in targets]
        pool.shutdown()
        print(json.dumps({{"outcomes": outcomes, "after": after}}))
        """
    )
    done = run_python(code, timeout=100)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for (kind, *detail), target in zip(report["outcomes"], targets[1:5], strict=True):
        if kind == "ok":
            assert detail[0] == netns_id(target)
        else:
            assert kind == "typed", detail
            assert "EMFILE" in detail[1] or "Too many open files" in detail[1], detail
    assert report["after"] == [netns_id(t) for t in targets]


# -- 11. a target is opened without side effects -------------------------------------

IN_OPEN = 0x20  # linux/inotify.h
RENAME_EXCHANGE = 2  # linux/fs.h
SWAPPER = """
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
a, b = sys.argv[1].encode(), sys.argv[2].encode()
print("ready", flush=True)
while True:
    libc.renameat2(-100, a, -100, b, 2)
"""


def fifo_opens(watch: int) -> int:
    """How many IN_OPEN events *watch* queued since the last look."""
    try:
        events = os.read(watch, 1 << 16)
    except BlockingIOError:
        return 0
    return len(events) // 16  # struct inotify_event, no name: a watch on the file itself


@pytest.mark.timeout(120)
def test_11_fifo_swapped_in_between_check_and_open_is_never_opened(
    make_netns: Callable[[], str], tmp_path: Path
) -> None:
    """Symptom 11: another process swaps a FIFO with a namespace path in a loop; nsworkers must never open it.

    The FIFO is watched with inotify (IN_OPEN): any open for I/O of it, by
    anyone, is an event (O_PATH opens are not, since Linux 6.5). The swap is
    ``renameat2(RENAME_EXCHANGE)`` in a separate process, so it races truly in
    parallel with the check and the open.
    """
    a, b = (f"/run/netns/{make_netns()}" for _ in range(2))
    target, other = tmp_path / "target", tmp_path / "other"
    target.symlink_to(b)
    os.mkfifo(other)
    libc = ctypes.CDLL(None, use_errno=True)
    watch = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    assert watch >= 0
    swapper = None
    try:
        assert libc.inotify_add_watch(watch, bytes(other), IN_OPEN) >= 0
        swapper = subprocess.Popen(
            [sys.executable, "-c", SWAPPER, str(target), str(other)], stdout=subprocess.PIPE, text=True
        )
        assert swapper.stdout is not None and swapper.stdout.readline().strip() == "ready"
        outcomes = {"opened": 0, "typed": 0}
        opens = 0
        for attempt in range(30000):
            try:
                Namespace.open(target).close()
                outcomes["opened"] += 1
            except nsworkers.NsWorkersError:
                outcomes["typed"] += 1
            if attempt % 1000 == 999 and (opens := fifo_opens(watch)):
                break
        with Pool(max_workers=1) as pool:  # every call to target is cold: it evicts a's worker
            for _ in range(50):
                assert pool.run(a, my_netns) == netns_id(a)
                try:
                    assert pool.run(target, my_netns) == netns_id(b)
                except nsworkers.NsWorkersError:
                    pass
        opens += fifo_opens(watch)
        assert opens == 0, f"the FIFO swapped in for a namespace was opened {opens} times ({outcomes})"
        assert outcomes["opened"], outcomes
    finally:
        if swapper is not None:
            swapper.kill()
            swapper.wait()
            if swapper.stdout is not None:
                swapper.stdout.close()
        os.close(watch)


# -- 12. every namespace type stays as joined ------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("flag", "kind"), [(CLONE_NEWUTS, "uts"), (CLONE_NEWNS, "mnt")])
def test_12_unshare_of_another_type_cannot_move_the_worker(pool: Pool, netns: str, flag: int, kind: str) -> None:
    """Symptom 12: a callable unshares a uts/mnt namespace in a net-target worker.

    Either the change is impossible (the worker's seccomp filter: EPERM) or it
    is seen after the call (WorkerStateError, worker discarded); never a later
    call in the new namespace.
    """
    home = ns_link(kind)
    assert pool.run(netns, ns_link, kind) == home
    worker = pool.run(netns, getpid)
    with pytest.raises((PermissionError, nsworkers.WorkerStateError)) as raised:
        pool.run(netns, unshare, flag)
    if isinstance(raised.value, PermissionError):
        assert pool.run(netns, getpid) == worker  # refused: the worker never moved, so it stays
    assert pool.run(netns, ns_link, kind) == home
    assert pool.run(netns, my_netns) == netns_id(netns)


# -- 13. socket() retries a worker that died while idle --------------------------------


@pytest.mark.timeout(60)
def test_13_socket_after_idle_worker_death_is_transparent(pool: Pool, netns: str) -> None:
    """Symptom 13: ``pool.socket()`` after its worker was killed while idle works like ``run()``."""
    worker = worker_pid(pool, netns)
    os.kill(worker, signal.SIGKILL)
    assert wait_for(lambda: dead(worker))
    with pool.socket(netns) as sock:
        ns_fd = fcntl.ioctl(sock.fileno(), SIOCGSKNS)
        try:
            assert os.fstat(ns_fd).st_ino == os.stat(netns).st_ino
        finally:
            os.close(ns_fd)


# -- stress: request/reply pairing under random interruptions -------------------------


def _stall(pid: int, after: float, length: float) -> None:
    """Runs in a helper thread: stop *pid* after *after* seconds for *length* seconds."""
    time.sleep(after)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(length)
        finally:
            os.kill(pid, signal.SIGCONT)


@pytest.mark.timeout(300)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_stress_pairing_under_random_interrupts(make_netns: Callable[[], str], interrupts: None) -> None:
    """Signals raise in the caller, and the zygote or a worker stalls, at random points; no call may run elsewhere.

    Three namespaces and room for two workers, so cold calls (spawn through the
    zygote, LRU eviction) and warm calls alternate. Each call has a short
    timeout and ends with the right namespace, our :class:`Interrupted`, or a
    typed nsworkers error (a timeout, mostly); once the faults stop, every
    namespace answers for itself. Seeded: a failure replays.
    """
    targets = [f"/run/netns/{make_netns()}" for _ in range(3)]
    expected = {t: netns_id(t) for t in targets}
    rng = random.Random(12)
    outcomes = {"ok": 0, "interrupted": 0, "typed": 0}
    main = threading.main_thread().ident or 0
    pool = Pool(max_workers=2)
    quick = pool.options(timeout=0.25)
    try:
        for target in targets:  # the zygote is up: faults hit calls, not its start-up
            assert pool.run(target, my_netns) == expected[target]
        for _ in range(200):
            target = rng.choice(targets)
            fault = rng.choice(("signal", "signal", "stall-zygote", "stall-worker"))
            helper: threading.Thread | None = None
            if fault == "signal":
                delay = rng.uniform(0, rng.choice((0.0005, 0.005, 0.05)))  # inside warm calls, cold calls, both
                helper = threading.Timer(delay, signal.pthread_kill, (main, signal.SIGUSR1))
            else:
                live = [w.pid for w in pool.workers(memory=False)]
                if live:
                    victim = rng.choice(live)
                    with contextlib.suppress(psutil.NoSuchProcess):
                        if fault == "stall-zygote":
                            victim = psutil.Process(victim).ppid()
                        args = (victim, rng.uniform(0, 0.005), rng.uniform(0, 0.3))
                        helper = threading.Thread(target=_stall, args=args)
            try:
                try:
                    if helper is not None:
                        helper.start()
                    got = quick.run(target, my_netns)
                    assert got == expected[target], f"a call for {target} ran in {got}"
                    outcomes["ok"] += 1
                finally:
                    if isinstance(helper, threading.Timer):
                        helper.cancel()
                    if helper is not None and helper.ident is not None:
                        helper.join()
                    time.sleep(0)  # a signal sent just before join lands here, still inside the try
            except Interrupted:
                outcomes["interrupted"] += 1
            except nsworkers.NsWorkersError:
                outcomes["typed"] += 1
        for target in targets * 2:
            assert pool.options(timeout=30).run(target, my_netns) == expected[target]
    finally:
        pool.shutdown()
    assert outcomes["interrupted"] and outcomes["ok"], outcomes

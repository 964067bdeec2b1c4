"""Pool: calls run in the target namespace, fail in typed ways, and never move the caller."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import gc
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

import nsworkers
from nsworkers import Namespace, Pool, _calls

from ._in_worker import (
    interfaces,
    my_netns,
    pid,
    rendezvous_pid,
    sleep_then,
    wait_for_file,
)
from .conftest import dead, ip, run_python, thread_netns, wait_for

pytestmark = pytest.mark.privileged


class Unpicklable(Exception):
    def __init__(self, a: int, b: int) -> None:  # pickle rebuilds it with one arg: fails
        super().__init__(f"{a}-{b}")


def raise_unpicklable() -> None:
    raise Unpicklable(1, 2)


def test_callable_runs_in_the_namespace(pool: Pool, netns: str) -> None:
    name = os.path.basename(netns)
    ip("link", "add", f"{name[-6:]}a", "netns", name, "type", "veth", "peer", "name", f"{name[-6:]}b", "netns", name)
    with Namespace.open(netns) as ns:
        assert pool.run(netns, my_netns) == ns.unique_id
    assert pool.run(netns, interfaces) == sorted(["lo", f"{name[-6:]}a", f"{name[-6:]}b"])
    assert my_netns() != pool.run(netns, my_netns)


def test_args_and_kwargs_are_forwarded_unchanged(pool: Pool, netns: str) -> None:
    def echo(*args: object, **kwargs: object) -> tuple[object, ...]:
        return args, kwargs

    got = pool.run(netns, echo, 1, "x", timeout=5, target="t", fn="f")
    assert got == ((1, "x"), {"timeout": 5, "target": "t", "fn": "f"})
    assert pool.options(timeout=10).run(netns, echo, timeout=1) == ((), {"timeout": 1})


def test_lambdas_closures_and_nested_functions(pool: Pool, netns: str) -> None:
    base = 40

    def closure(x: int) -> int:
        return base + x

    assert pool.run(netns, lambda: base + 1) == 41
    assert pool.run(netns, closure, 2) == 42
    assert pool.run(netns, lambda: lambda y: y * 2)(21) == 42  # a lambda as the result


def test_main_module_functions(netns: str) -> None:
    code = f"""
import nsworkers
HELLO = "hi"
def helper(x):
    return HELLO + x
def main_fn(x):
    return helper(x)
class Point:
    def __init__(self, x): self.x = x
class Oops(Exception):
    pass
def fail():
    raise Oops("no")
def make_point(x):
    return Point(x)
with nsworkers.Pool() as pool:
    print(pool.run({netns!r}, main_fn, "!"))
    print(pool.run({netns!r}, lambda p: p.x, Point(7)))
    # What comes back names the caller's own classes: catchable, isinstance-able.
    try:
        pool.run({netns!r}, fail)
    except Oops as exc:
        print("caught", exc)
    print(isinstance(pool.run({netns!r}, make_point, 1), Point))
    print(type(pool.run({netns!r}, lambda p: p, Point(2))) is Point)
    # sent once, then by number; a change to what it uses is sent again
    print(*(pool.run({netns!r}, main_fn, "?") for _ in range(3)))
    HELLO = "ho"
    print(pool.run({netns!r}, main_fn, "?"), pool.run({netns!r}, main_fn, "?"))
    def helper(x):
        return x * 2
    print(pool.run({netns!r}, main_fn, "?"))
    def main_fn(x):
        return "new" + x
    print(pool.run({netns!r}, main_fn, "?"))
"""
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        *("hi!", "7", "caught", "no", "True", "True"),
        *("hi?", "hi?", "hi?", "ho?", "ho?", "??", "new?"),
    ]


def test_recursive_functions_of_main_and_closures_can_be_sent(netns: str) -> None:
    # Broke: dill's walk for the globals a function uses (recurse=True) never ended on a
    # function that calls itself from a closure, or two that call each other: each such
    # call failed with SerializationError (RecursionError) in the caller.
    code = f"""
import nsworkers
LIMIT = 1
def is_even(n):
    return True if n < LIMIT else is_odd(n - 1)
def is_odd(n):
    return False if n < LIMIT else is_even(n - 1)
def make():
    def factorial(n):
        return LIMIT if n <= 1 else n * factorial(n - 1)
    return factorial
with nsworkers.Pool() as pool:
    print(*(pool.run({netns!r}, is_even, 10) for _ in range(3)))
    print(*(pool.run({netns!r}, make(), 5) for _ in range(2)))
    LIMIT = 2  # a global both read: sent again
    print(pool.run({netns!r}, is_even, 10), pool.run({netns!r}, make(), 5))
"""
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True", "True", "120", "120", "False", "240"]


def keywords(**kwargs: int) -> dict[str, int]:
    return kwargs


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> int:
        return self.n


SHARED: list[int] = [1]


def replace_pid_in_worker() -> None:
    globals()["pid"] = lambda: -1  # rebinds this module's ``pid`` inside the worker only


@pytest.mark.parametrize(
    ("fn", "numbered"),
    [
        (pid, True),
        (os.getpid, True),
        (int, True),
        (Counter, True),
        (lambda: 1, True),  # by value, from its second call
        (lambda: [], True),  # a list display is fine: it is made per call
        (lambda: SHARED.copy(), False),  # noqa: PLW0108 -- reads a list that can change unseen
        (Counter(), False),
        ([1].copy, False),
        (functools.partial(keywords, a=1), False),
        (Counter().__call__, False),
    ],
    ids=[
        "function",
        "builtin",
        "type",
        "class",
        "lambda",
        "lambda-list",
        "lambda-reads-list",
        "instance",
        "bound-builtin",
        "partial",
        "method",
    ],
)
def test_which_callables_are_named_by_number(fn: Callable[..., object], numbered: bool) -> None:
    _calls.index_of(fn)  # code sent by value is numbered from its second call
    assert (_calls.index_of(fn) is not None) is numbered


def test_a_recursive_function_sent_by_value_is_not_kept_alive_by_its_numbering(pool: Pool, netns: str) -> None:
    # Broke: the snapshot kept what the function carries by identity, the function itself
    # among it (its closure names it), so its weak key never died: each such function leaked.
    def make() -> Callable[[int], int]:
        def factorial(n: int) -> int:
            return 1 if n <= 1 else n * factorial(n - 1)

        return factorial

    factorial = make()
    assert [pool.run(netns, factorial, 5) for _ in range(3)] == [120, 120, 120]
    assert _calls.index_of(factorial) is not None  # numbered, and sent by number
    gone = weakref.ref(factorial)
    del factorial
    gc.collect()
    assert gone() is None


SCALE = 2
scaled = lambda x: x * SCALE  # noqa: E731 -- a lambda goes by value, with the globals it reads


def offset(x: int) -> int:
    return x + 100


add_offset = lambda x: offset(x) * SCALE  # noqa: E731


def test_code_sent_by_value_goes_once_and_is_never_stale(pool: Pool, netns: str) -> None:
    global SCALE, offset
    assert [pool.run(netns, scaled, 3) for _ in range(3)] == [6, 6, 6]
    index = _calls.index_of(scaled)
    (worker,) = pool._sched.workers()
    assert index is not None and index in worker.conn.known
    assert len(_calls.Call(scaled, (3,), {}).payload) < 40  # the number, not the code
    try:
        SCALE = 5  # a global it reads, rebound
        assert pool.run(netns, scaled, 3) == 15
        assert pool.run(netns, scaled, 3) == 15
        scaled.__code__ = (lambda x: x - SCALE).__code__  # its code, replaced
        assert pool.run(netns, scaled, 3) == -2
        assert [pool.run(netns, add_offset, 1) for _ in range(2)] == [505, 505]
        offset = lambda x: x + 200  # noqa: E731 -- a function it calls, rebound
        assert pool.run(netns, add_offset, 1) == 1005
    finally:
        SCALE = 2
        scaled.__code__ = (lambda x: x * SCALE).__code__
        offset = globals()["_offset"]


_offset = offset


def test_code_changed_while_it_is_pickled_goes_without_its_number() -> None:
    global SCALE
    _calls.index_of(scaled)
    call = _calls.Call(scaled, (3,), {})
    assert call.index is not None
    try:
        SCALE = 9  # rebound by another thread between the call's numbering and its pickling
        codec, payload = call.registration()
        assert call.index is None and (codec, payload) == (call.codec, call.payload)
        assert _calls.m.loads(codec, payload)[3] is None  # the worker is not asked to keep it
    finally:
        SCALE = 2


def test_defaults_and_closures_sent_by_value_are_never_stale(pool: Pool, netns: str) -> None:
    def make() -> tuple[Callable[[], int], Callable[[int], None]]:
        value = 1

        def get(bonus: int = 0) -> int:
            return value + bonus

        def set_(new: int) -> None:
            nonlocal value
            value = new

        return get, set_

    get, set_ = make()
    assert [pool.run(netns, get) for _ in range(3)] == [1, 1, 1]
    set_(7)  # the closure cell, rebound
    assert pool.run(netns, get) == 7
    get.__defaults__ = (10,)
    assert pool.run(netns, get) == 17
    SHARED.append(2)
    try:
        reads_shared = lambda: len(SHARED)  # noqa: E731
        assert [pool.run(netns, reads_shared) for _ in range(2)] == [2, 2]
        SHARED.append(3)  # mutated in place: such a function is never numbered, so never stale
        assert pool.run(netns, reads_shared) == 3
        assert _calls.index_of(reads_shared) is None
    finally:
        del SHARED[1:]


def test_code_made_per_call_or_always_changing_is_not_numbered(pool: Pool, netns: str) -> None:
    global SCALE
    before = _calls._next_index
    made: list[Callable[[], int]] = [lambda i=i: i for i in range(20)]  # type: ignore[misc]
    assert [pool.run(netns, fn) for fn in made] == list(range(20))  # a new function each time
    assert _calls._next_index == before
    try:
        for i in range(_calls._MAX_CHANGES + 3):
            SCALE = 10 + i
            assert [pool.run(netns, scaled, 1) for _ in range(2)] == [SCALE, SCALE]
        assert _calls.index_of(scaled) is None  # it changes every time: sent whole from now on
        assert _calls._next_index <= before + _calls._MAX_CHANGES + 1
    finally:
        SCALE = 2


def test_repeated_calls_name_the_function_by_number(pool: Pool, netns: str) -> None:
    first = pool.run(netns, pid)
    (worker,) = pool._sched.workers()
    assert _calls.index_of(pid) in worker.conn.known
    pool.run(netns, replace_pid_in_worker)
    # The worker kept the function object it loaded first: rebinding the name there changes nothing.
    assert pool.run(netns, pid) == first


def test_stateful_callables_are_sent_whole_every_time(pool: Pool, netns: str) -> None:
    items = [1]
    assert pool.run(netns, items.copy) == [1]
    items.append(2)
    assert pool.run(netns, items.copy) == [1, 2]
    part = functools.partial(keywords, a=1)
    assert pool.run(netns, part) == {"a": 1}
    part.keywords["a"] = 2
    assert pool.run(netns, part) == {"a": 2}
    counter = Counter()
    assert pool.run(netns, counter) == 0
    counter.n = 5
    assert pool.run(netns, counter) == 5
    assert pool.run(netns, counter.__call__) == 5


def test_one_worker_per_namespace_identity(pool: Pool, netns: str) -> None:
    name = os.path.basename(netns)
    with Namespace.from_name(name) as ns:
        pids = {pool.run(netns, pid), pool.run(ns, pid), pool.run([ns], pid), pool.run(f"/var/run/netns/{name}", pid)}
    assert len(pids) == 1
    assert len(pool.workers()) == 1


def test_recreated_name_gets_a_new_worker(pool: Pool, netns: str) -> None:
    name = os.path.basename(netns)
    first_ns, first_pid = pool.run(netns, lambda: (my_netns(), os.getpid()))
    ip("netns", "del", name)
    ip("netns", "add", name)
    second_ns, second_pid = pool.run(netns, lambda: (my_netns(), os.getpid()))
    assert first_ns != second_ns
    assert first_pid != second_pid


def test_exception_keeps_its_type_and_remote_traceback(pool: Pool, netns: str) -> None:
    def fail() -> None:
        raise KeyError("missing")

    with pytest.raises(KeyError) as info:
        pool.run(netns, fail)
    cause = info.value.__cause__
    assert isinstance(cause, nsworkers.RemoteTraceback)
    assert "fail" in cause.tb and "KeyError" in cause.tb
    assert pool.run(netns, lambda: 1) == 1


def test_unpicklable_exception_becomes_remote_error(pool: Pool, netns: str) -> None:
    with pytest.raises(nsworkers.RemoteError) as info:
        pool.run(netns, raise_unpicklable)
    assert info.value.type_name.endswith("Unpicklable")
    assert "1-2" in info.value.message
    assert "raise_unpicklable" in info.value.remote_traceback


@pytest.mark.parametrize(
    ("kill", "expect"),
    [
        (lambda: os._exit(3), "exited with code 3"),
        (lambda: os.kill(os.getpid(), signal.SIGKILL), "SIGKILL"),
        (lambda: ctypes.string_at(0), "SIGSEGV"),
    ],
    ids=["exit", "sigkill", "segfault"],
)
def test_crash_fails_only_that_call(
    pool: Pool, make_netns: Callable[[], str], kill: Callable[[], None], expect: str
) -> None:
    victim, bystander = f"/run/netns/{make_netns()}", f"/run/netns/{make_netns()}"
    before = pool.run(victim, pid)
    slow = pool.submit(bystander, sleep_then, 0.5, "fine")
    with pytest.raises(nsworkers.WorkerCrashedError) as info:
        pool.run(victim, kill)
    assert expect in str(info.value)
    assert str(before) in str(info.value)
    assert slow.result(timeout=10) == "fine"
    after = pool.run(victim, pid)
    assert after != before
    assert dead(before)


def test_timeout_kills_and_replaces_the_worker(pool: Pool, netns: str, tmp_path: Path) -> None:
    before = pool.run(netns, pid)
    start = time.monotonic()
    with pytest.raises(nsworkers.WorkerTimeoutError) as info:
        pool.options(timeout=0.3).run(netns, wait_for_file, str(tmp_path / "never"), "x")
    assert isinstance(info.value, TimeoutError)
    assert time.monotonic() - start >= 0.3  # never early; how late is measured in bench/ (timeouts)
    assert wait_for(lambda: not psutil.pid_exists(before))
    assert pool.run(netns, pid) != before


def test_pool_default_timeout(netns: str) -> None:
    with Pool(timeout=0.2) as pool, pytest.raises(TimeoutError):
        pool.run(netns, time.sleep, 10)


def _spares(pool: Pool) -> list[psutil.Process]:
    zygote = pool._spawner.zygote_pid  # type: ignore[attr-defined]
    spares = []
    for child in psutil.Process(zygote).children():
        with contextlib.suppress(psutil.NoSuchProcess):  # gone since the listing (a trial child, a worker)
            if child.name() == "nsw-spare":
                spares.append(child)
    return spares


def test_a_spare_worker_takes_the_next_namespace(pool: Pool, make_netns: Callable[[], str]) -> None:
    first, second = f"/run/netns/{make_netns()}", f"/run/netns/{make_netns()}"
    # A builtin: no module for the zygote to learn, which would replace the spare it has (CI under churn
    # once caught that: the zygote learned what this module's first call imported, after the spare was seen).
    pool.run(first, os.getpid)
    assert wait_for(lambda: len(_spares(pool)) == 1)
    (spare,) = _spares(pool)
    # Forked ahead, it is in no target namespace yet and holds only stdio and its socket.
    assert os.readlink(f"/proc/{spare.pid}/ns/net") == my_netns()
    assert len(os.listdir(f"/proc/{spare.pid}/fd")) == 4
    assert pool.run(second, os.getpid) == spare.pid
    with Namespace.open(second) as ns:
        assert pool.run(second, my_netns) == ns.unique_id
    assert psutil.Process(spare.pid).name() == "nsw-worker"
    assert wait_for(lambda: len(_spares(pool)) == 1 and _spares(pool)[0].pid != spare.pid)


def test_a_dead_spare_is_skipped(pool: Pool, make_netns: Callable[[], str]) -> None:
    first, second = f"/run/netns/{make_netns()}", f"/run/netns/{make_netns()}"
    pool.run(first, os.getpid)
    assert wait_for(lambda: len(_spares(pool)) == 1)
    (spare,) = _spares(pool)
    spare.kill()
    spare.wait(5)
    worker = pool.run(second, os.getpid)
    assert worker != spare.pid
    with Namespace.open(second) as ns:
        assert pool.run(second, my_netns) == ns.unique_id


def test_no_spares(netns: str) -> None:
    with Pool(spare_workers=0) as pool:
        pool.run(netns, pid)
        # the zygote refills spares between requests: once a second request is answered, a refill
        # after the first one would have happened
        pool.run("/proc/self/ns/uts", pid)
        assert _spares(pool) == []
        assert pool.run(netns, pid) == pool.run(netns, pid)


@pytest.mark.parametrize("bad", [-1, 65, True, 1.5])
def test_invalid_spare_workers(bad: object) -> None:
    with pytest.raises(ValueError, match="spare_workers"):
        Pool(spare_workers=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, -1, True, "1"])
def test_invalid_timeouts(bad: object) -> None:
    with pytest.raises(ValueError):
        Pool(timeout=bad)  # type: ignore[arg-type]
    with Pool() as pool, pytest.raises(ValueError):
        pool.options(timeout=bad)  # type: ignore[arg-type]


def test_unserializable_argument_and_result(pool: Pool, netns: str) -> None:
    before = pool.run(netns, pid)
    with pytest.raises(nsworkers.SerializationError):
        pool.run(netns, id, threading.Lock())
    with pytest.raises(nsworkers.SerializationError):
        pool.run(netns, lambda: (i for i in range(3)))
    with pytest.raises(nsworkers.SerializationError):
        pool.run(netns, open, "/proc/self/status")
    assert pool.run(netns, pid) == before


def test_bad_targets_spawn_nothing(pool: Pool, tmp_path: object) -> None:
    cases: list[tuple[object, type[Exception]]] = [
        ("/run/netns/nsw-missing", nsworkers.NamespaceNotFoundError),
        ("/proc/self/status", nsworkers.NotANamespaceError),
        ("/proc", nsworkers.NotANamespaceError),
        (None, nsworkers.InvalidTargetError),
        (42, nsworkers.InvalidTargetError),
        (b"/proc/self/ns/net", nsworkers.InvalidTargetError),
        (["/proc/self/ns/net"], nsworkers.InvalidTargetError),
        ([], nsworkers.InvalidTargetError),
    ]
    for target, error in cases:
        with pytest.raises(error):
            pool.run(target, pid)  # type: ignore[arg-type]
        with pytest.raises(error):
            pool.submit(target, pid)  # type: ignore[arg-type]
    ns = Namespace.current()
    ns.close()
    with pytest.raises(nsworkers.NamespaceClosedError):
        pool.run(ns, pid)
    with pytest.raises(TypeError):
        pool.run("/proc/self/ns/net", 42)  # type: ignore[arg-type]
    assert pool.workers() == []


def test_submit_map_and_arun(pool: Pool, make_netns: Callable[[], str]) -> None:
    paths = [f"/run/netns/{make_netns()}" for _ in range(4)]
    futures = [pool.submit(p, my_netns) for p in paths]
    expected = {p: pool.run(p, my_netns) for p in paths}
    assert [f.result(timeout=10) for f in futures] == [expected[p] for p in paths]
    assert dict(pool.map(my_netns, paths)) == expected
    assert dict(pool.map(lambda x: x * 2, paths, args=(21,))) == dict.fromkeys(paths, 42)

    async def gather() -> list[str]:
        return await asyncio.gather(*(pool.arun(p, my_netns) for p in paths))

    assert asyncio.run(gather()) == [expected[p] for p in paths]


def test_map_errors(pool: Pool, netns: str) -> None:
    targets = [netns, "/nonexistent/ns", netns]
    results = list(pool.map(pid, targets, return_exceptions=True))
    assert len(results) == 3
    assert sum(isinstance(r, nsworkers.NamespaceNotFoundError) for _, r in results) == 1
    with pytest.raises(nsworkers.NamespaceNotFoundError):
        list(pool.map(pid, targets))


def test_cancel_before_run(pool: Pool, netns: str, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    blocker = pool.submit(netns, wait_for_file, str(gate), "done")
    queued = pool.submit(netns, pid)
    assert queued.cancel()
    gate.touch()
    assert blocker.result(timeout=60) == "done"
    assert queued.cancelled()


def test_max_workers_evicts_least_recently_used(make_netns: Callable[[], str]) -> None:
    a, b, c = (f"/run/netns/{make_netns()}" for _ in range(3))
    with Pool(max_workers=2) as pool:
        pa, pb = pool.run(a, pid), pool.run(b, pid)
        pool.run(a, pid)  # b is now the least recently used
        pool.run(c, pid)
        assert len(pool.workers()) == 2
        assert wait_for(lambda: not psutil.pid_exists(pb))
        assert pool.run(a, pid) == pa


def test_a_full_pool_wakes_the_caller_that_can_use_a_freed_worker(
    make_netns: Callable[[], str], tmp_path: Path
) -> None:
    # T's worker is busy until the test opens a gate, with a second caller waiting for it; S's
    # worker is busy briefly; U's caller is starved (the pool is full). When S's call ends, U's
    # caller must be the one woken (it can evict S's idle worker), not T's, which could do nothing.
    t, s_, u = (f"/run/netns/{make_netns()}" for _ in range(3))
    gate = tmp_path / "gate"
    results: list[str] = []
    with Pool(max_workers=2) as pool:
        first = threading.Thread(target=lambda: results.append(pool.run(t, wait_for_file, str(gate), "t")))
        first.start()
        assert wait_for(lambda: len(pool.workers(memory=False)) == 1)
        second = threading.Thread(target=lambda: results.append(pool.run(t, sleep_then, 0, "t2")))
        second.start()
        assert wait_for(lambda: len(pool._sched._waiting) == 1)
        short_s = pool.submit(s_, sleep_then, 0.2, "s")
        assert wait_for(lambda: len(pool.workers(memory=False)) == 2)
        try:
            assert pool.submit(u, sleep_then, 0, "u").result(timeout=60) == "u"
            assert first.is_alive()  # U was served while T's call still held its worker
        finally:
            gate.touch()
        first.join(10)
        second.join(10)
        assert short_s.result(timeout=10) == "s"
        assert results == ["t", "t2"]


def test_idle_timeout(netns: str) -> None:
    with Pool(idle_timeout=0.2) as pool:
        first = pool.run(netns, pid)
        assert wait_for(lambda: not pool.workers(memory=False), timeout=5)
        assert wait_for(lambda: not psutil.pid_exists(first))
        assert pool.run(netns, pid) != first


def test_max_tasks_per_worker(netns: str) -> None:
    with Pool(max_tasks_per_worker=2) as pool:
        pids = [pool.run(netns, pid) for _ in range(5)]
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]


def test_workers_per_namespace_runs_in_parallel(netns: str, tmp_path: Path) -> None:
    with Pool(workers_per_namespace=3) as pool:
        # each call returns only when all three are running at once
        futures = [pool.submit(netns, rendezvous_pid, str(tmp_path), 3) for _ in range(3)]
        pids = {f.result(timeout=120) for f in futures}
        assert len(pids) == 3
        assert len(pool.workers()) == 3


def test_workers_report(pool: Pool, netns: str) -> None:
    worker_pid = pool.run(netns, pid)
    (info,) = pool.workers()
    assert info.pid == worker_pid
    assert info.namespace == netns
    assert info.state == "idle"
    assert info.calls == 1
    assert info.rss and info.uss and info.uss <= info.rss


def test_worker_process_hygiene(pool: Pool, netns: str) -> None:
    worker_pid = pool.run(netns, pid)
    proc = psutil.Process(worker_pid)
    assert proc.name() == "nsw-worker"
    assert psutil.Process(proc.ppid()).name() == "nsw-zygote"
    fds = os.listdir(f"/proc/{worker_pid}/fd")
    # stdin/out/err and the two channel pipes: nothing to check per call (a seccomp filter holds it)
    assert len(fds) == 5, [os.readlink(f"/proc/{worker_pid}/fd/{fd}") for fd in fds]
    with open(f"/proc/{worker_pid}/status") as f:
        status = dict(line.split(":", 1) for line in f)
    assert status["Seccomp"].strip() == "2"  # SECCOMP_MODE_FILTER
    assert int(status["NSpgid"].split()[-1]) == worker_pid  # leads its own process group
    assert int(status["SigIgn"], 16) & (1 << (signal.SIGINT - 1))
    assert len(proc.threads()) == 1


def test_callable_that_moves_the_worker(pool: Pool, netns: str) -> None:
    # A worker's seccomp filter makes setns() fail (EPERM): the worker stays where it is.
    # Where no filter can be installed, the move is seen after the call: WorkerStateError.
    def escape() -> None:
        fd = os.open(f"/proc/{os.getppid()}/ns/net", os.O_RDONLY)
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, 0) != 0:
            raise OSError(ctypes.get_errno(), "setns refused")

    before = pool.run(netns, pid)
    with pytest.raises((PermissionError, nsworkers.WorkerStateError)) as raised:
        pool.run(netns, escape)
    if isinstance(raised.value, PermissionError):
        assert pool.run(netns, pid) == before
    else:
        assert pool.run(netns, pid) != before
    assert pool.run(netns, os.readlink, "/proc/self/ns/net") == f"net:[{os.stat(netns).st_ino}]"


def test_callable_that_forks(pool: Pool, netns: str) -> None:
    def fork_and_return() -> int:
        child = os.fork()
        if child:
            os.waitpid(child, 0)
        return os.getpid()

    worker = pool.run(netns, pid)
    assert pool.run(netns, fork_and_return) == worker
    assert pool.run(netns, pid) == worker


def test_shutdown_leaves_nothing(netns: str) -> None:
    fds_before = set(os.listdir("/proc/self/fd"))
    pool = Pool()
    pool.run(netns, pid)
    pool.submit(netns, pid).result()
    names = set()
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):  # a zygote's trial import child, gone meanwhile
            names.add(child.name())
    assert names >= {"nsw-zygote", "nsw-worker", "nsw-spare"}
    pool.shutdown()
    assert wait_for(lambda: not psutil.Process().children(recursive=True))
    assert set(os.listdir("/proc/self/fd")) <= fds_before
    with pytest.raises(nsworkers.PoolClosedError):
        pool.run(netns, pid)
    with pytest.raises(nsworkers.PoolClosedError):
        pool.submit(netns, pid)
    pool.shutdown()  # idempotent


def test_shutdown_waits_for_queued_calls(netns: str) -> None:
    pool = Pool()
    futures = [pool.submit(netns, time.sleep, 0.05) for _ in range(5)]
    pool.shutdown(wait=True)
    assert all(f.done() and f.exception() is None for f in futures)


def test_shutdown_cancel_futures(netns: str) -> None:
    pool = Pool()
    futures = [pool.submit(netns, time.sleep, 0.2) for _ in range(5)]
    pool.shutdown(wait=True, cancel_futures=True)
    assert any(f.cancelled() for f in futures)


def test_many_threads_never_leave_their_namespace(make_netns: Callable[[], str]) -> None:
    paths = [f"/run/netns/{make_netns()}" for _ in range(8)]
    home = os.readlink("/proc/self/ns/net")
    with Pool() as pool:
        expected = {p: pool.run(p, my_netns) for p in paths}
        errors: list[BaseException] = []
        seen: set[str] = set()
        stop = threading.Event()

        def sampler() -> None:
            while not stop.is_set():
                seen.update(thread_netns())

        def caller(i: int) -> None:
            try:
                for j in range(150):
                    p = paths[(i + j) % len(paths)]
                    got = pool.submit(p, my_netns).result() if j % 3 == 0 else pool.run(p, my_netns)
                    assert got == expected[p]
            except BaseException as exc:
                errors.append(exc)

        watcher = threading.Thread(target=sampler)
        watcher.start()
        threads = [threading.Thread(target=caller, args=(i,)) for i in range(64)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        stop.set()
        watcher.join()
    assert not errors, errors[:3]
    assert seen == {home}


def test_caller_killed_takes_zygote_and_workers(netns: str) -> None:
    import subprocess
    import sys

    code = f"""
import os, sys, threading, time, nsworkers
pool = nsworkers.Pool()
t = threading.Thread(target=lambda: pool.run({netns!r}, os.getpid))  # first use from a short-lived thread
t.start(); t.join()
busy = pool.submit({netns!r}, time.sleep, 60)
idle = pool.run("/proc/self/ns/uts", os.getpid)
print(" ".join(str(w.pid) for w in pool.workers()), pool._spawner.zygote_pid, flush=True)
time.sleep(60)
"""
    src = os.path.dirname(os.path.dirname(os.path.abspath(nsworkers.__file__)))
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=src)
    )
    try:
        assert proc.stdout is not None
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 3 and all(psutil.pid_exists(p) for p in pids)
        proc.kill()
        proc.wait()

        def gone() -> bool:
            return all(dead(p) for p in pids)

        assert wait_for(gone, timeout=30)  # PR_SET_PDEATHSIG: how fast is bench's business
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_join_failure_is_typed(netns: str) -> None:
    # Without CAP_SYS_ADMIN the caller may open the namespace file but not setns() into it.
    done = run_python(
        f"""
import nsworkers, os
try:
    nsworkers.Pool().run({netns!r}, os.getpid)
except nsworkers.NamespaceJoinError as exc:
    print("errno", exc.errno)
""",
        no_caps=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "errno 1"


def test_multi_namespace_target(pool: Pool, netns: str) -> None:
    with Namespace.open(netns) as net, Namespace.current("uts") as uts:
        got = pool.run([uts, net], lambda: (my_netns(), os.readlink("/proc/self/ns/uts")))
        assert got == (net.unique_id, uts.unique_id)
        with pytest.raises(nsworkers.NamespaceTypeError):
            pool.run([net, Namespace.current()], pid)


def test_fork_start_method_sees_caller_state(netns: str) -> None:
    marker = {"value": 1}
    with Pool(start_method="fork") as pool:
        marker["value"] = 2
        worker = pool.run(netns, lambda: (marker["value"], os.getppid(), my_netns()))
    assert worker[0] == 2
    assert worker[1] == os.getpid()
    with Namespace.open(netns) as ns:
        assert worker[2] == ns.unique_id


def test_default_pool(netns: str) -> None:
    assert nsworkers.run(netns, lambda: 5) == 5
    nsworkers.default_pool().shutdown()


def test_large_payloads(pool: Pool, netns: str) -> None:
    blob = os.urandom(1 << 20) * 200  # 200 MiB each way
    assert pool.run(netns, len, blob) == len(blob)
    assert len(pool.run(netns, lambda n: b"x" * n, 300 << 20)) == 300 << 20

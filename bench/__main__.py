"""Side-by-side benchmarks: nsworkers against its peers, in one run, as ratios.

    python -m bench                 # every scenario
    python -m bench p1 --reps 7     # one scenario
    python -m bench --json out.json

Needs root (it creates its own namespaces, prefixed ``nswbench-``, and
deletes them). Peers that are not installed (pebble, loky) are skipped and
said so. Each scenario interleaves its contenders repetition by repetition,
so drift on a shared machine hits all of them alike; the table shows medians
and the ratio to the scenario's reference row.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import functools
import json
import os
import pickle
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import nsworkers

from ._calls import noop

PREFIX = f"nswbench-{os.getpid()}-"


def main_noop() -> None:
    return None


# ---------------------------------------------------------------------------
# namespaces


class Namespaces:
    def __init__(self) -> None:
        self.names: list[str] = []

    def make(self, count: int) -> list[str]:
        start = len(self.names)
        for i in range(start, start + count):
            name = f"{PREFIX}{i}"
            subprocess.run(["ip", "netns", "add", name], check=True)
            self.names.append(name)
        return [f"/run/netns/{n}" for n in self.names[start:]]

    def remove(self) -> None:
        for name in self.names:
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
        self.names.clear()


# ---------------------------------------------------------------------------
# P1: no-op round trip


class RawPipe:
    """The floor: a forked child serving pickled calls over two os.pipe()s."""

    def __init__(self, cpu: int | None) -> None:
        r1, self.w = os.pipe()
        self.r, w2 = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover
            os.close(self.w)
            os.close(self.r)
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})
            while True:
                data = os.read(r1, 65536)
                if not data:
                    os._exit(0)
                fn, args, kwargs = pickle.loads(data)
                os.write(w2, pickle.dumps(fn(*args, **kwargs), protocol=5))
        os.close(r1)
        os.close(w2)

    def call(self) -> None:
        os.write(self.w, pickle.dumps((noop, (), {}), protocol=5))
        pickle.loads(os.read(self.r, 65536))

    def close(self) -> None:
        os.close(self.w)
        os.close(self.r)
        os.waitpid(self.pid, 0)


def _executor_contender(make: Callable[[], Any], cpu: int | None) -> tuple[Callable[[], None], Callable[[], None]]:
    ex = make()
    if cpu is not None:
        ex.submit(os.sched_setaffinity, 0, {cpu}).result()
    ex.submit(noop).result()

    def call() -> None:
        ex.submit(noop).result()

    return call, lambda: ex.shutdown(wait=True)


def p1_contenders(path: str, cpu: int | None) -> dict[str, tuple[Callable[[], None], Callable[[], None]]]:
    out: dict[str, tuple[Callable[[], None], Callable[[], None]]] = {}
    raw = RawPipe(cpu)
    out["raw os.pipe + pickle (floor)"] = (raw.call, raw.close)

    pool = nsworkers.Pool()
    if cpu is not None:
        pool.run(path, os.sched_setaffinity, 0, {cpu})
    ns = nsworkers.Namespace.open(path)
    pool.run(ns, noop)
    out["nsworkers pool.run(path)"] = (lambda: pool.run(path, noop), lambda: None)

    def close_pool() -> None:
        ns.close()
        pool.shutdown()

    out["nsworkers pool.run(Namespace)"] = (lambda: pool.run(ns, noop), close_pool)
    out["nsworkers submit().result()"] = (lambda: pool.submit(ns, noop).result(), lambda: None)
    out["nsworkers pool.run(__main__ function)"] = (lambda: pool.run(ns, main_noop), lambda: None)
    executor = pool.executor(ns)
    out["nsworkers pool.executor(ns).submit().result()"] = (lambda: executor.submit(noop).result(), lambda: None)
    # A feature with a cost on every call: the worker's RSS read after each one (the bound is never hit).
    capped = nsworkers.Pool(max_memory_per_worker=1 << 40)
    if cpu is not None:
        capped.run(ns, os.sched_setaffinity, 0, {cpu})
    out["nsworkers run(Namespace), max_memory_per_worker"] = (lambda: capped.run(ns, noop), capped.shutdown)

    out["ProcessPoolExecutor"] = _executor_contender(
        lambda: concurrent.futures.ProcessPoolExecutor(1, mp_context=__import__("multiprocessing").get_context("fork")),
        cpu,
    )
    try:
        import pebble

        class Pebble:  # pebble's submit() takes a timeout before the arguments
            def __init__(self) -> None:
                self.pool = pebble.ProcessPool(1)

            def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
                return self.pool.schedule(fn, args=args)

            def shutdown(self, wait: bool = True) -> None:
                self.pool.close()
                self.pool.join()

        out["pebble ProcessPool"] = _executor_contender(Pebble, cpu)
    except ImportError:
        pass
    try:
        import loky

        out["loky"] = _executor_contender(lambda: loky.get_reusable_executor(1), cpu)
    except ImportError:
        pass
    return out


def bench_p1(spaces: Namespaces, reps: int, calls: int) -> list[dict[str, Any]]:
    (path,) = spaces.make(1)
    rows = []
    original = os.sched_getaffinity(0)
    for mode, caller_cpu, worker_cpu in (("same CPU", 0, 0), ("cross CPU", 0, 1)):
        os.sched_setaffinity(0, {caller_cpu})
        contenders = p1_contenders(path, worker_cpu)
        samples: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(reps):
            for name, (call, _close) in contenders.items():
                start = time.perf_counter()
                for _ in range(calls):
                    call()
                samples[name].append((time.perf_counter() - start) / calls * 1e6)
        for _, close in reversed(contenders.values()):
            close()
        rows += _rows(f"P1 no-op round trip, {mode}", samples, "raw os.pipe + pickle (floor)", "us")
    os.sched_setaffinity(0, original)
    return rows


def _tree_cpu_ns(root: int) -> int:
    """CPU time (ns, from schedstat) of every thread of *root* and of all its descendants."""
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as stat:
                    total += int(stat.read().split()[0])
                with open(f"/proc/{pid}/task/{tid}/children", "rb") as children:
                    stack += [int(child) for child in children.read().split()]
            except (OSError, ValueError, IndexError):
                continue
    return total


def bench_p1_cpu(spaces: Namespaces, reps: int, calls: int) -> list[dict[str, Any]]:
    """P1c: CPU time per round trip, summed over the caller and every process under it (workers included).

    What the call path costs in work, not in waiting: far less sensitive to
    other load on the machine than P1's wall-clock times (a busy neighbour
    delays a wake-up, it does not add instructions), so it is the figure to
    compare on a shared host. Caller and workers on one CPU.
    """
    (path,) = spaces.make(1)
    original = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})
    contenders = p1_contenders(path, 0)
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    me = os.getpid()
    for _ in range(reps):
        for name, (call, _close) in contenders.items():
            for _ in range(100):
                call()
            before = _tree_cpu_ns(me)
            for _ in range(calls):
                call()
            samples[name].append((_tree_cpu_ns(me) - before) / calls / 1e3)
    for _, close in reversed(contenders.values()):
        close()
    os.sched_setaffinity(0, original)
    return _rows(
        "P1c CPU time per no-op round trip (caller + workers), same CPU", samples, "raw os.pipe + pickle (floor)", "us"
    )


# ---------------------------------------------------------------------------
# P1t: throughput with many caller threads, submit and map (no pinning)


def _threaded(threads: int, total: int, call: Callable[[int], None]) -> Callable[[], None]:
    """*total* calls spread over *threads* caller threads; call(i) gets the call's index."""
    import threading

    def run() -> None:
        per = total // threads

        def loop(t: int) -> None:
            for i in range(per):
                call(t * per + i)

        workers = [threading.Thread(target=loop, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    return run


def _in_flight(submit: Callable[[int], Any], total: int, window: int) -> Callable[[], None]:
    """*total* calls from one thread, *window* futures in flight at a time."""

    def run() -> None:
        for start in range(0, total, window):
            futures = [submit(i) for i in range(start, start + window)]
            for future in futures:
                future.result()

    return run


def bench_throughput(spaces: Namespaces, reps: int, calls: int) -> list[dict[str, Any]]:
    """Calls per second into two namespaces (one worker each, as many as CPUs here), against executors of 2."""
    paths = spaces.make(2)
    pool = nsworkers.Pool()
    for path in paths:
        pool.run(path, noop)
    mp = __import__("multiprocessing").get_context("fork")
    ppe = concurrent.futures.ProcessPoolExecutor(2, mp_context=mp)
    ppe.submit(noop).result()
    closers: list[Callable[[], None]] = [pool.shutdown, ppe.shutdown]
    contenders: dict[str, Callable[[], None]] = {
        "nsworkers run, 1 thread": _threaded(1, calls, lambda i: pool.run(paths[i & 1], noop)),
        "nsworkers run, 16 threads": _threaded(16, calls, lambda i: pool.run(paths[i & 1], noop)),
        "nsworkers submit, 64 in flight": _in_flight(lambda i: pool.submit(paths[i & 1], noop), calls, 64),
        "nsworkers map, 2 ns x calls/2": lambda: collections.deque(pool.map(noop, paths * (calls // 2)), 0).clear(),
        "ProcessPoolExecutor(2), 16 threads": _threaded(16, calls, lambda i: ppe.submit(noop).result()),
        "ProcessPoolExecutor(2), 64 in flight": _in_flight(lambda i: ppe.submit(noop), calls, 64),
    }
    try:
        import loky

        lk = loky.get_reusable_executor(2)
        lk.submit(noop).result()
        closers.append(lk.shutdown)
        contenders["loky(2), 64 in flight"] = _in_flight(lambda i: lk.submit(noop), calls, 64)
    except ImportError:
        pass
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    try:
        for _ in range(reps):
            for name, run in contenders.items():
                start = time.perf_counter()
                run()
                samples[name].append((time.perf_counter() - start) / calls * 1e6)
    finally:
        for close in closers:
            close()
    return _rows("P1t throughput into 2 namespaces, time per call", samples, "nsworkers run, 1 thread", "us")


# ---------------------------------------------------------------------------
# P2: cold worker start from a small and a large caller

_COLD = """
import os, sys, threading, time, json, statistics
import nsworkers
ballast_mb, threads, method, spares = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
heap, paths = sys.argv[5], sys.argv[6:]
if heap == "objects":  # a realistic large heap: ~1 KB records, each a dict the GC tracks
    ballast = [{"id": i, "data": bytes(1000)} for i in range(ballast_mb * 1000)]
else:
    ballast = bytearray(os.urandom(1 << 20)) * ballast_mb  # one buffer: touched, resident memory
stop = threading.Event()
for _ in range(threads):
    threading.Thread(target=stop.wait, daemon=True).start()
time.sleep(1)  # a caller that holds the memory, not one still faulting it in while we measure
pool = nsworkers.Pool(start_method=method, max_workers=len(paths) + 1, spare_workers=spares)
pool.run(paths[0], int)  # the zygote starts once per pool: not part of a worker's cold start
# Back to back: each cold call takes the spare the zygote forked while the previous one ran.
times = []
for path in paths[1:]:
    start = time.perf_counter()
    pool.run(path, int)
    times.append((time.perf_counter() - start) * 1e3)
pool.shutdown()
print(json.dumps(times))
"""


def bench_p2(spaces: Namespaces, reps: int, count: int) -> list[dict[str, Any]]:
    configs = {
        "zygote, small caller": (0, 0, "zygote", 1, "buffer"),
        "zygote, 500 MB + 50 threads caller": (500, 50, "zygote", 1, "buffer"),
        "zygote, 500k objects + 50 threads caller": (500, 50, "zygote", 1, "objects"),
        "zygote without spares, small caller": (0, 0, "zygote", 0, "buffer"),
        "fork, small caller": (0, 0, "fork", 0, "buffer"),
        "fork, 500 MB + 50 threads caller": (500, 50, "fork", 0, "buffer"),
    }
    samples: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(reps):
        for name, (mb, threads, method, spares, heap) in configs.items():
            paths = spaces.make(count + 1)
            out = subprocess.run(
                [sys.executable, "-c", _COLD, str(mb), str(threads), method, str(spares), heap, *paths],
                capture_output=True,
                text=True,
                check=True,
                env=dict(os.environ, PYTHONWARNINGS="ignore"),
            ).stdout
            samples[name] += json.loads(out)
            spaces.remove()
    return _rows("P2 cold worker: spawn + join + first call", samples, "zygote, small caller", "ms")


# ---------------------------------------------------------------------------
# P3/P4: snapshot of many namespaces (links + addresses + routes)

WHAT = ("links", "addresses", "routes")
CLONE_NEWNET = 0x40000000


def snap_pyroute2_netns(paths: list[str]) -> int:
    """pyroute2's own answer: IPRoute(netns=...) per namespace (it forks a helper per socket)."""
    from pyroute2 import IPRoute

    count = 0
    for path in paths:
        with IPRoute(netns=path) as ipr:
            count += len(ipr.get_links()) + len(ipr.get_addr()) + len(ipr.get_routes(family=0, table=0))
    return count


def snap_ip_loop(paths: list[str]) -> int:
    """The shell habit: ip -n NS -j link/addr/route per namespace."""
    count = 0
    for path in paths:
        name = os.path.basename(path)
        for args in (("link", "show"), ("addr", "show"), ("route", "show", "table", "all")):
            out = subprocess.run(["ip", "-n", name, "-j", *args], capture_output=True, text=True, check=True).stdout
            count += len(json.loads(out))
    return count


def snap_setns_loop(paths: list[str]) -> int:
    """The unsafe in-process way: setns the calling thread in and out of every namespace."""
    from pyroute2 import IPRoute

    from nsworkers._sys import setns

    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    count = 0
    try:
        for path in paths:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                setns(fd, CLONE_NEWNET)
                with IPRoute() as ipr:
                    count += len(ipr.get_links()) + len(ipr.get_addr()) + len(ipr.get_routes(family=0, table=0))
            finally:
                setns(home, CLONE_NEWNET)
                os.close(fd)
    finally:
        os.close(home)
    return count


def snap_nsworkers(paths: list[str], pool: nsworkers.Pool | None = None) -> int:
    count = 0
    for entry in nsworkers.inspect(paths, what=WHAT, pool=pool):
        assert entry["ok"], entry
        count += len(entry["links"]) + len(entry["addresses"]) + len(entry["routes"])
    return count


def bench_snapshots(spaces: Namespaces, reps: int, sizes: list[int]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for size in sizes:
        paths = spaces.make(size)
        batch = "\n".join(
            f"link add v{i} netns {os.path.basename(p)} type veth peer name w{i} netns {os.path.basename(p)}"
            for i, p in enumerate(paths)
        )
        subprocess.run(["ip", "-batch", "-"], input=batch, text=True, check=True)
        cold = {
            "nsworkers inspect() (new pool)": functools.partial(snap_nsworkers, paths),
            "pyroute2 IPRoute(netns=) per ns": functools.partial(snap_pyroute2_netns, paths),
            "ip -n NS -j loop": functools.partial(snap_ip_loop, paths),
            "in-process setns loop (unsafe)": functools.partial(snap_setns_loop, paths),
        }
        samples: dict[str, list[float]] = {name: [] for name in cold}
        plain = "nsworkers inspect(pool=Pool()) (a user's pool)"
        samples[plain] = []
        for _ in range(reps):
            for name, fn in cold.items():
                start = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - start)
            with nsworkers.Pool() as user_pool:  # made before the timing, as a user already has one
                start = time.perf_counter()
                snap_nsworkers(paths, user_pool)
                samples[plain].append(time.perf_counter() - start)
        rows += _rows(f"P3 cold snapshot of {size} namespaces (links+addresses+routes)", samples,
                      "nsworkers inspect() (new pool)", "s")  # fmt: skip
        with nsworkers.Pool(max_workers=size + 8, idle_timeout=None, preload=("nsworkers.netlink",)) as pool:
            snap_nsworkers(paths, pool)  # warm every worker
            warm: dict[str, list[float]] = {
                "nsworkers inspect() on a warm pool": [],
                "in-process setns loop (unsafe)": [],
            }
            for _ in range(reps):
                start = time.perf_counter()
                snap_nsworkers(paths, pool)
                warm["nsworkers inspect() on a warm pool"].append((time.perf_counter() - start) / size * 1e3)
                start = time.perf_counter()
                snap_setns_loop(paths)
                warm["in-process setns loop (unsafe)"].append((time.perf_counter() - start) / size * 1e3)
        rows += _rows(f"P4 warm re-snapshot of {size} namespaces, per namespace", warm,
                      "nsworkers inspect() on a warm pool", "ms")  # fmt: skip
        spaces.remove()
    return rows


RICH_SECTIONS = ("links", "addresses", "routes", "neighbours", "rules", "nexthops")
RICH_IP = (  # what the same sections cost with ip: one command each (routes and rules per family)
    ("link", "show"), ("addr", "show"), ("-4", "route", "show", "table", "all"),
    ("-6", "route", "show", "table", "all"), ("neigh", "show"), ("rule", "show"), ("-6", "rule", "show"),
    ("nexthop", "show"),
)  # fmt: skip


def _ip_commands(ns: str, flags: tuple[str, ...]) -> None:
    for args in RICH_IP:
        subprocess.run(["ip", "-n", ns, "-j", *flags, *args], capture_output=True, check=True)


def bench_rich(reps: int) -> list[dict[str, Any]]:
    """A warm snapshot() of the fidelity suite's rich namespace against the same ip -n NS -j commands."""
    from tests._richnet import rich_topology

    rows: list[dict[str, Any]] = []
    names = (f"nswbench-{os.getpid()}-rich", f"nswbench-{os.getpid()}-rich-peer")
    with rich_topology(*names) as ns, nsworkers.Pool(preload=("nsworkers.netlink",)) as pool:
        path = f"/run/netns/{ns}"
        for label, flags, kwargs in (("", (), {}), (" -s -d", ("-s", "-d"), {"stats": 1, "details": 1})):
            pool.run(path, nsworkers.netlink.snapshot, RICH_SECTIONS, **kwargs)  # warm: worker, socket, tables
            contenders: dict[str, Callable[[], Any]] = {
                f"nsworkers snapshot(){label} warm": functools.partial(
                    pool.run, path, nsworkers.netlink.snapshot, RICH_SECTIONS, **kwargs
                ),
                f"ip -n NS -j{label} x{len(RICH_IP)}": functools.partial(_ip_commands, ns, flags),
            }
            samples: dict[str, list[float]] = {name: [] for name in contenders}
            for _ in range(reps):
                for name, fn in contenders.items():
                    start = time.perf_counter()
                    fn()
                    samples[name].append((time.perf_counter() - start) * 1e3)
            records = sum(len(v) for k, v in pool.run(path, nsworkers.netlink.snapshot, RICH_SECTIONS).items()
                          if isinstance(v, list))  # fmt: skip
            rows += _rows(f"R1 rich namespace ({records} records){label}: {', '.join(RICH_SECTIONS)}", samples,
                          f"nsworkers snapshot(){label} warm", "ms")  # fmt: skip
    return rows


# ---------------------------------------------------------------------------
# F: find across many namespaces


def _ip_addr_loop(paths: list[str], address: str) -> int:
    """The shell habit: ``ip -n NS -j addr show`` in every namespace, searched by the caller."""
    hits = 0
    for path in paths:
        out = subprocess.run(
            ["ip", "-n", os.path.basename(path), "-j", "addr", "show"], capture_output=True, check=True
        )
        hits += sum(a.get("local") == address for link in json.loads(out.stdout) for a in link.get("addr_info", []))
    return hits


def _find_address(i: int) -> str:
    return f"10.{100 + i // 65536}.{i // 256 % 256}.{i % 256}"


def bench_find(spaces: Namespaces, reps: int, size: int) -> list[dict[str, Any]]:
    """find() of each kind of term across *size* namespaces against one cold inspect() of the same ones."""
    paths = spaces.make(size)
    batch = "\n".join(
        f"link add v{i} netns {os.path.basename(p)} type veth peer name w{i} netns {os.path.basename(p)}"
        for i, p in enumerate(paths)
    )
    subprocess.run(["ip", "-batch", "-"], input=batch, text=True, check=True)
    for i, path in enumerate(paths):
        name = os.path.basename(path)
        subprocess.run(["ip", "-n", name, "addr", "add", f"{_find_address(i)}/8", "dev", f"v{i}"], check=True)
    last = size - 1
    address = _find_address(last)
    mac = json.loads(subprocess.run(["ip", "-n", os.path.basename(paths[-1]), "-j", "link", "show", f"v{last}"],
                                    capture_output=True, check=True).stdout)[0]["address"]  # fmt: skip

    def find(term: str, sockets: bool = True) -> Callable[[], int]:
        def run() -> int:
            matches = nsworkers.find(term, paths, attribution=False, sockets=sockets)
            assert matches or term.startswith(":"), term
            return len(matches)

        return run

    contenders: dict[str, Callable[[], int]] = {
        "nsworkers inspect() (new pool)": functools.partial(snap_nsworkers, paths),
        f"find {address} (new pool)": find(address),
        f"find {address}, no sockets (new pool)": find(address, sockets=False),
        "find 10.0.0.0/8 (new pool)": find("10.0.0.0/8"),
        "find MAC (new pool)": find(mac),
        "find :8080 (new pool)": find(":8080"),
        "ip -n NS -j addr loop, searched": functools.partial(_ip_addr_loop, paths, address),
    }
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(reps):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    spaces.remove()
    return _rows(
        f"F find across {size} namespaces vs one cold inspect()", samples, "nsworkers inspect() (new pool)", "s"
    )


def bench_topology(spaces: Namespaces, reps: int, pods: int) -> list[dict[str, Any]]:
    """topology() of a host namespace with a bridge and *pods* veth pods, against inspect() of the same."""
    paths = spaces.make(pods + 1)
    host = os.path.basename(paths[0])
    lines = [f"link add br0 netns {host} type bridge"]
    for i, path in enumerate(paths[1:]):
        lines.append(f"link add hv{i} netns {host} type veth peer name eth0 netns {os.path.basename(path)}")
    subprocess.run(["ip", "-batch", "-"], input="\n".join(lines), text=True, check=True)
    ports = "\n".join(f"link set hv{i} master br0" for i in range(pods))
    subprocess.run(["ip", "-n", host, "-batch", "-"], input=ports, text=True, check=True)

    def topo() -> int:
        graph = nsworkers.topology(paths, attribution=False)
        assert sum(e["kind"] == "veth" and e["to"] is not None for e in graph["edges"]) == pods
        return len(graph["edges"])

    contenders = {
        "nsworkers inspect() (new pool)": functools.partial(snap_nsworkers, paths),
        "nsworkers topology() (new pool)": topo,
    }
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(reps):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    spaces.remove()
    return _rows(f"T topology of a host and {pods} veth pods vs one cold inspect()", samples,
                 "nsworkers inspect() (new pool)", "s")  # fmt: skip


# ---------------------------------------------------------------------------
# P5: memory


def _proc_net_dev(pids: list[int]) -> int:
    """cAdvisor's method: /proc/PID/net/dev of one process per namespace, every counter parsed."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/net/dev") as f:
            for line in f.readlines()[2:]:
                total += sum(int(x) for x in line.split(":", 1)[1].split())
    return total


def _ip_stats_loop(paths: list[str]) -> int:
    total = 0
    for path in paths:
        out = subprocess.run(
            ["ip", "-n", os.path.basename(path), "-j", "-s", "link", "show"], capture_output=True, check=True
        )
        total += len(json.loads(out.stdout))
    return total


def _tree_uss(pid: int) -> int:
    import psutil

    root = psutil.Process(pid)
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_full_info().uss
        except psutil.Error:
            pass
    return total


def bench_exporter(spaces: Namespaces, reps: int, size: int) -> list[dict[str, Any]]:
    """`nsworkers exporter` scraping *size* namespaces (a veth pair and a process in each), over HTTP.

    Against an `ip -n NS -j -s link` loop and cAdvisor's method (/proc/PID/net/dev
    of one process per namespace, which misses namespaces no process is in).
    """
    import re
    import urllib.request

    paths = spaces.make(size)
    batch = "\n".join(
        f"link add v{i} netns {os.path.basename(p)} type veth peer name w{i} netns {os.path.basename(p)}"
        for i, p in enumerate(paths)
    )
    subprocess.run(["ip", "-batch", "-"], input=batch, text=True, check=True)
    # nsenter, not ip netns exec: that one gives each process a mount namespace of its own, with every
    # /run/netns bind mount in it, and discovery reads each mountinfo (a pod's container has few mounts)
    sleepers = [subprocess.Popen(["nsenter", f"--net={p}", "sleep", "3600"]) for p in paths]
    log = open(f"/tmp/{PREFIX}exporter.log", "w+")  # noqa: SIM115 -- read while the exporter writes it
    exporter = subprocess.Popen(
        [sys.executable, "-m", "nsworkers", "exporter", "--port", "0", "--max-age", "0", "--scrape-timeout", "900",
         f"{PREFIX}*"],
        stderr=log,
    )  # fmt: skip
    try:
        port = 0
        while not port:
            time.sleep(0.05)
            log.seek(0)
            found = re.search(r"127\.0\.0\.1:(\d+)/", log.read())
            port = int(found.group(1)) if found else 0
            assert exporter.poll() is None, "the exporter exited; see its log"
        url = f"http://127.0.0.1:{port}/metrics"

        def scrape() -> int:
            with urllib.request.urlopen(url, timeout=300) as reply:
                text = reply.read().decode()
            assert f"nsworkers_exporter_namespaces_scraped {size}.0" in text, text[-2000:]
            return text.count("\n")

        pids = [p.pid for p in sleepers]  # nsenter execs sleep: the same pid, inside the namespace
        samples: dict[str, list[float]] = {
            "exporter scrape, warm (HTTP /metrics)": [],
            "exporter first scrape (opens every ns)": [],
            "ip -n NS -j -s link loop": [],
            "/proc/PID/net/dev per ns (cAdvisor)": [],
        }
        start = time.perf_counter()
        scrape()
        samples["exporter first scrape (opens every ns)"].append(time.perf_counter() - start)
        for _ in range(reps):
            for name, fn in (
                ("exporter scrape, warm (HTTP /metrics)", scrape),
                ("ip -n NS -j -s link loop", functools.partial(_ip_stats_loop, paths)),
                ("/proc/PID/net/dev per ns (cAdvisor)", functools.partial(_proc_net_dev, pids)),
            ):
                start = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - start)
        uss = _tree_uss(exporter.pid)
    finally:
        exporter.terminate()
        exporter.wait()
        log.close()
        print(f"exporter log: {log.name}", file=sys.stderr)
        for proc in sleepers:
            proc.kill()
            proc.wait()
        spaces.remove()
    rows = _rows(f"E exporter scrape of {size} namespaces", samples, "exporter scrape, warm (HTTP /metrics)", "s")
    rows.append(
        {"scenario": rows[0]["scenario"], "contender": "exporter + workers USS after the scrapes",
         "median": uss / 2**20, "unit": "Mi", "ratio": float("nan"), "samples": 1}
    )  # fmt: skip
    return rows


def _uss_of_children() -> int:
    import psutil

    total = 0
    for child in psutil.Process().children(recursive=True):
        try:
            total += child.memory_full_info().uss
        except psutil.Error:
            pass
    return total


def bench_memory(spaces: Namespaces, sweep: int) -> list[dict[str, Any]]:
    """Idle and post-snapshot worker USS, and the peak total over a sweep with default settings."""
    import threading

    from nsworkers import netlink

    (path,) = spaces.make(1)
    with nsworkers.Pool(preload=("nsworkers.netlink",)) as pool:
        pool.run(path, int)
        idle = pool.workers()[0].uss or 0
        pool.run(path, netlink.snapshot)
        after = pool.workers()[0].uss or 0
    paths = spaces.make(sweep)
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            peak[0] = max(peak[0], _uss_of_children())

    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.perf_counter()
    try:
        count = sum(1 for entry in nsworkers.inspect(paths, what=WHAT) if entry["ok"])
    finally:
        stop.set()
        sampler.join()
    elapsed = time.perf_counter() - start
    spaces.remove()
    mib = 1 << 20
    return [
        {"scenario": "P5 memory", "contender": "idle worker USS", "median": idle / mib, "unit": "MiB", "ratio": 1.0,
         "samples": 1},
        {"scenario": "P5 memory", "contender": "worker USS after a snapshot", "median": after / mib, "unit": "MiB",
         "ratio": after / idle if idle else 0.0, "samples": 1},
        {"scenario": "P5 memory", "contender": f"peak USS of all workers, sweep of {count} ns ({elapsed:.1f} s)",
         "median": peak[0] / mib, "unit": "MiB", "ratio": peak[0] / idle if idle else 0.0, "samples": 1},
    ]  # fmt: skip


# ---------------------------------------------------------------------------
# D: discovery against lsns


def bench_discovery(spaces: Namespaces, reps: int, count: int, procs: int) -> list[dict[str, Any]]:
    """Discovery on a host with *count* extra namespaces and *procs* extra processes, against lsns -J."""
    spaces.make(count)
    sleepers = [subprocess.Popen(["sleep", "600"]) for _ in range(procs)]
    try:
        samples: dict[str, list[float]] = {"nsworkers.discover()": [], "lsns -J": []}
        found: dict[str, int] = {}
        for _ in range(reps):
            start = time.perf_counter()
            result = nsworkers.discover()
            samples["nsworkers.discover()"].append(time.perf_counter() - start)
            found["nsworkers.discover()"] = len(result)
            start = time.perf_counter()
            out = subprocess.run(["lsns", "-J"], capture_output=True, text=True, check=True).stdout
            samples["lsns -J"].append(time.perf_counter() - start)
            found["lsns -J"] = len(json.loads(out)["namespaces"])
    finally:
        for proc in sleepers:
            proc.kill()
            proc.wait()
        spaces.remove()
    rows = _rows(
        f"D discovery: {count} extra namespaces, {procs} extra processes", samples, "nsworkers.discover()", "s"
    )
    for row in rows:
        row["contender"] += f" (found {found[row['contender']]})"
    return rows


# ---------------------------------------------------------------------------


def bench_timing(spaces: Namespaces, reps: int) -> list[dict[str, Any]]:
    """What the tests no longer assert (they run on a shared machine): parallelism, timeout and parent-death latency."""
    (path,) = spaces.make(1)
    samples: dict[str, list[float]] = {"1 worker": [], "workers_per_namespace=3": []}
    raised: dict[str, list[float]] = {"raised after (timeout 200 ms)": []}
    gone: dict[str, list[float]] = {"workers and zygote gone after": []}
    with nsworkers.Pool() as one, nsworkers.Pool(workers_per_namespace=3) as three:
        for pool in (one, three):
            pool.run(path, os.getpid)
        for _ in range(reps):
            for name, pool in (("1 worker", one), ("workers_per_namespace=3", three)):
                start = time.perf_counter()
                futures = [pool.submit(path, time.sleep, 0.2) for _ in range(3)]
                for future in futures:
                    future.result()
                samples[name].append((time.perf_counter() - start) * 1e3)
            start = time.perf_counter()
            try:
                one.options(timeout=0.2).run(path, time.sleep, 10)
            except nsworkers.WorkerTimeoutError:
                raised["raised after (timeout 200 ms)"].append((time.perf_counter() - start) * 1e3)
            gone["workers and zygote gone after"].append(_parent_death_ms(path))
    return (
        _rows("TM1 three 200 ms calls to one namespace", samples, "1 worker", "ms")
        + _rows("TM2 a call past its timeout", raised, "raised after (timeout 200 ms)", "ms")
        + _rows("TM3 caller SIGKILLed (PR_SET_PDEATHSIG)", gone, "workers and zygote gone after", "ms")
    )


def _parent_death_ms(path: str) -> float:
    import psutil

    code = (
        "import os, sys, time, nsworkers\n"
        "pool = nsworkers.Pool()\n"
        f"pool.run({path!r}, os.getpid); pool.run('/proc/self/ns/uts', os.getpid)\n"
        "print(' '.join(str(w.pid) for w in pool.workers(memory=False)), pool._spawner.zygote_pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    pids = [int(p) for p in proc.stdout.readline().split()]
    proc.kill()
    start = time.perf_counter()
    proc.wait()
    while any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids):
        time.sleep(0.0005)
    proc.stdout.close()
    return (time.perf_counter() - start) * 1e3


def _rows(scenario: str, samples: dict[str, list[float]], reference: str, unit: str) -> list[dict[str, Any]]:
    ref = statistics.median(samples[reference])
    return [
        {
            "scenario": scenario,
            "contender": name,
            "median": statistics.median(values),
            "unit": unit,
            "ratio": statistics.median(values) / ref,
            "samples": len(values),
        }
        for name, values in samples.items()
    ]


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "date": time.strftime("%Y-%m-%d"),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nsworkers": nsworkers.__version__,
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    scenario = None
    for row in rows:
        if row["scenario"] != scenario:
            scenario = row["scenario"]
            print(f"\n{scenario}")
            print(f"  {'contender':<40} {'median':>10} {'ratio':>7}")
        print(f"  {row['contender']:<40} {row['median']:>8.2f}{row['unit']:>2} {row['ratio']:>6.2f}x")
    print("\nratio: median / the scenario's first row (below 1 is faster than it)")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "scenarios",
        nargs="*",
        default=["p1", "p1c", "p1t", "p2", "p3", "p5", "d", "r1", "t", "tm"],
        help="p1 (round trip), p1c (its CPU time, caller + workers), p1t (throughput: threads, submit, map), "
        "p2 (cold start), p3 (cold and warm snapshots of many namespaces), p5 (memory), d (discovery), "
        "f (find vs inspect), t (topology vs inspect), r1 (a rich namespace against ip -j), "
        "e (the exporter's scrape vs ip -s and /proc/PID/net/dev), "
        "tm (parallelism, timeout, parent death)",
    )
    parser.add_argument("--sizes", default="100,1000", help="namespace counts for p3 (default: 100,1000)")
    parser.add_argument(
        "--find-size", type=int, default=1000, help="namespaces for f and e, pods for t (default: 1000)"
    )
    parser.add_argument("--sweep", type=int, default=10000, help="namespaces in the p5 sweep (default: 10000)")
    parser.add_argument("--reps", type=int, default=5, help="repetitions per contender (interleaved)")
    parser.add_argument("--calls", type=int, default=5000, help="calls per P1 repetition")
    parser.add_argument("--cold", type=int, default=20, help="cold workers per P2 repetition")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args()
    spaces = Namespaces()
    rows: list[dict[str, Any]] = []
    try:
        if "p1" in args.scenarios:
            rows += bench_p1(spaces, args.reps, args.calls)
        if "p1c" in args.scenarios:
            rows += bench_p1_cpu(spaces, args.reps, args.calls)
        if "p1t" in args.scenarios:
            rows += bench_throughput(spaces, args.reps, args.calls)
        if "p2" in args.scenarios:
            rows += bench_p2(spaces, args.reps, args.cold)
        if "p5" in args.scenarios:
            rows += bench_memory(spaces, args.sweep)
        if "d" in args.scenarios:
            rows += bench_discovery(spaces, args.reps, 500, 1000)
        if "t" in args.scenarios:
            rows += bench_topology(spaces, args.reps, args.find_size)
        if "f" in args.scenarios:
            rows += bench_find(spaces, args.reps, args.find_size)
        if "tm" in args.scenarios:
            rows += bench_timing(spaces, args.reps)
        if "p3" in args.scenarios:
            rows += bench_snapshots(spaces, args.reps, [int(n) for n in args.sizes.split(",")])
        if "r1" in args.scenarios:
            rows += bench_rich(args.reps * 4)
        if "e" in args.scenarios:
            rows += bench_exporter(spaces, args.reps, args.find_size)
    finally:
        spaces.remove()
    info = machine()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    print_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()

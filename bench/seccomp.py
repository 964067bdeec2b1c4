"""What ``deny_namespace_changes``'s seccomp filter costs per system call, side by side in one run.

    python -m bench.seccomp [--reps 7] [--calls 200000] [--trips 20000]

Each repetition forks a fresh child per variant (the filter cannot be
removed), without and with the filter, interleaved so drift hits both alike:
``os.getpid()`` in a loop (one cheap system call, mostly Python's own cost),
and a 1-byte pipe round trip between the child and a grandchild (four system
calls per trip, the shape of a worker's call; the grandchild inherits the
filter), both pinned to one CPU; and, for scale, what the filter replaces:
reading the eight ``/proc/self/ns`` links once per call. Needs CAP_SYS_ADMIN (root, or root of a user namespace).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import struct
import time
from collections.abc import Callable

from nsworkers import _sys


def getpid_loop(calls: int) -> float:
    getpid = os.getpid
    start = time.perf_counter_ns()
    for _ in range(calls):
        getpid()
    return (time.perf_counter_ns() - start) / calls


def pipe_round_trip(trips: int) -> float:
    ping_r, ping_w = os.pipe()
    pong_r, pong_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            for _ in range(trips):
                os.write(pong_w, os.read(ping_r, 1))
        finally:
            os._exit(0)
    start = time.perf_counter_ns()
    for _ in range(trips):
        os.write(ping_w, b"x")
        os.read(pong_r, 1)
    elapsed = time.perf_counter_ns() - start
    os.waitpid(pid, 0)
    for fd in (ping_r, ping_w, pong_r, pong_w):
        os.close(fd)
    return elapsed / trips


NS_TYPES = ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")


def check_links(rounds: int) -> float:
    """The fallback the filter replaces: read all eight ``/proc/self/ns`` links (per call, in a worker)."""
    fds = [os.open(f"/proc/self/ns/{t}", os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC) for t in NS_TYPES]
    readlink = os.readlink
    start = time.perf_counter_ns()
    for _ in range(rounds):
        for fd in fds:
            readlink("", dir_fd=fd)
    elapsed = time.perf_counter_ns() - start
    for fd in fds:
        os.close(fd)
    return elapsed / rounds


def in_child(measure: Callable[[], float], filtered: bool) -> float:
    """*measure* in a forked child, after installing the filter if *filtered*; ns per operation."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # the grandchild too: same-CPU ping-pong
            if filtered and not _sys.deny_namespace_changes():
                raise SystemExit("the filter could not be installed (no CAP_SYS_ADMIN?)")
            os.write(write_end, struct.pack("d", measure()))
        finally:
            os._exit(0)
    os.close(write_end)
    data = os.read(read_end, 8)
    os.close(read_end)
    os.waitpid(pid, 0)
    if len(data) != 8:
        raise SystemExit("the child failed")
    return float(struct.unpack("d", data)[0])


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--trips", type=int, default=20_000)
    args = parser.parse_args()
    scenarios: dict[str, Callable[[], float]] = {
        "os.getpid()": lambda: getpid_loop(args.calls),
        "pipe round trip (1 byte)": lambda: pipe_round_trip(args.trips),
        "8 ns readlinks (fallback)": lambda: check_links(args.trips),
    }
    print(f"{cpu_model()}, {os.cpu_count()} CPUs, kernel {platform.release()}, Python {platform.python_version()}")
    print(f"median of {args.reps} repetitions, ns per operation")
    print(f"{'operation':<26} {'no filter':>10} {'filter':>10} {'ratio':>7}")
    for name, measure in scenarios.items():
        samples: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.reps):
            for filtered in (False, True):
                samples[filtered].append(in_child(measure, filtered))
        plain, filtered_ns = statistics.median(samples[False]), statistics.median(samples[True])
        print(f"{name:<26} {plain:>10.0f} {filtered_ns:>10.0f} {filtered_ns / plain:>7.2f}")


if __name__ == "__main__":
    main()

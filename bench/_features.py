"""X: what the executor features of issue 16 (item 4) cost, side by side in one run.

``python -m bench._features [--reps N] [--calls N] [--cold N]``, as root. Warm
rows time one no-op call on a worker that is already there; cold rows a
call that needs a fresh worker each time (``max_tasks_per_worker=1``), with
and without an initializer (a no-op). For the warm rows the caller and the
workers are pinned to CPU 0 (by the pools' initializer).
Medians of *reps* interleaved repetitions; ratios to each block's first row.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from collections.abc import Callable

import nsworkers

from ._calls import noop


def _time_per_call(call: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls


def _pin() -> None:
    os.sched_setaffinity(0, {0})


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._features")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--cold", type=int, default=40)
    args = parser.parse_args()
    name = f"nswbench-{os.getpid()}-x"
    subprocess.run(["ip", "netns", "add", name], check=True)
    path = f"/run/netns/{name}"
    os.sched_setaffinity(0, {0})
    pools: list[nsworkers.Pool] = []
    try:
        plain = nsworkers.Pool(initializer=_pin)
        bounded = nsworkers.Pool(initializer=_pin, max_memory_per_worker=1 << 40)
        cold_plain = nsworkers.Pool(max_tasks_per_worker=1)
        cold_init = nsworkers.Pool(max_tasks_per_worker=1, initializer=noop)
        pools += [plain, bounded, cold_plain, cold_init]
        executor = plain.executor(path)
        warm: dict[str, Callable[[], object]] = {
            "pool.run(path)": lambda: plain.run(path, noop),
            "submit().result() (cancellable future)": lambda: plain.submit(path, noop).result(),
            "pool.executor(path).submit().result()": lambda: executor.submit(noop).result(),
            "pool.run(path), max_memory_per_worker set": lambda: bounded.run(path, noop),
        }
        cold_rows: dict[str, Callable[[], object]] = {
            "cold call, no initializer": lambda: cold_plain.run(path, noop),
            "cold call, initializer": lambda: cold_init.run(path, noop),
        }
        for call in (*warm.values(), *cold_rows.values()):
            call()
        samples: dict[str, list[float]] = {key: [] for key in (*warm, *cold_rows)}
        for _ in range(args.reps):
            for key, call in warm.items():
                samples[key].append(_time_per_call(call, args.calls))
            for key, call in cold_rows.items():
                samples[key].append(_time_per_call(call, args.cold))
        for title, keys in (("X warm no-op call, same CPU", list(warm)), ("X cold call", list(cold_rows))):
            print(title)
            print(f"  {'contender':<46} {'median':>10}   ratio")
            reference = statistics.median(samples[keys[0]])
            for key in keys:
                median = statistics.median(samples[key])
                print(f"  {key:<46} {median * 1e6:>8.1f}us   {median / reference:.2f}x")
    finally:
        for pool in pools:
            pool.shutdown()
        subprocess.run(["ip", "netns", "del", name], check=False)


if __name__ == "__main__":
    main()

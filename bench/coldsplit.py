"""Where a cold batch's time goes: what each new worker imports, and the CPU of each process per namespace.

    python -m bench.coldsplit                    # 200 namespaces
    python -m bench.coldsplit --size 300 --max-workers 4

Two measurements on namespaces of its own (prefix ``nswsplit-PID-``, one
veth pair each, all removed at the end; needs root):

* **learning**: a snapshot through a plain ``Pool(max_workers=N)``, each
  call returning how many modules its worker started with and how many the
  snapshot imported. Runs of equal pairs show when the zygote learned the
  modules (issue 16, round three: before it did, every worker of a 64-worker
  pool imported the 31 netlink modules itself).
* **cpu**: a no-op in every namespace through ``Pool(max_workers=N)`` after
  one warm-up call; CPU time per namespace of the caller (``getrusage``),
  the zygote and the workers it reaped (its ``/proc/PID/stat``).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

import nsworkers

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def modules_around_a_snapshot() -> tuple[int, int]:
    """Runs in a worker: the modules it started with, and how many a snapshot added."""
    from nsworkers import netlink

    before = len(sys.modules)
    netlink.snapshot(what=("links", "addresses", "routes"))
    return before, len(sys.modules) - before


def learning(paths: list[str], max_workers: int) -> list[tuple[tuple[int, int], int]]:
    """Runs of ``((modules at start, modules imported), how many workers in a row)``, in completion order."""
    runs: list[tuple[tuple[int, int], int]] = []
    with nsworkers.Pool(max_workers=max_workers) as pool:
        for _, counts in pool.map(modules_around_a_snapshot, paths):
            if runs and runs[-1][0] == counts:
                runs[-1] = (counts, runs[-1][1] + 1)
            else:
                runs.append((counts, 1))
    return runs


def _stat_times(pid: int) -> list[float]:
    """utime, stime, cutime, cstime of *pid*, in seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return [int(field) / CLOCK_TICKS for field in fields[11:15]]


def cpu_split(paths: list[str], max_workers: int) -> dict[str, float]:
    """CPU ms per namespace of a no-op: caller, zygote (user, system), workers (user, system)."""
    with nsworkers.Pool(max_workers=max_workers, idle_timeout=None) as pool:
        pool.run(paths[0], os.getpid)
        zygote = pool._spawner.zygote_pid  # type: ignore[attr-defined]
        zygote_before = _stat_times(zygote)
        caller_before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        for _ in pool.map(os.getpid, paths[1:]):
            pass
        wall = time.perf_counter() - start
        pool.kill_workers()  # the zygote reaps them: their CPU joins its cutime/cstime
        while pool.workers(memory=False):
            time.sleep(0.05)
        time.sleep(0.5)
        zygote_after = _stat_times(zygote)
        caller_after = resource.getrusage(resource.RUSAGE_SELF)
    count = len(paths) - 1
    caller = (caller_after.ru_utime + caller_after.ru_stime) - (caller_before.ru_utime + caller_before.ru_stime)
    zu, zs, wu, ws = ((after - before) / count * 1e3 for before, after in zip(zygote_before, zygote_after, strict=True))
    return {
        "wall": wall / count * 1e3,
        "caller": caller / count * 1e3,
        "zygote user": zu,
        "zygote system": zs,
        "workers user": wu,
        "workers system": ws,
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.coldsplit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=200, help="namespaces (default: 200)")
    parser.add_argument("--max-workers", type=int, default=None, help="one pool size (default: 64, then 4)")
    args = parser.parse_args()
    prefix = f"nswsplit-{os.getpid()}-"
    names = [f"{prefix}{i}" for i in range(args.size)]
    subprocess.run(["ip", "-batch", "-"], input="".join(f"netns add {n}\n" for n in names), text=True, check=True)
    try:
        veths = "".join(f"link add v{i} netns {n} type veth peer name w{i} netns {n}\n" for i, n in enumerate(names))
        subprocess.run(["ip", "-batch", "-"], input=veths, text=True, check=True)
        paths = [f"/run/netns/{name}" for name in names]
        for workers in [args.max_workers] if args.max_workers else [64, 4]:
            runs = ", ".join(f"{count} x {start}+{imported}" for (start, imported), count in learning(paths, workers))
            print(f"learning, max_workers={workers}: workers x (modules at start + imported): {runs}")
            split = cpu_split(paths, workers)
            print(
                f"cpu, max_workers={workers}, ms per namespace: " + ", ".join(f"{k} {v:.2f}" for k, v in split.items())
            )
    finally:
        subprocess.run(["ip", "-batch", "-"], input="".join(f"netns del {n}\n" for n in names), text=True, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

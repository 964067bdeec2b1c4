"""Background churn: namespaces and processes that come and go, as on a busy shared host.

    python -m bench.churn                  # until Ctrl-C or SIGTERM
    python -m bench.churn --seconds 600 --rate 50

Keeps creating and deleting named network namespaces (``ip netns add/del``,
prefix ``nswchurn-PID-``) and processes in network + uts namespaces of their
own (``unshare -n -u sleep``), a few each second, with a random number alive
at any moment. Its purpose is proving that the tests and CI assert only on
what they made: run ``.ci/run`` while this runs. Everything it made is
removed when it stops. Needs root (as CI does).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
from types import FrameType


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.churn", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long (default: never)")
    parser.add_argument("--rate", type=float, default=20.0, help="changes per second (default: 20)")
    parser.add_argument("--max-alive", type=int, default=24, help="namespaces and processes alive at most, each")
    args = parser.parse_args()
    prefix = f"nswchurn-{os.getpid()}-"
    rng = random.Random(os.getpid())
    names: list[str] = []
    procs: list[subprocess.Popen[bytes]] = []
    stop = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    end = None if args.seconds is None else time.monotonic() + args.seconds
    counter = made = removed = 0
    try:
        while not stop and (end is None or time.monotonic() < end):
            action = rng.random()
            if action < 0.5:
                if len(names) < args.max_alive and rng.random() < 0.6:
                    name = f"{prefix}{counter}"
                    counter += 1
                    if subprocess.run(["ip", "netns", "add", name], capture_output=True, check=False).returncode == 0:
                        names.append(name)
                        made += 1
                elif names:
                    name = names.pop(rng.randrange(len(names)))
                    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
                    removed += 1
            elif len(procs) < args.max_alive and rng.random() < 0.6:
                procs.append(subprocess.Popen(["unshare", "-n", "-u", "sleep", "3600"], stdin=subprocess.DEVNULL))
                made += 1
            elif procs:
                proc = procs.pop(rng.randrange(len(procs)))
                proc.kill()
                proc.wait()
                removed += 1
            time.sleep(rng.expovariate(args.rate))
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        for name in names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        print(f"churn: {made} namespaces/processes made, {removed} removed, all cleaned up", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

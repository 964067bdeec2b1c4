"""Record the rich topology's netlink dumps and ``ip -j`` output, for the root-free record tests.

Regenerate (as root, from the repository root)::

    python -m tests.netlink_capture tests/data/netlink-capture.json

It builds :mod:`tests.test_fidelity`'s topology, runs every case there
through a :class:`RecordingSession` inside the namespace (the raw payloads of
each dump, keyed by request), runs ``ip`` before and after, and stores the
``/etc/iproute2`` files and ``/etc/protocols`` names that ``ip`` used.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from nsworkers.netlink import _dumps, _names


class RecordingSession(_dumps.Session):
    """A session that keeps the payloads of every dump it makes, keyed by the request."""

    def __init__(self, attempts: int = _dumps.DEFAULT_ATTEMPTS) -> None:
        super().__init__(attempts)
        self.recorded: dict[str, list[str]] = {}

    def dump(self, what: str, msg_type: int, body: bytes, reply_type: int) -> tuple[list[bytes], bool, int]:
        payloads, interrupted, used = super().dump(what, msg_type, body, reply_type)
        self.recorded[request_key(msg_type, body)] = [p.hex() for p in payloads]
        return payloads, interrupted, used


class ReplaySession(_dumps.Session):
    """A session that answers dumps from a recording: the record builders run without root or netlink."""

    def __init__(self, recorded: dict[str, list[str]]) -> None:
        super().__init__()
        self.recorded = recorded

    def dump(self, what: str, msg_type: int, body: bytes, reply_type: int) -> tuple[list[bytes], bool, int]:
        return [bytes.fromhex(p) for p in self.recorded[request_key(msg_type, body)]], False, 1


def request_key(msg_type: int, body: bytes) -> str:
    return f"{msg_type}:{body.hex()}"


def _inside() -> None:
    """Run in the namespace: every fidelity case through one recording session; print the recording."""
    from tests.test_fidelity import CASES

    session = RecordingSession()
    for _name, fn, _args in CASES:
        fn(session=session)
    json.dump(session.recorded, sys.stdout)


def _etc_iproute2() -> dict[str, str]:
    out = {}
    for root, _dirs, files in os.walk(_names.CONFDIR):
        for name in files:
            path = os.path.join(root, name)
            with open(path, errors="replace") as f:
                out[os.path.relpath(path, _names.CONFDIR)] = f.read()
    return out


def capture() -> dict[str, Any]:
    from tests._richnet import rich_topology
    from tests.test_fidelity import CASES, ip_json

    with rich_topology(f"nswcapture-{os.getpid()}-0", f"nswcapture-{os.getpid()}-1") as ns:
        before = {name: ip_json(ns, args) for name, _fn, args in CASES}
        done = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "tests.netlink_capture", "--inside"],
            capture_output=True,
            text=True,
            check=True,
        )
        after = {name: ip_json(ns, args) for name, _fn, args in CASES}
    version = subprocess.run(["ip", "-V"], capture_output=True, text=True, check=True).stdout.strip()
    return {
        "ip": version,
        "kernel": os.uname().release,
        "etc_iproute2": _etc_iproute2(),
        "protocols": _names.protocols(),
        "dumps": json.loads(done.stdout),
        "ip_before": before,
        "ip_after": after,
    }


if __name__ == "__main__":
    if sys.argv[1:] == ["--inside"]:
        _inside()
    else:
        with open(sys.argv[1], "w") as out:
            json.dump(capture(), out, indent=0)
            out.write("\n")

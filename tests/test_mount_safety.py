"""A worker joined to a mount namespace reads and runs nothing from that namespace's filesystem.

The target's filesystem is hostile (a container chooses its own files): the
caller's view is the only one nsworkers itself trusts.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from nsworkers import Namespace, Pool
from nsworkers._worker import caller_open

from ._in_worker import read_both

pytestmark = pytest.mark.privileged


def test_caller_open_reads_the_callers_file_not_the_targets(
    pool: Pool, tmp_path: Path, make_mount_ns: Callable[[str], int]
) -> None:
    (tmp_path / "names").write_text("host\n")
    pid = make_mount_ns(f"mount -t tmpfs nsw {tmp_path} && echo container > {tmp_path}/names")
    with Namespace.from_pid(pid, "mnt") as mnt:
        assert pool.run(mnt, read_both, str(tmp_path / "names")) == ("container\n", "host\n")


def test_caller_open_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    for path in (str(tmp_path / "fifo"), "/dev/null", str(tmp_path)):
        with pytest.raises(OSError, match="not a regular file"):
            caller_open(path)

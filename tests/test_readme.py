"""Every code block of the README runs as written, against real namespaces.

Each block runs in a sandbox of its own: new mount and pid namespaces
(``unshare -mpf --mount-proc``) with a private tmpfs on /run/netns holding
``blue`` and ``red``, and process 1234 in a network and uts namespace of its
own (the README's "a container's process"). So ``nsworkers inspect`` of every
namespace sees the sandbox's only, and everything dies with the sandbox.

A block may be preceded by an HTML comment the test understands:

* ``<!-- readme-test: not-run REASON -->``: not run; the reason is listed
  by :func:`test_blocks_not_run_are_the_known_ones`, never skipped silently.
* ``<!-- readme-test: interrupt-after SECONDS ... -->``: each command of the
  block runs until Ctrl-C; it gets SIGINT after SECONDS and must then exit
  cleanly (0 or 130).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import IN_USERNS

pytestmark = pytest.mark.privileged

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

SANDBOX = """\
set -e
mkdir -p /run/netns
umount -R -l /run/netns 2>/dev/null || true  # the host's names, in this private mount namespace only
mount -t tmpfs nsw-readme /run/netns
ip link set lo up
ip netns add blue
ip netns add red
ip -n blue link set lo up
ip -n red link set lo up
echo 1233 > /proc/sys/kernel/ns_last_pid
unshare -n -u sleep 600 &
[ "$!" = 1234 ] || { echo "the stand-in process is $! instead of 1234" >&2; exit 99; }
cd "$NSW_README_CWD"
set +e
"""


@dataclass
class Block:
    lang: str
    code: str
    line: int
    marker: str  # the readme-test comment right before it, or ""

    @property
    def id(self) -> str:
        return f"{self.lang}-line{self.line}"


def blocks() -> list[Block]:
    found: list[Block] = []
    lines = README.read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[i])
        if fence:
            start = i
            j = i + 1
            while not lines[j].startswith("```"):
                j += 1
            previous = lines[start - 1] if start else ""
            marker = re.match(r"^<!-- readme-test: (.*) -->$", previous)
            found.append(
                Block(
                    fence.group(1),
                    "\n".join(lines[start + 1 : j]) + "\n",
                    start + 1,
                    (marker and marker.group(1)) or "",
                )
            )
            i = j
        i += 1
    return found


CODE = [b for b in blocks() if b.lang in ("sh", "python")]


def test_every_block_is_code_or_text() -> None:
    # a block without a language would silently escape this test (text and promql are not run)
    assert {b.lang for b in blocks()} <= {"sh", "python", "text", "promql"}, [(b.line, b.lang) for b in blocks()]
    assert len(CODE) >= 10


def test_blocks_not_run_are_the_known_ones() -> None:
    not_run = {b.line: b.marker for b in CODE if b.marker.startswith("not-run")}
    reasons = sorted(m.removeprefix("not-run ").split(";")[0] for m in not_run.values())
    assert reasons == [
        "it is the test suite itself",
        "needs a Docker container 3f2a9c... and a Kubernetes pod on the host",
        "needs a Docker container 3f2a9c... on the host",
        "servers on port 10025 and a node_exporter directory",
    ], not_run


def sandboxed(script: str, cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["unshare", "-mpf", "--mount-proc", "--propagation", "private", "bash", "-c", SANDBOX + script],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=dict(env, NSW_README_CWD=str(cwd)),
        timeout=timeout,
        check=False,
    )


def environment() -> dict[str, str]:
    """``nsworkers`` and ``python`` of the interpreter running the tests come first on PATH."""
    bindir = Path(sys.executable).parent
    src = str(ROOT / "src")
    path = os.pathsep.join([str(bindir), os.environ.get("PATH", "/usr/bin:/bin")])
    return dict(os.environ, PATH=path, PYTHONPATH=src)


def shell_script(block: Block) -> str:
    interrupt = re.match(r"interrupt-after (\d+)", block.marker)
    if not interrupt:
        return "set -e\n" + block.code
    seconds = interrupt.group(1)
    lines = []
    for line in block.code.splitlines():
        command = line.split("#", 1)[0].strip()
        if command:
            # runs until Ctrl-C: send it one after a while; a clean exit is 0 or 130
            lines.append(
                f"timeout --preserve-status -s INT -k 30 {seconds} {command}; rc=$?; "
                f'[ $rc = 0 ] || [ $rc = 130 ] || {{ echo "{shlex.quote(command)} exited $rc" >&2; exit 1; }}'
            )
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("block", [b for b in CODE if not b.marker.startswith("not-run")], ids=lambda b: b.id)
def test_block_runs_as_written(block: Block, tmp_path: Path) -> None:
    env = environment()
    if "pip install ." in block.code and IN_USERNS:
        pytest.skip("pip cannot reach the package index from the user namespace's own network; the root stage runs it")
    if "pip install ." in block.code:
        # the Quick start: a fresh copy of the project, a venv of its own, nsworkers installed from it
        copy = tmp_path / "nsworkers"
        files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=False).stdout
        if files:
            for name in files.decode().split("\0"):
                if name and (ROOT / name).is_file():
                    (copy / name).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(ROOT / name, copy / name)
        else:  # not a git checkout (an sdist): copy the tree
            shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".tox", ".venv", "__pycache__", "*.egg-info"))
        env.pop("PYTHONPATH")
        cwd = copy
    else:
        cwd = tmp_path
    if block.lang == "python":
        (tmp_path / "snippet.py").write_text(block.code)
        script = f"exec python {shlex.quote(str(tmp_path / 'snippet.py'))}\n"
    else:
        script = shell_script(block)
    done = sandboxed(script, cwd, env, timeout=600 if "pip install" in block.code else 300)
    assert done.returncode == 0, (
        f"README line {block.line}:\n{block.code}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    )
    assert "Traceback" not in done.stderr

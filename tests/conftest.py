"""Fixtures: real namespaces with a per-run prefix, pools that are always shut down,
and a check that no thread of the test process ever left its network namespace."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest

import nsworkers

PREFIX = f"nswt{os.getpid()}-"
# A zygote's trial import may take 2 s, past which the module is not learned: safe, but on a CI
# machine loaded by other work a learning test would then fail. Tests that mean a time set their own.
os.environ.setdefault("NSWORKERS_TRIAL_TIMEOUT", "60")
_counter = itertools.count()
IN_USERNS = os.environ.get("NSW_TEST_USERNS") == "1"


def pytest_configure(config: pytest.Config) -> None:
    """Without root, run the whole session as root of a new user namespace with its own net and mount namespaces.

    `unshare -Urnm` is open to unprivileged users here; a tmpfs on /run gives
    `ip netns` a /run/netns of its own. The privileged tests then really run
    (real namespaces, real netlink) instead of being skipped.
    """
    if os.geteuid() == 0 or IN_USERNS or os.environ.get("NSW_TEST_NO_USERNS") == "1":
        return
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-Urnm", "true"], capture_output=True, check=False).returncode:
        return
    import tempfile

    private_tmp = tempfile.mkdtemp(prefix="nsw-userns-")  # /tmp/pytest-of-root may belong to the real root
    env = dict(os.environ, NSW_TEST_USERNS="1", TMPDIR=private_tmp, PYTEST_DEBUG_TEMPROOT=private_tmp)
    # The new network namespace starts with lo down: tests that serve on 127.0.0.1 need it up.
    script = 'ip link set lo up && mount -t tmpfs nsw-run /run && exec "$@"'
    args = [str(a) for a in config.invocation_params.args]
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        capture.suspend_global_capture(in_=True)  # hand the real stdout/stderr to the new process
    os.chdir(config.invocation_params.dir)
    os.execve(unshare, [unshare, "-Urnm", "sh", "-c", script, "sh", sys.executable, "-m", "pytest", *args], env)


IS_ROOT = os.geteuid() == 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if IS_ROOT:
        return
    skip = pytest.mark.skip(reason="needs root")
    for item in items:
        if "privileged" in item.keywords:
            item.add_marker(skip)


def ip(*args: str) -> str:
    """Run iproute2's ``ip``; raise with its stderr on failure."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def _own_netns() -> list[str]:
    try:
        return [n for n in os.listdir("/run/netns") if n.startswith(PREFIX)]
    except FileNotFoundError:
        return []


@pytest.fixture(scope="session", autouse=True)
def _remove_leftover_namespaces() -> Iterator[None]:
    yield
    for name in _own_netns():
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


@pytest.fixture
def make_netns() -> Iterator[Callable[[], str]]:
    """Create named network namespaces (``ip netns add``); all deleted after the test."""
    made: list[str] = []

    def make() -> str:
        name = f"{PREFIX}{next(_counter)}"
        ip("netns", "add", name)
        made.append(name)
        ip("-n", name, "link", "set", "lo", "up")
        return name

    yield make
    for name in made:
        if os.path.exists(f"/run/netns/{name}"):
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


@pytest.fixture
def netns(make_netns: Callable[[], str]) -> str:
    """Path of one fresh named network namespace."""
    return f"/run/netns/{make_netns()}"


def _children() -> set[int]:
    alive = set()
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):  # gone since the listing (a zygote's trial child)
            if child.status() != psutil.STATUS_ZOMBIE:
                alive.add(child.pid)
    return alive


@pytest.fixture
def pool() -> Iterator[nsworkers.Pool]:
    """A pool shut down after the test; checks it left no live process behind."""
    before = _children()
    p = nsworkers.Pool()
    try:
        yield p
    finally:
        p.shutdown()
        assert wait_for(lambda: not (_children() - before)), f"processes left: {_children() - before}"


def dead(pid: int) -> bool:
    """*pid* is gone or a zombie (race-free: it may vanish between two psutil calls)."""
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, interval: float = 0.01) -> bool:
    """Poll *predicate* until true or *timeout*; returns its last value.

    The timeout only bounds a wait for something that must happen: generous, because the
    machine may be busy (speed is measured in bench/, never asserted here)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def thread_netns() -> set[str]:
    """The network namespaces the test process's threads are in now."""
    result = set()
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(FileNotFoundError, PermissionError):  # a thread exiting now
            result.add(os.readlink(f"/proc/self/task/{tid}/ns/net"))
    return result


@pytest.fixture(autouse=True)
def _no_thread_left_its_namespace() -> Iterator[None]:
    # lxkns-style guard: whatever a test does, no caller thread may change namespace.
    home = os.readlink("/proc/self/ns/net")
    yield
    assert thread_netns() <= {home}


def run_python(code: str, *, no_caps: bool = False, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run *code* in a fresh interpreter that can import nsworkers (*no_caps*: with every capability dropped)."""
    src = os.path.dirname(os.path.dirname(os.path.abspath(nsworkers.__file__)))
    env = dict(os.environ, PYTHONPATH=src)
    cmd = [sys.executable, "-c", code]
    if no_caps:
        cmd = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)


@pytest.fixture
def make_mount_ns() -> Iterator[Callable[[str], int]]:
    """Start processes in private mount namespaces: ``make(script)`` runs *script* (sh) in one, then keeps it alive.

    Returns the holder's pid; its ``/proc/PID/ns/mnt`` is a mount namespace the
    test shaped (a "container's filesystem"). Every holder is killed after the test.
    """
    holders: list[subprocess.Popen[str]] = []

    def make(script: str) -> int:
        proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", f"{script}\necho ready\nexec sleep 1000"],
            stdout=subprocess.PIPE,
            text=True,
        )
        holders.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"mount namespace setup failed: {script!r}")
        return proc.pid

    yield make
    for proc in holders:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def in_child(body: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run *body* in a forked child (for what cannot be undone: seccomp, ``setns``) and return the JSON it reports."""
    import json
    import signal
    import traceback

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.close(read_end)
            signal.alarm(60)
            try:
                report = body()
            except BaseException as exc:
                report = {"error": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))}
            os.write(write_end, json.dumps(report).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        data = reader.read()
    os.waitpid(pid, 0)
    assert data, "the child reported nothing"
    result: dict[str, Any] = json.loads(data)
    assert "error" not in result, result["error"]
    return result

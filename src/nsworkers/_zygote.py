"""How workers are started: the zygote fork server, or a plain fork of the caller.

The zygote (``_forkserver``) is a fresh interpreter (``subprocess`` exec, never a fork of the
caller), so a worker's cold start does not grow with the caller's heap or
thread count and never forks a multi-threaded process. It runs single-threaded::

    caller (Pool) --SEQPACKET control socket--> zygote
        ("spawn", specs) + namespace fds (SCM_RIGHTS)  ->  fork() -> worker
        <- ("spawned", pid) + caller's end of the worker channel (SCM_RIGHTS)
        ("reap", pid)    ->  kill if still alive, waitpid  <- ("reaped", status, killed)

The zygote reaps its children on SIGCHLD and keeps their exit statuses for a
while, so the pool can say *how* a worker died. It exits on EOF of the control
socket (the caller died or shut down); its workers die with it through
``PR_SET_PDEATHSIG``. The zygote itself has no death signal: that would fire
when the *thread* that started it exits, and pools are often first used from a
short-lived thread.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
from typing import Any, Protocol

from ._forkserver import _CTL_BUF, close_all, reap_child
from ._sys import recv_fds
from .errors import WorkerStartError


class Spawner(Protocol):
    def spawn(self, specs: list[tuple[int, int, str, tuple[int, int]]]) -> tuple[int, tuple[int, int]]: ...

    def reap(self, pid: int, kill: bool = False) -> tuple[int | None, bool]: ...

    def forget(self, pid: int) -> None: ...

    def close(self) -> None: ...

    def close_in_child(self) -> None: ...

    def pids(self) -> list[int]: ...


def describe_status(status: int | None, killed: bool) -> str:
    """Human text for a ``waitpid`` status."""
    if status is None:
        return "exit status unknown"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        if killed:
            return f"hung after closing its channel; killed by nsworkers with {name}"
        return f"killed by signal {name}"
    if os.WIFEXITED(status):
        return f"exited with code {os.WEXITSTATUS(status)}"
    return f"wait status {status:#x}"


# ---------------------------------------------------------------------------
# caller side


class ZygoteSpawner:
    """Starts workers through a zygote process; restarts the zygote if it died."""

    def __init__(self, preload: tuple[str, ...] = (), spares: int = 1) -> None:
        self._preload = preload
        self._spares = spares
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._ctl: socket.socket | None = None
        self._closed = False
        self._generation = 0
        self._pids: dict[int, int] = {}  # worker pid -> zygote generation

    @property
    def zygote_pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def pids(self) -> list[int]:
        return list(self._pids)

    def _start(self) -> socket.socket:
        if self._closed:
            raise WorkerStartError("the pool is shut down")
        self._stop_proc()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        code = (
            "import sys; sys.path.insert(0, sys.argv.pop(1)); "
            "from nsworkers._forkserver import zygote_main; zygote_main(int(sys.argv[1]))"
        )
        executable = sys.executable or getattr(sys, "_base_executable", "") or "python3"
        try:
            with theirs:
                self._proc = subprocess.Popen(
                    [executable, "-c", code, package_root, str(theirs.fileno())],
                    pass_fds=(theirs.fileno(),),
                    stdin=subprocess.DEVNULL,
                    close_fds=True,
                )
            ours.sendall(pickle.dumps({"sys_path": list(sys.path), "preload": self._preload, "spares": self._spares}))
            reply = ours.recv(_CTL_BUF)
        except OSError as exc:
            ours.close()
            raise WorkerStartError(f"cannot start the zygote: {exc}") from exc
        if not reply:
            ours.close()
            code_ = self._proc.wait() if self._proc else None
            raise WorkerStartError(f"the zygote exited during start-up (exit status {code_})")
        message = pickle.loads(reply)
        if message[0] != "ready":
            ours.close()
            raise WorkerStartError(f"the zygote failed to start: {message[1]}")
        self._ctl = ours
        self._generation += 1
        return ours

    def _request(self, payload: bytes, fds: list[int]) -> tuple[Any, list[int]]:
        # Caller holds self._lock. One retry with a fresh zygote if the old one died.
        for attempt in (0, 1):
            ctl = self._ctl or self._start()
            try:
                socket.send_fds(ctl, [payload], fds)
                data, got_fds, _flags, _addr = recv_fds(ctl, _CTL_BUF, 4)
                if data:
                    return pickle.loads(data), got_fds
            except (BrokenPipeError, ConnectionResetError):
                pass
            self._ctl = None
            ctl.close()
            if attempt:
                break
        raise WorkerStartError("the zygote died and could not be restarted")

    def spawn(self, specs: list[tuple[int, int, str, tuple[int, int]]]) -> tuple[int, tuple[int, int]]:
        """Fork a worker for *specs*; return its pid and the caller's channel fds ``(read, write)``."""
        fds = [s[0] for s in specs]
        wire = [(i, s[1], s[2], s[3]) for i, s in enumerate(specs)]
        with self._lock:
            message, got = self._request(pickle.dumps(("spawn", wire)), fds)
            if message[0] != "spawned" or len(got) != 2:
                for fd in got:
                    os.close(fd)
                raise WorkerStartError(f"the zygote could not fork a worker: {message[1]}")
            pid = message[1]
            self._pids[pid] = self._generation
        return pid, (got[0], got[1])

    def reap(self, pid: int, kill: bool = False) -> tuple[int | None, bool]:
        """Wait for worker *pid* (killing it first if *kill*); ``(wait status or None, killed)``."""
        with self._lock:
            generation = self._pids.pop(pid, None)
            if generation != self._generation or self._ctl is None:
                return None, False  # its zygote is gone, and so is it (death signal)
            try:
                message, _ = self._request(pickle.dumps(("reap", pid, kill)), [])
            except WorkerStartError:
                return None, False
        return message[1], message[2]

    def forget(self, pid: int) -> None:
        """A worker exited normally; its status is of no interest."""
        with self._lock:
            self._pids.pop(pid, None)

    def _stop_proc(self) -> None:
        if self._ctl is not None:
            self._ctl.close()
            self._ctl = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._stop_proc()
            self._pids.clear()

    def close_in_child(self) -> None:
        """After fork in the caller: drop our copies without touching the parent's zygote."""
        self._closed = True
        if self._ctl is not None:
            self._ctl.close()
            self._ctl = None
        self._proc = None


class ForkSpawner:
    """``start_method="fork"``: fork workers straight from the caller (they get its state)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pids: set[int] = set()

    def pids(self) -> list[int]:
        return list(self._pids)

    def spawn(self, specs: list[tuple[int, int, str, tuple[int, int]]]) -> tuple[int, tuple[int, int]]:
        from . import _worker
        from ._protocol import channel_pipes

        ours, theirs = channel_pipes()
        parent = os.getpid()
        # The death signal fires when the forking *thread* exits, so only arm it from the main thread.
        pdeathsig = threading.current_thread() is threading.main_thread()
        with self._lock:
            try:
                pid = os.fork()
            except OSError:
                close_all(*ours, *theirs)
                raise
            if pid == 0:  # pragma: no cover - runs in the child
                try:
                    close_all(*ours)
                    _worker.child_main(theirs, list(specs), parent, pdeathsig)
                finally:
                    os._exit(70)
            self._pids.add(pid)
        close_all(*theirs)
        return pid, ours

    def reap(self, pid: int, kill: bool = False) -> tuple[int | None, bool]:
        with self._lock:
            if pid not in self._pids:
                return None, False
            self._pids.discard(pid)
        return reap_child(pid, kill)

    def forget(self, pid: int) -> None:
        # Our own child: it must still be waited for, or it stays a zombie.
        self.reap(pid)

    def close(self) -> None:
        for pid in self.pids():
            self.reap(pid)

    def close_in_child(self) -> None:
        self._pids.clear()

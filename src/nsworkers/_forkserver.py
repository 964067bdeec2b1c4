"""The zygote itself: a small single-threaded fork server (the caller side is in ``_zygote``).

It runs in a fresh interpreter and imports only what a worker needs: this
module, ``_worker``, ``_protocol`` and the pool's *preload* list. Above all it
must not import ``threading`` (nor ``logging`` or ``subprocess``, which do):
a module that registers an at-fork hook runs Python code in every forked
worker, which touched about 130 more copy-on-write pages per worker here.
The caller's side of the package (pool, spawners) is never imported here.
"""

from __future__ import annotations

import collections
import gc
import importlib
import os
import pickle
import select
import signal
import socket
import sys
import time
from typing import Any

from . import _worker
from ._protocol import channel_pipes
from ._sys import recv_fds

_CTL_BUF = 1 << 16
_MAX_STATUSES = 4096
_EXIT_GRACE = 0.1  # seconds a worker that closed its channel gets to finish exiting

#: A spawn request's targets: (index of its fd among the passed fds, CLONE_NEW* flag, type name, (dev, ino)).
Wire = list[tuple[int, int, str, tuple[int, int]]]


def close_all(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def reap_child(pid: int, kill: bool = False) -> tuple[int | None, bool]:
    """Wait for our child *pid*; SIGKILL it at once (*kill*) or if still alive after a short grace."""
    deadline = time.monotonic() + (0 if kill else _EXIT_GRACE)
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None, False
        if done:
            return status, False
        if time.monotonic() >= deadline:
            break
        time.sleep(0.001)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        return os.waitpid(pid, 0)[1], True
    except ChildProcessError:
        return None, True


class _Zygote:
    def __init__(self, ctl: socket.socket, spares: int) -> None:
        self.ctl = ctl
        self.pid = os.getpid()
        self.live: set[int] = set()
        self.statuses: collections.OrderedDict[int, int] = collections.OrderedDict()
        self.want_spares = spares
        self.spares: collections.deque[tuple[int, socket.socket]] = collections.deque()

    def on_sigchld(self, signum: int, frame: object) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.live.discard(pid)
            self.statuses[pid] = status
            while len(self.statuses) > _MAX_STATUSES:
                self.statuses.popitem(last=False)

    def spawn(self, wire: Wire, fds: list[int]) -> None:
        if len(fds) != len(wire):
            for fd in fds:
                os.close(fd)
            self.reply(("error", f"expected {len(wire)} namespace fds, got {len(fds)}"))
            return
        ours, theirs = channel_pipes()
        try:
            if self.want_spares:
                pid = self.hand_to_spare(wire, fds, theirs)
            else:
                pid = self.fork_worker(wire, fds, theirs, ours)
        except OSError as exc:  # fork failed
            close_all(*ours, *theirs, *fds)
            self.reply(("error", str(exc)))
            return
        close_all(*theirs, *fds)
        try:
            self.reply(("spawned", pid), list(ours))
        finally:
            close_all(*ours)

    def fork_worker(
        self,
        wire: Wire,
        fds: list[int],
        theirs: tuple[int, int],
        ours: tuple[int, int],
    ) -> int:
        """Fork a worker for the target now (no spares)."""
        specs = [(fds[i], flag, name, ident) for i, flag, name, ident in wire]
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the worker
            try:
                _worker.reset_signals()  # first: nothing may run our SIGCHLD handler here
                close_all(*ours)
                self.ctl.close()
                _worker.child_main(theirs, specs, self.pid, True)
            finally:
                os._exit(70)
        self.live.add(pid)
        return pid

    def fork_spare(self) -> None:
        """Fork a spare worker (see ``_worker.spare_main``) and keep our end of its socket."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid = os.fork()
        except OSError:
            ours.close()
            theirs.close()
            raise
        if pid == 0:  # pragma: no cover - runs in the spare
            try:
                _worker.reset_signals()  # first: nothing may run our SIGCHLD handler here
                for sock in (ours, self.ctl, *(s for _, s in self.spares)):
                    sock.close()
                _worker.spare_main(theirs, self.pid)
            finally:
                os._exit(70)
        theirs.close()
        self.live.add(pid)
        self.spares.append((pid, ours))

    def hand_to_spare(self, wire: Wire, fds: list[int], theirs: tuple[int, int]) -> int:
        """Send the target and the worker's channel ends to a spare (forked ahead, or now if none is left)."""
        while True:
            if not self.spares:
                self.fork_spare()
            pid, sock = self.spares.popleft()
            try:
                socket.send_fds(sock, [pickle.dumps(wire)], [*fds, *theirs])
                return pid
            except OSError:
                continue  # that spare died (SIGCHLD reaps it): take the next
            finally:
                sock.close()

    def reap(self, pid: int, kill: bool) -> None:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
        try:
            if pid in self.statuses:
                result: tuple[int | None, bool] = (self.statuses.pop(pid), False)
            elif pid in self.live:
                result = reap_child(pid, kill)
                self.live.discard(pid)
            else:
                result = (None, False)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        self.reply(("reaped", *result))

    def kill_and_reap_all(self) -> None:
        """On the way out: kill and reap every worker still alive.

        They would die with us anyway (``PR_SET_PDEATHSIG``), but as orphans
        left for init to reap; an init that does not reap (a container's)
        would keep them as zombies. A worker told to stop may still be
        exiting when the caller closes the control socket.
        """
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for pid in list(self.live):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in list(self.live):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass

    def reply(self, message: tuple[Any, ...], fds: list[int] | None = None) -> None:
        socket.send_fds(self.ctl, [pickle.dumps(message)], fds or [])

    def serve(self) -> None:
        pending = select.poll()
        pending.register(self.ctl, select.POLLIN)
        filling = False
        while True:
            # Between requests, refill the spares once they are all used, all at once:
            # after a fork every page the zygote writes is copied, so forks back to back
            # copy the request path's pages once per burst, not once per spawn.
            # A waiting request goes first.
            filling = len(self.spares) < self.want_spares and (filling or not self.spares)
            if filling and not pending.poll(0):
                try:
                    self.fork_spare()
                except OSError:
                    self.want_spares = len(self.spares)  # cannot fork now: fork on demand instead
                continue
            data, fds, _flags, _addr = recv_fds(self.ctl, _CTL_BUF, 16)
            if not data:
                return
            request = pickle.loads(data)
            if request[0] == "spawn":
                self.spawn(request[1], fds)
            elif request[0] == "reap":
                self.reap(request[1], request[2])
            else:
                for fd in fds:
                    os.close(fd)
                self.reply(("error", f"unknown request {request[0]!r}"))


def zygote_main(ctl_fd: int) -> None:
    """Entry point of the zygote interpreter (``python -c ...``)."""
    ctl = socket.socket(fileno=ctl_fd)
    _worker.set_name("nsw-zygote")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    config = pickle.loads(ctl.recv(_CTL_BUF))
    sys.path[:] = config["sys_path"]
    try:
        for name in ("nsworkers._worker", "nsworkers._protocol", *config["preload"]):
            importlib.import_module(name)
    except BaseException as exc:
        ctl.sendall(pickle.dumps(("error", f"preloading {name!r} failed: {exc!r}")))
        return
    zygote = _Zygote(ctl, config["spares"])
    signal.signal(signal.SIGCHLD, zygote.on_sigchld)
    # Freeze the heap: objects inherited by workers are never touched by their GC,
    # so their pages stay shared with the zygote (copy-on-write).
    gc.collect()
    gc.freeze()
    ctl.sendall(pickle.dumps(("ready", os.getpid())))
    try:
        zygote.serve()
    except (ConnectionResetError, BrokenPipeError, EOFError):
        pass
    zygote.kill_and_reap_all()
    os._exit(0)  # no finalizers: nothing of the caller's lives here

"""The zygote: a small single-threaded fork server (its caller-side client is ``_spawners.ZygoteSpawner``).

It runs in a fresh interpreter and imports only what a worker needs: this
module, ``_worker``, ``_messages`` and the pool's *preload* list. Above all it
must not import ``threading`` (nor ``logging`` or ``subprocess``, which do):
a module that registers an at-fork hook runs Python code in every forked
worker, which touched about 130 more copy-on-write pages per worker here.
The caller's side of the package (pool, spawners) is never imported here.

It serves the records of ``_messages`` one at a time: a :class:`SpawnRequest`
is answered by :class:`Spawned` (with the caller's channel ends and a pidfd of
the worker) or :class:`RequestFailed`; a :class:`ReapRequest` by
:class:`Reaped`. Every reply echoes its request's id. It reaps its children on
SIGCHLD and keeps their exit statuses for a while, so the pool can say *how*
a worker died. It exits on EOF of the control socket (the caller died or shut
down), killing and reaping its workers first.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # the C module under signal.py (no stub)
import collections
import errno
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
from ._messages import (
    CONTROL_BUFFER,
    Reaped,
    ReapRequest,
    RequestFailed,
    SpareAssignment,
    Spawned,
    SpawnRequest,
    ZygoteConfig,
    ZygoteFailed,
    ZygoteReady,
    channel_pipes,
)
from ._sys import recv_fds

_MAX_STATUSES = 4096
_EXIT_GRACE = 1.0  # seconds a worker that closed its channel (or was killed) gets to finish exiting
_MAX_PASSED_FDS = 16


def close_all(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def kill_group(pid: int) -> None:
    """SIGKILL worker *pid* and what its callable left in its process group (a worker leads its own)."""
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
            return
        except (ProcessLookupError, PermissionError):
            continue


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
    kill_group(pid)
    try:
        return os.waitpid(pid, 0)[1], True
    except ChildProcessError:
        return None, True


def fork_with_pidfd() -> tuple[int, int]:
    """``fork()``, and in the parent a pidfd of the child taken before anything can reap it.

    SIGCHLD (whose handler reaps) stays blocked from before the fork until the
    pidfd is open, so the pid cannot be reaped and reused in between. Returns
    ``(0, -1)`` in the child. The pidfd is -1 where the kernel has none (< 5.3).
    """
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    try:
        pid = os.fork()
        if pid == 0:
            return 0, -1
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            pidfd = -1
        return pid, pidfd
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class _Spare:
    __slots__ = ("pid", "pidfd", "sock")

    def __init__(self, pid: int, sock: socket.socket, pidfd: int) -> None:
        self.pid = pid
        self.sock = sock
        self.pidfd = pidfd

    def close(self) -> None:
        self.sock.close()
        close_all(self.pidfd)


class _Zygote:
    def __init__(self, ctl: socket.socket, spares: int) -> None:
        self.ctl = ctl
        self.pid = os.getpid()
        self.live: set[int] = set()
        self.statuses: collections.OrderedDict[int, int] = collections.OrderedDict()
        self.want_spares = spares
        self.spares: collections.deque[_Spare] = collections.deque()

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

    def spawn(self, request: SpawnRequest, fds: list[int]) -> None:
        if len(fds) != len(request.targets):
            close_all(*fds)
            self.reply(RequestFailed(request.request_id, errno.EINVAL, f"expected {len(request.targets)} fds"))
            return
        ours, theirs = channel_pipes()
        try:
            if self.want_spares:
                pid, pidfd = self.hand_to_spare(request, fds, theirs)
            else:
                pid, pidfd = self.fork_worker(request, fds, theirs, ours)
        except OSError as exc:  # fork failed, out of fds ...
            close_all(*ours, *theirs, *fds)
            self.reply(RequestFailed(request.request_id, exc.errno or 0, f"cannot start a worker: {exc}"))
            return
        close_all(*theirs, *fds)
        try:
            self.reply(Spawned(request.request_id, pid), [*ours, pidfd] if pidfd >= 0 else list(ours))
        finally:
            close_all(*ours, pidfd)

    def fork_worker(
        self,
        request: SpawnRequest,
        fds: list[int],
        theirs: tuple[int, int],
        ours: tuple[int, int],
    ) -> tuple[int, int]:
        """Fork a worker for the target now (no spares)."""
        specs = [(fds[t.fd_index], t.flag, t.type_name, t.ident) for t in request.targets]
        pid, pidfd = fork_with_pidfd()
        if pid == 0:  # pragma: no cover - runs in the worker
            try:
                _worker.reset_signals()  # first: nothing may run our SIGCHLD handler here
                close_all(*ours, *(s.pidfd for s in self.spares))
                self.ctl.close()
                _worker.child_main(theirs, specs, self.pid, True, request.native)
            finally:
                os._exit(70)
        self.live.add(pid)
        self.statuses.pop(pid, None)  # an earlier process's status under a reused pid
        return pid, pidfd

    def fork_spare(self) -> None:
        """Fork a spare worker (see ``_worker.spare_main``) and keep our end of its socket."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid, pidfd = fork_with_pidfd()
        except OSError:
            ours.close()
            theirs.close()
            raise
        if pid == 0:  # pragma: no cover - runs in the spare
            try:
                _worker.reset_signals()  # first: nothing may run our SIGCHLD handler here
                for spare in self.spares:
                    spare.close()
                ours.close()
                self.ctl.close()
                _worker.spare_main(theirs, self.pid)
            finally:
                os._exit(70)
        theirs.close()
        self.live.add(pid)
        self.statuses.pop(pid, None)  # an earlier process's status under a reused pid
        self.spares.append(_Spare(pid, ours, pidfd))

    def hand_to_spare(self, request: SpawnRequest, fds: list[int], theirs: tuple[int, int]) -> tuple[int, int]:
        """Send the target and the worker's channel ends to a spare (forked ahead, or now if none is left)."""
        while True:
            if not self.spares:
                self.fork_spare()
            spare = self.spares.popleft()
            try:
                assignment = SpareAssignment(request.targets, request.native)
                socket.send_fds(spare.sock, [pickle.dumps(assignment)], [*fds, *theirs])
                return spare.pid, spare.pidfd
            except OSError:
                close_all(spare.pidfd)
                continue  # that spare died (SIGCHLD reaps it): take the next
            finally:
                spare.sock.close()

    def reap(self, request: ReapRequest) -> None:
        pid = request.pid
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
        try:
            # Live first: a status kept for an earlier process with this pid (pids wrap) must not
            # answer for the one running now.
            if pid in self.live:
                status, killed = reap_child(pid, request.kill)
                self.live.discard(pid)
                self.statuses.pop(pid, None)
            elif pid in self.statuses:
                status = self.statuses.pop(pid)
                killed = False
            else:
                status, killed = None, False
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        self.reply(Reaped(request.request_id, pid, status, killed))

    def kill_and_reap_all(self) -> None:
        """On the way out: kill and reap every worker still alive.

        They would die with us anyway (``PR_SET_PDEATHSIG``), but as orphans
        left for init to reap; an init that does not reap (a container's)
        would keep them as zombies. A worker told to stop may still be
        exiting when the caller closes the control socket.
        """
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for pid in list(self.live):
            kill_group(pid)
        for pid in list(self.live):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass

    def reply(self, message: Spawned | Reaped | RequestFailed, fds: list[int] | None = None) -> None:
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
            try:
                data, fds, _flags, _addr = recv_fds(self.ctl, CONTROL_BUFFER, _MAX_PASSED_FDS)
            except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for clarity
                continue
            if not data:
                return
            try:
                request: Any = pickle.loads(data)
            except Exception:
                request = None
            if isinstance(request, SpawnRequest):
                self.spawn(request, fds)
                continue
            close_all(*fds)
            if isinstance(request, ReapRequest):
                self.reap(request)
            else:
                rid = getattr(request, "request_id", -1)
                self.reply(RequestFailed(rid if isinstance(rid, int) else -1, errno.EPROTO, "unknown request"))


def _reset_inherited_signals() -> None:
    """Unblock every signal and restore default dispositions: a caller's mask and SIG_IGNs survive ``exec``.

    A caller that blocked SIGCHLD before making its pool would otherwise leave
    the zygote unable to reap (zombies); one that ignores SIGTERM would make
    it unkillable by ``systemctl stop``.
    """
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    for signum in signal.valid_signals():
        if signum in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            _signal.signal(int(signum), _signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)  # the caller decides; a Ctrl-C reaches the whole group


def zygote_main(ctl_fd: int) -> None:
    """Entry point of the zygote interpreter (``python -c ...``)."""
    _reset_inherited_signals()
    ctl = socket.socket(fileno=ctl_fd)
    _worker.set_name("nsw-zygote")
    config = pickle.loads(ctl.recv(CONTROL_BUFFER))
    if not isinstance(config, ZygoteConfig):
        ctl.sendall(pickle.dumps(ZygoteFailed(f"expected a ZygoteConfig, got {type(config).__name__}")))
        return
    sys.path[:] = config.sys_path
    try:
        for name in ("nsworkers._worker", "nsworkers._messages", *config.preload):
            importlib.import_module(name)
    except BaseException as exc:
        ctl.sendall(pickle.dumps(ZygoteFailed(f"preloading {name!r} failed: {exc!r}")))
        return
    zygote = _Zygote(ctl, config.spares)
    signal.signal(signal.SIGCHLD, zygote.on_sigchld)
    # Freeze the heap: objects inherited by workers are never touched by their GC,
    # so their pages stay shared with the zygote (copy-on-write).
    gc.collect()
    gc.freeze()
    ctl.sendall(pickle.dumps(ZygoteReady(os.getpid())))
    try:
        zygote.serve()
    except (ConnectionResetError, BrokenPipeError, EOFError):
        pass
    zygote.kill_and_reap_all()
    os._exit(0)  # no finalizers: nothing of the caller's lives here

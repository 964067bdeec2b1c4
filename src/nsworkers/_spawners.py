"""How workers are started, seen from the caller: the zygote's client, or a plain fork of the caller.

The zygote (``_zygote``) is a fresh interpreter (``subprocess`` exec, never a
fork of the caller), so a worker's cold start does not grow with the caller's
heap or thread count and never forks a multi-threaded process. Its client
here sends numbered requests (``_messages.SpawnRequest``, ``ReapRequest``)
and a reader thread routes each reply to the caller waiting for that number.
No lock is held while a caller waits, and every wait has a deadline: a
caller that gives up (timeout, a signal's exception) leaves its request
*abandoned*, and the reader cleans up the late reply (a worker nobody wants
is killed and reaped) instead of handing it to the next caller.
"""

from __future__ import annotations

import errno
import functools
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from typing import NamedTuple, Protocol

from ._messages import (
    CONTROL_BUFFER,
    Reaped,
    ReapRequest,
    RequestFailed,
    Spawned,
    SpawnRequest,
    TargetWire,
    ZygoteConfig,
    ZygoteFailed,
    ZygoteReady,
    ZygoteReply,
    by_value,
    channel_pipes,
)
from ._sys import Gate, recv_fds
from ._target import Spec
from ._zygote import KILL_GRACE, RUNNING, close_all, reap_child, wait_a_little
from .errors import PoolClosedError, WorkerStartError, WorkerTimeoutError

_ZYGOTE_START_TIMEOUT = 30.0  # a zygote not ready by then is not coming (a fresh interpreter takes ~50 ms)
_REAP_TIMEOUT = 5.0  # how long to wait for a worker's exit status before giving up on it


class NewWorker(NamedTuple):
    """A started worker: its pid, the caller's ends of its channel, and a pidfd (-1 if the kernel has none)."""

    pid: int
    rfd: int
    wfd: int
    pidfd: int


class Spawner(Protocol):
    def spawn(self, specs: list[Spec], deadline: float | None, fn: object = None) -> NewWorker: ...

    def reap(self, pid: int, kill: bool = False) -> tuple[int | None, bool]: ...

    def kill(self, pid: int) -> None: ...

    def forget(self, pid: int) -> None: ...

    def close(self) -> None: ...

    def close_in_child(self) -> None: ...

    def pids(self) -> list[int]: ...


def describe_status(status: int | None, killed: bool) -> str:
    """Human text for a ``waitpid`` status."""
    if status is None:
        return "exit status unknown"
    if status == RUNNING:
        return f"killed by nsworkers; not exited {KILL_GRACE} s later (uninterruptible sleep?), reaped when it does"
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


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    return deadline - time.monotonic()


class _Waiter:
    """One numbered request waiting for its reply."""

    __slots__ = ("abandoned", "done", "fds", "reply")

    def __init__(self) -> None:
        self.done = Gate()  # waited on by the caller's thread, maybe the main one: see Gate
        self.reply: ZygoteReply | None = None
        self.fds: list[int] = []
        self.abandoned = False


class _Connection:
    """One zygote process, its control socket, and the reader thread that routes its replies by id."""

    def __init__(self, proc: subprocess.Popen[bytes], ctl: socket.socket) -> None:
        self.proc = proc
        self.ctl = ctl
        self.alive = True
        self.lock = threading.Lock()  # guards waiters and alive; never held while blocking
        self.waiters: dict[int, _Waiter] = {}
        self.pids: set[int] = set()
        #: Modules this zygote was asked to learn (it remembers its answer), with their spec as then.
        self.offered: dict[str, object] = {}
        self.reader = threading.Thread(target=self._read_replies, name="nsworkers-zygote-reader", daemon=True)

    # -- requests -----------------------------------------------------------

    def request(self, message: SpawnRequest | ReapRequest, fds: list[int], deadline: float | None) -> _Waiter:
        waiter = _Waiter()
        with self.lock:
            if not self.alive:
                raise WorkerStartError("the zygote exited")
            self.waiters[message.request_id] = waiter
        try:
            self._send(pickle.dumps(message), fds, deadline)
        except BaseException:
            with self.lock:
                self.waiters.pop(message.request_id, None)
            raise
        return waiter

    def offer(self, fn: object) -> tuple[tuple[tuple[str, str], ...], bool]:
        """What a spawn request for *fn* asks the zygote to learn, and whether again: its module, the first time only.

        And again after the module was reloaded here (``importlib.reload``
        gives it a new ``__spec__``): the zygote then reloads its copy, so
        later workers do not inherit the code this process replaced.
        """
        name = module_of(fn)
        if name is None:
            return (), False
        spec = getattr(sys.modules.get(name), "__spec__", None)
        with self.lock:
            known = self.offered.get(name, _UNSEEN)
            if known is spec or (known is _UNSEEN and len(self.offered) >= _MAX_OFFERED):
                return (), False
            self.offered[name] = spec  # kept: its id is never another spec's
        return module_chain(name), known is not _UNSEEN

    def _send(self, data: bytes, fds: list[int], deadline: float | None) -> None:
        while True:
            try:
                socket.send_fds(self.ctl, [data], fds, socket.MSG_DONTWAIT)
                return
            except BlockingIOError:
                pass
            except OSError as exc:
                self.fail(f"the zygote's control socket failed: {exc}")
                raise WorkerStartError(f"the zygote is gone: {exc}") from None
            remaining = _remaining(deadline)
            if remaining is not None and remaining <= 0:
                raise WorkerTimeoutError("the zygote did not take the request in time")
            poller = select.poll()
            poller.register(self.ctl, select.POLLOUT)
            poller.poll(None if remaining is None else max(1, int(remaining * 1000)))

    def wait(self, request_id: int, waiter: _Waiter, deadline: float | None) -> tuple[ZygoteReply, list[int]]:
        """The reply to *request_id*; on a timeout or an exception meanwhile, the request is abandoned."""
        try:
            if not waiter.done.wait(_remaining(deadline)):
                raise WorkerTimeoutError("the zygote did not answer in time")
        except BaseException:
            with self.lock:
                answered = waiter.done.is_set()
                if not answered:
                    waiter.abandoned = True  # the reader cleans up the late reply
            if answered:
                self._clean_up(waiter.reply, waiter.fds)
            raise
        if waiter.reply is None:
            raise WorkerStartError("the zygote exited before answering")
        return waiter.reply, waiter.fds

    # -- the reader thread --------------------------------------------------

    def _read_replies(self) -> None:
        try:
            while True:
                data, fds, flags, _ = recv_fds(self.ctl, CONTROL_BUFFER, 4)
                if not data:
                    break
                try:
                    reply = pickle.loads(data)
                except Exception:
                    close_all(*fds)
                    break  # not our zygote speaking: out of step, never trusted again
                if flags & socket.MSG_CTRUNC:
                    # The kernel dropped fds it could not install: this process is out of fds.
                    close_all(*fds)
                    fds = []
                    if isinstance(reply, Spawned):
                        self.kill_and_forget(reply.pid)
                        reply = RequestFailed(
                            reply.request_id,
                            errno.EMFILE,
                            f"worker {reply.pid} was started, but the caller could not receive its channel: "
                            "out of file descriptors (EMFILE: raise RLIMIT_NOFILE)",
                        )
                if not self._deliver(reply, fds):
                    break
        except OSError:
            pass
        self.fail("the zygote exited")

    def _deliver(self, reply: ZygoteReply, fds: list[int]) -> bool:
        """Hand *reply* to its waiter; False if it answers nothing we asked (the channel is then broken)."""
        request_id = getattr(reply, "request_id", None)
        with self.lock:
            waiter = self.waiters.pop(request_id, None) if isinstance(request_id, int) else None
            if waiter is not None and not waiter.abandoned:
                waiter.reply, waiter.fds = reply, fds
                waiter.done.set()
                return True
        if waiter is None:
            close_all(*fds)
            return False
        self._clean_up(reply, fds)
        return True

    def _clean_up(self, reply: ZygoteReply | None, fds: list[int]) -> None:
        """A reply its caller gave up on: close what it brought, and end a worker nobody will use."""
        close_all(*fds)
        if isinstance(reply, Spawned):
            self.kill_and_forget(reply.pid)

    def kill_and_forget(self, pid: int | None) -> None:
        """Have worker *pid* killed and reaped; nobody waits for the answer."""
        if pid is None:
            return
        self.pids.discard(pid)
        request = ReapRequest(_next_id(), pid, True)
        waiter = _Waiter()
        waiter.abandoned = True  # nobody waits: its Reaped reply is dropped
        with self.lock:
            if not self.alive:
                return
            self.waiters[request.request_id] = waiter
        try:
            self._send(pickle.dumps(request), [], time.monotonic() + _REAP_TIMEOUT)
        except (WorkerStartError, WorkerTimeoutError):
            pass

    def fail(self, reason: str) -> None:
        """The zygote is gone or out of step: wake every waiter with no reply, close the socket."""
        with self.lock:
            self.alive = False
            waiters, self.waiters = list(self.waiters.values()), {}
        for waiter in waiters:
            waiter.done.set()
        try:
            self.ctl.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def stop(self) -> None:
        """Close the control socket (the zygote kills its workers and exits on EOF) and wait for it."""
        self.fail("closed")
        if threading.current_thread() is not self.reader and self.reader.is_alive():
            self.reader.join(_REAP_TIMEOUT)
        self.ctl.close()
        try:
            self.proc.wait(timeout=_REAP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def native_modules() -> tuple[str, ...]:
    """The extension modules this process has loaded, for a worker to import before a mount-namespace join.

    After that join a worker loads no native code (the dynamic loader would
    open it, and the libraries it needs, by path in the target's filesystem),
    so it loads beforehand what the caller's own code has shown it needs.
    """
    from importlib.machinery import ExtensionFileLoader

    return tuple(
        name
        for name, module in list(sys.modules.items())
        if isinstance(getattr(module, "__loader__", None), ExtensionFileLoader)
    )


def module_of(fn: object) -> str | None:
    """The module a worker imports to load *fn* when pickle sends it by reference; None for code sent by value."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if isinstance(fn, types.MethodType):
        fn = fn.__func__
    if not isinstance(fn, (types.FunctionType, types.BuiltinFunctionType, type)):
        fn = type(fn)  # a callable instance: its class
    if by_value(fn):
        return None
    name = getattr(fn, "__module__", None)
    return name if isinstance(name, str) and name != "__main__" else None


def module_chain(name: str) -> tuple[tuple[str, str], ...]:
    """``(module, file)`` for *name* and its parent packages, as loaded here; () if one has no file.

    The zygote learns a module only if it finds each of these at the same
    file (``SpawnRequest.learn``): a module the caller loaded from elsewhere
    than its ``sys.path`` says, or a built-in one, is not learned.
    """
    parts = name.split(".")
    chain = []
    for end in range(1, len(parts) + 1):
        part = ".".join(parts[:end])
        spec = getattr(sys.modules.get(part), "__spec__", None)
        origin = getattr(spec, "origin", None)
        if not getattr(spec, "has_location", False) or not isinstance(origin, str):
            return ()
        chain.append((part, origin))
    return tuple(chain)


_UNSEEN = object()
_MAX_OFFERED = 256  # modules one zygote is asked to learn (it learns at most _zygote._MAX_LEARNED)

_ids = iter(range(1, 1 << 62))
_ids_lock = threading.Lock()


def _next_id() -> int:
    with _ids_lock:
        return next(_ids)


class ZygoteSpawner:
    """Starts workers through a zygote process; starts a new zygote when the last one died."""

    def __init__(self, preload: tuple[str, ...] = (), spares: int = 1) -> None:
        self._preload = preload
        self._spares = spares
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._conn: _Connection | None = None
        self._starting = False
        self._attempts = 0  # zygote starts so far
        self._failure: BaseException | None = None  # why start number _failed_attempt failed
        self._failed_attempt = 0
        self._closed = False
        self._owner: dict[int, _Connection] = {}  # worker pid -> the zygote that forked it

    @property
    def zygote_pid(self) -> int | None:
        conn = self._conn
        return None if conn is None else conn.proc.pid

    def pids(self) -> list[int]:
        return list(self._owner)

    def _connection(self, deadline: float | None) -> _Connection:
        """The live zygote; if there is none, one is started by a thread of its own.

        Callers wait for it with their deadline and may give up (a timeout, a
        signal's exception) without wasting the start: the next caller gets it.
        """
        with self._lock:
            attempt = None
            while True:
                if self._closed:
                    raise PoolClosedError("the pool is shut down")
                conn = self._conn
                if conn is not None and conn.alive:
                    return conn
                if attempt is not None and self._failed_attempt == attempt:
                    raise WorkerStartError(str(self._failure)) from self._failure
                if not self._starting:
                    self._starting = True
                    self._attempts += 1
                    dead, self._conn = conn, None
                    threading.Thread(
                        target=self._start_in_background, args=(dead,), name="nsworkers-zygote-start", daemon=True
                    ).start()
                attempt = self._attempts
                remaining = _remaining(deadline)
                if remaining is not None and remaining <= 0:
                    raise WorkerTimeoutError("the zygote did not start in time")
                self._cond.wait(remaining)

    def _start_in_background(self, dead: _Connection | None) -> None:
        if dead is not None:
            dead.stop()  # reap the zygote that died, close its socket
        conn = failure = None
        try:
            conn = self._start(time.monotonic() + _ZYGOTE_START_TIMEOUT)
        except BaseException as exc:
            failure = exc
        with self._lock:
            self._starting = False
            if conn is not None and not self._closed:
                self._conn, conn = conn, None
            elif failure is not None:
                self._failure, self._failed_attempt = failure, self._attempts
            self._cond.notify_all()
        if conn is not None:
            conn.stop()  # the pool closed meanwhile

    def _start(self, deadline: float | None) -> _Connection:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        code = (
            "import sys; sys.path.insert(0, sys.argv.pop(1)); "
            "from nsworkers._zygote import zygote_main; zygote_main(int(sys.argv[1]))"
        )
        executable = sys.executable or getattr(sys, "_base_executable", "") or "python3"
        try:
            with theirs:
                proc = subprocess.Popen(
                    [executable, "-c", code, package_root, str(theirs.fileno())],
                    pass_fds=(theirs.fileno(),),
                    stdin=subprocess.DEVNULL,
                    close_fds=True,
                )
        except OSError as exc:
            ours.close()
            raise WorkerStartError(f"cannot start the zygote: {exc}") from exc
        try:
            remaining = _remaining(deadline)
            ours.settimeout(_ZYGOTE_START_TIMEOUT if remaining is None else max(0.001, remaining))
            ours.sendall(pickle.dumps(ZygoteConfig(list(sys.path), self._preload, self._spares)))
            reply = ours.recv(CONTROL_BUFFER)
            ours.settimeout(None)
            message = pickle.loads(reply) if reply else None
        except BaseException as exc:
            ours.close()
            proc.kill()
            proc.wait()
            if isinstance(exc, socket.timeout):
                raise WorkerTimeoutError("the zygote did not start in time") from None
            if isinstance(exc, OSError):
                raise WorkerStartError(f"cannot start the zygote: {exc}") from exc
            raise
        if not isinstance(message, ZygoteReady):
            ours.close()
            status = proc.wait()
            if isinstance(message, ZygoteFailed):
                raise WorkerStartError(f"the zygote failed to start: {message.message}")
            raise WorkerStartError(f"the zygote exited during start-up (exit status {status})")
        conn = _Connection(proc, ours)
        conn.reader.start()
        return conn

    def spawn(self, specs: list[Spec], deadline: float | None, fn: object = None) -> NewWorker:
        """Start a worker joined to *specs* (their fds are the caller's to close) to run *fn* first.

        *fn*'s module is offered to the zygote to learn (``SpawnRequest.learn``).
        """
        targets = tuple(TargetWire(i, flag, name, ident) for i, (_, flag, name, ident) in enumerate(specs))
        fds = [spec[0] for spec in specs]
        for attempt in (0, 1):  # one retry with a fresh zygote if the old one died
            conn = self._connection(deadline)
            native = native_modules() if any(t.type_name == "mnt" for t in targets) else ()
            request = SpawnRequest(_next_id(), targets, native, *conn.offer(fn))
            try:
                waiter = conn.request(request, fds, deadline)
                reply, got = conn.wait(request.request_id, waiter, deadline)
            except WorkerStartError:
                if attempt or conn.alive:
                    raise
                continue
            if isinstance(reply, Spawned) and len(got) in (2, 3):
                with self._lock:
                    if self._closed:
                        close_all(*got)
                        raise PoolClosedError("the pool is shut down")
                    self._owner[reply.pid] = conn
                    conn.pids.add(reply.pid)
                return NewWorker(reply.pid, got[0], got[1], got[2] if len(got) == 3 else -1)
            close_all(*got)
            if isinstance(reply, RequestFailed):
                if reply.errno == errno.EMFILE:
                    raise WorkerStartError(f"{reply.message}") from OSError(reply.errno, os.strerror(reply.errno))
                raise WorkerStartError(f"the zygote could not start a worker: {reply.message}")
            raise WorkerStartError(f"unexpected reply from the zygote: {type(reply).__name__}")
        raise WorkerStartError("the zygote died and could not be restarted")

    def reap(self, pid: int, kill: bool = False) -> tuple[int | None, bool]:
        """Wait for worker *pid* (killing it first if *kill*); ``(wait status or None, killed)``."""
        with self._lock:
            conn = self._owner.pop(pid, None)
        if conn is None or not conn.alive:
            return None, False  # its zygote is gone, and so is it (death signal)
        conn.pids.discard(pid)
        request = ReapRequest(_next_id(), pid, kill)
        deadline = time.monotonic() + _REAP_TIMEOUT
        try:
            waiter = conn.request(request, [], deadline)
            reply, _ = conn.wait(request.request_id, waiter, deadline)
        except (WorkerStartError, WorkerTimeoutError):
            return None, False
        if isinstance(reply, Reaped):
            return reply.status, reply.killed
        return None, False

    def kill(self, pid: int) -> None:
        """Have worker *pid* killed and reaped without waiting: a caller past its deadline must not wait for it."""
        with self._lock:
            conn = self._owner.pop(pid, None)
        if conn is not None:
            conn.kill_and_forget(pid)

    def forget(self, pid: int) -> None:
        """A worker exited normally; its status is of no interest."""
        with self._lock:
            conn = self._owner.pop(pid, None)
        if conn is not None:
            conn.pids.discard(pid)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
            self._owner.clear()
            self._cond.notify_all()
        if conn is not None:
            conn.stop()

    def close_in_child(self) -> None:
        """After fork in the caller: drop our copies without touching the parent's zygote, take no lock."""
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._closed = True
        conn, self._conn = self._conn, None
        self._owner = {}
        if conn is not None:
            try:
                conn.ctl.close()
            except OSError:
                pass


class ForkSpawner:
    """``start_method="fork"``: fork workers straight from the caller (they get its state)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pids: set[int] = set()
        self._unreaped: set[int] = set()  # killed, not exited yet (uninterruptible sleep): reaped later

    def pids(self) -> list[int]:
        return list(self._pids)

    def _reap_the_unreaped(self, grace: float = 0) -> None:
        """``waitpid`` once more each child killed earlier that had not exited then (a zombie's pid is not reused)."""
        with self._lock:
            pending = list(self._unreaped)
        deadline = time.monotonic() + grace
        for pid in pending:
            if wait_a_little(pid, max(0.0, deadline - time.monotonic())) != RUNNING:
                with self._lock:
                    self._unreaped.discard(pid)

    def spawn(self, specs: list[Spec], deadline: float | None, fn: object = None) -> NewWorker:
        from . import _worker

        ours, theirs = channel_pipes()
        parent = os.getpid()
        # The death signal fires when the forking *thread* exits, so only arm it from the main thread.
        pdeathsig = threading.current_thread() is threading.main_thread()
        try:
            pid = os.fork()
        except OSError as exc:
            close_all(*ours, *theirs)
            raise WorkerStartError(f"cannot fork a worker: {exc}") from exc
        if pid == 0:  # pragma: no cover - runs in the child
            try:
                close_all(*ours)
                _worker.child_main(theirs, list(specs), parent, pdeathsig)
            finally:
                os._exit(70)
        close_all(*theirs)
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            pidfd = -1
        with self._lock:
            self._pids.add(pid)
        self._reap_the_unreaped()
        return NewWorker(pid, ours[0], ours[1], pidfd)

    def reap(self, pid: int, kill: bool = False) -> tuple[int | None, bool]:
        with self._lock:
            if pid not in self._pids:
                return None, False
            self._pids.discard(pid)
        status, killed = reap_child(pid, kill)  # not for long: the calling thread may be past its timeout
        if status == RUNNING:
            with self._lock:
                self._unreaped.add(pid)
        return status, killed

    def kill(self, pid: int) -> None:
        self.reap(pid, kill=True)  # our child: SIGKILL, then a waitpid that returns at once, or soon

    def forget(self, pid: int) -> None:
        # Our own child: it must still be waited for, or it stays a zombie.
        self.reap(pid)

    def close(self) -> None:
        for pid in self.pids():
            self.reap(pid)
        self._reap_the_unreaped(KILL_GRACE)  # one still asleep stays our zombie until it wakes and we exit

    def close_in_child(self) -> None:
        self._lock = threading.Lock()
        self._pids = set()
        self._unreaped = set()

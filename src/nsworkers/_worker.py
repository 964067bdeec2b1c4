"""The worker process: join the target namespaces once, then serve calls.

Runs in a freshly forked child (of the zygote, or of the caller with
``start_method="fork"``) and never returns: :func:`child_main` ends with
``os._exit``. Start-up order matters:

1. ``PR_SET_PDEATHSIG`` so the worker dies with its parent, and a check that
   the parent did not die before that;
2. a process name (``nsw-worker``), its own process group (so that a kill
   reaches what the callable forked), every signal unblocked and at its
   default but SIGINT and SIGPIPE (ignored: the caller decides);
3. every fd closed but the channel and the namespace fds;
4. for a mount-namespace target: the caller's root kept (``caller_open``)
   and imports bound to it (``_callerfs``), so nothing is ever loaded from
   the target's filesystem;
5. ``setns`` into each target in ``nsenter`` order while the process is
   single-threaded (mount and user namespaces require it), then a check that
   ``/proc/self/ns/*`` shows the expected inodes;
6. a seccomp filter that makes any later namespace change fail (or, where
   one cannot be installed, a check of every type after each call);
7. a ``READY`` (or ``JOIN_FAILED``) frame to the caller;
8. the call loop: receive a ``CALL`` frame, run it, reply under its request id.

The frames and their bodies are defined in ``_messages``.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # the C module under signal.py (no stub)
import errno
import os
import pickle
import signal
import socket
import sys
import traceback
import types
from collections.abc import Callable
from typing import Any, NoReturn

from . import _sys
from ._messages import (
    CALL,
    CONTROL_BUFFER,
    DILL,
    FATAL,
    JOIN_FAILED,
    OK,
    RAISED,
    RAISED_RAW,
    READY,
    STOP,
    TAINTED,
    UNLOADABLE,
    UNSENDABLE,
    Channel,
    ChannelClosed,
    Fatal,
    JoinFailed,
    Raised,
    RaisedRaw,
    Ready,
    SpareAssignment,
    TargetWire,
    dumps,
    loads,
)
from .errors import SerializationError

_FATAL_ERRORS = (MemoryError, RecursionError)

# (fd, CLONE_NEW* flag, type name, (dev, ino))
TargetSpec = tuple[int, int, str, tuple[int, int]]

_MAX_TARGETS = 8  # one fd per namespace type
_FOR_CHILDREN = {"pid": "pid_for_children", "time": "time_for_children"}


def child_main(
    fds: tuple[int, int],
    targets: list[TargetSpec],
    parent_pid: int,
    pdeathsig: bool,
    native: tuple[str, ...] = (),
    report: socket.socket | None = None,
) -> NoReturn:
    """Entry point right after fork; *fds* are the worker's channel ends ``(read, write)``. Never returns.

    *native*: extension modules to import before joining a mount namespace.
    *report*: the zygote's socket for what the first call imports (:func:`_report_imports`).
    """
    _exit_with(lambda: _main(fds, targets, parent_pid, pdeathsig, native, report))


def spare_main(sock: socket.socket, parent_pid: int) -> NoReturn:
    """Entry point of a spare: a worker forked ahead of need, before its namespaces are known.

    It does everything that does not depend on the target (death signal,
    name, signals, fds), rehearses the rest (:func:`_rehearse`), then waits
    on *sock* for one assignment -- the target specs, with the namespace fds
    and its channel ends by ``SCM_RIGHTS`` -- and from there is an ordinary
    worker. EOF: not needed after all.
    """
    _exit_with(lambda: _spare(sock, parent_pid))


def _exit_with(main: Callable[[], int]) -> NoReturn:
    code = 70
    try:
        code = main()
    except ChannelClosed:
        code = 0  # the caller went away (shut down, gave up on us): nothing to report to
    except BaseException:
        try:
            traceback.print_exc()
        finally:
            os._exit(70)
    os._exit(code)


def _prepare(parent_pid: int, pdeathsig: bool, keep: set[int], name: str) -> bool:
    """Set up the process (death signal, name, group, signals, fds); False if the parent already died."""
    if pdeathsig:
        _sys.prctl(_sys.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:
            return False  # parent died before the death signal was armed
    set_name(name)
    try:
        os.setpgid(0, 0)
    except OSError:
        pass  # a session leader already leads its group
    reset_signals()
    _close_fds_except(keep)
    return True


def set_name(name: str) -> None:
    try:
        _sys.set_process_name(name)
    except OSError:
        pass  # only cosmetic: what ps and top show


_CATCHABLE = tuple(int(s) for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP))


def reset_signals() -> None:
    """Every signal unblocked and at its default, but SIGINT and SIGPIPE ignored.

    SIGINT: the caller decides (a Ctrl-C reaches the whole process group).
    SIGPIPE: a vanished caller shows as EPIPE. Whatever the process we were
    forked from blocked or handled (a caller's mask, its Python handlers, the
    zygote's SIGCHLD handler) must not carry over. Through ``_signal``, with
    plain ints: ``signal.signal`` maps the previous handler back to an enum,
    which for a bound-method handler raises and formats a ValueError inside
    enum -- about 75 pages of the zygote's heap dirtied, copy-on-write, in
    every worker.
    """
    _signal.pthread_sigmask(_signal.SIG_SETMASK, ())
    for signum in _CATCHABLE:
        try:
            _signal.signal(signum, _signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
    _signal.signal(_signal.SIGPIPE, _signal.SIG_IGN)


def _spare(sock: socket.socket, parent_pid: int) -> int:
    if not _prepare(parent_pid, True, {sock.fileno()}, "nsw-spare"):
        return 1
    _rehearse()
    msg, fds, _, _ = _sys.recv_fds(sock, 1 << 16, 2 + _MAX_TARGETS)
    if not msg:
        return 0  # the zygote no longer needs us
    assignment: SpareAssignment = pickle.loads(msg)
    if len(fds) != len(assignment.targets) + 2:
        return 1  # not what the zygote sends: its request fails as a start-up crash
    targets = [(fds[t.fd_index], t.flag, t.type_name, t.ident) for t in assignment.targets]
    set_name("nsw-worker")
    return _start((fds[-2], fds[-1]), targets, assignment.native, sock)


def _rehearse() -> None:
    """While a spare waits for work: go through what a worker's start will do, short of doing it.

    A spare shares its pages with the zygote, copy-on-write: the first write
    to each one (a reference count is enough) copies it. A worker's start
    touches a few hundred of them; done here, while nobody waits, those copies
    are off the cold call's path. Nothing here has an effect outside this
    process.
    """
    try:
        pickle.loads(pickle.dumps(SpareAssignment((TargetWire(0, 0, "net", (0, 0)),), ()), protocol=5))
        loads(*dumps(Ready(0, [("net", (0, 0))])))
        loads(*dumps((0, (), {}, None)))
        dumps(None, main_by_name=True, contain=True)
        Channel(-1, -1).close()
        ns_dir = os.open("/proc/self/ns", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.stat("net", dir_fd=ns_dir)
        finally:
            os.close(ns_dir)
        try:
            _sys.setns(-1, 0)  # EBADF: the call path without the call
        except (OSError, ValueError):
            pass
        _sys.rehearse_namespace_filter()
    except Exception:  # pragma: no cover - only an optimization
        pass


def _main(
    fds: tuple[int, int],
    targets: list[TargetSpec],
    parent_pid: int,
    pdeathsig: bool,
    native: tuple[str, ...],
    report: socket.socket | None,
) -> int:
    keep = {*fds, *(t[0] for t in targets), *((report.fileno(),) if report is not None else ())}
    if not _prepare(parent_pid, pdeathsig, keep, "nsw-worker"):
        return 1
    return _start(fds, targets, native, report)


def _start(
    fds: tuple[int, int], targets: list[TargetSpec], native: tuple[str, ...], report: socket.socket | None = None
) -> int:
    """Join, then serve; *report*: a socket to the zygote, for :func:`_report_imports`."""
    global _ns_dir, _caller_root
    # Opened before joining: after a mount-namespace join /proc may be another
    # pid namespace's procfs, where /proc/self does not resolve.
    _ns_dir = os.open("/proc/self/ns", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    if any(t[2] == "mnt" for t in targets):
        from . import _callerfs

        _load_native(native)
        _caller_root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        _callerfs.install(_caller_root)

    # Not dumpable before anything is joined, if a user namespace will be: its credentials would
    # then belong to the container's user namespace, whose root could ptrace it and forge the
    # replies the caller unpickles. (Only then: a non-dumpable worker makes pidfd_getfd, and so
    # Pool.socket() and the exporter, need CAP_SYS_PTRACE.)
    if any(t[2] == "user" for t in targets):
        _sys.prctl(_sys.PR_SET_DUMPABLE, 0)
    chan = Channel(*fds)
    failure = _join(targets)
    for t in targets:
        os.close(t[0])
    if failure is not None:
        chan.send_obj(JOIN_FAILED, 0, JoinFailed(*failure))
        return 2
    joined = [(name, ident) for _, _, name, ident in targets]
    if any(name == "uts" for name, _ in joined):
        forget_uname_cache()  # filled in the caller (fork) or by a zygote's preload: the caller's host name
    if any(name in _FOR_CHILDREN for name, _ in joined):
        _fork_into_children_namespaces(fds)
    # After the join nothing may move this process again: a seccomp filter makes setns,
    # unshare and clone of new namespaces fail. Where none can be installed, every type
    # is read back after each call instead (about 1.5 us per type).
    links = []
    if not _sys.deny_namespace_changes():
        for name in _ALL_TYPES:
            try:
                fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=_ns_dir)
            except FileNotFoundError:
                continue  # a type this kernel does not have
            links.append((fd, os.readlink("", dir_fd=fd)))
    chan.send_obj(READY, 0, Ready(os.getpid(), joined))
    os.close(_ns_dir)
    return _serve(chan, links, report)


def forget_uname_cache() -> None:
    """Empty ``platform``'s cache of ``uname()``, so the next ``platform.node()`` asks this UTS namespace.

    Any ``platform.uname()``, ``system()`` or ``node()`` fills it, and so
    does any import of ``uuid`` (pyroute2, pytest), with the host name of
    wherever that ran.
    """
    platform = sys.modules.get("platform")
    if platform is not None and getattr(platform, "_uname_cache", None) is not None:
        vars(platform)["_uname_cache"] = None


def _load_native(names: tuple[str, ...]) -> None:
    """Import, before a mount-namespace join, the extension modules the caller uses: none can load after it."""
    import importlib

    for name in names:
        try:
            importlib.import_module(name)
        except BaseException:
            continue


#: What a callable could change, as /proc/self/ns names them (pid and time apply to children).
_ALL_TYPES = ("cgroup", "ipc", "mnt", "net", "pid_for_children", "time_for_children", "user", "uts")


def _fork_into_children_namespaces(fds: tuple[int, int]) -> None:
    """Joining a pid or time namespace only applies to children: fork once more, as nsenter does.

    The child becomes the worker; this process stays behind only to wait for
    it and exit the same way, so the zygote still sees how the worker ended.
    The child dies with it (``PR_SET_PDEATHSIG``), so killing it kills both.
    """
    global _ns_dir
    parent = os.getpid()
    child = os.fork()
    if child == 0:
        _sys.prctl(_sys.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() not in (0, parent):  # 0: the parent is outside our new pid namespace
            os._exit(1)
        try:  # this process's own /proc/PID/ns (the inherited one is the middle process's)
            own = os.open("/proc/self/ns", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return
        os.close(_ns_dir)
        _ns_dir = own
        return
    for fd in fds:
        os.close(fd)
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:  # pragma: no cover
            continue
    if os.WIFSIGNALED(status):
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 70)


def _close_fds_except(keep: set[int]) -> None:
    low = 3
    for fd in sorted(keep):
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1
    os.closerange(low, 1 << 20)


_ns_dir = -1


def _current_id(name: str) -> tuple[int, int]:
    st = os.stat(_FOR_CHILDREN.get(name, name), dir_fd=_ns_dir)
    return (st.st_dev, st.st_ino)


def _join(targets: list[TargetSpec]) -> tuple[int, str] | None:
    """Join every target the way util-linux nsenter does; return (errno, message) on failure.

    Two passes: first everything but the user namespace, ignoring failures
    (entering a user namespace last *drops* privileges), then the user
    namespace followed by whatever is left (entering it first *gains* the
    privileges to join the rest). A namespace the worker is already in is
    skipped: joining one's own user namespace is EINVAL.
    """
    pending = [t for t in targets if _current_id(t[2]) != t[3]]
    for attempt in (0, 1):
        still = []
        for target in pending:
            fd, flag, name, _ = target
            if attempt == 0 and flag == _sys.CLONE_NEWUSER:
                still.append(target)
                continue
            try:
                _sys.setns(fd, flag)
            except OSError as exc:
                if attempt == 1:
                    return exc.errno or errno.EINVAL, f"setns({name}) failed: {exc.strerror}"
                still.append(target)
        pending = [t for t in still if t[2] == "user"] + [t for t in still if t[2] != "user"]
        if not pending:
            break
    for _, _, name, ident in targets:
        now = _current_id(name)
        if now != ident:
            return errno.EINVAL, f"joined {name} but /proc/self/ns shows inode {now[1]}, expected {ident[1]}"
    return None


#: The caller's root directory (an ``O_PATH`` fd) in a worker that joined a
#: mount namespace, taken before the join; -1 elsewhere. See :func:`caller_open`.
_caller_root = -1


def caller_open(path: str) -> int:
    """Open the regular file *path* for reading as the *caller's* filesystem shows it.

    Files a worker reads on the caller's behalf (iproute2's name tables) must
    not come from a target's filesystem: a container chooses what its own
    ``/etc`` holds. In a worker that joined a mount namespace, *path* resolves
    under the caller's root taken before the join (``openat2`` with
    ``RESOLVE_IN_ROOT``, so ``..`` and absolute symlinks cannot leave it);
    anywhere else it is a plain open. Anything but a regular file raises
    ``OSError`` without being opened for I/O. The fd is ``O_CLOEXEC``.
    """
    from ._callerfs import open_regular

    return open_regular(path, _caller_root)


_forked = False  # set in a child forked by a callable (os.register_at_fork)
_channel_fds: tuple[int, ...] = (-1, -1)


def _after_fork_in_callable_child() -> None:
    """In a child the callable forked: let go of the worker's channel and die with the worker.

    A child holding copies of the pipes would keep them open after the
    worker died (the caller watches the process too, but EOF is the fast
    signal); a child that outlived a replaced worker would leak.
    """
    global _forked
    _forked = True
    for fd in _channel_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    try:
        _sys.prctl(_sys.PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


def _serve(chan: Channel, links: list[tuple[int, str]], report: socket.socket | None = None) -> int:
    global _channel_fds
    # A callable that forks and returns in the child must not reach the channel. Every
    # fork Python code can return from (os.fork, os.forkpty, multiprocessing) runs the
    # at-fork hooks; a flag costs nothing per call where getpid() was a system call.
    _channel_fds = (chan.rfd, chan.wfd) if report is None else (chan.rfd, chan.wfd, report.fileno())
    modules_before = len(sys.modules)
    os.register_at_fork(after_in_child=_after_fork_in_callable_child)
    recv, send, readlink = chan.recv, chan.send, os.readlink
    functions: dict[int, Any] = {}  # callables the caller names by number (_calls.index_of)
    while True:
        try:
            kind, request_id, codec, payload = recv()
        except ChannelClosed:
            return 0
        if kind != CALL:
            return 0 if kind == STOP else 5  # anything else: the caller is out of step; it sees EOF
        try:
            fn, args, kwargs, keep_as = loads(codec, payload)
            if type(fn) is int:
                fn = functions[fn]
            elif keep_as is not None:
                functions[keep_as] = fn
            if codec == DILL:
                adopt_main_names(fn, args, kwargs)
        except BaseException as exc:  # SIGINT is ignored here: this is the payload's own doing
            text = (
                str(exc) if isinstance(exc, SerializationError) else f"cannot deserialize: {type(exc).__name__}: {exc}"
            )
            send(UNLOADABLE, request_id, *dumps(text))
            continue
        del payload
        fatal = False
        try:
            reply_kind, body = OK, fn(*args, **kwargs)
        except BaseException as exc:  # the caller decides what is fatal
            fatal = isinstance(exc, _FATAL_ERRORS)
            reply_kind, body = _exception_reply(exc)
        del fn, args, kwargs
        if _forked:
            os._exit(0)  # the callable forked and returned in the child: it must not talk
        for fd, expected in links:  # only where no seccomp filter holds us (see _start)
            now = readlink("", dir_fd=fd)
            if now != expected:
                send(TAINTED, request_id, *dumps(f"the callable moved the worker from {expected} to {now}"))
                return 3
        try:
            codec, data = dumps(body, main_by_name=True, contain=True)
        except SerializationError as exc:
            if reply_kind == OK:
                reply_kind, (codec, data) = UNSENDABLE, dumps(str(exc))
            else:
                reply_kind, raw = _raw_exception(body.exception, body.traceback)
                codec, data = dumps(raw)
        del body
        if fatal:
            chan.send_obj(FATAL, request_id, Fatal(reply_kind, codec, data))
            return 4
        if report is not None:  # the first call only: the warm path pays this one test
            _channel_fds = (chan.rfd, chan.wfd)
            _report_imports(report, modules_before)
            report = None
        send(reply_kind, request_id, codec, data)
        del data


#: Most modules one report names (it must fit one control datagram; the zygote learns at most _MAX_LEARNED).
_MAX_REPORTED = 512


def _report_imports(report: socket.socket, since: int) -> None:
    """Tell the zygote what the first call imported (``_zygote._Zygote.read_report``), then close *report*.

    ``sys.modules`` keeps insertion order, so what came after *since* is new.
    One datagram of ``name NUL file NUL ...`` -- plain text: the zygote must
    not unpickle what a process that ran a callable in a target says. Done
    before the first reply, so that a caller holding it sees a worker with no
    fd but its own; when the call imported nothing, that is one ``close``.
    """
    try:
        if len(sys.modules) <= since:
            return
        entries: list[bytes] = []
        size = 0
        for name in list(sys.modules)[since : since + _MAX_REPORTED]:
            spec = getattr(sys.modules.get(name), "__spec__", None)
            origin = getattr(spec, "origin", None)
            if name in ("__main__", "__mp_main__") or not getattr(spec, "has_location", False):
                continue
            if not isinstance(origin, str):
                continue
            entry = f"{name}\0{origin}".encode(errors="surrogateescape")
            size += len(entry) + 1
            if size > CONTROL_BUFFER:
                break
            entries.append(entry)
        if entries:
            report.send(b"\0".join(entries), socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
    except Exception:  # pragma: no cover - only an optimization; the zygote may be gone
        pass
    finally:
        report.close()


def adopt_main_names(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Put the caller's ``__main__`` classes and functions that came by value under their names in ours.

    They arrive through dill as copies whose ``__module__`` is ``"__main__"``;
    once this process's ``__main__`` has them under their names, pickle sends
    results and exceptions that use them back *by name*, and the caller
    resolves the name in its own ``__main__``: ``except MyError`` catches
    what the worker raised. Top-level names only (a ``<lambda>`` or a nested
    class has none).
    """
    main = sys.modules["__main__"].__dict__
    seen = [fn, *getattr(fn, "__globals__", {}).values()]
    seen += [type(value) for value in (*args, *kwargs.values())]
    for obj in seen:
        if isinstance(obj, (type, types.FunctionType)) and getattr(obj, "__module__", None) == "__main__":
            name = obj.__qualname__
            if name.isidentifier() and not name.startswith("__"):
                main[name] = obj


def _exception_reply(exc: BaseException) -> tuple[int, Any]:
    if _caller_root >= 0:
        from ._callerfs import caller_cwd

        with caller_cwd():  # 3.13 reads ./<unknown> while formatting: not in the target's cwd
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    else:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    exc.__traceback__ = None
    try:
        # An exception that pickles but cannot be rebuilt (custom __init__) would fail
        # in the caller, far from its traceback: check the round trip here.
        pickle.loads(pickle.dumps(exc, protocol=5))
    except BaseException:
        return _raw_exception(exc, tb)
    return RAISED, Raised(exc, tb)


def _raw_exception(exc: BaseException, tb: str) -> tuple[int, RaisedRaw]:
    kind = type(exc)
    try:
        message = str(exc)
    except BaseException:
        message = "<str() failed>"
    return RAISED_RAW, RaisedRaw(f"{kind.__module__}.{kind.__qualname__}", message, tb)


__all__ = ("caller_open", "child_main", "spare_main")

if sys.platform != "linux":  # pragma: no cover
    raise ImportError("nsworkers runs on Linux only")

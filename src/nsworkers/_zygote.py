"""The zygote: a small single-threaded fork server (its caller-side client is ``_spawners.ZygoteSpawner``).

It runs in a fresh interpreter and imports only what a worker needs: this
module, ``_worker``, ``_messages``, the pool's *preload* list, and the modules
it *learns*: the module of a callable a spawn request names (``SpawnRequest.learn``)
is imported here before that worker starts, so that it and every later worker
inherit it instead of importing it each (``_Zygote.learn``); and so are,
before the next request, the modules a worker reports its first call imported
(``_Zygote.read_report``, all in one trial). Only after a throw-away child imported it and
stayed single-threaded, childless, with no new fd or signal handler, and
from the same files as in the caller or worker (:func:`trial_import`);
refusals are remembered. Of our own modules, it
must not import ``threading`` (nor ``logging`` or ``subprocess``, which do):
a module that registers an at-fork hook runs Python code in every forked
worker, which touched about 130 more copy-on-write pages per worker here.
(A learned user module may import it: that costs less than importing the
module in every worker.) The caller's side of the package (pool, spawners)
is never imported here.

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
import stat
import sys
import time
import types
from typing import TYPE_CHECKING, Any

from . import _sys, _worker
from ._messages import (
    CONTROL_BUFFER,
    Reaped,
    ReapRequest,
    RequestFailed,
    SpareAssignment,
    Spawned,
    SpawnRequest,
    TargetWire,
    ZygoteConfig,
    ZygoteFailed,
    ZygoteReady,
    channel_pipes,
)
from ._sys import recv_fds

if TYPE_CHECKING:
    from collections.abc import Iterable

_MAX_STATUSES = 4096
_EXIT_GRACE = 1.0  # seconds a worker that closed its channel gets to finish exiting
KILL_GRACE = 0.2  # seconds a waiter gives a SIGKILLed child to exit (one in uninterruptible sleep cannot yet)
_MAX_PASSED_FDS = 16
_MAX_LEARNED = 256  # modules the zygote imports for callables (after a trial each), beyond its preload
_MAX_REFUSED = 1024  # modules remembered as not to be imported here (never tried again)
# Seconds a trial import may take; slower ones are not learned. The zygote serves no other
# request meanwhile (nor during the import that follows): a cold call to any namespace waits.
_TRIAL_TIMEOUT = 2.0
#: The environment variable (read by the zygote as it starts) that sets the trial's time instead.
TRIAL_TIMEOUT_ENV = "NSWORKERS_TRIAL_TIMEOUT"
#: The environment variable naming a file the zygote appends a line to for each report it
#: reads and each verdict on what to learn: why a module was not learned, for whoever asks.
TRIAL_LOG_ENV = "NSWORKERS_TRIAL_LOG"
_PR_SET_CHILD_SUBREAPER = 36
_MAX_REPORTS = 64  # workers' report sockets kept open at once (see _Zygote.read_report)
_MAX_QUEUED = 1024  # reported modules waiting to be learned


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


#: What :func:`wait_a_little` returns for a child still running at the end of its wait (no wait status is < 0).
RUNNING = -1


def reap_child(pid: int, kill: bool = False) -> tuple[int | None, bool]:
    """Wait for our child *pid*; SIGKILL it at once (*kill*) or if still alive after a short grace.

    ``(wait status, killed)``; the status is None if *pid* was not ours to
    wait for. Never waits long: a child the kill cannot end yet (in
    uninterruptible sleep: a frozen cgroup, a stuck disk) would hold the
    waiting thread, a caller past its timeout or the zygote that every
    spawn needs, for as long as it sleeps. Its status is RUNNING then, and
    whoever forked it reaps it later (:func:`wait_a_little`, the zygote's
    SIGCHLD handler).
    """
    status = wait_a_little(pid, 0 if kill else _EXIT_GRACE)
    if status != RUNNING:
        return status, False
    kill_group(pid)
    return wait_a_little(pid, KILL_GRACE), True


def wait_a_little(pid: int, grace: float) -> int | None:
    """Our child *pid*'s wait status once it exits within *grace* seconds; RUNNING if not; None if not ours."""
    deadline = time.monotonic() + grace
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if done:
            return status
        if time.monotonic() >= deadline:
            return RUNNING
        time.sleep(0.001)


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


def fork_with_socket() -> tuple[int, int, socket.socket, socket.socket]:
    """:func:`fork_with_pidfd`, with a socket pair between parent and child: ``(pid, pidfd, ours, theirs)``."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        pid, pidfd = fork_with_pidfd()
    except OSError:
        ours.close()
        theirs.close()
        raise
    return pid, pidfd, ours, theirs


def _origin(name: str) -> str | None:
    spec = getattr(sys.modules.get(name), "__spec__", None)
    origin = getattr(spec, "origin", None)
    return origin if isinstance(origin, str) else None


def _trial(chain: tuple[tuple[str, str], ...], reload: bool = False) -> int:
    """In the throw-away child: import *chain*'s modules in order; 0 if that left this process as it was, else why not.

    Harmless means: it imported, from the same files as in the caller, and
    left no thread, no child process (we are a subreaper, so grandchildren
    count too), no open fd and no signal handler behind it. An import that
    does any of these would do it in the zygote, and every worker after it.
    And what it made compares equal (:func:`_values`) to what an import in
    new namespaces made (:func:`_import_elsewhere`).
    """
    _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)  # the zygote's handler would reap what we look for
    try:
        _sys.prctl(_PR_SET_CHILD_SUBREAPER, 1)
    except OSError:
        pass
    fds = sorted(os.listdir("/proc/self/fd"))
    handlers = [_signal.getsignal(signum) for signum in _worker._CATCHABLE]
    names = tuple(name for name, _ in chain)
    elsewhere = _import_elsewhere(names, reload)  # at the same time as ours
    before, existing = set(sys.modules), _Existing()
    try:
        _import(names, reload)
    except BaseException:
        return 1
    ours = _values(names, before, existing, reload)
    if ours is _TOO_BIG:
        return 8
    if _values_of(elsewhere) != ours:
        return 7
    if any(_origin(name) != origin for name, origin in chain):
        return 2
    if len(os.listdir("/proc/self/task")) != 1:
        return 3
    try:
        os.waitpid(-1, os.WNOHANG)
        return 4  # a child, running or exited
    except ChildProcessError:
        pass
    if sorted(os.listdir("/proc/self/fd")) != fds:
        return 5
    if [_signal.getsignal(signum) for signum in _worker._CATCHABLE] != handlers:
        return 6
    return 0


#: Namespaces a worker may join whose state module-level code can read at import (a socket's
#: interfaces, the host name, IPC objects): the trial imports again in new ones of these.
_IMPORT_NAMESPACES = _sys.CLONE_NEWNET | _sys.CLONE_NEWUTS | _sys.CLONE_NEWIPC
#: The host and domain name of the trial's new UTS namespace: one no caller has, so that a module
#: reading either at import (``HOST = gethostname()``) gets other values there and is refused.
_TRIAL_HOST_NAME = "nsworkers-trial-import.invalid"


def _import(names: tuple[str, ...], reload: bool) -> None:
    """Import each of *names* in order (parents come first, so each is a plain import); or reload the last."""
    if reload:
        importlib.reload(sys.modules[names[-1]])
        return
    for name in names:
        importlib.import_module(name)


def _import_elsewhere(names: tuple[str, ...], reload: bool) -> tuple[int, int]:
    """Start importing *names* in new namespaces, in a child; its pid and the pipe it answers on (:func:`_values_of`).

    Before the zygote learned a module, a worker imported it after joining
    its target, so module-level code ran there: ``NAMES = if_nameindex()``
    named the target's interfaces. Imported in the zygote, it would run in
    the caller's namespaces and every worker would serve the caller's
    values, silently. So the trial also imports it in a child of its own,
    after ``unshare`` of the namespaces module-level code can read, and
    refuses the module if its modules' values differ from its own import's
    (it then costs each worker its own import, as before).
    """
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the trial's own child
        try:
            os.close(rfd)
            _sys.prctl(_sys.PR_SET_PDEATHSIG, signal.SIGKILL)  # the trial is killed at its timeout: so are we
            _sys.unshare(_IMPORT_NAMESPACES)
            _sys.set_host_names(_TRIAL_HOST_NAME)  # a new UTS namespace starts with the caller's names
            _worker.forget_uname_cache()  # and a preload of uuid (pyroute2) left the caller's name here
            before, existing = set(sys.modules), _Existing()
            _import(names, reload)
            data = pickle.dumps(_values(names, before, existing, reload))
            with os.fdopen(wfd, "wb") as out:
                out.write(data)
        finally:
            os._exit(0)
    os.close(wfd)
    return pid, rfd


def _values_of(child: tuple[int, int]) -> object:
    """What the child of :func:`_import_elsewhere` found (:func:`_values`), once it exited; None if it failed."""
    pid, rfd = child
    with os.fdopen(rfd, "rb") as source:
        data = source.read()
    os.waitpid(pid, 0)
    try:
        return pickle.loads(data) if data else None  # from our own child, forked before the import
    except Exception:
        return None


def _values(names: tuple[str, ...], before: set[str], existing: _Existing, reload: bool) -> object:
    """What an import of *names* made, comparable between two imports; ``_TOO_BIG`` past what a trial compares.

    The plain values of the modules it added to ``sys.modules`` (and of the
    last on a reload), and :func:`_made_atoms` of them.
    """
    added = sorted(set(sys.modules) - before)
    if reload:
        added.append(names[-1])
    modules = [sys.modules.get(mod) for mod in added]
    # their values, not their dicts: a reloaded module's dict existed before, what the reload put in it did not;
    # and what it set on modules that were there before (builtins.NET = ..., other.CONFIG = ...)
    roots = [value for module in modules for value in getattr(module, "__dict__", {}).values()]
    roots += existing.changed_module_attributes()
    atoms = _made_atoms(roots, existing)
    if atoms is None:
        return _TOO_BIG
    return [*((mod, _plain_values(module)) for mod, module in zip(added, modules, strict=True)), atoms]


#: A trial's walk of what an import made visits at most this many objects; a bigger import is not learned.
_WALK_LIMIT = 400_000
_TOO_BIG = "<too big to compare>"


class _Existing:
    """Every object the collector tracked before an import: kept alive, so no new object can take an id of theirs."""

    __slots__ = ("environ", "ids", "module_attributes", "objects")

    def __init__(self) -> None:
        gc.unfreeze()  # frozen objects are not listed (a throw-away child: its pages are its own)
        gc.disable()  # nor collected: a collection during the import would walk the zygote's whole heap
        self.objects = gc.get_objects()
        self.ids = {id(obj) for obj in self.objects}
        self.module_attributes = {  # the values themselves: a freed one's id could be a new value's
            name: dict(vars(module))
            for name, module in list(sys.modules.items())
            if isinstance(getattr(module, "__dict__", None), dict)
        }
        self.environ = dict(os.environ)

    def changed_module_attributes(self) -> list[object]:
        """Names and values an import set or rebound on the modules that were there before it, and in ``os.environ``."""
        out: list[object] = [(key, value) for key, value in os.environ.items() if self.environ.get(key) != value]
        out += [key for key in self.environ if key not in os.environ]
        for name, before in self.module_attributes.items():
            namespace = getattr(sys.modules.get(name), "__dict__", None)
            if not isinstance(namespace, dict):
                out.append(f"{name} is gone")
                continue
            for key, value in list(namespace.items()):
                if key not in before or before[key] is not value:
                    out += (name, key, value)
        return out


def _holds_an_address(kind: type) -> bool:
    """A ctypes function or pointer type (dill holds some): its data is an address. Arrays and structures are data."""
    if getattr(kind, "_type_", None) in ("P", "z", "Z"):  # c_void_p, c_char_p, c_wchar_p
        return True
    return any(base.__module__ == "_ctypes" and base.__name__ in ("CFuncPtr", "_Pointer") for base in kind.__mro__)


def _is_c_data(obj: object) -> bool:
    """A ctypes array, structure, union or simple value (only an import of ctypes makes one)."""
    ctypes = sys.modules.get("_ctypes")
    kinds = tuple(getattr(ctypes, name, object) for name in ("Array", "Structure", "Union", "_SimpleCData"))
    return ctypes is not None and isinstance(obj, kinds)


def _atom_of(obj: object) -> object:
    """The plain data of a str or int subclass' instance, or of a buffer (bytearray, array, memoryview).

    Not of a bytes subclass: multiprocessing's authentication key is one,
    random in every import (refusing it would refuse dill).
    """
    try:
        if isinstance(obj, str):
            return str.__str__(obj)
        if isinstance(obj, int) and not isinstance(obj, bool):
            return int.__index__(obj)
        if isinstance(obj, (bytearray, memoryview)) or type(obj).__module__ == "array" or _is_c_data(obj):
            return memoryview(obj).tobytes()  # type: ignore[arg-type]
    except Exception:  # a released view, an exotic buffer: a marker both imports make alike
        return f"<{type(obj).__qualname__}>"
    return None


def _made_atoms(roots: list[object], existing: _Existing) -> tuple[int, int] | None:
    """A digest of the str, bytes, int, bool and None reachable from *roots* through objects the import made.

    :func:`_plain` compares the values modules hold in the shapes it knows;
    state read at import hides in others (a compiled pattern, a method's
    default, a C object's fields, a container nested deeper than it looks).
    This walks the references themselves (``gc.get_referents``) and stops at objects
    that existed before the import (noting which: an import that picks one
    of two earlier objects by namespace state differs too) and at modules,
    code and floats (mostly times). None past ``_WALK_LIMIT`` objects.

    Not seen, so still learned: what the import changed *inside* an object
    that existed before it (a registry dict of an earlier module, an
    attribute of an earlier class, an earlier list; ``os.environ`` is
    compared on its own), floats, bytes subclasses, ctypes pointers.
    ``preload`` and a module imported by the caller's callable itself are
    not affected.
    """
    pid = os.getpid()
    atoms: list[object] = []
    seen: set[int] = set()
    stack = roots[::-1]
    while stack:
        obj = stack.pop()
        kind = type(obj)
        if kind is str or kind is bytes:
            atoms.append(obj)
            continue
        if kind is int:
            atoms.append(_int_atom(obj, pid))  # type: ignore[arg-type]  # kind is int
            continue
        if kind is bool or obj is None:
            atoms.append(obj)
            continue
        if kind in (float, complex, types.CodeType, types.ModuleType):
            continue
        if id(obj) in existing.ids:
            atoms.append(("<earlier>", id(obj)))  # which one: at the same address in both imports (forks)
            continue
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if _holds_an_address(kind):
            continue  # a loaded C function, a pointer: never the same in two imports
        atom = _atom_of(obj)
        if atom is not None:  # a str or int subclass, a buffer: data no reference leads to
            atoms.append(atom)
        if len(seen) > _WALK_LIMIT:
            return None
        referents = gc.get_referents(obj)
        if kind in (set, frozenset):  # iterated in hash order: by address for classes and functions
            referents.sort(key=_stable_key)
        stack += reversed(referents)
    return len(atoms), hash(tuple(atoms))  # in walk order; the same hash seed in both: forks of one zygote


#: An int this close to ``time.time_ns()`` is a time read at import, not namespace state: ten minutes.
_NOW_NS = 600 * 10**9


def _int_atom(value: int, pid: int) -> object:
    """*value*, or a marker both imports share: for this process's pid, or for a time in nanoseconds.

    Each import runs in its own process (every worker inherits the zygote's
    pid, by design), and at its own moment: 3.13's ``logging`` keeps
    ``_startTime = time.time_ns()``, which refused every module that imports
    ``logging`` (dill, asyncio). A namespace's ids (inode numbers, ifindexes)
    are nowhere near 1.8e18.
    """
    if value == pid:
        return "<pid>"
    if abs(value - time.time_ns()) < _NOW_NS:
        return "<time>"
    return value


def _stable_key(item: object) -> tuple[str, str]:
    """An order for a set's items that two imports share (a class or function by its name, an atom by its value)."""
    kind = type(item)
    if kind in (str, bytes, int, bool, type(None)):
        return (kind.__name__, repr(item))
    return (kind.__qualname__, str(getattr(item, "__qualname__", getattr(item, "__name__", ""))))


def _plain_values(module: object) -> object:
    namespace = getattr(module, "__dict__", {})
    return _plain({key: value for key, value in namespace.items() if not key.startswith("__")}, 0)


_ATOMS = (type(None), bool, int, str, bytes)
_ENUM_INDEXES = frozenset(("_member_map_", "_value2member_map_", "_member_names_", "_unhashable_values_"))  # of members
_HEAP_TYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class made by a class statement (a builtin one cannot change)


def _plain(value: object, depth: int, inner: bool = False) -> object:
    """*value*'s data, comparable between two imports: modules by name, instances by their data.

    A class also by its own attributes, a function also by its defaults and
    closure (``class C: NET = readlink(...)``, ``def f(net=readlink(...))``
    read namespace state at import as surely as ``NET = ...``); a class's
    methods, properties and nested classes are code, not compared. Only the
    module's own: in what those hold (*inner*), classes and functions go by
    name only, so that a walk through classes that name each other stays short.
    Floats by type only: one read at import is a time more often than not;
    this process's pid and a time in nanoseconds as markers (:func:`_int_atom`).
    """
    kind = type(value)
    if kind is int:
        return _int_atom(value, os.getpid())  # type: ignore[arg-type]  # kind is int
    if kind in _ATOMS:
        return value
    if kind in (float, complex):
        return kind.__name__  # mostly a time (logging._startTime): not what a namespace changes
    if depth > 4:
        return "..."
    depth += 1
    if isinstance(value, (tuple, list)):  # a named tuple too
        return (kind.__qualname__, *(_plain(item, depth, inner) for item in value[:1000]))
    if kind in (set, frozenset):
        items = list(value)[:1000]  # type: ignore[call-overload]
        return ("set", frozenset(_hashable(_plain(item, depth, inner)) for item in items))
    if kind is dict:
        items = list(value.items())[:1000]  # type: ignore[attr-defined]
        return ("dict", *((_plain(k, depth, inner), _plain(v, depth, inner)) for k, v in items))
    if isinstance(value, (type, types.FunctionType, types.BuiltinFunctionType, types.ModuleType)):
        name = (kind.__name__, getattr(value, "__qualname__", getattr(value, "__name__", "")))
        if isinstance(value, type) and not inner and value.__flags__ & _HEAP_TYPE:
            own = {  # its data: not its methods, properties, nested classes (code: by name elsewhere)
                k: v
                for k, v in vars(value).items()
                if not k.startswith("__")
                and k not in _ENUM_INDEXES
                and not hasattr(type(v), "__get__")
                and not isinstance(v, (type, types.ModuleType))
            }
            return (*name, _plain(own, depth, True))
        if (
            isinstance(value, types.FunctionType)
            and not inner
            and (value.__defaults__ or value.__kwdefaults__ or value.__closure__)
        ):
            cells = []
            for cell in value.__closure__ or ():
                try:
                    cells.append(cell.cell_contents)
                except ValueError:  # an empty cell
                    cells.append(None)
            return (*name, _plain((value.__defaults__, value.__kwdefaults__, cells), depth, True))
        return name
    state = getattr(value, "__dict__", None)
    slots = [getattr(value, name, None) for name in _slot_names(kind)]
    data = _plain(dict(state), depth, inner) if isinstance(state, dict) else None
    return ("object", kind.__qualname__, data, *(_plain(item, depth, inner) for item in slots))


def _slot_names(kind: type) -> list[str]:
    """The ``__slots__`` attributes of *kind*'s instances, base classes' too."""
    names: list[str] = []
    for cls in kind.__mro__:
        slots = vars(cls).get("__slots__", ())
        names += [slots] if isinstance(slots, str) else [name for name in slots if isinstance(name, str)]
    return [name for name in names if name not in ("__dict__", "__weakref__")]


def _hashable(value: object) -> object:
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


#: What a trial's exit code means.
TRIAL_VERDICTS = {
    1: "its import failed",
    2: "it resolves to other files here than in the caller",
    3: "its import started a thread",
    4: "its import started a process",
    5: "its import left a file descriptor open",
    6: "its import changed a signal handler",
    7: "it read namespace state at import: imported in new namespaces, it had other values",
    8: f"its import made more than {_WALK_LIMIT} objects, more than a trial compares",
}


TRIAL_TOO_SLOW = "its import did not finish in time"
_GAVE_UP_SINGLY = "not tried alone: a module of its batch was too slow to import on its own"


def trial_import(
    chain: tuple[tuple[str, str], ...], timeout: float = _TRIAL_TIMEOUT, reload: bool = False, hangup: int = -1
) -> str | None:
    """Import *chain*'s modules (or *reload* ``chain[-1]``) in a throw-away child; None if harmless, else why not.

    Harmless is what :func:`_trial` checks.

    SIGCHLD stays blocked throughout, so our handler cannot reap the child
    before we read its verdict. A child still importing at *timeout* is killed,
    and so is one whose *hangup* fd (the zygote's control socket) hangs up:
    the caller shut the pool down, nobody waits for what the trial would learn.
    The child dies with us (``PR_SET_PDEATHSIG``): a zygote killed mid-trial
    leaves no import running.
    """
    parent = os.getpid()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the throw-away child
            code = 70
            try:
                _sys.prctl(_sys.PR_SET_PDEATHSIG, signal.SIGKILL)
                if os.getppid() == parent:  # else the zygote died before the death signal was armed
                    code = _trial(chain, reload)
            finally:
                os._exit(code)
        deadline = time.monotonic() + timeout
        status = None
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            pidfd = -1
        try:
            poller = select.poll()
            if pidfd >= 0:
                poller.register(pidfd, select.POLLIN)
                if hangup >= 0:
                    poller.register(hangup, 0)  # reports only a hang-up (or an error)
            while status is None:
                done, wait_status = os.waitpid(pid, os.WNOHANG)
                if done:
                    status = wait_status
                    break
                remaining = deadline - time.monotonic()
                gave_up = TRIAL_TOO_SLOW if remaining <= 0 else None
                waited = [] if gave_up is not None or pidfd < 0 else poller.poll(max(1, int(remaining * 1000)))
                if any(fd == hangup for fd, _ in waited):
                    gave_up = "the caller went away during the trial"
                if gave_up is not None:
                    os.kill(pid, signal.SIGKILL)
                    wait_a_little(pid, KILL_GRACE)  # else our SIGCHLD handler reaps it when it wakes
                    return gave_up
                if pidfd < 0:
                    time.sleep(0.001)
        finally:
            close_all(pidfd)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return None
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
    return TRIAL_VERDICTS.get(code, f"the trial ended with wait status {status:#x}")


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
        self.learned: set[str] = set()
        self.refused: dict[str, str] = {}  # module -> why it is not imported here
        self.reports: dict[int, socket.socket] = {}  # fd -> a new worker's socket, until it reports
        self.to_learn: collections.OrderedDict[str, str] = collections.OrderedDict()  # reported: name -> file
        self.singly: collections.OrderedDict[str, str] = collections.OrderedDict()  # of a refused batch: tried alone
        self.poller = select.poll()  # the control socket and the report sockets
        self.trial_timeout = trial_timeout()
        self.log_path = os.environ.get(TRIAL_LOG_ENV, "")
        self.poller.register(ctl, select.POLLIN)

    def note(self, event: str, names: Iterable[str], verdict: str | None) -> None:
        """Append to ``$NSWORKERS_TRIAL_LOG``, if set: time, *event*, *verdict* (None: learned), *names*, tab-separated.

        Every spawn waits for us: only a regular file (or none yet) is opened,
        without blocking, never kept open (workers fork from here).
        """
        if not self.log_path:
            return
        line = f"{time.time():.3f}\t{event}\t{verdict or 'learned'}\t{' '.join(names)}\n"
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
        try:
            if not stat.S_ISREG(os.stat(self.log_path).st_mode):
                return  # a FIFO nobody reads held every spawn; a device may act on open
        except FileNotFoundError:
            pass
        except OSError:
            return
        try:
            fd = os.open(self.log_path, flags, 0o600)
        except OSError:
            return
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                os.write(fd, line.encode(errors="surrogateescape"))
        except OSError:
            pass
        finally:
            os.close(fd)

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

    def learn(self, chain: tuple[tuple[str, str], ...], again: bool = False) -> bool:
        """Import the module a callable came from (``chain[-1]``, parents first) so later workers inherit it.

        Only if a throw-away child showed the import harmless (:func:`trial_import`);
        a refusal is remembered and never tried again, and at most ``_MAX_LEARNED``
        modules are learned. True if something new was imported here.
        *again*: the caller reloaded it since it offered it (:meth:`relearn`).
        Never raises: a failure to learn only costs the worker its own import.
        """
        if not chain or not all(isinstance(part, str) and isinstance(origin, str) for part, origin in chain):
            return False
        name = chain[-1][0]
        if again and name in self.learned and name in sys.modules:
            return self.relearn(chain)
        if name in self.learned or name in self.refused or name == "__main__":
            return False
        if all(_origin(part) == origin for part, origin in chain):
            self.learned.add(name)  # already here (a preload, or a parent of one)
            return False
        if len(self.learned) >= _MAX_LEARNED:
            return False
        why = trial_import(chain, self.trial_timeout, hangup=self.ctl.fileno())
        if why is None:
            try:
                importlib.import_module(name)
            except BaseException as exc:  # the trial passed: should not happen
                why = f"its import failed here: {exc!r}"
        self.note("alone", [name], why)
        if why is not None:
            if len(self.refused) < _MAX_REFUSED:
                self.refused[name] = why
            return False
        self.learned.add(name)
        gc.freeze()  # as at start: what workers inherit stays shared
        return True

    def learn_reported(self) -> bool:
        """Learn every module workers reported so far, with one trial for them all; True if something new was imported.

        One trial, not one per module: a batch's first report names every
        module its callable imports (31 for a netlink snapshot), and each
        worker forked before they are learned imports them all itself.
        If the trial refuses the lot, each is tried alone, between requests
        (``singly``), so that one module that starts a thread costs only
        itself.
        """
        batch: list[tuple[str, str]] = []
        while self.to_learn and len(self.learned) + len(batch) < _MAX_LEARNED:
            name, origin = self.to_learn.popitem(last=False)
            if name in self.learned or name in self.refused or name in self.singly or name == "__main__":
                continue
            if _origin(name) == origin:
                self.learned.add(name)  # already here (a parent of an earlier one)
                continue
            batch.append((name, origin))
        self.to_learn.clear()  # at _MAX_LEARNED: the rest is dropped, as learn() drops a module past it
        if len(batch) <= 1:
            return self.learn(tuple(batch))
        names = [name for name, _ in batch]
        why = trial_import(tuple(batch), self.trial_timeout, hangup=self.ctl.fileno())
        self.note("batch", names, why)
        if why is not None:
            self.singly.update(batch)
            return False
        try:
            _import(tuple(names), reload=False)
        except BaseException as exc:  # the trial passed: should not happen; what did import is found when tried alone
            self.note("batch", names, f"its import failed here: {exc!r}")
            self.singly.update(batch)
            return True
        self.learned.update(names)
        gc.freeze()  # as at start: what workers inherit stays shared
        return True

    def learn_singly(self) -> bool:
        """Try the next module of a refused batch alone; True if it was learned.

        A trial that runs out of time ends this for the batch: each such trial
        held every cold call for its whole time, and the rest of a batch is
        mostly the same slow package (pyroute2's submodules: 2 s each, one
        after another, for every reported one). The rest is refused untried,
        so that later workers' reports do not queue it again.
        """
        name, origin = self.singly.popitem(last=False)
        learned = self.learn(((name, origin),))
        if self.refused.get(name) == TRIAL_TOO_SLOW:
            self.note("untried", self.singly, _GAVE_UP_SINGLY)
            while self.singly and len(self.refused) < _MAX_REFUSED:
                self.refused[self.singly.popitem(last=False)[0]] = _GAVE_UP_SINGLY
            self.singly.clear()
        return learned

    def relearn(self, chain: tuple[tuple[str, str], ...]) -> bool:
        """The caller reloaded a learned module: reload ours, or later workers would run the code it replaced.

        Tried in a throw-away child first; if the reload is refused or fails
        here, the module leaves ``sys.modules`` and later workers import it
        themselves, as before it was learned.
        """
        name = chain[-1][0]
        why = trial_import(chain, self.trial_timeout, reload=True, hangup=self.ctl.fileno())
        if why is None:
            try:
                importlib.reload(sys.modules[name])
            except BaseException as exc:  # the trial passed: should not happen
                why = f"its reload failed here: {exc!r}"
        self.note("reload", [name], why)
        if why is not None:
            sys.modules.pop(name, None)
            self.learned.discard(name)
            if len(self.refused) < _MAX_REFUSED:
                self.refused[name] = why
        gc.freeze()
        return True  # either way, spares hold the old code

    def spawn(self, request: SpawnRequest, fds: list[int]) -> None:
        if len(fds) != len(request.targets):
            close_all(*fds)
            self.reply(RequestFailed(request.request_id, errno.EINVAL, f"expected {len(request.targets)} fds"))
            return
        if request.learn and self.learn(request.learn, request.relearn is True):
            # Spares forked before lack the module; a fresh fork is cheaper than their import.
            while self.spares:
                self.spares.popleft().close()  # EOF: it exits, our SIGCHLD handler reaps it
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
        pid, pidfd, report, report_theirs = fork_with_socket()
        if pid == 0:  # pragma: no cover - runs in the worker
            try:
                _worker.reset_signals()  # first: nothing may run our SIGCHLD handler here
                close_all(*ours, *(s.pidfd for s in self.spares))
                self.close_reports()
                report.close()
                self.ctl.close()
                _worker.child_main(theirs, specs, self.pid, True, request.native, report_theirs)
            finally:
                os._exit(70)
        report_theirs.close()
        self.listen_for_report(report)
        self.live.add(pid)
        self.statuses.pop(pid, None)  # an earlier process's status under a reused pid
        return pid, pidfd

    def fork_spare(self) -> None:
        """Fork a spare worker (see ``_worker.spare_main``) and keep our end of its socket."""
        pid, pidfd, ours, theirs = fork_with_socket()
        if pid == 0:  # pragma: no cover - runs in the spare
            try:
                _worker.reset_signals()  # first: nothing may run our SIGCHLD handler here
                for spare in self.spares:
                    spare.close()
                self.close_reports()
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
            except OSError:
                spare.close()
                continue  # that spare died (SIGCHLD reaps it): take the next
            self.listen_for_report(spare.sock)
            return spare.pid, spare.pidfd

    def listen_for_report(self, sock: socket.socket) -> None:
        """Keep a new worker's socket until it says what its first call imported (or exits)."""
        if len(self.reports) >= _MAX_REPORTS:
            sock.close()
            return
        self.reports[sock.fileno()] = sock
        self.poller.register(sock, select.POLLIN)

    def read_report(self, fd: int) -> None:
        """Queue what a worker's first call imported (``_worker._report_imports``), to learn before the next request."""
        sock = self.reports.pop(fd, None)
        self.poller.unregister(fd)
        if sock is None:
            return
        try:
            data = sock.recv(CONTROL_BUFFER, socket.MSG_DONTWAIT)
        except OSError:
            data = b""
        sock.close()
        parts = data.decode(errors="surrogateescape").split("\0") if data else []
        self.note("report", parts[::2], "queued" if parts else "nothing new, or lost")
        for name, origin in zip(parts[::2], parts[1::2], strict=False):  # an odd tail is dropped
            if len(self.to_learn) >= _MAX_QUEUED:
                break
            if name and name not in self.learned and name not in self.refused and name not in self.singly:
                self.to_learn.setdefault(name, origin)

    def close_reports(self) -> None:
        for sock in self.reports.values():
            sock.close()

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
        deadline = time.monotonic() + KILL_GRACE  # one in uninterruptible sleep is left to init: we exit
        for pid in list(self.live):
            wait_a_little(pid, max(0.0, deadline - time.monotonic()))

    def reply(self, message: Spawned | Reaped | RequestFailed, fds: list[int] | None = None) -> None:
        socket.send_fds(self.ctl, [pickle.dumps(message)], fds or [])

    def serve(self) -> None:
        pending = select.poll()
        pending.register(self.ctl, select.POLLIN)
        ctl_fd = self.ctl.fileno()
        filling = False
        stale_spares = False
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
                if len(self.spares) >= self.want_spares and not pending.poll(0):
                    _rehearse()
                continue
            # Learn what workers reported before the next request, even while requests wait:
            # in a cold batch they always do, and each worker forked before imports it all itself.
            # Modules of a refused batch are tried one at a time, between requests.
            if self.to_learn or (self.singly and not pending.poll(0)):
                if self.to_learn:
                    learned = self.learn_reported()
                    stale_spares = stale_spares or learned
                else:
                    learned = False
                    stale_spares = self.learn_singly() or stale_spares
                if stale_spares and (learned or not self.singly):  # a batch: now; one at a time: at the end
                    stale_spares = False
                    while self.spares:  # forked before: a fresh fork is cheaper than their import
                        self.spares.popleft().close()
                continue
            ready = self.poller.poll()
            for fd, _ in ready:
                if fd != ctl_fd:
                    self.read_report(fd)
            if self.to_learn or not any(fd == ctl_fd for fd, _ in ready):
                continue  # a report read with a request learned first: the request's worker then inherits it
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


def _rehearse() -> None:
    """After forking: go through the request path's serialization, while no request waits.

    A fork makes every page of ours copy-on-write again, so the next request
    would copy each page it writes (reference counts are enough) while its
    caller waits; written here, those pages are ours again beforehand.
    """
    targets = (TargetWire(0, 0, "net", (0, 0)),)
    pickle.loads(pickle.dumps(SpawnRequest(0, targets, (), ())))
    pickle.dumps(SpareAssignment(targets, ()))
    pickle.dumps(Spawned(0, 0))


def _reset_inherited_signals() -> None:
    """Unblock every signal and restore default dispositions: a caller's mask and SIG_IGNs survive ``exec``.

    A caller that blocked SIGCHLD before making its pool would otherwise leave
    the zygote unable to reap (zombies); one that ignores SIGTERM would make
    it unkillable by ``systemctl stop``. SIGPIPE and SIGXFSZ stay ignored, as
    in any Python process: a vanished caller is an EPIPE (then our workers
    are killed and reaped), a trial log past ``RLIMIT_FSIZE`` an EFBIG, not
    our death. Workers set their own (``_worker.reset_signals``).
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
    _signal.signal(_signal.SIGPIPE, _signal.SIG_IGN)
    _signal.signal(_signal.SIGXFSZ, _signal.SIG_IGN)


def trial_timeout() -> float:
    """``$NSWORKERS_TRIAL_TIMEOUT`` seconds if that is a positive number, else 2 s.

    A trial on a machine busy enough to stretch it past 2 s is refused, so
    the module is not learned (safe: each worker imports it itself); a
    longer time learns it, and holds every spawn up for as long.
    """
    try:
        seconds = float(os.environ.get(TRIAL_TIMEOUT_ENV, ""))
    except ValueError:
        return _TRIAL_TIMEOUT
    return seconds if 0 < seconds < float("inf") else _TRIAL_TIMEOUT


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
    _sys.prepare_namespace_filter()  # every worker installs it: built once here
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

"""The zygote: its bookkeeping, driven in-process with a real child; what it learns, through a pool."""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import os
import pickle
import signal
import socket
import sys
import textwrap
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

import nsworkers
from nsworkers import _zygote
from nsworkers._messages import CONTROL_BUFFER, Reaped, ReapRequest
from nsworkers._zygote import _Zygote

from ._in_worker import pid
from .conftest import run_python, wait_for


def test_a_status_kept_for_a_reused_pid_does_not_answer_for_the_live_process() -> None:
    # Pids wrap: a stopped worker's status may still be kept when a new worker gets its pid.
    # A kill request for the new one must kill it, not return the old status.
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        time.sleep(60)
        os._exit(0)
    try:
        zygote = _Zygote(theirs, spares=0)
        zygote.statuses[child] = 0  # "exited with code 0" from an earlier process with this pid
        zygote.live.add(child)
        zygote.reap(ReapRequest(1, child, True))
        reply = pickle.loads(ours.recv(CONTROL_BUFFER))
        assert isinstance(reply, Reaped)
        assert reply.killed and reply.status is not None and os.WTERMSIG(reply.status) == signal.SIGKILL
    finally:
        try:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        ours.close()
        theirs.close()


# ---------------------------------------------------------------------------
# A zygote that learns: the module of a callable is imported once in the zygote
# (after a trial in a throw-away child), so later workers inherit it.


def _write_module(directory: Path, name: str, source: str) -> None:
    (directory / f"{name}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def modules_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """A directory on sys.path (before the pool's zygote starts) for this test's modules; their name suffix."""
    monkeypatch.syspath_prepend(str(tmp_path))
    suffix = f"{os.getpid()}_{next(_unique)}"
    yield tmp_path, suffix
    for name in [n for n in sys.modules if n.endswith(suffix)]:
        del sys.modules[name]


_unique = itertools.count()


def _modules_of_a_new_worker(pool: nsworkers.Pool, path: str) -> list[str]:
    """What a worker forked now starts with: a builtin probe, so that the call itself imports nothing."""
    loaded: list[str] = pool.run(path, eval, "sorted(__import__('sys').modules)")
    return loaded


def _zygote_threads(pool: nsworkers.Pool) -> int:
    pid = pool._spawner.zygote_pid  # type: ignore[attr-defined]
    return len(os.listdir(f"/proc/{pid}/task"))


@pytest.mark.privileged
def test_the_first_worker_already_inherits_its_callables_module(
    modules_dir: tuple[Path, str], make_netns: Callable[[], str]
) -> None:
    directory, suffix = modules_dir
    name = f"nswt_plain_{suffix}"
    source = """
        import os
        IMPORTED_BY = os.getpid()

        def who():
            return IMPORTED_BY, os.getpid()
        """
    _write_module(directory, name, source)
    module = importlib.import_module(name)
    first, second = (f"/run/netns/{make_netns()}" for _ in range(2))
    with nsworkers.Pool() as pool:
        imported_by, worker = pool.run(first, module.who)
        zygote = pool._spawner.zygote_pid  # type: ignore[attr-defined]
        assert imported_by == zygote != worker  # imported before the very first worker was forked
        assert name in _modules_of_a_new_worker(pool, second)
        assert _zygote_threads(pool) == 1


_STARTS_A_THREAD = """
    import os, threading
    stop = threading.Event()
    threading.Thread(target=stop.wait, daemon=True).start()

    def who():
        return os.getpid()
    """


@pytest.mark.privileged
def test_a_module_that_starts_a_thread_is_never_imported_into_the_zygote(
    modules_dir: tuple[Path, str], make_netns: Callable[[], str]
) -> None:
    directory, suffix = modules_dir
    name = f"nswt_threads_{suffix}"
    _write_module(directory, name, _STARTS_A_THREAD)
    module = importlib.import_module(name)
    first, second = (f"/run/netns/{make_netns()}" for _ in range(2))
    try:
        with nsworkers.Pool() as pool:
            assert pool.run(first, module.who) > 0  # the call still works: the worker imports it itself
            assert _zygote_threads(pool) == 1
            assert name not in _modules_of_a_new_worker(pool, second)
    finally:
        module.stop.set()


@pytest.mark.privileged
def test_a_module_the_caller_loaded_from_another_file_is_not_learned(
    modules_dir: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory, make_netns: Callable[[], str]
) -> None:
    directory, suffix = modules_dir
    name = f"nswt_twin_{suffix}"
    _write_module(directory, name, "def where():\n    return 'on sys.path'\n")
    elsewhere = tmp_path_factory.mktemp("elsewhere") / f"{name}.py"
    elsewhere.write_text("def where():\n    return 'elsewhere'\n")
    spec = importlib.util.spec_from_file_location(name, elsewhere)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    first, second = (f"/run/netns/{make_netns()}" for _ in range(2))
    with nsworkers.Pool() as pool:
        pool.run(first, module.where)
        assert name not in _modules_of_a_new_worker(pool, second)


@pytest.mark.privileged
def test_inspect_with_a_plain_pool_teaches_its_zygote_the_netlink_modules(make_netns: Callable[[], str]) -> None:
    first, second = (f"/run/netns/{make_netns()}" for _ in range(2))
    with nsworkers.Pool() as pool:
        (entry,) = nsworkers.inspect([first], pool=pool, attribution=False)
        assert entry["ok"]
        loaded = _modules_of_a_new_worker(pool, second)
    assert "nsworkers.netlink" in loaded and "nsworkers.netlink._dumps" in loaded


@pytest.mark.privileged
@pytest.mark.parametrize("spares", [1, 0])
def test_every_module_a_first_call_imports_is_learned_before_the_next_request(
    spares: int, modules_dir: tuple[Path, str], make_netns: Callable[[], str]
) -> None:
    # Broke: the zygote learned reported modules one at a time, and only while no request
    # waited. A cold batch's requests always wait, so every worker of a 200-namespace
    # inspect() on a plain Pool() imported the 31 netlink modules itself (2x inspect's own pool).
    # Now the report that came before a request is learned, in one trial, before serving it.
    # And a worker forked on demand (no spares) reports too: before, only spares did.
    directory, suffix = modules_dir
    names = [f"nswt_batch{i}_{suffix}" for i in range(3)]
    for name in names:
        _write_module(directory, name, "VALUE = 1\n")
    caller = f"nswt_batchcaller_{suffix}"
    _write_module(
        directory,
        caller,
        f"import importlib\n\ndef lazily():\n    return [importlib.import_module(n).VALUE for n in {names!r}]\n",
    )
    module = importlib.import_module(caller)
    first, second = (f"/run/netns/{make_netns()}" for _ in range(2))
    with nsworkers.Pool(spare_workers=spares) as pool:
        assert pool.run(first, module.lazily) == [1, 1, 1]
        loaded = _modules_of_a_new_worker(pool, second)  # the very next request
    assert set(names) <= set(loaded)


@pytest.mark.privileged
def test_a_trial_import_dies_with_its_zygote(modules_dir: tuple[Path, str], make_netns: Callable[[], str]) -> None:
    # Broke: the trial's throw-away child had no death signal. A zygote killed mid-trial (the
    # pool's shutdown kills one that does not exit in time) left it importing, orphaned, for
    # as long as the import took: for ever, for one that hangs.
    directory, suffix = modules_dir
    gate = directory / "gate"
    name = f"nswt_hangs_{suffix}"
    _write_module(
        directory,
        name,
        f"""
        import os, time
        while os.getpid() != {os.getpid()} and not os.path.exists({str(gate)!r}):  # only outside the caller
            time.sleep(0.01)

        def where():
            return os.getpid()
        """,
    )
    module = importlib.import_module(name)
    pool = nsworkers.Pool(spare_workers=0)
    try:
        future = pool.submit(f"/run/netns/{make_netns()}", module.where)  # the zygote tries the module first
        assert wait_for(lambda: pool._spawner.zygote_pid is not None)  # type: ignore[attr-defined]
        zygote = psutil.Process(pool._spawner.zygote_pid)  # type: ignore[attr-defined]
        assert zygote.pid != os.getpid()
        assert wait_for(lambda: bool(zygote.children()))
        trials = zygote.children(recursive=True)  # the trial child, and its child in new namespaces
        zygote.kill()
        assert wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in trials))
    finally:
        gate.touch()  # lets the call finish (a new zygote serves it), and a leftover if the test failed
        pool.shutdown()
    future.result(timeout=60)


@pytest.mark.privileged
def test_a_module_slower_to_import_than_the_trials_time_is_not_learned(
    modules_dir: tuple[Path, str], make_netns: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The trial's time comes from NSWORKERS_TRIAL_TIMEOUT (tests run with 60 s: see conftest).
    # Broke (before there was one): a learning test failed on a loaded CI machine, dill's
    # trial past the fixed 2 s.
    directory, suffix = modules_dir
    name = f"nswt_slow_{suffix}"
    _write_module(directory, name, "import os, time\ntime.sleep(0.5)\n\ndef who():\n    return os.getpid()\n")
    module = importlib.import_module(name)
    first, second = (f"/run/netns/{make_netns()}" for _ in range(2))
    monkeypatch.setenv("NSWORKERS_TRIAL_TIMEOUT", "0.01")  # read by the zygote as it starts
    with nsworkers.Pool() as pool:
        assert pool.run(first, module.who) > 0  # the worker imports it itself
        assert name not in _modules_of_a_new_worker(pool, second)


@pytest.mark.privileged
def test_once_a_trial_runs_out_of_time_the_rest_of_its_batch_is_not_tried_alone(modules_dir: tuple[Path, str]) -> None:
    """Modules of a refused batch are tried one at a time, but not after one of them ran out of time.

    Broke: each was tried, and each trial held every cold call for its whole
    time. A callable using pyroute2 (whose import caches the host name, so its
    batch is refused) made the zygote try pyroute2's submodules one after
    another, 2 s each: cold calls took 2.7-5 s instead of a fraction of one.
    """
    directory, suffix = modules_dir
    log = directory / "imported"
    names = [f"nswt_slow{i}_{suffix}" for i in range(4)]
    for name in names:
        _write_module(directory, name, f"import time\nopen({str(log)!r}, 'a').write({name!r} + ' ')\ntime.sleep(60)\n")
    code = textwrap.dedent(f"""
        import socket, sys
        sys.path.insert(0, {str(directory)!r})
        from nsworkers import _zygote
        caller, ctl = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # caller kept: no hang-up
        zygote = _zygote._Zygote(ctl, 0)
        zygote.trial_timeout = 0.2
        zygote.singly.update((name, {str(directory)!r} + "/" + name + ".py") for name in {names!r})
        tried = 0
        while zygote.singly and tried < 10:
            zygote.learn_singly()
            tried += 1
        print(tried, [zygote.refused.get(name) for name in {names!r}])
    """)
    done = run_python(code)  # a fresh interpreter, single-threaded as the zygote is: the trial forks
    assert done.returncode == 0, done.stderr
    gave_up = _zygote._GAVE_UP_SINGLY
    assert done.stdout.strip() == f"1 {[_zygote.TRIAL_TOO_SLOW, gave_up, gave_up, gave_up]}"
    imported = log.read_text().split() if log.exists() else []  # the one trial may be killed before it writes
    assert set(imported) <= {names[0]}  # no trial imported the others


def _lazy_modules(modules_dir: tuple[Path, str], tag: str) -> tuple[str, str, types.ModuleType]:
    """Two modules a callable imports as it runs, the first starting a thread: their names, the callable's module."""
    directory, suffix = modules_dir
    threads, plain, caller = (f"nswt_{tag}{kind}_{suffix}" for kind in ("threads", "plain", "caller"))
    _write_module(directory, threads, _STARTS_A_THREAD)
    _write_module(directory, plain, "import os\nIMPORTED_BY = os.getpid()\n")
    source = f"""
        import importlib, os

        def lazily():
            started = importlib.import_module("{threads}")
            try:
                return importlib.import_module("{plain}").IMPORTED_BY, os.getpid()
            finally:
                started.stop.set()
        """
    _write_module(directory, caller, source)
    return threads, plain, importlib.import_module(caller)


def _trial_log(path: Path) -> list[tuple[str, str, list[str]]]:
    """``$NSWORKERS_TRIAL_LOG``'s lines: (event, verdict, module names)."""
    if not path.exists():
        return []
    entries = []
    for line in path.read_text().splitlines():
        _time, event, verdict, names = line.split("\t")
        entries.append((event, verdict, names.split()))
    return entries


@pytest.mark.privileged
def test_the_trial_log_says_what_was_learned_and_why_a_module_was_not(
    modules_dir: tuple[Path, str], make_netns: Callable[[], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # $NSWORKERS_TRIAL_LOG: a module the zygote did not learn says why (the dill flake never did).
    threads, plain, module = _lazy_modules(modules_dir, "log")
    caller = module.__name__
    log = tmp_path / "trials"
    monkeypatch.setenv(_zygote.TRIAL_LOG_ENV, str(log))
    first, second = (f"/run/netns/{make_netns()}" for _ in range(2))
    with nsworkers.Pool(max_tasks_per_worker=1) as pool:  # a fresh worker for every call
        pool.run(first, module.lazily)
        assert wait_for(lambda: plain in _modules_of_a_new_worker(pool, second))
    entries = _trial_log(log)
    assert ("alone", "learned", [caller]) in entries  # the callable's own module, before its first worker
    reports = [names for event, verdict, names in entries if event == "report" and verdict == "queued"]
    assert any(threads in names and plain in names for names in reports), entries
    assert any(event == "batch" and verdict != "learned" and threads in names for event, verdict, names in entries)
    refused = _zygote.TRIAL_VERDICTS[3]  # started a thread
    assert entries.index(("alone", refused, [threads])) < entries.index(("alone", "learned", [plain])), entries


@pytest.mark.privileged
def test_a_trial_log_that_is_a_fifo_with_no_reader_costs_no_spawn(
    make_netns: Callable[[], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``$NSWORKERS_TRIAL_LOG`` naming a FIFO nobody reads (a ``cat`` that was stopped).

    Broke (found by helper-18): the zygote opened it for writing, blocking,
    and waited for a reader for ever: no worker could start again.
    """
    fifo = tmp_path / "trials"
    os.mkfifo(fifo)
    monkeypatch.setenv(_zygote.TRIAL_LOG_ENV, str(fifo))
    with nsworkers.Pool() as pool:
        for _ in range(2):  # a module to learn, a report: lines to write; then a spawn that needs the zygote
            assert pool.options(timeout=60).run(f"/run/netns/{make_netns()}", pid) > 0  # 60 s: detects a hang


@pytest.mark.privileged
def test_a_trial_log_past_the_file_size_limit_costs_no_spawn(netns: str, tmp_path: Path) -> None:
    """The trial log of a caller at its ``RLIMIT_FSIZE`` (a long-running service whose log grew).

    Broke (found by helper-18): the zygote set every signal to its default,
    SIGXFSZ included, so its first line past the limit killed it, and each
    zygote after it: every cold call failed with ``WorkerStartError``.
    """
    log = tmp_path / "trials"
    log.write_text("x" * 4096)
    _write_module(tmp_path, "nswt_fsize", "import os\n\ndef pid():\n    return os.getpid()\n")
    code = f"""
import os, resource, sys
sys.path.insert(0, {str(tmp_path)!r})
os.environ[{_zygote.TRIAL_LOG_ENV!r}] = {str(log)!r}
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
from nsworkers import Pool
from nswt_fsize import pid  # a module to learn: a line to write
with Pool() as pool:
    print(pool.options(timeout=60).run({netns!r}, pid) > 0)
"""
    done = run_python(code)
    assert done.stdout == "True\n", done.stderr[-2000:]


@pytest.mark.privileged
def test_dill_is_learned_after_the_first_call_that_needed_it(
    make_netns: Callable[[], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Broke (the trial's walk of what an import made, before C data was left out): dill's
    # ctypes function pointers hold addresses, never the same in two imports, so dill was
    # refused and every worker sent a lambda imported dill and its ~50 modules itself.
    # And on 3.13 (before times in nanoseconds were a marker): logging._startTime.
    # Under CI with bench.churn, the first worker's lesson was missing twice in six runs (3.10, 3.11),
    # cause not found: its report (sent MSG_DONTWAIT) lost, or one trial refused. A second worker's
    # report must then teach it; a zygote that refused dill for good still fails here, with its log.
    log = tmp_path / "trials"
    monkeypatch.setenv(_zygote.TRIAL_LOG_ENV, str(log))
    first, again, second = (f"/run/netns/{make_netns()}" for _ in range(3))
    with nsworkers.Pool() as pool:
        assert pool.run(first, lambda: 1) == 1  # code by value: its worker imports dill
        if "dill" not in _modules_of_a_new_worker(pool, second):
            assert pool.run(again, lambda: 2) == 2
        assert "dill" in _modules_of_a_new_worker(pool, f"/run/netns/{make_netns()}"), _trial_log(log)


@pytest.mark.privileged
def test_a_module_that_reads_the_time_at_import_is_learned(modules_dir: tuple[Path, str]) -> None:
    # Broke: the two imports of a trial ran at other moments, so an int time in nanoseconds
    # differed and the module was refused; 3.13's logging keeps one, which refused dill and
    # asyncio. Its neighbours, an inode number and this process's pid, are still compared.
    directory, suffix = modules_dir
    stamps, inode = f"nswt_stamps_{suffix}", f"nswt_inode_{suffix}"
    _write_module(directory, stamps, "import os, time\nSTARTED = [time.time_ns(), os.getpid()]\n")
    _write_module(
        directory, inode, "import os, time\nSTARTED = [time.time_ns(), os.stat('/proc/self/ns/net').st_ino]\n"
    )
    code = (  # in a fresh interpreter, single-threaded as the zygote is: the trial forks
        f"import sys; sys.path.insert(0, {str(directory)!r}); from nsworkers import _zygote; "
        f"print(*(_zygote.trial_import(((name, {str(directory)!r} + '/' + name + '.py'),)) "
        f"for name in ({stamps!r}, {inode!r})), sep='|')"
    )
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().split("|") == ["None", _zygote.TRIAL_VERDICTS[7]]


@pytest.mark.privileged
def test_a_module_too_big_for_the_trial_to_compare_is_not_learned(
    modules_dir: tuple[Path, str], make_netns: Callable[[], str]
) -> None:
    # The trial compares everything the import made; past _WALK_LIMIT objects it cannot, and refuses.
    directory, suffix = modules_dir
    big, caller = f"nswt_big_{suffix}", f"nswt_bigcaller_{suffix}"
    _write_module(directory, big, "DATA = [[i] for i in range(450_000)]\n")
    code = (  # the verdict itself, in a fresh interpreter (single-threaded, as the zygote is), however loaded
        f"import sys; sys.path.insert(0, {str(directory)!r}); from nsworkers import _zygote; "
        f"print(_zygote.trial_import((({big!r}, {str(directory / (big + '.py'))!r}),), timeout=120))"
    )
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == _zygote.TRIAL_VERDICTS[8]
    _write_module(
        directory, caller, f"import importlib\n\ndef lazily():\n    return len(importlib.import_module({big!r}).DATA)\n"
    )
    module = importlib.import_module(caller)
    first, second = (f"/run/netns/{make_netns()}" for _ in range(2))
    with nsworkers.Pool() as pool:
        assert pool.run(first, module.lazily) == 450_000
        assert big not in _modules_of_a_new_worker(pool, second)  # the very next request: tried, refused


@pytest.mark.privileged
def test_modules_a_first_call_imports_are_learned_but_not_one_that_starts_a_thread(
    modules_dir: tuple[Path, str], make_netns: Callable[[], str]
) -> None:
    # The worker reports what its first call imported; the zygote learns it between requests,
    # with the same trial as for a callable's own module, in the order the call imported them.
    threads, plain, module = _lazy_modules(modules_dir, "lazy")
    first, second = (f"/run/netns/{make_netns()}" for _ in range(2))
    with nsworkers.Pool(max_tasks_per_worker=1) as pool:  # a fresh worker for every call
        imported_by, worker = pool.run(first, module.lazily)
        assert imported_by == worker  # not known yet: the worker imported it
        assert wait_for(lambda: plain in _modules_of_a_new_worker(pool, second))
        assert threads not in _modules_of_a_new_worker(pool, second)  # refused: it came first in the report
        assert _zygote_threads(pool) == 1
        imported_by, worker = pool.run(second, module.lazily)
        assert imported_by == pool._spawner.zygote_pid  # type: ignore[attr-defined]

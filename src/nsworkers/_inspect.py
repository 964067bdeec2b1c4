"""Batch inspection: a netlink snapshot of many network namespaces, in parallel.

    for entry in nsworkers.inspect(what=("links", "addresses", "routes")):
        print(entry["namespace"], entry["ok"], len(entry.get("links", [])))

Each namespace becomes one entry, yielded as soon as its worker answers::

    {"namespace": "/run/netns/blue", "name": "blue", "id": "net:[4026532301]",
     "ok": true, "links": [...], "addresses": [...], "routes": [...], "inconsistent": []}
    {"namespace": "/run/netns/gone", "name": "gone", "ok": false,
     "error": {"type": "NamespaceNotFoundError", "message": "..."}}

A namespace that fails or vanishes mid-batch is an error entry; the batch goes on.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from ._namespace import NETNS_RUN_DIRS, Namespace, NamespaceType
from ._pool import Pool

__all__ = ("inspect", "network_namespaces")

Entry = dict[str, Any]


def network_namespaces() -> list[str]:
    """One path per network namespace on the host, named ones first.

    Found by :func:`nsworkers.discover`: named and otherwise bind-mounted
    namespaces, those only processes or threads are in, and those only an
    open fd keeps alive. Left out: namespaces that only nsworkers' own
    processes keep alive (a worker still in a namespace whose name was
    deleted is not a namespace of the host's, and following it would
    keep it alive for ever). Ours by name *and* by our pid, mount and user
    namespaces and uid: a name alone, anyone can take on to hide.
    """
    from ._discover import discover, held_only_by_nsworkers

    return _paths([ns for ns in discover(["net"], relations=False, attribute=False) if not held_only_by_nsworkers(ns)])


def _paths(found: list[Any]) -> list[str]:
    ordered = sorted(found, key=lambda n: (not n.names, n.paths[0] if n.paths else ""))
    return [n.paths[0] for n in ordered if n.paths]


def _name_of(path: str) -> str | None:
    for base in NETNS_RUN_DIRS:
        if path.startswith(base + "/"):
            return path[len(base) + 1 :]
    return None


def _label(target: object) -> str:
    if isinstance(target, Namespace):
        return target.path
    return os.fspath(target) if isinstance(target, (str, os.PathLike)) else repr(target)


def batch_targets(namespaces: Iterable[Any] | None, attribution: bool) -> tuple[list[Any], dict[str, Any]]:
    """A batch's targets (every network namespace if *namespaces* is None) and ``{unique id: Attribution}``.

    One discovery scan serves both the target list and the owners.
    """
    owners: dict[str, Any] = {}
    found: list[Any] = []
    if namespaces is None or attribution:
        from ._discover import discover

        found = discover(["net"], relations=False, attribute=attribution)
        owners = {ns.unique_id: ns.attribution for ns in found}
    return (_paths(found) if namespaces is None else list(namespaces)), owners


def batch_pool(jobs: int | None, preload: tuple[str, ...]) -> Pool:
    """The pool a batch makes for itself: *jobs* workers at a time (default twice the CPUs), never idle-reaped."""
    return Pool(max_workers=jobs or 2 * (os.cpu_count() or 1), idle_timeout=None, preload=preload)


def _net_id(target: object) -> str | None:
    """The ``net:[inode]`` a snapshot of *target* must report, or None when the pool will reject it anyway."""
    if isinstance(target, Namespace):
        return target.unique_id if target.type is NamespaceType.NET else "not a network namespace"
    if isinstance(target, (str, os.PathLike)):
        try:
            return f"net:[{os.stat(target).st_ino}]"
        except OSError:
            return None  # the pool says what is wrong with it
    if isinstance(target, (list, tuple)):
        nets = [t for t in target if isinstance(t, Namespace) and t.type is NamespaceType.NET]
        return nets[0].unique_id if nets else "not a network namespace"
    return None


def inspect(
    namespaces: Iterable[str | os.PathLike[str] | Namespace] | None = None,
    what: Sequence[str] = ("links", "addresses", "routes"),
    pool: Pool | None = None,
    *,
    jobs: int | None = None,
    timeout: float | None = 30.0,
    attempts: int = 5,
    attribution: bool = True,
    socket_users: bool = True,
    stats: int = 0,
    details: int = 0,
) -> Iterator[Entry]:
    """Snapshot each namespace (every network namespace on the host by default); yield entries as they complete.

    *what* names sections of :data:`nsworkers.netlink.SECTIONS`. Without a
    *pool*, one is made for the batch (``jobs`` workers at a time, default
    twice the CPUs, with the netlink reader preloaded) and shut down at the end. Memory
    stays bounded however many namespaces there are: at most ``2 * jobs``
    calls are queued and the pool's ``max_workers`` caps live workers.
    With *attribution*, each entry says which container, pod or unit the
    namespace belongs to (``"attribution"``, None when unknown). With
    *socket_users*, each record of the ``sockets`` and ``unix_sockets``
    sections gets ``"users"``: the processes holding it, found in this
    process's ``/proc`` (see :mod:`nsworkers._sockets`).
    *stats* and *details* are ``ip -s`` / ``ip -d`` (see :func:`nsworkers.netlink.snapshot`).

    A target that is not a network namespace (``/proc/PID/ns/uts``, a pid
    namespace ...) is an error entry (``NamespaceTypeError``): its worker
    would otherwise read the network namespace it happens to share.
    """
    from . import netlink

    sections = tuple(what)
    unknown = [w for w in sections if w not in netlink.SECTIONS]
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}; choose from {sorted(netlink.SECTIONS)}")
    users = None
    if socket_users and {"sockets", "unix_sockets"} & set(sections):
        from ._sockets import SocketUsers

        users = SocketUsers()
    targets, owners = batch_targets(namespaces, attribution)
    own = pool is None
    pool = pool or batch_pool(jobs, ("nsworkers.netlink",))
    runner = pool.options(timeout=timeout)
    expected = {_label(t): _net_id(t) for t in targets}
    try:
        results = runner.map(
            netlink.snapshot,
            targets,
            kwargs={"what": sections, "attempts": attempts, "stats": stats, "details": details},
            return_exceptions=True,
        )
        for target, answer in results:
            label = _label(target)
            entry: Entry = {"namespace": label, "name": _name_of(label)}
            result: Any = answer
            want = expected.get(label)
            if not isinstance(answer, BaseException) and want is not None and answer.get("id") != want:
                from .errors import NamespaceTypeError

                result = NamespaceTypeError(f"{label} is not a network namespace (its worker is in {answer.get('id')})")
            if isinstance(result, BaseException):
                entry["ok"] = False
                entry["error"] = {"type": type(result).__name__, "message": str(result)}
            else:
                entry["ok"] = True
                entry.update(result)
                if users is not None:
                    users.attach([*result.get("sockets", []), *result.get("unix_sockets", [])])
                if attribution:
                    owner = owners.get(result.get("id", ""))
                    entry["attribution"] = owner.as_dict() if owner is not None else None
            yield entry
    finally:
        if own:
            pool.shutdown(wait=False, cancel_futures=True)

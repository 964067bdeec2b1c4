"""Host-wide namespace discovery, like ``lsns`` and lxkns.

Sources, in the order they are scanned:

1. ``/proc/PID/ns/TYPE`` of every process;
2. ``/proc/PID/task/TID/ns/TYPE`` of every other thread (a thread can sit in
   a namespace its process is not in);
3. nsfs bind mounts in ``/proc/PID/mountinfo``, read once per mount namespace
   found (``/run/netns/NAME`` is one; so is a bind mount anywhere else);
4. open fds that reference a namespace (``/proc/PID/fd/N``).

Namespaces are deduplicated by inode (all nsfs inodes share one device).
Processes that exit during the scan are skipped silently; ``EACCES`` on a
process is collected in :attr:`Discovery.errors`, not raised.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from . import _sys
from ._attribution import Attribution, attribute_pid
from ._namespace import NETNS_RUN_DIRS, Namespace, NamespaceType, TypeLike, nsfs_dev, type_of_fd
from .errors import NamespaceNotFoundError, NotANamespaceError

__all__ = ("DiscoveredNamespace", "Discovery", "discover")


@dataclass
class DiscoveredNamespace:
    """One namespace found on the host, and every way found to reach it."""

    type: NamespaceType
    inode: int
    dev: int
    names: list[str] = field(default_factory=list)  #: names in /run/netns
    paths: list[str] = field(default_factory=list)  #: paths that open it, best first
    pids: list[int] = field(default_factory=list)  #: processes whose main thread is in it
    tids: list[int] = field(default_factory=list)  #: other threads in it (pid != tid)
    holders: list[int] = field(default_factory=list)  #: processes holding it by an open fd
    commands: dict[int, str] = field(default_factory=dict)  #: pid -> process name
    parent: str | None = None  #: parent namespace (user and pid namespaces), if the kernel tells
    owner: str | None = None  #: owning user namespace, if the kernel tells
    sources: list[str] = field(default_factory=list)  #: process, task, bindmount, fd
    attribution: Attribution | None = None  #: container / pod / unit of its processes, if recognised

    @property
    def id(self) -> tuple[int, int]:
        """The kernel identity ``(st_dev, st_ino)``, as :attr:`Namespace.id`."""
        return (self.dev, self.inode)

    @property
    def unique_id(self) -> str:
        """``"net:[4026531833]"``."""
        return f"{self.type.value}:[{self.inode}]"

    def open(self) -> Namespace:
        """Open it through the first path that still works (it may be gone since the scan)."""
        for path in self.paths:
            try:
                ns = Namespace.open(path, self.type)
            except (OSError, NotANamespaceError):  # gone, or its path now leads to something else
                continue
            if ns.inode == self.inode:
                return ns
            ns.close()
        raise NamespaceNotFoundError(errno.ENOENT, f"{self.unique_id} is gone", self.paths[0] if self.paths else "")

    def as_dict(self) -> dict[str, Any]:
        """The ``nsworkers ls --json`` record (a stable schema: see the README)."""
        return {
            "type": self.type.value,
            "inode": self.inode,
            "id": self.unique_id,
            "names": self.names,
            "paths": self.paths,
            "pids": self.pids,
            "tids": self.tids,
            "holders": self.holders,
            "commands": {str(pid): name for pid, name in self.commands.items()},
            "parent": self.parent,
            "owner": self.owner,
            "sources": self.sources,
            "attribution": self.attribution.as_dict() if self.attribution is not None else None,
        }


class Discovery(list[DiscoveredNamespace]):
    """The namespaces found (a list), plus :attr:`errors`: ``(path, message)`` that could not be read."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[tuple[str, str]] = []


def _link_inode(link: str, kinds: set[str]) -> tuple[str, int] | None:
    name, sep, rest = link.partition(":[")
    if not sep or name not in kinds:
        return None
    try:
        return name, int(rest.rstrip("]"))
    except ValueError:
        return None


def _fd_namespace(path: str, dev: int, kinds: set[str]) -> tuple[str, int] | None:
    st = os.stat(path)
    if st.st_dev != dev:
        return None
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        kind = type_of_fd(fd).value
    finally:
        os.close(fd)
    return (kind, st.st_ino) if kind in kinds else None


def _pids() -> list[int]:
    return sorted(int(p) for p in os.listdir("/proc") if p.isdigit())


def _comm(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().rstrip("\n")
    except OSError:
        return None


#: /proc/PID/comm of nsworkers' own processes (set in ``_worker`` and ``_zygote``)
PROCESS_NAMES = frozenset({"nsw-worker", "nsw-spare", "nsw-zygote"})


def held_only_by_nsworkers(ns: DiscoveredNamespace) -> bool:
    """True if nothing but nsworkers processes (and this process's fds) keeps *ns* alive: no bind mount,
    no other process or thread in it, no other process holding it (:func:`is_nsworkers_process`)."""
    if "bindmount" in ns.sources or ns.tids:
        return False
    me = os.getpid()
    members = [pid for pid in [*ns.pids, *ns.holders] if pid != me]
    return bool(members) and all(is_nsworkers_process(pid, ns.commands.get(pid)) for pid in members)


def is_nsworkers_process(pid: int, command: str | None = None) -> bool:
    """True if *pid* is named as nsworkers names its processes, and is where one of ours would be.

    The name (``/proc/PID/comm``, *command* if already read) is anyone's to
    set: a container, or any user after ``unshare -rn``, that named itself
    ``nsw-worker`` would hide its namespace from :func:`network_namespaces`
    and the exporter. So it must also be in this process's pid namespace (a
    worker never leaves the one it was forked in: ``setns`` moves only its
    children), mount and user namespaces (one joined for inspection: a
    network namespace) and have this process's effective uid. A worker that
    joined a mount or user namespace, or a pool of another user, is then no
    nsworkers process here: its namespace is listed, not hidden. What still
    passes is a process of our uid in our pid, mount and user namespaces,
    which could do anything we do.
    """
    if (command or _comm(pid)) not in PROCESS_NAMES:
        return False
    try:
        for kind in ("pid", "mnt", "user"):
            theirs, ours = os.stat(f"/proc/{pid}/ns/{kind}"), os.stat(f"/proc/self/ns/{kind}")
            if (theirs.st_ino, theirs.st_dev) != (ours.st_ino, ours.st_dev):
                return False
        with open(f"/proc/{pid}/status") as status:
            uids = next((line.split()[1:] for line in status if line.startswith("Uid:")), [])
    except OSError:  # gone, or not ours to look at
        return False
    return len(uids) > 1 and uids[1] == str(os.geteuid())


def _leads_to(path: str, ino: int, dev: int) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def _unescape(path: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \\ooo
    out, i = [], 0
    while i < len(path):
        if path[i] == "\\" and i + 3 < len(path) and path[i + 1 : i + 4].isdigit():
            out.append(chr(int(path[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(path[i])
            i += 1
    return "".join(out)


def discover(types: Iterable[TypeLike] | None = None, *, relations: bool = True, attribute: bool = True) -> Discovery:
    """Every namespace on the host of the given *types* (all eight by default).

    Each result carries its names, paths that can open it, pids, threads,
    fd holders, process names and, for user and pid namespaces, the parent
    and owner where the kernel tells (``NS_GET_PARENT``, ``NS_GET_USERNS``;
    *relations* turns those look-ups off) and, with *attribute*, the
    container, pod or systemd unit its processes belong to (see
    ``_attribution``). Results can be opened
    (:meth:`DiscoveredNamespace.open`) and passed to the pool as their
    ``paths[0]``.
    """
    kinds = {NamespaceType.coerce(t).value for t in types} if types is not None else {t.value for t in NamespaceType}
    dev = nsfs_dev()
    found: dict[tuple[str, int], DiscoveredNamespace] = {}
    result = Discovery()

    def entry(kind: str, ino: int) -> DiscoveredNamespace:
        key = (kind, ino)
        if key not in found:
            found[key] = DiscoveredNamespace(NamespaceType(kind), ino, dev)
        return found[key]

    noted: set[tuple[int, str]] = set()  # (id of the entry, path): a list scan per path is quadratic

    def note(ns: DiscoveredNamespace, source: str, path: str) -> None:
        if source not in ns.sources:
            ns.sources.append(source)
        if (id(ns), path) not in noted:
            noted.add((id(ns), path))
            ns.paths.append(path)

    mnt_reps: dict[int, int] = {}  # mount namespace inode -> a pid in it
    own_mnt = os.readlink("/proc/self/ns/mnt")
    pids = _pids()
    for pid in pids:
        base = f"/proc/{pid}"
        try:
            links = {kind: os.readlink(f"{base}/ns/{kind}") for kind in kinds | {"mnt"}}
        except FileNotFoundError:
            continue  # exited
        except PermissionError as exc:
            result.errors.append((f"{base}/ns", exc.strerror or "permission denied"))
            continue
        except OSError:
            continue
        mnt = _link_inode(links["mnt"], {"mnt"})
        if mnt is not None:
            mnt_reps.setdefault(mnt[1], pid)
        for kind in kinds:
            parsed = _link_inode(links[kind], kinds)
            if parsed is None:
                continue
            ns = entry(*parsed)
            ns.pids.append(pid)
            note(ns, "process", f"{base}/ns/{kind}")
        try:
            tids = [int(t) for t in os.listdir(f"{base}/task") if int(t) != pid]
        except OSError:
            tids = []
        for tid in tids:
            for kind in kinds:
                try:
                    link = os.readlink(f"{base}/task/{tid}/ns/{kind}")
                except OSError:
                    continue
                parsed = _link_inode(link, kinds)
                if parsed is None or link == links[kind]:
                    continue
                ns = entry(*parsed)
                ns.tids.append(tid)
                note(ns, "task", f"{base}/task/{tid}/ns/{kind}")
        try:
            fds = os.listdir(f"{base}/fd")
        except OSError:
            fds = []
        for fd in fds:
            try:
                link = os.readlink(f"{base}/fd/{fd}")
                parsed = _link_inode(link, kinds)
                if parsed is None and link.startswith("/"):
                    # opened through a bind mount: the link shows that path, not "net:[...]"
                    parsed = _fd_namespace(f"{base}/fd/{fd}", dev, kinds)
            except OSError:
                continue
            if parsed is not None:
                ns = entry(*parsed)
                if pid not in ns.holders:
                    ns.holders.append(pid)
                note(ns, "fd", f"{base}/fd/{fd}")

    # nsfs bind mounts, once per mount namespace
    for mnt_ino, pid in sorted(mnt_reps.items()):
        try:
            with open(f"/proc/{pid}/mountinfo") as f:
                lines = f.readlines()
        except OSError:
            continue
        ours = own_mnt == f"mnt:[{mnt_ino}]"
        for line in lines:
            fields = line.split()
            try:
                sep = fields.index("-")
            except ValueError:
                continue
            if fields[sep + 1] != "nsfs":
                continue
            parsed = _link_inode(fields[3], kinds)
            if parsed is None:
                continue
            mount_point = _unescape(fields[4])
            path = mount_point if ours else f"/proc/{pid}/root{mount_point}"
            if ours and not _leads_to(path, parsed[1], dev):
                continue  # over-mounted (a tmpfs on /run/netns, say): no path to it from here
            ns = entry(*parsed)
            note(ns, "bindmount", path)
            if ours:
                for run_dir in NETNS_RUN_DIRS:
                    if os.path.dirname(mount_point) == run_dir:
                        name = os.path.basename(mount_point)
                        if name not in ns.names:
                            ns.names.append(name)

    cache: dict[int, Attribution] = {}
    for ns in found.values():
        # bind mounts first: they outlive processes
        ns.paths.sort(key=lambda p: (not p.startswith(("/run/netns/", "/var/run/netns/")), p.startswith("/proc/")))
        for pid in ns.pids[:1] + ns.holders[:1]:
            command = _comm(pid)
            if command is not None:
                ns.commands[pid] = command
        if relations and ns.type in (NamespaceType.USER, NamespaceType.PID):
            _relations(ns)
        if attribute:
            ns.attribution = _attribute(ns, cache)
        result.append(ns)
    result.sort(key=lambda n: (n.type.value, n.inode))
    return result


def _attribute(ns: DiscoveredNamespace, cache: dict[int, Attribution]) -> Attribution | None:
    """The most specific attribution among the first few processes in (or holding) the namespace."""
    best: Attribution | None = None
    for pid in (ns.pids + ns.holders)[:16]:
        if pid not in cache:
            cache[pid] = attribute_pid(pid)
        found = cache[pid]
        if found.container_id or found.pod_uid:
            return found
        if found.known and best is None:
            best = found
    return best


def _relations(ns: DiscoveredNamespace) -> None:
    try:
        handle = ns.open()
    except OSError:
        return
    with handle:
        for request, attr, kind in (
            (_sys.NS_GET_PARENT, "parent", ns.type.value),
            (_sys.NS_GET_USERNS, "owner", "user"),
        ):
            try:
                fd = _sys.ns_ioctl(handle.fd, request)
            except OSError:
                continue  # EPERM: outside our view; ENOTTY: old kernel
            try:
                setattr(ns, attr, f"{kind}:[{os.fstat(fd).st_ino}]")
            finally:
                os.close(fd)

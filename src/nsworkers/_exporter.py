"""Per-namespace network metrics for Prometheus: ``nsworkers exporter``.

One exporter per host covers every network namespace on it, found live at
each scrape. Collection is built around *probes*: the first time a namespace
is seen, a worker joins it once and opens a few file descriptors there -- a
``NETLINK_ROUTE`` socket, an ``AF_INET`` socket for ethtool ioctls, and the
``/proc/net`` and ``/proc/sys/net`` files below -- which the exporter takes
over (``pidfd_getfd``). An fd keeps the namespace it was opened in, so later
scrapes read every namespace from the exporter process itself, with no
worker round trip and no ``setns``::

    exporter ──discover()──► namespaces now ──new?──► worker joins, opens fds ──pidfd_getfd──► probe
        │                                                                                      │
        └──── each scrape: dump links/addresses/routes/neighbours, pread /proc files ◄─────────┘

A probe holds a reference to its namespace, so the exporter must let go of
namespaces that are gone: a namespace that discovery no longer finds (no
process, bind mount or nsfs fd holds it) has its probe closed at once, and
the kernel can free it. Workers are only needed for new namespaces; the pool
keeps a handful and stops them when idle, so memory stays small however many
namespaces there are.

Files read per namespace (the worker is in the target's network namespace
but not in its mount namespace, so ``/proc`` is the caller's procfs and
``/proc/thread-self/net`` is the target's view; nothing is read from the
target's filesystem): ``sockstat``, ``sockstat6``, ``snmp``, ``snmp6``,
``netstat`` and ``nf_conntrack_count`` / ``nf_conntrack_max``.

Concurrent scrapes are coalesced: a scrape that starts while another runs
waits for it and serves its result, and a result younger than ``max_age``
is served again (two Prometheus replicas do not double the work).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client.core import Metric
    from prometheus_client.registry import CollectorRegistry

    from ._attribution import Attribution
    from ._discover import DiscoveredNamespace
    from ._pool import Pool

__all__ = ("DEFAULT_ADDRESS", "DEFAULT_PORT", "ExporterOptions", "NetnsCollector", "serve", "write_textfile")

log = logging.getLogger("nsworkers.exporter")

#: Listen address and port by default. The Prometheus default-port list
#: (github.com/prometheus/prometheus/wiki/Default-port-allocations) has no
#: free port left in 9100-9999; new exporters continue above 10000 ("fill a
#: gap, otherwise add 1 to the last entry"), and 10025 was a gap there.
DEFAULT_ADDRESS = "127.0.0.1"
DEFAULT_PORT = 10025

#: Attribution labels, in the order they are written, and the field each comes from.
ATTRIBUTION_LABELS = (
    ("pod", "pod_name"),
    ("pod_namespace", "pod_namespace"),
    ("pod_uid", "pod_uid"),
    ("container", "container_id"),
    ("container_name", "container_name"),
    ("runtime", "runtime"),
    ("unit", "unit"),
)

# /proc files a probe keeps open, by the name the parsers use
_PROC_FILES = (
    ("sockstat", "/proc/thread-self/net/sockstat"),
    ("sockstat6", "/proc/thread-self/net/sockstat6"),
    ("snmp", "/proc/thread-self/net/snmp"),
    ("snmp6", "/proc/thread-self/net/snmp6"),
    ("netstat", "/proc/thread-self/net/netstat"),
    ("conntrack_count", "/proc/sys/net/netfilter/nf_conntrack_count"),
    ("conntrack_max", "/proc/sys/net/netfilter/nf_conntrack_max"),
)


# ---------------------------------------------------------------------------
# the worker side: open the fds once


def open_probe() -> tuple[tuple[int, list[str]], list[int]]:
    """Runs in the worker: ``((netns inode, names of the fds), fds)`` for :meth:`Pool._take_fds`.

    The fds are, in order: a ``NETLINK_ROUTE`` socket, an ``AF_INET``
    datagram socket (ethtool ioctls), then whichever of the ``/proc`` files
    exist in this kernel.
    """
    from .netlink import _wire as w

    inode = os.stat("/proc/thread-self/ns/net").st_ino
    nl = w.NetlinkSocket(w.NETLINK_ROUTE)
    inet = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    names = ["netlink", "inet"]
    fds = [nl.sock.detach(), inet.detach()]
    for name, path in _PROC_FILES:
        try:
            fds.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
        except FileNotFoundError:  # no IPv6, no conntrack in this kernel
            continue
        names.append(name)
    return (inode, names), fds


# ---------------------------------------------------------------------------
# parsers of the /proc/net files (pure functions; the tests feed them recorded text)


def parse_snmp(text: str, sections: Iterable[str] | None = None) -> dict[str, dict[str, int]]:
    """``/proc/net/snmp`` or ``netstat``: pairs of lines ``Tcp: Name ...`` / ``Tcp: 1 ...`` -> ``{"Tcp": {...}}``.

    With *sections*, only those are decoded (``TcpExt`` alone has ~120 fields).
    """
    wanted = None if sections is None else set(sections)
    out: dict[str, dict[str, int]] = {}
    lines = text.splitlines()
    for head, values in zip(lines[::2], lines[1::2], strict=False):
        section, _, keys = head.partition(":")
        if wanted is not None and section not in wanted:
            continue
        _, _, numbers = values.partition(":")
        out[section] = {k: int(v) for k, v in zip(keys.split(), numbers.split(), strict=False)}
    return out


def parse_snmp6(text: str, prefix: str = "") -> dict[str, int]:
    """``/proc/net/snmp6``: one ``Name value`` per line (only names starting with *prefix*)."""
    out = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            parts = line.split()
            if len(parts) == 2:
                out[parts[0]] = int(parts[1])
    return out


def parse_sockstat(text: str) -> dict[str, dict[str, int]]:
    """``/proc/net/sockstat{,6}``: ``TCP: inuse 1 orphan 0 ...`` -> ``{"TCP": {"inuse": 1, ...}}``."""
    out: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        section, _, rest = line.partition(":")
        words = rest.split()
        out[section] = {k: int(v) for k, v in zip(words[::2], words[1::2], strict=False)}
    return out


# ---------------------------------------------------------------------------
# netlink: the dumps of nsworkers.netlink, counted instead of printed

# ethtool (include/uapi/linux/ethtool.h, sockios.h)
_SIOCETHTOOL = 0x8946
_ETHTOOL_GSET = 1
_SPEED_UNKNOWN = 0xFFFFFFFF


@dataclass
class Interface:
    """What a scrape reports of one interface."""

    name: str
    operstate: str  #: as ip prints it: UP, DOWN, UNKNOWN ...
    mtu: int | None
    stats: dict[str, dict[str, int]]  #: ``{"rx": {...}, "tx": {...}}``, the ``stats64`` object of ``ip -j -s link``
    speed_bytes: int | None = None


@dataclass
class NamespaceStats:
    """Everything one scrape read from one namespace."""

    interfaces: list[Interface] = field(default_factory=list)
    addresses: dict[str, int] = field(default_factory=dict)  #: family -> count
    routes: dict[tuple[str, str], int] = field(default_factory=dict)  #: (table, family) -> count
    neighbours: dict[tuple[str, str], int] = field(default_factory=dict)  #: (family, state) -> count
    files: dict[str, str] = field(default_factory=dict)  #: name in _PROC_FILES -> text
    inconsistent: list[str] = field(default_factory=list)  #: dumps the kernel kept flagging interrupted


def _interfaces(payloads: list[bytes]) -> list[Interface]:
    from .netlink import _names
    from .netlink import _records as r
    from .netlink import _wire as w

    out = []
    for payload in payloads:
        a = w.attrs(payload, r.IFINFOMSG.size)
        state = w.u8(a[r.IFLA_OPERSTATE]) if r.IFLA_OPERSTATE in a else 0
        found = r.stats64(a, 2)  # level 2 adds carrier_changes to tx
        stats = found[1] if found is not None else {}
        out.append(
            Interface(
                name=w.cstr(a[r.IFLA_IFNAME]) if r.IFLA_IFNAME in a else "?",
                operstate=_names.OPERSTATES[state] if state < len(_names.OPERSTATES) else str(state),
                mtu=w.u32(a[r.IFLA_MTU]) if r.IFLA_MTU in a else None,
                stats=stats,
            )
        )
    return out


def _speed_bytes(inet: socket.socket, ifname: str) -> int | None:
    """Link speed in bytes per second from ``ETHTOOL_GSET`` (no capability needed), None if unknown."""
    import ctypes
    import fcntl

    cmd = ctypes.create_string_buffer(struct.pack("=I", _ETHTOOL_GSET) + bytes(40))  # struct ethtool_cmd
    request = struct.pack("16sP", ifname.encode()[:15], ctypes.addressof(cmd)) + bytes(16)  # struct ifreq
    try:
        fcntl.ioctl(inet.fileno(), _SIOCETHTOOL, request)
    except OSError:
        return None  # lo, bridges ...: no link settings
    low, high = struct.unpack_from("=H", cmd.raw, 12)[0], struct.unpack_from("=H", cmd.raw, 28)[0]
    mbps = low | high << 16
    return None if mbps in (0, _SPEED_UNKNOWN) else mbps * 125_000


class Probe:
    """The fds held open for one network namespace, and the reads of one scrape."""

    def __init__(self, inode: int, names: list[str], fds: list[int]) -> None:
        from .netlink import _wire as w

        self.inode = inode
        self.fds = dict(zip(names, fds, strict=True))
        self.netlink = w.NetlinkSocket.adopt(socket.socket(fileno=self.fds.pop("netlink")))
        self.inet = socket.socket(fileno=self.fds.pop("inet"))

    def close(self) -> None:
        self.netlink.close()
        self.inet.close()
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    def _dump(self, what: str, msg_type: int, body: bytes, reply_type: int, out: NamespaceStats) -> list[bytes]:
        from .netlink import _dumps

        def once() -> tuple[list[bytes], bool]:
            msgs, interrupted = self.netlink.dump(msg_type, body)
            return [payload for kind, _flags, payload in msgs if kind == reply_type], interrupted

        payloads, interrupted, _used = _dumps.retry(what, once, _dumps.DEFAULT_ATTEMPTS)
        if interrupted:
            out.inconsistent.append(what)
        return payloads

    def read(self, speed: bool = True) -> NamespaceStats:
        """One scrape of this namespace, from the exporter process (no worker involved)."""
        from .netlink import _dumps, _names
        from .netlink import _records as r
        from .netlink import _wire as w

        out = NamespaceStats()
        out.interfaces = _interfaces(self._dump("link", w.RTM_GETLINK, _dumps._link_request(True), w.RTM_NEWLINK, out))
        if speed:
            for iface in out.interfaces:
                iface.speed_bytes = _speed_bytes(self.inet, iface.name)
        family_name = _names.FAMILIES.get
        for payload in self._dump("address", w.RTM_GETADDR, bytes(r.IFADDRMSG.size), w.RTM_NEWADDR, out):
            family = family_name(payload[0], str(payload[0]))
            out.addresses[family] = out.addresses.get(family, 0) + 1
        names = _names.Names()
        for payload in self._dump("route", w.RTM_GETROUTE, bytes(r.RTMSG.size), w.RTM_NEWROUTE, out):
            family_no, _dl, _sl, _tos, table, _proto, _scope, _type, _flags = r.RTMSG.unpack_from(payload)
            full = w.attrs(payload, r.RTMSG.size).get(r.RTA_TABLE)  # rtm_table has 8 bits; RTA_TABLE the id
            key = (names.table(w.u32(full) if full is not None else table), family_name(family_no, str(family_no)))
            out.routes[key] = out.routes.get(key, 0) + 1
        for payload in self._dump("neighbour", w.RTM_GETNEIGH, bytes(r.NDMSG.size), w.RTM_NEWNEIGH, out):
            family_no, _ifindex, state, _nflags, _ntype = r.NDMSG.unpack_from(payload)
            states = [name.lower() for bit, name in _names.NUD_STATES if state & bit] or ["none"]
            for name in states:
                key = (family_name(family_no, str(family_no)), name)
                out.neighbours[key] = out.neighbours.get(key, 0) + 1
        for name, fd in self.fds.items():
            out.files[name] = _pread_all(fd)
        return out


def _pread_all(fd: int) -> str:
    chunks: list[bytes] = []
    offset = 0
    while True:
        chunk = os.pread(fd, 1 << 16, offset)
        if not chunk:
            return b"".join(chunks).decode(errors="replace")
        chunks.append(chunk)
        offset += len(chunk)


# ---------------------------------------------------------------------------
# the collector


@dataclass
class ExporterOptions:
    """What ``nsworkers exporter`` was asked for (the CLI flags, one to one)."""

    labels_on_every_series: bool = False  #: --labels: attribution labels on every series, not only the info metric
    exclude_interfaces: re.Pattern[str] | None = None  #: --exclude-interface REGEX
    patterns: Sequence[str] = ()  #: name globs: only namespaces whose netns label matches one
    match: Callable[[Attribution | None], bool] | None = None  #: --runtime / --pod / --container
    scrape_timeout: float = 10.0  #: seconds one scrape may take; namespaces left are counted failed
    max_age: float = 5.0  #: a scrape younger than this is served again
    jobs: int | None = None  #: workers opening new namespaces at once (default 2 x CPUs)
    speed: bool = True  #: read link speeds (one ioctl per interface)


@dataclass
class _Result:
    families: list[Metric]
    finished: float


def netns_label(found: DiscoveredNamespace) -> str:
    """The ``netns`` label: the name in ``/run/netns``, else ``net:[inode]``."""
    return found.names[0] if found.names else found.unique_id


def _attribution_values(attribution: Attribution | None) -> list[str]:
    if attribution is None:
        return ["" for _ in ATTRIBUTION_LABELS]
    return [str(getattr(attribution, attr) or "") for _, attr in ATTRIBUTION_LABELS]


class NetnsCollector:
    """A ``prometheus_client`` collector: one scrape of every network namespace per :meth:`collect`."""

    def __init__(self, options: ExporterOptions | None = None, pool: Pool | None = None) -> None:
        self.options = options or ExporterOptions()
        self._own_pool = pool is None
        if pool is None:
            from ._pool import Pool

            pool = Pool(
                max_workers=self.options.jobs or 2 * (os.cpu_count() or 1),
                idle_timeout=1.0,  # a worker only serves to open its namespace's fds
                preload=("nsworkers._exporter", "nsworkers.netlink"),  # open_probe imports nothing then
            )
        self.pool = pool
        self.probes: dict[int, Probe] = {}
        self.errors: dict[tuple[str, str], int] = {}  # (netns, error type) -> count, while the netns lives
        self.scrapes = 0  # scrapes actually run (coalesced ones excluded)
        self._flight = threading.Lock()  # held by the one thread running a scrape
        self._state = threading.Lock()  # guards _last
        self._last: _Result | None = None
        self._closed = False
        self._warned_discovery = False

    # -- prometheus_client protocol

    def describe(self) -> list[Metric]:
        return []  # registering must not run a scrape

    def collect(self) -> Iterator[Metric]:
        yield from self.scrape()

    # -- coalescing

    def scrape(self) -> list[Metric]:
        """The metric families of a scrape that finished at most ``max_age`` ago, or of a new one."""
        asked = time.monotonic()
        with self._flight:  # a second caller waits here for the running scrape ...
            with self._state:
                last = self._last
            if last is not None and (last.finished >= asked or asked - last.finished < self.options.max_age):
                return last.families  # ... and serves its result
            families = self._scrape()
            with self._state:
                self._last = _Result(families, time.monotonic())
            return families

    def close(self) -> None:
        """Close every probe and stop the workers."""
        with self._flight:
            self._closed = True
            for probe in self.probes.values():
                probe.close()
            self.probes.clear()
            if self._own_pool:
                self.pool.shutdown(wait=True, cancel_futures=True)  # no worker outlives close()

    # -- one scrape

    def _wanted(self, found: Iterable[DiscoveredNamespace]) -> list[DiscoveredNamespace]:
        chosen = []
        for ns in found:
            if not ns.paths:
                continue
            if self.options.patterns and not any(
                fnmatch.fnmatchcase(netns_label(ns), p) for p in self.options.patterns
            ):
                continue
            if self.options.match is not None and not self.options.match(ns.attribution):
                continue
            chosen.append(ns)
        return chosen

    def _fail(self, label: str, exc: BaseException) -> None:
        kind = type(exc).__name__
        self.errors[(label, kind)] = self.errors.get((label, kind), 0) + 1
        log.warning("%s: %s: %s", label, kind, exc)

    def _open_new(self, new: list[DiscoveredNamespace], deadline: float, failed: set[int]) -> int:
        """Open probes for namespaces seen for the first time (failures into *failed*).

        Returns how many were left for the next scrape because the scrape
        timeout came first (not an error: a burst of new namespaces is opened
        over a few scrapes).
        """
        if not new:
            return 0
        from concurrent.futures import ThreadPoolExecutor

        def open_one(ns: DiscoveredNamespace) -> bool:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            (inode, names), fds = self.pool._take_fds(ns.paths[0], open_probe, (), remaining)
            probe = Probe(inode, names, fds)
            if inode != ns.inode:  # the path now names another namespace: not the one discovered
                probe.close()
                raise LookupError(f"{ns.paths[0]} now holds net:[{inode}], not {ns.unique_id}")
            self.probes[inode] = probe
            return True

        jobs = self.options.jobs or 2 * (os.cpu_count() or 1)
        pending = 0
        with ThreadPoolExecutor(max_workers=min(jobs, len(new))) as executor:
            futures = [(ns, executor.submit(open_one, ns)) for ns in new]
            for ns, future in futures:
                exc = future.exception()
                if exc is not None:
                    failed.add(ns.inode)
                    self._fail(netns_label(ns), exc)
                elif not future.result():
                    pending += 1
        return pending

    def _read(self, ns: DiscoveredNamespace, deadline: float, builder: _Families, failed: set[int]) -> bool:
        """Read one open namespace into *builder*; False (and counted) if it failed."""
        label = netns_label(ns)
        if time.monotonic() > deadline:
            failed.add(ns.inode)
            self._fail(label, TimeoutError("scrape timeout reached before this namespace was read"))
            return False
        try:
            stats = self.probes[ns.inode].read(self.options.speed)
        except (OSError, ValueError) as exc:
            failed.add(ns.inode)
            self._fail(label, exc)
            return False
        builder.add(label, ns, stats)
        return True

    def _scrape(self) -> list[Metric]:
        from ._discover import discover, held_only_by_nsworkers

        if self._closed:
            raise RuntimeError("the collector is closed")
        started = time.monotonic()
        deadline = started + self.options.scrape_timeout
        self.scrapes += 1
        # a namespace only nsworkers processes keep alive (our idle workers, say) is gone for us
        discovery = discover(["net"], relations=False, attribute=True)
        if discovery.errors and not self._warned_discovery:
            path, message = discovery.errors[0]
            log.warning(
                "cannot look into %d processes (%s: %s ...): their namespaces are missed",
                len(discovery.errors),
                path,
                message,
            )
            self._warned_discovery = True
        found = [ns for ns in discovery if not held_only_by_nsworkers(ns)]
        live = {ns.inode for ns in found}
        for inode in [i for i in self.probes if i not in live]:  # gone: let the kernel free it
            self.probes.pop(inode).close()
        labels = {netns_label(ns) for ns in found}
        for key in [k for k in self.errors if k[0] not in labels]:  # gone: its series go too (pods churn)
            del self.errors[key]
        wanted = self._wanted(found)
        builder = _Families(self.options)
        failed: set[int] = set()
        # the namespaces already open first: a burst of new ones cannot crowd them out of a scrape
        scraped = sum(self._read(ns, deadline, builder, failed) for ns in wanted if ns.inode in self.probes)
        new = [ns for ns in wanted if ns.inode not in self.probes and ns.inode not in failed]
        pending = self._open_new(new, deadline, failed)
        scraped += sum(self._read(ns, deadline, builder, failed) for ns in new if ns.inode in self.probes)
        builder.add_self(
            duration=time.monotonic() - started,
            scraped=scraped,
            failed=len(failed),
            pending=pending,
            errors=self.errors,
            workers=len(self.pool.workers(memory=False)),
            probes=len(self.probes),
            scrapes=self.scrapes,
            unreadable=len(discovery.errors),
        )
        return builder.families()


# the counters of ip -s -s link's stats64 object, by direction: (key, what it counts)
_STATS64_DOCS = {
    "rx": (
        ("bytes", "Bytes received"),
        ("packets", "Packets received"),
        ("errors", "Receive errors"),
        ("dropped", "Received packets dropped"),
        ("over_errors", "Receive ring overflows"),
        ("multicast", "Multicast packets received"),
    ),
    "tx": (
        ("bytes", "Bytes sent"),
        ("packets", "Packets sent"),
        ("errors", "Transmit errors"),
        ("dropped", "Packets dropped on transmit"),
        ("carrier_errors", "Carrier errors on transmit"),
        ("collisions", "Collisions"),
        ("carrier_changes", "Carrier up/down changes (IFLA_CARRIER_CHANGES)"),
    ),
}


class _Families:
    """The metric families of one scrape, filled namespace by namespace."""

    def __init__(self, options: ExporterOptions) -> None:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        self.options = options
        self.extra = [name for name, _ in ATTRIBUTION_LABELS] if options.labels_on_every_series else []
        ns = ["netns", *self.extra]
        iface = ["netns", "interface", *self.extra]

        def counter(name: str, doc: str, labels: list[str], unit: str = "") -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, labels=labels, unit=unit)

        def gauge(name: str, doc: str, labels: list[str], unit: str = "") -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=labels, unit=unit)

        self.info = gauge(
            "nsworkers_netns_info",
            "One per network namespace, 1; its labels say who owns it (join on netns in PromQL).",
            ["netns", "id", *(name for name, _ in ATTRIBUTION_LABELS)],
        )
        self.iface_counters: dict[tuple[str, str], CounterMetricFamily] = {}
        for direction, word in (("rx", "receive"), ("tx", "transmit")):
            for key, doc in _STATS64_DOCS[direction]:
                unit = "bytes" if key == "bytes" else ""
                name = "carrier_changes" if key == "carrier_changes" else f"{word}_{key}"
                self.iface_counters[(direction, key)] = counter(
                    f"nsworkers_interface_{name}_total",
                    f"{doc} (ip -s -s link: stats64.{direction}.{key}).",
                    iface,
                    unit,
                )
        self.up = gauge("nsworkers_interface_up", "1 if the operational state is UP, else 0.", iface)
        self.operstate = gauge(
            "nsworkers_interface_oper_state_info",
            "1, with the operational state (RFC 2863, as ip prints it) as a label.",
            [*iface, "operstate"],
        )
        self.mtu = gauge("nsworkers_interface_mtu_bytes", "MTU.", iface, "bytes")
        self.speed = gauge(
            "nsworkers_interface_speed_bytes", "Link speed in bytes per second (ethtool), where known.", iface, "bytes"
        )
        self.addresses = gauge("nsworkers_netns_addresses", "Addresses, by family.", [*ns, "family"])
        self.routes = gauge("nsworkers_netns_routes", "Routes, by table and family.", [*ns, "table", "family"])
        self.neighbours = gauge(
            "nsworkers_netns_neighbours", "Neighbour entries, by family and NUD state.", [*ns, "family", "state"]
        )
        self.ct_entries = gauge("nsworkers_netns_conntrack_entries", "Conntrack entries (nf_conntrack_count).", ns)
        self.ct_limit = gauge(
            "nsworkers_netns_conntrack_entries_limit", "Conntrack table size (nf_conntrack_max; host-wide).", ns
        )
        self.sockets_used = gauge("nsworkers_netns_sockets_used", "Sockets in use (sockstat 'sockets: used').", ns)
        self.sockets_inuse = gauge(
            "nsworkers_netns_sockets_inuse", "Sockets in use by protocol (sockstat, sockstat6).", [*ns, "protocol"]
        )
        self.tcp_orphan = gauge(
            "nsworkers_netns_tcp_orphan_sockets", "Orphaned TCP sockets (sockstat; the kernel counts host-wide).", ns
        )
        self.tcp_tw = gauge("nsworkers_netns_tcp_timewait_sockets", "TCP sockets in TIME-WAIT (sockstat).", ns)
        self.sock_mem = gauge(
            "nsworkers_netns_sockets_memory_bytes",
            "Socket buffer memory by protocol (sockstat 'mem' pages x page size; TCP and UDP are host-wide).",
            [*ns, "protocol"],
            "bytes",
        )
        self.snmp = {
            key: counter(f"nsworkers_netns_{name}_total", doc, labels)
            for key, name, doc, labels in (
                (("Tcp", "RetransSegs"), "tcp_retransmitted_segments", "TCP segments retransmitted (snmp).", ns),
                (("Tcp", "InSegs"), "tcp_received_segments", "TCP segments received (snmp).", ns),
                (("Tcp", "OutSegs"), "tcp_sent_segments", "TCP segments sent (snmp).", ns),
                (("TcpExt", "ListenDrops"), "tcp_listen_drops", "SYNs to LISTEN sockets dropped (netstat).", ns),
                (("TcpExt", "ListenOverflows"), "tcp_listen_overflows", "Accept queue overflows (netstat).", ns),
                (
                    ("Udp", "RcvbufErrors"),
                    "udp_receive_buffer_errors",
                    "UDP datagrams dropped: receive buffer full (snmp, snmp6).",
                    [*ns, "family"],
                ),
                (
                    ("Udp", "SndbufErrors"),
                    "udp_send_buffer_errors",
                    "UDP sends failed: send buffer full (snmp, snmp6).",
                    [*ns, "family"],
                ),
                (
                    ("Udp", "NoPorts"),
                    "udp_no_port_errors",
                    "UDP datagrams to a port nobody listens on (snmp, snmp6).",
                    [*ns, "family"],
                ),
                (("Udp", "InErrors"), "udp_receive_errors", "UDP receive errors (snmp, snmp6).", [*ns, "family"]),
            )
        }
        self.tcp_estab = gauge("nsworkers_netns_tcp_established", "TCP connections ESTABLISHED or CLOSE-WAIT.", ns)
        self._self: list[Metric] = []

    def add(self, label: str, found: DiscoveredNamespace, stats: NamespaceStats) -> None:
        owner = _attribution_values(found.attribution)
        self.info.add_metric([label, found.unique_id, *owner], 1)
        extra = owner if self.extra else []
        ns = [label, *extra]
        exclude = self.options.exclude_interfaces
        for iface in stats.interfaces:
            if exclude is not None and exclude.search(iface.name):
                continue
            labels = [label, iface.name, *extra]
            for (direction, key), counter in self.iface_counters.items():
                value = iface.stats.get(direction, {}).get(key)
                if value is not None:
                    counter.add_metric(labels, value)
            self.up.add_metric(labels, 1 if iface.operstate == "UP" else 0)
            self.operstate.add_metric([*labels, iface.operstate], 1)
            if iface.mtu is not None:
                self.mtu.add_metric(labels, iface.mtu)
            if iface.speed_bytes is not None:
                self.speed.add_metric(labels, iface.speed_bytes)
        for family, count in sorted(stats.addresses.items()):
            self.addresses.add_metric([*ns, family], count)
        for (table, family), count in sorted(stats.routes.items()):
            self.routes.add_metric([*ns, table, family], count)
        for (family, state), count in sorted(stats.neighbours.items()):
            self.neighbours.add_metric([*ns, family, state], count)
        files = stats.files
        if "conntrack_count" in files:
            self.ct_entries.add_metric(ns, int(files["conntrack_count"]))
        if "conntrack_max" in files:
            self.ct_limit.add_metric(ns, int(files["conntrack_max"]))
        self._sockstat(ns, files)
        self._counters(ns, files)

    def _sockstat(self, ns: list[str], files: dict[str, str]) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        for name in ("sockstat", "sockstat6"):
            if name not in files:
                continue
            for section, values in parse_sockstat(files[name]).items():
                protocol = section.lower()
                if section == "sockets":
                    self.sockets_used.add_metric(ns, values.get("used", 0))
                    continue
                if "inuse" in values:
                    self.sockets_inuse.add_metric([*ns, protocol], values["inuse"])
                if section == "TCP":
                    self.tcp_orphan.add_metric(ns, values.get("orphan", 0))
                    self.tcp_tw.add_metric(ns, values.get("tw", 0))
                if "mem" in values:
                    self.sock_mem.add_metric([*ns, protocol], values["mem"] * page)
                elif "memory" in values:  # FRAG: bytes already
                    self.sock_mem.add_metric([*ns, protocol], values["memory"])

    def _counters(self, ns: list[str], files: dict[str, str]) -> None:
        tables = {
            **parse_snmp(files.get("snmp", ""), ("Tcp", "Udp")),
            **parse_snmp(files.get("netstat", ""), ("TcpExt",)),
        }
        six = parse_snmp6(files.get("snmp6", ""), "Udp6")
        for (section, key), family in self.snmp.items():
            if section == "Udp":
                if key in tables.get("Udp", {}):
                    family.add_metric([*ns, "inet"], tables["Udp"][key])
                if f"Udp6{key}" in six:
                    family.add_metric([*ns, "inet6"], six[f"Udp6{key}"])
            elif key in tables.get(section, {}):
                family.add_metric(ns, tables[section][key])
        if "CurrEstab" in tables.get("Tcp", {}):
            self.tcp_estab.add_metric(ns, tables["Tcp"]["CurrEstab"])

    def add_self(
        self,
        *,
        duration: float,
        scraped: int,
        failed: int,
        pending: int,
        errors: dict[tuple[str, str], int],
        workers: int,
        probes: int,
        scrapes: int,
        unreadable: int,
    ) -> None:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        self._self = [
            GaugeMetricFamily(
                "nsworkers_exporter_scrape_duration_seconds", "How long this scrape took.", duration, unit="seconds"
            ),
            GaugeMetricFamily("nsworkers_exporter_namespaces_scraped", "Namespaces read by this scrape.", scraped),
            GaugeMetricFamily(
                "nsworkers_exporter_namespaces_failed", "Namespaces this scrape could not read (see the log).", failed
            ),
            GaugeMetricFamily(
                "nsworkers_exporter_namespaces_pending",
                "New namespaces not opened yet: the scrape timeout came first; the next scrape goes on.",
                pending,
            ),
            GaugeMetricFamily("nsworkers_exporter_workers", "Live nsworkers worker processes.", workers),
            GaugeMetricFamily("nsworkers_exporter_open_namespaces", "Namespaces held open between scrapes.", probes),
            CounterMetricFamily(
                "nsworkers_exporter_scrapes", "Scrapes run (concurrent and recent ones are served again).", scrapes
            ),
            GaugeMetricFamily(
                "nsworkers_exporter_unreadable_processes",
                "Processes whose namespaces discovery could not read (missing CAP_SYS_PTRACE?): theirs are missed.",
                unreadable,
            ),
        ]
        errs = CounterMetricFamily(
            "nsworkers_exporter_namespace_errors",
            "Namespaces that failed, by namespace and error type; dropped when the namespace is gone.",
            labels=["netns", "error"],
        )
        for (label, kind), count in sorted(errors.items()):
            errs.add_metric([label, kind], count)
        self._self.append(errs)

    def families(self) -> list[Metric]:
        out: list[Metric] = [self.info, *self.iface_counters.values()]
        out += [self.up, self.operstate, self.mtu, self.speed]
        out += [self.addresses, self.routes, self.neighbours, self.ct_entries, self.ct_limit]
        out += [self.sockets_used, self.sockets_inuse, self.tcp_orphan, self.tcp_tw, self.sock_mem]
        out += [*self.snmp.values(), self.tcp_estab, *self._self]
        return out


# ---------------------------------------------------------------------------
# running it


def registry_for(collector: NetnsCollector) -> CollectorRegistry:
    """A registry holding only *collector* (no process or platform metrics of the exporter's own)."""
    from prometheus_client.registry import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def _raise_fd_limit() -> None:
    """A probe holds up to 9 fds: take the hard limit, so thousands of namespaces fit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def write_textfile(collector: NetnsCollector, path: str) -> None:
    """One scrape in the node_exporter textfile-collector format, written atomically (temp file, then rename)."""
    from prometheus_client import write_to_textfile

    write_to_textfile(path, registry_for(collector))


def serve(
    collector: NetnsCollector,
    address: str,
    port: int,
    stop: threading.Event,
    ready: Callable[[str, int], None] | None = None,
) -> None:
    """Serve ``/metrics`` on *address*:*port* until *stop* is set (the library negotiates text or OpenMetrics)."""
    from prometheus_client import start_http_server

    server, thread = start_http_server(port, address, registry_for(collector))
    try:
        host, bound = server.server_address[:2]
        if ready is not None:
            ready(str(host), int(bound))
        stop.wait()
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def run(
    options: ExporterOptions,
    *,
    address: str = DEFAULT_ADDRESS,
    port: int = DEFAULT_PORT,
    once: bool = False,
    textfile: str | None = None,
    interval: float = 15.0,
    out: Any = None,
) -> int:
    """The ``nsworkers exporter`` command: serve, print one scrape (*once*), or keep a textfile fresh."""
    import signal
    import sys

    _raise_fd_limit()
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    collector = NetnsCollector(options)
    try:
        if once and textfile is None:
            from prometheus_client import generate_latest

            (out or sys.stdout).write(generate_latest(registry_for(collector)).decode())
            return 0
        if textfile is not None:
            while True:
                write_textfile(collector, textfile)
                if once or stop.wait(interval):
                    return 0

        def ready(host: str, bound: int) -> None:
            log.info("serving http://%s:%d/metrics", host, bound)

        serve(collector, address, port, stop, ready)
        return 0
    finally:
        collector.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)

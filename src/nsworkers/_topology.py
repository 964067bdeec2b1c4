"""The network of a host across its namespaces: interfaces as nodes, the wires between them as edges.

    graph = nsworkers.topology()          # every network namespace on the host
    json.dumps(graph)                      # nodes, edges, namespaces (schema below)
    graph.to_dot()                         # Graphviz source, one cluster per namespace
    graph.render("svg")                    # bytes, drawn by Graphviz's ``dot``

One worker call per namespace reads its interfaces (with their kind, from
``IFLA_LINKINFO``), addresses and routes; the caller then joins the pieces.
A veth or macvlan whose other end lives in another namespace names it only by
an *nsid*, a number local to the namespace that holds the interface. The caller
resolves each nsid by asking the kernel in that namespace (``RTM_GETNSID`` on
a netlink socket the namespace's worker made, :meth:`Pool.socket`) which nsid
it gives each candidate namespace, passed by fd (``NETNSA_FD``); candidates
whose interfaces point back are asked first, so a host with N pods costs about
N small requests.

Schema (every key always present)::

    {"namespaces": [{"id": "net:[4026532301]", "path": "/run/netns/blue", "name": "blue",
                     "label": "blue", "attribution": {...} | null, "partial": false}],
     "nodes": [{"id": "net:[4026532301]/3", "namespace": "net:[4026532301]", "ifindex": 3,
                "ifname": "eth0", "kind": "veth" | "bridge" | "macvlan" | "vxlan" | ... | null,
                "address": "0a:58:...", "operstate": "UP", "mtu": 1500,
                "addresses": ["10.244.1.17/24", ...], "master": "net:[...]/2" | null,
                "info": {...kind-specific: vxlan id/local/group/port, macvlan mode}}],
     "edges": [{"kind": "veth" | "master" | "lower" | "underlay" | "gateway",
                "from": NODE_ID, "to": NODE_ID | null, ...}],
     "errors": [{"namespace": PATH, "type": "...", "message": "..."}]}

Edge kinds: ``veth`` joins two peers (once, ``from`` < ``to``); ``master``
goes from a port to its bridge (or other master); ``lower`` from a
macvlan/macvtap/ipvlan to its parent; ``underlay`` from a vxlan to the device
its packets leave by; ``gateway`` from the interface a route leaves by to the
interface that owns the route's gateway address, when the two are wired
together (``dst`` and ``gateway`` say which route). A namespace brought in
only because given ones are wired to it is ``partial``: just those
interfaces and their masters. An end whose nsid could not be resolved is
``null`` with ``netnsid`` and ``peer_ifindex`` kept.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the worker side of this module runs in workers: it must not import the pool (threading)
    from ._namespace import Namespace
    from ._pool import Pool

__all__ = ("Topology", "topology")

Record = dict[str, Any]

_LOWER_KINDS = frozenset({"macvlan", "macvtap", "ipvlan", "ipvtap", "vlan"})  # IFLA_LINK names their parent
# include/uapi/linux/rtnetlink.h, net_namespace.h
_RTM_NEWNSID = 88
_RTM_GETNSID = 90
_NETNSA_NSID = 1
_NETNSA_FD = 3

_IFINFOMSG = struct.Struct("=BxHiII")  # struct ifinfomsg
_S32 = struct.Struct("=i")


# ---------------------------------------------------------------------------
# inside the worker


def _info(kind: str | None, data: bytes | None) -> Record:
    """The kind-specific settings a topology shows (named as ``ip -d -j link`` names them)."""
    from .netlink import _wire as w
    from .netlink._linkinfo import _MACVLAN_MODES, MACVLAN, VXLAN

    if data is None:
        return {}
    a = w.attrs(data)
    if kind == "vxlan":
        out: Record = {}
        if VXLAN.ID in a:
            out["id"] = w.u32(a[VXLAN.ID])
        for key, v4, v6 in (
            ("group", VXLAN.GROUP, VXLAN.GROUP6),
            ("local", VXLAN.LOCAL, VXLAN.LOCAL6),
        ):
            raw = a.get(v4) or a.get(v6)
            if raw and any(raw):
                out[key] = w.ip(raw)
        if VXLAN.PORT in a:
            out["port"] = w.be16(a[VXLAN.PORT])
        if VXLAN.LINK in a:
            out["link_index"] = w.u32(a[VXLAN.LINK])
        return out
    if kind in ("macvlan", "macvtap") and MACVLAN.MODE in a:
        mode = w.u32(a[MACVLAN.MODE])
        return {"mode": _MACVLAN_MODES.get(mode, str(mode))}
    return {}


def _interface(payload: bytes) -> Record:
    from .netlink import _names as n
    from .netlink import _records as r
    from .netlink import _wire as w

    _family, _type, index, _flags, _change = _IFINFOMSG.unpack_from(payload)
    a = w.attrs(payload, _IFINFOMSG.size)
    kind = None
    info: Record = {}
    if r.IFLA_LINKINFO in a:
        li = w.attrs(a[r.IFLA_LINKINFO])
        if r.IFLA_INFO_KIND in li:
            kind = w.cstr(li[r.IFLA_INFO_KIND])
        info = _info(kind, li.get(r.IFLA_INFO_DATA))
    operstate = a[r.IFLA_OPERSTATE][0] if r.IFLA_OPERSTATE in a else 0
    return {
        "ifindex": index,
        "ifname": w.cstr(a[r.IFLA_IFNAME]),
        "kind": kind,
        "address": ":".join(f"{b:02x}" for b in a.get(r.IFLA_ADDRESS, b"")) or None,
        "operstate": n.OPERSTATES[operstate] if operstate < len(n.OPERSTATES) else str(operstate),
        "mtu": w.u32(a[r.IFLA_MTU]) if r.IFLA_MTU in a else None,
        "master": w.u32(a[r.IFLA_MASTER]) if r.IFLA_MASTER in a else None,
        "link": w.s32(a[r.IFLA_LINK]) if r.IFLA_LINK in a else None,
        "link_netnsid": w.s32(a[r.IFLA_LINK_NETNSID]) if r.IFLA_LINK_NETNSID in a else None,
        "info": info,
        "addresses": [],
    }


def namespace_view(attempts: int = 5) -> Record:
    """What a topology needs from the namespace this runs in (a worker): interfaces with kinds, addresses, routes.

    ``{"id": "net:[...]", "interfaces": [...], "routes": [{"dst", "gateway", "dev"}]}``;
    interface records carry raw ifindexes (``master``, ``link``) and
    ``link_netnsid``, which only the caller can resolve.
    """
    from . import netlink
    from .netlink._dumps import Session

    session = Session(attempts)
    payloads, _interrupted, _used, _table = session.links()  # one link dump serves the three
    interfaces = [_interface(payload) for payload in payloads]
    by_index = {i["ifindex"]: i for i in interfaces}
    for link in netlink.addresses(session=session):
        target = by_index.get(link["ifindex"])
        if target is not None:
            target["addresses"] = [f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])]
    routes = [
        {"dst": r["dst"], "gateway": r["gateway"], "dev": r.get("dev")}
        for r in netlink.routes(session=session)
        if r.get("gateway") and r.get("table") is None
    ]
    return {"id": os.readlink("/proc/thread-self/ns/net"), "interfaces": interfaces, "routes": routes}


# ---------------------------------------------------------------------------
# in the caller: nsid resolution


def _nsid_of(nl: socket.socket, fd: int, seq: int) -> int | None:
    """The nsid the namespace of *nl* gives the namespace open as *fd* (None if it gave none)."""
    attr = struct.pack("=HHI", 8, _NETNSA_FD, fd)
    body = bytes(4) + attr  # struct rtgenmsg, padded
    nl.send(struct.pack("=IHHII", 16 + len(body), _RTM_GETNSID, 1, seq, 0) + body)  # NLM_F_REQUEST
    while True:
        data = nl.recv(4096)
        length, kind, _flags, got_seq, _pid = struct.unpack_from("=IHHII", data)
        if got_seq != seq:
            continue
        if kind == 2:  # NLMSG_ERROR
            (err,) = _S32.unpack_from(data, 16)
            raise OSError(-err, os.strerror(-err))
        if kind == _RTM_NEWNSID:
            from .netlink import _wire as w

            nsid = w.attrs(data[:length], 16 + 4).get(_NETNSA_NSID)
            value = _S32.unpack_from(nsid)[0] if nsid else -1
            return None if value < 0 else int(value)


class _NsidResolver:
    """nsid (as seen from one namespace) -> namespace id, asked lazily and cached."""

    def __init__(self, pool: Pool, namespaces: dict[str, Namespace], timeout: float | None = None) -> None:
        self.pool = pool
        self.timeout = timeout
        self.namespaces = namespaces  # unique id -> open namespace
        self.sockets: dict[str, socket.socket] = {}
        self.known: dict[tuple[str, int], str] = {}
        self.asked: set[tuple[str, str]] = set()
        self.seq = 0
        self.questions = 0  # RTM_GETNSID requests sent: a host with N pods should need about N

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close()

    def resolve(self, home: str, nsid: int, candidates: Iterable[str]) -> str | None:
        """The namespace *home* calls *nsid*; *candidates* are tried first, then every other one."""
        if (home, nsid) in self.known:
            return self.known[(home, nsid)]
        for other in [*candidates, *self.namespaces]:
            if other == home or (home, other) in self.asked:
                continue
            self.asked.add((home, other))
            got = self._ask(home, other)
            if got is not None:
                self.known[(home, got)] = other
                if got == nsid:
                    return other
        return None

    def learn(self, home: str, nsid: int, other: str) -> None:
        """Record that *home* calls *other* *nsid* (known without asking)."""
        self.known.setdefault((home, nsid), other)

    def _ask(self, home: str, other: str) -> int | None:
        sock = self.sockets.get(home)
        if sock is None:
            sock = self.pool.socket(self.namespaces[home], socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
            sock.settimeout(self.timeout)
            self.sockets[home] = sock
        self.seq += 1
        self.questions += 1
        return _nsid_of(sock, self.namespaces[other].fd, self.seq)


# ---------------------------------------------------------------------------
# the graph


class Topology(dict[str, Any]):
    """A topology: a JSON-ready dict (``namespaces``, ``nodes``, ``edges``, ``errors``) that can draw itself."""

    def to_dot(self) -> str:
        """Graphviz source: one cluster per namespace, labelled with its name or pod; edges styled by kind."""
        return _dot(self)

    def render(self, format: str = "svg") -> bytes:
        """Draw with Graphviz's ``dot`` (``svg``, ``png``, ``pdf`` ...); needs ``dot`` (Debian package graphviz)."""
        import shutil
        import subprocess

        dot = shutil.which("dot")
        if dot is None:
            raise FileNotFoundError(
                "Graphviz's `dot` program is not installed (Debian/Ubuntu: apt-get install graphviz)"
            )
        done = subprocess.run([dot, f"-T{format}"], input=self.to_dot().encode(), capture_output=True, check=False)
        if done.returncode:
            raise RuntimeError(f"dot -T{format} failed: {done.stderr.decode(errors='replace').strip()}")
        return done.stdout


def _node_id(ns: str, ifindex: int) -> str:
    return f"{ns}/{ifindex}"


def _label(path: str, name: str | None, attribution: Any) -> str:
    if attribution is not None and attribution.label() != "-":
        return str(attribution.label())
    return name or path


def topology(
    namespaces: Iterable[str | os.PathLike[str] | Namespace] | None = None,
    pool: Pool | None = None,
    *,
    jobs: int | None = None,
    timeout: float | None = 30.0,
    attribution: bool = True,
    gateways: bool = True,
    peers: bool = True,
) -> Topology:
    """The graph of every network namespace (or those given) and the wires between their interfaces.

    See the module docstring for the schema. When *namespaces* are given and
    an interface's other end is in a namespace not given, *peers* looks for
    that namespace among all of the host's (asking the kernel, by fd, which
    one the nsid names) and adds it as ``"partial"``: only the interfaces
    wired to the ones given, and their bridges. Without *peers* (or if none
    is found) the end stays ``null`` with ``netnsid`` and ``peer_ifindex``.
    With *gateways*, routes' gateways reachable over the graph's wires become
    ``gateway`` edges.
    """
    from ._inspect import _label as target_label
    from ._inspect import _name_of, batch_pool, batch_targets
    from ._namespace import Namespace

    targets, owners = batch_targets(namespaces, attribution)
    own = pool is None
    pool = pool or batch_pool(jobs, ("nsworkers.netlink", "nsworkers._topology"))
    graph = Topology(namespaces=[], nodes=[], edges=[], errors=[])
    views: dict[str, Record] = {}
    opened: dict[str, Namespace] = {}
    mine: list[Namespace] = []
    try:
        for target in targets:  # opened in the caller: a handle for the pool and an fd for RTM_GETNSID
            path = target_label(target)
            try:
                if isinstance(target, Namespace):
                    ns = target
                else:
                    ns = Namespace.open(target, "net")
                    mine.append(ns)
            except OSError as exc:
                graph["errors"].append({"namespace": path, "type": type(exc).__name__, "message": str(exc)})
                continue
            opened.setdefault(ns.unique_id, ns)
        results = pool.options(timeout=timeout).map(namespace_view, list(opened.values()), return_exceptions=True)
        for ns, result in results:
            if isinstance(result, BaseException):
                graph["errors"].append({"namespace": ns.path, "type": type(result).__name__, "message": str(result)})
                continue
            views[ns.unique_id] = result
        resolver = _NsidResolver(pool, {uid: opened[uid] for uid in views}, timeout)
        selected = set(views)
        try:
            _build(graph, views, opened, owners, resolver, gateways, _name_of, selected)
            open_ends = {
                (e["from"].rsplit("/", 1)[0], e["netnsid"])
                for e in graph["edges"]
                if e["to"] is None and "netnsid" in e
            }
            if peers and namespaces is not None and open_ends:
                _add_peers(pool, timeout, views, opened, mine, resolver, open_ends)
                if len(views) > len(selected):  # again, with the peers' namespaces (their nsids are known now)
                    graph["namespaces"] = []
                    _build(graph, views, opened, owners, resolver, gateways, _name_of, selected)
        finally:
            resolver.close()
        if len(views) > len(selected):
            _prune(graph, selected)
    finally:
        for ns in mine:
            ns.close()
        if own:
            pool.shutdown(wait=False, cancel_futures=True)
    return graph


def _add_peers(
    pool: Pool,
    timeout: float | None,
    views: dict[str, Record],
    opened: dict[str, Namespace],
    mine: list[Namespace],
    resolver: _NsidResolver,
    wanted: set[tuple[str, int]],
) -> None:
    """Add the views of the namespaces that *wanted* ``(namespace, nsid)`` name, found among all of the host's."""
    from ._inspect import network_namespaces
    from ._namespace import Namespace
    from .errors import NotANamespaceError

    for path in network_namespaces():
        try:
            ns = Namespace.open(path, "net")
        except (OSError, NotANamespaceError):  # gone since the scan, or still being made (a plain file)
            continue
        if ns.unique_id in opened:
            ns.close()
            continue
        mine.append(ns)
        opened[ns.unique_id] = ns
        resolver.namespaces[ns.unique_id] = ns
    found = {resolver.resolve(uid, nsid, []) for uid, nsid in sorted(wanted)} - {None, *views}
    extra = [opened[uid] for uid in sorted(u for u in found if u is not None)]
    for ns, result in pool.options(timeout=timeout).map(namespace_view, extra, return_exceptions=True):
        if not isinstance(result, BaseException):  # a peer that vanished meanwhile stays an open end
            views[ns.unique_id] = result


def _prune(graph: Topology, selected: set[str]) -> None:
    """Of the namespaces not asked for, keep the interfaces wired to asked-for ones, and their masters."""
    node_ns = {n["id"]: n["namespace"] for n in graph["nodes"]}
    keep = {node for node, ns in node_ns.items() if ns in selected}
    for edge in graph["edges"]:
        if edge["to"] is not None and (node_ns[edge["from"]] in selected or node_ns[edge["to"]] in selected):
            keep |= {edge["from"], edge["to"]}
    keep |= {n["master"] for n in graph["nodes"] if n["id"] in keep and n["master"] in node_ns}
    graph["nodes"] = [n for n in graph["nodes"] if n["id"] in keep]
    graph["edges"] = [e for e in graph["edges"] if e["from"] in keep and (e["to"] is None or e["to"] in keep)]
    graph["edges"] = [e for e in graph["edges"] if e["to"] is not None or node_ns[e["from"]] in selected]


def _build(
    graph: Topology,
    views: dict[str, Record],
    opened: dict[str, Namespace],
    owners: dict[str, Any],
    resolver: _NsidResolver,
    gateways: bool,
    name_of: Any,
    selected: set[str],
) -> None:
    nodes: dict[str, Record] = {}
    by_ns: dict[str, dict[int, Record]] = {}
    for uid in sorted(views):
        path = opened[uid].path
        name = name_of(path)
        owner = owners.get(uid)
        graph["namespaces"].append(
            {
                "id": uid,
                "path": path,
                "name": name,
                "label": _label(path, name, owner),
                "attribution": owner.as_dict() if owner is not None else None,
                "partial": uid not in selected,
            }
        )
        table = by_ns[uid] = {i["ifindex"]: i for i in views[uid]["interfaces"]}
        for iface in table.values():
            node_id = _node_id(uid, iface["ifindex"])
            nodes[node_id] = {
                "id": node_id,
                "namespace": uid,
                "ifindex": iface["ifindex"],
                "ifname": iface["ifname"],
                "kind": iface["kind"],
                "address": iface["address"],
                "operstate": iface["operstate"],
                "mtu": iface["mtu"],
                "addresses": iface["addresses"],
                "master": _node_id(uid, iface["master"]) if iface["master"] else None,
                "info": {k: v for k, v in iface["info"].items() if k != "link_index"},
            }
    graph["nodes"] = [nodes[k] for k in sorted(nodes, key=lambda k: (nodes[k]["namespace"], nodes[k]["ifindex"]))]
    edges: list[Record] = []
    veth_seen: set[tuple[str, str]] = set()

    def far_end(uid: str, iface: Record, index: int) -> tuple[str | None, Record]:
        """The node *index* names from *iface* (in its link netns if it has one)."""
        nsid = iface["link_netnsid"]
        if nsid is None:
            return (_node_id(uid, index) if index in by_ns[uid] else None), {}
        # candidates: namespaces holding an interface at *index* that points back here
        candidates = [
            other
            for other, table in by_ns.items()
            if other != uid
            and index in table
            and table[index]["link"] == iface["ifindex"]
            and table[index]["link_netnsid"] is not None
        ]
        candidates += [o for o, t in by_ns.items() if o != uid and index in t and o not in candidates]
        if uid not in selected:  # a peer namespace: its other wires are not drawn, and not looked up
            return None, {"netnsid": nsid, "peer_ifindex": index}
        where = resolver.resolve(uid, nsid, candidates)
        if where is None or where not in by_ns or index not in by_ns[where]:
            return None, {"netnsid": nsid, "peer_ifindex": index}
        peer = by_ns[where][index]
        if iface["kind"] == "veth" and peer["link"] == iface["ifindex"] and peer["link_netnsid"] is not None:
            # a veth has one peer: the namespace whose nsid resolved holds it, so its nsid for
            # this end names this namespace -- learnt without a socket in that namespace
            resolver.learn(where, peer["link_netnsid"], uid)
        return _node_id(where, index), {}

    # the namespace with most foreign ends first (the host): its answers teach the pods' nsids for free
    foreign = {uid: sum(i["link_netnsid"] is not None for i in t.values()) for uid, t in by_ns.items()}
    for uid in sorted(by_ns, key=lambda u: -foreign[u]):
        for iface in by_ns[uid].values():
            me = _node_id(uid, iface["ifindex"])
            if iface["master"]:
                edges.append({"kind": "master", "from": me, "to": _node_id(uid, iface["master"])})
            kind = iface["kind"]
            link = iface["link"]
            if kind == "veth" and link:
                other, extra = far_end(uid, iface, link)
                if other is None:
                    edges.append({"kind": "veth", "from": me, "to": None, **extra})
                    continue
                pair = (min(me, other), max(me, other))
                if pair not in veth_seen:
                    veth_seen.add(pair)
                    edges.append({"kind": "veth", "from": pair[0], "to": pair[1]})
            elif kind in _LOWER_KINDS and link:
                other, extra = far_end(uid, iface, link)
                edges.append({"kind": "lower", "from": me, "to": other, **extra})
            elif kind == "vxlan" and iface["info"].get("link_index"):
                other, extra = far_end(uid, iface, iface["info"]["link_index"])
                edges.append({"kind": "underlay", "from": me, "to": other, **extra})
    if gateways:
        edges.extend(_gateway_edges(views, by_ns, edges))
    graph["edges"] = sorted(edges, key=lambda e: (e["kind"], e["from"], e["to"] or ""))


def _gateway_edges(views: dict[str, Record], by_ns: dict[str, dict[int, Record]], wires: list[Record]) -> list[Record]:
    """``gateway`` edges: a route's device to the interface owning its gateway, if wired to it."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    for edge in wires:
        if edge["to"] is not None:
            parent[find(edge["from"])] = find(edge["to"])
    owners: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, list[str]] = {}
    for uid, table in by_ns.items():
        for iface in table.values():
            for cidr in iface["addresses"]:
                owners.setdefault(ipaddress.ip_interface(cidr).ip, []).append(_node_id(uid, iface["ifindex"]))
    out = []
    for uid, view in views.items():
        names = {i["ifname"]: i["ifindex"] for i in by_ns[uid].values()}
        for route in view["routes"]:
            if route["dev"] not in names:
                continue
            me = _node_id(uid, names[route["dev"]])
            try:
                gateway = ipaddress.ip_address(route["gateway"])
            except ValueError:
                continue
            for owner in owners.get(gateway, []):
                if owner != me and find(owner) == find(me):
                    out.append(
                        {"kind": "gateway", "from": me, "to": owner, "dst": route["dst"], "gateway": route["gateway"]}
                    )
    return out


# ---------------------------------------------------------------------------
# Graphviz

_EDGE_STYLE = {
    "veth": 'color="#1f77b4", penwidth=2',
    "master": 'color="#555555", style=dashed, arrowhead=empty, dir=forward',
    "lower": 'color="#2ca02c", style=dashed, arrowhead=vee, dir=forward',
    "underlay": 'color="#9467bd", style=dotted, arrowhead=vee, dir=forward',
    "gateway": 'color="#d62728", style=dotted, arrowhead=normal, dir=forward, constraint=false',
}
_NODE_FILL = {"bridge": "#fff2cc", "veth": "#dae8fc", "macvlan": "#d5e8d4", "macvtap": "#d5e8d4", "vxlan": "#e1d5e7"}


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _dot(graph: Topology) -> str:
    lines = [
        "graph nsworkers {",
        '  graph [rankdir=LR, fontname="Helvetica", fontsize=11, compound=true];',
        '  node [shape=box, style="rounded,filled", fillcolor="#ffffff", fontname="Helvetica", fontsize=10];',
        '  edge [fontname="Helvetica", fontsize=9];',
    ]
    members: dict[str, list[Record]] = {}
    for node in graph["nodes"]:
        members.setdefault(node["namespace"], []).append(node)
    for index, ns in enumerate(graph["namespaces"]):
        title = (
            ns["label"] if ns["label"] == (ns["name"] or ns["path"]) else f"{ns['label']}\n{ns['name'] or ns['path']}"
        )
        style = '"rounded,dashed"' if ns["partial"] else '"rounded"'
        title += "\n" + ns["id"] + ("\n(only what is wired to the others)" if ns["partial"] else "")
        lines.append(f"  subgraph cluster_{index} {{")
        lines.append(f'    label={_quote(title)}; style={style}; color="#888888";')
        for node in members.get(ns["id"], []):
            if node["ifname"] == "lo" and not any(a for a in node["addresses"] if not a.startswith(("127.", "::1"))):
                continue  # every namespace has one; it is wired to nothing
            text = node["ifname"] + (f" ({node['kind']})" if node["kind"] else "")
            text += "".join("\n" + a for a in node["addresses"] if not a.startswith("fe80:"))
            if node["kind"] == "vxlan" and "id" in node["info"]:
                text += f"\nvni {node['info']['id']}"
            fill = _NODE_FILL.get(node["kind"] or "", "#ffffff")
            down = ', color="#bbbbbb", fontcolor="#888888"' if node["operstate"] == "DOWN" else ""
            lines.append(f'    {_quote(node["id"])} [label={_quote(text)}, fillcolor="{fill}"{down}];')
        lines.append("  }")
    for edge in graph["edges"]:
        if edge["to"] is None:
            continue
        style = _EDGE_STYLE.get(edge["kind"], "")
        label = ""
        if edge["kind"] == "gateway":
            label = f', label={_quote(edge["dst"] + " via " + edge["gateway"])}, fontcolor="#d62728", fontsize=8'
        lines.append(f"  {_quote(edge['from'])} -- {_quote(edge['to'])} [{style}{label}];")
    lines.extend(_legend())
    lines.append("}")
    return "\n".join(lines) + "\n"


_LEGEND = (
    ("veth", "#1f77b4", "&#8212;&#8212; veth peers"),
    ("master", "#555555", "- - &#9655; bridge port &#8594; master"),
    ("lower", "#2ca02c", "- - &gt; macvlan &#8594; parent"),
    ("underlay", "#9467bd", "&#183;&#183;&#183; &gt; vxlan &#8594; underlay"),
    ("gateway", "#d62728", "&#183;&#183;&#183; &#9654; route &#8594; gateway"),
)


def _legend() -> list[str]:
    rows = "".join(f'<tr><td align="left"><font color="{color}">{text}</font></td></tr>' for _k, color, text in _LEGEND)
    table = f'<<table border="0" cellborder="0" cellspacing="0">{rows}</table>>'
    return [f'  "legend" [shape=plaintext, style="", fontsize=9, label={table}];']

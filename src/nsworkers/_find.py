"""``find``: which namespaces have an IP address, a prefix, a MAC address or a port.

    for match in nsworkers.find("10.244.1.17"):
        print(match["name"], match["kind"], match["text"])

The term is matched *inside* each worker, which sends back only its matches:
across many namespaces the cost is the dumps, not moving tables around.
What each kind of term matches:

============  ===================================================================
``IP``        an interface address, a neighbour entry, a route (its gateway, its
              preferred source, or a destination prefix other than ``default``
              that contains it), a socket's local or peer address
``PREFIX``    the same, for any address inside the prefix (routes: an equal or
              overlapping destination)
``MAC``       an interface's address (or permanent address), a neighbour's ``lladdr``
``:PORT``     a TCP or UDP socket with that local or peer port
============  ===================================================================

Each match: ``{"namespace", "name", "id", "attribution", "kind", "dev", "text",
"record"}`` where ``kind`` is ``address``, ``link``, ``neighbour``, ``route``
or ``socket``, ``text`` one line in ``ip``/``ss`` words, ``record`` the whole
``ip -j``-shaped (or socket) record; socket matches also carry ``users``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:  # the worker side of this module runs in workers: it must not import the pool (threading)
    from ._namespace import Namespace
    from ._pool import Pool

__all__ = ("Term", "find", "parse_term")

Record = dict[str, Any]
_MAC = re.compile(r"^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Term(NamedTuple):
    """A parsed search term: *kind* is ``ip``, ``prefix``, ``mac`` or ``port``; *value* its normal text form."""

    kind: str
    value: str


def parse_term(text: str) -> Term:
    """``10.0.0.1`` -> ip, ``10.0.0.0/8`` -> prefix, ``0a:58:...`` -> mac, ``:8080`` -> port; else ValueError."""
    text = text.strip()
    if text.startswith(":") and text[1:].isdigit():
        port = int(text[1:])
        if not 0 < port < 65536:
            raise ValueError(f"port {port} is out of range 1-65535")
        return Term("port", str(port))
    if _MAC.match(text):
        return Term("mac", text.replace("-", ":").lower())
    try:
        if "/" in text:
            return Term("prefix", str(ipaddress.ip_network(text, strict=False)))
        return Term("ip", str(ipaddress.ip_address(text)))
    except ValueError:
        pass
    raise ValueError(f"{text!r} is not an IP address, a prefix (10.0.0.0/8), a MAC address or :PORT")


# ---------------------------------------------------------------------------
# inside the worker


def _addr(text: str | None) -> IPAddress | None:
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack socket's IPv4 peer: ::ffff:10.0.0.1 is 10.0.0.1
    return address


def _net(text: str | None) -> IPNetwork | None:
    if not text or text == "default":
        return None
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _hits(term: Term) -> Any:
    """A predicate on one address, and one on a route destination, for an ip or prefix term."""
    if term.kind == "ip":
        ip = ipaddress.ip_address(term.value)

        def addr_hit(a: IPAddress | None) -> bool:
            return a is not None and a == ip

        def dst_hit(n: IPNetwork | None) -> bool:
            return n is not None and n.version == ip.version and n.prefixlen > 0 and ip in n

    else:
        net = ipaddress.ip_network(term.value)

        def addr_hit(a: IPAddress | None) -> bool:
            return a is not None and a.version == net.version and not a.is_unspecified and a in net

        def dst_hit(n: IPNetwork | None) -> bool:
            return n is not None and n.version == net.version and n.prefixlen > 0 and n.overlaps(net)

    return addr_hit, dst_hit


def _socket_text(rec: Record) -> str:
    from ._sockets import ss_endpoint

    return f"{rec['netid']} {rec['state']} {ss_endpoint(rec, 'local')} {ss_endpoint(rec, 'peer')}"


def matches_here(kind: str, value: str, attempts: int = 5, with_sockets: bool = True) -> list[Record]:
    """The matches of a term in the namespace this runs in (a worker); see the module docstring."""
    from . import netlink
    from .netlink import sockets
    from .netlink._dumps import Session

    session = Session(attempts)  # one link dump names the interfaces of every table below
    term = Term(kind, value)
    out: list[Record] = []
    if term.kind == "port":
        port = int(term.value)
        for rec in sockets(port=port, attempts=attempts):
            out.append({"kind": "socket", "dev": rec.get("interface"), "text": _socket_text(rec), "record": rec})
        return out
    if term.kind == "mac":
        for link in netlink.links(session=session):
            if term.value in (link.get("address"), link.get("permaddr")):
                out.append(
                    {
                        "kind": "link",
                        "dev": link["ifname"],
                        "text": f"link/{link.get('link_type')} {term.value}",
                        "record": link,
                    }
                )
        for neigh in netlink.neighbours(session=session):
            if neigh.get("lladdr") == term.value:
                text = f"{neigh['dst']} lladdr {neigh['lladdr']} {','.join(neigh['state'])}"
                out.append({"kind": "neighbour", "dev": neigh["dev"], "text": text, "record": neigh})
        return out
    addr_hit, dst_hit = _hits(term)
    for link in netlink.addresses(session=session):
        for a in link.get("addr_info", []):
            if addr_hit(_addr(a.get("local"))):
                record = {**a, "ifindex": link["ifindex"], "ifname": link["ifname"]}
                text = f"{a['family']} {a['local']}/{a['prefixlen']} scope {a.get('scope')}"
                out.append({"kind": "address", "dev": link["ifname"], "text": text, "record": record})
    for neigh in netlink.neighbours(session=session):
        if addr_hit(_addr(neigh.get("dst"))):
            text = f"{neigh['dst']} lladdr {neigh.get('lladdr', '-')} {','.join(neigh['state'])}"
            out.append({"kind": "neighbour", "dev": neigh["dev"], "text": text, "record": neigh})
    for route in netlink.routes(session=session):
        if route.get("table") == "local":
            continue  # the kernel's own entries for local addresses, already matched above
        if (
            dst_hit(_net(route.get("dst")))
            or addr_hit(_addr(route.get("gateway")))
            or addr_hit(_addr(route.get("prefsrc")))
        ):
            text = route["dst"] + (f" via {route['gateway']}" if route.get("gateway") else "")
            text += f" dev {route['dev']}" if route.get("dev") else ""
            text += f" table {route['table']}" if route.get("table") else ""
            out.append({"kind": "route", "dev": route.get("dev"), "text": text, "record": route})
    for rec in sockets(attempts=attempts) if with_sockets else ():
        if addr_hit(_addr(rec["local_address"])) or addr_hit(_addr(rec["peer_address"])):
            out.append({"kind": "socket", "dev": rec.get("interface"), "text": _socket_text(rec), "record": rec})
    return out


# ---------------------------------------------------------------------------
# in the caller


def find(
    term: str | Term,
    namespaces: Iterable[str | os.PathLike[str] | Namespace] | None = None,
    pool: Pool | None = None,
    *,
    jobs: int | None = None,
    timeout: float | None = 30.0,
    attribution: bool = True,
    users: bool = True,
    sockets: bool = True,
    errors: list[Record] | None = None,
) -> list[Record]:
    """Every match of *term* in every network namespace (or those given), namespace by namespace.

    *term* is text (see :func:`parse_term`) or a :class:`Term`. A namespace
    that fails is left out and, if *errors* is a list, reported there as
    ``{"namespace", "type", "message"}``. With *users*, socket matches get
    their owning processes from the caller's ``/proc``. Without *sockets*,
    an IP or prefix is not looked for in sockets: listing TCP sockets walks
    the kernel's host-wide connection table once per namespace, most of a
    search's cost (a ``:PORT`` term always lists sockets).
    """
    from ._inspect import _label, _name_of, batch_pool, batch_targets

    parsed = parse_term(term) if isinstance(term, str) else term
    targets, owners = batch_targets(namespaces, attribution)
    own = pool is None
    pool = pool or batch_pool(jobs, ("nsworkers.netlink", "nsworkers._find"))
    out: list[Record] = []
    try:
        calls = pool.options(timeout=timeout).map(
            _matches_with_id, targets, args=(parsed.kind, parsed.value, sockets), return_exceptions=True
        )
        for target, result in calls:
            path = _label(target)
            if isinstance(result, BaseException):
                if errors is not None:
                    errors.append({"namespace": path, "type": type(result).__name__, "message": str(result)})
                continue
            uid, matches = result
            owner = owners.get(uid)
            for match in matches:
                out.append(
                    {
                        "namespace": path,
                        "name": _name_of(path),
                        "id": uid,
                        "attribution": owner.as_dict() if owner is not None else None,
                        **match,
                    }
                )
    finally:
        if own:
            pool.shutdown(wait=False, cancel_futures=True)
    if users and any(m["kind"] == "socket" for m in out):
        from ._sockets import SocketUsers

        SocketUsers().attach(m["record"] for m in out if m["kind"] == "socket")
        for m in out:
            if m["kind"] == "socket":
                m["users"] = m["record"]["users"]
    out.sort(key=lambda m: (m["name"] is None, m["namespace"], m["kind"], m["dev"] or "", m["text"]))
    return out


def _matches_with_id(kind: str, value: str, with_sockets: bool) -> tuple[str, list[Record]]:
    return os.readlink("/proc/thread-self/ns/net"), matches_here(kind, value, with_sockets=with_sockets)

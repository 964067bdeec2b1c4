"""The ``topology``, ``sockets`` and ``find`` subcommands (registered by :mod:`nsworkers.cli`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any


def _targets(args: argparse.Namespace) -> list[str] | None:
    """The namespaces a command works on: the filters' choice, the ones named, or None for all."""
    from .cli import _matches

    if getattr(args, "container", None) or getattr(args, "pod", None) or getattr(args, "runtime", None):
        from ._discover import discover

        return [ns.paths[0] for ns in discover(["net"]) if ns.paths and _matches(ns.attribution, args)]
    if args.namespaces and not args.all:
        return list(args.namespaces)
    return None


def _report(errors: list[dict[str, Any]]) -> None:
    for error in errors:
        print(f"nsworkers: {error['namespace']}: {error['type']}: {error['message']}", file=sys.stderr)


def _cmd_topology(args: argparse.Namespace) -> int:
    from ._topology import topology
    from .cli import EXIT_ERROR, EXIT_FAILED, EXIT_OK

    targets = _targets(args)
    if targets == []:
        print("nsworkers: no network namespace matches", file=sys.stderr)
        return EXIT_ERROR
    graph = topology(targets, jobs=args.jobs, timeout=args.timeout, peers=args.peers)
    _report(graph["errors"])
    if not graph["namespaces"]:
        return EXIT_ERROR
    if args.format == "json":
        json.dump(graph, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif args.format == "dot":
        sys.stdout.write(graph.to_dot())
    else:
        data = graph.render(args.format)
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    return EXIT_FAILED if graph["errors"] else EXIT_OK


def _cmd_sockets(args: argparse.Namespace) -> int:
    from ._inspect import inspect
    from ._sockets import ss_endpoint, ss_users
    from .cli import EXIT_ERROR, EXIT_FAILED, EXIT_OK

    targets = _targets(args)
    if targets == []:
        print("nsworkers: no network namespace matches", file=sys.stderr)
        return EXIT_ERROR
    sections = ("sockets", "unix_sockets") if args.unix else ("sockets",)
    entries = []
    failed = 0
    for entry in inspect(targets, what=sections, jobs=args.jobs, timeout=args.timeout):
        if not entry["ok"]:
            failed += 1
            print(f"nsworkers: {entry['namespace']}: {entry['error']['message']}", file=sys.stderr)
            continue
        kept = [
            s
            for s in entry["sockets"] + entry.pop("unix_sockets", [])
            if (args.listening is None or (s["state"] in ("LISTEN", "UNCONN")) == args.listening)
            and (args.port is None or args.port in (s.get("local_port"), s.get("peer_port")))
        ]
        entries.append({**entry, "sockets": kept})
    entries.sort(key=lambda e: (e["name"] is None, e["namespace"]))
    if args.json:
        json.dump(entries, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        rows = [("NAMESPACE", "NETID", "STATE", "RECV-Q", "SEND-Q", "LOCAL", "PEER", "PROCESS")]
        for entry in entries:
            where = entry.get("name") or entry["namespace"]
            for s in entry["sockets"]:
                rows.append(
                    (
                        where,
                        s["netid"],
                        s["state"],
                        str(s["recv_q"]),
                        str(s["send_q"]),
                        ss_endpoint(s, "local"),
                        ss_endpoint(s, "peer"),
                        ss_users(s),
                    )
                )
        _print_rows(rows)
    if (targets is not None and failed == len(targets)) or (not entries and failed):
        return EXIT_ERROR
    return EXIT_FAILED if failed else EXIT_OK


def _print_rows(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        line = "  ".join(c.ljust(widths[i]) for i, c in enumerate(row[:-1])) + "  " + row[-1]
        sys.stdout.write(line.rstrip() + "\n")


def _cmd_find(args: argparse.Namespace) -> int:
    from ._find import find
    from .cli import EXIT_ERROR, EXIT_FAILED, EXIT_OK

    targets = _targets(args)
    if targets == []:
        print("nsworkers: no network namespace matches", file=sys.stderr)
        return EXIT_ERROR
    errors: list[dict[str, Any]] = []
    matches = find(args.term, targets, jobs=args.jobs, timeout=args.timeout, sockets=args.sockets, errors=errors)
    _report(errors)
    if args.json:
        json.dump({"term": args.term.value, "kind": args.term.kind, "matches": matches}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        from ._sockets import ss_users

        rows = [("NAMESPACE", "OWNER", "KIND", "DEV", "MATCH")]
        for m in matches:
            owner = m["attribution"]
            label = "-"
            if owner is not None:
                from ._attribution import Attribution

                label = Attribution(**owner).label()
            text = m["text"] + (" " + ss_users(m) if m.get("users") else "")
            rows.append((m["name"] or m["namespace"], label, m["kind"], m["dev"] or "-", text))
        if len(rows) > 1:
            _print_rows(rows)
        else:
            print(f"nsworkers: no namespace has {args.term.value}", file=sys.stderr)
    if errors and not matches and targets is not None and len(errors) == len(targets):
        return EXIT_ERROR
    return EXIT_FAILED if errors else EXIT_OK


def _term(text: str) -> Any:
    from ._find import parse_term

    try:
        return parse_term(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _common(parser: argparse.ArgumentParser) -> None:
    from ._cliargs import positive_float, positive_int
    from .cli import _add_filters, _add_targets

    _add_targets(parser, "every network namespace on the host (the default)")
    parser.add_argument(
        "--jobs", type=positive_int, default=None, metavar="N", help="namespaces in flight at once (default: 2 x CPUs)"
    )
    parser.add_argument("--timeout", type=positive_float, default=30.0, metavar="SECONDS", help="time per namespace")
    _add_filters(parser)


def add_commands(sub: Any) -> None:
    """Register ``topology``, ``sockets`` and ``find`` (built with :func:`._cliargs.add_command`)."""
    from ._cliargs import add_command

    topo = add_command(
        sub,
        "topology",
        summary="the host's network across namespaces: JSON, Graphviz DOT, SVG or PNG",
        description="Draw the network of many namespaces as one graph: their interfaces and the wires "
        "between them (veth peers across namespaces, bridge ports, macvlan parents, vxlan underlays, "
        "route gateways). JSON (schema in the README), Graphviz DOT, or SVG/PNG rendered by Graphviz's "
        "dot. Without NS: every network namespace on the host.",
        examples=[
            ("nsworkers topology", "the graph as JSON"),
            ("nsworkers topology --format svg > host.svg", "one box per namespace, wires between (needs graphviz)"),
            ("nsworkers topology --format dot | dot -Tpng > host.png", "the DOT source, drawn by hand"),
            ("nsworkers topology --pod kube-system/coredns --format dot", "one pod's namespace"),
        ],
    )
    topo.add_argument(
        "--format",
        choices=("json", "dot", "svg", "png"),
        default="json",
        metavar="FORMAT",
        help="json, dot, svg or png (svg and png need graphviz)",
    )
    topo.add_argument(
        "--no-peers",
        dest="peers",
        action="store_false",
        help="with NS or a filter: do not bring in the namespaces their interfaces are wired to",
    )
    _common(topo)
    topo.set_defaults(func=_cmd_topology)

    socks = add_command(
        sub,
        "sockets",
        summary="TCP/UDP (and UNIX) sockets of many namespaces with their processes, like ss -tuanp",
        description="List the TCP and UDP sockets (IPv4 and IPv6, every state; UNIX ones with --unix) of "
        "many network namespaces, read through NETLINK_SOCK_DIAG as ss reads them, each with the processes "
        "holding it. Without NS: every network namespace on the host.",
        examples=[
            ("nsworkers sockets", "every namespace's sockets with processes, as a table (like ss -tuanp)"),
            ("nsworkers sockets --listening", "only listening TCP and unconnected UDP sockets (like ss -l)"),
            ("nsworkers sockets --port 8080 --json", "sockets with local or peer port 8080, as JSON"),
            ("nsworkers sockets blue --unix", "also UNIX sockets, in namespace blue only"),
        ],
    )
    socks.add_argument("--listening", action="store_true", default=None, help="only listening sockets (like ss -l)")
    socks.add_argument(
        "--port", type=_port, default=None, metavar="PORT", help="only sockets with this local or peer port"
    )
    socks.add_argument("--unix", action="store_true", help="also UNIX sockets (like ss -x)")
    socks.add_argument("--json", action="store_true", help="JSON: one entry per namespace with its sockets")
    _common(socks)
    socks.set_defaults(func=_cmd_sockets)

    fnd = add_command(
        sub,
        "find",
        summary="which namespaces have an IP, a prefix, a MAC or a :PORT",
        description="Search every network namespace (or those given) for an IP address, a prefix, a MAC "
        "address or a :PORT: interface addresses, neighbour entries, routes, link addresses, sockets. One "
        "line per match with the namespace and its owner (container or pod); options go before TERM.",
        examples=[
            ("nsworkers find 10.244.1.17", "which namespace has this address, neighbour, route or socket"),
            ("nsworkers find 10.244.0.0/16", "anything inside a prefix"),
            ("nsworkers find 0a:58:0a:f4:01:11", "an interface or neighbour with this MAC"),
            ("nsworkers find --json :8080", "sockets on port 8080, with their processes, as JSON"),
        ],
    )
    fnd.add_argument("term", type=_term, metavar="TERM", help="an IP address, a prefix (10.0.0.0/8), a MAC or :PORT")
    fnd.add_argument("--json", action="store_true", help='print {"term", "kind", "matches": [...]}')
    fnd.add_argument(
        "--no-sockets",
        dest="sockets",
        action="store_false",
        help="do not look for an IP or prefix in sockets (faster: no walk of the kernel's TCP table)",
    )
    _common(fnd)
    fnd.set_defaults(func=_cmd_find)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"must be a port (1-65535), got {text!r}")
    return port

"""The ``nsworkers`` command line.

Kept import-light: ``nsworkers --help`` loads neither pyroute2 nor psutil.
"""

from __future__ import annotations

import argparse
import errno
import json
import re
import shlex
import signal
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from ._cliargs import (
    EXIT_CODES,
    HelpFormatter,
    Parser,
    add_command,
    comma_list,
    examples_text,
    is_permission_error,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    privilege_hint,
)

EXIT_OK = 0  # every namespace inspected
EXIT_FAILED = 1  # some namespaces failed (their entries say why); the rest was printed
EXIT_USAGE = 2  # bad command line
EXIT_ERROR = 3  # nothing could be done (no permission, no namespace at all ...)

_EPILOG = (
    examples_text(
        [
            ("nsworkers demo", "build a throwaway topology, inspect it, remove it"),
            ("nsworkers ls", "every network namespace: named, held by a process, thread, bind mount or fd"),
            ("nsworkers inspect", "links, addresses, routes of every network namespace, as JSON"),
            ("nsworkers inspect blue red --what links,neighbours --format jsonl", ""),
            ("nsworkers watch blue red --what links,addresses", "change events as JSON lines, until Ctrl-C"),
            ("nsworkers COMMAND --help", "what a command does, its options and examples"),
        ]
    )
    + "\n\n"
    + EXIT_CODES
)


def _matches(attribution: Any, args: argparse.Namespace) -> bool:
    """The --container / --pod / --runtime filters (all given ones must match)."""
    container, pod, runtime = (
        getattr(args, "container", None),
        getattr(args, "pod", None),
        getattr(args, "runtime", None),
    )
    if not (container or pod or runtime):
        return True
    if attribution is None:
        return False
    if container and not (
        (attribution.container_id or "").startswith(container.lower()) or attribution.container_name == container
    ):
        return False
    if pod and pod not in (
        attribution.pod_name,
        attribution.pod_uid,
        f"{attribution.pod_namespace}/{attribution.pod_name}",
    ):
        return False
    return not (runtime and attribution.runtime != runtime)


def _cmd_ls(args: argparse.Namespace) -> int:
    from ._discover import discover

    found = discover(None if "all" in args.type else args.type)
    if found.errors:
        path, message = found.errors[0]
        more = f" and {len(found.errors) - 1} more" if len(found.errors) > 1 else ""
        print(f"nsworkers: could not read {path} ({message}){more}; listing the rest", file=sys.stderr)
    shown = [ns for ns in found if _matches(ns.attribution, args)]
    if args.json:
        json.dump({"namespaces": [ns.as_dict() for ns in shown]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    rows = [("TYPE", "NS", "NPROCS", "PID", "COMMAND", "CONTAINER", "NAMES / PATH")]
    for ns in shown:
        pid = ns.pids[0] if ns.pids else ns.holders[0] if ns.holders else None
        where = ",".join(ns.names) or (ns.paths[0] if ns.paths else "-")
        command = ns.commands.get(pid, "-") if pid is not None else "-"
        owner = ns.attribution.label() if ns.attribution is not None else "-"
        rows.append((ns.type.value, str(ns.inode), str(len(ns.pids)), str(pid or "-"), command, owner, where))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    for row in rows:
        sys.stdout.write("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:6])) + "  " + row[6] + "\n")
    return EXIT_OK


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--container", metavar="ID", help="only the container with this id prefix (or name)")
    parser.add_argument("--pod", metavar="POD", help="only this Kubernetes pod: NAME, NAMESPACE/NAME or UID")
    parser.add_argument(
        "--runtime", metavar="NAME", help="only this runtime: docker, containerd, cri, cri-o, podman, lxc, systemd ..."
    )


def _types(arg: str) -> list[str]:
    from ._namespace import NamespaceType

    names = [t.strip() for t in arg.split(",") if t.strip()]
    for name in names:
        if name != "all":
            try:
                NamespaceType.coerce(name)
            except ValueError as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None
    return names or ["net"]


def _target(arg: str) -> str:
    """A namespace argument: a path if it has a slash, else a name in /run/netns."""
    if "/" in arg:
        return arg
    from ._namespace import check_netns_name

    try:
        check_netns_name(arg)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    from .netns import path_of

    return path_of(arg)


def _rule_text(rule: dict[str, Any]) -> str:
    text = f"{rule['priority']}: from {rule.get('src', 'all')}" + (f"/{rule['srclen']}" if "srclen" in rule else "")
    if "dst" in rule:
        text += f" to {rule['dst']}" + (f"/{rule['dstlen']}" if "dstlen" in rule else "")
    for key in ("fwmark", "iif", "oif", "ipproto", "dport", "sport"):
        if key in rule:
            text += f" {key} {rule[key]}"
    if "table" in rule:
        text += f" lookup {rule['table']}"
    for key in ("goto", "action"):
        if key in rule:
            text += f" {rule[key]}" if key == "action" else f" goto {rule[key]}"
    return text + (" nop" if "nop" in rule else "")


def _rows(ns: str, section: str, records: list[dict[str, Any]]) -> list[tuple[str, str, str, str, str]]:
    """Table rows (namespace, interface, state, mtu, what) for one section other than links/addresses."""
    rows = []
    for rec in records:
        if section == "routes":
            if rec.get("table") is None and rec.get("gateway"):
                rows.append((ns, rec.get("dev", "-"), "route", "", f"{rec['dst']} via {rec['gateway']}"))
        elif section in ("neighbours", "proxy_neighbours"):
            state = ",".join(rec.get("state", [])) or ("proxy" if "proxy" in rec else "-")
            text = rec.get("dst", "-") + (f" lladdr {rec['lladdr']}" if "lladdr" in rec else "")
            rows.append((ns, rec.get("dev", "-"), state, "", text + (" router" if "router" in rec else "")))
        elif section == "rules":
            rows.append((ns, rec.get("iif", "-"), "rule", "", _rule_text(rec)))
        elif section == "nexthops":
            target = rec.get("gateway") or ("blackhole" if "blackhole" in rec else "")
            if "group" in rec:
                target = "group " + "/".join(str(m["id"]) for m in rec["group"])
            rows.append((ns, rec.get("dev", "-"), "nexthop", "", f"id {rec['id']} {target}".rstrip()))
        elif section == "conntrack":
            o = rec["original"]
            ends = f"{o['src']}:{o.get('sport', '')} -> {o['dst']}:{o.get('dport', '')}"
            rows.append((ns, "-", rec.get("state", rec["protocol"]), "", f"{rec['protocol']} {ends}"))
        elif section in ("sockets", "unix_sockets"):
            from ._sockets import ss_endpoint, ss_users

            text = f"{rec['netid']} {ss_endpoint(rec, 'local')} {ss_endpoint(rec, 'peer')} {ss_users(rec)}"
            rows.append((ns, rec.get("interface") or "-", rec["state"], "", text.rstrip()))
        elif section.startswith("xfrm"):
            rows.append((ns, "-", section, "", f"{rec['src']} -> {rec['dst']} {rec.get('dir', rec.get('proto', ''))}"))
    return rows


def _table(entries: list[dict[str, Any]], out: TextIO) -> None:
    rows = [("NAMESPACE", "IFNAME", "STATE", "MTU", "ADDRESSES")]
    for entry in entries:
        ns = entry.get("name") or entry["namespace"]
        if not entry["ok"]:
            rows.append((ns, "-", "ERROR", "-", f"{entry['error']['type']}: {entry['error']['message']}"))
            continue
        links = entry.get("addresses") or entry.get("links") or []
        for link in links:
            addrs = ",".join(
                f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", []) if a.get("scope") != "link"
            )
            rows.append((ns, link["ifname"], link.get("operstate", "?"), str(link.get("mtu", "")), addrs or "-"))
        for section, records in entry.items():
            if section not in ("links", "addresses") and isinstance(records, list) and section in _SECTION_NAMES:
                rows.extend(_rows(ns, section, records))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        out.write("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4] + "\n")


_SECTION_NAMES = (
    "routes", "neighbours", "proxy_neighbours", "rules", "nexthops", "conntrack", "xfrm_policies", "xfrm_states",
    "sockets", "unix_sockets",
)  # fmt: skip


#: Errors that mean a namespace found by the scan was deleted before it was joined.
_GONE = frozenset(("NamespaceNotFoundError", "NotANamespaceError"))


def _cmd_inspect(args: argparse.Namespace) -> int:
    from ._inspect import inspect, network_namespaces

    if args.container or args.pod or args.runtime:
        from ._discover import discover

        chosen = [ns for ns in discover(["net"]) if ns.paths and _matches(ns.attribution, args)]
        targets = [ns.paths[0] for ns in chosen]
        scanned = True
    else:
        scanned = not args.namespaces or args.all
        targets = network_namespaces() if scanned else args.namespaces
    if not targets:
        print("nsworkers: no network namespace found", file=sys.stderr)
        return EXIT_ERROR
    progress = None
    if sys.stderr.isatty():
        from tqdm import tqdm

        progress = tqdm(total=len(targets), unit="ns", file=sys.stderr, leave=False)
    entries: list[dict[str, Any]] = []
    errors: list[str] = []
    gone = 0
    try:
        batch = inspect(
            targets, what=args.what, jobs=args.jobs, timeout=args.timeout, stats=args.stats, details=args.details
        )
        for entry in batch:
            if scanned and not entry["ok"] and entry["error"]["type"] in _GONE:
                gone += 1  # deleted since the scan (a pod that went away): not a failure of this run
                continue
            if not entry["ok"]:
                errors.append(entry["error"]["message"])
                print(f"nsworkers: {entry['namespace']}: {entry['error']['message']}", file=sys.stderr)
            if args.format == "jsonl":
                sys.stdout.write(json.dumps(entry) + "\n")
                sys.stdout.flush()
            else:
                entries.append(entry)
            if progress is not None:
                progress.update()
    finally:
        if progress is not None:
            progress.close()
    if args.format == "json":
        json.dump(entries, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif args.format == "table":
        entries.sort(key=lambda e: e["namespace"])
        _table(entries, sys.stdout)
    return _exit_code(errors, len(targets) - gone, args)


def _cmd_watch(args: argparse.Namespace) -> int:
    from ._watch import watch

    namespaces = args.namespaces if args.namespaces and not args.all else None
    changes = joined = 0
    errors: list[str] = []
    stream = watch(namespaces, args.what, duration=args.duration)
    try:
        for event in stream:
            sys.stdout.write(json.dumps(event) + "\n")
            sys.stdout.flush()
            if event["event"] == "joined":
                joined += 1
            elif "error" in event:
                errors.append(event["error"])
                print(f"nsworkers: {event['namespace']}: {event['error']}", file=sys.stderr)
            elif event["event"] in ("new", "del"):
                changes += 1
                if args.count is not None and changes >= args.count:
                    break
    finally:
        stream.close()
    return _exit_code(errors, joined + len(errors), args)


def _exit_code(errors: list[str], targets: int, args: argparse.Namespace) -> int:
    """0 all fine, 1 some failed, 3 all failed (with a hint when privileges are why)."""
    if not errors:
        return EXIT_OK
    permission = next((e for e in errors if is_permission_error(e)), None)
    if permission is not None:
        print(privilege_hint(PermissionError(errno.EPERM, permission), args.command_line), file=sys.stderr)
    return EXIT_ERROR if len(errors) >= targets else EXIT_FAILED


def _cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import demo

    return demo(sys.stdout)


def _cmd_exporter(args: argparse.Namespace) -> int:
    import importlib.util
    import logging

    if importlib.util.find_spec("prometheus_client") is None:
        print("nsworkers exporter: needs prometheus-client: pip install 'nsworkers[exporter]'", file=sys.stderr)
        return EXIT_ERROR
    from ._exporter import ExporterOptions, run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s nsworkers exporter: %(message)s", stream=sys.stderr)
    filtered = args.container or args.pod or args.runtime
    options = ExporterOptions(
        labels_on_every_series=args.labels,
        exclude_interfaces=args.exclude_interface,
        patterns=args.patterns,
        match=(lambda owner: _matches(owner, args)) if filtered else None,
        scrape_timeout=args.scrape_timeout,
        max_age=args.max_age,
        jobs=args.jobs,
    )
    return run(
        options,
        address=args.listen_address,
        port=args.port,
        once=args.once,
        textfile=args.textfile,
        interval=args.interval,
    )


def _regex(text: str) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"not a regular expression ({exc}): {text!r}") from None


def _port(text: str) -> int:
    value = non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 0-65535, got {text!r}")
    return value


def _add_targets(parser: argparse.ArgumentParser, all_help: str) -> None:
    parser.add_argument("namespaces", nargs="*", type=_target, metavar="NS", help="a name in /run/netns or a path")
    parser.add_argument("--all", action="store_true", help=all_help)


def _inspect_sections() -> list[str]:
    from .netlink import SECTIONS

    return list(SECTIONS)


def _watch_sections() -> list[str]:
    from .netlink._events import GROUPS

    return [s for s in ("links", "addresses", "routes", "neighbours") if s in GROUPS]


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; each subcommand is built with :func:`._cliargs.add_command`."""
    from . import __version__

    parser = Parser(
        prog="nsworkers",
        description="Run Python code inside Linux namespaces; inspect many namespaces at once.",
        epilog=_EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"nsworkers {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    ls = add_command(
        sub,
        "ls",
        summary="namespaces on this host: named, held by processes, threads, bind mounts or fds",
        description="List every namespace on this host, like lsns but also the ones only a bind mount, "
        "a single thread or an open fd keeps alive, with the container or pod each belongs to.",
        examples=[
            ("nsworkers ls", "every network namespace, as a table"),
            ("nsworkers ls --type all --json", "every namespace of every type, as JSON"),
            ("nsworkers ls --runtime docker", "network namespaces of Docker containers"),
        ],
    )
    ls.add_argument("--json", action="store_true", help='print {"namespaces": [...]} (schema in the README)')
    ls.add_argument(
        "--type",
        type=_types,
        default="net",
        metavar="TYPES",
        help="comma-separated, of: net, uts, ipc, mnt, pid, user, cgroup, time; or all",
    )
    _add_filters(ls)
    ls.set_defaults(func=_cmd_ls)

    ins = add_command(
        sub,
        "inspect",
        summary="links, addresses, routes ... of many network namespaces, as JSON or a table",
        description="Read links, addresses, routes (and more) of many network namespaces in parallel, "
        "each shaped exactly like `ip -j` prints it. Without NS: every network namespace on the host.",
        examples=[
            ("nsworkers inspect", "links, addresses and routes of every network namespace, as JSON"),
            ("nsworkers inspect blue red --what links,neighbours --format jsonl", "two named namespaces"),
            ("nsworkers inspect /proc/1234/ns/net --format table", "the namespace of process 1234"),
            ("nsworkers inspect blue -s -d --what links,nexthops", "as ip -j -s -d link / nexthop show prints them"),
            ("nsworkers inspect --pod kube-system/coredns --format table", "a Kubernetes pod's namespace"),
        ],
    )
    _add_targets(ins, "every network namespace on the host (the default)")
    ins.add_argument(
        "--what",
        type=comma_list(_inspect_sections, what="section"),
        default="links,addresses,routes",
        metavar="SECTIONS",
        help="comma-separated, of: links, addresses, routes, neighbours, proxy_neighbours, rules, nexthops, "
        "conntrack, xfrm_policies, xfrm_states, sockets, unix_sockets",
    )
    ins.add_argument("-s", "--stats", action="count", default=0, help="statistics as ip -s adds them (-s -s: more)")
    ins.add_argument("-d", "--details", action="count", default=0, help="details as ip -d adds them")
    ins.add_argument(
        "--format", choices=("json", "jsonl", "table"), default="json", metavar="FORMAT", help="json, jsonl or table"
    )
    ins.add_argument(
        "--jobs", type=positive_int, default=None, metavar="N", help="namespaces in flight at once (default: 2 x CPUs)"
    )
    ins.add_argument("--timeout", type=positive_float, default=30.0, metavar="SECONDS", help="time per namespace")
    _add_filters(ins)
    ins.set_defaults(func=_cmd_inspect)

    wat = add_command(
        sub,
        "watch",
        summary="one merged stream of link/address/route/neighbour changes from many namespaces (JSON lines)",
        description="Print change events (links, addresses, routes, neighbours) of many network namespaces "
        "as JSON lines, as the kernel reports them, until Ctrl-C, --count or --duration. Without NS: every "
        "network namespace, also ones created later.",
        examples=[
            ("nsworkers watch", "every network namespace, until Ctrl-C"),
            ("nsworkers watch blue red --what links,addresses --count 10", "stop after 10 changes"),
            ("nsworkers watch blue --duration 60", "one minute of changes in blue"),
        ],
    )
    _add_targets(wat, "every network namespace, also ones that appear (the default)")
    wat.add_argument(
        "--what",
        type=comma_list(_watch_sections, what="section"),
        default="links,addresses,routes,neighbours",
        metavar="SECTIONS",
        help="comma-separated, of: links, addresses, routes, neighbours",
    )
    wat.add_argument("--count", type=positive_int, default=None, metavar="N", help="stop after N change events")
    wat.add_argument("--duration", type=positive_float, default=None, metavar="SECONDS", help="stop after SECONDS")
    wat.set_defaults(func=_cmd_watch)

    exp = add_command(
        sub,
        "exporter",
        summary="Prometheus metrics of every network namespace: HTTP /metrics, one scrape, or a textfile",
        description="Serve per-namespace network metrics (interface counters, addresses, routes, neighbours, "
        "conntrack, sockets, TCP/UDP errors) of every network namespace on the host to Prometheus, "
        "with an info metric naming each namespace's pod, container or unit. Namespaces are found anew at "
        "each scrape; concurrent scrapes share one collection. Metric list: see the README.",
        examples=[
            ("nsworkers exporter", "serve http://127.0.0.1:10025/metrics until SIGTERM or Ctrl-C"),
            ("nsworkers exporter --listen-address 0.0.0.0 --exclude-interface '^lo$'", "all addresses; no lo"),
            ("nsworkers exporter --once 'qrouter-*'", "print one scrape of the OpenStack routers"),
            (
                "nsworkers exporter --textfile /srv/node_exporter/nsw.prom --interval 30",
                "keep a node_exporter textfile fresh (written atomically)",
            ),
            ("nsworkers exporter --runtime containerd --labels", "containerd's pods, owner labels on every series"),
        ],
    )
    exp.add_argument("patterns", nargs="*", metavar="NAME_GLOB", help="only namespaces whose netns label matches")
    exp.add_argument("--listen-address", default="127.0.0.1", metavar="ADDRESS", help="address to serve on")
    exp.add_argument("--port", type=_port, default=10025, metavar="PORT", help="port to serve on (0: any free one)")
    exp.add_argument("--once", action="store_true", help="print one scrape (Prometheus text format) and exit")
    exp.add_argument("--textfile", metavar="PATH", help="write node_exporter textfile format to PATH, not HTTP")
    exp.add_argument(
        "--interval", type=positive_float, default=15.0, metavar="SECONDS", help="with --textfile: time between writes"
    )
    exp.add_argument("--labels", action="store_true", help="pod/container/runtime/unit labels on every series")
    exp.add_argument("--exclude-interface", type=_regex, metavar="REGEX", help="drop interfaces whose name matches")
    exp.add_argument(
        "--scrape-timeout",
        type=positive_float,
        default=10.0,
        metavar="SECONDS",
        help="a scrape stops reading after this; the namespaces left count as failed",
    )
    exp.add_argument(
        "--max-age",
        type=non_negative_float,
        default=5.0,
        metavar="SECONDS",
        help="serve a scrape this recent again instead of running a new one",
    )
    exp.add_argument(
        "--jobs", type=positive_int, default=None, metavar="N", help="new namespaces opened at once (default: 2 x CPUs)"
    )
    _add_filters(exp)
    exp.set_defaults(func=_cmd_exporter)

    demo = add_command(
        sub,
        "demo",
        summary="build a throwaway topology, inspect it, print the table, remove it",
        description="Create three network namespaces joined by veth pairs and a bridge, with IPv4 and IPv6 "
        "addresses and routes; inspect them in parallel, print the table, remove everything. Needs root "
        "(or a user namespace of your own, see the hint it prints).",
        examples=[("nsworkers demo", ""), ("sudo nsworkers demo", "as a non-root user")],
    )
    demo.set_defaults(func=_cmd_demo)

    from ._netcli import add_commands

    add_commands(sub)
    return parser


def _interrupted(signum: int, frame: object) -> None:
    """The first Ctrl-C stops the command cleanly (exit 130); a second one ends the process at once,
    silently, whatever it was doing (shutting workers down, exiting)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    raise KeyboardInterrupt


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nsworkers`` console script."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    command_parser = getattr(args, "_parser", parser)
    if extra:
        command_parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    args.command_line = shlex.join(["nsworkers", *(sys.argv[1:] if argv is None else argv)])
    from .errors import NsWorkersError

    if threading_is_main():
        signal.signal(signal.SIGINT, _interrupted)

    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except (NsWorkersError, OSError) as exc:
        print(f"nsworkers: {exc}", file=sys.stderr)
        hint = privilege_hint(exc, args.command_line, own_namespaces=args.command == "demo")
        if hint:
            print(hint, file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The ``nsworkers`` command line.

Kept import-light: ``nsworkers --help`` loads neither pyroute2 nor psutil.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

_EPILOG = """\
examples:
  nsworkers ls                     named network namespaces (like `ip netns list`)
  nsworkers ls --json              the same as JSON
"""


def _cmd_ls(args: argparse.Namespace) -> int:
    from ._namespace import NETNS_RUN_DIRS, Namespace
    from .errors import NsWorkersError

    rows = []
    seen = set()
    for base in NETNS_RUN_DIRS:
        try:
            names = sorted(os.listdir(base))
        except FileNotFoundError:
            continue
        for name in names:
            path = f"{base}/{name}"
            try:
                with Namespace.open(path) as ns:
                    if ns.id in seen:
                        continue
                    seen.add(ns.id)
                    rows.append({"type": ns.type.value, "inode": ns.inode, "name": name, "path": path})
            except NsWorkersError as exc:
                print(f"nsworkers: {path}: {exc}", file=sys.stderr)
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
    else:
        print(f"{'TYPE':<6} {'NS':<12} NAME")
        for row in rows:
            print(f"{row['type']:<6} {row['inode']:<12} {row['name']}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="nsworkers",
        description="Run Python code inside Linux namespaces; inspect many namespaces at once.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"nsworkers {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    ls = sub.add_parser(
        "ls", help="list named network namespaces", epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.set_defaults(func=_cmd_ls)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nsworkers`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

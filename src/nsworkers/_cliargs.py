"""Conventions every ``nsworkers`` subcommand follows, in one place.

* :func:`add_command` builds a subcommand: a one-line summary for the
  command list, a description, its own examples, defaults shown in
  ``--help``, text wrapped to the terminal (and readable at 80 columns).
* One validator per kind of value (:func:`positive_int`,
  :func:`positive_float`, :func:`comma_list` ...): a bad value becomes
  ``nsworkers inspect: argument --jobs: must be a positive integer, got '-1'``.
* :class:`Parser` prints that one line and exits 2, never a usage block
  or a traceback.
* :func:`privilege_hint` says what an EPERM needs.

Import-light like the rest of the CLI: only argparse and the standard library.
"""

from __future__ import annotations

import argparse
import errno
import math
import re
import shutil
import textwrap
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn

__all__ = (
    "EXIT_CODES",
    "HelpFormatter",
    "Parser",
    "add_command",
    "comma_list",
    "examples_text",
    "non_negative_float",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "is_permission_error",
    "privilege_hint",
)

EXIT_CODES = (
    "exit codes: 0 all done, 1 some failed (their entries say why), 2 bad command line, 3 nothing could be done."
)

_MAX_WIDTH = 100  # wider help is hard to read even on a wide terminal


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see '{self.prog} --help')\n")


class HelpFormatter(argparse.HelpFormatter):
    """Defaults shown after each option's help; descriptions and epilogs refilled to the terminal.

    In a description or epilog, a line indented by two spaces is kept as
    written (a command), a line indented by four or more is wrapped with a
    six-space hanging indent (what the command above it does), anything else
    is prose and refilled paragraph by paragraph.
    """

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 28, width: int | None = None):
        if width is None:
            width = min(shutil.get_terminal_size().columns - 2, _MAX_WIDTH)
        super().__init__(prog, indent_increment, max_help_position, width)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "%(default)" in text or action.default in (None, False, argparse.SUPPRESS):
            return action.help
        if not action.option_strings and action.nargs not in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return action.help
        if action.default == [] or isinstance(action, argparse._VersionAction):
            return action.help
        return f"{text} (default: %(default)s)"

    def _expand_help(self, action: argparse.Action) -> str:
        if isinstance(action.default, (list, tuple)):
            import copy

            action = copy.copy(action)
            action.default = ",".join(str(d) for d in action.default)
        return super()._expand_help(action)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out: list[str] = []
        prose: list[str] = []

        def flush() -> None:
            if prose:
                out.append(textwrap.fill(" ".join(prose), width, initial_indent=indent, subsequent_indent=indent))
                prose.clear()

        for line in text.splitlines():
            stripped = line.strip()
            if not stripped:
                flush()
                out.append("")
            elif line.startswith("    "):
                flush()
                pad = indent + " " * 6
                out.append(textwrap.fill(stripped, width, initial_indent=pad, subsequent_indent=pad))
            elif line.startswith("  "):
                flush()
                out.append(indent + line)
            else:
                prose.append(stripped)
        flush()
        return "\n".join(out)


def examples_text(examples: Iterable[tuple[str, str]]) -> str:
    """``examples:`` then each command on its own line with its explanation below it."""
    lines = ["examples:"]
    for command, explanation in examples:
        lines.append(f"  {command}")
        if explanation:
            lines.append(f"    {explanation}")
    return "\n".join(lines)


def add_command(
    subparsers: Any,
    name: str,
    *,
    summary: str,
    description: str,
    examples: Sequence[tuple[str, str]] = (),
    exit_codes: bool = True,
) -> argparse.ArgumentParser:
    """A subcommand following the conventions: summary, description, its own examples, defaults shown.

    ``summary`` is the line in ``nsworkers --help``; ``description`` opens
    ``nsworkers NAME --help``; ``examples`` are ``(command, what it does)``
    pairs. Errors on this subcommand's line name it (``nsworkers NAME: ...``).
    """
    epilog = [examples_text(examples)] if examples else []
    if exit_codes:
        epilog.append(EXIT_CODES)
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help=summary,
        description=description,
        epilog="\n\n".join(epilog) or None,
        formatter_class=HelpFormatter,
    )
    parser.set_defaults(_parser=parser)
    return parser


# -- validators: one per kind of value; each raises ArgumentTypeError, which argparse prefixes with the option name


def _checked(kind: Callable[[str], Any], text: str, expected: str, ok: Callable[[Any], bool]) -> Any:
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or (isinstance(value, float) and not math.isfinite(value)) or not ok(value):
        raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer > 0 (``--jobs``, ``--count``)."""
    return int(_checked(int, text, "a positive integer", lambda v: v > 0))


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    return int(_checked(int, text, "an integer >= 0", lambda v: v >= 0))


def positive_float(text: str) -> float:
    """A finite number > 0 (seconds: ``--timeout``, ``--duration``)."""
    return float(_checked(float, text, "a positive number", lambda v: v > 0))


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    return float(_checked(float, text, "a number >= 0", lambda v: v >= 0))


def comma_list(
    choices: Sequence[str] | Callable[[], Sequence[str]], *, what: str = "value"
) -> Callable[[str], list[str]]:
    """A parser of ``a,b,c`` accepting only ``choices`` (in the order given, duplicates dropped).

    ``choices`` may be a function, called only when a value is parsed: the
    help of a command then does not import the module that knows them.
    """

    def parse(text: str) -> list[str]:
        nonlocal choices
        if callable(choices):
            choices = list(choices())
        names = list(dict.fromkeys(w.strip() for w in text.split(",") if w.strip()))
        unknown = [w for w in names if w not in choices]
        if unknown or not names:
            got = ",".join(unknown) if unknown else repr(text)
            raise argparse.ArgumentTypeError(f"unknown {what} {got}; choose from {','.join(choices)}")
        return names

    parse.__name__ = re.sub(r"\W", "_", what)  # argparse names the type in some messages
    return parse


def privilege_hint(exc: BaseException, command: str, *, own_namespaces: bool = False) -> str | None:
    """For an EPERM/EACCES, a line saying what *command* needs; else None.

    *own_namespaces*: the command makes the namespaces it works on (``demo``),
    so a user namespace of the user's own is an alternative to root.
    """
    if not is_permission_error(exc):
        return None
    hint = f"hint: this needs root or CAP_SYS_ADMIN over the namespaces: sudo {command}"
    if own_namespaces:
        hint += (
            f"; or, without root, inside a user namespace of your own: "
            f"unshare -Urnm sh -c 'mount -t tmpfs none /run && {command}'"
        )
    return hint


def is_permission_error(exc: BaseException | str) -> bool:
    """EPERM or EACCES, as an exception or as the text of one (``[Errno 1] ...``)."""
    if isinstance(exc, str):
        return "[Errno 1]" in exc or "[Errno 13]" in exc
    return isinstance(exc, PermissionError) or getattr(exc, "errno", None) in (errno.EPERM, errno.EACCES)

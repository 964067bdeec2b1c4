"""Command-line conventions: one-line usage errors naming the option, help that reads at 80 columns."""

from __future__ import annotations

import argparse
import errno
import re

import pytest

from nsworkers import _cliargs
from nsworkers.cli import build_parser, main

BAD_VALUES = [
    (["inspect", "--jobs", "-1"], "--jobs"),
    (["inspect", "--jobs", "0"], "--jobs"),
    (["inspect", "--jobs", "two"], "--jobs"),
    (["inspect", "--timeout", "0"], "--timeout"),
    (["inspect", "--timeout", "-5"], "--timeout"),
    (["inspect", "--timeout", "nan"], "--timeout"),
    (["inspect", "--timeout", "inf"], "--timeout"),
    (["inspect", "--what", "bogus"], "--what"),
    (["inspect", "--what", ","], "--what"),
    (["inspect", "--format", "xml"], "--format"),
    (["inspect", ".."], "NS"),
    (["watch", "--what", "rules"], "--what"),
    (["watch", "--count", "-1"], "--count"),
    (["watch", "--count", "0"], "--count"),
    (["watch", "--duration", "0"], "--duration"),
    (["watch", "--duration", "nan"], "--duration"),
    (["ls", "--type", "bogus"], "--type"),
    (["ls", "--bogus"], "--bogus"),
    (["demo", "extra"], "extra"),
    (["topology", "--format", "gif"], "--format"),
    (["sockets", "--port", "0"], "--port"),
    (["find", "eth0"], "TERM"),
    (["find", ":70000"], "TERM"),
    (["bogus"], "bogus"),
]


def subcommands() -> list[str]:
    parser = build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(sub.choices)


@pytest.mark.parametrize(("argv", "option"), BAD_VALUES, ids=[" ".join(a) for a, _ in BAD_VALUES])
def test_bad_value_is_one_line_naming_the_option(
    argv: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert option in err
    command = argv[0] if argv[0] in subcommands() else None
    assert err.startswith(f"nsworkers {command}:" if command else "nsworkers:"), err


@pytest.mark.parametrize("command", [None, *subcommands()])
def test_help_reads_at_80_columns(
    command: str | None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"] if command else ["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert max(len(line) for line in text.splitlines()) <= 80, text
    usage, description = text.split("\n\n")[:2]
    assert usage.startswith(f"usage: nsworkers {command or ''}".rstrip())
    assert len(description) > 20 and not description.startswith(("positional", "options")), text
    examples = text.split("examples:\n", 1)[1].split("\n\n", 1)[0]
    commands = [line.strip() for line in examples.splitlines() if re.match(r"  \S", line)]
    assert commands and all(c.startswith(f"nsworkers {command or ''}") or "sudo" in c for c in commands), examples
    assert "exit codes:" in text
    # every option that has a default says it
    parser = build_parser() if command is None else _subparser(command)
    options = text.split("\noptions:\n", 1)[1].split("\n\n", 1)[0]
    for action in parser._actions:
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
            help_of = options.split(f"  {action.option_strings[-1]}", 1)[1].split("\n  -", 1)[0]
            assert "(default:" in help_of, (action.option_strings, help_of)
    # no word is split across lines: each line of prose ends on a whole word
    assert not re.search(r"[a-z],\n\s+,", text)


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    found: argparse.ArgumentParser = sub.choices[command]
    return found


def test_defaults_shown_as_typed_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["inspect", "--help"])
    assert "(default: links,addresses,routes)" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize(
    ("parse", "good", "bad"),
    [
        (_cliargs.positive_int, {"1": 1, "64": 64}, ["0", "-1", "1.5", "", "x"]),
        (_cliargs.non_negative_int, {"0": 0, "3": 3}, ["-1", "x"]),
        (_cliargs.positive_float, {"0.5": 0.5, "30": 30.0}, ["0", "-5", "nan", "inf", "-inf", "x"]),
        (_cliargs.non_negative_float, {"0": 0.0, "2.5": 2.5}, ["-0.1", "nan", "inf"]),
    ],
)
def test_validators(parse: object, good: dict[str, object], bad: list[str]) -> None:
    assert callable(parse)
    for text, value in good.items():
        assert parse(text) == value
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError, match="must be"):
            parse(text)


def test_comma_list_is_lazy_and_ordered() -> None:
    calls: list[int] = []

    def choices() -> list[str]:
        calls.append(1)
        return ["a", "b", "c"]

    parse = _cliargs.comma_list(choices, what="letter")
    assert calls == []
    assert parse("c, a,c") == ["c", "a"]
    with pytest.raises(argparse.ArgumentTypeError, match="unknown letter d; choose from a,b,c"):
        parse("a,d")
    assert calls == [1]


def test_privilege_hint() -> None:
    eperm = PermissionError(errno.EPERM, "Operation not permitted")
    hint = _cliargs.privilege_hint(eperm, "nsworkers inspect blue")
    assert hint is not None and "root or CAP_SYS_ADMIN" in hint and "sudo nsworkers inspect blue" in hint
    assert "unshare" not in hint  # another user's namespaces: no user namespace of one's own helps
    hint = _cliargs.privilege_hint(eperm, "nsworkers demo", own_namespaces=True)
    assert hint is not None and "unshare -Urnm sh -c 'mount -t tmpfs none /run && nsworkers demo'" in hint
    assert _cliargs.privilege_hint(FileNotFoundError(errno.ENOENT, "x"), "nsworkers demo") is None
    assert _cliargs.is_permission_error("[Errno 1] cannot join /run/netns/x: setns(net) failed")

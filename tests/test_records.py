"""The record builders on recorded netlink bytes: no root, no netlink, no namespaces.

``tests/data/netlink-capture.json`` holds the rich fidelity topology's dumps
(raw payloads, per request) and what ``ip -j`` printed just before and just
after they were read, with the ``/etc/iproute2`` files and ``/etc/protocols``
names it used (regenerate with ``python -m tests.netlink_capture``). Each
fidelity case replays through the real section functions with a
:class:`~tests.netlink_capture.ReplaySession`, and must equal ``ip``'s output
as :func:`tests.test_fidelity.bracketed` defines it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nsworkers.netlink import _names, _records

from .netlink_capture import ReplaySession
from .test_fidelity import CASES, bracketed

CAPTURE = Path(__file__).parent / "data" / "netlink-capture.json"


@pytest.fixture(scope="module")
def capture() -> dict[str, Any]:
    with CAPTURE.open() as f:
        return json.load(f)  # type: ignore[no-any-return]


@pytest.fixture
def captured_names(capture: dict[str, Any], tmp_path: Path) -> Iterator[None]:
    """The name tables ip used when the capture was made, in place of this machine's."""
    for rel, text in capture["etc_iproute2"].items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    saved = _names._config, _names._protocols
    _names._config = _names.NameConfig(str(tmp_path))
    _names._protocols = {int(k): v for k, v in capture["protocols"].items()}
    try:
        yield
    finally:
        _names._config, _names._protocols = saved


@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_recorded_dump_equals_recorded_ip(capture: dict[str, Any], captured_names: None, case: str) -> None:
    name, fn, _args = next(c for c in CASES if c[0] == case)
    ours = fn(session=ReplaySession(capture["dumps"]))
    before, after = capture["ip_before"][name], capture["ip_after"][name]
    assert before
    assert bracketed(ours, before, after, name) == []


def test_a_changed_byte_is_noticed(capture: dict[str, Any], captured_names: None) -> None:
    """The replay really feeds the builders: flipping one link's MTU shows in the comparison."""
    dumps = dict(capture["dumps"])
    key = next(k for k in dumps if k.startswith("18:") and k.endswith("09000000"))  # the link dump without stats
    first = bytearray(bytes.fromhex(dumps[key][0]))
    offset = first.index(bytes.fromhex("08000400"))  # IFLA_MTU, 4 bytes of value
    first[offset + 4] ^= 0xFF
    dumps[key] = [first.hex(), *dumps[key][1:]]
    name, fn, _args = CASES[0]
    ours = fn(session=ReplaySession(dumps))
    assert bracketed(ours, capture["ip_before"][name], capture["ip_after"][name], name) != []


def test_name_tables_parse_like_rt_names_c(tmp_path: Path) -> None:
    """Hex and decimal ids, comments, blank lines; a corrupt line ends the file, as in ip."""
    table = _names.parse_table("# c\n\n 0x10 ten\n\t20 twenty # trailing\n-1 negative\n300 big\nbad line\n30 after\n")
    assert table == {16: "ten", 20: "twenty"}
    assert _names.parse_table("5 five\n", limit=1 << 32) == {5: "five"}
    (tmp_path / "rt_tables.d").mkdir()
    (tmp_path / "rt_tables").write_text("7 seven\n254 primary\n")
    (tmp_path / "rt_tables.d" / "a.conf").write_text("8 eight\n")
    (tmp_path / "rt_tables.d" / "b.txt").write_text("9 nine\n")
    (tmp_path / "rt_protos").write_text("4 mystatic\n77 custom\n")
    names = _names.Names(_names.NameConfig(str(tmp_path)))
    assert [names.table(n) for n in (7, 8, 9, 254, 255)] == ["seven", "eight", "9", "primary", "local"]
    # rt_names.c loads rt_protos on the first number its built-in table lacks; until then "static" wins
    assert names.protocol(4) == "static"
    assert names.protocol(77) == "custom"
    assert names.protocol(4) == "mystatic"
    assert _names.Names(_names.NameConfig(os.fspath(tmp_path / "missing"))).protocol(77) == "77"


def test_hex_like_print_0xhex() -> None:
    assert [_records.hex0x(v) for v in (0, 5, 0xFF)] == ["0", "0x5", "0xff"]


def test_proto_down_as_ip_6_1_prints_it(tmp_path: Path) -> None:
    """No link kind here supports protodown, so this one is built by hand from the uapi layout.

    iproute2 6.1 prints the reasons only if the link has attribute 2 (it checks the link's
    attributes for IFLA_PROTO_DOWN_REASON_VALUE) and reads one byte of the value.
    """
    from nsworkers.netlink import _wire as w

    (tmp_path / "protodown_reasons.d").mkdir()
    (tmp_path / "protodown_reasons.d" / "r.conf").write_text("2 maintenance\n")
    names = _names.Names(_names.NameConfig(str(tmp_path)))
    reason = w.nla(_records.IFLA_PROTO_DOWN_REASON_VALUE, (0x105).to_bytes(4, "little"))
    attrs = [
        w.nla(_records.IFLA_IFNAME, b"x0\0"),
        w.nla(_records.IFLA_PROTO_DOWN, b"\1"),
        w.nla(_records.IFLA_PROTO_DOWN_REASON, reason),
    ]
    header = _records.IFINFOMSG.pack(0, 1, 5, 0, 0)
    bare = _records.link(header + b"".join(attrs), _records.LinkTable(), names)
    assert bare["proto_down"] is True and "proto_down_reason" not in bare
    with_broadcast = header + b"".join(attrs) + w.nla(_records.IFLA_BROADCAST, b"\xff" * 6)
    rec = _records.link(with_broadcast, _records.LinkTable(), names)
    assert rec["proto_down_reason"] == ["0", "maintenance"]  # 0x105: bits 0 and 2 of the low byte


def test_an_index_of_zero_is_named_as_ip_6_1_names_it() -> None:
    """``ll_index_to_name(0)`` is ``*``: index 0 came out as ``if0``. Built by hand: no kernel here sends one."""
    from nsworkers.netlink import _wire as w

    names = _names.Names(_names.NameConfig("/nonexistent"))
    family, link_type, index, flags, change = 0, 1, 5, 0, 0  # AF_UNSPEC, ARPHRD_ETHER
    header = _records.IFINFOMSG.pack(family, link_type, index, flags, change)
    attrs = w.nla(_records.IFLA_IFNAME, b"x0\0") + w.nla(_records.IFLA_MASTER, (0).to_bytes(4, "little"))
    assert _records.link(header + attrs, _records.LinkTable(), names)["master"] == "*"
    assert _records.LinkTable().name(7) == "if7"

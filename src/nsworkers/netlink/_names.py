"""The names iproute2 prints for numbers, and its ``/etc/iproute2`` tables.

Fixed tables mirror iproute2 6.1 (each cites its source file); the
configurable ones (routing tables, protocols, scopes, realms, DS fields,
link groups) start from iproute2's built-in defaults and are completed from
``/etc/iproute2/<table>`` and, for ``rt_tables`` and ``rt_protos``, the
``*.conf`` files of ``<table>.d`` -- read the way ``lib/rt_names.c`` reads
them, once per worker, through the *caller's* filesystem view (a worker that
joined a container's mount namespace never reads the container's files).

``lib/rt_names.c`` loads the protocol, scope, realm and DS-field files
lazily, on the first number missing from its built-in table; until then a
built-in name wins over the file's. :class:`Names` keeps that state per
command, as one ``ip`` invocation does.
"""

from __future__ import annotations

import os
import re
from typing import Final

CONFDIR: Final = "/etc/iproute2"

# -- fixed tables -----------------------------------------------------------

# ip/ipaddress.c print_link_flags(): (IFF_* bit, name) in print order
IFF_FLAGS: Final = (
    (0x8, "LOOPBACK"),
    (0x2, "BROADCAST"),
    (0x10, "POINTOPOINT"),
    (0x1000, "MULTICAST"),
    (0x80, "NOARP"),
    (0x200, "ALLMULTI"),
    (0x100, "PROMISC"),
    (0x400, "MASTER"),
    (0x800, "SLAVE"),
    (0x4, "DEBUG"),
    (0x8000, "DYNAMIC"),
    (0x4000, "AUTOMEDIA"),
    (0x2000, "PORTSEL"),
    (0x20, "NOTRAILERS"),
    (0x1, "UP"),
    (0x10000, "LOWER_UP"),
    (0x20000, "DORMANT"),
    (0x40000, "ECHO"),
)
IFF_UP: Final = 0x1
IFF_POINTOPOINT: Final = 0x10
IFF_RUNNING: Final = 0x40

# ip/ipaddress.c oper_states[] and link_modes[]
OPERSTATES: Final = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")
LINKMODES: Final = ("DEFAULT", "DORMANT")

# lib/ll_types.c ll_type_n2a(): ARPHRD_* -> name
ARPHRD: Final = {
    0: "netrom", 1: "ether", 2: "eether", 3: "ax25", 4: "pronet", 5: "chaos", 6: "ieee802", 7: "arcnet",
    8: "appletlk", 15: "dlci", 19: "atm", 23: "metricom", 24: "ieee1394", 27: "eui64", 32: "infiniband",
    256: "slip", 257: "cslip", 258: "slip6", 259: "cslip6", 260: "rsrvd", 264: "adapt", 270: "rose",
    271: "x25", 272: "hwx25", 280: "can", 512: "ppp", 513: "hdlc", 516: "lapb", 517: "ddcmp",
    518: "rawhdlc", 519: "rawip", 768: "ipip", 769: "tunnel6", 770: "frad", 771: "skip", 772: "loopback",
    773: "localtlk", 774: "fddi", 775: "bif", 776: "sit", 777: "ip/ddp", 778: "gre", 779: "pimreg",
    780: "hippi", 781: "ash", 782: "econet", 783: "irda", 784: "fcpp", 785: "fcal", 786: "fcpl",
    787: "fcfb0", 800: "tr", 801: "tr+rif", 802: "ieee802.11", 803: "ieee802.11/prism",
    804: "ieee802.11/radiotap", 805: "ieee802.15.4", 806: "ieee802.15.4/monitor", 820: "phonet",
    821: "phonet_pipe", 822: "caif", 823: "ip6gre", 824: "netlink", 825: "6lowpan", 826: "vsockmon",
    0xFFFE: "none", 0xFFFF: "void",
}  # fmt: skip

# ip/rtm_map.c rtnl_rtntype_n2a(): RTN_* -> name
ROUTE_TYPES: Final = (
    "none", "unicast", "local", "broadcast", "anycast", "multicast",
    "blackhole", "unreachable", "prohibit", "throw", "nat", "xresolve",
)  # fmt: skip

# lib/utils.c nud_state_n2a() via ip/ipneigh.c print_neigh_state()
NUD_STATES: Final = (
    (0x01, "INCOMPLETE"), (0x02, "REACHABLE"), (0x04, "STALE"), (0x08, "DELAY"),
    (0x10, "PROBE"), (0x20, "FAILED"), (0x40, "NOARP"), (0x80, "PERMANENT"),
)  # fmt: skip

# ip/iproute.c route metrics: RTAX_* -> ip's key (lib/rt_names.c / mxnames[])
RTAX_NAMES: Final = {
    1: "lock", 2: "mtu", 3: "window", 4: "rtt", 5: "rttvar", 6: "ssthresh", 7: "cwnd", 8: "advmss",
    9: "reordering", 10: "hoplimit", 11: "initcwnd", 12: "features", 13: "rto_min", 14: "initrwnd",
    15: "quickack", 16: "congctl", 17: "fastopen_no_cookie",
}  # fmt: skip

# include/uapi/linux/socket.h AF_* -> ip's family names (lib/utils.c family_name())
FAMILIES: Final = {0: "unspec", 2: "inet", 10: "inet6", 7: "bridge", 28: "mpls", 4: "ipx", 5: "dnet"}


def flags_names(value: int, table: tuple[tuple[int, str], ...]) -> list[str]:
    return [name for bit, name in table if value & bit]


# -- configurable tables (lib/rt_names.c) ---------------------------------------

# lib/rt_names.c rtnl_rtprot_tab[] (6.1 has no 17 "mrouted" or 99 "openr")
_RTPROT_BUILTIN: Final = {
    0: "unspec", 1: "redirect", 2: "kernel", 3: "boot", 4: "static", 8: "gated", 9: "ra",
    10: "mrt", 11: "zebra", 12: "bird", 42: "babel", 13: "dnrouted", 14: "xorp", 15: "ntk",
    16: "dhcp", 18: "keepalived", 186: "bgp", 187: "isis", 188: "ospf", 189: "rip", 192: "eigrp",
}  # fmt: skip

# name -> (built-in entries, also read from the .d directory, loaded lazily)
_TABLES: Final[dict[str, tuple[dict[int, str], bool, bool]]] = {
    "rt_protos": (_RTPROT_BUILTIN, True, True),
    # lib/rt_names.c rtnl_rtscope_tab[]
    "rt_scopes": ({0: "global", 255: "nowhere", 254: "host", 253: "link", 200: "site"}, False, True),
    # lib/rt_names.c rtnl_rtrealm_tab[]
    "rt_realms": ({0: "unknown"}, False, True),
    # lib/rt_names.c rtnl_rttable_hash[] (loaded on first use, a file entry shadows a built-in one)
    "rt_tables": ({253: "default", 254: "main", 255: "local"}, True, False),
    # lib/rt_names.c rtnl_rtdsfield_tab[]
    "rt_dsfield": ({0: "0"}, False, True),
    # lib/rt_names.c rtnl_group_hash[]
    "group": ({0: "default"}, False, False),
    # lib/rt_names.c protodown_reason_tab[]: only the .d directory, bits 0-31
    "protodown_reasons": ({}, True, False),
}

# lib/rt_names.c fread_id_name(): "0x%x %s" or "%d %s", after leading blanks
_LINE = re.compile(r"(?:0x([0-9a-fA-F]+)|([+-]?[0-9]+))[ \t\n\r\f\v]+(\S+)")
_LIMIT = {"rt_tables": 1 << 32, "group": 1 << 31, "protodown_reasons": 32}  # hash tables keep any id; arrays ids < 256


def parse_table(text: str, limit: int = 256) -> dict[int, str]:
    """Entries of one iproute2 names file, in file order; reading stops at a corrupt line, as ip's does."""
    out: dict[int, str] = {}
    for raw_line in text.splitlines():
        line = raw_line.lstrip(" \t")
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line[:511])
        if match is None:
            break  # "Database ... is corrupted": ip keeps what it read so far
        number = int(match[1], 16) if match[1] is not None else int(match[2])
        if number >= 1 << 31:
            number -= 1 << 32  # %d / %x into an int
        if 0 <= number < limit:
            out[number] = match[3]
    return out


def _read(path: str) -> str | None:
    """A file's text as the caller's filesystem shows it; None if missing or not a regular file."""
    from .._worker import caller_open

    try:
        fd = caller_open(path)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        return f.read().decode(errors="replace")


def _listdir(path: str) -> list[str]:
    """A directory's entries (in ``readdir`` order, like ip) as the caller's filesystem shows it."""
    from .. import _worker
    from .._callerfs import open_in_root

    try:
        fd = open_in_root(_worker._caller_root, path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return []
    try:
        return os.listdir(fd)
    finally:
        os.close(fd)


def protocols() -> dict[int, str]:
    """``/etc/protocols`` by number, first name of each (``getprotobynumber``), read once per process."""
    global _protocols
    if _protocols is None:
        table: dict[int, str] = {}
        for line in (_read("/etc/protocols") or "").splitlines():
            fields = line.split("#", 1)[0].split()
            if len(fields) >= 2 and fields[1].isdigit():
                table.setdefault(int(fields[1]), fields[0])
        _protocols = table
    return _protocols


_protocols: dict[int, str] | None = None


class NameConfig:
    """The file entries of the configurable tables under *confdir*, each read on first use, then kept.

    Most snapshots need two tables (link groups, routing tables); reading
    all of them up front cost a new worker ~2 ms.
    """

    def __init__(self, confdir: str = CONFDIR) -> None:
        self.confdir = confdir
        self._files: dict[str, dict[int, str]] = {}

    def entries(self, name: str) -> dict[int, str]:
        """Table *name* as its file and ``.d`` directory define it (empty if there are none)."""
        found = self._files.get(name)
        if found is None:
            found = self._files[name] = self._load(name)
        return found

    def _load(self, name: str) -> dict[int, str]:
        with_dir = _TABLES[name][1]
        limit = _LIMIT.get(name, 257)
        entries: dict[int, str] = {}
        text = _read(f"{self.confdir}/{name}") if name != "protodown_reasons" else None
        if text is not None:
            entries.update(parse_table(text, limit))
        if with_dir:
            for entry in _listdir(f"{self.confdir}/{name}.d"):  # readdir order, like ip
                if entry.startswith(".") or len(entry) <= 5 or not entry.endswith(".conf"):
                    continue
                text = _read(f"{self.confdir}/{name}.d/{entry}")
                if text is not None:
                    entries.update(parse_table(text, limit))
        return entries


_config: NameConfig | None = None


def config() -> NameConfig:
    """This process's tables, read on first use."""
    global _config
    if _config is None:
        _config = NameConfig()
    return _config


class Names:
    """Number -> name for one command, with ``lib/rt_names.c``'s lazy loading (see the module docstring)."""

    __slots__ = ("_config", "_loaded")

    def __init__(self, cfg: NameConfig | None = None) -> None:
        self._config = cfg if cfg is not None else config()
        self._loaded: set[str] = set()

    def _lookup(self, table: str, number: int) -> str | None:
        builtin, _with_dir, lazy = _TABLES[table]
        if lazy and table not in self._loaded:
            name = builtin.get(number)
            if name is not None:
                return name
            self._loaded.add(table)
        return self._config.entries(table).get(number, builtin.get(number))

    def protocol(self, number: int) -> str:
        return self._lookup("rt_protos", number) or str(number)

    def scope(self, number: int) -> str:
        return self._lookup("rt_scopes", number) or str(number)

    def realm(self, number: int) -> str:
        return self._lookup("rt_realms", number) or str(number)

    def table(self, number: int) -> str:
        return self._lookup("rt_tables", number) or str(number)

    def group(self, number: int) -> str:
        return self._lookup("group", number) or str(number)

    def protodown_reason(self, bit: int) -> str:
        return self._lookup("protodown_reasons", bit) or str(bit)

    def dsfield(self, number: int) -> str:
        """``rtnl_dsfield_n2a``: a name, else ``0x%02x``."""
        return self._lookup("rt_dsfield", number) or f"0x{number:02x}"

"""After ``_callerfs.install``, a process that joined a hostile mount namespace imports only the caller's code.

Each test forks a child that does what a worker does -- take the caller's
root, ``install`` it, ``setns`` into a mount namespace the test shaped like a
container that planted modules over a ``sys.path`` directory -- then imports,
reads resources and formats tracebacks there, and reports over a pipe.
"""

from __future__ import annotations

import importlib.machinery
import json
import os
import select
import signal
import sys
import traceback
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nsworkers import _callerfs, _sys

from .conftest import in_child

pytestmark = pytest.mark.privileged

CLONE_NEWNS = 0x00020000
UID = uuid.uuid4().hex[:8]
GENUINE = f"nswgenuine_{UID}"
PACKAGE = f"nswpkg_{UID}"
NAMESPACE_PKG = f"nswnspkg_{UID}"
TRACEBACK_MOD = f"nswtb_{UID}"
EXTENSION = f"nswext_{UID}"
ZIPPED = f"nswzipped_{UID}"
ONLY_IN_TARGET = f"nswonly_{UID}"

UNKNOWN = "'<unknown>'"  # quoted for sh

RAISER = 'def boom():\n    raise ValueError("boom")  # genuine line\n'


def planted(marker: Path) -> str:
    """Source of a planted module: it leaves *marker* behind if it ever runs."""
    return f'open({str(marker)!r}, "a").write(__name__ + "\\n")\nORIGIN = "planted"\n'


class Container:
    """A "container": a mount namespace whose view of *lib* (on the test's sys.path) is a tmpfs of planted files."""

    def __init__(self, tmp_path: Path, make_mount_ns: Callable[[str], int]) -> None:
        self.lib = tmp_path / "lib"
        self.marker = tmp_path / "planted-ran"
        self.zip = tmp_path / "lib.zip"
        lib = self.lib
        (lib / PACKAGE).mkdir(parents=True)
        (lib / NAMESPACE_PKG).mkdir()
        (lib / f"{GENUINE}.py").write_text('ORIGIN = "genuine"\n' + RAISER)
        (lib / PACKAGE / "__init__.py").write_text('ORIGIN = "genuine"\n')
        (lib / PACKAGE / "sub.py").write_text('ORIGIN = "genuine"\n')
        (lib / PACKAGE / "data.txt").write_text("genuine data")
        (lib / NAMESPACE_PKG / "part.py").write_text('ORIGIN = "genuine"\n')
        (lib / f"{TRACEBACK_MOD}.py").write_text(RAISER)
        (lib / f"{EXTENSION}{importlib.machinery.EXTENSION_SUFFIXES[0]}").write_bytes(b"\x7fELF not really")
        with zipfile.ZipFile(self.zip, "w") as archive:
            archive.writestr(f"{ZIPPED}.py", 'ORIGIN = "zipped"\n')

        plant = tmp_path / "plant"
        (plant / PACKAGE).mkdir(parents=True)
        (plant / NAMESPACE_PKG).mkdir()
        for path in (
            f"{GENUINE}.py",
            f"{ONLY_IN_TARGET}.py",
            f"{PACKAGE}/__init__.py",
            f"{PACKAGE}/sub.py",
            f"{PACKAGE}/evil.py",
            f"{NAMESPACE_PKG}/part.py",
            f"{NAMESPACE_PKG}/evil.py",
        ):
            (plant / path).write_text(planted(self.marker))
        (plant / PACKAGE / "data.txt").write_text("planted data")
        # The container mounts over the caller's sys.path directory; a FIFO sits where a traceback's source is.
        self.holder = make_mount_ns(
            f"mount -t tmpfs nsw {lib} && cp -r {plant}/. {lib}/ && mkfifo {lib}/{TRACEBACK_MOD}.py {lib}/{UNKNOWN}"
        )

    def run(self, body: Callable[[], dict[str, Any]], before: Callable[[], None] = lambda: None) -> dict[str, Any]:
        """Fork; in the child: *before*, ``install``, join the container, *body*; return what *body* returned."""
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            report: dict[str, Any]
            try:
                os.close(read_end)
                signal.alarm(30)  # a hang shows as a missing report, not a stuck suite
                sys.path.insert(0, str(self.lib))
                sys.path.append(str(self.zip))
                before()
                mnt = os.open(f"/proc/{self.holder}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
                root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                _callerfs.install(root)
                _sys.setns(mnt, CLONE_NEWNS)
                report = body()
            except BaseException as exc:
                report = {"error": "".join(traceback.format_exception_only(type(exc), exc))}
            try:
                os.write(write_end, json.dumps(report).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        chunks = []
        try:
            while select.select([read_end], [], [], 60)[0]:
                chunk = os.read(read_end, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            os.close(read_end)
            if not chunks:
                os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
        assert chunks, f"the child reported nothing (wait status {status:#x})"
        result: dict[str, Any] = json.loads(b"".join(chunks))
        assert "error" not in result, result["error"]
        return result

    def planted_ran(self) -> list[str]:
        return self.marker.read_text().split() if self.marker.exists() else []


@pytest.fixture
def container(tmp_path: Path, make_mount_ns: Callable[[str], int]) -> Iterator[Container]:
    made = Container(tmp_path, make_mount_ns)
    yield made
    assert made.planted_ran() == [], "a planted module was executed"


def import_error(name: str) -> str:
    try:
        __import__(name)
    except ImportError as exc:
        return f"{type(exc).__name__}: {exc}"
    return "imported"


def test_the_container_really_plants_files(container: Container) -> None:
    def body() -> dict[str, Any]:
        return {"genuine": Path(container.lib, f"{GENUINE}.py").read_text()}

    assert "planted" in container.run(body)["genuine"]


def test_genuine_modules_and_packages_are_imported(container: Container) -> None:
    def body() -> dict[str, Any]:
        import importlib

        genuine = importlib.import_module(GENUINE)
        package = importlib.import_module(PACKAGE)
        sub = importlib.import_module(f"{PACKAGE}.sub")
        part = importlib.import_module(f"{NAMESPACE_PKG}.part")
        return {
            "origins": [m.ORIGIN for m in (genuine, package, sub, part)],
            "file": genuine.__file__,
            "path": list(package.__path__),
            "ns_path": list(sys.modules[NAMESPACE_PKG].__path__),
        }

    result = container.run(body)
    assert result["origins"] == ["genuine"] * 4
    assert result["file"] == str(container.lib / f"{GENUINE}.py")
    assert result["path"] == [str(container.lib / PACKAGE)]
    assert result["ns_path"] == [str(container.lib / NAMESPACE_PKG)]


def test_modules_only_in_the_target_are_not_importable(container: Container) -> None:
    def body() -> dict[str, Any]:
        __import__(PACKAGE)
        return {name: import_error(name) for name in (ONLY_IN_TARGET, f"{PACKAGE}.evil", f"{NAMESPACE_PKG}.evil")}

    for name, outcome in container.run(body).items():
        assert outcome.startswith("ModuleNotFoundError"), (name, outcome)


def test_extension_modules_and_zip_imports_are_refused_with_the_reason(container: Container) -> None:
    def body() -> dict[str, Any]:
        return {"extension": import_error(EXTENSION), "zipped": import_error(ZIPPED)}

    result = container.run(body)
    assert result["extension"].startswith("ImportError"), result
    assert "extension module" in result["extension"]
    assert f"Pool(preload=[{EXTENSION!r}])" in result["extension"]
    assert "zip archive" in result["zipped"]
    assert f"Pool(preload=[{ZIPPED!r}])" in result["zipped"]


def test_a_module_already_loaded_before_the_join_is_kept(container: Container) -> None:
    def before() -> None:
        __import__(GENUINE)  # through the standard finder, as the zygote's preload does

    def body() -> dict[str, Any]:
        return {"origin": sys.modules[GENUINE].ORIGIN}

    assert container.run(body, before)["origin"] == "genuine"


def test_resources_and_source_come_from_the_caller(container: Container) -> None:
    def body() -> dict[str, Any]:
        import importlib.resources
        import inspect

        package = __import__(PACKAGE)
        genuine = __import__(GENUINE)
        files = importlib.resources.files(package)
        loader = genuine.__loader__
        assert isinstance(loader, _callerfs.CallerSourceLoader)
        return {
            "data": files.joinpath("data.txt").read_text(),
            "names": sorted(p.name for p in files.iterdir()),
            "source": inspect.getsource(genuine),
            "loader_data": loader.get_data(str(container.lib / PACKAGE / "data.txt")).decode(),
        }

    result = container.run(body)
    assert result["data"] == "genuine data"
    assert "data.txt" in result["names"]
    assert "evil.py" not in result["names"]
    assert result["source"].startswith('ORIGIN = "genuine"')
    assert result["loader_data"] == "genuine data"


def test_a_traceback_over_a_planted_fifo_does_not_hang(container: Container) -> None:
    def before() -> None:
        __import__(TRACEBACK_MOD)  # loaded by the standard loader, before the join

    def body() -> dict[str, Any]:
        out = {}
        os.chdir(container.lib)  # where the container left a FIFO named "<unknown>"
        for name in (TRACEBACK_MOD, GENUINE):
            try:
                __import__(name).boom() and None  # an expression 3.13 places carets under
            except ValueError as exc:
                with _callerfs.caller_cwd():
                    out[name] = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        out["cwd"] = os.getcwd()
        return out

    result = container.run(body, before)
    assert result.pop("cwd") == str(container.lib)
    for name, text in result.items():
        assert 'raise ValueError("boom")  # genuine line' in text, (name, text)


def test_no_import_opens_a_file_through_the_process_root(container: Container) -> None:
    def body() -> dict[str, Any]:
        opened: list[str] = []

        callers_root = os.stat(f"/proc/self/fd/{_callerfs._root_fd}")

        def audit(event: str, args: tuple[Any, ...]) -> None:
            if event not in ("open", "os.listdir", "os.scandir") or not isinstance(args[0], (str, bytes)):
                return
            if event == "open" and isinstance(args[2], int) and args[2] & os.O_PATH:
                return  # no I/O
            cwd = os.stat(".")
            if not os.path.isabs(args[0]) and (cwd.st_dev, cwd.st_ino) == (callers_root.st_dev, callers_root.st_ino):
                return  # resolved in the caller's view (caller_cwd)
            opened.append(f"{event} {args[0]!r}")

        sys.addaudithook(audit)
        import importlib.resources

        for name in (GENUINE, f"{PACKAGE}.sub", f"{NAMESPACE_PKG}.part", "json.tool", "colorsys", "shlex"):
            __import__(name)
        importlib.resources.files(PACKAGE).joinpath("data.txt").read_bytes()
        try:
            __import__(GENUINE).boom()
        except ValueError as exc:
            with _callerfs.caller_cwd():
                traceback.format_exception(type(exc), exc, exc.__traceback__)
        for name in (ONLY_IN_TARGET, EXTENSION, ZIPPED):
            import_error(name)
        return {"opened": opened}

    assert container.run(body)["opened"] == []


def test_linecache_reads_regular_files_only_and_caps_the_size(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.py"
    os.mkfifo(fifo)
    big = tmp_path / "big.py"
    with big.open("wb") as file:
        file.truncate(_callerfs.LINECACHE_MAX_BYTES + 1)
    small = tmp_path / "small.py"
    small.write_text("x = 1\n")

    def body() -> dict[str, Any]:
        import linecache

        return {str(p): linecache.getlines(str(p)) for p in (fifo, big, small)}

    def installed_then_body() -> dict[str, Any]:
        _callerfs.install(os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
        return body()

    assert in_child(installed_then_body) == {str(fifo): [], str(big): [], str(small): ["x = 1\n"]}


def test_open_regular_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for path in (str(tmp_path / "fifo"), "/dev/null", str(tmp_path)):
            for root_fd in (-1, root):
                with pytest.raises(OSError, match="not a regular file"):
                    _callerfs.open_regular(path, root_fd)
        (tmp_path / "f").write_bytes(b"12345")
        assert _callerfs.read_regular(str(tmp_path / "f"), root) == b"12345"
        with pytest.raises(OSError, match="larger than 4 bytes"):
            _callerfs.read_regular(str(tmp_path / "f"), root, max_size=4)
    finally:
        os.close(root)

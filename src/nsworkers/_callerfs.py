"""Imports and source lines resolve against the caller's filesystem, never the target's.

A worker that joins a mount namespace sees the target's files at every path
(a container chooses what lives at ``/usr/lib/python3*``, at a ``sys.path``
directory, even at the nsworkers package directory). Code it imports after the
join must still be the caller's code, or the container gets code execution as
host root. :func:`install`, called in the worker right *before* it joins the
mount namespace, makes that so for the rest of the process's life:

- the standard ``PathFinder`` (and every other finder that reads files) leaves
  ``sys.meta_path``; :class:`CallerPathFinder` takes its place and finds
  modules along the absolute ``sys.path`` entries, opening every directory and
  file with ``openat2(root_fd, path, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)``
  where ``root_fd`` is the caller's ``/`` taken before the join;
- source modules and packages (and their valid cached ``.pyc``), namespace
  packages, ``get_source``/``get_data`` and ``importlib.resources`` all read
  through that root; ``__file__`` and ``__path__`` are the caller's paths;
- extension modules and modules inside zip archives are refused with an
  ``ImportError`` that says why (the dynamic loader and ``zipimport`` open a
  path, which the kernel resolves in the target's view): import them before
  the join, ``Pool(preload=...)``;
- ``sys.path_hooks`` and ``sys.path_importer_cache`` are emptied, relative
  ``sys.path`` entries (``""``: the current directory) are not consulted;
- ``linecache`` (tracebacks, ``inspect.getsource``) reads through the same
  root, regular files only and at most :data:`LINECACHE_MAX_BYTES`, so a FIFO
  or a huge file planted at a source path cannot hang or bloat the worker;
  :func:`caller_cwd` keeps CPython's own reads of ``./<unknown>`` (3.13
  tracebacks) out of the target's working directory.

Not covered: bytecode-only modules (a ``.pyc`` without its source) are not
found; ``importlib.resources.as_file`` on a resource copies it to a temporary
file, which lands in the target's ``/tmp``; ``importlib.metadata`` finds no
distributions (the finder that read them is gone).
"""

from __future__ import annotations

import contextlib
import errno
import importlib.abc
import importlib.machinery
import importlib.util
import io
import os
import stat
import sys
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import IO, Any

from . import _sys

if sys.version_info >= (3, 11):
    from importlib.resources.abc import Traversable, TraversableResources
else:  # pragma: no cover
    from importlib.abc import Traversable, TraversableResources

__all__ = ("LINECACHE_MAX_BYTES", "CallerPathFinder", "caller_cwd", "install", "open_regular", "read_regular")

#: Source files larger than this are not shown in tracebacks (linecache gets no lines).
LINECACHE_MAX_BYTES = 8 << 20

_RESOLVE = _sys.RESOLVE_IN_ROOT | _sys.RESOLVE_NO_MAGICLINKS


# ---------------------------------------------------------------------------
# opening files as the caller sees them


def _relative(path: str) -> str:
    return path.lstrip("/") or "."


def open_in_root(root_fd: int, path: str, flags: int) -> int:
    """Open *path* (absolute, or relative to ``/``) under *root_fd*; ``..`` and symlinks cannot leave it.

    With *root_fd* < 0 it is a plain ``open``. The fd is ``O_CLOEXEC``.
    """
    if root_fd < 0:
        return os.open(path, flags | os.O_CLOEXEC)
    return _sys.openat2(root_fd, _relative(path), flags | os.O_CLOEXEC, _RESOLVE)


def stat_in_root(root_fd: int, path: str) -> os.stat_result:
    """``stat`` of *path* under *root_fd*, following symlinks inside it; opens nothing for I/O."""
    fd = open_in_root(root_fd, path, os.O_PATH)
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def open_regular(path: str, root_fd: int = -1) -> int:
    """Open the regular file *path* for reading under *root_fd* (plainly when < 0).

    Probed with ``O_PATH`` first: a FIFO, device or directory raises
    ``OSError`` without ever being opened for I/O. The file is then opened
    ``O_NONBLOCK | O_NOCTTY`` and must be the one probed (a swap in between
    raises ``OSError(EAGAIN)``). The fd is ``O_CLOEXEC``.
    """
    probed = stat_in_root(root_fd, path)
    if not stat.S_ISREG(probed.st_mode):
        raise OSError(errno.EINVAL, f"not a regular file: {path}")
    fd = open_in_root(root_fd, path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    now = os.fstat(fd)
    if (now.st_dev, now.st_ino) != (probed.st_dev, probed.st_ino):
        os.close(fd)
        raise OSError(errno.EAGAIN, f"{path} was replaced while it was opened")
    return fd


def read_regular(path: str, root_fd: int = -1, max_size: int | None = None) -> bytes:
    """The bytes of the regular file *path* under *root_fd*; ``OSError(EFBIG)`` past *max_size*."""
    return _read(open_regular(path, root_fd), path, max_size)[1]


def _read(fd: int, path: str, max_size: int | None) -> tuple[os.stat_result, bytes]:
    """Read all of *fd* (closed after), refusing more than *max_size* bytes."""
    with open(fd, "rb", closefd=True) as file:
        st = os.fstat(fd)
        if max_size is not None and st.st_size > max_size:
            raise OSError(errno.EFBIG, f"{path} is larger than {max_size} bytes")
        data = file.read() if max_size is None else file.read(max_size + 1)
    if max_size is not None and len(data) > max_size:  # it grew after fstat
        raise OSError(errno.EFBIG, f"{path} is larger than {max_size} bytes")
    return st, data


# ---------------------------------------------------------------------------
# the finder


class _Directory:
    """A cached listing of one directory under the root, refreshed when its ctime/mtime changes."""

    __slots__ = ("key", "names")

    def __init__(self, key: tuple[int, int, int, int], names: frozenset[str]) -> None:
        self.key = key
        self.names = names


class CallerPathFinder(importlib.abc.MetaPathFinder):
    """Finds modules along ``sys.path`` (or a package's ``__path__``) as the caller's root shows them."""

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd
        self._listings: dict[str, _Directory] = {}
        self._zips: dict[str, tuple[tuple[int, int, int, int], frozenset[str]]] = {}

    def invalidate_caches(self) -> None:
        self._listings.clear()
        self._zips.clear()

    def _stat(self, path: str) -> os.stat_result | None:
        try:
            return stat_in_root(self.root_fd, path)
        except (OSError, ValueError):
            return None

    def _listing(self, path: str) -> frozenset[str] | None:
        """Names in directory *path*, or None when it is not a directory."""
        try:
            fd = open_in_root(self.root_fd, path, os.O_RDONLY | os.O_DIRECTORY)
        except (OSError, ValueError):
            return None
        try:
            st = os.fstat(fd)
            key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
            cached = self._listings.get(path)
            if cached is not None and cached.key == key:
                return cached.names
            try:
                names = frozenset(os.listdir(fd))
            except OSError:
                return None
        finally:
            os.close(fd)
        self._listings[path] = _Directory(key, names)
        return names

    def _zip_names(self, path: str) -> frozenset[str]:
        """Member names of the zip archive *path* (read through the root), empty if it is none."""
        import zipfile

        st = self._stat(path)
        if st is None or not stat.S_ISREG(st.st_mode):
            return frozenset()
        key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._zips.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            with os.fdopen(open_regular(path, self.root_fd), "rb") as file, zipfile.ZipFile(file) as archive:
                names = frozenset(archive.namelist())
        except (OSError, zipfile.BadZipFile, ValueError):
            names = frozenset()
        self._zips[path] = (key, names)
        return names

    def _is_file(self, path: str) -> bool:
        st = self._stat(path)
        return st is not None and stat.S_ISREG(st.st_mode)

    def _file_spec(self, fullname: str, path: str, package_dir: str | None) -> importlib.machinery.ModuleSpec | None:
        """The spec for file *path* (``package_dir``: it is that package's ``__init__``), by suffix."""
        if not self._is_file(path):
            return None
        locations = None if package_dir is None else [package_dir]
        if path.endswith(tuple(importlib.machinery.SOURCE_SUFFIXES)):
            loader: importlib.abc.Loader = CallerSourceLoader(self.root_fd, fullname, path)
        else:
            loader = _RefusingLoader(fullname, path, "it is an extension module, which the dynamic loader")
        return importlib.util.spec_from_file_location(
            fullname, path, loader=loader, submodule_search_locations=locations
        )

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        tail = fullname.rpartition(".")[2]
        suffixes = [*importlib.machinery.EXTENSION_SUFFIXES, *importlib.machinery.SOURCE_SUFFIXES]
        portions: list[str] = []
        for entry in sys.path if path is None else path:
            if not isinstance(entry, str) or not os.path.isabs(entry):
                continue  # "" and relative entries: the worker's cwd is not the caller's
            names = self._listing(entry)
            if names is None:
                zipped = self._zip_names(entry)
                if zipped & {f"{tail}.py", f"{tail}/__init__.py", f"{tail}.pyc", f"{tail}/__init__.pyc"}:
                    loader = _RefusingLoader(fullname, entry, "it is inside a zip archive, which zipimport")
                    return importlib.machinery.ModuleSpec(fullname, loader, origin=entry)
                continue
            base = os.path.join(entry, tail)
            if tail in names:  # the order FileFinder uses: package, then module, then namespace portion
                inside = self._listing(base)
                if inside is not None:
                    for suffix in suffixes:
                        if f"__init__{suffix}" in inside:
                            spec = self._file_spec(fullname, os.path.join(base, f"__init__{suffix}"), base)
                            if spec is not None:
                                return spec
                    portions.append(base)
            for suffix in suffixes:
                if tail + suffix in names:
                    spec = self._file_spec(fullname, base + suffix, None)
                    if spec is not None:
                        return spec
        if portions:
            spec = importlib.machinery.ModuleSpec(fullname, _NamespaceLoader(self.root_fd, portions), is_package=True)
            spec.submodule_search_locations = portions
            return spec
        return None


# ---------------------------------------------------------------------------
# loaders


class _RefusingLoader(importlib.abc.Loader):
    """Stands for a module that exists in the caller's view but cannot be loaded safely here."""

    def __init__(self, fullname: str, path: str, why: str) -> None:
        self.fullname = fullname
        self.path = path
        self.why = why

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        top = self.fullname.partition(".")[0]
        raise ImportError(
            f"cannot import {self.fullname!r} ({self.path}) in a worker that joined a mount namespace: "
            f"{self.why} would open by path in the target's filesystem; "
            f"import it before the join instead, e.g. Pool(preload=[{top!r}])",
            name=self.fullname,
            path=self.path,
        )

    def exec_module(self, module: ModuleType) -> None:  # pragma: no cover - create_module raised
        raise ImportError(f"cannot import {self.fullname!r}", name=self.fullname)


class CallerSourceLoader(importlib.abc.SourceLoader):
    """Loads a source module, and its valid cached bytecode, through the caller's root; never writes."""

    def __init__(self, root_fd: int, fullname: str, path: str) -> None:
        self.root_fd = root_fd
        self.name = fullname
        self.path = path

    def get_filename(self, fullname: str | None = None) -> str:
        return self.path

    def get_data(self, path: str) -> bytes:
        return read_regular(path, self.root_fd)

    def path_stats(self, path: str) -> dict[str, Any]:
        st = stat_in_root(self.root_fd, path)
        return {"mtime": st.st_mtime, "size": st.st_size}

    def set_data(self, path: str, data: bytes, *, _mode: int = 0o666) -> None:
        """Bytecode is never written: the worker's filesystem is the target's."""

    def get_resource_reader(self, fullname: str) -> TraversableResources | None:
        if not self.is_package(fullname):
            return None
        return _Resources(CallerPath(self.root_fd, os.path.dirname(self.path)))


class _NamespaceLoader(importlib.abc.Loader):
    """A namespace package whose portions are directories under the caller's root."""

    def __init__(self, root_fd: int, portions: list[str]) -> None:
        self.root_fd = root_fd
        self.portions = portions

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        pass

    def is_package(self, fullname: str) -> bool:
        return True

    def get_source(self, fullname: str) -> str:
        return ""

    def get_resource_reader(self, fullname: str) -> TraversableResources:
        return _Resources(CallerPath(self.root_fd, self.portions[0]))


class _Resources(TraversableResources):
    def __init__(self, path: CallerPath) -> None:
        self.path = path

    def files(self) -> CallerPath:
        return self.path


class CallerPath(Traversable):
    """An ``importlib.resources`` path that reads the caller's file at the same name."""

    def __init__(self, root_fd: int, path: str) -> None:
        self.root_fd = root_fd
        self.path = path

    def __repr__(self) -> str:
        return f"CallerPath({self.path!r})"

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    def iterdir(self) -> Iterator[CallerPath]:
        fd = open_in_root(self.root_fd, self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            names = sorted(os.listdir(fd))
        finally:
            os.close(fd)
        return (CallerPath(self.root_fd, os.path.join(self.path, name)) for name in names)

    def _mode(self) -> int:
        try:
            return stat_in_root(self.root_fd, self.path).st_mode
        except OSError:
            return 0

    def is_dir(self) -> bool:
        return stat.S_ISDIR(self._mode())

    def is_file(self) -> bool:
        return stat.S_ISREG(self._mode())

    def joinpath(self, *descendants: str) -> CallerPath:
        return CallerPath(self.root_fd, os.path.join(self.path, *(os.fspath(d) for d in descendants)))

    def __truediv__(self, child: str) -> CallerPath:
        return self.joinpath(child)

    def read_bytes(self) -> bytes:
        return read_regular(self.path, self.root_fd)

    def read_text(self, encoding: str | None = None) -> str:
        return self.read_bytes().decode(encoding or "utf-8")

    def open(self, mode: str = "r", *args: Any, **kwargs: Any) -> IO[Any]:
        if mode not in ("r", "rb"):
            raise ValueError(f"read-only: mode {mode!r}")
        data = io.BytesIO(self.read_bytes())
        return data if mode == "rb" else io.TextIOWrapper(data, *args, **kwargs)


# ---------------------------------------------------------------------------
# linecache


def _source_lines(root_fd: int, path: str) -> tuple[os.stat_result, list[str]] | None:
    import tokenize

    try:
        st, data = _read(open_regular(path, root_fd), path, LINECACHE_MAX_BYTES)
    except (OSError, ValueError):
        return None
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        text = data.decode(encoding)
    except (SyntaxError, UnicodeDecodeError, LookupError):
        return None
    lines = text.splitlines(keepends=True) or ["\n"]
    if not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    return st, lines


def _install_linecache(root_fd: int) -> None:
    """Replace ``linecache.updatecache``/``checkcache`` with versions that read through *root_fd*."""
    import linecache

    cache: dict[Any, Any] = linecache.cache

    def updatecache(filename: str, module_globals: dict[str, Any] | None = None) -> list[str]:
        if filename in cache and len(cache[filename]) != 1:
            cache.pop(filename, None)
        if not filename or not isinstance(filename, str) or (filename.startswith("<") and filename.endswith(">")):
            return []
        if os.path.isabs(filename):
            candidates = [filename]
        else:
            candidates = [os.path.join(d, filename) for d in sys.path if isinstance(d, str) and os.path.isabs(d)]
        for fullname in candidates:
            found = _source_lines(root_fd, fullname)
            if found is not None:
                st, lines = found
                cache[filename] = (st.st_size, st.st_mtime, lines, fullname)
                return lines
        # Only loaders of this module read through the root; any other loader opens a path in the target.
        spec = (module_globals or {}).get("__spec__")
        loader = getattr(spec, "loader", None)
        if isinstance(loader, CallerSourceLoader) and loader.path == filename:
            try:
                source = loader.get_source(loader.name)
            except (ImportError, OSError):
                source = None
            if source:
                cache[filename] = (len(source), None, [line + "\n" for line in source.splitlines()], filename)
                return list(cache[filename][2])
        cache.pop(filename, None)
        return []

    def checkcache(filename: str | None = None) -> None:
        names = list(cache) if filename is None else [filename] if filename in cache else []
        for name in names:
            entry = cache.get(name)
            if entry is None or len(entry) == 1 or entry[1] is None:
                continue
            size, mtime, _, fullname = entry
            try:
                st = stat_in_root(root_fd, fullname)
            except (OSError, ValueError):
                cache.pop(name, None)
                continue
            if (size, mtime) != (st.st_size, st.st_mtime):
                cache.pop(name, None)

    # Lazy entries call loaders that may read the target's files; drop them.
    for key in [k for k, v in cache.items() if len(v) == 1]:
        del cache[key]
    linecache.updatecache = updatecache
    linecache.checkcache = checkcache

    def lazycache(filename: str, module_globals: dict[str, Any] | None) -> bool:
        return False

    linecache.lazycache = lazycache


# ---------------------------------------------------------------------------


_root_fd = -1


@contextlib.contextmanager
def caller_cwd() -> Iterator[None]:
    """Run the block with the working directory at the caller's ``/``, then go back.

    CPython itself opens relative paths named after pseudo-files: a
    ``SyntaxError`` from ``compile(..., "<unknown>")`` (which 3.13's
    traceback formatting raises and catches while placing its carets) reads
    ``./<unknown>`` with a blocking ``fopen``. After a mount-namespace join
    the working directory is the target's ``/``, where a container can leave
    a FIFO by that name. Format tracebacks inside this block. Without
    :func:`install` it changes nothing.
    """
    if _root_fd < 0:
        yield
        return
    here = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fchdir(_root_fd)
        yield
    finally:
        os.fchdir(here)
        os.close(here)


def install(root_fd: int) -> None:
    """From now on resolve imports and source lines through *root_fd*, the caller's ``/``.

    Call it in the worker right before joining a mount namespace, with an
    ``O_PATH | O_DIRECTORY`` fd of ``/`` taken before the join; the fd must stay
    open for the life of the process. Builtin and frozen modules still load;
    every other finder leaves ``sys.meta_path``. Irreversible by design.
    Raises ``OSError`` (ENOSYS) on a kernel without ``openat2`` (Linux < 5.6),
    before changing anything.
    """
    import tokenize  # noqa: F401 - used by linecache after the join
    import zipfile  # noqa: F401 - the finder reads zip archives' member lists

    os.close(open_in_root(root_fd, "/", os.O_PATH))  # loads ctypes now: the finder cannot import its own needs
    global _root_fd
    _root_fd = root_fd
    finder = CallerPathFinder(root_fd)
    keep = (importlib.machinery.BuiltinImporter, importlib.machinery.FrozenImporter)
    sys.meta_path[:] = [f for f in sys.meta_path if f in keep] + [finder]
    sys.path_hooks.clear()
    sys.path_importer_cache.clear()
    _install_linecache(root_fd)

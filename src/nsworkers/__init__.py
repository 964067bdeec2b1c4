"""Run Python callables inside Linux namespaces, without ever moving the caller.

Each namespace gets its own worker process that joined it once; calls travel
over a private channel::

    import nsworkers

    with nsworkers.Pool() as pool:
        links = pool.run("/run/netns/blue", socket.if_nameindex)

Importing this package is cheap: pyroute2, psutil and dill load only when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from . import netlink as netlink
    from . import netns as netns
    from ._attribution import Attribution as Attribution
    from ._discover import DiscoveredNamespace as DiscoveredNamespace
    from ._discover import discover as discover
    from ._find import find as find
    from ._inspect import inspect as inspect
    from ._inspect import network_namespaces as network_namespaces
    from ._namespace import SO_MARK as SO_MARK
    from ._namespace import Namespace as Namespace
    from ._namespace import NamespaceType as NamespaceType
    from ._pool import Pool as Pool
    from ._pool import PoolOptions as PoolOptions
    from ._pool import Target as Target
    from ._pool import WorkerInfo as WorkerInfo
    from ._pool import default_pool as default_pool
    from ._pool import run as run
    from ._topology import Topology as Topology
    from ._topology import topology as topology
    from ._watch import watch as watch
    from .errors import AmbiguousContainerError as AmbiguousContainerError
    from .errors import InvalidTargetError as InvalidTargetError
    from .errors import LinkNotFoundError as LinkNotFoundError
    from .errors import NamespaceClosedError as NamespaceClosedError
    from .errors import NamespaceError as NamespaceError
    from .errors import NamespaceExistsError as NamespaceExistsError
    from .errors import NamespaceJoinError as NamespaceJoinError
    from .errors import NamespaceNotFoundError as NamespaceNotFoundError
    from .errors import NamespacePermissionError as NamespacePermissionError
    from .errors import NamespaceTypeError as NamespaceTypeError
    from .errors import NetlinkWriteError as NetlinkWriteError
    from .errors import NotANamespaceError as NotANamespaceError
    from .errors import NsWorkersError as NsWorkersError
    from .errors import PoolClosedError as PoolClosedError
    from .errors import ProtocolError as ProtocolError
    from .errors import RemoteError as RemoteError
    from .errors import RemoteTraceback as RemoteTraceback
    from .errors import SerializationError as SerializationError
    from .errors import WorkerCrashedError as WorkerCrashedError
    from .errors import WorkerError as WorkerError
    from .errors import WorkerStartError as WorkerStartError
    from .errors import WorkerStateError as WorkerStateError
    from .errors import WorkerTimeoutError as WorkerTimeoutError

__version__ = "0.1.0"

_LAZY = {
    "SO_MARK": ("._namespace", "SO_MARK"),
    "Namespace": ("._namespace", "Namespace"),
    "NamespaceType": ("._namespace", "NamespaceType"),
    "Pool": ("._pool", "Pool"),
    "PoolOptions": ("._pool", "PoolOptions"),
    "Target": ("._pool", "Target"),
    "WorkerInfo": ("._pool", "WorkerInfo"),
    "default_pool": ("._pool", "default_pool"),
    "run": ("._pool", "run"),
    "AmbiguousContainerError": (".errors", "AmbiguousContainerError"),
    "InvalidTargetError": (".errors", "InvalidTargetError"),
    "LinkNotFoundError": (".errors", "LinkNotFoundError"),
    "NamespaceClosedError": (".errors", "NamespaceClosedError"),
    "NamespaceError": (".errors", "NamespaceError"),
    "NamespaceExistsError": (".errors", "NamespaceExistsError"),
    "NamespaceJoinError": (".errors", "NamespaceJoinError"),
    "NamespaceNotFoundError": (".errors", "NamespaceNotFoundError"),
    "NamespacePermissionError": (".errors", "NamespacePermissionError"),
    "NamespaceTypeError": (".errors", "NamespaceTypeError"),
    "NetlinkWriteError": (".errors", "NetlinkWriteError"),
    "NotANamespaceError": (".errors", "NotANamespaceError"),
    "NsWorkersError": (".errors", "NsWorkersError"),
    "PoolClosedError": (".errors", "PoolClosedError"),
    "ProtocolError": (".errors", "ProtocolError"),
    "RemoteError": (".errors", "RemoteError"),
    "RemoteTraceback": (".errors", "RemoteTraceback"),
    "SerializationError": (".errors", "SerializationError"),
    "WorkerCrashedError": (".errors", "WorkerCrashedError"),
    "WorkerError": (".errors", "WorkerError"),
    "WorkerStartError": (".errors", "WorkerStartError"),
    "WorkerStateError": (".errors", "WorkerStateError"),
    "WorkerTimeoutError": (".errors", "WorkerTimeoutError"),
    "inspect": ("._inspect", "inspect"),
    "discover": ("._discover", "discover"),
    "Attribution": ("._attribution", "Attribution"),
    "DiscoveredNamespace": ("._discover", "DiscoveredNamespace"),
    "network_namespaces": ("._inspect", "network_namespaces"),
    "watch": ("._watch", "watch"),
    "find": ("._find", "find"),
    "Topology": ("._topology", "Topology"),
    "topology": ("._topology", "topology"),
    "netlink": (".netlink", None),
    "netns": (".netns", None),
    "cli": (".cli", None),
}


def __getattr__(name: str) -> object:
    # Everything loads on first use: `import nsworkers` stays cheap, and the zygote,
    # which imports nsworkers._worker, does not pull in the pool (and threading):
    # a module that registers an at-fork hook costs every forked worker page faults.
    if name not in _LAZY:
        raise AttributeError(f"module 'nsworkers' has no attribute {name!r}")
    import importlib

    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name, __name__)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = (
    "SO_MARK",
    "AmbiguousContainerError",
    "Attribution",
    "DiscoveredNamespace",
    "InvalidTargetError",
    "LinkNotFoundError",
    "Namespace",
    "NamespaceClosedError",
    "NamespaceError",
    "NamespaceExistsError",
    "NamespaceJoinError",
    "NamespaceNotFoundError",
    "NamespacePermissionError",
    "NamespaceType",
    "NamespaceTypeError",
    "NetlinkWriteError",
    "NotANamespaceError",
    "NsWorkersError",
    "Pool",
    "PoolClosedError",
    "PoolOptions",
    "ProtocolError",
    "RemoteError",
    "RemoteTraceback",
    "SerializationError",
    "Target",
    "Topology",
    "WorkerCrashedError",
    "WorkerError",
    "WorkerInfo",
    "WorkerStartError",
    "WorkerStateError",
    "WorkerTimeoutError",
    "default_pool",
    "discover",
    "find",
    "inspect",
    "netlink",
    "netns",
    "network_namespaces",
    "run",
    "topology",
    "watch",
)

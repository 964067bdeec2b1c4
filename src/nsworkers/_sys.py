"""Thin wrappers around the Linux system calls nsworkers needs.

Python 3.12 has ``os.setns``; older versions go through ctypes, which is
imported only when one of these wrappers is first used, so ``import
nsworkers`` stays cheap.
"""

from __future__ import annotations

import _thread
import errno
import fcntl
import os
import socket
from typing import Any

NSFS_MAGIC = 0x6E736673
PROC_SUPER_MAGIC = 0x9FA0

NS_GET_USERNS = 0xB701
NS_GET_PARENT = 0xB702
NS_GET_NSTYPE = 0xB703

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NAME = 15

# openat2(2) resolve flags, include/uapi/linux/openat2.h
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

# System call numbers shared by every architecture (include/uapi/asm-generic/unistd.h).
SYS_PIDFD_OPEN = 434
SYS_OPENAT2 = 437
SYS_PIDFD_GETFD = 438

_libc: Any = None


def _get_libc() -> Any:
    global _libc
    if _libc is None:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _check(ret: int) -> int:
    if ret == -1:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def setns(fd: int, nstype: int = 0) -> None:
    """Move the calling thread into the namespace behind *fd*."""
    if hasattr(os, "setns"):
        os.setns(fd, nstype)
    else:  # Python < 3.12
        _check(_get_libc().setns(fd, nstype))


def unshare(flags: int) -> None:
    """Move the calling process into new namespaces of the ``CLONE_NEW*`` *flags*."""
    if hasattr(os, "unshare"):
        os.unshare(flags)
    else:  # Python < 3.12
        _check(_get_libc().unshare(flags))


def set_host_names(name: str) -> None:
    """Set the UTS namespace's host name and NIS domain name to *name* (``sethostname``, ``setdomainname``)."""
    socket.sethostname(name)
    raw = name.encode()
    _check(_get_libc().setdomainname(raw, len(raw)))


def prctl(option: int, arg: int | bytes) -> None:
    """Call ``prctl(option, arg, 0, 0, 0)``."""
    _check(_get_libc().prctl(option, arg, 0, 0, 0))


def set_process_name(name: str) -> None:
    """Name the calling thread (what ``ps -o comm``/``top`` show); 15 bytes at most."""
    prctl(PR_SET_NAME, name.encode()[:15])


def fstatfs_type(fd: int) -> int:
    """Return ``f_type`` of the filesystem holding *fd* (``fstatfs(2)``)."""
    import ctypes

    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit
    _check(_get_libc().fstatfs(fd, buf))
    return ctypes.c_long.from_buffer(buf).value


def ns_ioctl(fd: int, request: int) -> int:
    """Issue an argument-less nsfs ioctl; returns its result (an int or an fd)."""
    return fcntl.ioctl(fd, request)


def nstype_of_fd(fd: int) -> int | None:
    """The ``CLONE_NEW*`` type of namespace *fd*, or None if the kernel lacks NS_GET_NSTYPE."""
    try:
        return ns_ioctl(fd, NS_GET_NSTYPE)
    except OSError as exc:
        if exc.errno in (errno.ENOTTY, errno.EINVAL):
            return None
        raise


def recv_fds(sock: socket.socket, bufsize: int, maxfds: int) -> tuple[bytes, list[int], int, Any]:
    """``socket.recv_fds`` with ``MSG_CMSG_CLOEXEC``: received fds are close-on-exec from the start.

    (``socket.recv_fds`` on Python < 3.12 ignores its *flags* argument.)
    """
    import array

    fds = array.array("i")
    msg, ancdata, flags, addr = sock.recvmsg(bufsize, socket.CMSG_LEN(maxfds * fds.itemsize), socket.MSG_CMSG_CLOEXEC)
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    return msg, list(fds), flags, addr


def pidfd_getfd(pidfd: int, pid: int, fd: int) -> int:
    """Duplicate *fd* of process *pid* into this process, close-on-exec (``pidfd_getfd(2)``, Linux 5.6+).

    Through *pidfd* when there is one (no pid-reuse race), else a pidfd opened now.
    """
    import ctypes

    own = pidfd < 0
    if own:
        pidfd = os.pidfd_open(pid)
    try:
        libc = _get_libc()
        libc.syscall.restype = ctypes.c_long
        new = libc.syscall(ctypes.c_long(SYS_PIDFD_GETFD), ctypes.c_int(pidfd), ctypes.c_int(fd), ctypes.c_uint(0))
        if new < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"pidfd_getfd from process {pid}: {os.strerror(err)}")
        return int(new)
    finally:
        if own:
            os.close(pidfd)


def openat2(dir_fd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """``openat2(2)`` (Linux 5.6+): open *path* relative to *dir_fd* under the *resolve* restrictions."""
    import ctypes

    class OpenHow(ctypes.Structure):
        _fields_ = (("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64))

    how = OpenHow(flags, mode, resolve)
    libc = _get_libc()
    libc.syscall.restype = ctypes.c_long
    fd = libc.syscall(
        ctypes.c_long(SYS_OPENAT2),
        ctypes.c_int(dir_fd),
        ctypes.c_char_p(os.fsencode(path)),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    return _check(int(fd))


# ---------------------------------------------------------------------------
# seccomp: make a namespace change impossible
#
# Constants, each from the kernel header that defines it:
#   include/uapi/linux/seccomp.h   SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, SECCOMP_RET_*
#   include/uapi/linux/filter.h    struct sock_filter / sock_fprog; BPF_* via include/uapi/linux/bpf_common.h
#   include/uapi/linux/audit.h     AUDIT_ARCH_* (EM_* from include/uapi/linux/elf-em.h)
#   include/uapi/linux/sched.h     CLONE_NEW*
#   syscall numbers: arch/x86/entry/syscalls/syscall_64.tbl and syscall_32.tbl,
#   include/uapi/asm-generic/unistd.h (arm64), arch/arm/tools/syscall.tbl (arm64's 32-bit compat)

SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000

BPF_LD, BPF_JMP, BPF_RET, BPF_ALU = 0x00, 0x05, 0x06, 0x04
BPF_W, BPF_ABS, BPF_K = 0x00, 0x20, 0x00
BPF_JEQ, BPF_JSET, BPF_AND = 0x10, 0x40, 0x50

# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6] (little-endian: low word first)
_SECCOMP_NR, _SECCOMP_ARCH, _SECCOMP_ARG0_LOW = 0, 4, 16

AUDIT_ARCH_X86_64 = 0xC000003E  # EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
AUDIT_ARCH_I386 = 0x40000003  # EM_386 | __AUDIT_ARCH_LE
AUDIT_ARCH_AARCH64 = 0xC00000B7  # EM_AARCH64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
AUDIT_ARCH_ARM = 0x40000028  # EM_ARM | __AUDIT_ARCH_LE
X32_SYSCALL_BIT = 0x40000000  # arch/x86/include/uapi/asm/unistd.h: x32 calls carry AUDIT_ARCH_X86_64

CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
#: clone(2) cannot ask for CLONE_NEWTIME: that bit is part of its exit-signal byte (CSIGNAL).
_CLONE_NEW_MASK = (
    CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET
)
_UNSHARE_NEW_MASK = _CLONE_NEW_MASK | CLONE_NEWTIME

#: Per audit arch: (setns, unshare, clone, clone3) numbers; the seccomp syscall's own number by machine.
_SYSCALLS = {
    AUDIT_ARCH_X86_64: (308, 272, 56, 435),
    AUDIT_ARCH_I386: (346, 310, 120, 435),
    AUDIT_ARCH_AARCH64: (268, 97, 220, 435),
    AUDIT_ARCH_ARM: (375, 337, 120, 435),
}
_HOSTS = {"x86_64": ((AUDIT_ARCH_X86_64, AUDIT_ARCH_I386), 317), "aarch64": ((AUDIT_ARCH_AARCH64, AUDIT_ARCH_ARM), 277)}


def namespace_filter(arches: tuple[int, ...]) -> list[tuple[int, int, int, int]]:
    """The BPF program (``struct sock_filter`` tuples) of :func:`deny_namespace_changes` for *arches*.

    setns -> EPERM; unshare or clone asking for any new namespace -> EPERM;
    clone3 -> ENOSYS (its flags sit behind a pointer the filter cannot read;
    glibc then falls back to clone); a call of any other arch -> EPERM.
    """
    program: list[tuple[int, int | str, int | str, int]] = []  # jumps by label, resolved below
    labels: dict[str, int] = {}

    def emit(code: int, k: int, jt: int | str = 0, jf: int | str = 0) -> None:
        program.append((code, jt, jf, k))

    def label(name: str) -> None:
        labels[name] = len(program)

    load, ret, jeq = BPF_LD | BPF_W | BPF_ABS, BPF_RET | BPF_K, BPF_JMP | BPF_JEQ | BPF_K
    emit(load, _SECCOMP_ARCH)
    for arch in arches:
        emit(jeq, arch, jt=f"arch {arch:#x}")
    emit(ret, SECCOMP_RET_ERRNO | errno.EPERM)
    for arch in arches:
        setns_nr, unshare_nr, clone_nr, clone3_nr = _SYSCALLS[arch]
        label(f"arch {arch:#x}")
        emit(load, _SECCOMP_NR)
        if arch == AUDIT_ARCH_X86_64:
            emit(BPF_ALU | BPF_AND | BPF_K, ~X32_SYSCALL_BIT & 0xFFFFFFFF)
        emit(jeq, setns_nr, jt="eperm")
        emit(jeq, clone3_nr, jt="enosys")
        emit(jeq, unshare_nr, jt="unshare")
        emit(jeq, clone_nr, jt="clone")
        emit(ret, SECCOMP_RET_ALLOW)
    for name, mask in (("unshare", _UNSHARE_NEW_MASK), ("clone", _CLONE_NEW_MASK)):
        label(name)
        emit(load, _SECCOMP_ARG0_LOW)  # flags: every CLONE_NEW* bit is in the low word
        emit(BPF_JMP | BPF_JSET | BPF_K, mask, jt="eperm")
        emit(ret, SECCOMP_RET_ALLOW)
    label("eperm")
    emit(ret, SECCOMP_RET_ERRNO | errno.EPERM)
    label("enosys")
    emit(ret, SECCOMP_RET_ERRNO | errno.ENOSYS)

    def offset(at: int, jump: int | str) -> int:
        return jump if isinstance(jump, int) else labels[jump] - at - 1

    return [(code, offset(i, jt), offset(i, jf), k) for i, (code, jt, jf, k) in enumerate(program)]


_filter_call: tuple[Any, int, Any] | None = None


def _namespace_filter_call() -> tuple[Any, int, Any] | None:
    """``(libc.syscall, seccomp's number, the filter program)``, built once; None on an unknown machine.

    The zygote builds it before forking (``prepare_namespace_filter``), so a
    worker's cold start only makes the system call: building it (two ctypes
    classes, the program, its array) took about 0.2 ms, more in a fresh fork.
    """
    global _filter_call
    if _filter_call is not None:
        return _filter_call
    import ctypes

    host = _HOSTS.get(os.uname().machine)
    if host is None or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    arches, seccomp_nr = host

    class SockFilter(ctypes.Structure):
        _fields_ = (("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32))

    class SockFprog(ctypes.Structure):
        _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter)))

    program = namespace_filter(arches)
    filters = (SockFilter * len(program))(*(SockFilter(*insn) for insn in program))
    prog = SockFprog(len(program), filters)
    syscall = _get_libc().syscall
    syscall.restype = ctypes.c_long
    _filter_call = (syscall, seccomp_nr, prog)
    return _filter_call


def prepare_namespace_filter() -> None:
    """Build what :func:`deny_namespace_changes` needs now, in a process that forks workers."""
    _namespace_filter_call()


def rehearse_namespace_filter() -> None:
    """Touch what :func:`deny_namespace_changes` will (a spare's copy-on-write pages), without the system call."""
    prepared = _namespace_filter_call()
    if prepared is not None:
        import ctypes

        ctypes.c_long(prepared[1]), ctypes.c_uint(SECCOMP_SET_MODE_FILTER), ctypes.byref(prepared[2])


def deny_namespace_changes() -> bool:
    """Make it impossible for this process to change any namespace: True if done, False if not possible here.

    Installs a seccomp filter on every thread (``SECCOMP_FILTER_FLAG_TSYNC``):
    ``setns`` fails with EPERM, so do ``unshare`` and ``clone`` with any
    ``CLONE_NEW*`` flag; ``clone3`` fails with ENOSYS so that glibc falls back
    to ``clone`` (threads, ``os.fork`` and ``subprocess`` keep working).
    ``unshare`` of anything else (``CLONE_FILES``, ``CLONE_FS``) still works.

    The filter cannot be removed and is inherited by every child and across
    ``execve``: a subprocess of the callable cannot ``unshare`` or ``nsenter``
    either. That is the price of "impossible". ``PR_SET_NO_NEW_PRIVS`` is not
    set (it would change what setuid programs run by the callable do), so the
    kernel requires ``CAP_SYS_ADMIN`` in the current user namespace: without
    it (EACCES), on a kernel without seccomp filters (EINVAL), when another
    thread carries a different filter (TSYNC failure) or on a machine other
    than x86_64/aarch64, nothing is installed and the result is False, for the
    caller to fall back to checking ``/proc/self/ns`` after each call.
    """
    import ctypes

    prepared = _namespace_filter_call()
    if prepared is None:
        return False
    syscall, seccomp_nr, prog = prepared
    ret = int(
        syscall(
            ctypes.c_long(seccomp_nr),
            ctypes.c_uint(SECCOMP_SET_MODE_FILTER),
            ctypes.c_uint(SECCOMP_FILTER_FLAG_TSYNC),
            ctypes.byref(prog),
        )
    )
    if ret == 0:
        return True
    if ret > 0:  # TSYNC: the id of a thread that could not be synchronized
        return False
    err = ctypes.get_errno()
    if err in (errno.EACCES, errno.EINVAL, errno.ENOSYS):
        return False
    raise OSError(err, f"seccomp(SECCOMP_SET_MODE_FILTER): {os.strerror(err)}")


# -- run in a worker by Pool.socket() / Pool._take_fds(): here, not in _pool, because a worker
#    unpickling a function of _pool would import _pool (threads, futures) into every worker


def new_socket_fd(family: int, kind: int, proto: int) -> tuple[None, list[int]]:
    """A new socket's fd, left open for the caller to duplicate."""
    return None, [socket.socket(family, kind, proto).detach()]


def close_fds(fds: list[int]) -> None:
    """Close the fds the caller has taken copies of."""
    for fd in fds:
        os.close(fd)


class Gate:
    """A one-shot event whose wait is one C-level lock acquire, which a signal handler's exception cannot corrupt.

    ``threading.Event.wait`` and ``Condition.wait`` run Python code around
    their locks. A signal handler's exception (Ctrl-C, a SIGTERM handler)
    landing there in the main thread can leave a lock held -- the thread
    that would wake the waiter then blocks for ever -- or release one twice
    (``RuntimeError: release unlocked lock``, or worse, another thread's
    hold released). Here the waiter blocks in ``lock.acquire`` itself: an
    exception can only end the wait.
    """

    __slots__ = ("_done", "_lock")

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self._lock.acquire()
        self._done = False

    def set(self) -> None:
        """Open the gate (once; later calls do nothing)."""
        if not self._done:
            self._done = True
            try:
                self._lock.release()
            except RuntimeError:  # two setters raced: the first one opened it
                pass

    def is_set(self) -> bool:
        return self._done

    def wait(self, timeout: float | None = None) -> bool:
        """True once the gate is open; False if *timeout* seconds passed first."""
        if self._done:
            return True
        wait = -1 if timeout is None else min(max(timeout, 0.0), _thread.TIMEOUT_MAX)
        if self._lock.acquire(True, wait):
            self._lock.release()  # open for any other waiter too
            return True
        return self._done

"""Frames and serialization on a worker channel, including a misbehaving peer (property tests)."""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nsworkers import ProtocolError, SerializationError
from nsworkers._messages import CALL, DILL, HEADER, OK, PICKLE, Channel, ChannelClosed, channel_pipes, dumps, loads


@pytest.fixture
def pair() -> Iterator[tuple[Channel, Channel]]:
    ours, theirs = channel_pipes()
    a, b = Channel(*ours), Channel(*theirs)
    yield a, b
    a.close()
    b.close()


def module_level(x: int) -> int:
    return x + 1


def test_codecs() -> None:
    assert dumps((module_level, (1,), {}))[0] == PICKLE
    assert dumps(lambda: 1)[0] == DILL
    codec, data = dumps(lambda x: x * 3)
    assert loads(codec, data)(2) == 6
    # A string that merely mentions __main__ takes the slow path but stays plain pickle.
    assert dumps("__main__")[0] == PICKLE
    with pytest.raises(SerializationError):
        dumps(threading.Lock())
    with pytest.raises(SerializationError):
        loads(PICKLE, b"not a pickle")


def test_roundtrip_small_and_large(pair: tuple[Channel, Channel]) -> None:
    a, b = pair
    for size in (0, 1, 100, (1 << 16) - 1, 1 << 16, 5 << 20):
        payload = os.urandom(size)
        sender = threading.Thread(target=a.send, args=(CALL, size, PICKLE, payload))
        sender.start()
        kind, request_id, codec, got = b.recv()
        sender.join()
        assert (kind, request_id, codec, bytes(got)) == (CALL, size, PICKLE, payload)


def test_two_frames_in_one_read(pair: tuple[Channel, Channel]) -> None:
    a, b = pair
    os.write(a.wfd, HEADER.pack(3, PICKLE, OK, 7) + b"abc" + HEADER.pack(2, DILL, OK, 8) + b"de")
    assert [(i, c, bytes(p)) for _, i, c, p in (b.recv(), b.recv())] == [(7, PICKLE, b"abc"), (8, DILL, b"de")]


def test_eof_and_truncation(pair: tuple[Channel, Channel]) -> None:
    a, b = pair
    os.write(a.wfd, HEADER.pack(10, PICKLE, OK, 1) + b"abc")
    os.close(a.wfd)
    a.wfd = -1
    with pytest.raises(ChannelClosed):
        b.recv()


def test_timeout(pair: tuple[Channel, Channel]) -> None:
    import time

    _, b = pair
    with pytest.raises(TimeoutError):
        b.recv(deadline=time.monotonic() + 0.05)


def test_garbage_header(pair: tuple[Channel, Channel]) -> None:
    a, b = pair
    os.write(a.wfd, struct.pack("<QBBI", 5, 99, OK, 1) + b"hello")
    with pytest.raises(ProtocolError):
        b.recv()


def test_oversized_frame_is_refused(pair: tuple[Channel, Channel]) -> None:
    a, b = pair
    b.max_frame = 1 << 20
    os.write(a.wfd, HEADER.pack(1 << 40, PICKLE, OK, 1))
    with pytest.raises(ProtocolError):
        b.recv()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.booleans())
def test_garbage_never_crashes_or_hangs(data: bytes, close: bool) -> None:
    ours, theirs = channel_pipes()
    a, b = Channel(*ours), Channel(*theirs)
    b.max_frame = 1 << 16
    try:
        os.write(a.wfd, data)
        if close:
            os.close(a.wfd)
            a.wfd = -1
        import time

        try:
            _, _, codec, payload = b.recv(deadline=time.monotonic() + 0.05)
            loads(codec, payload)
        except (ProtocolError, ChannelClosed, TimeoutError, SerializationError):
            pass
    finally:
        a.close()
        b.close()


def test_deadlines_work_past_fd_setsize() -> None:
    # A pool with many workers holds channel fds above 1024, where select() cannot go.
    import fcntl
    import time

    ours, theirs = channel_pipes()
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 1100 + i) for i, fd in enumerate(ours)]
    for fd in ours:
        os.close(fd)
    a, b = Channel(*high), Channel(*theirs)
    try:
        assert a.rfd >= 1024
        with pytest.raises(TimeoutError):
            a.recv(deadline=time.monotonic() + 0.05)
        b.send(OK, 1, PICKLE, b"x")
        assert bytes(a.recv(deadline=time.monotonic() + 5)[3]) == b"x"
    finally:
        a.close()
        b.close()


def test_a_partial_write_sends_only_the_rest() -> None:
    # A pipe with little room left takes part of a small frame: the rest must follow, not the whole
    # frame again (an unprivileged user past pipe-user-pages-soft gets one-page pipes).
    import fcntl

    ours, theirs = channel_pipes()
    fcntl.fcntl(ours[1], fcntl.F_SETPIPE_SZ, 8192)  # two page slots
    a = Channel(ours[0], ours[1], pidfd=os.pidfd_open(os.getpid()))  # a caller's side: non-blocking writes
    b = Channel(*theirs)
    try:
        os.write(a.wfd, b"\0" * 4096)  # one slot left: a larger write takes one page of it
        payload = os.urandom(10_000)  # above PIPE_BUF: a non-blocking write may take part of it
        sender = threading.Thread(target=a.send, args=(CALL, 9, PICKLE, payload))
        sender.start()
        while a.unsent_bytes() < 8192:  # the sender filled the pipe: part of the frame is in
            assert sender.is_alive()
        assert os.read(b.rfd, 4096) == b"\0" * 4096
        assert b.recv()[1:] == (9, PICKLE, payload)
        sender.join()
    finally:
        a.close()
        b.close()

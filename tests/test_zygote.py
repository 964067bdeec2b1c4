"""The zygote's bookkeeping, driven in-process with a real child."""

from __future__ import annotations

import os
import pickle
import signal
import socket
import time

from nsworkers._messages import CONTROL_BUFFER, Reaped, ReapRequest
from nsworkers._zygote import _Zygote


def test_a_status_kept_for_a_reused_pid_does_not_answer_for_the_live_process() -> None:
    # Pids wrap: a stopped worker's status may still be kept when a new worker gets its pid.
    # A kill request for the new one must kill it, not return the old status.
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        time.sleep(60)
        os._exit(0)
    try:
        zygote = _Zygote(theirs, spares=0)
        zygote.statuses[child] = 0  # "exited with code 0" from an earlier process with this pid
        zygote.live.add(child)
        zygote.reap(ReapRequest(1, child, True))
        reply = pickle.loads(ours.recv(CONTROL_BUFFER))
        assert isinstance(reply, Reaped)
        assert reply.killed and reply.status is not None and os.WTERMSIG(reply.status) == signal.SIGKILL
    finally:
        try:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        ours.close()
        theirs.close()

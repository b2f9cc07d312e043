"""Every message between the owner, its zygote and the workers: layouts, request bytes, statuses.

Three channels, each with one owner on each end:

    owner ── zygote socket (SOCK_SEQPACKET) ──▶ zygote
        ANCHOR        the unit's anchor: its pid, then its executable's path
        READY         the zygote's report: (kind, step, arg, errno); then SPARE_FORKED. Before
                      it, MOVED (arg: a pid) when the zygote re-created itself in the unit's
                      cgroup: from then on the zygote is that process
        WORKER  + fds [status_w, call_r, result_w]    fork a pool worker
        PROCESS + fds [status_w, data_r, passed...]   fork a multiprocessing Process
    zygote ── status pipe (one per worker) ──▶ owner
        the worker's pid (or -errno if the fork failed), later its exit status: one SIGNED each
    owner ── call pipe ──▶ worker      CALL_* frames, then STOP (or EOF)
    worker ── result pipe ──▶ owner    RESULT, EXCEPTION or INIT_FAILED frames

A frame is a FRAME header (payload length, kind, work id) and its payload. The owner writes the
call pipe and reads only the result pipe of each worker, without blocking on it, with a size cap
per frame (see _channel): what a worker writes there is data from a unit, never trusted.
"""

from __future__ import annotations

import os
import select
import struct
import time

from ._entry import ENTER_FAILED_EXIT_STATUS as ENTER_FAILED_EXIT_STATUS  # with the others below

# -- the zygote socket ----------------------------------------------------------------------------
ANCHOR = struct.Struct("=i")
READY = struct.Struct("=iiii")
CONFINED, FILTERS_PER_WORKER, FAILED, OUTSIDE, NO_PLAN, THREADED, MOVED = 0, 1, 2, 3, 4, 5, 6
SPARE_FORKED = b"s"
WORKER, PROCESS, TRIAL = b"w", b"p", b"t"
#: the most fds one request passes
MAX_FDS = 64

# -- status pipes ---------------------------------------------------------------------------------
SIGNED = struct.Struct("q")
#: seconds the owner waits for the zygote's answer (a pid, an exit status) before it gives up on
#: it: the zygote's workers run as the unit's user and can stop it (SIGSTOP)
ZYGOTE_TIMEOUT = 10.0

# -- exit statuses --------------------------------------------------------------------------------
#: a worker that could not enter the unit (or finish its entry) exits with
#: ENTER_FAILED_EXIT_STATUS (the entry core's; re-exported here with the others)
#: a worker that was never forked: the status its owner-side handle reports
NOT_FORKED_EXIT_STATUS = 255
#: a zygote that failed before it could report why
ZYGOTE_FAILED_EXIT_STATUS = 70

# -- worker frames ---------------------------------------------------------------------------------
FRAME = struct.Struct("=QBq")   # payload length, kind, work id
# owner -> worker
CALL_PLAIN, CALL_CLOUD, STOP = 2, 3, 4
# worker -> owner
RESULT, EXCEPTION, INIT_FAILED = 16, 17, 18
WORKER_KINDS = frozenset({RESULT, EXCEPTION, INIT_FAILED})


def write_signed(fd: int, n: int) -> None:
    os.write(fd, SIGNED.pack(n))


def read_signed(fd: int, timeout: float | None = None) -> int:
    """One SIGNED from a pipe, waiting at most ``timeout`` seconds (None: for ever).

    Raises:
        EOFError: the writer closed it first.
        TimeoutError: nothing came in time (the zygote is stopped, or hung).
    """
    data = b""
    deadline = None if timeout is None else time.monotonic() + timeout
    while len(data) < SIGNED.size:
        if deadline is not None and not select.select(
                [fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            raise TimeoutError(f"the zygote did not answer within {timeout:g} s")
        chunk = os.read(fd, SIGNED.size - len(data))
        if not chunk:
            raise EOFError("the zygote closed the status pipe")
        data += chunk
    status: int = SIGNED.unpack(data)[0]
    return status


def frame(kind: int, work_id: int, payload: bytes = b"") -> bytes:
    """One frame, header and payload."""
    return FRAME.pack(len(payload), kind, work_id) + payload


def write_all(fd: int, data: bytes) -> None:
    """Writes all of ``data`` to a blocking fd (a worker's result pipe)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def read_exactly(fd: int, n: int) -> bytes | None:
    """``n`` bytes from a blocking fd, or None at EOF before the first byte.

    Raises:
        EOFError: the writer closed the pipe in the middle.
    """
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            if got:
                raise EOFError(f"the pipe closed {got} bytes into a {n}-byte read")
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_frame(fd: int) -> tuple[int, int, bytes] | None:
    """The next (kind, work id, payload) from a blocking fd (the worker's call pipe, whose writer
    is the owner), or None at EOF."""
    header = read_exactly(fd, FRAME.size)
    if header is None:
        return None
    length, kind, work_id = FRAME.unpack(header)
    payload = read_exactly(fd, length) if length else b""
    if payload is None:
        raise EOFError("the pipe closed between a frame's header and its payload")
    return kind, work_id, payload

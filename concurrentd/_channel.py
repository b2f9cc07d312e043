"""The owner's end of one worker's channel: its call pipe (written) and result pipe (read).

Both ends are non-blocking and only the pool's manager thread touches them, so no worker can stall
the owner: a frame is read as its bytes arrive, never more than ``max_frame`` bytes are held for
one frame, and a worker that stops in the middle of a frame is found by ``stalled_since``. Calls
wait in an outbox until the pipe takes them, so a large call never blocks the results of others.

The owner holds no write end of the result pipe: a worker that dies is EOF at once.
"""

from __future__ import annotations

import fcntl
import os
import time
from typing import Iterator

from . import _protocol as P

_READ_SIZE = 1 << 16
#: pipe capacity asked for (fewer wakeups for large results); the kernel may give less
_PIPE_SIZE = 1 << 20


class ProtocolError(Exception):
    """A worker wrote something on its result pipe that no worker of ours writes."""


def _nonblocking(fd: int) -> None:
    os.set_blocking(fd, False)


def _grow(fd: int) -> None:
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
    except OSError:   # above /proc/sys/fs/pipe-max-size for this user: the default will do
        pass


class Channel:
    """One worker's pipes, owner side.

    Args:
        call_fd: the write end of the worker's call pipe.
        result_fd: the read end of its result pipe.
        max_frame: the most bytes one frame from the worker may carry.
    """

    def __init__(self, call_fd: int, result_fd: int, max_frame: int):
        self.call_fd, self.result_fd = call_fd, result_fd
        self.max_frame = max_frame
        _nonblocking(call_fd)
        _nonblocking(result_fd)
        _grow(result_fd)
        self._outbox = bytearray()
        self._inbox = bytearray()
        self._need = P.FRAME.size      # bytes that complete the frame being read
        self._header: tuple[int, int, int] | None = None
        self.eof = False
        #: while a frame is half-read: when its last bytes came
        self.stalled_since: float | None = None
        self.closed_calls = False

    # -- calls ---------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        """Queues ``data`` (whole frames) and writes what the pipe takes now."""
        if self.closed_calls:
            return
        self._outbox += data
        self.flush()

    def wants_to_write(self) -> bool:
        return bool(self._outbox) and not self.closed_calls

    def flush(self) -> None:
        """Writes as much of the outbox as the pipe takes without blocking."""
        while self._outbox:
            try:
                n = os.write(self.call_fd, self._outbox)
            except BlockingIOError:
                return
            except BrokenPipeError:   # the worker is gone: its exit is seen on the result pipe
                self._outbox.clear()
                return
            del self._outbox[:n]

    def close_calls(self) -> None:
        """EOF on the worker's call pipe: it returns from its loop (pending calls are dropped)."""
        if not self.closed_calls:
            self.closed_calls = True
            self._outbox.clear()
            os.close(self.call_fd)

    # -- results -------------------------------------------------------------------------------
    def receive(self) -> Iterator[tuple[int, int, bytes]]:
        """The (kind, work id, payload) frames complete so far, reading what the pipe has now.

        Raises:
            ProtocolError: a frame's kind is not a worker's, or it is larger than max_frame.
        """
        while not self.eof:
            try:
                chunk = os.read(self.result_fd, max(_READ_SIZE, min(self._need, _PIPE_SIZE)))
            except BlockingIOError:
                break
            if not chunk:
                self.eof = True
                break
            self._inbox += chunk
            self.stalled_since = time.monotonic()   # progress: the clock starts again
            yield from self._frames()
            if len(chunk) < _READ_SIZE:
                break
        if not self.mid_frame():
            self.stalled_since = None

    def _frames(self) -> Iterator[tuple[int, int, bytes]]:
        inbox = self._inbox
        while len(inbox) >= self._need:
            if self._header is None:
                length, kind, work_id = P.FRAME.unpack_from(inbox)
                if kind not in P.WORKER_KINDS:
                    raise ProtocolError(f"a frame of unknown kind {kind}")
                if length > self.max_frame:
                    raise ProtocolError(f"a frame of {length} bytes, more than the pool's "
                                        f"max_result_size ({self.max_frame} bytes)")
                del inbox[:P.FRAME.size]
                self._header = (length, kind, work_id)
                self._need = length
                continue
            length, kind, work_id = self._header
            payload = bytes(inbox[:length])
            del inbox[:length]
            self._header, self._need = None, P.FRAME.size
            yield kind, work_id, payload

    def mid_frame(self) -> bool:
        return bool(self._inbox) or self._header is not None

    def close(self) -> None:
        self.close_calls()
        if self.result_fd >= 0:
            os.close(self.result_fd)
            self.result_fd = -1

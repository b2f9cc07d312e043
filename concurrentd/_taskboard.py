"""What a worker is doing, seen by its owner even after the worker was killed.

Eight bytes of memory shared by the owner and one worker (a memfd the worker maps before it
enters the unit): the id of the work item it runs, IDLE, or SENDING once the task has returned.
When a worker dies, its board tells which task it took with it — the task to fail, while the
pool goes on, with on_worker_death="replace". A plain store per task: no system call.
"""

from __future__ import annotations

import mmap
import os
import struct

from multiprocessing import context

IDLE, SENDING = -1, -2
_STATE = struct.Struct("q")

# In a worker: its board, so that a task can say it has returned (see _payload).
current: "TaskBoard | None" = None


class TaskBoard:
    def __init__(self, fd: int | None = None):
        self._fd: int | None = None
        if fd is None:
            self._fd = fd = os.memfd_create("concurrentd-taskboard", os.MFD_CLOEXEC)
            os.ftruncate(fd, _STATE.size)
        self._map = mmap.mmap(fd, _STATE.size)
        self.set(IDLE)

    def set(self, state: int) -> None:
        _STATE.pack_into(self._map, 0, state)

    def get(self) -> int:
        return _STATE.unpack_from(self._map, 0)[0]

    def close_fd(self) -> None:
        """The owner's fd is needed only until the worker has it; the mapping stays."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __reduce__(self):
        popen = context.get_spawning_popen()
        if popen is None or self._fd is None:
            raise TypeError("a TaskBoard is only sent to the worker it belongs to, at its launch")
        return _attach, (popen.DupFd(popen.duplicate_for_child(self._fd)),)


def _attach(dupfd) -> TaskBoard:
    fd = dupfd.detach()
    try:
        return TaskBoard(fd)
    finally:
        os.close(fd)


class RecordingQueue:
    """The worker's view of the call queue: each get() notes the work item on the board."""

    def __init__(self, queue, board: TaskBoard):
        self._queue, self._board = queue, board

    def get(self, block: bool = True, timeout: float | None = None):
        self._board.set(IDLE)
        item = self._queue.get(block, timeout)
        if item is not None:
            self._board.set(item.work_id)
        return item

    def __getattr__(self, name):
        return getattr(self._queue, name)

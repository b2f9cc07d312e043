"""A multiprocessing context whose processes are forked by a pool's zygote and start in its unit.

This is the narrowest seam ProcessPoolExecutor offers: it only calls ``mp_context.Process(...)``,
``.Queue()`` and ``.SimpleQueue()``. The Process class below differs from multiprocessing's own
only in its Popen, whose launch hands the pickled Process object to the zygote (as the
"forkserver" start method hands it to its server).
"""

from __future__ import annotations

import io
import os

from multiprocessing import context, popen_fork, process, reduction, util

from . import _zygote
from ._taskboard import TaskBoard
from ._zygote import Zygote

START_METHOD = "concurrentd"


class _DupFd:
    """An fd handed to the worker; resolved there through the list the zygote passed along."""

    def __init__(self, index: int):
        self.index = index

    def detach(self) -> int:
        return _zygote.inherited_fds[self.index]


class ZygotePopen(popen_fork.Popen):
    method = START_METHOD
    DupFd = _DupFd

    def __init__(self, process_obj, zygote: Zygote):
        self._fds: list[int] = []
        self._zygote = zygote
        super().__init__(process_obj)

    def duplicate_for_child(self, fd: int) -> int:
        self._fds.append(fd)
        return len(self._fds) - 1

    def _launch(self, process_obj) -> None:
        buf = io.BytesIO()
        context.set_spawning_popen(self)
        try:
            reduction.dump({}, buf)   # no preparation data: the worker is a fork of the owner
            reduction.dump(process_obj, buf)
        finally:
            context.set_spawning_popen(None)
        data_w, self.sentinel = self._zygote.launch(self._fds)
        # The worker sees EOF on its end of the data pipe when the owner is gone
        # (multiprocessing.parent_process().is_alive()); keep a copy of the write end open.
        keep_w = os.dup(data_w)
        self.finalizer = util.Finalize(self, util.close_fds, (keep_w, self.sentinel))
        with open(data_w, "wb", closefd=True) as f:
            f.write(buf.getbuffer())
        self.pid = _zygote.read_signed(self.sentinel)
        if process_obj._board is not None:
            process_obj._board.close_fd()   # the worker has its own now

    def poll(self, flag: int = os.WNOHANG):
        if self.returncode is None:
            from multiprocessing.connection import wait

            if not wait([self.sentinel], 0 if flag == os.WNOHANG else None):
                return None
            try:
                self.returncode = _zygote.read_signed(self.sentinel)
            except (OSError, EOFError):
                self.returncode = 255   # the zygote itself died
        return self.returncode


class UnitProcess(process.BaseProcess):
    """multiprocessing's Process, started by a zygote (set as ``_zygote`` before start())."""

    # None: _bootstrap() must not look the start method up among multiprocessing's own
    _start_method = None
    _zygote: Zygote | None = None
    _board: TaskBoard | None = None   # what the worker is doing, where tracked (see _taskboard)

    def _Popen(self, process_obj):   # BaseProcess.start() calls self._Popen(self)
        if self._zygote is None:
            raise RuntimeError("this process belongs to no pool (no zygote to fork it)")
        return ZygotePopen(process_obj, self._zygote)

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_zygote", None)   # the owner's handle; the worker has no use for it
        return state


class UnitContext(context.BaseContext):
    """The context of one pool: its processes are forked by that pool's zygote."""

    _name = START_METHOD

    def __init__(self, zygote: Zygote, *, track_tasks: bool = False):
        self._zygote = zygote
        # Only on_worker_death="replace" reads a dead worker's board: elsewhere, spare each
        # worker a memfd and each task two stores.
        self._track_tasks = track_tasks

    def Process(self, *args, **kwargs) -> UnitProcess:   # noqa: N802 - multiprocessing's name
        p = UnitProcess(*args, **kwargs)
        p._zygote = self._zygote
        if self._track_tasks:
            p._board = TaskBoard()
        return p

    def get_start_method(self, allow_none: bool = False) -> str:
        return self._name

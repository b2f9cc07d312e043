"""A multiprocessing context whose processes are forked by a pool's zygote and start in its unit.

This is the narrowest seam ProcessPoolExecutor offers: it only calls ``mp_context.Process(...)``,
``.Queue()`` and ``.SimpleQueue()``. The Process class below differs from multiprocessing's own
only in its Popen, whose launch hands the pickled Process object to the zygote (as the
"forkserver" start method hands it to its server), and which signals its worker through a pidfd:
the pid comes from a zygote that lives inside the unit, so the owner checks it is that zygote's
child before it ever sends it a signal.
"""

from __future__ import annotations

import io
import itertools
import multiprocessing
import os
import pickle
import signal

from multiprocessing import context, popen_fork, process, reduction, synchronize, util

from . import _zygote
from ._entry.plan import parse_status
from ._taskboard import TaskBoard
from ._zygote import Zygote, ZygoteGone

START_METHOD = "concurrentd"
#: the exit code of a worker that was never forked (see ZygotePopen.not_forked)
NOT_FORKED_EXIT_STATUS = 255
_stillborn_ids = itertools.count(-1, -1)
_FORK_CONTEXT = multiprocessing.get_context("fork")


class _InheritingPickler(reduction.ForkingPickler):
    """Pickles the objects the zygote inherited (a pool's queues…) as references to them."""

    def __init__(self, file, keys: dict[int, int]):
        super().__init__(file, pickle.HIGHEST_PROTOCOL)
        self._keys = keys

    def persistent_id(self, obj):
        return self._keys.get(id(obj))


def _open_child_pidfd(pid: int, parent: int) -> int | None:
    """A pidfd on ``pid`` if it is (still) a child of ``parent``, else None: it has exited."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            ppid = int(parse_status(f.read()).get("PPid", -1))
    except (OSError, ValueError):
        ppid = -1
    if ppid != parent:   # exited, and the pid taken by another process since
        os.close(fd)
        return None
    return fd


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
        self._pidfd: int | None = None
        #: why the worker was never forked (the zygote is gone, its fork failed), or None
        self.not_forked: str | None = None
        super().__init__(process_obj)

    def duplicate_for_child(self, fd: int) -> int:
        self._fds.append(fd)
        return len(self._fds) - 1

    def _launch(self, process_obj) -> None:
        zygote = self._zygote
        buf = io.BytesIO()
        context.set_spawning_popen(self)
        try:
            if zygote.entered:
                _InheritingPickler(buf, zygote.keys).dump(process_obj)
            else:
                reduction.dump({}, buf)   # no preparation data: the worker is a fork of the owner
                reduction.dump(process_obj, buf)
        finally:
            context.set_spawning_popen(None)
        try:
            data_w, self.sentinel = zygote.launch(self._fds)
        except ZygoteGone as e:
            self._stillborn(str(e))
            return
        # The worker sees EOF on its end of the data pipe when the owner is gone
        # (multiprocessing.parent_process().is_alive()); keep a copy of the write end open.
        keep_w = os.dup(data_w)
        with open(data_w, "wb", closefd=True) as f:
            f.write(buf.getbuffer())
        try:
            pid = _zygote.read_signed(self.sentinel)
        except EOFError:   # it ended before it read the request (it could not enter the unit)
            pid = None
        if pid is None or pid < 0:
            os.close(keep_w)
            os.close(self.sentinel)
            self._stillborn("the zygote exited before it forked the worker" if pid is None
                            else f"the zygote's fork() failed: {os.strerror(-pid)}")
            return
        self.pid = pid
        self._pidfd = _open_child_pidfd(self.pid, zygote.pid)
        fds = (keep_w, self.sentinel) if self._pidfd is None else (keep_w, self.sentinel, self._pidfd)
        self.finalizer = util.Finalize(self, util.close_fds, fds)
        if process_obj._board is not None:
            process_obj._board.close_fd()   # the worker has its own now

    def _stillborn(self, why: str) -> None:
        """The worker could not be forked: a process that has already exited, which the pool's
        manager finds dead and diagnoses (see executor._UnitManagerThread)."""
        self.not_forked = why
        self.pid = next(_stillborn_ids)
        self.sentinel, w = os.pipe()
        _zygote.write_signed(w, NOT_FORKED_EXIT_STATUS)
        os.close(w)
        self.finalizer = util.Finalize(self, util.close_fds, (self.sentinel,))

    def _send_signal(self, sig: int) -> None:
        if self.returncode is None and self._pidfd is not None:
            try:
                signal.pidfd_send_signal(self._pidfd, sig)
            except ProcessLookupError:
                pass

    def poll(self, flag: int = os.WNOHANG):
        if self.returncode is None:
            from multiprocessing.connection import wait

            if not wait([self.sentinel], 0 if flag == os.WNOHANG else None):
                return None
            try:
                self.returncode = _zygote.read_signed(self.sentinel)
            except (OSError, EOFError):
                self.returncode = NOT_FORKED_EXIT_STATUS   # the zygote itself died
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

    def __init__(self, zygote: Zygote | None = None, *, track_tasks: bool = False):
        self.zygote = zygote   # a pool sets it once its queues exist (they are the zygote's)
        # Only on_worker_death="replace" reads a dead worker's board: elsewhere, spare each
        # worker a memfd and each task two stores.
        self._track_tasks = track_tasks

    def Process(self, *args, **kwargs) -> UnitProcess:   # noqa: N802 - multiprocessing's name
        p = UnitProcess(*args, **kwargs)
        p._zygote = self.zygote
        if self._track_tasks:
            p._board = TaskBoard()
        return p

    # The pool's queues are inherited by its zygote, never pickled: their semaphores are unlinked
    # at once, as with the "fork" start method (no name left in /dev/shm, no resource tracker
    # process to start, nothing for it to warn about).
    def Lock(self):   # noqa: N802
        return synchronize.Lock(ctx=_FORK_CONTEXT)

    def BoundedSemaphore(self, value: int = 1):   # noqa: N802
        return synchronize.BoundedSemaphore(value, ctx=_FORK_CONTEXT)

    def get_start_method(self, allow_none: bool = False) -> str:
        return self._name

"""multiprocessing's Process, forked by a zygote and started in its unit (TransientUnitProcess).

BaseProcess.start() calls ``self._Popen(self)``; the Popen below differs from multiprocessing's
fork Popen only in its launch, which hands the pickled Process object to the zygote (as the
"forkserver" start method hands it to its server), and in signalling its worker through a pidfd:
the pid comes from a zygote that may live inside the unit, so the owner checks it is that
zygote's child before it ever sends it a signal.
"""

from __future__ import annotations

import io
import itertools
import os
import signal
from multiprocessing import context, popen_fork, process, reduction, util
from typing import Any

from . import _protocol as P
from . import _zygote_loop
from ._zygote import Zygote, ZygoteGone

_stillborn_ids = itertools.count(-1, -1)


class _DupFd:
    """An fd handed to the worker; resolved there through the list the zygote passed along."""

    def __init__(self, index: int):
        self.index = index

    def detach(self) -> int:
        return _zygote_loop.inherited_fds[self.index]


class ZygotePopen(popen_fork.Popen):
    method = "concurrentd"
    DupFd = _DupFd

    def __init__(self, process_obj: process.BaseProcess, zygote: Zygote):
        self._fds: list[int] = []
        self._zygote = zygote
        self._pidfd: int | None = None
        #: why the worker was never forked (the zygote is gone, its fork failed), or None
        self.not_forked: str | None = None
        super().__init__(process_obj)

    def duplicate_for_child(self, fd: int) -> int:
        self._fds.append(fd)
        return len(self._fds) - 1

    def _launch(self, process_obj: process.BaseProcess) -> None:
        buf = io.BytesIO()
        # typeshed admits only multiprocessing's own spawning Popens; any with
        # duplicate_for_child() is one to reduction (as this one, like forkserver's)
        context.set_spawning_popen(self)   # type: ignore[arg-type]
        try:
            reduction.dump(process_obj, buf)
        finally:
            context.set_spawning_popen(None)
        data_r, data_w = os.pipe()
        try:
            self.sentinel = self._zygote.launch(P.PROCESS, [data_r, *self._fds])
        except ZygoteGone as e:
            os.close(data_w)
            self._stillborn(str(e))
            return
        finally:
            os.close(data_r)
        # The worker sees EOF on its end of the data pipe when the owner is gone
        # (multiprocessing.parent_process().is_alive()); keep a copy of the write end open.
        keep_w = os.dup(data_w)
        with open(data_w, "wb", closefd=True) as f:
            f.write(buf.getbuffer())
        try:
            pid = P.read_signed(self.sentinel, P.ZYGOTE_TIMEOUT)
        except (EOFError, TimeoutError):   # it ended (could not enter the unit), or hangs
            pid = None
        if pid is None or pid < 0:
            os.close(keep_w)
            os.close(self.sentinel)
            self._stillborn("the zygote exited before it forked the worker" if pid is None
                            else f"the zygote's fork() failed: {os.strerror(-pid)}")
            return
        self.pid = pid
        self._pidfd = self._zygote.child_pidfd(self.pid)
        fds = (keep_w, self.sentinel) if self._pidfd is None else (keep_w, self.sentinel, self._pidfd)
        # close_fds: CPython private (what popen_fork's own finalizer runs), not in typeshed
        self.finalizer = util.Finalize(self, util.close_fds, fds)   # type: ignore[attr-defined]

    def _stillborn(self, why: str) -> None:
        """The worker could not be forked: a process that has already exited."""
        self.not_forked = why
        self.pid = next(_stillborn_ids)
        self.sentinel, w = os.pipe()
        P.write_signed(w, P.NOT_FORKED_EXIT_STATUS)
        os.close(w)
        self.finalizer = util.Finalize(self, util.close_fds,   # type: ignore[attr-defined]
                                       (self.sentinel,))

    def _send_signal(self, sig: int) -> None:
        if self.returncode is None and self._pidfd is not None:
            try:
                signal.pidfd_send_signal(self._pidfd, sig)
            except ProcessLookupError:
                pass

    def poll(self, flag: int = os.WNOHANG) -> int | None:
        if self.returncode is None:
            from multiprocessing.connection import wait

            if not wait([self.sentinel], 0 if flag == os.WNOHANG else None):
                return None
            try:
                self.returncode = P.read_signed(self.sentinel)
            except (OSError, EOFError):
                self.returncode = P.NOT_FORKED_EXIT_STATUS   # the zygote itself died
        return self.returncode


class UnitProcess(process.BaseProcess):
    """multiprocessing's Process, started by a zygote (set as ``_zygote`` before start())."""

    # None: _bootstrap() must not look the start method up among multiprocessing's own
    _start_method = None
    _zygote: Zygote | None = None

    def _Popen(self, process_obj: process.BaseProcess) -> ZygotePopen:   # start() calls self._Popen(self)
        if self._zygote is None:
            raise RuntimeError("this process belongs to no unit (no zygote to fork it)")
        return ZygotePopen(process_obj, self._zygote)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_zygote", None)   # the owner's handle; the worker has no use for it
        return state

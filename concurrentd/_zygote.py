"""The zygote: a single-threaded process, forked from the pool's owner when the pool starts, from
which every worker is forked and then moved into the unit.

    owner (any threads)                zygote (one thread)              worker
    ───────────────────                ───────────────────              ──────
    ZygotePopen._launch:
      pickle the Process object
      send_fds(request, fds) ───────▶  fork() ───────────────────────▶  read the Process object
      write the pickle ──────────── data pipe ───────────────────────▶  enter(plan)   (C, no Python between syscalls)
      status pipe ◀───────────────── pid, later the exit status         Process._bootstrap()

Why a zygote: forking a process that has threads (the executor's manager and queue feeder threads)
can deadlock the child, and Python 3.12+ warns about it. The zygote is forked before the pool has
any thread, and it keeps the owner's loaded modules, so a worker starts as fast as a plain fork.

Nothing here allocates or pickles in the zygote beyond reading the request: the Process object is
unpickled by the worker itself, before it enters the unit (only the standard library's worker
function, queues and concurrentd's own task wrappers are in it: no user code runs before entry).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import struct
import sys

from . import _pythonpath, _sys, _taskboard
from ._entry import ENTER_FAILED_EXIT_STATUS, EnterError, EntryPlan, enter
from ._pythonpath import PathMap
from ._taskboard import RecordingQueue

_SIGNED = struct.Struct("q")
MAX_FDS = 64

# Set in a worker: the fds the owner passed along, in the order ZygotePopen.duplicate_for_child
# numbered them (multiprocessing's DupFd objects resolve through this list).
inherited_fds: list[int] = []


def write_signed(fd: int, n: int) -> None:
    os.write(fd, _SIGNED.pack(n))


def read_signed(fd: int) -> int:
    data = b""
    while len(data) < _SIGNED.size:
        chunk = os.read(fd, _SIGNED.size - len(data))
        if not chunk:
            raise EOFError("the zygote closed the status pipe")
        data += chunk
    return _SIGNED.unpack(data)[0]


class Zygote:
    """The owner's handle on its zygote."""

    def __init__(self, plan: EntryPlan, path_map: PathMap = ()):
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.pid = os.fork()
        if self.pid == 0:   # the zygote
            code = 70
            try:
                self._sock.close()
                code = _serve(theirs, plan, path_map)
            finally:
                os._exit(code)
        theirs.close()

    def launch(self, fds: list[int]) -> tuple[int, int]:
        """Asks for a worker; returns (data pipe write end, status pipe read end).

        The caller writes the pickled Process object to the data pipe, then reads the worker's pid
        and, once it has exited, its exit status from the status pipe.
        """
        data_r, data_w = os.pipe()
        status_r, status_w = os.pipe()
        try:
            socket.send_fds(self._sock, [b"w"], [data_r, status_w, *fds])
        except OSError as e:
            for fd in (data_r, data_w, status_r, status_w):
                os.close(fd)
            raise OSError(e.errno, f"the pool's zygote (pid {self.pid}) is gone: {e.strerror}") from None
        os.close(data_r)
        os.close(status_w)
        return data_w, status_r

    def close(self) -> None:
        """Ends the zygote (running workers are not touched) and reaps it."""
        if self.pid:
            self._sock.close()   # EOF: the zygote returns
            os.waitpid(self.pid, 0)
            self.pid = 0


def _serve(sock: socket.socket, plan: EntryPlan, path_map: PathMap) -> int:
    """The zygote's loop: fork a worker per request; report each worker's exit. Returns on EOF."""
    # If the owner dies without closing the pool, the zygote goes too (the anchor stops the unit).
    _sys.set_parent_death_signal(signal.SIGKILL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # ^C is the owner's to handle
    # Where the workers will import from inside the unit: computed once here, applied by each.
    rewrite = _pythonpath.Rewrite(path_map)
    sigchld_r, sigchld_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(sigchld_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    status_fds: dict[int, int] = {}   # worker pid -> status pipe write end
    while True:
        ready, _, _ = select.select([sock, sigchld_r], [], [])
        if sigchld_r in ready:
            while os.read(sigchld_r, 4096) == 4096:
                pass
            _reap(status_fds)
        if sock in ready:
            msg, fds, _, _ = socket.recv_fds(sock, 16, MAX_FDS)
            if not msg:
                return 0
            data_r, status_w, *passed = fds
            pid = os.fork()
            if pid == 0:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                for fd in (sock.detach(), sigchld_r, sigchld_w, *status_fds.values()):
                    os.close(fd)
                _worker(plan, rewrite, data_r, status_w, passed)   # never returns
            for fd in (data_r, *passed):
                os.close(fd)
            write_signed(status_w, pid)
            status_fds[pid] = status_w


def _reap(status_fds: dict[int, int]) -> None:
    while status_fds:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        w = status_fds.pop(pid, None)
        if w is not None:
            try:
                write_signed(w, os.waitstatus_to_exitcode(status))
            finally:
                os.close(w)


def _worker(plan: EntryPlan, rewrite: _pythonpath.Rewrite, data_r: int, status_w: int,
            passed: list[int]) -> None:
    """A freshly forked worker: take the Process object, enter the unit, run. Never returns."""
    code = 1
    try:
        os.close(status_w)
        inherited_fds[:] = passed
        from multiprocessing import reduction

        with open(data_r, "rb", closefd=False) as f:
            reduction.pickle.load(f)             # preparation data: a forked worker needs none
            process_obj = reduction.pickle.load(f)
        try:
            enter(plan)
        except EnterError as e:
            _answer_one_task(process_obj, e)
            code = ENTER_FAILED_EXIT_STATUS
        else:
            rewrite.apply()
            board = getattr(process_obj, "_board", None)
            if board is not None and process_obj._args:   # a pool's worker: note its tasks
                _taskboard.current = board
                process_obj._args = (RecordingQueue(process_obj._args[0], board),
                                     *process_obj._args[1:])
            code = process_obj._bootstrap(parent_sentinel=data_r)
    except BaseException:   # noqa: BLE001 - a worker must never return into the zygote's loop
        try:
            import traceback
            traceback.print_exc()
        finally:
            code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _answer_one_task(process_obj, error: EnterError) -> None:
    """A worker that could not enter the unit runs no user code, but it answers the next task with
    the EnterError, so that the caller learns why (the pool then breaks as the worker exits)."""
    from concurrent.futures.process import _sendback_result

    call_queue, result_queue = process_obj._args[0], process_obj._args[1]
    item = call_queue.get(block=True)   # the task's callable is not unpickled until it runs
    if item is not None:
        _sendback_result(result_queue, item.work_id, exception=error)
    result_queue.close()
    result_queue.join_thread()

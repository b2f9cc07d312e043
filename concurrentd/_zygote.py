"""The zygote: a single-threaded process, forked from the pool's owner, from which every worker
is forked.

A pool's zygote enters the unit itself, once, when the pool starts; each worker is then a plain
fork of a process that is already confined, and inherits that confinement from its first
instruction (seccomp filters, credentials, namespaces, cgroups: all are kept across fork):

    owner (no thread yet)               zygote                             worker
    ─────────────────────               ──────                             ──────
    begin_service(anchor) ──D-Bus──▶ systemd sets the unit up (~10 ms)
    Zygote(inherit=[queues…]):
      fork ───────────────────────────▶ close every fd it has no use for,
                                        wait for the anchor
    (JobRemoved) zygote.enter(pid) ───▶ EntryPlan.from_pid(anchor)
                                        enter(plan)  (C, once)
    await_entered ◀──────────────────── entered, or the EnterError
    its own plan (no seccomp filters)   fork() a spare ────────────────────▶ wait for a request
    await_ready ◀────────────────────── spare forked
    ZygotePopen._launch:
      pickle the Process object,
      queues as references ("inherit")
      send_fds(request, fds) ─────────▶ hand them to the spare ──────────▶ read the Process object
                                        (no spare: fork() now)
      write the pickle ─────────── data pipe ─────────────────────────────▶ (queues: the inherited ones)
      status pipe ◀─────────────────── pid, later the exit status          Process._bootstrap()

The pool's queues and initializer are objects of the owner's memory the zygote inherited by fork:
they are never pickled (their named semaphores need not be opened inside the unit, where /dev/shm
may be private and the user another), and nothing of the owner's is unpickled outside the unit.

Seccomp last, and only if it spares the zygote: a unit's filters may forbid what the zygote's own
loop needs (fork, wait4, recvmsg under SystemCallFilter=~@process). A trial child installs them and
serves one request; if it did not survive, the zygote stays unfiltered (it runs no user code, and
holds the unit's credentials and namespaces like any of its processes) and each worker installs the
filters right after its fork, before reading anything.

CPUSchedulingResetOnFork=: the kernel would give every fork of the zygote the default policy and
no negative nice, so the zygote takes the unit's policy without that flag and each worker adds it
to itself after its fork, before the filters (which then go per worker).

Without ``inherit`` (TransientUnitProcess in a unit of its own), the zygote stays outside and
each worker enters on its own after reading its Process object, as root, outside the unit.

Why a zygote at all: forking a process that has threads (the executor's manager and queue feeder
threads) can deadlock the child, and Python 3.12+ warns about it. The zygote is forked before the
pool has any thread, and it keeps the owner's loaded modules, so a worker starts as a plain fork.
"""

from __future__ import annotations

import errno
import os
import pickle
import select
import signal
import socket
import struct
import sys
from typing import Callable, Iterable, Sequence

from . import _pythonpath, _sys, _taskboard
from ._deaths import how_it_ended
from ._entry import (ENTER_FAILED_EXIT_STATUS, EnterError, EntryPlan, add_sched_reset, enter,
                     install_filters)
from ._entry.enter import enter_error
from ._pythonpath import PathMap
from ._taskboard import RecordingQueue

_SIGNED = struct.Struct("q")
MAX_FDS = 64
#: A trial that has not reported after this long counts as failed (its filters then go per worker).
TRIAL_TIMEOUT = 10.0

# The owner's first word to the zygote: the anchor's pid, then its executable's path.
_ANCHOR = struct.Struct("=i")
# The zygote's first word to the owner: (kind, step, arg, errno).
_READY = struct.Struct("=iiii")
_CONFINED, _FILTERS_PER_WORKER, _FAILED, _OUTSIDE, _NO_PLAN = 0, 1, 2, 3, 4
# A pool's zygote, once confined, then: its first worker-to-be is forked (see _Spare).
_SPARE_FORKED = b"s"

# Requests on the zygote's socket.
_WORKER, _TRIAL = b"w", b"t"

# Set in a worker: the fds the owner passed along, in the order ZygotePopen.duplicate_for_child
# numbered them (multiprocessing's DupFd objects resolve through this list).
inherited_fds: list[int] = []


class ZygoteGone(OSError):
    """The zygote cannot take requests anymore (it exited, or its unit stopped)."""


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
    """The owner's handle on its zygote.

    The zygote is forked at once, before the unit need exist (a pool forks it while systemd sets
    the unit up), and waits; enter() tells it the unit's anchor, whose state it reads into an
    entry plan of its own; await_ready() waits for its report.

    Args:
        path_map: where the owner's sys.path is found inside the unit (see _pythonpath).
        inherit: objects the workers take from the zygote's memory instead of unpickling them
            (a pool's queues and initializer). Given, the zygote enters the unit itself, once;
            None: it stays outside and each worker enters on its own.
        max_workers: with ``inherit``, the pool's size: while fewer workers run, the zygote
            keeps one forked ahead of its request (see _Spare).
    """

    def __init__(self, path_map: PathMap = (), *, inherit: Sequence[object] | None = None,
                 max_workers: int = 0):
        self.entered = inherit is not None
        self.inherit = list(inherit or ())
        #: id() of an inherited object -> its key (see ZygotePopen's pickler)
        self.keys = {id(obj): i for i, obj in enumerate(self.inherit)}
        #: with an entered zygote: each worker installs the unit's seccomp filters itself
        self.filters_per_worker = False
        self.status: int | None = None   # the zygote's exit status, once reaped
        self._report: bytes | None = None   # its _READY record, once received
        keep = {0, 1, 2, *_std_stream_fds(), *connection_fds(self.inherit)}
        # Where the workers will import from inside the unit: computed here, where reading every
        # module costs no copy-on-write fault (~1 ms less than in the zygote).
        rewrite = _pythonpath.Rewrite(path_map)
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        owner = os.getpid()
        self.pid = os.fork()
        if self.pid == 0:   # the zygote
            code = 70
            try:
                self._sock.close()
                code = _main(theirs, rewrite, self.entered, self.inherit,
                             keep | {theirs.fileno()}, owner, max_workers)
            finally:
                os._exit(code)
        theirs.close()
        self._pidfd = os.pidfd_open(self.pid)

    def enter(self, anchor_pid: int, anchor_exe: str) -> None:
        """Tells the zygote the unit's anchor (its MainPID and executable); returns at once."""
        try:
            self._sock.send(_ANCHOR.pack(anchor_pid) + os.fsencode(anchor_exe))
        except OSError:
            pass   # the zygote is gone: await_ready() says how it ended

    def await_entered(self) -> None:
        """Waits until the zygote has read the anchor (and entered the unit, if it is a pool's),
        successfully or not: await_ready() says which. A pool's zygote then forks its first
        worker-to-be, while the owner reads its own plan (read at the same time as the zygote's,
        the two would compete for the CPUs)."""
        if self._report is None:
            self._report = self._recv(_READY.size)

    def await_ready(self, plan: EntryPlan) -> None:
        """Waits until the zygote has read the anchor and, if it is a pool's, entered the unit and
        forked its first worker-to-be. ``plan``, the owner's own plan of the same anchor, names a
        failed step.

        Raises:
            EnterError: the zygote could not read the anchor or enter the unit; it has exited.
        """
        self.await_entered()
        data = self._report
        if len(data) != _READY.size:
            raise self._died("while entering")
        kind, step, arg, err = _READY.unpack(data)
        if kind == _NO_PLAN:
            self.close()
            raise EnterError("plan", err, f"the zygote could not read the unit's main process "
                                          f"(anchor pid {plan.anchor_pid}): {os.strerror(err)}"
                                          + (": it has exited" if err == errno.ESRCH else ""))
        if kind == _FAILED:
            self.close()
            raise enter_error(plan, step, arg, err)
        self.filters_per_worker = kind == _FILTERS_PER_WORKER
        if self.entered and self._recv(len(_SPARE_FORKED)) != _SPARE_FORKED:
            raise self._died("after entering")

    def _recv(self, size: int) -> bytes:
        """The zygote's next report; b"" once it is gone (a reset, if it died with a message of
        ours unread, is the same end)."""
        try:
            return self._sock.recv(size)
        except ConnectionResetError:
            return b""

    def _died(self, when: str) -> EnterError:
        """Reaps the zygote, which closed its socket; the EnterError that says how it ended."""
        self.close()
        return EnterError("zygote", 0, f"the pool's zygote died {when} the unit: it "
                                       + how_it_ended(self.status))

    def launch(self, fds: list[int]) -> tuple[int, int]:
        """Asks for a worker; returns (data pipe write end, status pipe read end).

        The caller writes the pickled Process object to the data pipe, then reads the worker's pid
        (or -errno if the zygote's fork failed, and then EOF) and, once the worker has exited, its
        exit status from the status pipe.

        Raises:
            ZygoteGone: the zygote has exited.
        """
        data_r, data_w = os.pipe()
        status_r, status_w = os.pipe()
        try:
            socket.send_fds(self._sock, [_WORKER], [data_r, status_w, *fds])
        except OSError as e:
            for fd in (data_r, data_w, status_r, status_w):
                os.close(fd)
            raise ZygoteGone(e.errno, f"the pool's zygote (pid {self.pid}) is gone: "
                                      f"{e.strerror}") from None
        os.close(data_r)
        os.close(status_w)
        return data_w, status_r

    def alive(self) -> bool:
        if self.status is not None:
            return False
        return not select.select([self._pidfd], [], [], 0)[0]

    def close(self) -> None:
        """Ends the zygote (running workers are not touched) and reaps it."""
        if self.status is None and self.pid:
            self._sock.close()   # EOF: the zygote returns
            self.status = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
            os.close(self._pidfd)


def connection_fds(objects: Iterable[object]) -> set[int]:
    """The fds of the multiprocessing Connections the objects hold (a Queue's pipe ends)."""
    from multiprocessing.connection import Connection

    fds = set()
    for obj in objects:
        for value in getattr(obj, "__dict__", {}).values():
            if isinstance(value, Connection) and not value.closed:
                fds.add(value.fileno())
    return fds


def _std_stream_fds() -> set[int]:
    """Where print() goes: sys.stdout may write to another fd than 1 (pytest's capture does)."""
    fds = set()
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        try:
            fds.add(stream.fileno())
        except (AttributeError, OSError, ValueError):
            pass
    return fds


def _close_fds_except(keep: set[int]) -> None:
    low = 0
    for fd in sorted(keep):
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))


def _main(sock: socket.socket, rewrite: _pythonpath.Rewrite, entered: bool, inherit: list,
          keep: set[int], owner: int, max_workers: int) -> int:
    """The zygote, from its fork to the owner's EOF. Returns its exit status."""
    # If the owner dies without closing the pool, the zygote goes too (the anchor stops the unit).
    _sys.set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != owner:
        return 0
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # ^C is the owner's to handle
    # A session of its own, as systemd gives a unit's process: no controlling terminal. A worker
    # in the owner's session could push input into the owner's terminal (TIOCSTI), open
    # /dev/tty, or get the terminal's job-control signals.
    os.setsid()
    # Nothing of the owner's reaches the unit but what a worker needs: not its D-Bus connection,
    # not its open files. (A process systemd starts in a unit has only stdin, stdout, stderr.)
    _close_fds_except(keep)
    if not select.select([sock], [], [], 0)[0]:   # the unit is not there yet
        EntryPlan.rehearse()
    msg = sock.recv(_ANCHOR.size + 4096)
    if not msg:   # the owner gave up before the unit ran
        return 0
    (anchor_pid,) = _ANCHOR.unpack_from(msg)
    try:
        plan = EntryPlan.from_pid(anchor_pid, anchor_exe=os.fsdecode(msg[_ANCHOR.size:]),
                                  owner_pid=owner)
    except (OSError, ValueError) as e:
        err = e.errno if isinstance(e, OSError) and e.errno else errno.EINVAL
        os.write(sock.fileno(), _READY.pack(_NO_PLAN, 0, 0, err))
        return ENTER_FAILED_EXIT_STATUS
    if not entered:
        return _serve(sock, lambda data_r, passed: _worker_outside(plan, rewrite, data_r, passed),
                      ready=lambda: os.write(sock.fileno(), _READY.pack(_OUTSIDE, 0, 0, 0)))
    try:
        # Without the reset-on-fork flag (CPUSchedulingResetOnFork=), which would give every
        # worker the default policy: each sets it on itself (see _finish_worker_entry).
        enter(plan, seccomp=False, sched_reset=False)
        rewrite.apply()
        _sys.set_parent_death_signal(signal.SIGKILL)   # the change of credentials cleared it
        if os.getppid() != owner:
            return 0
        # The flag is set after the fork, which the filters may forbid: then they come after it.
        per_worker = bool(plan.filters) and (plan.sched_resets_on_fork
                                             or not _filters_spare_the_zygote(plan))
        if plan.filters and not per_worker:
            install_filters(plan)
    except EnterError as e:
        step, arg, err = getattr(e, "_raw", (-1, 0, e.errno))
        os.write(sock.fileno(), _READY.pack(_FAILED, step, arg, err))
        return ENTER_FAILED_EXIT_STATUS
    os.write(sock.fileno(), _READY.pack(_FILTERS_PER_WORKER if per_worker else _CONFINED, 0, 0, 0))
    finish = per_worker or plan.sched_resets_on_fork
    return _serve(sock, lambda data_r, passed: _worker_inside(inherit, data_r, passed),
                  install=(lambda: _finish_worker_entry(plan, per_worker)) if finish else None,
                  max_workers=max_workers, ready=lambda: os.write(sock.fileno(), _SPARE_FORKED))


def _serve(sock: socket.socket, run_worker: Callable[[int, list[int]], None], *,
           install: Callable[[], None] | None = None, max_workers: int = 0,
           ready: Callable[[], object] | None = None) -> int:
    """The zygote's loop: a worker per request; report each worker's exit. Returns on EOF.

    ``run_worker(data_r, passed_fds)`` is a worker's body (it never returns); ``install`` what a
    new worker does first, before it reads anything. With ``max_workers``, one worker is kept
    forked ahead of its request (see _Spare) while fewer than that many run. ``ready`` is called
    once the first spare is there: the pool's first task then waits for no fork.
    """
    sigchld_r, sigchld_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(sigchld_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    status_fds: dict[int, int] = {}   # worker pid -> status pipe write end

    def become_worker() -> None:   # in a new fork: what is the zygote's is not the worker's
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd in (sock.detach(), sigchld_r, sigchld_w, *status_fds.values()):
            os.close(fd)
        if install is not None:
            install()

    spare = _Spare(max_workers, become_worker, run_worker)
    try:
        spare.refill(0)
        if ready is not None:
            ready()
        while True:
            spare.refill(len(status_fds))
            readable, _, _ = select.select([sock, sigchld_r], [], [])
            if sigchld_r in readable:
                while os.read(sigchld_r, 4096) == 4096:
                    pass
                _reap(status_fds, spare)
            if sock in readable:
                msg, fds, _, _ = socket.recv_fds(sock, 16, MAX_FDS)
                if not msg:
                    return 0
                data_r, status_w, *passed = fds
                pid = spare.take(data_r, passed)
                if not pid:
                    try:
                        pid = os.fork()
                    except OSError as e:   # e.g. EAGAIN: the unit's TasksMax=; the zygote goes on
                        for fd in (data_r, *passed):
                            os.close(fd)
                        write_signed(status_w, -e.errno)   # instead of a pid
                        os.close(status_w)
                        continue
                    if pid == 0:
                        if msg == _TRIAL:
                            os._exit(0)
                        os.close(status_w)
                        become_worker()
                        run_worker(data_r, passed)   # never returns
                for fd in (data_r, *passed):
                    os.close(fd)
                write_signed(status_w, pid)
                status_fds[pid] = status_w
    finally:
        spare.close()


class _Spare:
    """The zygote's worker-to-be, forked before anyone asks for it: a request then costs a
    message instead of a fork (benchmark cold_start, Process.start() to the worker's loop:
    2.76 ms without a spare, 1.24 ms with one).

    It is made while fewer than ``max_workers`` workers run, so it is always one of the pool's
    workers-to-come and takes no task under TasksMax= a worker would not take. It waits in
    recvmsg, already confined (with ``install`` done), for the request's fds; the zygote's EOF
    ends it. One that dies unasked, or cannot be forked, is not replaced until a worker exits:
    requests are then forked as they come.
    """

    def __init__(self, max_workers: int, become_worker: Callable[[], None],
                 run_worker: Callable[[int, list[int]], None]):
        self.max_workers = max_workers
        self._become_worker, self._run_worker = become_worker, run_worker
        self.pid = 0
        self._sock: socket.socket | None = None
        self.blocked = False

    def refill(self, workers: int) -> None:
        if self.pid or self.blocked or workers >= self.max_workers:
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid = os.fork()
        except OSError:
            ours.close()
            theirs.close()
            self.blocked = True
            return
        if pid == 0:
            ours.close()
            _run_and_exit(lambda: self._wait(theirs))
        theirs.close()
        self.pid, self._sock = pid, ours

    def _wait(self, sock: socket.socket) -> int:
        """In the spare: be a worker once a request comes; 0 if the zygote ends first."""
        self._become_worker()
        msg, fds, _, _ = socket.recv_fds(sock, 16, MAX_FDS)
        sock.close()
        if not msg:
            for fd in fds:
                os.close(fd)
            return 0
        data_r, *passed = fds
        self._run_worker(data_r, passed)   # never returns
        return 1

    def take(self, data_r: int, passed: list[int]) -> int:
        """Hands a request's fds to the spare; its pid, or 0 if there is none."""
        pid, sock = self.pid, self._sock
        if not pid:
            return 0
        self.pid, self._sock = 0, None
        try:
            socket.send_fds(sock, [_WORKER], [data_r, *passed])
        except OSError:   # it died unasked
            self.blocked = True
            return 0
        finally:
            sock.close()
        return pid

    def reaped(self, pid: int) -> bool:
        """A child was reaped: True if it was the spare (then gone, not replaced for now)."""
        if pid != self.pid:
            self.blocked = False   # a worker exited: room for a spare again
            return False
        self._sock.close()
        self.pid, self._sock, self.blocked = 0, None, True
        return True

    def close(self) -> None:
        if self.pid:
            self._sock.close()   # EOF: it exits
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
            self.pid, self._sock = 0, None


def _reap(status_fds: dict[int, int], spare: _Spare) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if spare.reaped(pid):
            continue
        w = status_fds.pop(pid, None)
        if w is not None:
            try:
                write_signed(w, os.waitstatus_to_exitcode(status))
            finally:
                os.close(w)


def _filters_spare_the_zygote(plan: EntryPlan) -> bool:
    """In the entered zygote, before its own filters: does its loop survive them? A trial child
    installs them and serves one request as the zygote will (recvmsg, fork, select, wait4, write);
    True if it reported its child's pid and exit status."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    status_r, status_w = os.pipe()
    dummy_r, dummy_w = os.pipe()
    try:
        socket.send_fds(ours, [_TRIAL], [dummy_r, status_w])
    finally:
        os.close(dummy_r)
        os.close(status_w)
    pid = os.fork()
    if pid == 0:   # the trial
        code = 1
        try:
            for fd in (ours.detach(), status_r, dummy_w):
                os.close(fd)
            install_filters(plan)
            code = _serve(theirs, _never)
        finally:
            os._exit(code)
    theirs.close()
    try:
        report = b""
        while len(report) < 2 * _SIGNED.size:
            if not select.select([status_r], [], [], TRIAL_TIMEOUT)[0]:
                return False
            chunk = os.read(status_r, 2 * _SIGNED.size - len(report))
            if not chunk:
                return False   # the filters killed it (SIGSYS), or it failed
            report += chunk
        return _SIGNED.unpack_from(report, _SIGNED.size)[0] == 0
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        ours.close()
        os.close(status_r)
        os.close(dummy_w)


def _never(*_) -> None:
    os._exit(1)


class _InheritingUnpickler(pickle.Unpickler):
    """Resolves the owner's references to inherited objects (see ZygotePopen) to this process's
    copies of them."""

    def __init__(self, file, inherit: list):
        super().__init__(file)
        self._inherit = inherit

    def persistent_load(self, key):
        return self._inherit[key]


def _finish_worker_entry(plan: EntryPlan, filters: bool) -> None:
    """A new worker's first steps when the zygote left some to each fork: the reset-on-fork flag
    of the unit's scheduling policy, then (``filters``) the unit's seccomp filters."""
    try:
        add_sched_reset(plan)
        if filters:
            install_filters(plan)
    except EnterError as e:
        print(f"concurrentd: a worker could not enter the unit: {e}", file=sys.stderr)
        sys.stderr.flush()
        os._exit(ENTER_FAILED_EXIT_STATUS)


def _worker_inside(inherit: list, data_r: int, passed: list[int]) -> None:
    """A worker forked by the entered zygote, confined already: reads its Process object and
    runs it. Never returns."""
    def run() -> int:
        inherited_fds[:] = passed
        with open(data_r, "rb", closefd=False) as f:
            process_obj = _InheritingUnpickler(f, inherit).load()
        _track_tasks(process_obj)
        return process_obj._bootstrap(parent_sentinel=data_r)

    _run_and_exit(run)


def _worker_outside(plan: EntryPlan, rewrite: _pythonpath.Rewrite, data_r: int,
                    passed: list[int]) -> None:
    """A worker forked by a zygote outside the unit: take the Process object, enter, run."""
    def run() -> int:
        inherited_fds[:] = passed
        from multiprocessing import reduction

        with open(data_r, "rb", closefd=False) as f:
            reduction.pickle.load(f)             # preparation data: a forked worker needs none
            process_obj = reduction.pickle.load(f)
        try:
            enter(plan)
        except EnterError as e:
            _answer_one_task(process_obj, e)
            return ENTER_FAILED_EXIT_STATUS
        rewrite.apply()
        _track_tasks(process_obj)
        return process_obj._bootstrap(parent_sentinel=data_r)

    _run_and_exit(run)


def _track_tasks(process_obj) -> None:
    board = getattr(process_obj, "_board", None)
    if board is not None and process_obj._args:   # a pool's worker: note its tasks
        _taskboard.current = board
        process_obj._args = (RecordingQueue(process_obj._args[0], board), *process_obj._args[1:])


def _run_and_exit(run: Callable[[], int]) -> None:
    """A worker's end: exit with run()'s status, or 1 after printing what it raised; never
    return into the zygote's loop."""
    code = 1
    try:
        code = run()
    except BaseException:   # noqa: BLE001 - whatever it was, the worker must exit here
        try:
            import traceback
            traceback.print_exc()
        except BaseException:   # noqa: BLE001
            pass
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

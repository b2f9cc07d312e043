"""The owner's handle on its zygote: the single-threaded process from which every worker of a
unit is forked (its own side is _zygote_loop, the messages _protocol).

A pool's zygote enters the unit itself, once, when the pool starts; each worker is then a plain
fork of a process that is already confined, and inherits that confinement from its first
instruction (seccomp filters, credentials, namespaces, cgroups: all are kept across fork):

    owner (no thread yet)               zygote                             worker
    ─────────────────────               ──────                             ──────
    begin_service(anchor) ──D-Bus──▶ systemd sets the unit up (~10 ms)
    Zygote(enters=True):
      fork ───────────────────────────▶ /dev/null and the output pipes as
                                        its stdio; close every other fd;
                                        wait for the anchor
    (JobRemoved) zygote.enter(pid) ───▶ EntryPlan.from_pid(anchor)
                                        enter(plan)  (C, once), non-dumpable
    await_entered ◀──────────────────── entered, or the EnterError
    its own plan (no seccomp filters)   fork() a spare ────────────────────▶ wait for a request
    await_ready ◀────────────────────── spare forked
    launch_worker():
      send_fds(WORKER, [status_w,       hand them to the spare ──────────▶ _worker.serve(call,
                 call_r, result_w]) ──▶ (no spare: fork() now)               result)
    status pipe ◀────────────────────── pid, later the exit status

The zygote holds nothing of the pool but its socket: each worker's pipes pass through it once
and are closed there. Why a zygote at all: forking a process that has threads (the pool's manager
thread) can deadlock the child, and Python 3.12+ warns about it. The zygote is forked before the
pool has any thread, and it keeps the owner's loaded modules, so a worker starts as a plain fork.
"""

from __future__ import annotations

import array
import errno
import os
import select
import signal
import socket
import sys

from . import _fresh, _pythonpath, _worker, _zygote_loop
from . import _protocol as P
from ._deaths import how_it_ended
from ._entry import EnterError, EntryPlan
from ._entry.enter import enter_error
from ._entry.plan import parse_status
from ._output import OutputPipes
from ._pythonpath import PathMap


class ZygoteGone(OSError):
    """The zygote cannot take requests anymore (it exited, or its unit stopped)."""


class ZygoteBusy(ZygoteGone):
    """The zygote has not read the requests already sent, and its socket takes no more now
    (stopped, or forking a batch): the caller reads their answers first, each with its deadline."""


class Zygote:
    """The owner's handle on its zygote.

    The zygote is forked at once, before the unit need exist (a pool forks it while systemd sets
    the unit up), and waits; enter() tells it the unit's anchor, whose state it reads into an
    entry plan of its own; await_ready() waits for its report.

    Args:
        path_map: where the owner's sys.path is found inside the unit (see _pythonpath).
        enters: the zygote enters the unit itself, once (a pool's); else it stays outside and
            each of its workers enters on its own (a TransientUnitProcess's own unit).
        max_workers: for a zygote that enters, the pool's size: while fewer workers run, the
            zygote keeps one forked ahead of its request (see _zygote_loop._Spare).
    """

    def __init__(self, path_map: PathMap = (), *, enters: bool = True, max_workers: int = 0,
                 start: _worker.Start | None = None, fresh: _fresh.Fresh | None = None):
        self.entered = enters
        #: with an entered zygote: each worker installs the unit's seccomp filters itself
        self.filters_per_worker = False
        self.status: int | None = None   # the zygote's exit status, once reaped
        self._report: bytes | None = None   # its READY record, once received
        self.output = OutputPipes()
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        if fresh is not None:
            self._spawn(fresh, path_map, enters, max_workers, theirs)
            return
        # Where the workers will import from inside the unit: computed here, where reading every
        # module costs no copy-on-write fault.
        rewrite = _pythonpath.Rewrite(path_map)
        extra_stdio = _std_stream_fds()
        owner = os.getpid()
        _flush_std_streams()
        try:
            self.pid = os.fork()
        except OSError:
            self._sock.close()
            theirs.close()
            self.output.discard()
            raise
        if self.pid == 0:   # the zygote
            code = P.ZYGOTE_FAILED_EXIT_STATUS
            try:
                self._sock.close()
                _stdio_for_zygote(*self.output.ends_for_zygote)
                keep = {0, 1, 2, *extra_stdio, theirs.fileno(), *(start.fds() if start else ())}
                code = _zygote_loop.main(theirs, rewrite, enters, keep, owner, max_workers,
                                         start)
            finally:
                os._exit(code)
        theirs.close()
        self._pidfd = os.pidfd_open(self.pid)
        self._start_output()

    def _spawn(self, fresh: _fresh.Fresh, path_map: PathMap, enters: bool, max_workers: int,
               theirs: socket.socket) -> None:
        """The zygote as a fresh interpreter (see _fresh)."""
        main_file = getattr(sys.modules.get("__main__"), "__file__", None)
        setup = _fresh.Setup(list(sys.path), tuple(path_map), enters, os.getpid(), max_workers,
                             fresh.start,
                             os.path.abspath(main_file) if isinstance(main_file, str) else None,
                             fresh.fds)
        try:
            self.pid = _fresh.spawn(setup, *self.output.ends_for_zygote, theirs.fileno())
        except OSError:
            self._sock.close()
            self.output.discard()
            raise
        finally:
            theirs.close()
        self._pidfd = os.pidfd_open(self.pid)
        self._start_output()

    def _start_output(self) -> None:
        """Starts copying the zygote's output. If it cannot (no thread can be started: the
        interpreter is exiting, or a thread limit), the zygote is ended and reaped first."""
        try:
            self.output.start()
        except BaseException:
            self.close()
            raise

    def enter(self, anchor_pid: int, anchor_exe: str) -> None:
        """Tells the zygote the unit's anchor (its MainPID and executable); returns at once."""
        try:
            self._sock.send(P.ANCHOR.pack(anchor_pid) + os.fsencode(anchor_exe))
        except OSError:
            pass   # the zygote is gone: await_ready() says how it ended

    def await_entered(self) -> None:
        """Waits until the zygote has read the anchor (and entered the unit, if it is a pool's),
        successfully or not: await_ready() says which. A pool's zygote then forks its first
        worker-to-be, while the owner reads its own plan (read at the same time as the zygote's,
        the two would compete for the CPUs)."""
        self._ready_report()

    def _ready_report(self) -> bytes:
        while self._report is None:
            data = self._recv(P.READY.size)
            if len(data) == P.READY.size and P.READY.unpack(data)[0] == P.MOVED:
                if self._adopt(P.READY.unpack(data)[2]):
                    continue
                data = b""   # a pid not ours: as if it had died
            self._report = data
        return self._report

    def _adopt(self, pid: int) -> bool:
        """The zygote re-created itself in the unit's cgroup (_zygote_loop): ``pid`` is the
        zygote from now on, once checked to be this process's child; the first one, which has
        exited or is exiting, is reaped."""
        try:
            pidfd = _pidfd_of_child(pid, os.getpid())
        except (OSError, ValueError):
            return False
        if pidfd is None:
            return False
        os.waitpid(self.pid, 0)
        os.close(self._pidfd)
        self.pid, self._pidfd = pid, pidfd
        return True

    def await_ready(self, plan: EntryPlan) -> None:
        """Waits until the zygote has read the anchor and, if it is a pool's, entered the unit and
        forked its first worker-to-be. ``plan``, the owner's own plan of the same anchor, names a
        failed step.

        Raises:
            EnterError: the zygote could not read the anchor or enter the unit; it has exited.
        """
        data = self._ready_report()   # await_entered()
        if len(data) != P.READY.size:
            raise self._died("while entering")
        kind, step, arg, err = P.READY.unpack(data)
        if kind == P.NO_PLAN:
            self.close()
            raise EnterError("plan", err, f"the zygote could not read the unit's main process "
                                          f"(anchor pid {plan.anchor_pid}): {os.strerror(err)}"
                                          + (": it has exited" if err == errno.ESRCH else ""))
        if kind == P.FAILED:
            self.close()
            raise enter_error(plan, step, arg, err)
        if kind == P.THREADED:
            self.close()
            raise EnterError("preload", err, f"the pool's zygote runs {arg} threads once the "
                                             "modules of preload= are imported: one of them "
                                             "started a thread, and a process with threads can "
                                             "neither enter the unit nor fork its workers "
                                             "safely; leave that module out of preload= (each "
                                             "worker then imports it when a call needs it)")
        self.filters_per_worker = kind == P.FILTERS_PER_WORKER
        if self.entered and self._recv(len(P.SPARE_FORKED)) != P.SPARE_FORKED:
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
        assert self.status is not None   # reaped by close(): the owner's zygote has a pid
        return EnterError("zygote", 0, f"the pool's zygote died {when} the unit: it "
                                       + how_it_ended(self.status))

    def launch(self, request: bytes, fds: list[int]) -> int:
        """Asks for a worker that runs ``request``'s body with ``fds`` (which stay the caller's to
        close); returns the read end of its status pipe, on which the zygote writes the worker's
        pid (or -errno if its fork failed), then, once the worker has exited, its exit status.

        Raises:
            ZygoteBusy: the socket's buffer is full of requests the zygote has not read.
            ZygoteGone: the zygote has exited.
        """
        status_r, status_w = os.pipe()
        try:
            # Never blocks: a zygote that does not read its requests is stopped, or hung. Not
            # socket.send_fds(), which drops its flags argument (CPython 3.10-3.14 pass none to
            # sendmsg): with it, a batch of requests larger than the socket's buffer blocked the
            # manager for ever on a zygote stopped by a process of its unit.
            self._sock.sendmsg([request], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                            array.array("i", [status_w, *fds]))],
                               socket.MSG_DONTWAIT)
        except BlockingIOError as e:
            os.close(status_r)
            raise ZygoteBusy(e.errno, f"the pool's zygote (pid {self.pid}) has not read the "
                                      "requests sent to it") from None
        except OSError as e:
            os.close(status_r)
            raise ZygoteGone(e.errno, f"the pool's zygote (pid {self.pid}) is gone: "
                                      f"{e.strerror}") from None
        finally:
            os.close(status_w)
        return status_r

    def child_pidfd(self, pid: int) -> int | None:
        """A pidfd on ``pid`` if it is (still) this zygote's child, else None: it has exited.
        The pid comes from a zygote inside the unit: the owner signals only what it checked."""
        return _pidfd_of_child(pid, self.pid)

    def alive(self) -> bool:
        if self.status is not None:
            return False
        return not select.select([self._pidfd], [], [], 0)[0]

    def kill(self) -> None:
        """SIGKILL (its workers go on): for a zygote that does not answer."""
        if self.status is None and self.pid:
            try:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        """Ends the zygote (running workers are not touched) and reaps it; one that has not
        ended within the zygote's timeout (stopped by a process of its unit) is killed."""
        if self.status is None and self.pid:
            self._sock.close()   # EOF: the zygote returns
            if not select.select([self._pidfd], [], [], P.ZYGOTE_TIMEOUT)[0]:
                self.kill()
            self.status = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
            os.close(self._pidfd)


def _pidfd_of_child(pid: int, parent: int) -> int | None:
    """A pidfd on ``pid`` if it is ``parent``'s child, else None: it has exited, and the pid may
    be another process's since. Opened before the check, so that it is the process checked."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            ppid = int(parse_status(f.read()).get("PPid", -1))
    except (OSError, ValueError):
        ppid = -1
    if ppid != parent:
        os.close(fd)
        return None
    return fd


def _std_stream_fds() -> set[int]:
    """Where print() goes: sys.stdout may write to another fd than 1 (pytest's capture does)."""
    fds = set()
    for stream in (sys.stdout, sys.stderr):
        try:
            fds.add(stream.fileno())
        except (AttributeError, OSError, ValueError):
            pass
    return fds - {0, 1, 2}


def _flush_std_streams() -> None:
    """Writes out what the owner printed and Python still buffers (stdout to a pipe or a file is
    block-buffered), as multiprocessing does before it forks: else the zygote's copy of the
    buffers is written too, by the zygote or a worker, into the output pipes that copy it back to
    the owner's stdout, and the owner's lines come out twice."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass


def _stdio_for_zygote(out_w: int, err_w: int) -> None:
    """In the zygote, before anything else: /dev/null as stdin, the pipes as stdout and stderr,
    and as the fds sys.stdout and sys.stderr write to if those are others."""
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    for stream, w in ((sys.stdout, out_w), (sys.stderr, err_w)):
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):
            continue
        if fd > 2:
            os.dup2(w, fd)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    for fd in (null, out_w, err_w):
        if fd > 2:
            os.close(fd)

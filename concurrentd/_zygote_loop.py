"""The zygote's side: from its fork to the owner's EOF (the owner's handle is in _zygote).

    zygote                                                   worker
    ──────
    no terminal: /dev/null, the output pipes; close the rest
    __main__'s source into linecache (see _sources)
    wait for the anchor; (cgroup v2 only) re-create itself in the anchor's cgroup
    EntryPlan.from_pid(anchor)
    enter(plan) (C, once; a pool's zygote), non-dumpable
    fork a spare ─────────────────────────────────────────▶  wait for a request, confined
    per request (WORKER or PROCESS + fds):
      hand the fds to the spare (or fork) ────────────────▶  _worker.serve / Process._bootstrap
      status pipe ◀ the pid; later the exit status

Non-dumpable: the zygote may hold less than the unit's main process (no seccomp filter when the
unit's filters would forbid its own loop, or with CPUSchedulingResetOnFork=), so no process may
ptrace it, write its memory or take its fds — not even the workers, which run as the same user.
They inherit the flag: a worker's channel to the owner is reachable from no other process.

Seccomp last, and only if it spares the zygote: a unit's filters may forbid what the zygote's own
loop needs (fork, wait4, recvmsg under SystemCallFilter=~@process). A trial child installs them and
serves one request; if it did not survive, each worker installs the filters right after its fork,
before reading anything.

CPUSchedulingResetOnFork=: the kernel would give every fork of the zygote the default policy and
no negative nice, so the zygote takes the unit's policy without that flag and each worker adds it
to itself after its fork, before the filters (which then go per worker).

Re-created in the unit's cgroup: moving a process into a cgroup (a cgroup.procs write) waits for
an RCU grace period, 10-30 ms, unless another move ran within the last one: systemd's own, when
the unit has just started, but not when a prepared unit has waited (concurrentd._warm). A copy
created there by the kernel (clone3 with CLONE_INTO_CGROUP) does not wait; the plan then has no
cgroup to write. Only where the unit has no cgroup v1 hierarchy (which a clone cannot join).

A zygote that does not enter (TransientUnitProcess in a unit of its own) stays outside; each of
its workers enters on its own after reading its Process object.
"""

from __future__ import annotations

import errno
import importlib
import os
import pickle
import select
import signal
import socket
import sys
from typing import Callable, Protocol

from . import _cpython, _pythonpath, _sources, _sys, _worker
from . import _protocol as P
from ._entry import (
    EnterError,
    EntryPlan,
    add_sched_reset,
    enter,
    filters_let_admin_go,
    install_filters,
    release_admin,
)
from ._entry.plan import cgroup_dirs

#: A trial that has not reported after this long counts as failed (its filters then go per worker).
TRIAL_TIMEOUT = 10.0

# Set in a worker: the fds the owner passed along, in the order ZygotePopen.duplicate_for_child
# numbered them (multiprocessing's DupFd objects resolve through this list).
inherited_fds: list[int] = []


def main(sock: socket.socket, rewrite: _pythonpath.Rewrite, enters: bool, keep: set[int],
         owner: int, max_workers: int, start: _worker.Start | None) -> int:
    """The zygote, from its fork to the owner's EOF. Returns its exit status. ``start``: how a
    pool's workers start (they inherit it), None for a zygote that forks no pool worker."""
    # If the owner dies without closing the pool, the zygote goes too (the anchor stops the unit).
    _sys.set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != owner:
        return 0
    _sys.set_dumpable(False)
    _forget_the_owners_pools()
    _cpython.become_a_fork_child()
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # ^C is the owner's to handle
    # A session of its own, as systemd gives a unit's process: no controlling terminal.
    os.setsid()
    # Nothing of the owner's reaches the unit: not its D-Bus connection, not its open files.
    _close_fds_except(keep)
    # While systemd sets the unit up, and before the unit may hide it: the script's source,
    # and the modules the pool asked to import ahead.
    _sources.keep_main_source()
    for name in start.preload if start is not None else ():
        importlib.import_module(name)
    if not select.select([sock], [], [], 0)[0]:   # the unit is not there yet
        EntryPlan.rehearse()
    msg = sock.recv(P.ANCHOR.size + 4096)
    if not msg:   # the owner gave up before the unit ran
        return 0
    (anchor_pid,) = P.ANCHOR.unpack_from(msg)
    if enters:
        _recreate_in_cgroup_of(anchor_pid, owner, sock)

    def report(*record: int) -> None:
        os.write(sock.fileno(), P.READY.pack(*record))

    try:
        plan = EntryPlan.from_pid(anchor_pid, anchor_exe=os.fsdecode(msg[P.ANCHOR.size:]),
                                  owner_pid=owner)
    except (OSError, ValueError) as e:
        err = e.errno if isinstance(e, OSError) and e.errno else errno.EINVAL
        report(P.NO_PLAN, 0, 0, err)
        return P.ENTER_FAILED_EXIT_STATUS
    if not enters:
        bodies: dict[bytes, Body] = {P.PROCESS: lambda fds: _process_outside(plan, rewrite, fds)}
        return _serve(sock, bodies, ready=lambda: report(P.OUTSIDE, 0, 0, 0))
    # A module of preload= may have started a thread: a process with threads can neither enter
    # a mount namespace (setns: EINVAL) nor fork its workers safely.
    threads = len(os.listdir("/proc/self/task"))
    if threads > 1:
        report(P.THREADED, 0, threads, errno.EINVAL)
        return P.ENTER_FAILED_EXIT_STATUS
    try:
        # Without the reset-on-fork flag (CPUSchedulingResetOnFork=), which would give every
        # worker the default policy: each sets it on itself (see _finish_worker_entry).
        enter(plan, seccomp=False, sched_reset=False)
        _sys.set_dumpable(False)   # enter() copied the anchor's (dumpable, freshly exec'd)
        rewrite.apply()
        _sys.set_parent_death_signal(signal.SIGKILL)   # the change of credentials cleared it
        if os.getppid() != owner:
            return 0
        # Held CAP_SYS_ADMIN to load the filters (the anchor has neither it nor no_new_privs):
        # each load drops it afterwards, unless the filters forbid that (capset); then
        # no_new_privs instead, at once.
        if plan.needs_sys_admin_for_filters and not filters_let_admin_go(plan):
            release_admin(plan)
        # The flag is set after the fork, which the filters may forbid: then they come after it.
        per_worker = bool(plan.filters) and (plan.sched_resets_on_fork
                                             or not _filters_spare_the_zygote(plan))
        if plan.filters and not per_worker:
            install_filters(plan)
    except EnterError as e:
        step, arg, err = getattr(e, "_raw", (-1, 0, e.errno))
        report(P.FAILED, step, arg, err)
        return P.ENTER_FAILED_EXIT_STATUS
    report(P.FILTERS_PER_WORKER if per_worker else P.CONFINED, 0, 0, 0)
    finish = per_worker or plan.sched_resets_on_fork
    bodies = {P.PROCESS: _process_inside}
    if start is not None:
        bodies[P.WORKER] = lambda fds: _pool_worker(fds, start)
    return _serve(sock, bodies,
                  install=(lambda: _finish_worker_entry(plan, per_worker)) if finish else None,
                  max_workers=max_workers, ready=lambda: os.write(sock.fileno(), P.SPARE_FORKED))


def _recreate_in_cgroup_of(anchor_pid: int, owner: int, sock: socket.socket) -> None:
    """Where the anchor's cgroup is a cgroup v2 one, and the only one: returns in a copy of the
    zygote created in it, the owner's child; this process tells the owner the copy's pid (MOVED)
    and exits. Otherwise (cgroup v1 hierarchies, a thread started by preload=, a kernel before
    5.7, the anchor gone) returns in the same process, which enter() moves as before.
    The copy is made by a raw clone3: no at-fork hook runs, which the single thread allows."""
    if len(os.listdir("/proc/self/task")) > 1:
        return
    try:
        with open(f"/proc/{anchor_pid}/cgroup") as f:
            theirs = f.read()
        with open("/proc/self/mountinfo") as f:
            mountinfo = f.read()
        with open("/proc/self/cgroup") as f:
            ours = f.read()
    except OSError:
        return   # gone: from_pid() says so
    target = cgroup_dirs(theirs, mountinfo)
    if len(target) != 1 or next(iter(target))[0] != 0 or target == cgroup_dirs(ours, mountinfo):
        return
    try:
        cgroup_fd = os.open(next(iter(target.values())), os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    first = os.pidfd_open(os.getpid())   # the copy waits on it: no pid to reuse meanwhile
    try:
        pid = _sys.clone_into_cgroup(cgroup_fd)
    except OSError:
        os.close(first)
        return
    finally:
        os.close(cgroup_fd)
    if pid:
        # The owner learns the copy's pid from here, so that it reaps the copy even if the copy
        # dies before its first report.
        os.write(sock.fileno(), P.READY.pack(P.MOVED, 0, pid, 0))
        os._exit(0)
    # The copy: the owner's child (CLONE_PARENT), which the death signal does not follow. Its
    # reports come after MOVED: once the first process has exited.
    _sys.set_parent_death_signal(signal.SIGKILL)
    select.select([first], [], [])
    os.close(first)
    if os.getppid() != owner:
        os._exit(0)


def _forget_the_owners_pools() -> None:
    """A Process ends with threading._shutdown(), whose exit hooks include ProcessPoolExecutor's:
    it would wake the owner's pools through the owner's fds, closed here, or another file's by
    then (four bytes written into it). The zygote and its workers have no such pools."""
    _cpython.forget_executor_wakeups()


def _close_fds_except(keep: set[int]) -> None:
    low = 0
    for fd in sorted(keep):
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))


#: a worker's body: runs in the new fork with the request's fds, returns its exit status
Body = Callable[[list[int]], int]


def _serve(sock: socket.socket, bodies: dict[bytes, Body], *,
           install: Callable[[], None] | None = None, max_workers: int = 0,
           ready: Callable[[], object] | None = None) -> int:
    """The zygote's loop: a worker per request; report each worker's exit. Returns on EOF.

    ``bodies[request](fds)`` is a worker's body (it never returns); ``install`` what a new worker
    does first, before it reads anything. With ``max_workers``, one worker is kept forked ahead
    of its request (see _Spare) while fewer than that many run. ``ready`` is called once the
    first spare is there: the pool's first task then waits for no fork.
    """
    sigchld_r, sigchld_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(sigchld_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    status_fds: dict[int, int] = {}   # worker pid -> status pipe write end

    zygote = os.getpid()

    def become_worker() -> None:   # in a new fork: what is the zygote's is not the worker's
        # The zygote dies with the owner (its parent-death signal): its workers die with it,
        # whatever the unit's KillMode= leaves running.
        _sys.set_parent_death_signal(signal.SIGKILL)
        # The zygote died before the flag was set: the worker was reparented. (In the unit's pid
        # namespace, PrivatePIDs=, the zygote, outside it, shows as parent 0; an orphan's new
        # parent is the namespace's init, the anchor: 1.)
        if os.getppid() not in (zygote, 0):
            os._exit(0)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd in (sock.detach(), sigchld_r, sigchld_w, *status_fds.values()):
            os.close(fd)
        if install is not None:
            install()

    def run(request: bytes, fds: list[int]) -> None:
        body = bodies.get(request)
        if body is None:
            os._exit(P.NOT_FORKED_EXIT_STATUS)
        _run_and_exit(lambda: body(fds))

    spare = _Spare(max_workers, become_worker, run)
    watched: list[socket.socket | int] = [sock, sigchld_r]
    try:
        spare.refill(0)
        if ready is not None:
            ready()
        while True:
            # Requests already waiting (the owner asks for several workers at once) are forked
            # first; the next spare only once none waits, or it would delay each of them.
            readable, _, _ = select.select(watched, [], [], 0)
            if not readable:
                spare.refill(len(status_fds))
                readable, _, _ = select.select(watched, [], [])
            if sigchld_r in readable:
                # One read of the wakeup bytes (what was left makes the next select readable):
                # the loop that stood here compared the bytes with 4096, never equal
                os.read(sigchld_r, 4096)
                _reap(status_fds, spare)
            if sock in readable:
                msg, fds, _, _ = socket.recv_fds(sock, 16, P.MAX_FDS)
                if not msg:
                    return 0
                if not fds:
                    continue
                status_w, *passed = fds
                pid = spare.take(msg, passed) if msg != P.TRIAL else 0
                if not pid:
                    try:
                        pid = os.fork()
                    except OSError as e:   # e.g. EAGAIN: the unit's TasksMax=; the zygote goes on
                        for fd in passed:
                            os.close(fd)
                        P.write_signed(status_w, -(e.errno or 0))   # instead of a pid
                        os.close(status_w)
                        continue
                    if pid == 0:
                        if msg == P.TRIAL:
                            os._exit(0)
                        os.close(status_w)
                        become_worker()
                        run(msg, passed)   # never returns
                for fd in passed:
                    os.close(fd)
                P.write_signed(status_w, pid)
                status_fds[pid] = status_w
    finally:
        spare.close()


class _Spare:
    """The zygote's worker-to-be, forked before anyone asks for it: a request then costs a
    message instead of a fork.

    It is made while fewer than ``max_workers`` workers run, so it is always one of the pool's
    workers-to-come and takes no task under TasksMax= a worker would not take. It waits in
    recvmsg, already confined (with ``install`` done), for the request's fds; the zygote's EOF
    ends it. One that dies unasked, or cannot be forked, is not replaced until a worker exits:
    requests are then forked as they come.
    """

    def __init__(self, max_workers: int, become_worker: Callable[[], None],
                 run: Callable[[bytes, list[int]], None]):
        self.max_workers = max_workers
        self._become_worker, self._run = become_worker, run
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
        msg, fds, _, _ = socket.recv_fds(sock, 16, P.MAX_FDS)
        sock.close()
        if not msg:
            for fd in fds:
                os.close(fd)
            return 0
        self._run(msg, fds)   # never returns
        return 1

    def take(self, request: bytes, passed: list[int]) -> int:
        """Hands a request's fds to the spare; its pid, or 0 if there is none."""
        pid, sock = self.pid, self._sock
        if not pid or sock is None:   # (a spare has both)
            return 0
        self.pid, self._sock = 0, None
        try:
            socket.send_fds(sock, [request], passed)
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
        if self._sock is not None:   # (a spare has both)
            self._sock.close()
        self.pid, self._sock, self.blocked = 0, None, True
        return True

    def close(self) -> None:
        if self.pid and self._sock is not None:   # (a spare has both)
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
                P.write_signed(w, os.waitstatus_to_exitcode(status))
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
        socket.send_fds(ours, [P.TRIAL], [status_w, dummy_r])
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
            code = _serve(theirs, {})
        finally:
            os._exit(code)
    theirs.close()
    try:
        report = b""
        while len(report) < 2 * P.SIGNED.size:
            if not select.select([status_r], [], [], TRIAL_TIMEOUT)[0]:
                return False
            chunk = os.read(status_r, 2 * P.SIGNED.size - len(report))
            if not chunk:
                return False   # the filters killed it (SIGSYS), or it failed
            report += chunk
        status: int = P.SIGNED.unpack_from(report, P.SIGNED.size)[0]
        return status == 0
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        ours.close()
        os.close(status_r)
        os.close(dummy_w)


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
        os._exit(P.ENTER_FAILED_EXIT_STATUS)


# -- the bodies of a worker (each never returns) ---------------------------------------------------

def _pool_worker(fds: list[int], start: _worker.Start) -> int:
    """A pool's worker, forked by the entered zygote: its own call and result pipes."""
    call_fd, result_fd = fds
    return _worker.serve(call_fd, result_fd, start)


class _Process(Protocol):
    """A multiprocessing Process as the worker gets it: its private _bootstrap() (CPython's,
    which typeshed does not declare) runs it and returns its exit status."""

    def _bootstrap(self, parent_sentinel: int | None = None) -> int: ...


def _read_process(fds: list[int]) -> tuple[_Process, int]:
    """A Process's request: (its Process object, the data pipe it watches for its owner)."""
    for fd in fds:
        os.set_inheritable(fd, False)   # not into its subprocesses, which exec dumpable
    data_r, *passed = fds
    inherited_fds[:] = passed
    with open(data_r, "rb", closefd=False) as f:
        return pickle.load(f), data_r


def _process_inside(fds: list[int]) -> int:
    """A multiprocessing Process forked by an entered zygote: reads its Process object, runs it."""
    process_obj, data_r = _read_process(fds)
    return process_obj._bootstrap(parent_sentinel=data_r)


def _process_outside(plan: EntryPlan, rewrite: _pythonpath.Rewrite, fds: list[int]) -> int:
    """A Process forked by a zygote outside the unit: take the Process object, enter, run."""
    process_obj, data_r = _read_process(fds)
    parent = os.getppid()
    enter(plan)
    _sys.set_dumpable(False)   # as a pool's workers: nothing else may take its fds
    _sys.set_parent_death_signal(signal.SIGKILL)   # the change of credentials cleared it
    if os.getppid() != parent:
        return 0
    rewrite.apply()
    return process_obj._bootstrap(parent_sentinel=data_r)


def _run_and_exit(run: Callable[[], int]) -> None:
    """A worker's end: exit with run()'s status, or 1 after printing what it raised; never
    return into the zygote's loop."""
    code = 1
    try:
        code = run()
    except EnterError as e:
        print(f"concurrentd: a worker could not enter the unit: {e}", file=sys.stderr)
        code = P.ENTER_FAILED_EXIT_STATUS
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

"""The pool's manager thread: the only thread that talks to workers.

    submit() ──▶ pending {work id: item} + queue ──wakeup──▶ manager thread
                                                          │ dispatch: an idle worker, else a new
                                                          │ one (up to max_workers), else the
                                                          │ least busy (at most DEPTH calls each)
                                                          ▼
                              worker's call pipe ◀── CALL frame (non-blocking, via its outbox)
                              worker's result pipe ──▶ RESULT / EXCEPTION frame, read as bytes
                                                       arrive, at most max_frame bytes
                                                          │ the work id must be the one this
                                                          │ worker runs; the value is unpickled
                                                          ▼ as data (see _results)
                                                     future.set_result / set_exception
    a worker's status pipe (from the zygote) ──▶ its exit: expected (STOP, max_tasks_per_child)
                                                 or a death, diagnosed (see _deaths)

Every worker has its own pipes, so no worker can read another's calls or answer for another's
tasks; the owner holds no write end of a result pipe, so a dead worker is EOF at once. A worker
that writes what no worker of ours writes (an unknown frame, a frame over the cap, a result for
a task it was not given), or stops in the middle of a frame for ``stall_timeout`` seconds, is
killed, and its death reported as any other.
"""

from __future__ import annotations

import atexit
import collections
import itertools
import os
import select
import signal
import threading
import time
import traceback
import weakref
from concurrent.futures import Future, InvalidStateError
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable

from . import _cpython, _deaths
from . import _protocol as P
from ._channel import Channel, ProtocolError
from ._results import ResultPolicy, ResultRefused
from ._session import UnitSession
from ._zygote import ZygoteBusy, ZygoteGone

#: the most calls a worker holds at once: the one it runs and the next, so it never waits
DEPTH = 2
#: seconds a worker that closed its result pipe, or was told to stop, may take to exit before it
#: is killed
_EXIT_GRACE = 5.0
#: seconds a dead zygote's anchor is given to exit too, when the unit is being stopped
_UNIT_STOP_GRACE = 1.0


class WorkItem:
    __slots__ = ("future", "cloud", "blob", "started")

    def __init__(self, future: Future[Any], cloud: bool, blob: bytes):
        self.future, self.cloud, self.blob = future, cloud, blob
        self.started = False   # given to a worker (again, after a death with "replace")


class WorkerHandle:
    """The owner's view of one worker: its pid, pidfd, status pipe and channel, and the work
    ids it was given, in order."""

    def __init__(self, pid: int, status_fd: int, channel: Channel, pidfd: int | None,
                 max_tasks: int | None):
        self.pid, self.status_fd, self.channel, self.pidfd = pid, status_fd, channel, pidfd
        self.inflight: collections.deque[int] = collections.deque()
        self.assigned = 0
        self.max_tasks = max_tasks
        self.stopping = False
        self.violation: str | None = None   # why the owner killed it
        self.eof_at: float | None = None
        self.stop_sent: float | None = None   # when its call pipe was closed (EOF: exit)
        self.exitcode: int | None = None
        self.exited = threading.Event()   # set once reaped and closed
        self._signal_lock = threading.Lock()   # a signal from a user's thread vs close()
        self.process = WorkerProcess(self)

    def can_take(self) -> bool:
        return not self.stopping and (self.max_tasks is None or self.assigned < self.max_tasks)

    def retiring(self) -> bool:
        return self.max_tasks is not None and self.assigned >= self.max_tasks

    def deadlines(self, stall_timeout: float) -> list[tuple[float, str]]:
        """(when, why) the owner kills this worker unless it has gone on by then."""
        found = []
        if self.channel.stalled_since is not None:
            found.append((self.channel.stalled_since + stall_timeout,
                          f"it stopped for {stall_timeout:g} s in the middle of sending a result"))
        if self.eof_at is not None:
            found.append((self.eof_at + _EXIT_GRACE,
                          "it closed its result pipe and went on running"))
        if self.stop_sent is not None and not self.inflight:
            found.append((self.stop_sent + _EXIT_GRACE,
                          f"it had not exited {_EXIT_GRACE:g} s after its pool told it to"))
        return found

    def kill(self, why: str | None = None) -> None:
        """SIGKILL; with ``why``, the owner's reason (it takes no call from now on)."""
        if why:
            self.stopping = True
            if self.violation is None:
                self.violation = why
        self.signal(signal.SIGKILL)

    def signal(self, signum: int) -> None:
        """Sends ``signum`` through the pidfd: never to another process that reused the pid."""
        with self._signal_lock:
            if self.pidfd is not None:
                try:
                    signal.pidfd_send_signal(self.pidfd, signum)
                except ProcessLookupError:
                    pass

    def close(self) -> None:
        self.channel.close()
        with self._signal_lock:
            for fd in (self.status_fd, self.pidfd):
                if fd is not None:
                    os.close(fd)
            self.pidfd = None
        self.exited.set()


class WorkerProcess:
    """A worker as ProcessPoolExecutor's ``_processes`` shows one (a multiprocessing.Process):
    its pid, exit code, join(), terminate() and kill(), for code that reaches into the pool."""

    def __init__(self, handle: WorkerHandle):
        self._handle = handle
        self.pid = handle.pid
        self.name = f"concurrentd-worker-{handle.pid}"

    @property
    def exitcode(self) -> int | None:
        """None while it runs; then its exit status, or -N if signal N ended it."""
        return self._handle.exitcode if self._handle.exited.is_set() else None

    def is_alive(self) -> bool:
        return not self._handle.exited.is_set()

    def join(self, timeout: float | None = None) -> None:
        """Waits until the pool has seen the worker exit (at most ``timeout`` seconds)."""
        self._handle.exited.wait(timeout)

    def terminate(self) -> None:
        self._handle.signal(signal.SIGTERM)

    def kill(self) -> None:
        self._handle.signal(signal.SIGKILL)

    def __repr__(self) -> str:
        state = "alive" if self.is_alive() else f"exitcode={self.exitcode}"
        return f"<WorkerProcess pid={self.pid} {state}>"


class PoolManager(threading.Thread):
    """Everything a pool does after submit(): dispatch, results, deaths, shutdown, release.

    (A Thread subclass: its private names must not be Thread's own, such as ``_handle`` in 3.13.)

    Args:
        session: the pool's unit session (released by this thread when it ends).
        policy: what results the owner accepts.
        on_worker_death: "break" or "replace" (see TransientUnitPoolExecutor).
    """

    def __init__(self, session: UnitSession, *, max_workers: int, max_tasks: int | None,
                 policy: ResultPolicy, on_worker_death: str, unit_name: str,
                 limits: dict[str, str], max_frame: int, stall_timeout: float):
        super().__init__(name="concurrentd-manager", daemon=True)
        self.session = session
        #: called once the unit is released (stopped: none of its processes runs anymore)
        self.after_release: Callable[[], None] | None = None
        self.max_workers, self.max_tasks = max_workers, max_tasks
        self.policy = policy
        self._replace = on_worker_death == "replace"
        self.unit_name, self.limits = unit_name, limits
        self.max_frame, self.stall_timeout = max_frame, stall_timeout
        # Shared with the submitting threads, under the lock:
        self.lock = threading.RLock()   # re-entered: a future's callback may submit
        self.pending: dict[int, WorkItem] = {}
        self.queue: collections.deque[int] = collections.deque()
        self.shutting_down = False
        self.cancel_pending = False
        self.broken: str | None = None
        self.release_error: BaseException | None = None
        # settle(): the asks so far, and the last one answered by a dispatch
        self._settle_asked = self._settled = 0
        self._settled_cv = threading.Condition(self.lock)
        # The manager's own:
        self.workers: dict[int, WorkerHandle] = {}
        #: workers asked of the zygote whose pid has not been read yet, in the order asked
        self._launched: collections.deque[tuple[int, int, int]] = collections.deque()
        self._by_fd: dict[int, tuple[WorkerHandle, str]] = {}   # what self._poll watches
        self._poll = select.poll()
        self._wakeup = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._poll.register(self._wakeup, select.POLLIN)

    # -- from other threads ------------------------------------------------------------------
    def wakeup(self) -> None:
        with self.lock:   # never after run() closed it: the number may be another file's now
            if self._wakeup >= 0:
                os.eventfd_write(self._wakeup, 1)

    def settle(self, timeout: float) -> None:
        """Returns once the manager has dispatched what was submitted before this call, so the
        workers it needed are forked (as ProcessPoolExecutor starts them in submit()); or after
        ``timeout``, or at once when called from the manager itself (a future's callback)."""
        if threading.current_thread() is self:
            return
        with self.lock:
            self._settle_asked += 1
            asked = self._settle_asked
            self.wakeup()
            # Its loop over (the wakeup closed), it dispatches nothing more: no wait for the
            # unit's release, which follows, and ends the thread without telling anyone.
            self._settled_cv.wait_for(
                lambda: self._settled >= asked or self._wakeup < 0 or not self.is_alive(),
                timeout)

    def request_shutdown(self, cancel_pending: bool = False) -> None:
        with self.lock:
            self.cancel_pending = self.cancel_pending or cancel_pending
            self.shutting_down = True
        self.wakeup()

    # -- the thread ----------------------------------------------------------------------------
    def run(self) -> None:
        _running.add(self)
        try:
            self._loop()
        except BaseException as e:   # noqa: BLE001 - a bug of ours: no future may hang on it
            cause = traceback.format_exception(type(e), e, e.__traceback__)
            self._break(f"the pool's manager thread failed: {e!r}", cause)
        finally:
            self._adopt_launched()
            for worker in list(self.workers.values()):
                worker.kill()
                self._reap(worker, blocking=True)
            with self.lock:
                os.close(self._wakeup)
                self._wakeup = -1
                self._settled_cv.notify_all()   # settle() waits no more on a thread that ended
            try:
                self.session.release()
            except BaseException as e:   # noqa: BLE001 - shutdown() raises it
                self.release_error = e
            else:
                if self.after_release is not None:
                    self.after_release()
            _running.discard(self)

    def _loop(self) -> None:
        while True:
            with self.lock:
                asked = self._settle_asked
            self._dispatch()
            with self.lock:
                if asked > self._settled:
                    self._settled = asked
                    self._settled_cv.notify_all()
            if self._done():
                return
            for fd, _events in self._poll.poll(self._timeout_ms()):
                if fd == self._wakeup:
                    try:
                        os.eventfd_read(self._wakeup)
                    except BlockingIOError:
                        pass
                    continue
                entry = self._by_fd.get(fd)
                if entry is None:
                    continue
                worker, role = entry
                if role == "result":
                    self._receive(worker)
                elif role == "call":
                    worker.channel.flush()
                    self._watch_writes(worker)
                else:   # status: it has exited
                    self._receive(worker)
                    self._reap(worker)
            self._check_stalls()

    def _done(self) -> bool:
        with self.lock:
            closing = self.shutting_down or _exiting or self.broken is not None
            if not closing or self.pending:
                return False
        self._adopt_launched()
        if self.workers:
            for worker in self.workers.values():
                if worker.stop_sent is None:
                    worker.stopping = True
                    worker.stop_sent = time.monotonic()
                    self._forget(worker.channel.call_fd)   # before its number is free again
                    worker.channel.close_calls()   # EOF: the worker returns from its loop
            return False
        return True

    def _timeout_ms(self) -> int | None:
        deadlines = [when for w in self.workers.values()
                     for when, _ in w.deadlines(self.stall_timeout)]
        if not deadlines:
            return None
        return max(0, int((min(deadlines) - time.monotonic()) * 1000) + 1)

    def _check_stalls(self) -> None:
        now = time.monotonic()
        for w in list(self.workers.values()):
            for when, why in w.deadlines(self.stall_timeout):
                if now > when:
                    w.kill(why)

    # -- dispatch ------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        if self.broken is not None:
            return
        with self.lock:
            if self.cancel_pending and (self.shutting_down or _exiting):
                for work_id in self.queue:
                    item = self.pending.pop(work_id, None)
                    if item is not None:
                        item.future.cancel()
                self.queue.clear()
            while self.queue:
                worker = self._pick()
                if worker is None:
                    return
                work_id = self.queue.popleft()
                item = self.pending.get(work_id)
                if item is None:
                    continue
                if not item.started and not item.future.set_running_or_notify_cancel():
                    del self.pending[work_id]
                    continue
                item.started = True
                worker.inflight.append(work_id)
                worker.assigned += 1
                worker.channel.send(P.frame(P.CALL_CLOUD if item.cloud else P.CALL_PLAIN,
                                            work_id, item.blob))
                self._watch_writes(worker)

    def _pick(self) -> WorkerHandle | None:
        """The worker for the next call: an idle one, else a new one, else the least busy."""
        takers = [w for w in self.workers.values() if w.can_take()]
        for w in takers:
            if not w.inflight:
                return w
        if not self._launched and len(self.workers) < self.max_workers:
            self._request_workers()
        if self._launched:
            return self._adopt(self._launched.popleft())
        busy = [w for w in takers if len(w.inflight) < DEPTH]
        return min(busy, key=lambda w: len(w.inflight)) if busy else None

    def _request_workers(self) -> None:
        """Asks the zygote for every worker the queued calls need (up to max_workers) at once,
        before reading any pid: the zygote forks them back to back while the owner gives each
        its call as its pid arrives, instead of a round trip per worker."""
        room = self.max_workers - len(self.workers)
        with self.lock:
            wanted = sum(1 for _ in itertools.islice(
                (w for w in self.queue if w in self.pending
                 and not self.pending[w].future.cancelled()), room))
        for _ in range(max(wanted, 1)):
            launch = self._spawn()
            if launch is None:
                return
            self._launched.append(launch)

    def _spawn(self) -> tuple[int, int, int] | None:
        """Asks the zygote for one worker; (its status pipe, call pipe, result pipe), owner's
        ends, or None if the zygote is gone (the pool is then broken) or takes no more requests
        until it has read those already sent."""
        zygote = self.session.zygote
        call_r, call_w = os.pipe()
        result_r, result_w = os.pipe()
        try:
            if zygote is None:
                raise ZygoteGone(0, "the pool has been shut down")
            status_fd = zygote.launch(P.WORKER, [call_r, result_w])
        except ZygoteGone as e:
            for fd in (call_w, result_r):
                os.close(fd)
            if isinstance(e, ZygoteBusy) and self._launched:
                # The rest of the batch waits: the pids of those sent are read first, each with
                # the zygote's deadline (a stopped zygote is killed, the pool breaks).
                return None
            self._not_forked(str(e))
            return None
        finally:
            os.close(call_r)
            os.close(result_w)
        return status_fd, call_w, result_r

    def _adopt(self, launch: tuple[int, int, int]) -> WorkerHandle | None:
        """The worker of a request, once the zygote has answered with its pid (at most the
        zygote's timeout: a zygote that does not answer is killed, and the pool breaks)."""
        status_fd, call_w, result_r = launch
        zygote = self.session.zygote
        pid: int | None   # None: no worker was forked, and ``why`` says why
        try:
            pid = P.read_signed(status_fd, P.ZYGOTE_TIMEOUT)
            why = None if pid >= 0 else f"the zygote's fork() failed: {os.strerror(-pid)}"
        except EOFError:
            pid, why = None, "the zygote exited before it forked the worker"
        except TimeoutError as e:
            pid, why = None, f"{e} (stopped by a process of the unit?): it was killed"
            if zygote is not None:
                zygote.kill()
        if why is not None or pid is None or zygote is None:
            for fd in (call_w, result_r, status_fd):
                os.close(fd)
            self._not_forked(why or "the pool has been shut down")
            return None
        worker = WorkerHandle(pid, status_fd, Channel(call_w, result_r, self.max_frame),
                              zygote.child_pidfd(pid), self.max_tasks)
        self.workers[pid] = worker
        self._watch(result_r, worker, "result")
        self._watch(status_fd, worker, "status")
        return worker

    def _adopt_launched(self) -> None:
        """Every worker asked for and not adopted yet (the pool stops or broke meanwhile): each
        is then stopped or killed like any other, never left running unseen."""
        while self._launched:
            self._adopt(self._launched.popleft())

    def _watch(self, fd: int, worker: WorkerHandle, role: str) -> None:
        self._by_fd[fd] = (worker, role)
        self._poll.register(fd, select.POLLOUT if role == "call" else select.POLLIN)

    def _forget(self, fd: int) -> None:
        if self._by_fd.pop(fd, None) is not None:
            self._poll.unregister(fd)

    def _watch_writes(self, worker: WorkerHandle) -> None:
        """The call pipe is watched while the worker's outbox holds bytes the pipe did not take."""
        fd = worker.channel.call_fd
        watched = fd in self._by_fd
        if worker.channel.wants_to_write() and not watched:
            self._watch(fd, worker, "call")
        elif watched and not worker.channel.wants_to_write():
            self._forget(fd)

    # -- results -------------------------------------------------------------------------------
    def _receive(self, worker: WorkerHandle) -> None:
        channel = worker.channel
        if channel.result_fd < 0 or channel.eof:
            return
        try:
            for kind, work_id, payload in channel.receive():
                self._on_frame(worker, kind, work_id, payload)
        except ProtocolError as e:
            worker.kill(f"it wrote {e} on its result pipe")
            self._stop_reading(worker)
            return
        if channel.eof:
            self._stop_reading(worker)
            if not worker.stopping and not worker.retiring():
                worker.eof_at = time.monotonic()
            worker.stopping = True   # it answers nothing more: no more calls to it

    def _stop_reading(self, worker: WorkerHandle) -> None:
        self._forget(worker.channel.result_fd)

    def _on_frame(self, worker: WorkerHandle, kind: int, work_id: int, payload: bytes) -> None:
        if kind == P.INIT_FAILED:
            text = _exception_text(self.policy, payload)
            worker.kill()
            self._break(f"the initializer failed in worker {worker.pid} of unit "
                        f"{self.unit_name}: {text}")
            return
        if not worker.inflight or worker.inflight[0] != work_id:
            raise ProtocolError(f"a result for work item {work_id}, which it was not running")
        worker.inflight.popleft()
        with self.lock:
            item = self.pending.pop(work_id, None)
        if item is None:
            return
        try:
            if kind == P.RESULT:
                outcome: Any = self.policy.loads(payload)
            else:
                outcome = self.policy.rebuild_exception(payload)
        except ResultRefused as e:
            kind, outcome = P.EXCEPTION, e
        except BaseException as e:   # noqa: BLE001 - bytes from the unit: any error is theirs
            # (a SystemExit too, from a trusted pickle: it must not end this thread with the
            # item already taken from pending, its future then waiting for ever)
            kind, outcome = P.EXCEPTION, ResultRefused(
                f"worker {worker.pid} sent a result the owner could not read: {e!r}")
        try:
            if kind == P.RESULT:
                item.future.set_result(outcome)
            else:
                item.future.set_exception(outcome)
        except InvalidStateError:   # cancelled meanwhile
            pass

    # -- exits and deaths ----------------------------------------------------------------------
    def _reap(self, worker: WorkerHandle, blocking: bool = False) -> None:
        """Handles the worker's exit, once the zygote has reported it (``blocking``: waits for
        that report, but never longer than the zygote's timeout)."""
        if not blocking and not select.select([worker.status_fd], [], [], 0)[0]:
            return
        try:
            worker.exitcode = P.read_signed(worker.status_fd, P.ZYGOTE_TIMEOUT)
        except (OSError, EOFError, TimeoutError):
            worker.exitcode = P.NOT_FORKED_EXIT_STATUS   # the zygote itself died, or hung
        for fd in (worker.status_fd, worker.channel.result_fd):
            self._forget(fd)
        if not worker.channel.closed_calls:   # (a closed one was forgotten as it closed)
            self._forget(worker.channel.call_fd)
        del self.workers[worker.pid]
        worker.close()
        expected = (worker.stopping or worker.retiring()) and not worker.inflight \
            and worker.violation is None and worker.exitcode == 0
        if not expected and self.broken is None:
            self._died(worker)

    def _died(self, worker: WorkerHandle) -> None:
        error = self._diagnose(worker)
        if self._replace and self.session.zygote_gone() is None:
            if worker.inflight:
                with self.lock:
                    item = self.pending.pop(worker.inflight.popleft(), None)
                    # the calls it held but never started go to the others
                    self.queue.extendleft(reversed(worker.inflight))
                if item is not None:
                    try:
                        item.future.set_exception(error)
                    except InvalidStateError:
                        pass
            return
        self._break(error.args[0])

    def _diagnose(self, worker: WorkerHandle) -> _deaths.WorkerKilled:
        assert worker.exitcode is not None   # _reap() read it before it called _died()
        counters = self.session.read_counters()
        seen = self.session.counters_seen
        self.session.counters_seen = counters
        cause = _deaths.classify(worker.exitcode, counters.oom_kills - seen.oom_kills)
        message = _deaths.describe(cause, worker.exitcode, worker.pid, self.unit_name,
                                   self.limits, counters.pids_max_hits - seen.pids_max_hits)
        if worker.violation is not None:
            cause = _deaths.PROTOCOL
            message = (f"worker {worker.pid} of unit {self.unit_name} was killed by the owner: "
                       f"{worker.violation}")
        gone = self.session.zygote_gone()
        stopped = self.session.unit_stopped()
        deadline = time.monotonic() + _UNIT_STOP_GRACE
        while gone is not None and stopped is None and time.monotonic() < deadline:
            # The zygote died: in a unit's stop, the anchor is about to (SIGTERM to all of them).
            time.sleep(0.02)
            stopped = self.session.unit_stopped()
        new_oom_kills = counters.oom_kills - seen.oom_kills
        if stopped is not None and new_oom_kills:
            # The unit's memory.events counted an OOM kill (this worker, or another process of
            # the unit); systemd then stopped the unit for it (the user's OOMPolicy=stop), and
            # with it whatever was left. That kill is the cause.
            cause = _deaths.OOM
            message = (f"{stopped[0].upper()}{stopped[1:]}: the unit's memory limit was reached "
                       f"(MemoryMax={self.limits.get('MemoryMax', '?')}) and the kernel's OOM "
                       f"killer ended a process of it ({new_oom_kills} oom_kill in its "
                       "memory.events), for which systemd stops the unit (OOMPolicy=stop; "
                       f"OOMPolicy=continue lets the pool outlive it); worker {worker.pid} "
                       f"{_deaths.how_it_ended(worker.exitcode)}")
        elif stopped is not None:
            # The unit's stop killed it (systemctl stop, RuntimeMaxSec=, its anchor killed):
            # that is the cause, whatever the worker's own status suggests.
            cause = _deaths.UNIT_STOPPED
            message = (f"{stopped[0].upper()}{stopped[1:]}; worker {worker.pid} "
                       f"{_deaths.how_it_ended(worker.exitcode)} with it")
        elif gone is not None:
            message += f"; {gone}"
        return _deaths.WorkerKilled(message, cause=cause, exitcode=worker.exitcode,
                                    pid=worker.pid, unit=self.unit_name)

    def _not_forked(self, why: str) -> None:
        counters = self.session.read_counters()
        new_pids = counters.pids_max_hits - self.session.counters_seen.pids_max_hits
        gone = self.session.zygote_gone()
        message = f"no worker could start in unit {self.unit_name}: {why}"
        if gone is not None:
            message += f"; {gone}"
        if new_pids:
            message += (f"; the unit's task limit (TasksMax={self.limits.get('TasksMax', '?')})"
                        f" was hit {new_pids} time(s): the anchor and the pool's zygote are two"
                        " of its tasks")
        self._break(message)

    def _break(self, why: str, cause: list[str] | None = None) -> None:
        """Every pending future fails with a BrokenProcessPool of its own (one shared exception
        would gather a traceback frame per result() call); every worker is killed."""
        message = f"{why}; the process pool is not usable anymore"

        def error() -> BrokenProcessPool:
            e = BrokenProcessPool(message)
            if cause is not None:
                e.__cause__ = _cpython.RemoteTraceback(f"\n'''\n{''.join(cause)}'''")
            return e

        with self.lock:
            if self.broken is not None:
                return
            self.broken = message
            items = list(self.pending.values())
            self.pending.clear()
            self.queue.clear()
        for item in items:
            try:
                item.future.set_exception(error())
            except InvalidStateError:   # cancelled meanwhile
                pass
        for worker in self.workers.values():
            worker.stopping = True
            worker.kill()


def _exception_text(policy: ResultPolicy, payload: bytes) -> str:
    try:
        exc = policy.rebuild_exception(payload)
    except Exception:   # noqa: BLE001 - from the unit: only for the message
        return "(its exception could not be read)"
    return f"{type(exc).__name__}: {exc}"


# -- interpreter exit: every pool finishes its work, as ProcessPoolExecutor's do -------------------
_running: "weakref.WeakSet[PoolManager]" = weakref.WeakSet()
_exiting = False


@atexit.register
def _finish_at_exit() -> None:
    global _exiting
    _exiting = True
    managers = list(_running)
    for manager in managers:
        manager.wakeup()
    for manager in managers:
        manager.join()

"""The pool's manager thread and its count of idle workers: what concurrentd changes in
ProcessPoolExecutor's machinery, and why.

- A dead worker is diagnosed (see _deaths); with on_worker_death="replace" only its task fails.
- The wait for a result keeps one poll object across calls (see UnitManagerThread._wait).
- The idle-worker count is a deque of tokens (see IdleWorkers).
- A worker's exit is handled only once its spawn is recorded (see Spawns).

Both speed-ups serve a submit loop, whose pace is the manager thread's: it handles every result.
"""

from __future__ import annotations

import collections
import contextlib
import select
import threading
import traceback
from concurrent.futures import InvalidStateError
from concurrent.futures import process as _cf_process
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING

from . import _deaths, _taskboard

if TYPE_CHECKING:
    from .executor import TransientUnitPoolExecutor


class IdleWorkers:
    """ProcessPoolExecutor's count of idle workers (its ``_idle_worker_semaphore``) for one deque
    operation where threading.Semaphore takes a round of its Condition (~1 µs).

    The pool releases one per result, in the manager thread, and, as its workers are not forks of
    the owner, takes one per submit without blocking, to decide whether to spawn a worker: the
    only two uses in CPython 3.10 to 3.13, both on the busiest threads of a submit loop. A token is
    an item of a deque (append and pop are atomic); there are at most max_workers of them, as
    there cannot be more idle workers than workers (a semaphore counts past that, which only
    delays the spawn of a replacement).
    """

    def __init__(self, max_workers: int):
        self._tokens: collections.deque = collections.deque(maxlen=max_workers)

    def release(self, n: int = 1) -> None:
        for _ in range(n):
            self._tokens.append(None)

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        if blocking:
            raise NotImplementedError("concurrentd's idle-worker count is only taken without "
                                      "blocking (as ProcessPoolExecutor does up to Python 3.13)")
        try:
            self._tokens.pop()
        except IndexError:
            return False
        return True


class Spawns:
    """The workers being spawned, so that the manager thread handles a worker's exit only once
    the executor has recorded the worker.

    A worker handed over by the zygote runs at once, and the manager thread runs from the pool's
    start: a worker that exits after its last task (max_tasks_per_child) can report its exit while
    the thread that spawned it has not yet recorded it in ``executor._processes``, where
    ProcessPoolExecutor's manager thread looks it up (a KeyError that would end that thread).
    """

    def __init__(self):
        self._changed = threading.Condition()
        self._in_progress = 0

    @contextlib.contextmanager
    def spawning(self):
        with self._changed:
            self._in_progress += 1
        try:
            yield
        finally:
            with self._changed:
                self._in_progress -= 1
                self._changed.notify_all()

    def await_recorded(self, pid: int, processes: dict) -> None:
        """Returns once ``pid`` is in ``processes``, or no spawn is in progress anymore."""
        with self._changed:
            self._changed.wait_for(lambda: pid in processes or not self._in_progress)


class UnitManagerThread(_cf_process._ExecutorManagerThread):
    """concurrent.futures' manager thread, plus: a dead worker is diagnosed (see _deaths), and
    with on_worker_death="replace" only the task it ran fails and a new worker takes its place."""

    def __init__(self, executor: "TransientUnitPoolExecutor"):
        super().__init__(executor)
        self._replace = executor._on_worker_death == "replace"
        self._resources = executor._resources
        self._unit_name = executor.unit.name
        self._limits = executor._limits
        self._spawns = executor._spawns
        self._diagnosis: str | None = None
        self._polled: tuple[int, ...] = ()   # the fds self._poll watches, in that order
        self._poll = select.poll()
        self._wakeup_poll: select.poll | None = None

    def wait_result_broken_or_wakeup(self):
        result_item, is_broken, cause = self._wait()
        if not is_broken:
            return result_item, is_broken, cause
        dead = [(pid, p) for pid, p in list(self.processes.items()) if p.exitcode is not None]
        if not dead:   # broken for another reason (a result that could not be read)
            return result_item, is_broken, cause
        deaths = [self._diagnose(pid, p) for pid, p in dead]
        if self._replace and all(work_id >= 0 for _, work_id in deaths) and \
                self._resources.zygote_gone() is None:
            self._fail_and_replace(dead, deaths)
            return None, False, None
        self._diagnosis = "; ".join(error.args[0] for error, _ in deaths)
        return result_item, is_broken, cause

    def _wait(self):
        """ProcessPoolExecutor's wait_result_broken_or_wakeup (3.11 to 3.13), for less Python.

        Its wait goes through multiprocessing.connection.wait, which builds, fills and closes a
        selector on every call, and once more to drain the wakeup pipe (Connection.poll): the
        manager thread's largest cost per result in a submit loop. Here one poll object serves all
        calls, registered again only when the set of fds changes (a worker started or ended; poll
        watches numbers, so an fd number reused by a new worker is still right), and the wakeup
        pipe is drained only when poll found it readable: a wakeup written after the poll wakes
        the next one. What is returned, and when, is as before.
        """
        result_reader = self.result_queue._reader
        wakeup = self.thread_wakeup
        assert not wakeup._closed
        result_fd, wakeup_fd = result_reader.fileno(), wakeup._reader.fileno()
        fds = (result_fd, wakeup_fd, *[p.sentinel for p in list(self.processes.values())])
        if fds != self._polled:
            self._poll = select.poll()
            for fd in fds:
                self._poll.register(fd, select.POLLIN)
            self._polled = fds
        ready = {fd for fd, _ in self._poll.poll()}

        cause = None
        is_broken = True
        result_item = None
        if result_fd in ready:
            try:
                result_item = result_reader.recv()
                is_broken = False
            except BaseException as e:   # noqa: BLE001 - as ProcessPoolExecutor: the pool breaks
                cause = traceback.format_exception(type(e), e, e.__traceback__)
            exit_pid = getattr(result_item, "exit_pid", None)   # 3.11+: its last task
            if exit_pid is not None and exit_pid not in self.processes:
                self._spawns.await_recorded(exit_pid, self.processes)
        elif wakeup_fd in ready:
            is_broken = False
        if wakeup_fd in ready:
            # Without the shutdown lock, as CPython since gh-105829: only this thread reads the
            # pipe or closes it.
            if self._wakeup_poll is None:
                self._wakeup_poll = select.poll()
                self._wakeup_poll.register(wakeup_fd, select.POLLIN)
            while self._wakeup_poll.poll(0):
                wakeup._reader.recv_bytes()
        return result_item, is_broken, cause

    def _diagnose(self, pid: int, p) -> tuple[_deaths.WorkerKilled, int]:
        """(the error, the work id the worker held or a negative state; IDLE untracked)."""
        counters = self._resources.read_counters()
        new_ooms = counters.oom_kills - self._resources.counters_seen.oom_kills
        new_pids = counters.pids_max_hits - self._resources.counters_seen.pids_max_hits
        self._resources.counters_seen = counters
        gone = self._resources.zygote_gone()
        not_forked = getattr(p._popen, "not_forked", None)
        if not_forked is not None:
            cause = _deaths.ZYGOTE
            message = f"no worker could start in unit {self._unit_name}: {gone or not_forked}"
            if new_pids:
                message += f"; the unit's task limit (TasksMax={self._limits.get('TasksMax', '?')})" \
                           f" was hit {new_pids} time(s): the anchor and the pool's zygote are two" \
                           " of its tasks"
        else:
            cause = _deaths.classify(p.exitcode, new_ooms)
            message = _deaths.describe(cause, p.exitcode, pid, self._unit_name, self._limits,
                                       new_pids)
            if gone is not None:
                message += f"; {gone}"
        error = _deaths.WorkerKilled(message, cause=cause, exitcode=p.exitcode, pid=pid,
                                     unit=self._unit_name)
        board = p._board
        return error, (board.get() if board is not None else _taskboard.IDLE)

    def _fail_and_replace(self, dead, deaths) -> None:
        for (pid, p), (error, work_id) in zip(dead, deaths):
            self.processes.pop(pid, None)
            p.join()
            work_item = self.pending_work_items.pop(work_id, None)
            if work_item is not None:
                try:
                    work_item.future.set_exception(error)
                except InvalidStateError:   # cancelled meanwhile
                    pass
                del work_item
        # One successor per dead worker. Not _adjust_process_count(): it spawns nobody while
        # the idle-worker semaphore counts past results, and the pool could run dry.
        executor = self.executor_reference()
        if executor is not None:
            with self.shutdown_lock:
                for _ in dead:
                    executor._spawn_process()
            del executor

    def terminate_broken(self, cause):
        if self._diagnosis is None:
            return super().terminate_broken(cause)
        # Fail the pending futures with the diagnosis before the base class would (with its
        # generic message): a caller waiting on one wakes up with the right words.
        message = f"{self._diagnosis}; the process pool is not usable anymore"
        error = BrokenProcessPool(message)
        if cause is not None:
            error.__cause__ = _cf_process._RemoteTraceback(f"\n'''\n{''.join(cause)}'''")
        executor = self.executor_reference()
        if executor is not None:
            executor._death_message = message
            executor._broken = message
        for work_item in self.pending_work_items.values():
            try:
                work_item.future.set_exception(error)
            except InvalidStateError:   # cancelled meanwhile
                pass
        self.pending_work_items.clear()
        super().terminate_broken(cause)

"""TransientUnitPoolExecutor: a ProcessPoolExecutor whose workers run inside a systemd unit.

Data flow (the arrows of concurrent.futures.process are unchanged; what concurrentd adds is marked *):

    owner process                                          systemd (PID 1)
    ─────────────                                          ───────────────
    TransientUnitPoolExecutor(properties)
      * StartTransientUnit(anchor, properties) ──D-Bus──▶  sets the unit up (~10 ms), meanwhile:
      ProcessPoolExecutor.__init__: the call and result queues
      * Zygote: forked once, before any thread, inheriting the queues; waits for the anchor
      * JobRemoved ◀──────────────────────────────────────  unit: anchor (main process), confined
      * zygote: EntryPlan.from_pid(anchor) reads /proc/<anchor> (namespaces, cgroups, creds,
        seccomp…) and enters the unit; then, while it forks its first worker-to-be, the owner
        reads its own plan (no seccomp filters)
    submit(fn) ─▶ pending work items ─▶ call queue ─┐
                                                    │      zygote ─fork─▶ worker, confined as
                  executor manager thread ◀─ result │                     the zygote already is
                       (spawns workers through      └────────────▶  _process_worker loop
                        the zygote, detects deaths)                  (runs fn inside the unit)
    shutdown()  ─▶ workers exit ─▶ * zygote ends ─▶ * StopUnit, wait until gone

A worker that dies is diagnosed from its exit status and the unit's cgroup counters (OOM kills,
the pids limit), and the BrokenProcessPool says which unit, which signal, and why.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import weakref
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import process as _cf_process
from typing import Any, Callable, Iterable, Mapping

from . import _deaths, _payload, _pythonpath
from ._context import UnitContext
from ._manager import IdleWorkers, Spawns, UnitManagerThread
from ._entry import EntryPlan, anchor_argv
from ._entry.enter import anchor_exited
from ._entry.plan import AnchorGone
from ._unitfiles import add_read_only_binds, anchor_for_unit
from ._zygote import Zygote
from .systemd import Systemd, Unit

__all__ = ["TransientUnitPoolExecutor", "PoolUnit"]


class PoolUnit:
    """The unit a pool runs in, read live from systemd.

    Attributes:
        name: the unit's name, e.g. ``concurrentd-1234-1-89abcdef.service``.
    """

    def __init__(self, unit: Unit, owned: bool):
        self._unit = unit
        self.name: str = unit.name
        self.owned = owned   # started by the pool (and stopped by it), or joined

    @property
    def Id(self) -> bytes:   # noqa: N802 - pystemd's spelling, kept for compatibility
        """The unit's name as bytes, as pystemd's unit objects give it."""
        return self.name.encode()

    @property
    def main_pid(self) -> int:
        return self._unit.main_pid

    @property
    def control_group(self) -> str:
        return self._unit.control_group

    def get(self, prop: str, interface: str = "Service") -> Any:
        """Reads one property back from systemd (e.g. ``get("CPUQuotaPerSecUSec")``)."""
        return self._unit.get(prop, interface)

    @property
    def properties(self) -> dict[str, Any]:
        """Every property of the unit's Unit and Service interfaces, as systemd reports them."""
        return {**self._unit.get_all("Unit"), **self._unit.get_all("Service")}

    def __repr__(self) -> str:
        return f"<PoolUnit {self.name}>"


class _Resources:
    """What a pool holds outside Python: the D-Bus connection, the unit, the plan, the zygote.
    Released once, in reverse order, by whoever gets there first (shutdown, the garbage
    collector, or the interpreter's exit)."""

    def __init__(self):
        self.systemd: Systemd | None = None
        self.unit: Unit | None = None
        self.owned = True
        self.plan: EntryPlan | None = None
        self.path_map: _pythonpath.PathMap = ()
        self.zygote: Zygote | None = None
        self.counters_seen = _deaths.Counters()
        self.manager: threading.Thread | None = None   # the executor's, once it runs
        self._lock = threading.Lock()

    def cgroup_dirs(self) -> list[str]:
        return [os.path.dirname(p) for p in self.plan.cgroup_procs] if self.plan else []

    def read_counters(self) -> _deaths.Counters:
        return _deaths.read_counters(self.cgroup_dirs())

    def zygote_gone(self) -> str | None:
        """Why the zygote cannot fork workers anymore, or None while it can."""
        zygote, plan = self.zygote, self.plan
        if zygote is None or plan is None:
            return None
        # The anchor first: systemd ends the rest of the unit after it, in no set order, so a
        # worker may be found dead while the zygote still runs.
        if not plan.anchor_alive():
            return ("the unit has stopped: its main process (the anchor, pid "
                    f"{plan.anchor_pid}) exited, and systemd ended the rest of it")
        if zygote.alive():
            return None
        return f"the pool's zygote (pid {zygote.pid}), which forks its workers, has exited"

    def release(self) -> None:
        """Ends the zygote, closes the plan, stops the unit (if the pool started it), closes the
        connection. A second call waits for the first, then does nothing."""
        with self._lock:
            zygote, plan, unit, systemd = self.zygote, self.plan, self.unit, self.systemd
            self.zygote = self.plan = self.unit = self.systemd = None
            # The manager thread holds these resources: without this, the two form a cycle that
            # keeps the workers' Popen objects, and their fds, until the garbage collector runs.
            self.manager = None
            errors = []
            for step, action in (("closing the zygote", zygote and zygote.close),
                                 ("closing the entry plan", plan and plan.close),
                                 ("stopping the unit", unit and self.owned and unit.stop),
                                 ("closing the D-Bus connection", systemd and systemd.close)):
                if action:
                    try:
                        action()
                    except Exception as e:   # noqa: BLE001 - release the rest, then report
                        errors.append(f"{step}: {e}")
        if errors:
            raise RuntimeError("releasing the pool's resources failed: " + "; ".join(errors))

    def release_after_work(self, block: bool) -> None:
        """release() once the executor's manager thread has finished the submitted work: at once
        with ``block``, else from a helper thread (shutdown(wait=False), garbage collection)."""
        manager = self.manager
        if manager is None or not manager.is_alive() or manager is threading.current_thread():
            self.release()
        elif block:
            manager.join()
            self.release()
        else:
            threading.Thread(target=self.release_after_work, args=(True,),
                             name="concurrentd-release", daemon=True).start()


def start_resources(properties: Mapping[str, Any], *, unit_name: str | None = None,
                    unit: str | None = None,
                    prepare: Callable[[], tuple[list, int]] | None = None,
                    meanwhile: Callable[[_Resources], None] | None = None) -> _Resources:
    """Starts (or joins) the unit, forks the zygote while systemd sets the unit up, and returns
    once the zygote has read the unit's anchor (and, for a pool, entered the unit).

    Args:
        prepare: a pool's preparations, made while systemd starts the unit, before the zygote's
            fork (the caller has no thread yet): returns the objects the zygote's workers inherit
            (the pool's queues) and the pool's size; the zygote then enters the unit. None: the
            zygote stays outside and each worker enters on its own (TransientUnitProcess).
        meanwhile: called once the zygote is forked, with the resources so far (the unit, the
            zygote), while systemd may still be setting the unit up: a pool starts its threads.

    On failure, whatever was started is released before the error is raised.
    """
    res = _Resources()
    try:
        res.systemd = Systemd.connect()
        starting = None
        if unit is None:
            python_binds, res.path_map = _pythonpath.plan_binds(properties)
            properties = add_read_only_binds(properties, python_binds)
            argv, properties = anchor_for_unit(anchor_argv(os.getpid()), properties)
            anchor_exe = argv[0]
            starting = res.systemd.begin_service(argv, properties, name=unit_name)
            res.unit = starting.unit   # from here on, release() stops it
        else:
            res.owned = False
            res.unit = res.systemd.unit(unit)
            main_pid = res.unit.main_pid
            if not main_pid:
                raise ValueError(f"unit {unit} has no main process to join (is it running?)")
            anchor_exe = _program_of(main_pid)
        # systemd sets the unit up (~10 ms with a sandbox): meanwhile, the pool's queues and
        # the zygote's fork, which waits for the anchor.
        inherit, max_workers = prepare() if prepare is not None else (None, 0)
        res.zygote = Zygote(res.path_map, inherit=inherit, max_workers=max_workers)
        if meanwhile is not None:
            meanwhile(res)
        if starting is not None:
            EntryPlan.rehearse()   # the owner reads the anchor too, once the unit runs
            starting.wait()
            main_pid = starting.main_pid
            if not main_pid:   # it ran, and has exited already
                raise anchor_exited(main_pid)
        res.zygote.enter(main_pid, anchor_exe)
        res.zygote.await_entered()
        # The owner's own plan, read while the zygote forks its first worker-to-be: the cgroups
        # to watch, the steps to name. Without the seccomp filters: only one process at a time
        # can copy them.
        try:
            res.plan = EntryPlan.from_pid(main_pid, anchor_exe=anchor_exe, seccomp=False)
        except AnchorGone as e:
            raise anchor_exited(main_pid) from e
        res.counters_seen = res.read_counters()
        res.zygote.await_ready(res.plan)
    except BaseException:
        res.release()
        raise
    return res


def _program_of(pid: int, timeout: float = 5.0) -> str:
    """The executable of a joined unit's main process, once it runs it. A Type=simple unit is
    reported started as soon as systemd has forked that process, which is then still systemd's
    own child (systemd's executable, or systemd-executor's), not yet confined: wait for its exec."""
    systemd = os.readlink("/proc/1/exe")
    not_yet = {systemd, os.path.join(os.path.dirname(systemd), "systemd-executor")}
    deadline = time.monotonic() + timeout
    while True:
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except FileNotFoundError:
            raise anchor_exited(pid) from None
        if exe not in not_yet:
            return exe
        if time.monotonic() > deadline:
            raise ValueError(f"the unit's main process (pid {pid}) has not exec'd its program "
                             f"{timeout:.0f} s after systemd forked it: it is not confined yet")
        time.sleep(0.001)


class TransientUnitPoolExecutor(ProcessPoolExecutor):
    """A ProcessPoolExecutor whose workers run confined in a transient systemd unit.

    Args:
        max_workers: the number of workers (default: the CPUs the owner may use).
        properties: the unit's settings, as for ``systemd-run -p``: ``{"User": "nobody",
            "CPUQuota": "20%", "PrivateNetwork": True, …}``. Strings use systemd's syntax; Python
            values (bool, int, float for CPUQuota, lists, pathlib.Path, timedelta) work too.
        ns_options: another name for ``properties`` (pystemd's); give one or the other.
        unit_name: the transient unit's name (default: unique, ``concurrentd-<pid>-…service``).
        unit: instead of starting a unit, join this running one (it is never stopped by the pool).
        initializer, initargs: called in each worker, inside the unit, before its first task.
        max_tasks_per_child: replace a worker after this many tasks (Python 3.11+).
        on_worker_death: "break" (default): a worker that dies breaks the pool, as in
            ProcessPoolExecutor, with a BrokenProcessPool that says which worker of which unit
            died of what (the unit's OOM killer, its seccomp filter, a signal). "replace": only
            the task that worker ran fails, with WorkerKilled (a BrokenProcessPool that carries
            the cause), and a new worker takes its place.

    Raises:
        ValueError: an unknown property or a bad value (nothing was started).
        concurrentd.systemd.SystemdError: systemd refused the unit (the D-Bus error name and
            systemd's message are on the exception).
        concurrentd.systemd.UnitStartError: the unit's start job failed.
    """

    def __init__(self, max_workers: int | None = None, properties: Mapping[str, Any] | None = None,
                 *, ns_options: Mapping[str, Any] | None = None, unit_name: str | None = None,
                 unit: str | None = None, initializer: Callable | None = None,
                 initargs: Iterable = (), max_tasks_per_child: int | None = None,
                 on_worker_death: str = "break"):
        if properties is not None and ns_options is not None:
            raise TypeError("give properties= or ns_options= (the same thing), not both")
        properties = dict(properties if properties is not None else ns_options or {})
        if unit is not None and (properties or unit_name):
            raise TypeError("unit= joins an existing unit: properties= and unit_name= do not apply")
        # Checked before the unit starts, with ProcessPoolExecutor's exception types.
        for name, value in (("max_workers", max_workers), ("max_tasks_per_child", max_tasks_per_child)):
            if value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int (not {type(value).__name__})")
            if value <= 0:
                raise ValueError(f"{name} must be greater than 0 (not {value})")
        if max_tasks_per_child is not None and sys.version_info < (3, 11):
            raise TypeError("max_tasks_per_child needs Python 3.11 or newer")
        if on_worker_death not in ("break", "replace"):
            raise ValueError("on_worker_death must be 'break' (as ProcessPoolExecutor) or "
                             f"'replace' (not {on_worker_death!r})")
        self._on_worker_death = on_worker_death
        self._limits = {k: str(properties[k]) for k in ("MemoryMax", "TasksMax") if k in properties}
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        kwargs = {} if max_tasks_per_child is None else {"max_tasks_per_child": max_tasks_per_child}

        def prepare() -> tuple[list, int]:
            # ProcessPoolExecutor's own set-up: the queues, which the zygote inherits (never
            # pickled, nothing unpickled outside the unit); no thread yet.
            ProcessPoolExecutor.__init__(
                self, max_workers, mp_context=UnitContext(track_tasks=on_worker_death == "replace"),
                initializer=None if initializer is None else
                _payload.Task(initializer, tuple(initargs)), **kwargs)
            self._idle_worker_semaphore = IdleWorkers(self._max_workers)
            self._spawns = Spawns()
            return [self._call_queue, self._result_queue, self._initializer], self._max_workers

        def meanwhile(res: _Resources) -> None:
            # The zygote is forked: the pool may have threads now. Starting them costs ~1 ms
            # each (the manager thread, the call queue's feeder), which the first submit would
            # otherwise wait for; here they start while systemd sets the unit up.
            self._resources = res
            self._mp_context.zygote = res.zygote
            self.unit = PoolUnit(res.unit, res.owned)
            self._start_executor_manager_thread()
            with self._call_queue._notempty:   # as Queue.put() starts it, at the first put
                if self._call_queue._thread is None:
                    self._call_queue._start_thread()

        try:
            res = start_resources(properties, unit_name=unit_name, unit=unit, prepare=prepare,
                                  meanwhile=meanwhile)
        except BaseException:
            if getattr(self, "_executor_manager_thread", None) is not None:
                ProcessPoolExecutor.shutdown(self, wait=True)   # no worker ran: threads only
            raise
        # Collected without shutdown(): the manager thread still finishes the submitted work,
        # so the unit must outlive it (ProcessPoolExecutor's own semantics).
        self._finalizer = weakref.finalize(self, res.release_after_work, False)

    # ProcessPoolExecutor keeps why the pool broke in _broken; once a death is diagnosed, its
    # words replace the generic ones, whichever thread writes last.
    _death_message: str | None = None

    @property
    def _broken(self):
        return self.__broken

    @_broken.setter
    def _broken(self, value):
        self.__broken = (self._death_message or value) if value else value

    def _start_executor_manager_thread(self):
        # As ProcessPoolExecutor's, with the manager thread that diagnoses dead workers.
        if self._executor_manager_thread is None:
            self._executor_manager_thread = UnitManagerThread(self)
            self._resources.manager = self._executor_manager_thread
            self._executor_manager_thread.start()
            _cf_process._threads_wakeups[self._executor_manager_thread] = \
                self._executor_manager_thread_wakeup

    def _spawn_process(self):
        with self._spawns.spawning():
            super()._spawn_process()
        # The manager thread runs from the pool's start, and it may be polling already, on the
        # fds it knew before this worker: wake it, so that it watches the new worker's sentinel
        # too. (A worker that dies before any other event would otherwise go unnoticed.)
        self._executor_manager_thread_wakeup.wakeup()

    # -- tasks -------------------------------------------------------------------------------------
    def submit(self, fn: Callable, /, *args, **kwargs):
        """Schedules ``fn(*args, **kwargs)`` in a worker; returns a Future. ``fn`` may be a lambda,
        a closure or a function defined in ``__main__``: it travels by cloudpickle if it must."""
        if self._on_worker_death != "replace":
            if _payload.travels_plain(fn, args, kwargs):
                # as ProcessPoolExecutor would send it (called directly: a submit loop feels super())
                return ProcessPoolExecutor.submit(self, fn, *args, **kwargs)
            chunk = _payload.plain_chunk(fn, args, kwargs)   # map()'s: pickled once, not in a Task
            if chunk is not None:
                return ProcessPoolExecutor.submit(self, fn, chunk)
        # (With "replace", a Task also tells the task board when the call has returned.)
        return super().submit(_payload.Task(fn, args, kwargs))

    # -- end ---------------------------------------------------------------------------------------
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """As ProcessPoolExecutor.shutdown; then the zygote ends and the unit is stopped (before
        returning with ``wait=True``, else once the last worker has exited)."""
        manager = self._executor_manager_thread   # None after an earlier shutdown(wait=False)
        super().shutdown(wait=wait, cancel_futures=cancel_futures)
        self._finalizer.detach()
        # Like ProcessPoolExecutor, a shutdown(wait=True) after a shutdown(wait=False) does not
        # wait for the work (the manager thread is no longer the executor's); the unit still
        # outlives it.
        self._resources.release_after_work(block=wait and manager is not None)

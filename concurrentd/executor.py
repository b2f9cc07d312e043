"""TransientUnitPoolExecutor: a ProcessPoolExecutor whose workers run inside a systemd unit.

Data flow:

    owner process                                          systemd (PID 1)
    ─────────────                                          ───────────────
    TransientUnitPoolExecutor(properties)
      UnitSession.begin: StartTransientUnit(anchor) ─D-Bus─▶ sets the unit up (~10 ms); meanwhile
      the zygote is forked (before any thread) and waits     the pool's manager thread starts
      UnitSession.finish: JobRemoved ◀───────────────────── unit: anchor (main process), confined
        the zygote reads /proc/<anchor> and enters the unit; forks a spare worker
    submit(fn) ─▶ the call, pickled ─▶ pending + queue ─▶ manager thread (see _manager)
                                                           │ its own pipes per worker
                  zygote ─fork─▶ worker, confined as the ──┘ calls in, results out as data
                                 zygote already is          (see _results)
    shutdown()  ─▶ workers stop ─▶ zygote ends ─▶ StopUnit, wait until gone

A worker that dies is diagnosed from its exit status and the unit's cgroup counters (OOM kills,
the pids limit), and the BrokenProcessPool says which unit, which signal, and why.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import multiprocessing
import os
import sys
import threading
import weakref
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from types import TracebackType
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping, NoReturn, ParamSpec, TypeVar

from . import _fresh, _manager, _payload, _protocol, _warm, _worker
from ._manager import PoolManager, WorkItem
from ._results import ResultPolicy
from ._session import DEFAULT_START_TIMEOUT, UnitSession, check_root
from .systemd import Unit

__all__ = ["TransientUnitPoolExecutor", "PoolUnit"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


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


#: a frame from a worker larger than this is refused (max_result_size=)
DEFAULT_MAX_RESULT_SIZE = 64 << 20
#: seconds a worker may stop in the middle of sending a result before it is killed
DEFAULT_STALL_TIMEOUT = 30.0


_LOG = logging.getLogger("concurrentd")
_said_fresh = False


def _start_mode(mp_context: Any) -> tuple[Any, bool]:
    """The pool's multiprocessing context as it reports it, and whether its zygote is a fresh
    interpreter: a fork context forks the zygote from this process; spawn or forkserver start a
    new Python; none forks, unless this process runs threads of its own (a fork could deadlock),
    and then says so once."""
    global _said_fresh
    if mp_context is None:
        threads = [t.name for t in threading.enumerate()
                   if t is not threading.main_thread() and not t.name.startswith("concurrentd-")]
        if not threads:
            return multiprocessing.get_context("fork"), False
        if not _said_fresh:
            _said_fresh = True
            _LOG.warning("concurrentd: this process runs other threads (%s): pools without "
                         "mp_context= start their zygote as a fresh interpreter, not a fork of "
                         "this process (mp_context=multiprocessing.get_context('fork') forks)",
                         ", ".join(threads[:3]) + (", …" if len(threads) > 3 else ""))
        return multiprocessing.get_context("forkserver"), True
    method = getattr(mp_context, "get_start_method", None)
    if method is None:
        raise TypeError(f"mp_context must be a multiprocessing context (not {mp_context!r})")
    if method() not in ("fork", "spawn", "forkserver"):
        raise ValueError(f"mp_context: unknown start method {method()!r}")
    return mp_context, method() != "fork"


#: a Dask worker was given the pool itself as an executor (Worker(executor=pool))
_BARE_POOL_IN_DASK = (
    "a Dask worker was given a TransientUnitPoolExecutor itself as an executor: Dask's task "
    "call returns a record of its own (the result's type, its timings), not data a pool takes "
    "back from its workers, and Worker.close() would shut the pool down. Give the worker "
    "concurrentd.dask.WorkerExecutor(pool), or register concurrentd.dask.SandboxedExecutor "
    "(a pool per worker)")


def _check_preload(preload: Iterable[str]) -> tuple[str, ...]:
    names = (preload,) if isinstance(preload, str) else tuple(preload)
    for name in names:
        if not isinstance(name, str) or importlib.util.find_spec(name) is None:
            raise ValueError(f"preload: no module named {name!r} (give module names the owner "
                             "can import, e.g. preload=['numpy'])")
    return names


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
        mp_context: how the zygote (the process inside the unit that forks every worker)
            starts. A "fork" context: forked from this process, with its modules and memory
            (fast; the initializer and initargs are inherited). "spawn" or "forkserver": a fresh
            interpreter, which has none of this process's memory and imports what calls name
            (initargs are pickled). None: fork, unless this process runs other threads (a fork
            could deadlock): then a fresh interpreter, said once in the "concurrentd" log.
        preload: modules the zygote imports before it enters the unit (while systemd sets it
            up): what every task needs, imported once.
        max_tasks_per_child: replace a worker after this many tasks (Python 3.11+).
        on_worker_death: "break" (default): a worker that dies breaks the pool, as in
            ProcessPoolExecutor, with a BrokenProcessPool that says which worker of which unit
            died of what (the unit's OOM killer, its seccomp filter, a signal). "replace": only
            the task that worker ran fails, with WorkerKilled (a BrokenProcessPool that carries
            the cause), and a new worker takes its place.
        result_types: classes (or the functions their pickles call) that results may hold
            besides the builtin values, the builtin exceptions and a small stdlib set (datetime,
            decimal, fractions, uuid, collections, pathlib, ipaddress). Results are unpickled in
            the owner as data: a worker's bytes never run code there (see SECURITY.md).
        trust_results: unpickle results with plain pickle, as ProcessPoolExecutor does: any
            object, but a worker that runs an attacker's code can then run code in the owner.
        max_result_size: the most bytes one pickled result (or exception) may take; a task whose
            result is larger fails with ValueError, and a worker that sends more is killed.
        stall_timeout: seconds a worker may stop in the middle of sending a result before the
            owner kills it (and reports its death).
        import_binds: True (default): where the unit hides the owner's sys.path, what workers
            import is bound read-only into the unit; False: nothing is bound; a list of
            directories: bound as well.
        start_timeout: seconds the unit may take to start; then it is stopped and the
            constructor raises TimeoutError.
        warm_units: take the unit prepared for these properties, if there is one, and prepare
            the next one in the background (see README, "Prepared units"). Every pool still gets
            a unit of its own. False: start one now, and prepare none.

    Raises:
        ValueError: an unknown property, a bad value, or a property concurrentd sets itself
            (Type=, ExecStart=…) (nothing was started).
        TimeoutError: the unit did not start within ``start_timeout``.
        concurrentd.systemd.SystemdError: systemd refused the unit (the D-Bus error name and
            systemd's message are on the exception).
        concurrentd.systemd.UnitStartError: the unit's start job failed.
    """

    # Two of ProcessPoolExecutor's private names hold the pool's own machinery here; typeshed
    # types them as CPython's (a _ThreadWakeup, sic, and a queue.Queue).
    _executor_manager_thread: PoolManager   # type: ignore[assignment]
    _work_ids: Iterator[int]   # type: ignore[assignment]

    def __init__(self, max_workers: int | None = None, properties: Mapping[str, Any] | None = None,
                 *, ns_options: Mapping[str, Any] | None = None, unit_name: str | None = None,
                 unit: str | None = None, mp_context: Any = None,
                 preload: Iterable[str] = (), initializer: Callable[..., object] | None = None,
                 initargs: Iterable[Any] = (), max_tasks_per_child: int | None = None,
                 on_worker_death: str = "break", result_types: Iterable[Any] = (),
                 trust_results: bool = False,
                 max_result_size: int = DEFAULT_MAX_RESULT_SIZE,
                 stall_timeout: float = DEFAULT_STALL_TIMEOUT, import_binds: Any = True,
                 start_timeout: float = DEFAULT_START_TIMEOUT, warm_units: bool = True):
        if properties is not None and ns_options is not None:
            raise TypeError("give properties= or ns_options= (the same thing), not both")
        properties = dict(properties if properties is not None else ns_options or {})
        if unit is not None and (properties or unit_name):
            raise TypeError("unit= joins an existing unit: properties= and unit_name= do not apply")
        # Checked before the unit starts, with ProcessPoolExecutor's exception types.
        for name, value in (("max_workers", max_workers), ("max_tasks_per_child", max_tasks_per_child),
                            ("max_result_size", max_result_size)):
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
        if not isinstance(start_timeout, (int, float)) or start_timeout <= 0:
            raise ValueError(f"start_timeout must be a positive number of seconds "
                             f"(not {start_timeout!r})")
        if not isinstance(stall_timeout, (int, float)) or stall_timeout <= 0:
            raise ValueError(f"stall_timeout must be a positive number of seconds "
                             f"(not {stall_timeout!r})")
        self._mp_context, fresh = _start_mode(mp_context)
        preload = _check_preload(preload)
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if isinstance(result_types, type):
            raise TypeError("result_types must be a list of classes (not one class: "
                            f"result_types=[{result_types.__qualname__}])")
        policy = ResultPolicy(result_types, trust=trust_results)
        if max_workers is None:
            max_workers = len(os.sched_getaffinity(0)) or 1
        self._max_workers = max_workers
        start = _worker.Start(initializer, tuple(initargs), max_tasks_per_child, max_result_size,
                              preload)
        # Checked before the unit starts: what a fresh interpreter is sent must pickle.
        fresh_start = _fresh.Fresh.prepare(start) if fresh else None
        # What __main__ holds as the zygote is forked (below): the workers' own from then on (a
        # fresh interpreter has none of it: classes of __main__ then travel by value).
        self._forked_main = {} if fresh else _payload.forked_main()
        limits: dict[str, str] = {k: str(properties[k]) for k in ("MemoryMax", "TasksMax")
                                  if k in properties}

        # A unit prepared for these properties is taken; then the next one is prepared. A fresh
        # interpreter has nothing of this process's to go stale: without an initializer, its
        # zygote is prepared too, entered, its first worker forked.
        check_root()
        warm = warm_units and unit is None and unit_name is None and _warm.preparable(properties)
        zygote: dict[str, Any] = dict(enters=True, max_workers=max_workers, start=start,
                                      fresh=fresh_start)   # fork_zygote's arguments
        with_zygote = fresh and initializer is None
        zygote_key = (max_workers, start) if with_zygote else None
        key = _warm.key_of(properties, import_binds, zygote_key) if warm else ""
        session = _warm.take(key) if warm else None
        if session is None:
            session = UnitSession.begin_unit(properties, unit_name=unit_name, unit=unit,
                                             import_binds=import_binds)
        ready = session.zygote is not None   # a prepared zygote: entered, its spare forked
        if not ready:
            session.fork_zygote(**zygote)
        assert session.unit is not None   # begun, or prepared: the unit is started or joined
        self.unit = PoolUnit(session.unit, session.owned)
        # The zygote is forked: the pool may have a thread now, started while systemd sets the
        # unit up.
        try:
            manager = PoolManager(
                session, max_workers=max_workers, max_tasks=max_tasks_per_child,
                policy=policy, on_worker_death=on_worker_death, unit_name=self.unit.name,
                limits=limits, max_frame=max_result_size, stall_timeout=float(stall_timeout))
            manager.start()   # (at the interpreter's exit: "can't create new thread")
        except BaseException:   # (its eventfd: EMFILE)
            session.release()
            raise
        self._executor_manager_thread = manager
        try:
            if not ready:
                session.finish(float(start_timeout))
        except BaseException:
            manager.request_shutdown()
            manager.join()
            raise
        # The next unit for these properties is prepared once this pool's unit is stopped, none
        # of its processes left: the next zygote never enters while a task of this pool, perhaps
        # an attacker's, still runs (nor do the two compete for the CPUs).
        if warm:
            manager.after_release = functools.partial(
                _warm.want, key, properties, import_binds, zygote if with_zygote else None,
                zygote_key)
        self._session = session
        self._work_ids = iter(range(1 << 62))
        # Collected without shutdown(): the manager thread still finishes the submitted work,
        # then releases the unit (ProcessPoolExecutor's own semantics).
        self._finalizer = weakref.finalize(self, manager.request_shutdown)

    @property   # CPython's: a dict of multiprocessing.Process, which it writes
    def _processes(self) -> dict[int, _manager.WorkerProcess]:   # type: ignore[override]
        """ProcessPoolExecutor's private attribute, which code reaches into: the workers by pid,
        each with pid, exitcode, is_alive(), join(), terminate() and kill(). The workers the
        calls submitted so far need are there, as ProcessPoolExecutor starts them in submit()."""
        manager = self._executor_manager_thread
        manager.settle(_protocol.ZYGOTE_TIMEOUT)
        return {pid: worker.process for pid, worker in list(manager.workers.items())}

    @property   # CPython's: False, or why it broke (a str), written by its manager thread
    def _broken(self) -> str | Literal[False]:   # type: ignore[override]
        return self._executor_manager_thread.broken or False

    # -- tasks -------------------------------------------------------------------------------------
    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        """Schedules ``fn(*args, **kwargs)`` in a worker; returns a Future. ``fn`` may be a lambda,
        a closure or a function defined in ``__main__``: it travels by cloudpickle if it must."""
        if getattr(fn, "__qualname__", None) == "_run_task_simple" and \
                getattr(fn, "__module__", None) == "distributed.worker":
            raise TypeError(_BARE_POOL_IN_DASK)
        manager = self._executor_manager_thread
        future: Future[_T] = Future()
        error: Exception | None
        try:
            cloud, blob = _payload.encode_call(fn, args, kwargs, self._forked_main)
        except Exception as e:   # noqa: BLE001 - as ProcessPoolExecutor: the future fails
            cloud, blob, error = False, b"", e
        else:
            error = None
        with manager.lock:
            if manager.broken:
                raise BrokenProcessPool(manager.broken)
            if manager.shutting_down:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if _manager._exiting:
                raise RuntimeError("cannot schedule new futures after interpreter shutdown")
            if error is not None:
                future.set_exception(error)
                return future
            work_id = next(self._work_ids)
            manager.pending[work_id] = WorkItem(future, cloud, blob)
            manager.queue.append(work_id)
        manager.wakeup()
        return future

    submit.__doc__ = ProcessPoolExecutor.submit.__doc__ or submit.__doc__

    def __reduce__(self) -> NoReturn:
        raise TypeError(
            "a TransientUnitPoolExecutor cannot be pickled: its unit, its zygote and its manager "
            "thread belong to the process that made it. Make the pool in the process that uses "
            "it (for Dask workers in processes of their own: a WorkerPlugin that makes a pool "
            "in each, such as concurrentd.dask.SandboxedExecutor)")

    # -- end ---------------------------------------------------------------------------------------
    def __exit__(self, exc_type: type[BaseException] | None, exc_val: BaseException | None,
                 exc_tb: TracebackType | None) -> Literal[False]:
        # ^C in the with block: the calls not started yet are cancelled at once, as the user
        # asked to stop; the running ones finish (ProcessPoolExecutor would run every queued
        # call first).
        self.shutdown(wait=True, cancel_futures=exc_type is not None and
                      issubclass(exc_type, KeyboardInterrupt))
        return False

    def terminate_workers(self) -> None:
        """As ProcessPoolExecutor.terminate_workers() (Python 3.14, here on every version): shuts
        the pool down without waiting, cancelling the calls not started, then sends SIGTERM to
        every worker still running; their calls fail with BrokenProcessPool. The unit is stopped
        once they have exited."""
        self._force_shutdown(operation="terminate")

    def kill_workers(self) -> None:
        """As terminate_workers(), with SIGKILL (ProcessPoolExecutor.kill_workers())."""
        self._force_shutdown(operation="kill")

    def _force_shutdown(self, operation: str) -> None:
        """ProcessPoolExecutor's own name and operations (3.14: its _TERMINATE and _KILL), for
        code and tests that reach it."""
        if operation not in ("terminate", "kill"):
            raise ValueError(f"Unsupported operation: {operation!r}")
        processes = self._processes   # settled: every worker asked for so far is there
        self.shutdown(wait=False, cancel_futures=True)
        for process in processes.values():
            if process.is_alive():
                getattr(process, operation)()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """As ProcessPoolExecutor.shutdown; then the zygote ends and the unit is stopped (before
        returning with ``wait=True``, else once the last worker has exited)."""
        manager = self._executor_manager_thread
        again = manager.shutting_down
        if cancel_futures and not again:
            # What workers can take now runs (ProcessPoolExecutor has queued it to them in
            # submit()); only the rest is cancelled.
            manager.settle(_protocol.ZYGOTE_TIMEOUT)
        manager.request_shutdown(cancel_futures)
        self._finalizer.detach()
        # As ProcessPoolExecutor, a shutdown(wait=True) after a shutdown(wait=False) does not
        # wait for the work (`with pool: pool.shutdown(wait=False)` returns at once).
        if wait and not again:
            manager.join()
            error, manager.release_error = manager.release_error, None
            if error is not None:
                raise error

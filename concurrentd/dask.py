"""Dask workers with a sandbox: a named executor whose tasks run in a transient unit.

    client.register_plugin(SandboxedExecutor("sandbox", properties={"User": "nobody",
                                                                    "PrivateNetwork": True}))
    with dask.annotate(executor="sandbox"):
        futures = client.map(parse, untrusted_files)    # each runs confined

SandboxedExecutor is a WorkerPlugin: every Dask worker (thread or Nanny, present or future) starts
a TransientUnitPoolExecutor of its own and names it in ``worker.executors``; the worker's
teardown (its close, or the plugin's removal) shuts it down.

A Dask worker runs a task with ``run_in_executor(executor, _run_task_simple, task, data, delay)``;
that function returns distributed's own record of the run (the value, its type, its times). A
pool takes only data back from its workers (SECURITY.md), so WorkerExecutor, the executor
installed, sends only the task's own call into the unit, and builds the record in the Dask worker
with distributed's function, from the value that came back as data. Everything else submitted to
it goes to the pool as it is.

WorkerExecutor also lends a pool of your own to Dask (``Worker(executor={"sandbox":
WorkerExecutor(pool)})``): Dask's Worker.close() shuts down every executor it holds, and a lent
pool's shutdown() only waits for the tasks that went through it.
"""

from __future__ import annotations

import asyncio
import inspect
import multiprocessing
import threading
import time
from concurrent.futures import Executor, Future, InvalidStateError
from concurrent.futures import wait as futures_wait
from typing import TYPE_CHECKING, Any, Callable, Mapping

from distributed.diagnostics.plugin import WorkerPlugin

from .executor import TransientUnitPoolExecutor

if TYPE_CHECKING:
    from dask.typing import Key
    from distributed.worker import RunTaskFailure, RunTaskSuccess

__all__ = ["SandboxedExecutor", "WorkerExecutor"]

try:
    #: how a Dask worker runs a task in an executor that is not a ThreadPoolExecutor:
    #: _run_task_simple(task, data, time_delay) -> its record (op, result, type, start, stop…)
    from distributed.worker import _run_task_simple
except ImportError as e:   # pragma: no cover - a distributed that changed it
    raise ImportError(f"concurrentd.dask does not know this version of distributed ({e}): it "
                      "needs distributed.worker._run_task_simple (distributed 2024.12 to 2026.8 "
                      "have it)") from e

#: executors a Dask worker's own machinery uses: a plugin must not take their names
_DASKS_OWN = ("offload", "actor")
#: pool options that name one unit, where every Dask worker needs its own
_ONE_UNIT = ("unit_name",)
#: the pool's parameters this plugin takes under names of its own
_OWN_PARAMETERS = ("max_workers", "properties", "ns_options", "mp_context")


class WorkerExecutor(Executor):
    """A TransientUnitPoolExecutor as a Dask worker's executor.

    Dask's task calls run in the unit and only the task's value comes back, as data; any other
    call goes to the pool unchanged.

    Args:
        pool: the pool the tasks run in.
        owns_pool: shutdown() shuts the pool down (the plugin's own pools). False (a pool you
            lend): shutdown() refuses new tasks and waits for (or cancels) the ones that came
            through this executor, and the pool goes on: Worker.close() leaves it to you.
    """

    def __init__(self, pool: TransientUnitPoolExecutor, *, owns_pool: bool = False):
        if not isinstance(pool, TransientUnitPoolExecutor):
            raise TypeError(f"WorkerExecutor runs tasks in a TransientUnitPoolExecutor (not "
                            f"{type(pool).__name__})")
        self.pool = pool
        self.owns_pool = owns_pool
        self._lock = threading.Lock()
        self._futures: set[Future[Any]] = set()   # submitted here, not done yet
        self._shutdown = False
        self.replaced: Executor | None = None   # the worker's executor of that name before

    @property
    def _max_workers(self) -> int:   # what dask.compute(scheduler=executor) reads
        return self.pool._max_workers

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
        if fn is _run_task_simple:
            future = _run_task(self.pool, *args, **kwargs)
        else:
            future = self.pool.submit(fn, *args, **kwargs)
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._done)
        return future

    submit.__doc__ = Executor.submit.__doc__

    def _done(self, future: Future[Any]) -> None:
        with self._lock:
            self._futures.discard(future)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuses new tasks; then shuts the pool down if this executor owns it, else waits for
        the tasks submitted here (``cancel_futures``: those not started are cancelled)."""
        with self._lock:
            self._shutdown = True
            mine = list(self._futures)
        if self.owns_pool:
            self.pool.shutdown(wait=wait, cancel_futures=cancel_futures)
            return
        if cancel_futures:
            for future in mine:
                future.cancel()
        if wait:
            futures_wait(mine)

    def __repr__(self) -> str:
        return f"<WorkerExecutor {self.pool.unit.name}{'' if self.owns_pool else ' (lent)'}>"


def _timed(task: Callable[[dict[Key, Any]], Any],
           data: dict[Key, Any]) -> tuple[Any, float, float]:
    """In the unit: the task's value, and when it started and stopped (wall clock, as
    distributed measures)."""
    start = time.time()
    value = task(data)
    return value, start, time.time()


class _Outcome:
    """Stands in for the task in _run_task_simple, in the Dask worker: returns the value that
    came back from the unit, or raises the task's exception."""

    def __init__(self, future: Future[tuple[Any, float, float]]):
        self.future = future

    def __call__(self, data: dict[Key, Any]) -> Any:
        error = self.future.exception()
        if error is not None:
            raise error   # the task's own (its traceback in the unit is its __cause__)
        return self.future.result()[0]


def _run_task(pool: TransientUnitPoolExecutor, task: Any, data: dict[Key, Any],
              time_delay: float) -> Future[RunTaskSuccess | RunTaskFailure]:
    """Runs a Dask task in the pool; the returned future holds distributed's record of the
    run, made here by _run_task_simple, with the times measured in the unit."""
    outer: Future[RunTaskSuccess | RunTaskFailure] = Future()
    submitted = time.time()
    inner = pool.submit(_timed, task, data)

    def finish(done: Future[tuple[Any, float, float]]) -> None:
        if done.cancelled():
            outer.cancel()
            return
        if not outer.set_running_or_notify_cancel():
            return
        try:
            # (distributed's annotation asks for a GraphNode: it only calls it, as _Outcome is)
            outcome = _Outcome(done)
            record = _run_task_simple(outcome, data, time_delay)   # type: ignore[arg-type]
            if done.exception() is None:
                _, start, stop = done.result()
            else:   # it failed in the unit: the time it took as seen from here
                start, stop = submitted, time.time()
            record["start"], record["stop"] = start + time_delay, stop + time_delay
        except BaseException as e:   # noqa: BLE001 - whatever it is, the task's future says it
            try:
                outer.set_exception(e)
            except InvalidStateError:
                pass
            return
        outer.set_result(record)

    def cancel_inner(f: Future[RunTaskSuccess | RunTaskFailure]) -> None:
        if f.cancelled():
            inner.cancel()

    outer.add_done_callback(cancel_inner)
    inner.add_done_callback(finish)
    return outer


class SandboxedExecutor(WorkerPlugin):
    """A Dask WorkerPlugin: every Dask worker gets a TransientUnitPoolExecutor named ``name``;
    tasks annotated ``dask.annotate(executor=name)`` run in its unit.

    Args:
        name: the executor's name in ``worker.executors`` ("default" sandboxes every task that
            names no executor; "offload" and "actor" are Dask's own).
        max_workers: each pool's size (default: the worker's nthreads, the tasks Dask runs on
            it at once).
        properties: the unit's settings, as for TransientUnitPoolExecutor.
        on_worker_death: "replace" (default here): a task whose process dies (MemoryMax=, a
            seccomp kill) fails alone with WorkerKilled and the Dask worker goes on; "break" as
            ProcessPoolExecutor (every later task on that worker then fails).
        mp_context: how each pool's zygote starts: "forkserver" (default: a fresh interpreter;
            a Dask worker runs threads, which a fork could deadlock), "spawn", or "fork".
        **pool_options: any other TransientUnitPoolExecutor keyword (result_types=,
            preload=, initializer=, max_tasks_per_child=, unit=…), except unit_name=.

    Raises:
        TypeError, ValueError: an option or property the pool would refuse (checked here, in
            the client, before any worker sees the plugin).
    """

    idempotent = False

    def __init__(self, name: str = "sandbox", max_workers: int | None = None,
                 properties: Mapping[str, Any] | None = None, *,
                 on_worker_death: str = "replace", mp_context: Any = "forkserver",
                 **pool_options: Any):
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be the executor's name, a string (not {name!r})")
        if name in _DASKS_OWN:
            raise ValueError(f"name={name!r} is an executor of Dask's own machinery: choose "
                             "another name (e.g. 'sandbox')")
        self.executor = name
        self.name = f"concurrentd-{name}"   # the plugin's, one per executor name
        self.max_workers = max_workers
        self.properties = dict(properties or {})
        self.start_method = _start_method(mp_context)
        self.options = {"on_worker_death": on_worker_death, **pool_options}
        _check(self.max_workers, self.properties, self.options)

    async def setup(self, worker: Any) -> None:
        # The unit starts in a thread of its own: the worker's event loop goes on meanwhile.
        pool = await asyncio.to_thread(self._start, worker.state.nthreads)
        executor = WorkerExecutor(pool, owns_pool=True)
        executor.replaced = worker.executors.get(self.executor)
        worker.executors[self.executor] = executor

    def _start(self, nthreads: int) -> TransientUnitPoolExecutor:
        # (warm_units off unless asked: a Dask worker keeps its pool, and a unit prepared for a
        # next one would wait unused)
        return TransientUnitPoolExecutor(
            self.max_workers or nthreads, self.properties,
            mp_context=multiprocessing.get_context(self.start_method),
            **{"warm_units": False, **self.options})

    async def teardown(self, worker: Any) -> None:
        executor = worker.executors.get(self.executor)
        if not isinstance(executor, WorkerExecutor) or not executor.owns_pool:
            return
        if executor.replaced is not None:
            worker.executors[self.executor] = executor.replaced
        else:
            del worker.executors[self.executor]
        # What is queued is cancelled, what runs finishes (as Dask's close does with its own).
        await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)

    def __repr__(self) -> str:
        return (f"SandboxedExecutor({self.executor!r}, {self.max_workers!r}, "
                f"{self.properties!r})")


def _start_method(mp_context: Any) -> str:
    method = mp_context if isinstance(mp_context, str) else \
        getattr(mp_context, "get_start_method", lambda: None)()
    if method not in ("fork", "spawn", "forkserver"):
        raise ValueError(f"mp_context must be 'forkserver', 'spawn', 'fork' or a multiprocessing "
                         f"context (not {mp_context!r})")
    return method


def _check(max_workers: int | None, properties: dict[str, Any],
           options: dict[str, Any]) -> None:
    """What each worker's pool would refuse, refused here, in the client, before any worker
    tries (a mistake would otherwise fail the plugin's setup on every worker)."""
    from ._session import check_owned
    from .systemd.properties import convert_properties

    accepted = inspect.signature(TransientUnitPoolExecutor).parameters
    for option in options:
        if option in _ONE_UNIT:
            raise TypeError(f"{option}= names one unit, and every Dask worker starts a unit of "
                            "its own: leave it out (unit names are made unique)")
        if option not in accepted or option in _OWN_PARAMETERS:
            known = sorted(k for k in accepted if k not in (*_OWN_PARAMETERS, *_ONE_UNIT))
            raise TypeError(f"SandboxedExecutor got an unexpected option {option!r}: "
                            f"TransientUnitPoolExecutor's are {', '.join(known)}")
    if max_workers is not None and (not isinstance(max_workers, int) or
                                    isinstance(max_workers, bool) or max_workers <= 0):
        raise ValueError(f"max_workers must be a positive int, or None for the worker's "
                         f"nthreads (not {max_workers!r})")
    if options.get("on_worker_death") not in ("break", "replace"):
        raise ValueError(f"on_worker_death must be 'replace' or 'break' (not "
                         f"{options.get('on_worker_death')!r})")
    if options.get("unit") is None:
        check_owned(properties)
        convert_properties(properties)
    elif properties:
        raise TypeError("unit= joins a running unit: its properties are already set; leave "
                        "properties= out")

"""Cases 2 and 3: worker cold start (fork → ready inside the unit) and pool start → first result.

One trial = one fresh pool in a fresh process: construct it (pystemd: also __enter__, which starts
its unit), submit one task, wait for its result. Measured:

- pool start → first result: from the constructor's call to the first result, in the owner.
- cold start: from the owner's spawn of the first worker (``Process.start()``, where
  ProcessPoolExecutor and pystemd fork; concurrentd's manager asks its zygote, which hands over
  the spare worker it forked, inside the unit, before the pool's constructor returned — that fork
  is in pool start, not here) to the worker entering its loop (concurrent.futures'
  ``_process_worker``, concurrentd's ``_worker.serve``): inside the unit (pystemd: after its
  enter_unit()), ready for a task. CLOCK_MONOTONIC on both sides. (Marked by wrapping the loops
  under their own names rather than by an initializer, identically for the three contenders.)

Pool start is also timed with a prepared unit (issue 19 §1: concurrentd._warm), as a program
that makes pools again and again gets it: "concurrentd (prepared)" and "concurrentd (fresh,
prepared)" first start and stop one pool with the same properties and size, untimed, wait until
the next unit is prepared, then time a second pool, which takes it (a fresh interpreter's pool
takes a prepared zygote too, entered, its first worker forked). The other concurrentd contenders
find no prepared unit (each trial is a fresh process): their pool start is the cold one. After
every trial, the unit prepared after its last pool is stopped before the next trial starts.

The contenders run back to back in each repetition (rotating order), so their ratios come
from the same moments of this noisy machine.
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context, process

from . import _common as c

_STARTS: list[int] = []

#: the contenders that time a pool taking a prepared unit -> the pool they are
PREPARED = {"concurrentd (prepared)": "concurrentd",
            "concurrentd (fresh, prepared)": "concurrentd (fresh)"}


def _patch_start() -> None:
    """Record the owner's time of every worker's spawn: Process.start() (ProcessPoolExecutor,
    pystemd), the pool manager's request to its zygote (concurrentd)."""
    from concurrentd._manager import PoolManager

    for owner, name in ((process.BaseProcess, "start"), (PoolManager, "_spawn")):
        original = getattr(owner, name)
        if getattr(original, "_bench", False):
            continue

        def spawn(self, _original=original):
            _STARTS.append(time.perf_counter_ns())
            return _original(self)

        spawn._bench = True
        setattr(owner, name, spawn)


def _patch_worker() -> None:
    """Wrap the workers' loops, concurrent.futures.process._process_worker (same module and name,
    so it is pickled by reference like the original and found in every forked worker) and
    concurrentd._worker.serve, to note when they start."""
    from concurrent.futures import process as cfp

    from concurrentd import _worker

    for module, name in ((cfp, "_process_worker"), (_worker, "serve")):
        original = getattr(module, name)
        if getattr(original, "_bench", False):
            continue

        def loop(*args, _original=original, **kwargs):
            c.mark_ready()
            return _original(*args, **kwargs)

        loop.__module__, loop.__qualname__ = original.__module__, original.__qualname__
        loop._bench = True
        setattr(module, name, loop)


def make_pool(contender: str, workers: int, properties: str = "pool"):
    """A started pool of ``contender`` and the callable that shuts it down."""
    if contender in ("concurrentd", "concurrentd (fresh)"):
        from concurrentd import TransientUnitPoolExecutor

        props = c.POOL_PROPERTIES if properties == "pool" else c.THROUGHPUT_PROPERTIES
        fresh = contender == "concurrentd (fresh)"   # its zygote a new interpreter, not a fork
        pool = TransientUnitPoolExecutor(workers, props,
                                         mp_context=get_context("forkserver" if fresh else "fork"))
        return pool, pool.shutdown
    if contender == "ProcessPoolExecutor":
        pool = ProcessPoolExecutor(workers, mp_context=get_context("fork"))
        return pool, pool.shutdown
    if contender == "pystemd":
        from pystemd.futures import TransientUnitPoolExecutor as PystemdPool

        props = c.PYSTEMD_PROPERTIES if properties == "pool" else c.PYSTEMD_THROUGHPUT_PROPERTIES
        pool = PystemdPool(dict(props), max_workers=workers)
        pool.__enter__()
        return pool, lambda: pool.__exit__(None, None, None)
    raise ValueError(contender)


def _prepare_unit(contender: str, workers: int) -> None:
    """Starts and stops one pool, untimed: concurrentd then prepares the next unit for the same
    properties (and size); returns once it is there."""
    pool, stop = make_pool(contender, workers)
    try:
        pool.submit(c.noop).result(timeout=30)
    finally:
        stop()
    c.await_prepared()


def trial(contender: str, workers: int) -> dict:
    """In a fresh child: pool start → first result, and the first worker's fork → ready (ns)."""
    base = PREPARED.get(contender, contender)
    if contender in PREPARED:
        _prepare_unit(base, workers)
    _patch_start()
    _patch_worker()
    del _STARTS[:]
    # imported before the clock starts, as ProcessPoolExecutor's is
    from concurrentd import TransientUnitPoolExecutor  # noqa: F401
    t0 = time.perf_counter_ns()
    pool, stop = make_pool(base, workers)
    try:
        ready = pool.submit(c.ready_ns).result(timeout=30)
        t1 = time.perf_counter_ns()
        uid = pool.submit(c.whoami).result(timeout=30)
    finally:
        stop()
        if base.startswith("concurrentd"):
            c.stop_prepared()
    if base == "concurrentd (fresh)" or contender in PREPARED:
        # a fresh interpreter's workers' loop is not this process's to mark; the cold-start case
        # is the first worker of a pool as it starts, without a prepared unit
        return {"pool_start_ns": t1 - t0, "cold_start_ns": None, "uid": uid}
    if not _STARTS or ready is None:
        raise RuntimeError(f"{contender}: no worker start seen")
    return {"pool_start_ns": t1 - t0, "cold_start_ns": ready - _STARTS[0], "uid": uid}


def run(reps: int, contenders: list[str], tick, log) -> dict:
    """Both cases; returns {"pool_start": {...}, "cold_start": {...}}."""
    contenders = contenders + [k for k, base in PREPARED.items() if base in contenders]
    samples = {(k, w, n): [] for k in contenders for w in (1, 2)
               for n in ("pool_start_ns", "cold_start_ns")}
    errors: dict[str, str] = {}
    uids: dict[str, set] = {k: set() for k in contenders}
    for i in range(reps):
        for w in (1, 2):
            order = contenders[i % len(contenders):] + contenders[:i % len(contenders)]
            got = {}
            for k in order:
                try:
                    got[k] = c.isolated(trial, k, w)
                    uids[k].add(got[k]["uid"])
                except Exception as e:   # noqa: BLE001 - one contender failing must not end the run
                    errors.setdefault(k, str(e).strip().splitlines()[-1])
                    log(f"pools: {k} (max_workers={w}) failed: {errors[k]}")
                tick()
            for k in contenders:
                for n in ("pool_start_ns", "cold_start_ns"):
                    samples[(k, w, n)].append(got[k][n] if k in got else None)

    def ms(xs):
        return [None if x is None else x / 1e6 for x in xs]

    pool_start, cold = {"unit": "ms", "errors": errors}, {"unit": "ms", "errors": errors}
    for w in (1, 2):
        pool_start[f"workers{w}"] = {k: c.summary(ms(samples[(k, w, "pool_start_ns")]))
                                     for k in contenders}
    cold["contenders"] = {k: c.summary(ms(samples[(k, 1, "cold_start_ns")] +
                                          samples[(k, 2, "cold_start_ns")]))
                          for k in contenders
                          if k != "concurrentd (fresh)" and k not in PREPARED}
    cold["worker_uid"] = {k: sorted(v) for k, v in uids.items()}
    both = lambda k: samples[(k, 1, "cold_start_ns")] + samples[(k, 2, "cold_start_ns")]  # noqa: E731
    ratios = {}
    if "ProcessPoolExecutor" in contenders:
        ratios["concurrentd/ProcessPoolExecutor"] = c.paired_ratio(both("concurrentd"),
                                                                   both("ProcessPoolExecutor"))
    if "pystemd" in contenders:
        ratios["pystemd/concurrentd"] = c.paired_ratio(both("pystemd"), both("concurrentd"))
        for w in (1, 2):
            pool_start.setdefault("ratios", {})[f"concurrentd/pystemd workers{w}"] = c.paired_ratio(
                samples[("concurrentd", w, "pool_start_ns")], samples[("pystemd", w, "pool_start_ns")])
    if "ProcessPoolExecutor" in contenders:
        for k in [k for k in contenders if k.startswith("concurrentd")]:
            for w in (1, 2):
                pool_start.setdefault("ratios", {})[f"{k}/ProcessPoolExecutor workers{w}"] = \
                    c.paired_ratio(samples[(k, w, "pool_start_ns")],
                                   samples[("ProcessPoolExecutor", w, "pool_start_ns")])
    cold["ratios"] = ratios
    return {"pool_start": pool_start, "cold_start": cold}

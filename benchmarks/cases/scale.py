"""Case 7 (issue 19 §3): scale and memory, max_workers = 1, 2, 8, 32, 64, against
ProcessPoolExecutor in the same run.

One trial = one fresh pool of N workers in a fresh process: concurrentd (its zygote forked from
the owner) and ProcessPoolExecutor (fork context), back to back in rotating order, every size in
every repetition. Timed in the owner:

- all ran: the pool's constructor → the results of N tasks that each wait at a barrier of N
  parties, so each of the N workers has run one (no worker can take a second task before all N
  hold their first). concurrentd starts workers on demand and ProcessPoolExecutor (fork) all at
  the first submit(); either way this is when the pool has N workers running tasks. The barrier
  is multiprocessing's, made before the pool: every worker inherits it by fork, as it would a
  module's global;
- throughput: then ``tasks`` no-op tasks through that warm pool, submit() each, then wait
  (tasks/s). Its ratio is given as time per task, concurrentd / ProcessPoolExecutor, so that it
  reads as the start's does (above 1: concurrentd is slower).

Then, untimed, the N workers idle: the owner's RSS and its growth since just before the pool;
each worker's USS and PSS (the median over the N, see _memory); concurrentd's zygote's. A page
shared by k processes counts 1/k in each one's PSS, so PSS falls as N grows, for both alike.

The spare: while fewer than max_workers run, a concurrentd pool's zygote keeps the next worker
forked ahead. With all N running there is none, so each repetition has one more trial: a pool
of 2 that has run one task, whose zygote then holds that worker and the spare (USS, PSS of each).

Sandbox: the throughput case's (no CPUQuota: 50 % of one CPU for 64 workers would measure the cap).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import wait

from . import _common as c
from . import _memory
from .pools import make_pool

SIZES = (1, 2, 8, 32, 64)
CONTENDERS = ("concurrentd", "ProcessPoolExecutor")
#: seconds a task waits at the barrier for the other workers (then the trial fails)
BARRIER_TIMEOUT = 60.0

_BARRIER = None   # set in the trial's process before the pool, inherited by every worker


def _all_in() -> int:
    """A worker's task: wait until every worker of the pool holds one; its pid."""
    _BARRIER.wait(BARRIER_TIMEOUT)
    return os.getpid()


def _pid() -> int:
    return os.getpid()


def trial(contender: str, workers: int, tasks: int) -> dict:
    """In a fresh child: all N ran (ns), then submit throughput (tasks/s), then memory (MiB)."""
    global _BARRIER
    from multiprocessing import get_context

    # imported before (as ProcessPoolExecutor's is): its import is neither timed nor counted
    from concurrentd import TransientUnitPoolExecutor  # noqa: F401

    _BARRIER = get_context("fork").Barrier(workers)
    before = _memory.rollup()
    t0 = time.perf_counter_ns()
    pool, stop = make_pool(contender, workers, properties="throughput")
    try:
        futures = [pool.submit(_all_in) for _ in range(workers)]
        wait(futures, timeout=BARRIER_TIMEOUT + 30)
        pids = {f.result(timeout=0) for f in futures}
        t1 = time.perf_counter_ns()
        if len(pids) != workers:
            raise RuntimeError(f"{contender}: {workers} tasks ran in {len(pids)} workers")
        t2 = time.perf_counter_ns()
        futures = [pool.submit(c.noop) for _ in range(tasks)]
        wait(futures, timeout=120)
        for f in futures:
            f.result(timeout=0)
        t3 = time.perf_counter_ns()
        owner = _memory.rollup()
        # the workers by pid: ProcessPoolExecutor's private _processes, which concurrentd keeps
        mem = [m for m in map(_memory.rollup, list(pool._processes)) if m]
        if not mem:
            raise RuntimeError(f"{contender}: no worker's memory could be read")
        zygote = _memory.rollup(pool._session.zygote.pid) if contender == "concurrentd" else None
    finally:
        stop()
        if contender == "concurrentd":
            c.stop_prepared()
    return {"all_ran_ns": t1 - t0, "submit": tasks / ((t3 - t2) / 1e9),
            "owner_rss": owner["rss"], "owner_growth": owner["rss"] - before["rss"],
            "worker_uss": c.summary([m["uss"] for m in mem])["median"],
            "worker_pss": c.summary([m["pss"] for m in mem])["median"],
            "workers_read": len(mem),
            "zygote_uss": zygote and zygote["uss"], "zygote_pss": zygote and zygote["pss"]}


def spare_trial() -> dict:
    """In a fresh child: a concurrentd pool of 2 that has run one task: its zygote, that worker
    and the spare the zygote forked next (MiB)."""
    pool, stop = make_pool("concurrentd", 2, properties="throughput")
    try:
        worker = pool.submit(_pid).result(timeout=30)
        zygote = pool._session.zygote.pid
        deadline = time.monotonic() + 10
        while not (spares := [p for p in _memory.children(zygote) if p != worker]):
            if time.monotonic() > deadline:
                raise RuntimeError("the zygote forked no spare within 10 s")
            time.sleep(0.005)
        time.sleep(0.05)   # the spare has forked; let it reach its wait for a request
        return {"zygote": _memory.rollup(zygote), "worker": _memory.rollup(worker),
                "spare": _memory.rollup(spares[0])}
    finally:
        stop()
        c.stop_prepared()


def run(reps: int, tasks: int, tick, log, sizes: tuple[int, ...] = SIZES) -> dict:
    keys = ("all_ran_ns", "submit", "owner_rss", "owner_growth", "worker_uss", "worker_pss",
            "zygote_uss", "zygote_pss")
    per = {(k, n, m): [] for k in CONTENDERS for n in sizes for m in keys}
    spare = {(who, m): [] for who in ("zygote", "worker", "spare") for m in ("uss", "pss")}
    errors: dict[str, str] = {}
    for i in range(reps):
        for n in sizes:
            order = CONTENDERS[i % 2:] + CONTENDERS[:i % 2]
            got = {}
            for k in order:
                try:
                    got[k] = c.isolated(trial, k, n, tasks, timeout=240)
                except Exception as e:   # noqa: BLE001 - one contender failing must not end the run
                    errors.setdefault(f"{k}, {n} workers", str(e).strip().splitlines()[-1])
                    log(f"scale: {k} (max_workers={n}) failed: {errors[f'{k}, {n} workers']}")
                tick()
            for k in CONTENDERS:
                for m in keys:
                    per[(k, n, m)].append(got[k][m] if k in got else None)
        try:
            got = c.isolated(spare_trial, timeout=60)
            for (who, m), xs in spare.items():
                xs.append((got[who] or {}).get(m))
        except Exception as e:   # noqa: BLE001
            errors.setdefault("spare", str(e).strip().splitlines()[-1])
            log(f"scale: the spare's trial failed: {errors['spare']}")
        tick()
    out: dict = {"tasks": tasks, "sizes": list(sizes), "errors": errors,
                 "units": {"all_ran": "ms", "submit": "tasks/s", "memory": "MiB"}}
    for n in sizes:
        row: dict = {}
        for k in CONTENDERS:
            xs = {m: per[(k, n, m)] for m in keys}
            row[k] = {"all_ran": c.summary([None if x is None else x / 1e6
                                             for x in xs["all_ran_ns"]]),
                      **{m: c.summary(xs[m]) for m in keys[1:]},
                      "owner_growth_ci": c.median_ci(xs["owner_growth"])}
        ours = {m: per[("concurrentd", n, m)] for m in keys}
        theirs = {m: per[("ProcessPoolExecutor", n, m)] for m in keys}
        row["ratios"] = {
            "all_ran": c.paired_ratio(ours["all_ran_ns"], theirs["all_ran_ns"]),
            # time per task, ours / theirs: their tasks/s over ours
            "time_per_task": c.paired_ratio(theirs["submit"], ours["submit"]),
            "worker_uss": c.paired_ratio(ours["worker_uss"], theirs["worker_uss"]),
            "worker_pss": c.paired_ratio(ours["worker_pss"], theirs["worker_pss"]),
        }
        out[f"workers{n}"] = row
    out["spare"] = {f"{who}_{m}": c.summary(xs) for (who, m), xs in spare.items()}
    return out

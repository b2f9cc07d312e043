"""Case 4: throughput, N no-op tasks through a warm pool of 2 workers, with submit() (one future
per task, then wait for all) and with map(chunksize=100).

Sandbox: the pool properties without CPUQuota (a 50 % cap on the unit would measure the cap).
Each repetition runs the three contenders back to back (rotating order), each in a fresh process
with a fresh pool, warmed (both workers started and past their first task) before timing. A map
of 20,000 no-ops takes about 20 ms, short enough for one preemption to move it by 10 %: each trial
times it MAP_ROUNDS times in the same pool and keeps the median.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import wait

from . import _common as c
from .pools import make_pool

WORKERS = 2
MAP_ROUNDS = 5


def trial(contender: str, n: int) -> dict:
    pool, stop = make_pool(contender, WORKERS, properties="throughput")
    try:
        list(pool.map(c.noop, range(2000), chunksize=10))   # warm: every worker started
        t0 = time.perf_counter_ns()
        futures = [pool.submit(c.noop) for _ in range(n)]
        wait(futures, timeout=120)
        if not all(f.done() for f in futures):
            raise TimeoutError("submit: tasks not done in 120 s")
        for f in futures:
            f.result()
        t1 = time.perf_counter_ns()
        maps = []   # tasks/s of each round
        for _ in range(MAP_ROUNDS):
            t2 = time.perf_counter_ns()
            for _ in pool.map(c.noop, range(n), chunksize=100, timeout=120):
                pass
            maps.append(n / ((time.perf_counter_ns() - t2) / 1e9))
    finally:
        stop()
    return {"submit": n / ((t1 - t0) / 1e9), "map": statistics.median(maps)}


def run(reps: int, n: int, contenders: list[str], tick, log) -> dict:
    per = {(k, m): [] for k in contenders for m in ("submit", "map")}
    errors: dict[str, str] = {}
    for i in range(reps):
        order = contenders[i % len(contenders):] + contenders[:i % len(contenders)]
        got = {}
        for k in order:
            try:
                got[k] = c.isolated(trial, k, n, timeout=300)
            except Exception as e:   # noqa: BLE001
                errors.setdefault(k, str(e).strip().splitlines()[-1])
                log(f"throughput: {k} failed: {errors[k]}")
            tick()
        for k in contenders:
            for m in ("submit", "map"):
                per[(k, m)].append(got[k][m] if k in got else None)
    out = {"unit": "tasks/s", "tasks": n, "workers": WORKERS, "errors": errors}
    for m in ("submit", "map"):
        out[m] = {k: c.summary(per[(k, m)]) for k in contenders}
        ratios = {}
        for k in contenders:
            if k != "ProcessPoolExecutor" and "ProcessPoolExecutor" in contenders:
                ratios[f"{k}/ProcessPoolExecutor"] = c.paired_ratio(per[(k, m)],
                                                                    per[("ProcessPoolExecutor", m)])
        out[m]["ratios"] = ratios
    return out

"""The suite's targets (issues 6 and 19) and their verdicts: PASS, FAIL or not measured.

A target is a figure of the results (a median, or the median of per-repetition ratios), an
operator and a limit. The limit is a number, or is set from this run's own figures: issue 19's
cold floor is this run's unit start on a connected D-Bus connection (unit_start's "start (warm)",
systemd's own part of a start) plus 1.5 × ProcessPoolExecutor's time for the same thing in the
same run.

A figure measured as a difference (entry per worker: a fork in the entered zygote minus a plain
fork) carries a confidence interval for its median. While that interval holds zero, or has less
than the confidence asked for (too few repetitions), the difference's sign is not known: its
targets, and those of ratios taken over it, are "not measured", never PASS (issue 19 §4).
A figure missing from the results (its case not run, failed, or a contender unavailable) is "not
measured" too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .cases import _common as c
from .cases.scale import SIZES

PASS, FAIL, NOT_MEASURED = "PASS", "FAIL", "not measured"
PPE = "ProcessPoolExecutor"


def get(d: Any, *path) -> Any:
    """results[path[0]][path[1]]…, or None where any step is missing."""
    for p in path:
        if not isinstance(d, dict) or d.get(p) is None:
            return None
        d = d[p]
    return d


#: a limit set from the run: results -> (limit, how it was set), or a str saying what is missing
Limit = Callable[[dict], "tuple[float, str] | str"]


@dataclass(frozen=True)
class Target:
    case: str
    figure: str
    path: tuple[str, ...]
    op: str                       # "<=" or ">="
    limit: float | Limit
    unit: str                     # "us", "ms" or "x"
    ci: tuple[str, ...] | None = None   # the interval of the difference the figure rests on
    ci_name: str = ""                   # that difference, as the table names it (with its unit)


def cold_floor(ppe: tuple[str, ...]) -> Limit:
    """Issue 19's cold floor: this run's unit start (connected) + 1.5 × ProcessPoolExecutor's
    median at ``ppe`` (same thing, same run)."""
    def limit(results: dict) -> tuple[float, str] | str:
        unit = get(results, "unit_start", "concurrentd start (warm)", "median")
        theirs = get(results, *ppe)
        if unit is None:
            return "needs this run's unit_start case"
        if theirs is None:
            return f"needs this run's {PPE} figure"
        return (unit + 1.5 * theirs,
                f"unit start (connected) {unit:.1f} ms + 1.5 × {PPE} {theirs:.1f} ms")
    limit.label = f"unit start (connected) + 1.5 × {PPE}"
    return limit


_ENTRY_CI = {"ci": ("entry", "entry_per_worker_ci"), "ci_name": "entry per worker, µs"}

TARGETS: list[Target] = [
    # A pool's workers are forked by a zygote that entered the unit once: what a worker pays to
    # be in the unit is its fork there minus a plain fork (enter(plan) itself runs once per pool).
    # Issue 19 §2 (the lead kept after the security work) tightens issue 6's limits: entry per
    # worker ≤ 25 µs (was 200), worker start ≤ 0.6× (was 1.3×), submit ≥ 1.2× and map ≥ 1.25×
    # ProcessPoolExecutor (were 1.0×), throughput in both start modes.
    Target("entry", "entry per worker median", ("entry", "entry_per_worker", "median"),
           "<=", 25, "us", **_ENTRY_CI),
    Target("entry", "entry per worker / Python fork",
           ("entry", "ratios", "entry_per_worker/fork", "median"), "<=", 0.3, "x", **_ENTRY_CI),
    Target("entry", "pystemd enter_unit / entry per worker",
           ("entry", "ratios", "pystemd_enter_unit/entry_per_worker"), ">=", 10, "x", **_ENTRY_CI),
    Target("cold_start", "concurrentd / ProcessPoolExecutor",
           ("cold_start", "ratios", f"concurrentd/{PPE}", "median"), "<=", 0.6, "x"),
    Target("cold_start", "pystemd / concurrentd",
           ("cold_start", "ratios", "pystemd/concurrentd", "median"), ">=", 4, "x"),
    # Issue 19 §1, which replaces issue 6's "≤ 0.7× pystemd" (pystemd's fast starts are those
    # that race its own sandbox): a prepared unit ≤ 2× ProcessPoolExecutor; cold, the floor.
    *[Target("pool_start", f"{k} / {PPE}, {w} worker{'s' * (w > 1)}",
             ("pool_start", "ratios", f"{k}/{PPE} workers{w}", "median"), "<=", 2, "x")
      for k in ("concurrentd (prepared)", "concurrentd (fresh, prepared)") for w in (1, 2)],
    *[Target("pool_start", f"cold, concurrentd, {w} worker{'s' * (w > 1)}",
             ("pool_start", f"workers{w}", "concurrentd", "median"), "<=",
             cold_floor(("pool_start", f"workers{w}", PPE, "median")), "ms")
      for w in (1, 2)],
    *[Target("throughput", f"{m}: {k} / {PPE}",
             ("throughput", m, "ratios", f"{k}/{PPE}", "median"), ">=", limit, "x")
      for k in ("concurrentd", "concurrentd (fresh)") for m, limit in (("submit", 1.2),
                                                                        ("map", 1.25))],
    Target("oneshot", "run(f), a prepared unit", ("oneshot", "run (prepared)", "median"),
           "<=", 3, "ms"),
    Target("oneshot", "run(f), fresh mode, a prepared zygote",
           ("oneshot", "run (fresh, prepared)", "median"), "<=", 3, "ms"),
    Target("oneshot", "systemd-run --pipe / run(f) fresh",
           ("oneshot", "ratios", "systemd-run/run (fresh, prepared)", "median"), ">=", 8, "x"),
    Target("oneshot", "bwrap / run(f) fresh",
           ("oneshot", "ratios", "bwrap/run (fresh, prepared)", "median"), ">=", 8, "x"),
    Target("unit_start", "concurrentd connect+start / systemd-run",
           ("unit_start", "ratios", "concurrentd connect+start/systemd-run", "median"),
           "<=", 1.0, "x"),
    # Issue 19 §3: ≤ 1.2× ProcessPoolExecutor from 8 workers up; at 1 and 2 the unit's start
    # dominates, and the cold floor applies.
    *[t for n in SIZES for t in (
        [Target("scale", f"{n} workers: all ran a task, concurrentd / {PPE}",
                ("scale", f"workers{n}", "ratios", "all_ran", "median"), "<=", 1.2, "x"),
         Target("scale", f"{n} workers: time per no-op task, concurrentd / {PPE}",
                ("scale", f"workers{n}", "ratios", "time_per_task", "median"), "<=", 1.2, "x")]
        if n >= 8 else
        [Target("scale", f"{n} worker{'s' * (n > 1)}: all ran a task, concurrentd (cold floor)",
                ("scale", f"workers{n}", "concurrentd", "all_ran", "median"), "<=",
                cold_floor(("scale", f"workers{n}", PPE, "all_ran", "median")), "ms")])],
]


def judge(results: dict) -> list[dict]:
    """One row per target of the cases that ran: the figure, the limit, the verdict, and why a
    target was not measured."""
    rows = []
    for t in TARGETS:
        if t.case not in results:
            continue
        value, why, basis = get(results, *t.path), None, None
        limit = t.limit
        if callable(limit):
            got = limit(results)
            limit, basis = (None, None) if isinstance(got, str) else got
            why = got if isinstance(got, str) else None
        ci = get(results, *t.ci) if t.ci else None
        if value is None:
            why = why or ("failed" if isinstance(results[t.case], dict)
                          and "error" in results[t.case] else "no figure")
        elif t.ci and not c.excludes_zero(ci):
            why = ("too few repetitions for a 95 % interval" if ci and ci["level"] < c.CI_LEVEL
                   else "the difference's 95 % interval holds zero")
        if why is not None or limit is None:
            verdict = NOT_MEASURED
        else:
            verdict = PASS if (value <= limit if t.op == "<=" else value >= limit) else FAIL
        rows.append({"case": t.case, "figure": t.figure, "value": value, "unit": t.unit,
                     "op": t.op, "limit": limit, "basis": basis, "ci": ci, "ci_name": t.ci_name,
                     "target": _shown(t, limit),
                     "verdict": verdict, "why": why})
    return rows


def _shown(t: Target, limit: float | None) -> str:
    if limit is None:
        return f"{t.op} {getattr(t.limit, 'label', '?')}"
    return f"{t.op} {limit:.1f} {t.unit}" if callable(t.limit) else f"{t.op} {limit:g} {t.unit}"

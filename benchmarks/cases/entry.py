"""Case 1: entering a unit — concurrentd's enter(plan) (one C call, csrc/enter.c), total and per
step, against a Python os.fork and pystemd.futures.enter_unit, in the same run.

The unit: benchmarks/entry.py's kitchen-sink properties (every namespace systemd makes, cgroups,
chroot-free ProtectSystem, credentials, capabilities, seccomp …) plus Delegate=yes, which pystemd's
enter_unit needs for AttachProcesses; started once with systemd-run, Type=exec, running
concurrentd's anchor. The plan is built once. Each repetition, interleaved:

- fork: os.fork() as seen by the parent (the child exits at once);
- worker fork: what a pool's worker costs. A pool's zygote enters the unit once (enter(plan)) and
  forks every worker from there, confined already: os.fork() as seen by such an entered process.
  Entry per worker = this minus the plain fork of the same repetition;
- enter: fork, then enter(plan) timed inside the child (the zygote's one-time cost per pool;
  what a worker would pay on top of its fork if each entered on its own);
- steps: fork, then enter(plan, timing=True): nanoseconds per step, measured in C;
- pystemd: fork, then pystemd.futures.enter_unit(unit) timed inside the child (D-Bus MainPID,
  psutil uids/gids, AttachProcesses over D-Bus, setns each namespace, setgid/setuid).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid

from . import _common as c


def _child_report(w: int, payload: dict) -> None:
    data = json.dumps(payload).encode()
    os.write(w, data)


def _fork_timed(child_body) -> tuple[int, dict | None]:
    """Fork; the child runs child_body() -> dict and reports it. Returns (parent-side fork ns,
    the child's dict)."""
    r, w = os.pipe()
    t0 = time.perf_counter_ns()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            _child_report(w, child_body())
        except BaseException as e:   # noqa: BLE001
            try:
                _child_report(w, {"error": f"{type(e).__name__}: {e}"})
            finally:
                code = 1
        finally:
            os._exit(code)
    fork_ns = time.perf_counter_ns() - t0
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    os.waitpid(pid, 0)
    return fork_ns, json.loads(b"".join(chunks)) if chunks else None


class _EnteredZygote:
    """A process that entered the unit (as a pool's zygote does) and, on each request, forks a
    child that exits at once, timing os.fork() on its side."""

    def __init__(self, plan):
        from concurrentd._entry import enter

        self._req_r, self._req_w = os.pipe()
        self._ans_r, self._ans_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            code = 1
            try:
                os.close(self._req_w)   # else it would never see the EOF that ends it
                os.close(self._ans_r)
                enter(plan)
                while os.read(self._req_r, 1) == b"f":
                    t = time.perf_counter_ns()
                    pid = os.fork()
                    if pid == 0:
                        os._exit(0)
                    ns = time.perf_counter_ns() - t
                    os.waitpid(pid, 0)
                    os.write(self._ans_w, ns.to_bytes(8, "little"))
                code = 0
            finally:
                os._exit(code)
        os.close(self._req_r)
        os.close(self._ans_w)

    def fork_ns(self) -> int:
        os.write(self._req_w, b"f")
        data = os.read(self._ans_r, 8)
        if len(data) != 8:
            raise RuntimeError("the entered process could not fork (did it enter?)")
        return int.from_bytes(data, "little")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        os.close(self._req_w)   # EOF: it exits
        os.waitpid(self.pid, 0)
        os.close(self._ans_r)


def trial(reps: int, with_pystemd: bool) -> dict:
    from benchmarks.entry import PROPS
    from concurrentd._entry import EntryPlan, anchor_argv, anchor_path, enter
    from concurrentd._unitfiles import installed_anchor

    exe = installed_anchor(anchor_path())
    unit = f"bench-entry-{uuid.uuid4().hex[:8]}.service"
    props = [*PROPS, "Delegate=yes"]
    subprocess.run(["systemd-run", "--quiet", f"--unit={unit}", "-p", "Type=exec",
                    *[a for p in props for a in ("-p", p)], "--",
                    *anchor_argv(os.getpid(), path=exe)], check=True, timeout=30)
    out = {"fork": [], "zygote_fork": [], "enter": [], "steps": {}, "pystemd": [],
           "errors": []}
    try:
        pid = int(subprocess.run(["systemctl", "show", "-p", "MainPID", "--value", unit],
                                 check=True, capture_output=True, text=True).stdout)
        t0 = time.perf_counter_ns()
        plan = EntryPlan.from_pid(pid, anchor_exe=exe)
        out["plan_ns"] = time.perf_counter_ns() - t0
        out["plan"] = {"namespaces": sorted(plan.namespaces), "cgroup_procs": len(plan.cgroup_procs),
                       "seccomp_filters": len(plan.filters)}
        pyunit = None
        if with_pystemd:
            from pystemd.futures import enter_unit
            from pystemd.systemd1 import Unit

            pyunit = Unit(unit.encode())
            pyunit.load()

        def body_enter():
            t = time.perf_counter_ns()
            enter(plan)
            return {"ns": time.perf_counter_ns() - t}

        def body_steps():
            return {"steps": enter(plan, timing=True)}

        def body_pystemd():
            t = time.perf_counter_ns()
            enter_unit(pyunit)
            return {"ns": time.perf_counter_ns() - t, "uid": os.getuid()}

        with plan, _EnteredZygote(plan) as zygote:
            for _ in range(reps):
                fork_ns, _ = _fork_timed(lambda: {})
                out["fork"].append(fork_ns)
                out["zygote_fork"].append(zygote.fork_ns())
                _, got = _fork_timed(body_enter)
                if got and "ns" in got:
                    out["enter"].append(got["ns"])
                elif got:
                    out["errors"].append(got["error"])
                _, got = _fork_timed(body_steps)
                for name, ns in ((got or {}).get("steps") or {}).items():
                    out["steps"].setdefault(name, []).append(ns)
                if pyunit is not None:
                    _, got = _fork_timed(body_pystemd)
                    if got and "ns" in got:
                        out["pystemd"].append(got["ns"])
                    elif got:
                        out["errors"].append("pystemd: " + got["error"])
    finally:
        subprocess.run(["systemctl", "stop", unit], capture_output=True, timeout=30)
    return out


def run(reps: int, tick, log) -> dict:
    why = c.pystemd_unavailable()
    out = c.isolated(trial, reps, why is None, timeout=60 + reps)
    for _ in range(reps):
        tick()
    us = lambda xs: [x / 1e3 for x in xs]  # noqa: E731
    res = {"unit": "us", "plan": out.get("plan"), "plan_build_ms": out.get("plan_ns", 0) / 1e6,
           "fork": c.summary(us(out["fork"])), "zygote_fork": c.summary(us(out["zygote_fork"])),
           "entry_per_worker": c.summary(us([z - f for z, f in zip(out["zygote_fork"], out["fork"], strict=True)])),
           # a difference of two forks of ~0.7 ms each: its median alone may come out at either
           # sign (issue 19 §4); the interval says whether it was measured at all
           "entry_per_worker_ci": c.median_ci(us([z - f for z, f in
                                                  zip(out["zygote_fork"], out["fork"], strict=True)])),
           "enter": c.summary(us(out["enter"])),
           "steps": {k: c.summary(us(v)) for k, v in
                     sorted(out["steps"].items(), key=lambda kv: -sorted(kv[1])[len(kv[1]) // 2])},
           "pystemd_enter_unit": c.summary(us(out["pystemd"])) if out["pystemd"] else None,
           "errors": sorted(set(out["errors"]))[:5]}
    if why:
        res["pystemd_unavailable"] = why
    med = lambda k: (res[k] or {}).get("median")  # noqa: E731
    res["ratios"] = {"enter/fork": med("enter") / med("fork") if med("enter") and med("fork") else None,
                     "entry_per_worker/fork": c.paired_ratio(
                         [z - f for z, f in zip(out["zygote_fork"], out["fork"], strict=True)], out["fork"])}
    if med("pystemd_enter_unit") and med("enter"):
        res["ratios"]["pystemd_enter_unit/enter"] = med("pystemd_enter_unit") / med("enter")
        # A median per-worker entry at or below zero (forks in and out of the unit cost the same)
        # leaves no ratio; the target's verdict follows the difference's interval.
        per_worker = med("entry_per_worker")
        res["ratios"]["pystemd_enter_unit/entry_per_worker"] = (
            med("pystemd_enter_unit") / per_worker if per_worker and per_worker > 0 else None)
    for e in res["errors"]:
        log(f"entry: {e}")
    return res

"""Benchmark: the cost of entering a unit (csrc/enter.c) against a Python os.fork in the same run.

Needs a running systemd (run it inside the testbed). Starts one kitchen-sink unit with the static
anchor, builds the plan once, then N times: fork a worker, time enter(plan) in it, report over a
pipe. Prints medians; target: entry <= 200 us and <= 0.3x the fork.

    python benchmarks/entry.py [-n 300] [--steps]

--steps also times each step inside the C call (clock_gettime between steps; off by default
because it adds its own cost).
"""

from __future__ import annotations

import argparse
import os
import statistics
import struct
import subprocess
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from concurrentd._core import lib  # noqa: E402
from concurrentd._entry import EntryPlan, anchor_argv, enter  # noqa: E402
from concurrentd._entry.enter import _STEP_NAMES  # noqa: E402

PROPS = [
    "User=nobody", "Group=nogroup", "SupplementaryGroups=users", "PrivateTmp=yes",
    "PrivateNetwork=yes", "PrivateIPC=yes", "ProtectHostname=yes", "ProtectSystem=strict",
    "ProtectHome=yes", "PrivateDevices=yes", "NoNewPrivileges=yes",
    "CapabilityBoundingSet=CAP_NET_BIND_SERVICE", "AmbientCapabilities=CAP_NET_BIND_SERVICE",
    "SystemCallFilter=@system-service", "SystemCallArchitectures=native",
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "LimitNOFILE=1234", "UMask=0027",
    "Nice=5", "OOMScoreAdjust=300", "CPUQuota=50%", "MemoryMax=200M", "TasksMax=50",
]
REC = struct.Struct(f"=QQ{lib.CD_NSTEPS}Q")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=300)
    ap.add_argument("--steps", action="store_true", help="also time each step (off by default)")
    args = ap.parse_args()

    from entry_helpers import public_anchor  # the anchor at a path nobody may execute

    unit = f"entB-bench-{uuid.uuid4().hex[:8]}.service"
    subprocess.run(["systemd-run", "--quiet", f"--unit={unit}", "-p", "Type=exec",
                    *[a for p in PROPS for a in ("-p", p)], "--",
                    *anchor_argv(os.getpid(), path=public_anchor())], check=True)
    try:
        pid = int(subprocess.run(["systemctl", "show", "-p", "MainPID", "--value", unit],
                                 check=True, capture_output=True, text=True).stdout)
        t0 = time.perf_counter_ns()
        plan = EntryPlan.from_pid(pid, anchor_exe=public_anchor())
        plan_ns = time.perf_counter_ns() - t0
        forks, calls, wholes, steps = [], [], [], {}
        with plan:
            for _ in range(args.n):
                r, w = os.pipe()
                t0 = time.perf_counter_ns()
                child = os.fork()
                if child == 0:
                    t_fork = time.perf_counter_ns() - t0  # child side: fork returned here
                    os.close(r)
                    t1 = time.perf_counter_ns()
                    times = enter(plan, timing=args.steps) or {}
                    t2 = time.perf_counter_ns()
                    per = [times.get(_STEP_NAMES[i], 0) for i in range(lib.CD_NSTEPS)]
                    os.write(w, REC.pack(t_fork, t2 - t1, *per))
                    os._exit(0)
                forks.append(time.perf_counter_ns() - t0)  # parent side of os.fork
                os.close(w)
                data = os.read(r, REC.size)
                os.close(r)
                os.waitpid(child, 0)
                _, whole, *per = REC.unpack(data)
                wholes.append(whole)
                for i, v in enumerate(per):
                    if v:
                        steps.setdefault(_STEP_NAMES[i], []).append(v)
                calls.append(sum(per))
        def med(xs: list[int]) -> float:
            return statistics.median(xs) / 1000

        fork_us, enter_us = med(forks), med(wholes)
        print(f"unit {unit}: {len(plan.namespaces)} namespaces, {len(plan.cgroup_procs)} "
              f"cgroup.procs, {len(plan.filters)} seccomp filters; plan built in {plan_ns/1e6:.1f} ms")
        print(f"median over {args.n}:")
        print(f"  os.fork (parent side)          {fork_us:8.1f} us")
        print(f"  enter(plan) (whole, in child)  {enter_us:8.1f} us   "
              f"= {enter_us / fork_us:.2f}x fork   target <= 200 us and <= 0.3x")
        if args.steps:
            print(f"  sum of steps inside cd_enter   {med(calls):8.1f} us")
            for name, xs in sorted(steps.items(), key=lambda kv: -statistics.median(kv[1])):
                print(f"    {name:<16} {med(xs):8.1f} us")
    finally:
        subprocess.run(["systemctl", "stop", unit], capture_output=True)


if __name__ == "__main__":
    main()

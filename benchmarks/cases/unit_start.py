"""Case 5: unit start, call → running anchor, concurrentd's systemd layer against ``systemd-run``.

The same unit both ways: concurrentd's anchor (the copy a pool runs, under /run/concurrentd),
Type=exec (the start job ends once the anchor has exec'd with its sandbox applied), the pool's
sandbox properties. Interleaved, one of each per repetition; units are stopped outside the timed
section. Two figures for concurrentd:

- ``connect+start``: ``Systemd.connect()`` + ``start_service()`` — what a pool pays (it opens its
  own connection), and what systemd-run pays too (fork+exec, connect, start, wait for the job);
  the target applies to this one;
- ``start (warm)``: ``start_service()`` on a connection already subscribed (the lower bound).

Each start comes SETTLE seconds after the previous unit's stop, as a pool's start comes in the
pool cases (each trial a new process) and a program's calls come: a start right after a stop
finds the kernel's cgroup-migration lock still warm (an RCU grace period already passed) and
takes about half as long (here 14 ms against 25-27 ms), a floor no pool start meets.
"""

from __future__ import annotations

import os
import subprocess
import time

from . import _common as c

#: seconds between a unit's stop and the next timed start
SETTLE = 0.2

SYSTEMD_RUN_PROPS = ["PrivateTmp=yes", "PrivateNetwork=yes", "ProtectSystem=strict",
                     "User=nobody", "CPUQuota=50%"]


def _argv() -> list[str]:
    from concurrentd._entry import anchor_argv, anchor_path
    from concurrentd._unitfiles import installed_anchor

    return anchor_argv(os.getpid(), path=installed_anchor(anchor_path()))


def trial(reps: int) -> dict:
    from concurrentd.systemd import Systemd

    argv = _argv()
    cold, warm, srun = [], [], []
    with Systemd.connect() as sd:
        sd.start_service(argv, c.POOL_PROPERTIES).stop()   # warm up: Subscribe, AddMatch, caches
        for i in range(reps):
            time.sleep(SETTLE)
            t0 = time.perf_counter_ns()
            s2 = Systemd.connect()
            u = s2.start_service(argv, c.POOL_PROPERTIES, timeout=30)
            cold.append(time.perf_counter_ns() - t0)
            u.stop(timeout=30)
            s2.close()

            time.sleep(SETTLE)
            t0 = time.perf_counter_ns()
            u = sd.start_service(argv, c.POOL_PROPERTIES, timeout=30)
            warm.append(time.perf_counter_ns() - t0)
            u.stop(timeout=30)

            name = f"bench-srun-{os.getpid()}-{i}.service"
            cmd = ["systemd-run", "--quiet", f"--unit={name}", "-p", "Type=exec",
                   "-p", "CollectMode=inactive-or-failed",
                   *[a for p in SYSTEMD_RUN_PROPS for a in ("-p", p)], "--", *argv]
            time.sleep(SETTLE)
            t0 = time.perf_counter_ns()
            subprocess.run(cmd, check=True, timeout=30)
            srun.append(time.perf_counter_ns() - t0)
            sd.unit(name).stop(timeout=30)
    return {"cold": cold, "warm": warm, "systemd_run": srun}


def run(reps: int, tick, log) -> dict:
    out = c.isolated(trial, reps, timeout=30 + (5 + 3 * SETTLE) * reps)
    for _ in range(reps):
        tick()
    ms = lambda xs: [x / 1e6 for x in xs]  # noqa: E731
    return {"unit": "ms",
            "concurrentd connect+start": c.summary(ms(out["cold"])),
            "concurrentd start (warm)": c.summary(ms(out["warm"])),
            "systemd-run": c.summary(ms(out["systemd_run"])),
            "ratios": {"concurrentd connect+start/systemd-run":
                       c.paired_ratio(out["cold"], out["systemd_run"]),
                       "concurrentd start (warm)/systemd-run":
                       c.paired_ratio(out["warm"], out["systemd_run"])}}

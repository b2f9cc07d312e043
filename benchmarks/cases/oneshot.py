"""Case 6: one sandboxed call, called again and again (``run(f)``), against the other ways to run
one Python function in a sandbox.

Each repetition times, back to back in rotating order, the same small function (the sum of
range(1000)) four ways, with the same sandbox (PrivateTmp, PrivateNetwork, ProtectSystem=strict,
User=nobody; bubblewrap: the namespaces it has for those, as root):

- ``run (prepared)``: ``concurrentd.run(f, properties=…)``: it takes the unit the previous call
  prepared (concurrentd._warm), forks its zygote into it, returns the result;
- ``run (cold)``: the same with ``warm_units=False``: a unit started for the call;
- ``run (fresh, prepared)``: ``run(f, properties=…, mp_context=forkserver, preload=[f's
  module])``: a fresh interpreter's zygote, which is prepared too (entered, its first worker
  forked, f's module imported);
- ``systemd-run``: ``systemd-run --wait --pipe -p … python3 -c …``;
- ``bwrap``: ``bwrap --unshare-all … python3 -c …`` (Debian's bubblewrap), where it is installed
  (without its own /proc, which a box's nested pid namespace does not let it mount).

Both run the system's ``python3`` (a Python under root's home is out of User=nobody's reach).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

from . import _common as c

PROPERTIES = {"PrivateTmp": True, "PrivateNetwork": True, "ProtectSystem": "strict",
              "User": "nobody"}
_CODE = "print(sum(range(1000)))"
_PYTHON = shutil.which("python3", path="/usr/bin:/bin") or sys.executable


def work() -> int:
    return sum(range(1000))


def _systemd_run() -> None:
    out = subprocess.run(["systemd-run", "--quiet", "--wait", "--pipe", "--collect",
                          *[a for p in ("PrivateTmp=yes", "PrivateNetwork=yes",
                                        "ProtectSystem=strict", "User=nobody")
                            for a in ("-p", p)],
                          "--", _PYTHON, "-c", _CODE],
                         capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert out.stdout.strip() == str(work()), out.stderr


def _bwrap() -> None:
    out = subprocess.run(["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--tmpfs", "/tmp",
                          "--unshare-all", "--die-with-parent", "--", _PYTHON, "-c", _CODE],
                         capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == str(work()), out.stderr


def trial(reps: int) -> dict:
    from multiprocessing import get_context

    from concurrentd import run

    fresh = get_context("forkserver")
    ways = {
        "run (prepared)": lambda: run(work, properties=PROPERTIES),
        "run (cold)": lambda: run(work, properties=PROPERTIES, warm_units=False),
        "run (fresh, prepared)": lambda: run(work, properties=PROPERTIES, mp_context=fresh,
                                             preload=[__name__]),
        "systemd-run": _systemd_run,
    }
    if shutil.which("bwrap"):
        ways["bwrap"] = _bwrap
    for way in ways.values():   # warm-up: imports, caches, the first prepared unit
        way()
    names = list(ways)
    times: dict[str, list[int]] = {k: [] for k in names}
    for i in range(reps):
        for name in names[i % len(names):] + names[:i % len(names)]:
            t0 = time.perf_counter_ns()
            ways[name]()
            times[name].append(time.perf_counter_ns() - t0)
            if name.startswith("run"):
                # its unit stops after it returned, and the next one is prepared: not into the
                # next timing (calls spaced as a program's would be, not back to back)
                time.sleep(0.3)
    return times


def run(reps: int, tick, log) -> dict:
    out = c.isolated(trial, reps, timeout=60 + 5 * reps)
    for _ in range(reps):
        tick()
    ms = lambda xs: [x / 1e6 for x in xs]  # noqa: E731
    result = {"unit": "ms", **{k: c.summary(ms(v)) for k, v in out.items()}, "ratios": {}}
    for other in ("systemd-run", "bwrap"):
        if other in out:
            for ours in ("run (prepared)", "run (fresh, prepared)"):
                result["ratios"][f"{other}/{ours}"] = c.paired_ratio(out[other], out[ours])
    result["ratios"]["run (cold)/run (prepared)"] = c.paired_ratio(out["run (cold)"],
                                                                   out["run (prepared)"])
    if "bwrap" not in out:
        result["bwrap_unavailable"] = "bwrap not found (Debian: apt-get install bubblewrap)"
    return result

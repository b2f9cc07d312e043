"""What every case shares: statistics, the contenders' properties, isolated trials, pystemd.

Every trial that starts a pool runs in a forked child in its own process group, so that a hung
contender (pystemd waiting for a signal that never comes) is killed after a timeout and the suite
goes on; the child reports one JSON object over a pipe.
"""

from __future__ import annotations

import json
import math
import os
import select
import signal
import statistics
import time
import traceback
from typing import Any, Callable

#: The sandbox every contender gets (issue 6 §2.3), in each library's spelling.
POOL_PROPERTIES = {"PrivateTmp": True, "PrivateNetwork": True, "ProtectSystem": "strict",
                   "User": "nobody", "CPUQuota": "50%"}
PYSTEMD_PROPERTIES = {b"PrivateTmp": True, b"PrivateNetwork": True, b"ProtectSystem": b"strict",
                      b"User": b"nobody", b"CPUQuotaPerSecUSec": 500_000}
#: Throughput runs without the CPU quota: 50 % of one CPU for two workers would measure the cap.
THROUGHPUT_PROPERTIES = {k: v for k, v in POOL_PROPERTIES.items() if k != "CPUQuota"}
PYSTEMD_THROUGHPUT_PROPERTIES = {k: v for k, v in PYSTEMD_PROPERTIES.items()
                                 if k != b"CPUQuotaPerSecUSec"}

CONTENDERS = ("concurrentd", "concurrentd (fresh)", "ProcessPoolExecutor", "pystemd")
TRIAL_TIMEOUT = 60.0


# -- statistics ------------------------------------------------------------------------------

def summary(xs: list[float]) -> dict[str, float] | None:
    """Median and spread (quartiles, min, max) of ``xs``; None when empty."""
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    q = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else [xs[0]] * 3
    return {"median": statistics.median(xs), "p25": q[0], "p75": q[2], "min": xs[0],
            "max": xs[-1], "n": len(xs)}


def paired_ratio(a: list[float | None], b: list[float | None]) -> dict[str, float] | None:
    """The summary of a[i] / b[i] over the repetitions where both were measured (same run,
    interleaved: each pair ran back to back)."""
    return summary([x / y for x, y in zip(a, b, strict=True) if x is not None and y])


#: the confidence a figure measured as a difference is reported with
CI_LEVEL = 0.95


def median_ci(xs: list[float | None], level: float = CI_LEVEL) -> dict[str, float] | None:
    """A distribution-free confidence interval for the median of ``xs`` (the sign test's):
    the order statistics x(j) and x(n+1-j), j the largest for which P(Bin(n, 1/2) < j) is at
    most (1 - level) / 2. No assumption on the distribution and no random resampling, so the
    same samples always give the same interval.

    Returns {"lo", "hi", "level", "n"}: ``level`` is the coverage the interval has, below the
    one asked for when there are too few values (n < 6 for 95 %: then the whole range).
    """
    xs = sorted(x for x in xs if x is not None)
    n = len(xs)
    if not n:
        return None
    alpha, total = (1 - level) / 2, 2 ** n
    j, below = 1, 1   # below: the number of outcomes of Bin(n, 1/2) that are < j, times 2**n
    while j < (n + 1) // 2 and (below + math.comb(n, j)) / total <= alpha:
        below += math.comb(n, j)
        j += 1
    return {"lo": xs[j - 1], "hi": xs[n - j], "level": 1 - 2 * below / total, "n": n}


def excludes_zero(ci: dict | None, level: float = CI_LEVEL) -> bool:
    """The interval has the coverage asked for and lies wholly on one side of zero: the
    difference it bounds was measured (a median difference alone can come out at any sign)."""
    return bool(ci) and ci["level"] >= level - 1e-9 and (ci["lo"] > 0 or ci["hi"] < 0)


# -- pystemd ---------------------------------------------------------------------------------

_PYSTEMD_WHY: str | None = None
_PYSTEMD_CHECKED = False


def pystemd_unavailable() -> str | None:
    """None when pystemd.futures can be used, else why not (printed as "pystemd unavailable")."""
    global _PYSTEMD_WHY, _PYSTEMD_CHECKED
    if not _PYSTEMD_CHECKED:
        _PYSTEMD_CHECKED = True
        try:
            import pystemd.futures  # noqa: F401
            import pystemd.systemd1  # noqa: F401
        except Exception as e:   # noqa: BLE001 - ImportError, a missing libsystemd.so …
            _PYSTEMD_WHY = f"{type(e).__name__}: {e} (pip install pystemd; it needs " \
                           "libsystemd-dev and pkg-config, see benchmarks/README.md)"
    return _PYSTEMD_WHY


_SUBSCRIBER = None


def ensure_subscribed() -> None:
    """Keep one connection that has called Manager.Subscribe() open for the whole run.

    pystemd's executor waits for JobRemoved/PropertiesChanged without subscribing; systemd sends
    them only while some client is subscribed (a fresh systemd has none: pystemd would wait for
    ever). No AddMatch: the bus routes nothing to
    this connection, it only has to stay open.
    """
    global _SUBSCRIBER
    if _SUBSCRIBER is None:
        from concurrentd.systemd import Systemd

        s = Systemd.connect()
        s.conn.call(s.manager.subscribe(), step="Subscribe", timeout=10)
        _SUBSCRIBER = s


# -- isolated trials -------------------------------------------------------------------------

def isolated(fn: Callable[..., Any], *args, timeout: float = TRIAL_TIMEOUT) -> Any:
    """Run ``fn(*args)`` in a forked child (own process group) and return its JSON-able result.

    Raises:
        TimeoutError: no answer within ``timeout`` (the child's process group was killed).
        RuntimeError: the child failed (its traceback is in the message).
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            os.setpgid(0, 0)
            try:
                out = {"ok": fn(*args)}
            except BaseException:   # noqa: BLE001 - report, never return into the parent's code
                out = {"error": traceback.format_exc(limit=8)}
                code = 1
            data = json.dumps(out).encode()
            while data:
                data = data[os.write(w, data):]
        finally:
            os._exit(code)
    os.close(w)
    try:
        os.setpgid(pid, pid)
    except OSError:
        pass   # the child did it already (or has exited)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                _kill_group(pid)
                raise TimeoutError(f"{getattr(fn, '__name__', fn)} gave no answer in {timeout:.0f} s "
                                   "(killed)")
            chunk = os.read(r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
        _reap(pid, deadline)
    out = json.loads(b"".join(chunks) or b'{"error": "the trial died without an answer"}')
    if "error" in out:
        raise RuntimeError(out["error"])
    return out["ok"]


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _reap(pid: int, deadline: float) -> None:
    while True:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return
        if time.monotonic() > deadline + 5:
            _kill_group(pid)
            os.waitpid(pid, 0)
            return
        time.sleep(0.005)


# -- worker side helpers (module level: pickled by reference, present in every fork) ------------

_READY_NS: int | None = None


def mark_ready() -> None:
    """Pool initializer: the moment the worker is ready to run a task (inside its unit)."""
    global _READY_NS
    _READY_NS = time.perf_counter_ns()


def ready_ns() -> int | None:
    return _READY_NS


def noop(x: Any = None) -> None:
    return None


def whoami() -> int:
    return os.getuid()


# -- prepared units (concurrentd._warm) ---------------------------------------------------------

def await_prepared(timeout: float = 30.0) -> None:
    """Returns once this process holds a prepared unit (concurrentd prepares one after a pool
    with the same properties is stopped, in a thread of its own), so that the next pool takes
    it. (Reads concurrentd._warm's private state: the benchmark waits for exactly that.)"""
    from concurrentd import _warm

    deadline = time.monotonic() + timeout
    while not _warm._prepared._ready:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no unit prepared within {timeout:.0f} s")
        time.sleep(0.002)


def stop_prepared() -> None:
    """Stops the unit concurrentd prepares after a trial's last pool (and waits for the thread
    that prepares it): outside the timed part, and so that systemd does not still set it up
    while the next trial is timed."""
    from concurrentd import _warm

    _warm.stop_all()

"""Why a worker died: its exit status read together with the unit's own cgroup counters.

A worker killed by SIGKILL may have hit MemoryMax= (the kernel's OOM killer counts it in the
unit's memory cgroup: memory.oom_control on cgroup v1, memory.events on v2), or been killed by
hand; a SIGSYS is the unit's seccomp filter (SystemCallFilter=) refusing a system call; a worker
that could not be forked into the unit for want of pids hit TasksMax= (pids.events). Reading the
counters is I/O at the edge; turning them into words (describe) is pure.
"""

from __future__ import annotations

import os
import signal
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from ._entry import ENTER_FAILED_EXIT_STATUS

OOM, SECCOMP, SIGNAL, EXIT, ENTRY, ZYGOTE, PROTOCOL, UNIT_STOPPED = (
    "oom", "seccomp", "signal", "exit", "entry", "zygote", "protocol", "unit-stopped")


class WorkerKilled(BrokenProcessPool):
    """A worker died while running a task; with on_worker_death="replace", only that task fails.

    Attributes:
        cause: "oom" (the unit's MemoryMax=), "seccomp" (SIGSYS from SystemCallFilter=),
            "signal" (another signal), "exit" (the worker exited, e.g. os._exit), "entry",
            "zygote" (no worker could be started: the unit stopped, the pool's zygote exited, or
            its fork() failed, e.g. at TasksMax=), "protocol" (the owner killed it: it wrote
            what no worker writes on its result pipe, or stopped in the middle of a result),
            "unit-stopped" (the unit stopped under it: systemctl stop, RuntimeMaxSec=…).
        signal: the signal number that killed it, or None.
        exitcode: as multiprocessing reports it (negative: killed by that signal).
        pid: the worker's pid.
        unit: the unit's name.
    """

    def __init__(self, message: str, *, cause: str, exitcode: int, pid: int, unit: str):
        super().__init__(message)
        self.cause, self.exitcode, self.pid, self.unit = cause, exitcode, pid, unit
        self.signal = -exitcode if exitcode < 0 else None

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (_rebuild_worker_killed, (self.args[0], self.cause, self.exitcode, self.pid, self.unit))


def _rebuild_worker_killed(message: str, cause: str, exitcode: int, pid: int,
                           unit: str) -> WorkerKilled:
    return WorkerKilled(message, cause=cause, exitcode=exitcode, pid=pid, unit=unit)


@dataclass(frozen=True)
class Counters:
    oom_kills: int = 0
    pids_max_hits: int = 0


def _keyed(path: str) -> dict[str, int]:
    try:
        with open(path) as f:
            return {k: int(v) for k, v in (line.split() for line in f if line.strip())}
    except (OSError, ValueError):
        return {}


def read_counters(cgroup_dirs: list[str]) -> Counters:
    """The unit's OOM kills and pids-limit hits, summed over the hierarchies that count them."""
    oom = pids = 0
    for d in cgroup_dirs:
        oom += _keyed(os.path.join(d, "memory.oom_control")).get("oom_kill", 0)   # v1
        oom += _keyed(os.path.join(d, "memory.events")).get("oom_kill", 0)        # v2
        pids += _keyed(os.path.join(d, "pids.events")).get("max", 0)              # v1 and v2
    return Counters(oom, pids)


def classify(exitcode: int, new_oom_kills: int) -> str:
    if exitcode == ENTER_FAILED_EXIT_STATUS:
        return ENTRY
    if exitcode == -signal.SIGKILL and new_oom_kills > 0:
        return OOM
    if exitcode == -signal.SIGSYS:
        return SECCOMP
    return SIGNAL if exitcode < 0 else EXIT


def how_it_ended(exitcode: int) -> str:
    """"was killed by SIGKILL" or "exited with status 3", from an exit code as multiprocessing
    gives it (negative: the signal)."""
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with status {exitcode}"


def describe(cause: str, exitcode: int, pid: int, unit: str, limits: dict[str, str],
             pids_max_hits: int = 0) -> str:
    """One sentence: which worker of which unit, how it ended, and why."""
    how = how_it_ended(exitcode)
    why = {
        OOM: f"the unit's memory limit was reached (MemoryMax={limits.get('MemoryMax', '?')}) and "
             "the kernel's OOM killer ended it",
        SECCOMP: "it made a system call that the unit's seccomp filter (SystemCallFilter=) forbids",
        ENTRY: "it could not enter the unit (its stderr says at which step)",
        SIGNAL: "no limit of the unit's accounts for it (killed from outside, or by the task itself)",
        EXIT: "the task ended the process (os._exit or similar) without returning",
    }[cause]
    if pids_max_hits:
        why += f"; the unit's task limit (TasksMax={limits.get('TasksMax', '?')}) was hit " \
               f"{pids_max_hits} time(s)"
    return f"worker {pid} of unit {unit} {how}: {why}"

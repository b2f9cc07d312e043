"""Entering a unit: copy the confinement of a unit's main process (the anchor) onto a forked worker.

    plan = EntryPlan.from_pid(main_pid)   # parent, once per unit
    pid = os.fork()
    if pid == 0:
        enter(plan)                       # child: one C call, then user code runs confined

See plan.py (what is copied), enter.py (the call) and csrc/enter.c (the order, and why).
"""

from __future__ import annotations

import os

from .enter import (
    ENTER_FAILED_EXIT_STATUS,
    EnterError,
    add_sched_reset,
    enter,
    filters_let_admin_go,
    fork_and_enter,
    install_filters,
    release_admin,
)
from .plan import AnchorGone, EntryPlan
from .seccomp import SeccompFilter, get_filters

__all__ = [
    "ENTER_FAILED_EXIT_STATUS", "AnchorGone", "EnterError", "EntryPlan", "SeccompFilter",
    "add_sched_reset", "anchor_argv", "anchor_path", "enter", "filters_let_admin_go",
    "fork_and_enter", "get_filters", "install_filters", "release_admin",
]

#: Placeholder the anchor overwrites with its securebits, MDWE and THP flags (see csrc/anchor.c).
STATE_PLACEHOLDER = "-" * 24


def anchor_path() -> str:
    """The static anchor executable built with the package (concurrentd/_anchor)."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_anchor")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"concurrentd's anchor executable is missing ({path}): rebuild the package "
            "(pip install -e .), which compiles csrc/anchor.c statically")
    return path


def anchor_argv(owner_pid: int | None = None, *, path: str | None = None,
                owner_fifo: str | None = None) -> list[str]:
    """The command line of a unit's main process that lives as long as ``owner_pid`` (default:
    the caller) and reports its securebits to EntryPlan.from_pid. ``owner_fifo``: watch the
    owner through a FIFO it holds open for writing instead of its pid (a unit with a pid
    namespace of its own, PrivatePIDs=, cannot see the owner's pid); see csrc/anchor.c."""
    fifo = ["--owner-fifo", owner_fifo] if owner_fifo else []
    return [path or anchor_path(), "--owner-pid", str(owner_pid or os.getpid()), *fifo,
            "--state", STATE_PLACEHOLDER]

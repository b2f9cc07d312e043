"""A throwaway systemd for hosts whose PID 1 is not systemd (containers, CI machines).

``python -m concurrentd.testbed -- CMD ARGS...`` boots one, runs CMD inside it as root, and tears
it down; ``--auto`` runs CMD directly where systemd already is PID 1. From Python::

    from concurrentd.testbed import Box
    with Box() as box:
        box.run(["systemctl", "is-system-running"])

The environment variable CONCURRENTD_TESTBED=always|never|auto (default auto) overrides the
detection made by ``needed()``.
"""

from __future__ import annotations

import os

from ._errors import TestbedError
from .box import Box, systemd_is_pid1

__all__ = ["Box", "TestbedError", "needed", "systemd_is_pid1", "inside"]


def inside() -> bool:
    """True in a process started by a testbed box."""
    return "CONCURRENTD_TESTBED_BOX" in os.environ


def needed() -> bool:
    """Whether a command that needs systemd should run in a box: CONCURRENTD_TESTBED decides
    (always, never), else the answer is yes where PID 1 is not systemd and we are not in a box."""
    mode = os.environ.get("CONCURRENTD_TESTBED", "auto").strip().lower()
    if mode not in ("always", "never", "auto", ""):
        raise ValueError(f"CONCURRENTD_TESTBED must be always, never or auto (not {mode!r})")
    if inside():
        return False
    if mode in ("always", "never"):
        return mode == "always"
    return not systemd_is_pid1()

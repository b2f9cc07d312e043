"""The owner's fds on the entry plan's failure paths: an anchor that exits while the owner reads
its plan (a process of another unit of the same user may kill it: SECURITY.md, "Units of one
user can signal each other") must not make the owner close fd numbers that are no longer the
plan's.
"""

from __future__ import annotations

import gc
import os

import pytest

from concurrentd._entry import plan as plan_module
from concurrentd._entry.plan import AnchorGone, EntryPlan


def test_an_anchor_that_exits_after_its_plan_is_read_closes_no_fd_twice(monkeypatch):
    """from_pid() built the plan, then found the anchor exited (its pidfd readable): it closed
    the plan's fds and raised, but the plan it had built still held them, and its __del__ (in the
    owner, the plan's owner_pid) closed those numbers again once the exception was dropped: by
    then another file's (here, pipes opened while handling the error, as a retry would open a new
    unit's). An fd of the owner closed under another of its objects: its D-Bus connection, a
    worker's pipes, the copies of stdout the workers' output goes to."""
    # The race, made certain: the anchor is seen exited right after its plan was read.
    monkeypatch.setattr(plan_module, "_readable", lambda fd, timeout=0: True)
    gc.disable()   # __del__ runs when the exception's frames go, not at a collection
    taken: list[int] = []
    try:
        try:
            EntryPlan.from_pid(os.getpid(), anchor_exe="/proc/self/exe", seccomp=False,
                               environ=False)
        except AnchorGone:
            # The plan's fd numbers are free again: what the owner opens next takes them.
            for _ in range(8):
                taken.extend(os.pipe())
        else:
            pytest.fail("from_pid() did not see the anchor exit")
        gc.collect()
        closed = []
        for fd in taken:
            try:
                os.fstat(fd)
            except OSError:
                closed.append(fd)
        assert not closed, f"the failed plan closed fds {closed}, opened after it had failed"
    finally:
        gc.enable()
        for fd in taken:
            try:
                os.close(fd)
            except OSError:
                pass

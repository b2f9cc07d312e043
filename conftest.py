"""Runs the test session against a real systemd.

Where PID 1 is not systemd (containers, CI machines), the session is run again inside a throwaway
systemd booted by concurrentd.testbed; this outer session then runs only the tests marked `host`
(those of the testbed itself, which boot boxes of their own), and fails if the inner one failed.
Where systemd is PID 1, everything runs here. CONCURRENTD_TESTBED=always|never overrides the
detection. After each `host` test, nothing it started may still run (_nothing_left_running).

Not root: only the tests marked `pure` run (parsers, messages, tables: they need neither root nor
systemd), and the session says how many others it left out.
"""

import glob
import os
import signal
import sys
import time

import pytest

_INNER_RC = pytest.StashKey[int]()
_NOT_ROOT = pytest.StashKey[int]()   # tests left out: they need root


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    from concurrentd import testbed

    if os.geteuid() != 0:
        config.stash[_NOT_ROOT] = 0   # only the pure tests, here
        return None
    if not testbed.needed():
        return None
    args = [sys.executable, "-m", "pytest", *config.invocation_params.args]
    with testbed.Box(binds=[str(config.rootpath)]) as box:
        config.stash[_INNER_RC] = box.run(args)
    return None


def pytest_collection_modifyitems(config, items):
    from concurrentd import testbed

    if _NOT_ROOT in config.stash:
        keep = lambda item: item.get_closest_marker("pure") is not None   # noqa: E731
        config.stash[_NOT_ROOT] = sum(not keep(i) for i in items)
    elif _INNER_RC in config.stash:
        keep = lambda item: item.get_closest_marker("host") is not None   # noqa: E731
    elif testbed.inside():
        keep = lambda item: item.get_closest_marker("host") is None   # noqa: E731
    else:
        return
    deselected = [i for i in items if not keep(i)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [i for i in items if keep(i)]


def combined_exit_status(inner: int, outer: int) -> int:
    """The exit status of a session run in two halves, the box's (inner) and the host's (outer):
    either's failure (the box's first); else OK if either ran tests (with `-k` one half may
    select none); else NO_TESTS_COLLECTED."""
    ok, none = pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED
    failed = [status for status in (inner, outer) if status not in (ok, none)]
    if failed:
        return failed[0]
    return ok if ok in (inner, outer) else none


def pytest_sessionfinish(session, exitstatus):
    inner = session.config.stash.get(_INNER_RC, None)
    if inner is not None:
        session.exitstatus = combined_exit_status(inner, exitstatus)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    left_out = config.stash.get(_NOT_ROOT, None)
    if left_out:
        terminalreporter.write_line(
            f"not root (uid {os.geteuid()}): only the tests marked pure ran; {left_out} others "
            "start systemd units and need root: run the suite as root for them")
    inner = config.stash.get(_INNER_RC, None)
    if inner is not None:
        terminalreporter.write_line(
            f"the tests that need systemd ran in a testbed box above (exit status {inner}); "
            "the host-only tests ran here")


# -- a host test leaves nothing running -----------------------------------------------------------

def _running_children(pid: int) -> dict[int, str]:
    """The live (not zombie) child processes of `pid`, with their command lines."""
    children = {}
    for proc in glob.glob("/proc/[0-9]*"):
        try:
            with open(f"{proc}/stat") as f:
                state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
            with open(f"{proc}/cmdline") as f:
                cmdline = f.read().replace("\0", " ").strip()
        except (OSError, ValueError):
            continue   # gone meanwhile
        if int(ppid) == pid and state != "Z":
            children[int(os.path.basename(proc))] = cmdline
    return children


def _boxes_of(pids: list[int]) -> list[str]:
    """What boxes that `pids` made left behind: state directories, mounts, sub-cgroups. A box
    is named after the pid that made it (Box.name), so the boxes other sessions may be running
    on the machine are never counted."""
    from concurrentd._mountinfo import read_hierarchies, read_mountinfo
    from concurrentd.testbed.box import STATE_ROOT

    states = tuple(f"{STATE_ROOT}/{pid}-" for pid in pids)
    left = [d for state in states for d in glob.glob(state + "*")]
    left += [f"mount {m.mount_point}" for m in read_mountinfo()
             if m.mount_point.startswith(states)]
    left += [d for h in read_hierarchies() for pid in pids
             for d in glob.glob(os.path.join(h.own_dir, f"concurrentd-testbed-{pid}-*"))]
    return left


def _stop(pids: list[int], timeout: float = 30.0) -> None:
    """SIGTERM (a testbed CLI then tears its box down), then SIGKILL what still runs; reaps."""
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for pid in pids:
        try:
            while os.waitpid(pid, os.WNOHANG) == (0, 0):
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    break
                time.sleep(0.05)
        except ChildProcessError:
            pass   # reaped by its Popen meanwhile


@pytest.fixture(autouse=True)
def _nothing_left_running(request):
    """After each `host` test (those boot boxes on the host): no process it started still runs,
    and no box it, or one of those processes, made left a state directory, mount or cgroup.
    What is left is stopped (found by pid, never by name), and the test errors, naming it."""
    yield
    if request.node.get_closest_marker("host") is None:
        return
    children = _running_children(os.getpid())
    _stop(list(children))
    left = [f"process {pid} ({cmdline})" for pid, cmdline in children.items()]
    left += _boxes_of([os.getpid(), *children])
    if left:
        pytest.fail("left running or behind: " + "; ".join(left), pytrace=False)


@pytest.fixture(autouse=True)
def _prepared_units_stopped_after_each_test():
    """Units prepared for the next pool (concurrentd._warm) live as long as their process: the
    suite's tests, one process, each start without any, and none outlives its test; nor does
    the unit of a run() call, which stops after run() has returned."""
    yield
    manager = sys.modules.get("concurrentd._manager")
    for pool in list(manager._running) if manager is not None else ():
        if pool.shutting_down:
            pool.join(30)
    warm = sys.modules.get("concurrentd._warm")
    if warm is not None:
        warm.stop_all()

"""Runs the test session against a real systemd.

Where PID 1 is not systemd (containers, CI machines), the session is run again inside a throwaway
systemd booted by concurrentd.testbed; this outer session then runs only the tests marked `host`
(those of the testbed itself, which boot boxes of their own), and fails if the inner one failed.
Where systemd is PID 1, everything runs here. CONCURRENTD_TESTBED=always|never overrides the
detection.
"""

import os
import sys

import pytest

_INNER_RC = pytest.StashKey[int]()


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    from concurrentd import testbed

    if not testbed.needed():
        return None
    if os.geteuid() != 0:
        pytest.exit("concurrentd's tests need root (they start systemd units)", returncode=2)
    args = [sys.executable, "-m", "pytest", *config.invocation_params.args]
    with testbed.Box(binds=[str(config.rootpath)]) as box:
        config.stash[_INNER_RC] = box.run(args)
    return None


def pytest_collection_modifyitems(config, items):
    from concurrentd import testbed

    if _INNER_RC in config.stash:
        keep = lambda item: item.get_closest_marker("host") is not None   # noqa: E731
    elif testbed.inside():
        keep = lambda item: item.get_closest_marker("host") is None   # noqa: E731
    else:
        return
    deselected = [i for i in items if not keep(i)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [i for i in items if keep(i)]


def pytest_sessionfinish(session, exitstatus):
    inner = session.config.stash.get(_INNER_RC, None)
    if inner is None:
        return
    if inner != 0:
        session.exitstatus = inner
    elif exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.OK   # every selected test ran in the box


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    inner = config.stash.get(_INNER_RC, None)
    if inner is not None:
        terminalreporter.write_line(
            f"the tests that need systemd ran in a testbed box above (exit status {inner}); "
            "the host-only tests ran here")


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
        warm._prepared.close()
        warm._prepared = warm._Prepared()

"""CPython's own ProcessPoolExecutor tests, run against TransientUnitPoolExecutor.

``python tests/cpython_suite.py`` (under a running systemd: inside the testbed) loads the process-pool
tests of the running interpreter's ``test.test_concurrent_futures`` package, with
``concurrent.futures.ProcessPoolExecutor`` replaced by a TransientUnitPoolExecutor whose unit has
``PrivateTmp=yes``, runs the fork-context variants, and prints one line per test: pass, fail,
error or skip. Tests whose scripts run in a child interpreter (``assert_python_ok``) get the same
replacement there.

A test listed in DEVIATIONS is one where concurrentd is deliberately different from
ProcessPoolExecutor (README, "Where it differs from ProcessPoolExecutor"): it is expected to fail,
and on the version the list was drawn up on (EXACT_ON), a listed test that passes is reported
too, so the list stays true. Python 3.10's suite is one module: all its fork variants run. The exit status is 0 when
the verdict is exactly the expected one, 1 otherwise.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import unittest

#: The modules of CPython's suite that test the process pool (test_thread_pool, test_future
#: and test_init's thread variants test nothing of ours).
MODULES = ("test_process_pool", "test_shutdown", "test_wait", "test_as_completed", "test_init",
           "test_deadlock")

_POOL = "ProcessPoolForkProcessPoolExecutorTest."
_DEADLOCK = "ProcessPoolForkExecutorDeadlockTest."
_SHUTDOWN = "ProcessPoolForkProcessPoolShutdownTest."
_DATA = "results are data: a result holding a type not allowed fails its future with ResultRefused"
_BASE = "a task's SystemExit reaches the owner as RemoteBaseException, never as SystemExit"
_ALONE = "a call that fails to unpickle in the worker fails its own future; the pool goes on"
_MANAGER = "the unit's PrivateTmp= hides the owner's multiprocessing.Manager socket from workers"

#: Tests where concurrentd differs from ProcessPoolExecutor on purpose, with the reason (README,
#: "Where it differs from ProcessPoolExecutor").
DEVIATIONS: dict[str, str] = {
    _POOL + "test_free_reference": _DATA,
    _DEADLOCK + "test_error_during_result_unpickle_in_result_handler": _DATA,
    _DEADLOCK + "test_exit_during_result_unpickle_in_result_handler": _DATA,
    _DEADLOCK + "test_exit_during_func_exec_on_worker": _BASE,
    _DEADLOCK + "test_exit_during_result_pickle_on_worker": _BASE,
    _DEADLOCK + "test_error_at_task_unpickle": _ALONE,
    _DEADLOCK + "test_exit_at_task_unpickle": _ALONE,
    _POOL + "test_max_tasks_per_child":
        "max_tasks_per_child works with the fork context (workers fork from a single-threaded zygote)",
    _POOL + "test_max_tasks_per_child_defaults_to_spawn_context":
        "max_tasks_per_child keeps the fork context",
    _POOL + "test_ressources_gced_in_workers": _MANAGER,
    _POOL + "test_python_finalization_error":
        "it mocks ProcessPoolExecutor's second thread (its queue feeder), which this pool does not have",
    _POOL + "test_saturation":
        "a call that does not pickle fails in submit(), and starts no worker",
    _SHUTDOWN + "test_processes_terminate":
        "workers start on demand, as with spawn or forkserver: forking from the zygote is safe",
    _SHUTDOWN + "test_del_shutdown": "it reads the private _call_queue: each worker has its own pipes",
    _SHUTDOWN + "test_shutdown_no_wait": "it reads the private _call_queue: each worker has its own pipes",
}
if sys.version_info >= (3, 14):   # its tests share Manager events and queues with the tasks
    for name in ("test_first_completed", "test_first_completed_some_already_completed",
                 "test_first_exception", "test_first_exception_one_already_failed",
                 "test_first_exception_some_already_complete", "test_timeout"):
        DEVIATIONS["ProcessPoolForkWaitTest." + name] = _MANAGER
    DEVIATIONS[_POOL + "test_force_shutdown_workers"] = _MANAGER
if sys.version_info < (3, 11):
    DEVIATIONS[_SHUTDOWN + "test_hang_gh83386"] = (
        "3.10's own test script lacks 'import multiprocessing' (CPython skips it for its pool)")
#: The list is exact on the version it was drawn up on: there a listed test that passes is
#: reported as not expected too. Older suites test less, and some listed tests pass there.
EXACT_ON = (3, 13)

#: What the replacement executor is, as source: run in this interpreter and in the child
#: interpreters the suite starts.
REPLACEMENT = """
import concurrent.futures as _futures
import concurrent.futures.process as _process
from concurrentd import TransientUnitPoolExecutor as _Pool

class ProcessPoolExecutor(_Pool):
    '''ProcessPoolExecutor's signature; the workers run in a unit with a private /tmp.'''

    def __init__(self, max_workers=None, mp_context=None, initializer=None, initargs=(), *,
                 max_tasks_per_child=None):
        super().__init__(max_workers, {"PrivateTmp": True}, mp_context=mp_context,
                         initializer=initializer, initargs=initargs,
                         max_tasks_per_child=max_tasks_per_child, trust_results=TRUST)

_futures.ProcessPoolExecutor = ProcessPoolExecutor
"""


def install_replacement(trust: bool) -> None:
    """Replace ProcessPoolExecutor here, and in the scripts the suite runs in child interpreters."""
    replacement = f"TRUST = {trust!r}\n{REPLACEMENT}"
    exec(compile(replacement, "<concurrentd replacement>", "exec"), {"__name__": "_replacement"})
    from test.support import script_helper

    def with_replacement(run):
        def run_python(*args, **kwargs):
            if len(args) >= 2 and args[0] == "-c":
                args = ("-c", replacement + "\n" + args[1], *args[2:])
            return run(*args, **kwargs)
        return run_python

    script_helper.assert_python_ok = with_replacement(script_helper.assert_python_ok)
    script_helper.assert_python_failure = with_replacement(script_helper.assert_python_failure)


def fork_variants(suite: unittest.TestSuite):
    """The tests of ``suite`` that run a process pool with the fork context (or no context): not
    those of thread pools, or of 3.14's interpreter pools, or of other start methods."""
    for test in _flatten(suite):
        cls = type(test).__name__
        if any(other in cls for other in ("Thread", "Spawn", "Forkserver", "Interpreter")):
            continue
        if cls == "FailingInitializerResourcesTest" and not test.id().endswith(".test_fork"):
            continue
        yield test


def _flatten(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from _flatten(item)
        else:
            yield item


class Verdicts(unittest.TextTestResult):
    """Records each test's outcome by its short name (``Class.test``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.outcomes: dict[str, str] = {}
        self.details: dict[str, str] = {}

    @staticmethod
    def _name(test) -> str:
        """``Class.test``: the same whether the suite is a package (3.11+) or one module."""
        return ".".join(test.id().split(".")[-2:])

    def _record(self, test, outcome, detail=""):
        name = self._name(test)
        if self.outcomes.get(name) in ("fail", "error"):
            return   # an error in tearDown after a failure keeps the first verdict
        self.outcomes[name] = outcome
        if detail:
            self.details[name] = detail

    def addSuccess(self, test):
        super().addSuccess(test)
        self._record(test, "pass")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._record(test, "fail", self._exc_info_to_string(err, test))

    def addError(self, test, err):
        super().addError(test, err)
        self._record(test, "error", self._exc_info_to_string(err, test))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._record(test, "skip", reason)

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:   # the test fails as a whole (3.14's parameterized tests)
            failure = issubclass(err[0], test.failureException)
            self._record(test, "fail" if failure else "error", self._exc_info_to_string(err, test))

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._record(test, "pass")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._record(test, "fail", "unexpected success")


def load(modules) -> unittest.TestSuite:
    """The modules' fork variants; on Python 3.10, whose suite is one module, all of its."""
    suite = unittest.TestSuite()
    loader = unittest.TestLoader()
    package = importlib.import_module("test.test_concurrent_futures")
    found = ([importlib.import_module(f"{package.__name__}.{name}") for name in modules]
             if hasattr(package, "__path__") else [package])
    for module in found:
        suite.addTests(fork_variants(loader.loadTestsFromModule(module)))
    return suite


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", dest="pattern", help="run only tests whose name contains this")
    parser.add_argument("--json", help="also write {test: outcome} to this file")
    parser.add_argument("--verbose", "-v", action="store_true", help="print each failure's traceback")
    parser.add_argument("--trust-results", action="store_true",
                        help="pools with trust_results=True: results unpickled as by pickle")
    args = parser.parse_args(argv)
    try:
        import test.test_concurrent_futures  # noqa: F401
    except ImportError:
        print(f"cpython_suite: this Python ({sys.version.split()[0]}) has no "
              "test.test_concurrent_futures package (Debian: install libpython3-testsuite)",
              file=sys.stderr)
        return 2
    from test import support
    support.verbose = False   # (its tearDown prints each test's time when verbose)
    install_replacement(args.trust_results)
    if args.trust_results:   # results and exceptions then come back as ProcessPoolExecutor's
        for name in [n for n, why in DEVIATIONS.items() if why in (_DATA, _BASE)]:
            del DEVIATIONS[name]
        for name in ("test_error_during_result_unpickle_in_result_handler",
                     "test_exit_during_result_unpickle_in_result_handler"):
            DEVIATIONS[_DEADLOCK + name] = ("a result that fails to unpickle in the owner fails "
                                            "its own future; the pool goes on")
    suite = load(MODULES)
    if args.pattern:
        suite = unittest.TestSuite(t for t in suite if args.pattern in t.id())
    runner = unittest.TextTestRunner(stream=sys.stderr, verbosity=2 if args.verbose else 0,
                                     resultclass=Verdicts)
    start = time.monotonic()
    result = runner.run(suite)
    elapsed = time.monotonic() - start
    return report(result, elapsed, args)


def report(result: Verdicts, elapsed: float, args) -> int:
    unexpected = []
    for name, outcome in sorted(result.outcomes.items()):
        deviation = DEVIATIONS.get(name)
        if deviation is not None:
            mark = "deviation" if outcome in ("fail", "error") else f"{outcome} (listed as a deviation)"
            if outcome == "pass" and sys.version_info[:2] == EXACT_ON:
                unexpected.append(name)
        else:
            mark = outcome
            if outcome in ("fail", "error"):
                unexpected.append(name)
        print(f"{mark:10} {name}" + (f"  -- {deviation}" if deviation else ""))
        if args.verbose and outcome in ("fail", "error"):
            print("    " + result.details[name].replace("\n", "\n    "))
    outcomes = result.outcomes.values()
    failed = sum(o in ("fail", "error") for o in outcomes)
    deviations = sum(o in ("fail", "error") for n, o in result.outcomes.items() if n in DEVIATIONS)
    print(f"CPython {sys.version.split()[0]} test_concurrent_futures (fork variants) against "
          f"TransientUnitPoolExecutor: {len(result.outcomes)} tests, "
          f"{sum(o == 'pass' for o in outcomes)} pass, {sum(o == 'skip' for o in outcomes)} skip, "
          f"{failed} fail: {deviations} of them listed deviations, "
          f"{len(unexpected)} not as expected; in {elapsed:.0f} s")
    if unexpected:
        print("not as expected: " + ", ".join(unexpected))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result.outcomes, f, indent=1, sort_keys=True)
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())

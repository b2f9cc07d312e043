"""The test coverage of the package: runs the suite once under coverage.py, prints a summary.

    python tests/coverage_report.py [--c] [-- PYTEST_ARGS…]

The suite runs as README's test command does (it re-runs itself in a testbed box where PID 1 is
not systemd), with coverage started in every Python process that can take it part in: coverage's
`patch = subprocess` (its .pth starts it in each new interpreter that inherits the environment:
the session in the box, child interpreters of tests), `fork` (restarts it in forked children: the
zygote, the workers), `_exit` and `execv` (save the data before os._exit and exec, which skip the
atexit save). Every process writes a data file of its own into build/coverage/ (world-writable:
workers may run as other users); they are combined, and the per-module summary printed.

What it cannot see (so the figures are a floor, not the truth):
- processes that cannot write there: workers of units with ProtectSystem=strict, ReadOnlyPaths=,
  TemporaryFileSystem=/InaccessiblePaths= over the repository, RootDirectory=/RootImage=;
- processes that are killed (SIGKILL, a stalled worker's end, a box torn down), or that die by a
  signal (no `sigterm = true`: a handler of coverage's would change how workers die);
- fresh-mode zygotes and their workers: _fresh starts them with an environment of PATH and the
  locale only, so coverage's variables do not reach them (the library is not changed for this).

--c also builds the C core with gcc's --coverage into build/gcov/ (a copy of the tree), runs the
entry tests there (tests/test_entry_parity.py, tests/test_entry_plan.py) and prints gcov's
summary per file of csrc/. Only processes that exit through exit() write gcov's data: the test
processes (plans, checks) do; the forked workers that enter units end with os._exit, and run
confined, so the entry steps themselves are not counted.

Exits 0 once a report is printed (the suite's own status is printed with it), 1 if none could be.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
#: tests that fail under coverage for coverage's sake, not the library's: deselected
COVERAGE_ARTEFACTS = [
    # pickles os._exit, which patch=_exit has replaced with a closure cloudpickle cannot send
    "tests/security/test_results.py::test_a_dead_worker_is_seen_at_once_even_with_others_alive",
    # a script read from a FIFO: its pool does not start within 30 s under coverage (not
    # diagnosed; without coverage the test passes)
    "tests/test_conformance.py::test_a_script_read_from_a_fifo_starts_its_pool",
]
ENTRY_TESTS = ["tests/test_entry_parity.py", "tests/test_entry_plan.py"]

RCFILE = """\
[run]
source_pkgs = concurrentd
parallel = true
data_file = {data}/.coverage
patch =
    subprocess
    fork
    _exit
    execv
disable_warnings =
    module-not-imported
    no-data-collected
    module-not-measured

[paths]
# one package, wherever a process saw it (test_testbed's CLI imports it from /mnt/checkout)
source =
    {root}/concurrentd
    */concurrentd

[report]
skip_empty = true
precision = 1
"""

GCOV_DUMP_C = """\
extern void __gcov_dump(void);
void cd_gcov_dump(void) { __gcov_dump(); }
"""
GCOV_DUMP_PLUGIN = """\
import ctypes
import os

from concurrentd import _core

_dump = ctypes.CDLL(_core.__file__).cd_gcov_dump
_exit = os._exit


def _exit_after_dump(status):
    try:
        _dump()
    except Exception:
        pass
    _exit(status)


os._exit = _exit_after_dump
"""


def python_coverage(out: str, pytest_args: list[str]) -> bool:
    """Runs the suite under coverage.py; prints the report. False if there is none."""
    data = os.path.join(out, "python")
    shutil.rmtree(data, ignore_errors=True)
    os.makedirs(data)
    os.chmod(data, 0o1777)   # workers running as other users write their files here too
    rc = os.path.join(out, "coveragerc")
    with open(rc, "w") as f:
        f.write(RCFILE.format(data=data, root=ROOT))
    cov = [sys.executable, "-m", "coverage"]
    started = time.monotonic()
    status = subprocess.run([*cov, "run", f"--rcfile={rc}", *PYTEST[1:],
                             *(f"--deselect={t}" for t in COVERAGE_ARTEFACTS), *pytest_args],
                            cwd=ROOT).returncode
    took = time.monotonic() - started
    files = glob.glob(os.path.join(data, ".coverage.*"))
    print(f"\n=== coverage of the package: the suite exited with {status} in {took:.0f} s; "
          f"{len(files)} processes saved coverage data")
    if not files:
        return False
    combine = subprocess.run([*cov, "combine", "-q", f"--rcfile={rc}"], cwd=ROOT)
    if combine.returncode != 0:
        return False
    report = subprocess.run([*cov, "report", f"--rcfile={rc}", "--sort=cover"], cwd=ROOT)
    print("(not seen: processes that could not write build/coverage/ or were killed, and "
          "fresh-mode zygotes and workers: see tests/coverage_report.py)")
    return report.returncode == 0


def _has_setuptools(major: int) -> bool:
    try:
        import setuptools
    except ImportError:
        return False
    return int(setuptools.__version__.split(".")[0]) >= major


def c_coverage(out: str) -> bool:
    """Builds the core with --coverage in a copy of the tree, runs the entry tests there, prints
    gcov's summary of csrc/. False if there is none."""
    tree = os.path.join(out, "tree")
    obj = os.path.join(tree, "build", "obj")   # in the tree: the box shows the tree only
    shutil.rmtree(out, ignore_errors=True)
    junk = shutil.ignore_patterns("__pycache__", "*.so", "_anchor", "_core.c", "*.o")
    for d in ("concurrentd", "csrc", "tests"):
        shutil.copytree(os.path.join(ROOT, d), os.path.join(tree, d), ignore=junk)
    for f in ("conftest.py", "pyproject.toml", "setup.py", "build_ffi.py", "README.md"):
        shutil.copy(os.path.join(ROOT, f), tree)
    # in the copy only: a function that writes gcov's counts, called before os._exit (which skips
    # the exit() that writes them) by a pytest plugin, in the test processes and their forks
    with open(os.path.join(tree, "csrc", "zz_gcov_dump.c"), "w") as f:
        f.write(GCOV_DUMP_C)
    with open(os.path.join(tree, "gcov_dump_plugin.py"), "w") as f:
        f.write(GCOV_DUMP_PLUGIN)
    env = dict(os.environ, CFLAGS="--coverage -O0", LDFLAGS="--coverage", PYTHONPATH=tree)
    # setup.py needs setuptools >= 77, which a venv of Python >= 3.12 does not have at all (and
    # older venvs have an older one): pip fetches it for the build only (as pip install -e does),
    # into the scratch directory
    tools = os.path.join(out, "tools")
    if not _has_setuptools(77):
        fetch = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", tools,
                                "setuptools>=77"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
        if fetch.returncode != 0:
            print(f"csrc coverage: could not fetch setuptools for the build:\n"
                  f"{fetch.stderr[-2000:]}")
            return False
    build = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace",
                            f"--build-temp={obj}"], cwd=tree,
                           env=dict(env, PYTHONPATH=os.pathsep.join([tools, tree])),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if build.returncode != 0:
        print(f"csrc coverage: the build failed:\n{build.stderr[-2000:]}")
        return False
    started = time.monotonic()
    status = subprocess.run([*PYTEST, "-p", "gcov_dump_plugin", *ENTRY_TESTS], cwd=tree, env=env,
                            stdout=subprocess.DEVNULL).returncode
    took = time.monotonic() - started
    print(f"\n=== coverage of csrc/ (gcov): the entry tests exited with {status} in {took:.0f} s")
    seen = False
    for source in sorted(glob.glob(os.path.join(tree, "csrc", "*.c"))):
        name = os.path.basename(source)
        if name.startswith(("anchor", "zz_gcov")):
            continue   # a static executable of its own, not built with --coverage; ours
        objdir = os.path.dirname(glob.glob(os.path.join(obj, "**", name[:-2] + ".o"),
                                           recursive=True)[0])
        r = subprocess.run(["gcov", "-n", "-o", objdir, source], cwd=tree,
                           capture_output=True, text=True)
        lines = r.stdout.splitlines()
        for i, line in enumerate(lines[:-1]):
            if line == f"File '{source}'" or line.endswith(f"csrc/{name}'"):
                print(f"{'csrc/' + name:28} {lines[i + 1].removeprefix('Lines executed:')}")
                seen = True
                break
        else:
            print(f"{'csrc/' + name:28} no data")
    print("(counted: the test processes and their forked workers that could write build/gcov/; "
          "not: workers confined from it, or killed)")
    return seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--c", action="store_true", help="also csrc/'s line coverage (gcov)")
    parser.add_argument("--no-python", action="store_true", help="skip the package's")
    parser.add_argument("pytest_args", nargs="*", help="after --: passed on to pytest")
    args = parser.parse_args()
    out = os.path.join(ROOT, "build", "coverage")
    os.makedirs(out, exist_ok=True)
    ok = True
    if not args.no_python:
        ok = python_coverage(out, args.pytest_args) and ok
    if args.c:
        ok = c_coverage(os.path.join(ROOT, "build", "gcov")) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""The layers import only what they use: each is imported alone in a fresh interpreter, and what
must not come with it is checked in sys.modules. Pure: no systemd, no root."""

import subprocess
import sys

import pytest

import concurrentd

pytestmark = pytest.mark.pure   # needs neither root nor systemd (see conftest)

UPPER = ["concurrentd.executor", "concurrentd._manager", "concurrentd._session",
         "concurrentd._zygote", "concurrentd.process", "concurrentd.oneshot"]
#: the integrations: imported only by those who use them, each without the other's framework
INTEGRATIONS = ["concurrentd.dask", "concurrentd.joblib", "dask", "distributed", "joblib"]


@pytest.mark.parametrize("module, absent", [
    # the public package: its names load on first use; the integrations are imported by name
    ("concurrentd", ["jeepney", *UPPER, *INTEGRATIONS]),
    # a pool worker's loop and the results' decoder: no D-Bus, nothing of the owner's machinery
    ("concurrentd._worker", ["jeepney", "concurrentd.systemd", *UPPER, *INTEGRATIONS]),
    ("concurrentd._results", ["jeepney", "concurrentd.systemd", *UPPER, *INTEGRATIONS]),
    # each integration brings its own framework, not the other's
    ("concurrentd.dask", ["joblib", "concurrentd.joblib"]),
    ("concurrentd.joblib", ["dask", "distributed", "concurrentd.dask"]),
    # the entry core
    ("concurrentd._entry", ["jeepney", "concurrentd.systemd", *UPPER]),
    # the D-Bus layer is the bottom one
    ("concurrentd.systemd", [*UPPER, "concurrentd._entry"]),
    # the command line: --help and usage errors load nothing of the pool, nor D-Bus
    ("concurrentd._cli", ["jeepney", "concurrentd._entry", *UPPER]),
    # the testbed stands apart
    ("concurrentd.testbed", ["jeepney", "concurrentd.systemd", *UPPER]),
])
def test_a_layer_imports_only_what_it_uses(module, absent):
    framework = {"concurrentd.dask": "distributed", "concurrentd.joblib": "joblib"}.get(module)
    if framework is not None:
        pytest.importorskip(framework, reason="the dask and joblib extras: pip install -e "
                                              "'.[test]'")
    code = (f"import sys, {module}; "
            f"print(' '.join(m for m in {absent!r} if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [], f"importing {module} loaded {r.stdout.split()}"


def test_the_public_names_load_on_first_use():
    assert concurrentd.TransientUnitPoolExecutor.__name__ == "TransientUnitPoolExecutor"
    assert "run" in dir(concurrentd)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        concurrentd.Nope   # noqa: B018

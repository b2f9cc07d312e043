"""The layers import only what they use: each is imported alone in a fresh interpreter, and what
must not come with it is checked in sys.modules. Pure: no systemd, no root."""

import subprocess
import sys

import pytest

import concurrentd

UPPER = ["concurrentd.executor", "concurrentd._manager", "concurrentd._session",
         "concurrentd._zygote", "concurrentd.process", "concurrentd.oneshot"]


@pytest.mark.parametrize("module, absent", [
    # the public package: its names load on first use
    ("concurrentd", ["jeepney", *UPPER]),
    # a pool worker's loop and the results' decoder: no D-Bus, nothing of the owner's machinery
    ("concurrentd._worker", ["jeepney", "concurrentd.systemd", *UPPER]),
    ("concurrentd._results", ["jeepney", "concurrentd.systemd", *UPPER]),
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

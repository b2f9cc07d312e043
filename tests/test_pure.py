"""The tests marked pure need neither root nor systemd: run as another user, in a user namespace
(no privilege over the system's namespaces, cgroups or files), with no system bus to reach, they
pass, and the session says how many it left out (conftest)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux's unshare")
def test_the_pure_tests_pass_as_another_user_without_systemd():
    env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/nonexistent",
           "CONCURRENTD_TESTBED": "always"}   # would boot a box, were the session not told apart
    out = subprocess.run(
        ["unshare", "--user", "--map-user=65534", "--map-group=65534",
         sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         # (ruff and mypy, and fresh interpreters per layer: pure too, but slow to run twice)
         "-k", "not test_static_checks and not test_layers", "tests"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    tail = out.stdout[-3000:] + out.stderr[-2000:]
    assert out.returncode == 0, tail
    passed = int(re.search(r"(\d+) passed", out.stdout).group(1))
    assert passed >= 200 and " failed" not in out.stdout, tail
    assert re.search(r"not root \(uid 65534\): only the tests marked pure ran; \d+ others", out.stdout), tail

"""The code passes its linter (ruff) and its type checker (mypy), as pyproject.toml configures
them: a finding fails the suite with the tool's own report. The [test] extra installs both, so
CI runs them; where one is not installed, its test is skipped. Pure: no systemd, no root."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.pure   # needs neither root nor systemd (see conftest)

ROOT = Path(__file__).resolve().parent.parent


def run_tool(module: str, *args: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install -e '.[test]')")
    r = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, f"{module} {' '.join(args)}:\n{r.stdout}{r.stderr}"


def test_ruff_finds_nothing():
    run_tool("ruff", "check", "--no-cache", ".")


def test_mypy_finds_nothing():
    run_tool("mypy")   # files, strictness and the modules not typed yet: pyproject.toml

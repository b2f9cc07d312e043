"""The public surface is what README documents: every public name is described there, and every
name README's API table lists exists."""

import os
import re

import pytest

import concurrentd

pytestmark = pytest.mark.pure   # needs neither root nor systemd (see conftest)

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def _api_table_names():
    text = open(README, encoding="utf-8").read()
    section = text.split("## The API", 1)[1].split("\n### ", 1)[0]
    names = set()
    for cell in re.findall(r"^\| `([^|]+?)` \|", section, re.M):
        names.update(n.split("(")[0].strip() for n in cell.split("`, `"))
    return names


def test_every_public_name_is_documented_and_exists():
    public = set(concurrentd.__all__) - {"__version__"}
    assert _api_table_names() == public
    for name in public:
        assert getattr(concurrentd, name).__doc__, f"{name} has no docstring"


def test_compatibility_names():
    from concurrentd.transient import TransientUnitPoolExecutor, TransientUnitProcess

    assert TransientUnitPoolExecutor is concurrentd.TransientUnitPoolExecutor
    assert TransientUnitProcess is concurrentd.TransientUnitProcess

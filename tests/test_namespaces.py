"""The namespace table (concurrentd/_namespaces.py) against the kernel: its flags are the C
headers', its names are /proc's (pure: no systemd, no root)."""

import os

import pytest

from concurrentd._core import lib
from concurrentd._namespaces import NAMESPACES

pytestmark = pytest.mark.pure   # needs neither root nor systemd (see conftest)


@pytest.mark.parametrize("ns", NAMESPACES, ids=lambda ns: ns.name)
def test_each_row_is_the_kernels_namespace(ns):
    assert ns.flag == getattr(lib, ns.constant)
    assert os.path.exists(f"/proc/self/ns/{ns.name}")

"""Every bad property value is refused with ValueError or TypeError naming the property, before
anything is sent to systemd (a wrong exception type, or a value D-Bus drops the connection for,
used to surface as AttributeError, OverflowError, struct.error, BrokenPipeError…). Pure."""

import pytest

from concurrentd.systemd.properties import convert_properties

pytestmark = pytest.mark.pure   # needs neither root nor systemd (see conftest)


def _deep(n):
    value = []
    for _ in range(n):
        value = [value]
    return value


@pytest.mark.parametrize("properties, names", [
    ({("Description",): "x"}, "names must be strings"),
    ({"Description": "a\0b"}, "Description"),
    ({"Description": "x" * (20 << 20)}, "Description"),
    ({"MemoryMax": 2 ** 64}, "MemoryMax"),
    ({"CPUQuota": float("inf")}, "CPUQuota"),
    ({"TimeoutStopSec": 10 ** 20}, "TimeoutStopSec"),
    ({"Description": "\udcff"}, "Description"),
    ({"Environment": ["A=\udcff"]}, "Environment"),
    ({"Environment": _deep(100_000)}, "Environment"),
], ids=["tuple-name", "nul", "40-MB", "uint64-overflow", "inf", "huge-span", "surrogate",
        "surrogate-in-list", "deep"])
def test_bad_values_raise_value_or_type_error_naming_the_property(properties, names):
    with pytest.raises((ValueError, TypeError), match=names):
        convert_properties(properties)

"""Pure tests of the message builders and property converters: no bus needed."""

import datetime
import pathlib

import pytest
from jeepney.low_level import HeaderFields, MessageType, Parser

from concurrentd.systemd import convert_properties, messages
from concurrentd.systemd.bus import Address, parse_address

pytestmark = pytest.mark.pure   # needs neither root nor systemd (see conftest)


def roundtrip(msg, serial=7):
    data = msg.serialise(serial=serial)
    parser = Parser()
    parser.add_data(data)
    return data, parser.get_next_message()


def test_subscribe_bytes_are_exact():
    data, _ = roundtrip(messages.Manager().subscribe(), serial=1)
    # header: little endian, method call, no flags, version 1, body 0, serial 1
    assert data[:12] == b"l\x01\x00\x01" + (0).to_bytes(4, "little") + (1).to_bytes(4, "little")
    assert b"/org/freedesktop/systemd1\x00" in data and b"Subscribe\x00" in data
    assert len(data) % 8 == 0
    assert data == messages.Manager().subscribe().serialise(serial=1)  # deterministic


def test_p2p_messages_have_no_destination():
    _, msg = roundtrip(messages.Manager(None).get_unit("a.service"))
    assert HeaderFields.destination not in msg.header.fields
    _, msg = roundtrip(messages.Manager().get_unit("a.service"))
    assert msg.header.fields[HeaderFields.destination] == "org.freedesktop.systemd1"


def test_start_transient_unit_body_roundtrips():
    props = convert_properties({"CPUQuota": "20%", "SystemCallFilter": "~@mount",
                                "BindPaths": "/a:/b:norbind"})
    props.append(("ExecStart", ("a(sasb)", [("/bin/sleep", ["/bin/sleep", "1"], False)])))
    _, msg = roundtrip(messages.Manager().start_transient_unit("x.service", "fail", props))
    assert msg.header.message_type == MessageType.method_call
    assert msg.header.fields[HeaderFields.member] == "StartTransientUnit"
    assert msg.header.fields[HeaderFields.signature] == "ssa(sv)a(sa(sv))"
    name, mode, got, aux = msg.body
    assert (name, mode, aux) == ("x.service", "fail", [])
    assert dict(got)["CPUQuotaPerSecUSec"] == ("t", 200000)
    assert dict(got)["SystemCallFilter"] == ("(bas)", (False, ["@mount"]))
    assert dict(got)["BindPaths"] == ("a(ssbt)", [("/a", "/b", False, 0)])


@pytest.mark.parametrize("name,path", [
    ("foo.service", "/org/freedesktop/systemd1/unit/foo_2eservice"),
    ("concurrentd-1-2-ab.service", "/org/freedesktop/systemd1/unit/concurrentd_2d1_2d2_2dab_2eservice"),
    ("1x.service", "/org/freedesktop/systemd1/unit/_31x_2eservice"),
])
def test_unit_object_path(name, path):
    assert messages.unit_object_path(name) == path


def test_match_rule_and_kill():
    _, msg = roundtrip(messages.add_match(messages.job_removed_rule()))
    assert "member='JobRemoved'" in msg.body[0]
    assert msg.header.fields[HeaderFields.destination] == "org.freedesktop.DBus"
    _, msg = roundtrip(messages.Manager().kill_unit("u.service", "all", 9))
    assert msg.body == ("u.service", "all", 9)


def test_addresses(monkeypatch):
    assert parse_address("unix:path=/run/dbus/system_bus_socket") == Address("/run/dbus/system_bus_socket")
    assert parse_address("/run/systemd/private").p2p
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/tmp/x")
    from concurrentd.systemd.bus import default_addresses
    assert default_addresses()[0] == Address("/tmp/x")
    with pytest.raises(ValueError):
        parse_address("tcp:host=localhost,port=1")


# -- conversion ---------------------------------------------------------------------------------

@pytest.mark.parametrize("props,expected", [
    ({"CPUQuota": "20%"}, [("CPUQuotaPerSecUSec", ("t", 200000))]),
    ({"CPUQuota": 0.2}, [("CPUQuotaPerSecUSec", ("t", 200000))]),
    ({"CPUQuota": "150%"}, [("CPUQuotaPerSecUSec", ("t", 1500000))]),
    ({"MemoryMax": "100M"}, [("MemoryMax", ("t", 100 << 20))]),
    ({"MemoryMax": 4096}, [("MemoryMax", ("t", 4096))]),
    ({"MemoryHigh": "50%"}, [("MemoryHighScale", ("u", 2147483648))]),
    ({"TasksMax": "infinity"}, [("TasksMax", ("t", 2**64 - 1))]),
    ({"TimeoutStopSec": "5s"}, [("TimeoutStopUSec", ("t", 5_000_000))]),
    ({"TimeoutStopSec": datetime.timedelta(milliseconds=1500)}, [("TimeoutStopUSec", ("t", 1_500_000))]),
    ({"RuntimeMaxSec": "1min 30s"}, [("RuntimeMaxUSec", ("t", 90_000_000))]),
    ({"TimeoutSec": 2}, [("TimeoutStartUSec", ("t", 2_000_000)), ("TimeoutStopUSec", ("t", 2_000_000))]),
    ({"LimitNOFILE": "1024:2048"}, [("LimitNOFILE", ("t", 2048)), ("LimitNOFILESoft", ("t", 1024))]),
    ({"LimitNOFILE": 1024}, [("LimitNOFILE", ("t", 1024)), ("LimitNOFILESoft", ("t", 1024))]),
    ({"CPUWeight": "idle"}, [("CPUWeight", ("t", 0))]),
    ({"PrivateTmp": True}, [("PrivateTmp", ("b", True))]),
    ({"PrivateTmp": "yes"}, [("PrivateTmp", ("b", True))]),
    ({"ReadWritePaths": "/a /b"}, [("ReadWritePaths", ("as", ["/a", "/b"]))]),
    ({"ReadWritePaths": [pathlib.Path("/a b"), "/c"]}, [("ReadWritePaths", ("as", ["/a b", "/c"]))]),
    ({"Environment": "A=1 B=2"}, [("Environment", ("as", ["A=1", "B=2"]))]),
    ({"Environment": ["A=1 2"]}, [("Environment", ("as", ["A=1 2"]))]),
    ({"SystemCallFilter": "@system-service"}, [("SystemCallFilter", ("(bas)", (True, ["@system-service"])))]),
    ({"SystemCallFilter": ["~@mount", "@swap"]}, [("SystemCallFilter", ("(bas)", (False, ["@mount", "@swap"])))]),
    ({"Delegate": "cpu memory"}, [("DelegateControllers", ("as", ["cpu", "memory"]))]),
    ({"StandardOutput": "file:/tmp/x"}, [("StandardOutputFile", ("s", "/tmp/x"))]),
    ({"UMask": 0o027}, [("UMask", ("u", 0o027))]),
    ({"KillSignal": "SIGINT"}, [("KillSignal", ("i", 2))]),
    ({"KillSignal": 9}, [("KillSignal", ("i", 9))]),
    ({"AllowedCPUs": "0-1 9"}, [("AllowedCPUs", ("ay", b"\x03\x02\0\0\0\0\0\0"))]),
])
def test_convert(props, expected):
    assert convert_properties(props) == expected


def test_unknown_property_names_close_matches():
    with pytest.raises(ValueError, match=r"'MemoryMaximum'.*MemoryMax"):
        convert_properties({"MemoryMaximum": "1G"})
    with pytest.raises(ValueError, match="'Bogus'"):
        convert_properties({"Bogus": "1"})


@pytest.mark.parametrize("name,value", [
    ("CPUQuota", "lots"), ("CPUQuota", "0%"), ("CPUQuota", -1), ("MemoryMax", "ten"), ("MemoryMax", 1.5),
    ("PrivateTmp", "maybe"), ("TimeoutStopSec", "5 parsecs"), ("Nice", "40"), ("CPUWeight", "0"),
    ("KillSignal", "SIGFOO"), ("LimitNOFILE", "2048:1024"), ("UMask", "0999"), ("BindPaths", "/a:/b:weird"),
    ("CapabilityBoundingSet", "CAP_FLY"), ("IPAddressDeny", "not-an-ip"), ("IOSchedulingClass", "fast"),
    ("PrivateTmp", object()),
])
def test_bad_values_name_property_value_and_form(name, value):
    with pytest.raises(ValueError) as exc:
        convert_properties({name: value})
    text = str(exc.value)
    assert name in text and "expected" in text

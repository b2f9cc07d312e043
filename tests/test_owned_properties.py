"""What the session reads of the unit's properties before it starts it: the properties concurrentd
sets itself, and the pid namespace, read as systemd reads them. Pure: no systemd, no root."""

import pytest

from concurrentd import _session, _unitfiles

pytestmark = pytest.mark.pure   # needs neither root nor systemd (see conftest)


@pytest.mark.parametrize("value", ["exec", None])
def test_type_exec_is_what_concurrentd_sets(value):
    _session.check_owned({"Type": value})


@pytest.mark.parametrize("value", ["EXEC", " exec", "oneshot"])
def test_a_type_systemd_does_not_read_as_exec_is_refused(value):
    # systemd's Type= names are case-sensitive: "EXEC" is no Type=exec, the start would fail
    with pytest.raises(ValueError, match="Type= cannot be set on a pool's unit"):
        _session.check_owned({"Type": value})


@pytest.mark.parametrize("value, private", [(True, True), ("yes", True), ("1", True),
                                            (False, False), ("false", False), ("no", False),
                                            (None, False)])
def test_private_pids_read_as_systemd_reads_it(value, private):
    assert _session._private_pids({"PrivatePIDs": value}) is private


@pytest.mark.parametrize("properties, root", [
    ({"RootDirectory": "/srv/root"}, True), ({"RootImage": "/srv/root.img"}, True),
    ({"RootDirectory": ""}, False), ({"RootDirectory": None}, False), ({}, False)])
def test_the_anchor_is_bound_into_a_root_of_the_units_own(properties, root, tmp_path,
                                                           monkeypatch):
    anchor = tmp_path / "anchor"
    anchor.write_bytes(b"")
    monkeypatch.setattr(_unitfiles, "ANCHOR_DIR", str(tmp_path / "installed"))
    argv, out = _unitfiles.anchor_for_unit([str(anchor)], properties)
    assert bool(out.get("BindReadOnlyPaths")) is root
    assert out.get("BindReadOnlyPaths", [argv[0]]) == [argv[0]]

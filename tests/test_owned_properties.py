"""What the session reads of the unit's properties before it starts it, read as systemd reads
them. Pure: no systemd, no root."""

import pytest

from concurrentd import _session, _unitfiles


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

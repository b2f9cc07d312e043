"""The mountinfo and /proc/<pid>/cgroup parsers the testbed builds its boxes from (pure)."""

import pytest

from concurrentd._mountinfo import (
    cgroup_hierarchies,
    mount_containing,
    parse_mountinfo,
    parse_proc_cgroup,
)

pytestmark = pytest.mark.pure   # needs neither root nor systemd (see conftest)

HYBRID = """\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct,release_agent=/x
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 27 0:40 / /srv/with\\040space rw - tmpfs tmpfs rw
"""
PROC_CGROUP = "9:name=systemd:/a\n4:memory:/m/n\n1:cpu,cpuacct:/\n0::/u\n"
CONTROLLERS = {"cpu", "cpuacct", "memory", "pids"}


def test_mountinfo_fields_and_escapes():
    mounts = parse_mountinfo(HYBRID)
    assert mounts[-1].mount_point == "/srv/with space"
    assert mounts[2].super_options == ("rw", "cpu")
    assert mount_containing(mounts, "/srv/with space/x").mount_point == "/srv/with space"
    assert mount_containing(mounts, "/srv/other").mount_point == "/"


def test_every_kind_of_escape_is_undone_and_nothing_else():
    # the kernel escapes space, tab, newline and backslash as \\ooo (octal)
    line = "60 27 0:41 /a\\134b /m\\011t\\012n\\040s\\134\\1344x rw - tmpfs src\\040x rw\n"
    (m,) = parse_mountinfo(line)
    assert m.mount_point == "/m\tt\nn s\\\\4x"
    assert m.root == "/a\\b"
    assert m.source == "src x"


def test_hierarchies_are_found_once_each_with_the_own_path():
    own = parse_proc_cgroup(PROC_CGROUP)
    hs = cgroup_hierarchies(parse_mountinfo(HYBRID), own, CONTROLLERS)
    got = [(h.mount_point, h.version, h.options, h.own_path) for h in hs]
    assert got == [
        ("/sys/fs/cgroup/cpu", 1, ("cpu",), "/"),
        ("/sys/fs/cgroup/cpu,cpuacct", 1, ("cpu", "cpuacct"), "/"),
        ("/sys/fs/cgroup/memory", 1, ("memory",), "/m/n"),
        ("/sys/fs/cgroup/systemd", 1, ("name=systemd",), "/a"),
        ("/sys/fs/cgroup/unified", 2, (), "/u"),
    ]
    assert hs[2].own_dir == "/sys/fs/cgroup/memory/m/n"


def test_pure_v2():
    mounts = parse_mountinfo("1 0 0:1 / / rw - ext4 /dev/x rw\n"
                             "2 1 0:2 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n")
    hs = cgroup_hierarchies(mounts, parse_proc_cgroup("0::/user.slice\n"), CONTROLLERS)
    assert [(h.version, h.own_dir) for h in hs] == [(2, "/sys/fs/cgroup/user.slice")]

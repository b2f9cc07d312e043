"""The pure parsing functions of the entry plan: text in, values out (no process, no systemd)."""

import resource

import pytest

from concurrentd._entry.plan import (
    affinity_mask,
    cgroup_dirs,
    map_id,
    parse_environ,
    parse_id_map,
    parse_limits,
    parse_mdwe,
    parse_mempolicy,
    parse_state,
    parse_thp,
)
from concurrentd._mountinfo import cgroup_mounts, parse_mountinfo

pytestmark = pytest.mark.pure   # needs neither root nor systemd (see conftest)

HYBRID_MOUNTINFO = """\
22 1 0:20 / /sys rw - sysfs sysfs rw
30 22 0:26 / /sys/fs/cgroup rw - tmpfs cgroup rw,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
33 30 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
34 30 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
35 30 0:31 /sub /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
"""
HYBRID_CGROUP = """\
9:pids:/sub/system.slice/u.service
4:memory:/system.slice/u.service
3:cpu:/system.slice/u.service
2:blkio:/
1:name=systemd:/system.slice/u.service
0::/system.slice/u.service
"""


def test_cgroup_dirs_hybrid():
    dirs = cgroup_dirs(HYBRID_CGROUP, HYBRID_MOUNTINFO)
    assert sorted(dirs.values()) == [
        "/sys/fs/cgroup/cpu/system.slice/u.service",
        "/sys/fs/cgroup/memory/system.slice/u.service",
        "/sys/fs/cgroup/pids/system.slice/u.service",   # mounted root /sub stripped
        "/sys/fs/cgroup/systemd/system.slice/u.service",
        "/sys/fs/cgroup/unified/system.slice/u.service",
    ]  # blkio is not mounted: left out


def test_cgroup_dirs_pure_v2_and_escapes():
    mi = "40 1 0:40 / /sys/fs/cgroup\\040x rw - cgroup2 cgroup2 rw\n"
    assert cgroup_dirs("0::/a.slice/b.service\n", mi) == {
        (0, frozenset()): "/sys/fs/cgroup x/a.slice/b.service"}
    assert [m.version for m in cgroup_mounts(parse_mountinfo(mi))] == [2]


def test_id_maps():
    m = parse_id_map("         0          0          1\n     65534      65534          1\n")
    assert map_id(65534, m) == 65534 and map_id(0, m) == 0
    assert map_id(1005, parse_id_map("0 1000 100\n")) == 5


def test_limits_environ_state_affinity():
    text = ("Limit                     Soft Limit           Hard Limit           Units     \n"
            "Max open files            1234                 1234                 files     \n"
            "Max core file size        0                    unlimited            bytes     \n")
    assert parse_limits(text) == {resource.RLIMIT_NOFILE: (1234, 1234),
                                  resource.RLIMIT_CORE: (0, resource.RLIM_INFINITY)}
    assert parse_environ(b"A=1\0B=x=y\0") == {b"A": b"1", b"B": b"x=y"}
    assert parse_state(b"/anchor\0--owner-pid\0001\0--state\0sb=2f\0\0\0") == 0x2F
    assert parse_state(b"/anchor\0--state\0----\0") is None
    # with the MDWE flags (kernel >= 6.3), and without (older kernels leave ",md=" out)
    assert parse_state(b"/anchor\0--state\0sb=0,md=1\0\0") == 0
    assert parse_mdwe(b"/anchor\0--state\0sb=0,md=1\0\0") == 1
    assert parse_mdwe(b"/anchor\0--state\0sb=2f\0\0") is None
    assert parse_mdwe(b"/anchor\0--state\0----\0") is None
    # and the transparent-huge-page setting (MemoryTHP=), from anchors that report it
    assert parse_thp(b"/anchor\0--state\0sb=0,md=1,th=3\0\0") == 3
    assert parse_mdwe(b"/anchor\0--state\0sb=0,md=1,th=3\0\0") == 1
    assert parse_thp(b"/anchor\0--state\0sb=0,th=0\0\0") == 0
    assert parse_thp(b"/anchor\0--state\0sb=0,md=1\0\0") is None
    assert affinity_mask([0, 9], size=2) == bytes([1, 2])


@pytest.mark.parametrize("policy, expected", [
    ("default", (0, set())), ("local", (4, set())), ("bind:0", (2, {0})),
    ("interleave:0-2,5", (3, {0, 1, 2, 5})), ("prefer=static:1", (1 | 1 << 15, {1})),
    ("prefer (many)=relative:0-1", (5 | 1 << 14, {0, 1})),
    ("weighted interleave=static|balancing:3", (6 | 1 << 15 | 1 << 13, {3})),
])
def test_mempolicy_from_numa_maps(policy, expected):
    # The first line, the program's text; later ones may have a policy of their own (mbind), or
    # be cut short (only the first lines are read).
    text = f"00400000 {policy} file=/run/concurrentd/anchor-1 N0=1\n7ffd5000 interleave:0 st"
    assert parse_mempolicy(text) == (expected[0], frozenset(expected[1]))
    with pytest.raises(ValueError, match="unknown memory policy"):
        parse_mempolicy("7ffd5000 sideways:0 stack\n")
    with pytest.raises(ValueError, match="empty"):
        parse_mempolicy("")

"""Reading /proc/<pid>/mountinfo and /proc/<pid>/cgroup: pure parsers, plus two thin readers.

Shared by the testbed (which mounts the host's hierarchies again) and the entry plan (which finds
the anchor's cgroup directories)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Iterable, NamedTuple


@dataclass(frozen=True)
class Mount:
    """One line of mountinfo (proc(5)); only the fields the testbed and the entry plan need."""

    mount_point: str
    root: str          # the path inside the file system that is mounted there
    fstype: str
    source: str
    super_options: tuple[str, ...]


@dataclass(frozen=True)
class Hierarchy:
    """A cgroup hierarchy as this process sees it."""

    mount_point: str   # e.g. /sys/fs/cgroup/memory
    version: int       # 1 or 2
    options: tuple[str, ...]  # controllers (v1) or () (v2), name=… included, rw/ro excluded
    own_path: str      # this process's cgroup in it, relative to the hierarchy's root

    @property
    def own_dir(self) -> str:
        return os.path.join(self.mount_point, self.own_path.lstrip("/"))


_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal. Most fields have none:
    # a plan reads the mount table on every pool start, so they cost one `in` test.
    if "\\" not in field:
        return field
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m[1], 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """Each mount line of a /proc/<pid>/mountinfo, in order (the one parser of that file)."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split(" ", 2)
        if not sep or len(fields) < 5 or len(tail) < 2:
            continue   # not a mount line
        fstype, source, options = (tail + [""])[:3]
        mounts.append(Mount(
            mount_point=_unescape(fields[4]),
            root=_unescape(fields[3]),
            fstype=fstype,
            source=_unescape(source),
            super_options=tuple(options.split(",")),
        ))
    return mounts


@dataclass(frozen=True)
class CgroupMount:
    """A cgroup file system mounted in the reader's view: a Mount of type cgroup or cgroup2."""

    mount_point: str
    root: str                      # the hierarchy's directory shown at mount_point
    version: int                   # 1 or 2
    options: tuple[str, ...]       # its super options but rw/ro, in order

    @property
    def controllers(self) -> frozenset[str]:
        """v1: what names the hierarchy (cpu, memory, name=systemd…: options without a value,
        or name=); v2: none."""
        if self.version == 2:
            return frozenset()
        return frozenset(o for o in self.options if o.startswith("name=") or "=" not in o)


def cgroup_mounts(mounts: Iterable[Mount]) -> list[CgroupMount]:
    """The cgroup and cgroup2 mounts among ``mounts`` (parse_mountinfo's), in order."""
    versions = {"cgroup2": 2, "cgroup": 1}
    return [CgroupMount(m.mount_point, m.root, versions[m.fstype],
                        tuple(o for o in m.super_options if o not in ("rw", "ro")))
            for m in mounts if m.fstype in versions]


class CgroupLine(NamedTuple):
    """One line of /proc/<pid>/cgroup: the process's cgroup in one hierarchy."""

    hierarchy_id: int              # 0: the v2 unified hierarchy
    controllers: frozenset[str]    # v1: "memory", "cpu", "name=systemd"…; v2: empty
    path: str                      # relative to the hierarchy's root


def parse_proc_cgroup(text: str) -> list[CgroupLine]:
    """Each line of a /proc/<pid>/cgroup, in order."""
    out = []
    for line in text.splitlines():
        if not line:
            continue
        hid, controllers, path = line.split(":", 2)
        out.append(CgroupLine(int(hid), frozenset(c for c in controllers.split(",") if c), path))
    return out


def _paths_by_key(proc_cgroup: list[CgroupLine]) -> dict[str, str]:
    """A hierarchy key -> the process's path in it: each v1 controller ("memory", "cpu", …),
    "name=systemd" for named hierarchies, and "" for the v2 unified hierarchy."""
    paths: dict[str, str] = {}
    for line in proc_cgroup:
        if not line.controllers:
            paths[""] = line.path
        for c in line.controllers:
            paths[c] = line.path
    return paths


def cgroup_hierarchies(mounts: list[Mount], proc_cgroup: list[CgroupLine],
                       controllers: set[str]) -> list[Hierarchy]:
    """The cgroup hierarchies mounted here, each once, with this process's path in it.

    ``proc_cgroup``: the process's /proc/<pid>/cgroup, parsed. ``controllers`` are the kernel's
    cgroup controllers (first column of /proc/cgroups): a v1 hierarchy is known by the
    controllers, or the name=, among its super options.
    """
    paths = _paths_by_key(proc_cgroup)
    seen: set[tuple[int, tuple[str, ...]]] = set()
    result = []
    for m in cgroup_mounts(mounts):
        if m.version == 2:
            key: tuple[str, ...] = ()
            path = paths.get("")
        else:
            key = tuple(o for o in m.options if o in controllers or o.startswith("name="))
            path = next((paths[k] for k in key if k in paths), None)
        if path is None or (m.version, key) in seen:
            continue
        seen.add((m.version, key))
        result.append(Hierarchy(m.mount_point, m.version, key, path))
    return result


def mount_containing(mounts: list[Mount], path: str) -> Mount:
    """The mount that ``path`` (absolute, symlinks resolved) lives on: the longest, latest match."""
    best = None
    for m in mounts:
        mp = m.mount_point
        if path == mp or path.startswith(mp.rstrip("/") + "/"):
            if best is None or len(mp) >= len(best.mount_point):
                best = m
    assert best is not None, "/ is always mounted"
    return best


def read_mountinfo(pid: str | int = "self") -> list[Mount]:
    with open(f"/proc/{pid}/mountinfo", encoding="utf-8") as f:
        return parse_mountinfo(f.read())


def read_hierarchies(pid: str | int = "self") -> list[Hierarchy]:
    with open(f"/proc/{pid}/cgroup", encoding="utf-8") as f:
        own = parse_proc_cgroup(f.read())
    with open("/proc/cgroups", encoding="utf-8") as f:
        controllers = {line.split()[0] for line in f if line.strip() and not line.startswith("#")}
    return cgroup_hierarchies(read_mountinfo(pid), own, controllers)

"""The Linux namespaces concurrentd knows, in one table: the entry plan copies a unit's, the
testbed joins its box's, RestrictNamespaces= names them, and an entry error names the one that
failed.

A row is a namespace's name as the kernel gives it in /proc/<pid>/ns (and systemd in its
settings), its CLONE_NEW* flag (linux/sched.h: kernel ABI, the same on every architecture; a
test checks each against the C core's, which cffi takes from the headers) and whether systemd's
RestrictNamespaces= knows the name. The rows are in the order a worker joins the namespaces,
which csrc/enter.c's ns_order sets and explains.
"""

from __future__ import annotations

from typing import NamedTuple


class Namespace(NamedTuple):
    name: str            # /proc/<pid>/ns/<name>
    constant: str        # the name of its flag in C
    flag: int            # CLONE_NEW*
    restrictable: bool   # a word of RestrictNamespaces= (systemd 252 has no "time")


NAMESPACES: tuple[Namespace, ...] = (
    Namespace("ipc", "CLONE_NEWIPC", 0x08000000, True),
    Namespace("uts", "CLONE_NEWUTS", 0x04000000, True),
    Namespace("net", "CLONE_NEWNET", 0x40000000, True),
    Namespace("cgroup", "CLONE_NEWCGROUP", 0x02000000, True),
    Namespace("pid", "CLONE_NEWPID", 0x20000000, True),
    Namespace("time", "CLONE_NEWTIME", 0x00000080, False),
    Namespace("mnt", "CLONE_NEWNS", 0x00020000, True),
    Namespace("user", "CLONE_NEWUSER", 0x10000000, True),
)

#: name -> CLONE_NEW* flag, in join order
FLAGS: dict[str, int] = {ns.name: ns.flag for ns in NAMESPACES}
#: CLONE_NEW* flag -> name
NAMES: dict[int, str] = {ns.flag: ns.name for ns in NAMESPACES}

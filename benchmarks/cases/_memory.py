"""A process's memory as the kernel accounts it: /proc/PID/smaps_rollup, read from outside.

- RSS: every page mapped and present, shared or not (what `ps` shows; a fork's RSS counts the
  pages it shares with its parent, so it says little about what a worker costs);
- USS: the pages only this process maps (Private_Clean + Private_Dirty): what its exit frees;
- PSS: each page divided by the number of processes that map it: the processes' PSS add up to
  what they take together.

Figures in MiB. The benchmarks read them as root, which may read any process's, inside a unit
too (User=, PrivateTmp=… do not hide /proc/PID from it).
"""

from __future__ import annotations

import os

_FIELDS = ("Rss", "Pss", "Private_Clean", "Private_Dirty", "Private_Hugetlb")


def rollup(pid: int | str = "self") -> dict[str, float] | None:
    """{"rss", "pss", "uss"} of ``pid`` in MiB; None if it has exited."""
    kib = dict.fromkeys(_FIELDS, 0)
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name in kib:
                    kib[name] = int(rest.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        return None
    uss = kib["Private_Clean"] + kib["Private_Dirty"] + kib["Private_Hugetlb"]
    return {"rss": kib["Rss"] / 1024, "pss": kib["Pss"] / 1024, "uss": uss / 1024}


def children(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` (from /proc/*/stat: every thread's children)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid …: comm may hold spaces and parentheses
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(name))
    return found

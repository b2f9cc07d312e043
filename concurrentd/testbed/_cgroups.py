"""The box's own sub-cgroup in every hierarchy of the caller: created before boot, removed after.

The box's systemd sees the sub-cgroup as its root (through the cgroup namespace), so all it creates
nests below it, and removing the sub-cgroup tree removes every trace of the box.
"""

from __future__ import annotations

import errno
import os
import time

from .._mountinfo import Hierarchy


class SubCgroups:
    def __init__(self, hierarchies: list[Hierarchy], leaf: str):
        self.dirs = [os.path.join(h.own_dir, leaf) for h in hierarchies]
        self._cpuset = [h.options == ("cpuset",) for h in hierarchies]
        self._v1 = [h.version == 1 for h in hierarchies]

    def create(self) -> None:
        for d, is_cpuset in zip(self.dirs, self._cpuset, strict=True):
            os.mkdir(d)
            if is_cpuset:
                # a new v1 cpuset is empty, and a process cannot join an empty one
                parent = os.path.dirname(d)
                for f in ("cpuset.cpus", "cpuset.mems"):
                    with open(os.path.join(parent, f)) as src, open(os.path.join(d, f), "w") as dst:
                        dst.write(src.read())

    def join(self, pid: int = 0, *, v1_only: bool = False) -> None:
        """Moves ``pid`` (0: the caller) into the sub-cgroup of every hierarchy (``v1_only``:
        of every cgroup v1 hierarchy; the box's systemd manages the unified one, whose
        sub-cgroup takes no process once its systemd has enabled controllers below it)."""
        for d, v1 in zip(self.dirs, self._v1, strict=True):
            if v1_only and not v1:
                continue
            with open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write(str(pid))

    def remove(self, timeout: float = 5.0) -> list[str]:
        """Removes every sub-cgroup tree, deepest first; returns what could not be removed.

        A cgroup stays busy for a moment after its last process died (until it is reaped), so
        EBUSY is retried until ``timeout``.
        """
        deadline = time.monotonic() + timeout
        left = []
        for top in self.dirs:
            if not os.path.isdir(top):
                continue
            subdirs = [os.path.join(root, d) for root, dirs, _ in os.walk(top) for d in dirs]
            for d in sorted(subdirs, key=len, reverse=True) + [top]:
                while True:
                    try:
                        os.rmdir(d)
                        break
                    except FileNotFoundError:
                        break
                    except OSError as e:
                        if e.errno != errno.EBUSY or time.monotonic() > deadline:
                            left.append(f"{d}: {e.strerror}")
                            break
                        time.sleep(0.02)
        return left

"""Where a unit finds concurrentd's anchor.

The anchor built with the package may sit where the unit's user cannot reach it (root's home is
mode 700 on many machines) or outside the unit's root (RootDirectory=). So a pool runs a copy kept
in a root-owned, world-readable directory under /run, named by its content's hash, and, for a unit
with a root of its own, binds that copy read-only at the same path inside the root.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from typing import Any, Mapping

ANCHOR_DIR = "/run/concurrentd"
_ROOT_PROPERTIES = ("RootDirectory", "RootImage")


# A copy is named by its source file's identity (device, inode, size, mtime): reading and
# hashing the 700 kB anchor to name it by content cost ~1 ms of every process's first pool.
# A rebuilt or reinstalled anchor is a new file, hence a new copy.
_installed: dict[tuple, str] = {}


def installed_anchor(src: str) -> str:
    """The path of an executable copy of ``src`` under ANCHOR_DIR (made once per source file)."""
    src = os.path.realpath(src)
    st = os.stat(src)
    key = (src, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    dst = _installed.get(key)
    if dst is not None and os.path.exists(dst):
        return dst
    dst = os.path.join(ANCHOR_DIR, "anchor-" + hashlib.sha256(repr(key).encode()).hexdigest()[:16])
    if not os.path.exists(dst):
        os.makedirs(ANCHOR_DIR, mode=0o755, exist_ok=True)
        tmp = f"{dst}.{os.getpid()}.tmp"
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o755)
        os.rename(tmp, dst)   # atomic: a concurrent pool sees the whole file or none
    _installed[key] = dst
    return dst


def add_read_only_binds(properties: Mapping[str, Any], binds: list[str]) -> dict:
    """``properties`` with ``binds`` ("src[:dst]") added to the user's own BindReadOnlyPaths."""
    properties = dict(properties)
    if binds:
        given = properties.get("BindReadOnlyPaths", [])
        given = given.split() if isinstance(given, str) else [os.fspath(b) for b in given]
        properties["BindReadOnlyPaths"] = [*given, *binds]
    return properties


def anchor_for_unit(argv: list[str], properties: Mapping[str, Any]) -> tuple[list[str], dict]:
    """The anchor's argv and the unit's properties, adjusted so that the unit can exec it."""
    path = installed_anchor(argv[0])
    has_root = any(properties.get(p) for p in _ROOT_PROPERTIES)
    return [path, *argv[1:]], add_read_only_binds(properties, [path] if has_root else [])

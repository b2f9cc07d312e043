"""Letting a worker import what its owner can, whatever the unit hides.

A worker imports lazily: a module the owner never imported, or the module of a task's function,
is read from sys.path inside the unit. There, the owner's sys.path may be out of reach: under a
home directory of mode 700 for User=nobody, hidden by ProtectHome=, InaccessiblePaths= or
TemporaryFileSystem=, in the host's /tmp behind PrivateTmp=, or outside RootDirectory=.

So for such a unit the owner's sys.path directories are bound read-only at /run/concurrentd-python/N
(a path any user can traverse, in every root), and a worker rewrites sys.path and the __path__ of
loaded packages to those places before its first task. Units that change neither the file system
view nor the user are left as they are.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Mapping

MOUNT_BASE = "/run/concurrentd-python"

# Properties after which the owner's sys.path may be unreadable or invisible in the unit.
HIDING_PROPERTIES = frozenset({
    "User", "Group", "DynamicUser", "PrivateUsers", "ProtectHome", "PrivateTmp",
    "RootDirectory", "RootImage", "InaccessiblePaths", "TemporaryFileSystem",
})

# (prefix as the owner spells it, where the worker finds it), longest prefix first
PathMap = tuple[tuple[str, str], ...]


def _roots(paths: list[str]) -> list[str]:
    """The given existing paths, resolved, without those inside another one of them."""
    existing = sorted({os.path.realpath(p) for p in paths if os.path.exists(p)})
    roots: list[str] = []
    for p in existing:
        if not any(p.startswith(r.rstrip("/") + "/") for r in roots):
            roots.append(p)
    return roots


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def plan_binds(properties: Mapping[str, Any]) -> tuple[list[str], PathMap]:
    """The BindReadOnlyPaths entries to add to the unit, and the map a worker applies.

    Computed in the owner, where the paths resolve; the worker then only rewrites strings.
    """
    given = {k for k, v in properties.items() if v not in (None, False, "", "no", [], ())}
    if not HIDING_PROPERTIES & given:
        return [], ()
    entries = [p or os.getcwd() for p in sys.path]   # '': the current directory (-c, the REPL)
    roots = _roots(entries)
    binds = [f"{root}:{MOUNT_BASE}/{i}" for i, root in enumerate(roots)]
    mapping: dict[str, str] = {}
    for entry in entries + roots:
        real = os.path.realpath(entry)
        for i, root in enumerate(roots):
            if _under(real, root):
                new = f"{MOUNT_BASE}/{i}{real[len(root):]}"
                mapping[entry] = new
                mapping[real] = new
                break
    ordered = sorted(mapping.items(), key=lambda kv: len(kv[0]), reverse=True)
    if "" in sys.path and os.getcwd() in mapping:
        ordered.insert(0, ("", mapping[os.getcwd()]))
    return binds, tuple(ordered)


def remap(path: str, mapping: PathMap) -> str:
    """``path`` as the worker finds it; '' (the owner's current directory) maps too."""
    for old, new in mapping:
        if not old:
            if not path:
                return new
            continue
        if _under(path, old):
            return new + path[len(old):]
    return path


class Rewrite:
    """sys.path and the loaded packages' __path__ rewritten by a PathMap, computed once by the
    owner as it forks the zygote, and applied inside the unit: by the zygote once it entered (a
    pool's), or by each worker after its entry (a zygote outside the unit, whose workers still
    unpickle what they were sent from the owner's paths)."""

    def __init__(self, mapping: PathMap):
        self.sys_path = [remap(p, mapping) for p in sys.path] if mapping else None
        self.lists: list[tuple[list, list]] = []
        if not mapping:
            return
        for module in list(sys.modules.values()):
            path = getattr(module, "__path__", None)
            if path is not None and not isinstance(path, list):
                path = getattr(path, "_path", None)   # namespace packages
            if isinstance(path, list):
                new = [remap(p, mapping) for p in path]
                if new != path:
                    self.lists.append((path, new))

    def apply(self) -> None:
        """In a worker, inside the unit: later imports find the bound copies."""
        if self.sys_path is None:
            return
        sys.path[:] = self.sys_path
        sys.path_importer_cache.clear()
        for path, new in self.lists:
            path[:] = new

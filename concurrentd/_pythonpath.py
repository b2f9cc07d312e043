"""Letting a worker import the owner's code, and nothing else, whatever the unit hides.

A worker imports lazily: a module the owner never imported, or the module of a task's function,
is read from sys.path inside the unit. There, the owner's sys.path may be out of reach: under a
home directory of mode 700 for User=nobody, hidden by ProtectHome=, InaccessiblePaths= or
TemporaryFileSystem=, in the host's /tmp behind PrivateTmp=, or outside RootDirectory=. Binding
such a directory whole would undo what the unit hides: the .env next to a script, the whole home
directory of `python -m` (sys.path[0] is the working directory), all of / after `cd /`.

So, for each sys.path entry the unit's properties put out of its reach (an entry the unit can
see is left alone):

- A directory this Python was installed with (its standard library and extension modules,
  site-packages, the user's site-packages) is bound whole, read-only: it holds installed code and
  what that ships with (package data, .dist-info). So is a zip archive on sys.path.
- Any other directory (the script's, '' for the working directory of -c, -m and the REPL, a
  PYTHONPATH entry) is never bound. Its code is copied (_unitfiles.code_copy) and the copy is
  bound: the module files at its top (.py, .pyc, extension modules), their __pycache__, and its
  packages (directories with an __init__) with their module files, __pycache__ and subpackages.
  Nothing else: not .env or keys, not package data, not namespace packages (no __init__), not
  names beginning with a dot, not set-id files, not a link to a file that is not a module. A
  copy holds regular files only, on /run (nosuid, nodev); it is made once and reused until a
  file changes. Copying, not one bind per file: systemd's cost grows with the binds' number
  (~1 ms each at 50, ~2 ms each at 200).
- A path that InaccessiblePaths= or TemporaryFileSystem= names inside an entry is neither copied
  nor bound (an installation directory holding one is copied, not bound). A path they name at or
  above an entry (InaccessiblePaths=/home, TemporaryFileSystem=/root) hides that entry as
  ProtectHome= does: its code is still copied.

Binds and copies appear at /run/concurrentd-python/N (N: the entry's place), and a worker
rewrites sys.path and the loaded packages' __path__ to them before its first task ('' too: in the
unit it would name the unit's working directory, not the owner's).

What a worker can still read: the code on sys.path itself, secrets a module holds included
(settings.py is code); installation directories whole, as they are when it reads them; files a
package's code would read beside it are missing unless bound with ``extra``.
"""

from __future__ import annotations

import functools
import importlib.machinery
import os
import site
import stat
import sys
import zipfile
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from . import _sources
from ._unitfiles import code_copy
from .systemd.properties.effects import effects_of

MOUNT_BASE = "/run/concurrentd-python"

# (prefix as the owner spells it, where the worker finds it), longest prefix first
PathMap = tuple[tuple[str, str], ...]


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def _inside(path: str, prefix: str) -> bool:
    """``path`` strictly below ``prefix``."""
    return path != prefix and _under(path, prefix)


@dataclass(frozen=True)
class Hiding:
    """How a unit's properties put the owner's paths out of its reach.

    Attributes:
        root: the unit has a root of its own (RootDirectory=, RootImage=): every path is elsewhere.
        user: it runs as another user or in a user namespace (User=, Group=, DynamicUser=,
            PrivateUsers=): paths that not every user may read are out of reach.
        hidden: paths it does not see (ProtectHome=, PrivateTmp=, and the two below).
        named: paths named one by one (InaccessiblePaths=, TemporaryFileSystem=): never bound
            or copied where they lie inside a sys.path entry.
    """

    root: bool = False
    user: bool = False
    hidden: tuple[str, ...] = ()
    named: tuple[str, ...] = ()

    @classmethod
    def of(cls, properties: Mapping[str, Any]) -> "Hiding":
        """As the property table reads ``properties`` (see systemd.properties.effects)."""
        effects = effects_of(properties)
        named = [*effects.named,
                 *(os.path.realpath(n) for n in effects.named if os.path.realpath(n) != n)]
        return cls(root=effects.root, user=effects.other_user,
                   hidden=(*effects.hidden, *named), named=tuple(named))

    def __bool__(self) -> bool:
        return self.root or self.user or bool(self.hidden)

    def hides(self, path: str) -> bool:
        """Whether the unit may not reach ``path`` (an absolute path, resolved)."""
        return (self.root or any(_under(path, h) for h in self.hidden)
                or (self.user and not _others_can_read(path)))

    def named_inside(self, path: str) -> list[str]:
        """The named paths strictly inside ``path``: to leave out of what is bound of it."""
        return [n for n in self.named if _inside(n, path)]


def _others_can_read(path: str) -> bool:
    """Whether any user may read ``path``: every directory above it searchable by others, and it
    readable (and, a directory, searchable) by others."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    need = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(st.st_mode) else 0)
    if st.st_mode & need != need:
        return False
    parent = os.path.dirname(path)
    while True:
        try:
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
        if parent == "/":
            return True
        parent = os.path.dirname(parent)


@functools.lru_cache(maxsize=1)
def _installation_dirs() -> frozenset[str]:
    """The directories this Python was installed with: its standard library, the directory of
    the standard library's extension modules, and the site-packages directories."""
    stdlib = os.path.dirname(os.__file__)   # sysconfig's paths would import more, lazily
    dirs = {stdlib, os.path.join(stdlib, "lib-dynload")}
    dirs.update(getattr(site, "getsitepackages", lambda: [])())
    dirs.add(site.getusersitepackages())
    return frozenset(os.path.realpath(d) for d in dirs)


_SUFFIXES = tuple(importlib.machinery.all_suffixes())   # .py, .pyc, extension modules


def _is_module(name: str) -> bool:
    return not name.startswith(".") and name.endswith(_SUFFIXES)


def _is_package(path: str) -> bool:
    return any(os.path.isfile(os.path.join(path, "__init__" + s)) for s in _SUFFIXES)


def code_files(top: str, leave_out: Iterable[str] = ()) -> list[tuple[str, os.stat_result, str]]:
    """What of directory ``top`` a worker may import: (source, its stat, path relative to top)
    for its module files, their __pycache__ bytecode, and its packages' (recursively), except
    what is at or under a path in ``leave_out``."""
    leave_out = tuple(leave_out)
    out: list[tuple[str, os.stat_result, str]] = []

    def left_out(path: str) -> bool:
        return any(_under(path, x) for x in leave_out)

    def visit(directory: str, rel: str, pycache: bool, seen: frozenset[str]) -> None:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            src = entry.path
            real = os.path.realpath(src)
            if entry.name.startswith(".") or left_out(src) or left_out(real):
                continue
            try:
                st = os.stat(src)
            except OSError:
                continue
            name = os.path.join(rel, entry.name)
            if stat.S_ISREG(st.st_mode):
                code = entry.name.endswith(".pyc") if pycache else _is_module(entry.name)
                if code and _is_module(os.path.basename(real)) and not (
                        st.st_mode & (stat.S_ISUID | stat.S_ISGID)):
                    out.append((src, st, name))
            elif stat.S_ISDIR(st.st_mode) and not pycache and real not in seen:
                if entry.name == "__pycache__":
                    visit(src, name, True, seen)
                elif _is_package(src):
                    visit(src, name, False, seen | {real})

    visit(top, "", False, frozenset({os.path.realpath(top)}))
    return out


def _target(i: int, is_dir: bool) -> str:
    # files and directories never share a name: a mount point left by another unit has a type
    return f"{MOUNT_BASE}/{i}" if is_dir else f"{MOUNT_BASE}/{i}.file"


def _extra_paths(extra: Iterable[Any], hiding: Hiding) -> list[str]:
    if isinstance(extra, (str, bytes, os.PathLike)):
        raise TypeError("extra must be a list of paths (not a single path): extra=[path]")
    out = []
    for p in extra:
        path = os.path.realpath(os.fspath(p))
        if not os.path.exists(path):
            raise ValueError(f"extra import bind {p!r} does not exist: name an existing "
                             "directory or file")
        if path == "/":
            raise ValueError("extra import bind '/' would show the unit every file: name the "
                             "directories a worker needs")
        for n in hiding.named:
            if _under(n, path):
                raise ValueError(f"extra import bind {p!r} would show {n!r}, which the unit's "
                                 "InaccessiblePaths=/TemporaryFileSystem= hides: bind less, or "
                                 "hide less")
        out.append(path)
    return out


def plan_binds(properties: Mapping[str, Any], *, extra: Iterable[Any] = (),
               enabled: bool = True) -> tuple[list[str], PathMap]:
    """The BindReadOnlyPaths entries to add to the unit, and the map a worker applies.

    Computed in the owner, where the paths resolve (code is copied here too); the worker then
    only rewrites strings. See the module's docstring for what is bound.

    Args:
        properties: the unit's properties, as the user gave them.
        extra: more paths to bind whole, read-only, which the rules above leave out (a package's
            data directory, a namespace package): one inside a sys.path entry appears at its place
            in that entry's copy; one elsewhere at /run/concurrentd-python/N, mapped like an entry.
        enabled: False: no binds and no map at all (a worker then imports only what the unit
            itself sees).

    Returns:
        (binds, path map); ([], ()) when nothing is to be bound.

    Raises:
        TypeError: ``extra`` is a single path, not a list.
        ValueError: an ``extra`` path is missing, is /, or contains a path that
            InaccessiblePaths= or TemporaryFileSystem= names.
    """
    if not enabled:
        return [], ()
    hiding = Hiding.of(properties)
    extras = _extra_paths(extra, hiding)
    if not hiding and not extras:
        return [], ()
    cwd = os.getcwd()
    installed = _installation_dirs()
    binds: list[str] = []
    mapping: dict[str, str] = {}
    whole: list[tuple[str, str]] = []    # (real path, target) of directories bound whole
    copies: list[_Copy] = []

    entries = list(dict.fromkeys(os.path.abspath(p or cwd) for p in sys.path))
    for i, entry in enumerate(entries):
        real = os.path.realpath(entry)
        if not os.path.exists(real):
            continue
        if not hiding.hides(real):
            mapping.setdefault(entry, real)   # the worker finds it where the owner does
            continue
        covered = next(((r, t) for r, t in whole if _under(real, r)), None)
        if covered is not None:
            mapping[entry] = mapping[real] = covered[1] + real[len(covered[0]):]
            continue
        leave_out = hiding.named_inside(real)
        if os.path.isfile(real):
            if zipfile.is_zipfile(real):
                target = _target(i, False)
                binds.append(f"{real}:{target}")
                mapping[entry] = mapping[real] = target
            continue
        target = _target(i, True)
        mapping[entry] = mapping[real] = target
        if real in installed and real != "/" and not leave_out:
            binds.append(f"{real}:{target}")
            whole.append((real, target))
            continue
        copy = _Copy(real, target, code_files(real, leave_out))
        copies.append(copy)
        for top in {rel.split("/", 1)[0] for _, _, rel in copy.files if "/" in rel}:
            mapping[os.path.join(entry, top)] = mapping[os.path.join(real, top)] = \
                f"{target}/{top}"

    extra_binds: list[str] = []
    for n, path in enumerate(extras, start=len(entries)):
        holder = next((c for c in copies if _inside(path, c.source)), None)
        if holder is not None:
            place = path[len(holder.source) + 1:]
            holder.places.append((place, os.path.isdir(path)))
            extra_binds.append(f"{path}:{holder.target}/{place}")
        elif not any(_under(path, r) for r, _ in whole):   # else already in a bind
            target = _target(n, os.path.isdir(path))
            extra_binds.append(f"{path}:{target}")
            mapping[path] = target

    for copy in copies:
        if copy.files or copy.places:
            binds.append(f"{code_copy(copy.files, copy.places)}:{copy.target}")

    ordered = sorted(mapping.items(), key=lambda kv: len(kv[0]), reverse=True)
    if "" in sys.path and cwd in mapping:
        ordered.insert(0, ("", mapping[cwd]))
    return binds + extra_binds, tuple(ordered)


@dataclass
class _Copy:
    """A sys.path directory whose code is copied: its files, and the empty places in the copy
    on which ``extra`` paths are bound ((path in the copy, is a directory))."""

    source: str
    target: str
    files: list[tuple[str, os.stat_result, str]]
    places: list[tuple[str, bool]] = field(default_factory=list)


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
        #: the directories the unit sees elsewhere, for the tracebacks (see _sources)
        self.bound = tuple((old, new) for old, new in mapping
                           if old and new.startswith(MOUNT_BASE + "/"))
        #: (a package's __path__ list, what it becomes), each list changed in place
        self.lists: list[tuple[list[str], list[str]]] = []
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
        _sources.note_bound(self.bound)
        sys.path[:] = self.sys_path
        sys.path_importer_cache.clear()
        for path, new in self.lists:
            path[:] = new

"""Copies of the owner's files that a unit needs, kept under /run, and the binds that show them.

The anchor built with the package may sit where the unit's user cannot reach it (root's home is
mode 700 on many machines) or outside the unit's root (RootDirectory=). So a pool runs a copy kept
in a root-owned, world-readable directory under /run, named by its source file's identity, and,
for a unit with a root of its own, binds that copy read-only at the same path inside the root.

The owner's importable code, where the unit hides it, travels the same way (see _pythonpath): the
module files of a directory are copied into a directory of their own under CODE_DIR, which is
bound into the unit instead of the directory they came from. A copy holds only what was copied, as
regular files of mode 0644 in directories of mode 0755 (no set-id file, device node or link), on
/run, which systemd mounts nosuid and nodev. CODE_DIR itself is mode 0700: the copies are for
units (a bind needs no access to its source's parents), not for the host's other users.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from typing import Any, Iterable, Mapping

from .systemd._syntax import split_words
from .systemd.properties.effects import effects_of

ANCHOR_DIR = "/run/concurrentd"
CODE_DIR = "/run/concurrentd-code"


# A copy is named by its source file's identity (device, inode, size, mtime): reading and
# hashing the 700 kB anchor to name it by content cost ~1 ms of every process's first pool.
# A rebuilt or reinstalled anchor is a new file, hence a new copy.
_installed: dict[tuple[str, int, int, int, int], str] = {}


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
        fd, tmp = tempfile.mkstemp(prefix=os.path.basename(dst) + ".", dir=ANCHOR_DIR)
        os.close(fd)   # a name of its own: pools of several threads copy at once
        try:
            shutil.copyfile(src, tmp)
            os.chmod(tmp, 0o755)
            os.rename(tmp, dst)   # atomic: a concurrent pool sees the whole file or none
        except BaseException:
            os.unlink(tmp)
            raise
    _installed[key] = dst
    return dst


def code_copy(files: Iterable[tuple[str, os.stat_result, str]],
              places: Iterable[tuple[str, bool]] = ()) -> str:
    """A directory under CODE_DIR holding ``files`` ((source, its stat, path in the copy)), and
    an empty directory or file at each of ``places`` ((path in the copy, is a directory)): where
    the unit binds something more.

    Named by the sources' identities (path, device, inode, size, mtime): a pool whose code did not
    change reuses the copy made for an earlier one, and a changed file makes a new copy. A copy
    is made in a temporary directory and renamed into place whole. A source's mtime is kept, so
    that its cached bytecode stays valid.
    """
    files = sorted(files, key=lambda f: f[2])
    places = sorted(places)
    key = repr(([(src, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, rel)
                 for src, st, rel in files], places))
    dst = os.path.join(CODE_DIR, hashlib.sha256(key.encode()).hexdigest()[:24])
    if os.path.isdir(dst):
        return dst
    os.makedirs(CODE_DIR, mode=0o700, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(dst) + ".", dir=CODE_DIR)   # one per thread
    for src, st, rel in files:
        target = os.path.join(tmp, rel)
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        shutil.copyfile(src, target)
        os.chmod(target, 0o644)
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    for rel, is_dir in places:
        target = os.path.join(tmp, rel)
        os.makedirs(target if is_dir else os.path.dirname(target), mode=0o755, exist_ok=True)
        if not is_dir:
            open(target, "a").close()
    os.chmod(tmp, 0o755)
    try:
        os.rename(tmp, dst)   # atomic: a concurrent pool sees the whole copy or none
    except OSError:
        if not os.path.isdir(dst):
            raise
        shutil.rmtree(tmp, ignore_errors=True)   # a concurrent pool made the same copy first
    return dst


def add_read_only_binds(properties: Mapping[str, Any], binds: list[str]) -> dict[str, Any]:
    """``properties`` with ``binds`` ("src[:dst]") added to the user's own BindReadOnlyPaths.

    The user's value may be a list or systemd's text, whose quoted words are kept whole
    (``'"/a b" /c'`` is two paths, as systemd reads it).
    """
    properties = dict(properties)
    if binds:
        given = properties.get("BindReadOnlyPaths") or []
        if isinstance(given, str):
            given = split_words(given)
        elif isinstance(given, os.PathLike):
            given = [os.fspath(given)]
        else:
            given = [os.fspath(b) for b in given]
        properties["BindReadOnlyPaths"] = [*given, *binds]
    return properties


def anchor_for_unit(argv: list[str], properties: Mapping[str, Any],
                    also: Iterable[str] = ()) -> tuple[list[str], dict[str, Any]]:
    """The anchor's argv and the unit's properties, adjusted so that the unit can exec it (and
    reach the files ``also`` names, by the same paths: the owner's FIFO)."""
    path = installed_anchor(argv[0])
    has_root = effects_of(properties).root
    return [path, *argv[1:]], add_read_only_binds(properties, [path, *also] if has_root else [])


def _remove_stale_fifos() -> None:
    """The FIFOs of owners that died without closing their pools (SIGKILL): "owner-PID-…" of a
    pid that no longer runs. (A reused pid keeps its FIFO until that process is gone too.)"""
    try:
        names = os.listdir(ANCHOR_DIR)
    except FileNotFoundError:
        return
    for name in names:
        parts = name.split("-")
        if name.endswith(".fifo") and parts[0] == "owner" and parts[1].isdigit() \
                and not os.path.exists(f"/proc/{parts[1]}"):
            try:
                os.unlink(os.path.join(ANCHOR_DIR, name))
            except FileNotFoundError:
                pass


class OwnerFifo:
    """A FIFO under ANCHOR_DIR that the owner holds open for writing (O_RDWR: the open does not
    wait for a reader) and never writes: the anchor's read end hangs up when the owner is gone,
    whatever pid namespace the anchor is in. Mode 0644: the unit's user may read it, nobody else
    may write it. The fd is close-on-exec; the zygote closes it with every other fd."""

    def __init__(self) -> None:
        os.makedirs(ANCHOR_DIR, mode=0o755, exist_ok=True)
        _remove_stale_fifos()
        self.path = os.path.join(ANCHOR_DIR, f"owner-{os.getpid()}-{os.urandom(6).hex()}.fifo")
        os.mkfifo(self.path, 0o644)
        os.chmod(self.path, 0o644)   # whatever the umask
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except BaseException:
            os.unlink(self.path)
            raise

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

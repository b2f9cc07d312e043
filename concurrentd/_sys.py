"""Typed Python face of the thin syscall wrappers in the C core (csrc/sys.c, libc).

Each function raises OSError with the errno the kernel gave and names what it was doing, so callers
never look at return codes.
"""

from __future__ import annotations

import os

from ._core import ffi, lib

CLONE_NEWNS = lib.CLONE_NEWNS
CLONE_NEWCGROUP = lib.CLONE_NEWCGROUP
CLONE_NEWUTS = lib.CLONE_NEWUTS
CLONE_NEWIPC = lib.CLONE_NEWIPC
CLONE_NEWUSER = lib.CLONE_NEWUSER
CLONE_NEWPID = lib.CLONE_NEWPID
CLONE_NEWNET = lib.CLONE_NEWNET
CLONE_NEWTIME = lib.CLONE_NEWTIME

MS_RDONLY = lib.MS_RDONLY
MS_NOSUID = lib.MS_NOSUID
MS_NODEV = lib.MS_NODEV
MS_NOEXEC = lib.MS_NOEXEC
MS_REMOUNT = lib.MS_REMOUNT
MS_BIND = lib.MS_BIND
MS_REC = lib.MS_REC
MS_PRIVATE = lib.MS_PRIVATE
MS_SLAVE = lib.MS_SLAVE
MNT_DETACH = lib.MNT_DETACH


def _check(rc: int, what: str, path: str | None = None) -> int:
    if rc < 0:
        err = ffi.errno
        raise OSError(err, f"{what}: {os.strerror(err)}", path)
    return rc


def _c(s: str | None) -> object:
    return ffi.NULL if s is None else os.fsencode(s)


def unshare(flags: int) -> None:
    _check(lib.unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(lib.setns(fd, nstype), "setns")


def mount(source: str | None, target: str, fstype: str | None = None, flags: int = 0,
          data: str | None = None) -> None:
    kind = fstype or ("bind" if flags & MS_BIND else "remount" if flags & MS_REMOUNT else "propagation")
    what = f"mount({kind} {source or ''} -> {target})"
    _check(lib.mount(_c(source), _c(target), _c(fstype), flags, _c(data)), what, target)


def umount(target: str, flags: int = 0) -> None:
    _check(lib.umount2(_c(target), flags), "umount", target)


def pivot_root(new_root: str, put_old: str) -> None:
    _check(lib.cd_pivot_root(_c(new_root), _c(put_old)), "pivot_root", new_root)


def set_parent_death_signal(sig: int) -> None:
    """The kernel sends ``sig`` to the caller when the thread that forked it exits."""
    _check(lib.prctl(lib.PR_SET_PDEATHSIG, ffi.cast("unsigned long", sig)), "prctl(PR_SET_PDEATHSIG)")


def set_dumpable(dumpable: bool) -> None:
    """A non-dumpable process cannot be ptraced, have its memory written through /proc/<pid>/mem,
    or its fds taken with pidfd_getfd() by any process without CAP_SYS_PTRACE, whatever its uid."""
    _check(lib.prctl(lib.PR_SET_DUMPABLE, ffi.cast("unsigned long", int(dumpable))),
           "prctl(PR_SET_DUMPABLE)")



def clone_into_cgroup(cgroup_fd: int) -> int:
    """A copy of the calling, single-threaded process created in the cgroup v2 directory open at
    ``cgroup_fd``, a child of the caller's parent (see csrc/sys.h): its pid in the caller, 0 in
    the copy. No at-fork hooks run, Python's or libc's: the caller must have no other thread.

    Raises:
        OSError: the kernel refused (before 5.7, a cgroup v1 directory, a threaded cgroup...).
    """
    return _check(lib.cd_clone_into_cgroup(cgroup_fd), "clone3(CLONE_INTO_CGROUP)")


def pidfd_open(pid: int) -> int:
    """An fd that becomes readable when process ``pid`` exits (close it when done)."""
    return _check(lib.cd_pidfd_open(pid, 0), f"pidfd_open({pid})")

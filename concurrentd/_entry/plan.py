"""The entry plan: everything about a unit's main process (the anchor) a worker must copy.

Built once per unit in the parent, from /proc/<anchor>; every worker forked afterwards enters the
unit with one C call (enter.py, csrc/enter.c). The parsing functions at the top are pure (text in,
values out) and tested without any process; EntryPlan.from_pid does the I/O.

Every fd is opened here, before any worker switches anything: after joining a mount namespace or
chrooting, the parent's paths are gone (runc nsexec, util-linux nsenter do the same).
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .. import _mountinfo
from .._core import ffi, lib
from .._namespaces import FLAGS as NAMESPACE_FLAGS
from .seccomp import SeccompFilter, get_filters

# ---------------------------------------------------------------------------------------------
# Pure parsing


def cgroup_dirs(proc_cgroup: str, mountinfo: "str | list[_mountinfo.CgroupMount]"
                ) -> dict[tuple[int, frozenset[str]], str]:
    """For each hierarchy of a process, the directory of its cgroup in the reader's view.

    Works for v1 (one hierarchy per controller set), hybrid (v1 plus cgroup2 at .../unified) and
    pure v2 ("0::/path"). A hierarchy the reader has not mounted, or whose mounted root does not
    contain the cgroup, is left out. ``mountinfo``: the reader's mountinfo text, or its cgroup
    mounts as _mountinfo.cgroup_mounts() gives them (a caller with two processes to place parses
    once).
    """
    mounts = _cgroup_mounts(mountinfo) if isinstance(mountinfo, str) else mountinfo
    out = {}
    for hid, ctrls, path in _mountinfo.parse_proc_cgroup(proc_cgroup):
        for m in mounts:
            fits = m.version == 2 if hid == 0 else (m.version == 1 and ctrls and ctrls <= m.controllers)
            if not fits:
                continue
            root = m.root.rstrip("/")
            if path != root and not path.startswith(root + "/") and root:
                continue
            rel = path[len(root):].lstrip("/")
            out[(hid, ctrls)] = os.path.join(m.mount_point, rel) if rel else m.mount_point
            break
    return out


def _cgroup_mounts(mountinfo: str) -> list[_mountinfo.CgroupMount]:
    return _mountinfo.cgroup_mounts(_mountinfo.parse_mountinfo(mountinfo))


def parse_status(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition(":")
        if sep:
            out[k] = v.strip()
    return out


def parse_id_map(text: str) -> list[tuple[int, int, int]]:
    """(inside, outside, count) triples of a uid_map/gid_map."""
    out = []
    for line in text.splitlines():
        if line.strip():
            inside, outside, count = (int(x) for x in line.split())
            out.append((inside, outside, count))
    return out


def map_id(outside: int, id_map: Iterable[tuple[int, int, int]]) -> int:
    """The id inside a user namespace of an id of the reader's; ValueError if unmapped."""
    for inside, out_start, count in id_map:
        if out_start <= outside < out_start + count:
            return inside + outside - out_start
    raise ValueError(f"id {outside} is not mapped in the unit's user namespace")


#: /proc/<pid>/limits row names (fs/proc/base.c lnames[]) -> RLIMIT_* (Python lacks RSS=5 and
#: LOCKS=10 on some builds: the numbers are the kernel ABI).
_LIMIT_NAMES = {
    "Max cpu time": resource.RLIMIT_CPU, "Max file size": resource.RLIMIT_FSIZE,
    "Max data size": resource.RLIMIT_DATA, "Max stack size": resource.RLIMIT_STACK,
    "Max core file size": resource.RLIMIT_CORE, "Max resident set": 5,
    "Max processes": resource.RLIMIT_NPROC, "Max open files": resource.RLIMIT_NOFILE,
    "Max locked memory": resource.RLIMIT_MEMLOCK, "Max address space": resource.RLIMIT_AS,
    "Max file locks": 10, "Max pending signals": resource.RLIMIT_SIGPENDING,
    "Max msgqueue size": resource.RLIMIT_MSGQUEUE, "Max nice priority": resource.RLIMIT_NICE,
    "Max realtime priority": resource.RLIMIT_RTPRIO, "Max realtime timeout": resource.RLIMIT_RTTIME,
}


def parse_limits(text: str) -> dict[int, tuple[int, int]]:
    """RLIMIT_* -> (soft, hard) from /proc/<pid>/limits; RLIM_INFINITY for "unlimited".

    Read from /proc rather than with prlimit(2), which needs CAP_SYS_RESOURCE over the target
    (absent on these machines) unless the caller has the target's uids."""
    def limit(v: str) -> int:
        return resource.RLIM_INFINITY if v == "unlimited" else int(v)

    out = {}
    for line in text.splitlines()[1:]:
        name = line[:26].strip()
        if name not in _LIMIT_NAMES:
            continue
        soft, hard = line[26:].split()[:2]
        out[_LIMIT_NAMES[name]] = (limit(soft), limit(hard))
    return out


def parse_environ(data: bytes) -> dict[bytes, bytes]:
    out = {}
    for item in data.split(b"\0"):
        k, sep, v = item.partition(b"=")
        if sep:
            out[k] = v
    return out


def parse_state(cmdline: bytes) -> int | None:
    """The securebits the anchor wrote over its --state placeholder, or None if not (yet)."""
    state = _state_fields(cmdline)
    return int(state[b"sb"], 16) if state and b"sb" in state else None


def parse_mdwe(cmdline: bytes) -> int | None:
    """The MDWE flags (prctl PR_GET_MDWE) the anchor wrote with its securebits, or None: not
    written (yet), or a kernel without MDWE (< 6.3)."""
    state = _state_fields(cmdline)
    return int(state[b"md"]) if state and b"md" in state else None


def parse_thp(cmdline: bytes) -> int | None:
    """The transparent-huge-page setting (prctl PR_GET_THP_DISABLE: MemoryTHP=) the anchor wrote
    with its securebits, or None: not written (yet), or an anchor that does not report it."""
    state = _state_fields(cmdline)
    return int(state[b"th"]) if state and b"th" in state else None


def _state_fields(cmdline: bytes) -> dict[bytes, bytes] | None:
    """"sb=2f,md=1" after --state as {b"sb": b"2f", b"md": b"1"}; None if not written."""
    args = cmdline.split(b"\0")
    for i, a in enumerate(args[:-1]):
        if a == b"--state" and args[i + 1].startswith(b"sb="):
            return dict(f.partition(b"=")[::2] for f in args[i + 1].split(b","))
    return None


#: set_mempolicy() modes by the names /proc/<pid>/numa_maps gives them (mm/mempolicy.c)
MEMPOLICY_MODES = {"default": 0, "prefer": 1, "bind": 2, "interleave": 3, "local": 4,
                   "prefer (many)": 5, "weighted interleave": 6}
MEMPOLICY_FLAGS = {"static": 1 << 15, "relative": 1 << 14, "balancing": 1 << 13}


def parse_mempolicy(numa_maps: str) -> tuple[int, frozenset[int]]:
    """The process's NUMA memory policy (NUMAPolicy=, NUMAMask=): (mode | flags, nodes).

    The kernel offers no call to read another process's policy, but /proc/<pid>/numa_maps shows
    it on every mapping that has no policy of its own (mbind), such as the first one, the
    program's text, which is the line read here: generating the whole file walks the page tables
    of every mapping (0.7 ms for a Python process, 10 µs for the start of its first line). Each
    line is ``address policy details``; the policy is ``mode[=flags][:nodes]``, e.g.
    ``bind=static:0-1``.
    """
    line = numa_maps.split("\n", 1)[0]
    if not line:
        raise ValueError("numa_maps is empty")
    rest = line.split(" ", 1)[1]
    policy = next((rest[:len(name)] + rest[len(name):].split(" ", 1)[0]
                   for name in sorted(MEMPOLICY_MODES, key=len, reverse=True)
                   if rest.startswith(name)), None)
    if policy is None:
        raise ValueError(f"unknown memory policy in numa_maps: {rest.split(' ', 1)[0]!r}")
    head, _, nodelist = policy.partition(":")
    name, _, flags = head.partition("=")
    mode = MEMPOLICY_MODES[name]
    for flag in filter(None, flags.split("|")):
        mode |= MEMPOLICY_FLAGS[flag]
    nodes: set[int] = set()
    for part in filter(None, nodelist.split(",")):
        lo, _, hi = part.partition("-")
        nodes.update(range(int(lo), int(hi or lo) + 1))
    return mode, frozenset(nodes)


def affinity_mask(cpus: Iterable[int], size: int = 128) -> bytes:
    """A cpu_set_t of ``size`` bytes with the given CPUs set."""
    mask = bytearray(size)
    for c in cpus:
        mask[c // 8] |= 1 << (c % 8)
    return bytes(mask)


# ---------------------------------------------------------------------------------------------
# The plan

CAP_SYS_ADMIN = 21
RLIMITS = tuple(sorted(getattr(resource, n) for n in dir(resource) if n.startswith("RLIMIT_")))
_U64 = (1 << 64) - 1
_STATE_WAIT = 2.0  # seconds to wait for a freshly exec'd anchor to report its securebits


class AnchorGone(ProcessLookupError):
    """The anchor exited before or while its plan was read."""


@dataclass
class EntryPlan:
    """What a worker copies from the anchor. Build with :meth:`from_pid`; close when done."""

    anchor_pid: int
    namespaces: dict[str, int]             # name -> O_CLOEXEC fd, only those that differ
    root_fd: int
    cwd_fd: int
    cgroup_procs: tuple[str, ...]          # cgroup.procs files to write, one per hierarchy
    uid: tuple[int, int, int]
    gid: tuple[int, int, int]
    groups: tuple[int, ...]
    caps: dict[str, int]                   # bounding, permitted, effective, inheritable, ambient
    securebits: int
    securebits_known: bool                 # False: the anchor did not report them, 0 assumed
    mdwe: int | None                       # PR_GET_MDWE (MemoryDenyWriteExecute=); None: unknown
    no_new_privs: bool
    rlimits: dict[int, tuple[int, int]]
    umask: int
    nice: int
    sched_policy: int                      # sched_getscheduler(), SCHED_RESET_ON_FORK included
    sched_priority: int
    mempolicy: tuple[int, frozenset[int]] | None   # (mode | flags, nodes); None: no NUMA kernel
    oom_score_adj: int
    coredump_filter: int | None            # None: the kernel has no /proc/<pid>/coredump_filter
    affinity: frozenset[int]
    ioprio: int
    personality: int
    timer_slack: int
    thp: int | None                        # PR_GET_THP_DISABLE (MemoryTHP=); None: unknown
    dumpable: bool
    filters: tuple[SeccompFilter, ...]     # install order, oldest first
    environ: dict[bytes, bytes]
    environ_block: bytes
    groups_host: tuple[int, ...] | None = None  # with a unit user ns: groups as our ids
    owner_pid: int = field(default_factory=os.getpid)   # the process it must never confine
    filters_read: bool = True              # False: read without seccomp=, it cannot confine
    no_new_privs_added: bool = False       # set by release_admin(): stricter than the anchor
    _cgroup_fds: list[int] = field(default_factory=list, repr=False)
    _pidfd: int = -1
    _closed: bool = False
    _c: Any = field(default=None, repr=False)   # the struct cd_plan (cffi: typed at run time)
    _keep: list[object] = field(default_factory=list, repr=False)

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_pid(cls, anchor_pid: int, *, anchor_exe: str | None = None,
                 keyring: bool = True, seccomp: bool = True,
                 owner_pid: int | None = None, environ: bool = True) -> "EntryPlan":
        """Read the anchor ``anchor_pid`` (a unit's main process) into a plan.

        Args:
            anchor_pid: the unit's MainPID, in the caller's pid namespace.
            anchor_exe: the executable the anchor must be running (default: concurrentd's
                anchor, see anchor_path()). Checked first: before systemd exec's it, the process
                is systemd's fork, not yet confined.
            keyring: give each worker a fresh session keyring, as systemd's KeyringMode=private
                (the default for system services) does for the anchor.
            seccomp: False: leave the anchor's seccomp filters unread. Copying them seizes the
                anchor with ptrace, which one process at a time can do; such a plan describes the
                unit (its namespaces, cgroups, credentials…) but enter() refuses it.
            owner_pid: the process the plan must never confine (default: the caller). A pool's
                zygote, which reads the plan for itself, names its owner.
            environ: False: leave the environment unread (a rehearsal on the owner itself, whose
                environment must not be copied into memory its workers inherit).

        Raises:
            AnchorGone: the process does not exist or exited meanwhile.
            ValueError: the process does not run ``anchor_exe`` (not exec'd yet, or not an anchor).
            OSError: a /proc file or ptrace could not be read (not root?).
        """
        from . import anchor_path

        anchor = _Anchor(anchor_pid)
        plan = None
        try:
            pidfd = anchor.open_pidfd()
            _check_exe(anchor_pid, anchor_exe or anchor_path())
            fields: dict[str, Any] = {}
            fields.update(_read_places(anchor))
            fields.update(_read_cgroups(anchor))
            fields.update(_read_credentials(anchor, in_user_ns="user" in fields["namespaces"]))
            fields.update(_read_seccomp(anchor, seccomp))
            fields.update(_read_environ(anchor, environ))
            fields.update(_read_scheduling(anchor))
            fields.update(_read_limits(anchor))
            plan = cls(anchor_pid=anchor_pid, _pidfd=pidfd,
                       owner_pid=os.getpid() if owner_pid is None else owner_pid, **fields)
            # Still alive: then every value above is the anchor's, not a reused pid's.
            if _readable(pidfd):
                raise AnchorGone(3, f"anchor pid {anchor_pid} exited while its plan was read")
            plan._build_c(keyring)
            return plan
        except BaseException as e:
            # A /proc file that vanished (ENOENT, ESRCH) because the anchor exited meanwhile: the
            # kernel drops its namespaces before it marks it exited, hence the short wait.
            exited = (isinstance(e, OSError) and not isinstance(e, AnchorGone)
                      and bool(anchor.fds) and _readable(anchor.fds[0], 0.1))
            if plan is not None:
                # Its fds are closed here: a plan built then dropped (the anchor exited, or its
                # struct could not be filled) must not close their numbers again in __del__,
                # when they may be another file's of the owner.
                plan._forget()
            for fd in anchor.fds:
                os.close(fd)
            if exited:
                raise AnchorGone(3, f"anchor pid {anchor_pid} exited while its plan was read "
                                    f"({e})") from None
            raise

    @classmethod
    def rehearse(cls) -> None:
        """Read the calling process itself as if it were an anchor, and drop the plan.

        For a process that will read a real anchor soon, and is only waiting for it, e.g. for
        systemd to start the unit. In a process just forked, the first plan it reads costs about
        4× the next one: the code is cold, and every page it touches is a copy-on-write fault.
        A rehearsal takes that cost off the real read, about 1 ms of a pool's start.
        Errors are ignored: the real read will meet them, and report them.
        """
        try:
            cls.from_pid(os.getpid(), anchor_exe="/proc/self/exe", seccomp=False,
                         environ=False).close()
        except (OSError, ValueError):
            pass

    def _build_c(self, keyring: bool) -> None:
        """The struct cd_plan csrc/enter.c enters by, each group filled beside its reader."""
        c = ffi.new("struct cd_plan *")
        c.anchor_pidfd = self._pidfd
        for fill in (_fill_places, _fill_cgroups, _fill_credentials, _fill_seccomp,
                     _fill_environ, _fill_scheduling, _fill_limits):
            fill(c, self, self._keep)
        c.new_session_keyring = int(keyring)
        self._c = c

    @property
    def needs_sys_admin_for_filters(self) -> bool:
        """The kernel loads a seccomp filter only into a process with no_new_privs or
        CAP_SYS_ADMIN. systemd 257 loads a unit's filters (SystemCallFilter= with User=,
        without NoNewPrivileges=) while it still holds CAP_SYS_ADMIN, and loses it at its exec.
        A worker does not exec: it holds CAP_SYS_ADMIN until its filters are in, then drops it
        (csrc/enter.c, the seccomp step)."""
        return bool(self.filters) and not self.no_new_privs and not (
            self.caps["effective"] >> CAP_SYS_ADMIN) & 1

    @property
    def sched_resets_on_fork(self) -> bool:
        """CPUSchedulingResetOnFork=yes: the kernel gives a fork of the anchor the default policy
        and no negative nice (see enter(sched_reset=))."""
        return bool(self.sched_policy & os.SCHED_RESET_ON_FORK)

    # -- lifetime --------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def anchor_alive(self) -> bool:
        """Whether the unit's main process still runs (read on the plan's pidfd; True when the
        plan does not watch it, or is closed)."""
        return self._closed or self._pidfd < 0 or not _readable(self._pidfd)

    def fds(self) -> list[int]:
        """Every fd the plan holds (closed by close(), or by entering in a worker)."""
        if self._closed:
            return []
        return [self._pidfd, self.root_fd, self.cwd_fd, *self.namespaces.values(), *self._cgroup_fds]

    def close(self) -> None:
        """Close the plan's fds. Idempotent."""
        for fd in self.fds():
            try:
                os.close(fd)
            except OSError:
                pass
        self._closed = True

    def _forget(self) -> None:
        """In a worker after entry: the C core closed the fds, whose numbers may be reused."""
        self._closed = True

    def __enter__(self) -> "EntryPlan":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not self._closed and self.owner_pid == os.getpid():
            self.close()


# ---------------------------------------------------------------------------------------------
# The plan, group by group: for each part of struct cd_plan (csrc/enter.h), the reader that
# takes it from /proc/<anchor> (the EntryPlan fields it returns) and the filler that writes it
# into the C struct (`keep`: the buffers the struct points into, kept alive with the plan).


class _Anchor:
    """An anchor being read: its /proc directory, its status (parsed once, read by several
    groups), and every fd opened so far, which from_pid closes if the read fails."""

    def __init__(self, pid: int):
        self.pid = pid
        self.proc = f"/proc/{pid}"
        self.fds: list[int] = []
        self._status: dict[str, str] | None = None
        self._cmdline: bytes | None = None

    def open_pidfd(self) -> int:
        """A pidfd on the anchor: first, so that a later exit shows (see _readable)."""
        try:
            pidfd: int = lib.cd_pidfd_open(self.pid, 0)
            if pidfd < 0:
                raise OSError(ffi.errno, os.strerror(ffi.errno))
        except OSError as e:
            raise AnchorGone(e.errno, f"anchor pid {self.pid}: {e.strerror}: the unit's main "
                                      "process is gone (unit stopped or failed?)") from None
        os.set_inheritable(pidfd, False)
        self.fds.append(pidfd)
        return pidfd

    def open(self, path: str, flags: int = os.O_RDONLY) -> int:
        fd = os.open(path, flags | os.O_CLOEXEC)
        self.fds.append(fd)
        return fd

    def read(self, name: str) -> str:
        return _read(f"{self.proc}/{name}")

    @property
    def status(self) -> dict[str, str]:
        if self._status is None:
            self._status = parse_status(self.read("status"))
        return self._status

    @property
    def state(self) -> bytes:
        """The anchor's cmdline once it has written its state over the placeholder (see
        csrc/anchor.c), or as it is after a short wait: the fields are then unknown."""
        if self._cmdline is None:
            deadline = time.monotonic() + _STATE_WAIT
            while True:
                cmdline = _read_bytes(f"{self.proc}/cmdline")
                if (parse_state(cmdline) is not None or b"--state" not in cmdline.split(b"\0")
                        or time.monotonic() > deadline):
                    break
                time.sleep(0.001)
            self._cmdline = cmdline
        return self._cmdline


# -- namespaces, root and working directory: cd_plan.ns, root_fd, cwd_fd --

def _read_places(anchor: _Anchor) -> dict[str, Any]:
    """``namespaces`` (an fd on each of the anchor's that is not ours), ``root_fd``, ``cwd_fd``."""
    namespaces = {}
    for name in NAMESPACE_FLAGS:
        theirs = os.stat(f"{anchor.proc}/ns/{name}")
        ours = os.stat(f"/proc/self/ns/{name}")
        if (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino):
            namespaces[name] = anchor.open(f"{anchor.proc}/ns/{name}")
    return {"namespaces": namespaces,
            "root_fd": anchor.open(f"{anchor.proc}/root", os.O_PATH | os.O_DIRECTORY),
            "cwd_fd": anchor.open(f"{anchor.proc}/cwd", os.O_PATH | os.O_DIRECTORY)}


def _fill_places(c: Any, plan: EntryPlan, keep: list[object]) -> None:
    c.n_ns = len(plan.namespaces)
    for i, (name, fd) in enumerate(plan.namespaces.items()):
        c.ns[i].fd = fd
        c.ns[i].nstype = NAMESPACE_FLAGS[name]
    c.root_fd, c.cwd_fd = plan.root_fd, plan.cwd_fd


# -- cgroups: cd_plan.cgroup_fds --

def _read_cgroups(anchor: _Anchor) -> dict[str, Any]:
    """``cgroup_procs``: the cgroup.procs file of each hierarchy where the anchor's cgroup is not
    ours, and ``_cgroup_fds``, open for writing."""
    mountinfo = _cgroup_mounts(_read("/proc/self/mountinfo"))   # once: both use it
    theirs = cgroup_dirs(anchor.read("cgroup"), mountinfo)
    ours = cgroup_dirs(_read("/proc/self/cgroup"), mountinfo)
    procs = tuple(os.path.join(d, "cgroup.procs") for k, d in sorted(
        theirs.items(), key=lambda kv: kv[0][0]) if ours.get(k) != d)
    return {"cgroup_procs": procs, "_cgroup_fds": [anchor.open(p, os.O_WRONLY) for p in procs]}


def _fill_cgroups(c: Any, plan: EntryPlan, keep: list[object]) -> None:
    c.n_cgroups = len(plan._cgroup_fds)
    for i, fd in enumerate(plan._cgroup_fds):
        c.cgroup_fds[i] = fd


# -- credentials: cd_plan.uid, gid, groups, cap_*, securebits, no_new_privs, mdwe, dumpable --

_CAP_FIELDS = (("bounding", "Bnd"), ("permitted", "Prm"), ("effective", "Eff"),
               ("inheritable", "Inh"), ("ambient", "Amb"))


def _read_credentials(anchor: _Anchor, in_user_ns: bool) -> dict[str, Any]:
    """``uid``, ``gid``, ``groups`` (as the worker will see them: inside the unit's user
    namespace when ``in_user_ns``, then ``groups_host`` too), ``caps``, ``securebits``,
    ``securebits_known``, ``mdwe``, ``no_new_privs``, ``dumpable``."""
    st = anchor.status
    uid = tuple(int(x) for x in st["Uid"].split()[:3])
    gid = tuple(int(x) for x in st["Gid"].split()[:3])
    groups = groups_host = tuple(int(x) for x in st["Groups"].split())
    if in_user_ns:
        um, gm = parse_id_map(anchor.read("uid_map")), parse_id_map(anchor.read("gid_map"))
        uid = tuple(map_id(u, um) for u in uid)
        gid = tuple(map_id(g, gm) for g in gid)
        groups = tuple(map_id(g, gm) for g in groups)
    securebits, mdwe = parse_state(anchor.state), parse_mdwe(anchor.state)
    return {
        "uid": uid, "gid": gid, "groups": groups,
        "groups_host": groups_host if in_user_ns else None,
        "caps": {k: int(st[f"Cap{s}"], 16) for k, s in _CAP_FIELDS},
        "securebits": securebits if securebits is not None else 0,
        "securebits_known": securebits is not None,
        "mdwe": mdwe,
        "no_new_privs": st.get("NoNewPrivs") == "1",
        # /proc/<pid> belongs to the process's euid only while it is dumpable
        "dumpable": uid[1] == 0 or os.stat(anchor.proc).st_uid != 0,
    }


def _fill_credentials(c: Any, plan: EntryPlan, keep: list[object]) -> None:
    c.last_cap = int(_read("/proc/sys/kernel/cap_last_cap"))
    c.cap_bounding = plan.caps["bounding"]
    c.cap_permitted = plan.caps["permitted"]
    c.cap_effective = plan.caps["effective"]
    c.cap_inheritable = plan.caps["inheritable"]
    c.cap_ambient = plan.caps["ambient"]
    c.securebits, c.no_new_privs = plan.securebits, int(plan.no_new_privs)
    c.mdwe = -1 if plan.mdwe is None else plan.mdwe
    c.hold_sys_admin = int(plan.needs_sys_admin_for_filters)
    # Never dumpable once entered, whatever the anchor is: dumpable with the unit's uid, a
    # process of another unit of the same user could take its fds (pidfd_getfd) or ptrace
    # it, and a zygote's socket is its pool's calls and results.
    c.dumpable = 0
    c.uid, c.gid = list(plan.uid), list(plan.gid)
    groups = ffi.new("unsigned int[]", list(plan.groups) or [0])
    keep.append(groups)
    c.n_groups, c.groups = len(plan.groups), groups
    if plan.groups_host is not None:
        early = ffi.new("unsigned int[]", list(plan.groups_host) or [0])
        keep.append(early)
        c.groups_early = early


# -- seccomp: cd_plan.filters --

def _read_seccomp(anchor: _Anchor, seccomp: bool) -> dict[str, Any]:
    """``filters`` (copied with ptrace, unless not ``seccomp``) and ``filters_read``."""
    filtered = anchor.status.get("Seccomp") == "2"
    return {"filters": get_filters(anchor.pid) if filtered and seccomp else (),
            "filters_read": seccomp or not filtered}


def _fill_seccomp(c: Any, plan: EntryPlan, keep: list[object]) -> None:
    if len(plan.filters) > lib.CD_MAX_FILTERS:
        raise ValueError(f"the anchor has {len(plan.filters)} seccomp filters, "
                         f"more than the {lib.CD_MAX_FILTERS} concurrentd can copy")
    c.n_filters = len(plan.filters)
    for i, f in enumerate(plan.filters):
        prog = ffi.new("char[]", f.program)
        keep.append(prog)
        c.filters[i].flags, c.filters[i].len, c.filters[i].insns = f.flags, f.length, prog


# -- environment: cd_plan.env_block, envp --

def _read_environ(anchor: _Anchor, environ: bool) -> dict[str, Any]:
    """``environ_block`` (/proc/<pid>/environ as it is, unless not ``environ``) and ``environ``."""
    block = _read_bytes(f"{anchor.proc}/environ") if environ else b""
    return {"environ_block": block, "environ": parse_environ(block)}


def _fill_environ(c: Any, plan: EntryPlan, keep: list[object]) -> None:
    env = ffi.new("char[]", plan.environ_block or b"\0")
    keep.append(env)
    c.env_block, c.env_len = env, len(plan.environ_block)
    # libc's environ: pointers into the same block, NULL-terminated
    offsets, off = [], 0
    for item in plan.environ_block.split(b"\0")[:-1] if plan.environ_block else []:
        if b"=" in item:
            offsets.append(off)
        off += len(item) + 1
    envp = ffi.new("char *[]", len(offsets) + 1)
    for i, o in enumerate(offsets):
        envp[i] = env + o
    keep.append(envp)
    c.envp = envp


# -- scheduling: cd_plan.nice, sched_*, mempolicy*, affinity, ioprio, timer_slack, thp --

def _read_scheduling(anchor: _Anchor) -> dict[str, Any]:
    """``nice``, ``sched_policy``, ``sched_priority``, ``mempolicy``, ``affinity``, ``ioprio``,
    ``timer_slack``, ``thp``."""
    pid = anchor.pid
    ioprio = lib.cd_ioprio_get(pid)
    if ioprio < 0:
        raise OSError(ffi.errno, f"ioprio_get({pid}): {os.strerror(ffi.errno)}")
    if ioprio >> 13 == 0:  # IOPRIO_CLASS_NONE: the only valid level to set is 0
        ioprio = 0
    return {
        "ioprio": ioprio,
        "nice": os.getpriority(os.PRIO_PROCESS, pid),
        "sched_policy": os.sched_getscheduler(pid),
        "sched_priority": os.sched_getparam(pid).sched_priority,
        "mempolicy": _mempolicy(anchor.proc),
        "affinity": frozenset(os.sched_getaffinity(pid)),
        "timer_slack": int(anchor.read("timerslack_ns")),
        "thp": parse_thp(anchor.state),
    }


def _fill_scheduling(c: Any, plan: EntryPlan, keep: list[object]) -> None:
    c.nice = plan.nice
    c.sched_policy, c.sched_priority = plan.sched_policy, plan.sched_priority
    c.mempolicy = -1 if plan.mempolicy is None else plan.mempolicy[0]
    # The nodemask is a bit per node, as a cpu_set_t is a bit per CPU.
    nodes = plan.mempolicy[1] if plan.mempolicy else ()
    ffi.memmove(c.mempolicy_nodes, affinity_mask(nodes, ffi.sizeof(c.mempolicy_nodes)),
                ffi.sizeof(c.mempolicy_nodes))
    mask = affinity_mask(plan.affinity)
    aff = ffi.new("char[]", mask)
    keep.append(aff)
    c.affinity, c.affinity_size = aff, len(mask)
    c.ioprio, c.timer_slack = plan.ioprio, plan.timer_slack
    c.thp = -1 if plan.thp is None else plan.thp


def _mempolicy(proc: str) -> tuple[int, frozenset[int]] | None:
    try:
        fd = os.open(f"{proc}/numa_maps", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:   # a kernel without CONFIG_NUMA: there is no policy to copy
        return None
    try:
        # The start of the first line (address, policy): the kernel then walks one mapping.
        return parse_mempolicy(os.read(fd, 256).decode(errors="replace"))
    finally:
        os.close(fd)


# -- limits and the rest of the process's attributes: cd_plan.rlimits, umask, oom_score_adj,
#    coredump_filter, personality --

def _read_limits(anchor: _Anchor) -> dict[str, Any]:
    """``rlimits``, ``umask``, ``oom_score_adj``, ``coredump_filter``, ``personality``."""
    return {
        "rlimits": parse_limits(anchor.read("limits")),
        "umask": int(anchor.status["Umask"], 8),
        "oom_score_adj": int(anchor.read("oom_score_adj")),
        "coredump_filter": _coredump_filter(anchor.proc),
        "personality": int(anchor.read("personality"), 16),
    }


def _fill_limits(c: Any, plan: EntryPlan, keep: list[object]) -> None:
    c.n_rlimits = len(plan.rlimits)
    for i, (r, (cur, mx)) in enumerate(sorted(plan.rlimits.items())):
        c.rlimits[i].resource = r
        c.rlimits[i].cur = cur & _U64  # RLIM_INFINITY is -1 in Python
        c.rlimits[i].max = mx & _U64
    c.umask, c.oom_score_adj = plan.umask, plan.oom_score_adj
    c.coredump_filter = -1 if plan.coredump_filter is None else plan.coredump_filter
    c.personality = plan.personality


def _coredump_filter(proc: str) -> int | None:
    try:
        return int(_read(f"{proc}/coredump_filter"), 16)
    except FileNotFoundError:   # a kernel without CONFIG_ELF_CORE
        return None


# ---------------------------------------------------------------------------------------------
# Helpers


def _read(path: str) -> str:
    return _read_bytes(path).decode()


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _readable(fd: int, timeout: float = 0) -> bool:
    import select
    return bool(select.select([fd], [], [], timeout)[0])


def _check_exe(pid: int, exe: str) -> None:
    """The anchor must already run ``exe``: before its exec, a unit's main process is systemd's
    fork, not yet confined (with Type=simple, systemd reports the unit started right after its
    fork: a worker copying that process could run as root)."""
    try:
        theirs = os.stat(f"/proc/{pid}/exe")
    except FileNotFoundError:
        raise AnchorGone(3, f"anchor pid {pid} is gone") from None
    ours = os.stat(exe)
    if (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino):
        return
    # A copy (RootDirectory= with the anchor copied in): compare contents.
    if theirs.st_size == ours.st_size:
        with open(f"/proc/{pid}/exe", "rb") as a, open(exe, "rb") as b:
            if a.read() == b.read():
                return
    raise ValueError(
        f"pid {pid} runs {os.readlink(f'/proc/{pid}/exe')!r}, not the anchor {exe!r}: the unit has "
        "not exec'd its main process yet (start it with Type=exec) or this is not its MainPID")


def environ_str(environ: Mapping[bytes, bytes]) -> dict[str, str]:
    return {os.fsdecode(k): os.fsdecode(v) for k, v in environ.items()}

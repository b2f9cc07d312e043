"""Enter a unit from a freshly forked worker: the typed face of cd_enter() (csrc/enter.c).

    parent                                   child (after os.fork)
    ------                                   ---------------------
    plan = EntryPlan.from_pid(main_pid)      enter(plan)
    pid = os.fork()  ─────────────────────▶    os.environ := the anchor's   (Python, no syscalls
                                               cd_enter(plan)                 that switch anything)
                                                 cgroups → rlimits… → setns → root → creds
                                                 → no_new_privs → close fds → seccomp
                                               user code runs confined, or EnterError

fork_and_enter() does the fork and reports a failed entry to the parent as EnterError, like
subprocess does for a failed exec: the child writes (step, arg, errno) to a pipe and exits with
ENTER_FAILED_EXIT_STATUS; nothing is pickled or allocated on that path.
"""

from __future__ import annotations

import errno
import os
import struct
import sys

from .._core import ffi, lib
from .._namespaces import NAMES as NAMESPACE_NAMES
from .plan import EntryPlan, environ_str

#: Exit status of a worker whose entry failed. Outside the shell's 126-165 and systemd's 200-243.
ENTER_FAILED_EXIT_STATUS = 197


def _enum_names(enum: str, prefix: str) -> dict[int, str]:
    """value -> lower-case name, without ``prefix``, of each enumerator of csrc/enter.h's ``enum``:
    the C core reports a failure by these values, which nothing else spells out."""
    elements = sorted(ffi.typeof(f"enum {enum}").elements.items())
    return {v: n[len(prefix):].lower() for v, n in elements if n.startswith(prefix)}


_STEP_NAMES = _enum_names("cd_step", "CD_STEP_")
_VERIFY_NAMES = _enum_names("cd_verify", "CD_VERIFY_")
_ROOT_NAMES = {lib.CD_ROOT_FCHDIR_ROOT: "fchdir(root)", lib.CD_ROOT_CHROOT: "chroot",
               lib.CD_ROOT_FCHDIR_CWD: "fchdir(cwd)"}
_RECORD = struct.Struct("=iii")

# Buffers the worker's /proc/self/environ points into (PR_SET_MM_ENV_*): never to be freed.
_KEEPALIVE: list[list[object]] = []


class EnterError(Exception):
    """Entering a unit failed; no user code ran in the worker.

    Attributes:
        step: the step that failed, e.g. "setns(net)", "cgroup(/sys/fs/cgroup/memory/.../cgroup.procs)".
        errno: the errno the kernel returned, or 0 when a value read back differed from the plan.
    """

    #: (step, arg, errno) as cd_enter() reported them, set by enter_error() (read with getattr)
    _raw: tuple[int, int, int]

    def __init__(self, step: str, errno: int, detail: str | None = None):
        self.step, self.errno = step, errno
        self.detail = detail or (os.strerror(errno) if errno else
                                 "the kernel reports another value than the plan's")
        super().__init__(f"{step}: {self.detail}")

    def __reduce__(self) -> tuple[type[EnterError], tuple[str, int, str]]:
        return (EnterError, (self.step, self.errno, self.detail))


def step_name(plan: EntryPlan, step: int, arg: int) -> str:
    name = _STEP_NAMES.get(step, f"step{step}")
    if step == lib.CD_STEP_SETNS:
        return f"setns({NAMESPACE_NAMES.get(arg, arg)})"
    if step == lib.CD_STEP_CGROUP and 0 <= arg < len(plan.cgroup_procs):
        return f"cgroup({plan.cgroup_procs[arg]})"
    if step == lib.CD_STEP_ROOT:
        return _ROOT_NAMES.get(arg, name)
    if step == lib.CD_STEP_VERIFY:
        return f"verify({_VERIFY_NAMES.get(arg, arg)})"
    if step in (lib.CD_STEP_RLIMIT, lib.CD_STEP_BOUNDING, lib.CD_STEP_AMBIENT, lib.CD_STEP_SECCOMP):
        return f"{name}({arg})"
    return name


def enter_error(plan: EntryPlan, step: int, arg: int, err: int) -> EnterError:
    """The EnterError for a (step, arg, errno) record, as cd_enter() reports a failure."""
    if step == lib.CD_STEP_ANCHOR and err == errno.ESRCH:
        e = anchor_exited(plan.anchor_pid)
    else:
        e = EnterError(step_name(plan, step, arg), err)
    e._raw = (step, arg, err)
    return e


def anchor_exited(pid: int) -> EnterError:
    """The EnterError for a unit whose main process (the anchor) has exited."""
    return EnterError("anchor", errno.ESRCH, f"the unit's main process (anchor pid {pid or '?'}) "
                                             "has exited: the unit is gone, start a new one")


def enter(plan: EntryPlan, *, timing: bool = False, seccomp: bool = True,
          sched_reset: bool = True) -> dict[str, int] | None:
    """Make the calling process a process of the plan's unit. Call it in the child, right after
    os.fork(), before anything else.

    Args:
        plan: built in the parent by EntryPlan.from_pid (not closed).
        timing: also return the nanoseconds each step took.
        seccomp: False leaves out the last step, the unit's seccomp filters: the caller is then
            not confined as the unit until it (or each child it forks) calls install_filters(plan).
        sched_reset: False takes the unit's scheduling policy without its reset-on-fork flag
            (CPUSchedulingResetOnFork=), which would give every fork of the caller the default
            policy: each child it forks then calls add_sched_reset(plan).

    Returns:
        None, or with ``timing`` a dict step name -> ns.

    Raises:
        RuntimeError: called in the process that built the plan (it would confine the parent).
        EnterError: a step failed; the process is half-confined and must exit
            (os._exit(ENTER_FAILED_EXIT_STATUS)).
    """
    if plan.owner_pid == os.getpid():
        raise RuntimeError("enter(plan) must be called in a worker forked after the plan was "
                           "built, not in the process that built it: it would confine that one")
    if plan.closed:
        raise ValueError("the plan is closed: build a new one with EntryPlan.from_pid()")
    _check_complete(plan)
    # The anchor's environment for Python. libc's environ and /proc/self/environ are pointed at
    # the plan's block by the C call. os.environ's mapping is replaced directly: clear() + update()
    # would call unsetenv/setenv for every variable (~300 us after a fork, copy-on-write faults).
    data = getattr(os.environ, "_data", None)
    if isinstance(data, dict) and all(isinstance(k, bytes) for k in data):
        _scrub_values(data)
        data.clear()
        data.update(plan.environ)  # CPython's os._Environ on POSIX keeps bytes: fsencode'd keys
    else:  # pragma: no cover -- another implementation: the slow, public way
        os.environ.clear()
        os.environ.update(environ_str(plan.environ))
    c = plan._c
    c.timing = int(timing)
    c.defer_seccomp = int(not seccomp)
    c.defer_sched_reset = int(not sched_reset)
    r = ffi.new("struct cd_enter_result *")
    _KEEPALIVE.append(plan._keep)
    rc = lib.cd_enter(c, r)
    plan._forget()  # the fds are closed in C, success or not
    if rc != 0:
        raise enter_error(plan, r.step, r.arg, r.err)
    if timing:
        return {_STEP_NAMES.get(i, str(i)): r.step_ns[i] for i in range(lib.CD_NSTEPS)
                if r.step_ns[i]}
    return None


#: where a bytes object's characters start (CPython's PyBytesObject.ob_sval)
_BYTES_DATA = bytes.__basicsize__ - 1


def _scrub_values(data: dict[bytes, bytes]) -> None:
    """Zeroes the owner's environment values in place before they are dropped: freed, their
    bytes would stay readable in the worker's memory (secrets in the environment, typically).
    Only values nothing else refers to are touched (a shared object is someone else's)."""
    for key in list(data):
        value = data[key]
        if type(value) is bytes and len(value) > 1 and sys.getrefcount(value) <= 3:
            lib.memset(ffi.cast("void *", id(value) + _BYTES_DATA), 0, len(value))
        del value


def _check_complete(plan: EntryPlan) -> None:
    if not plan.filters_read:
        raise ValueError("this plan was read without the anchor's seccomp filters "
                         "(EntryPlan.from_pid(..., seccomp=False)): it describes the unit but "
                         "cannot confine a process in it")


def add_sched_reset(plan: EntryPlan) -> None:
    """The part enter(plan, sched_reset=False) left out: the reset-on-fork flag of the unit's
    scheduling policy, on the calling process, a fork of the one that entered. Setting the flag
    needs no privilege; do it before install_filters(plan), which may forbid the call.

    Raises:
        EnterError: ``sched`` when the kernel refused; the process must exit.
    """
    if plan.sched_resets_on_fork:
        try:
            os.sched_setscheduler(0, plan.sched_policy, os.sched_param(plan.sched_priority))
        except OSError as e:
            raise EnterError("sched", e.errno or 0, "setting the unit's reset-on-fork flag: "
                                               f"{e.strerror}") from None


def install_filters(plan: EntryPlan) -> None:
    """The step enter(plan, seccomp=False) left out: stack the unit's seccomp filters on the
    calling process, which entered (itself, or its parent) with that plan.

    Raises:
        EnterError: ``seccomp(i)`` when the kernel refused filter i; the process must exit.
    """
    _check_complete(plan)
    r = ffi.new("struct cd_enter_result *")
    if lib.cd_install_filters(plan._c, r) != 0:
        raise enter_error(plan, r.step, r.arg, r.err)


def filters_let_admin_go(plan: EntryPlan) -> bool:
    """For a process that entered with seccomp=False and holds CAP_SYS_ADMIN for the filters
    (plan.needs_sys_admin_for_filters): whether a fork of it, once filtered, can still drop the
    capability (capset), i.e. whether the unit's filters allow capset. Forks a trial child."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            r = ffi.new("struct cd_enter_result *")
            code = 0 if lib.cd_install_filters(plan._c, r) == 0 else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def release_admin(plan: EntryPlan) -> None:
    """In a process that entered with seccomp=False and holds CAP_SYS_ADMIN for the filters:
    take no_new_privs instead, drop the capability now, and load the filters without it from
    here on (in this process or its forks). Stricter than the unit's main process (a setuid
    program gains nothing in it), never looser: for filters that forbid capset.

    Raises:
        EnterError: ``no_new_privs`` or ``drop_admin`` refused; the process must exit.
    """
    r = ffi.new("struct cd_enter_result *")
    if lib.cd_release_admin(plan._c, r) != 0:
        raise enter_error(plan, r.step, r.arg, r.err)
    plan._c.hold_sys_admin = 0
    plan.no_new_privs_added = True


def fork_and_enter(plan: EntryPlan) -> int:
    """Fork a worker that enters the plan's unit; like os.fork(): 0 in the worker, its pid in
    the parent.

    Raises:
        EnterError: in the parent, when the worker's entry failed (the worker has exited with
            ENTER_FAILED_EXIT_STATUS and was reaped).
    """
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            enter(plan)
        except EnterError as e:
            step, arg, err = getattr(e, "_raw", (-1, 0, e.errno))
            _write_record(w, step, arg, err)
            os._exit(ENTER_FAILED_EXIT_STATUS)
        except BaseException:
            _write_record(w, -1, 0, 0)
            os._exit(ENTER_FAILED_EXIT_STATUS)
        os.close(w)
        return 0
    os.close(w)
    with open(r, "rb", closefd=True) as f:
        data = f.read(_RECORD.size)
    if data:
        os.waitpid(pid, 0)
        step, arg, err = _RECORD.unpack(data)
        if step < 0:
            raise EnterError("enter", err, "the worker failed before or around entry")
        raise enter_error(plan, step, arg, err)
    return pid


def _write_record(fd: int, step: int, arg: int, err: int) -> None:
    try:
        os.write(fd, _RECORD.pack(step, arg, err))
    except OSError:
        pass

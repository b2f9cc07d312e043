"""A throwaway systemd, booted as PID 1 of its own namespaces over a copy-on-write view of /.

Processes, from the host's view::

    caller (Box)                        host pid namespace, caller's cgroups
      └─ keeper (waits, then exits)     box's sub-cgroups; unshare()d the box's namespaces
           └─ systemd (box PID 1)       new pid/mnt/uts/ipc/cgroup namespaces, pivot_root'ed
      └─ enterer ─ CMD                  Box.run(): setns into the box, chroot, fork, exec
                                        (CMD in a scope unit of the box's systemd)

Teardown kills the box's PID 1; the kernel then kills every process of its pid namespace, and the
keeper's exit tells the caller that all of them are gone. The box's mounts live only in its mount
namespace and vanish with it; the sub-cgroups are removed last.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import sys
import time
from typing import Sequence

from .. import _sys
from .._mountinfo import mount_containing, read_hierarchies, read_mountinfo
from .._namespaces import FLAGS as NAMESPACE_FLAGS
from ._boot import BootSpec, boot
from ._cgroups import SubCgroups
from ._errors import TestbedError
from ._hazards import Rule, first_conflict, read_boot_rules

STATE_ROOT = "/run/concurrentd-testbed"

# setns order: the cgroup namespace before the mount namespace (joining mnt changes what paths
# mean, but namespace fds are opened beforehand, so the order among the rest is free); pid applies
# to children only, hence the second fork in run().
_NAMESPACES = tuple((name, NAMESPACE_FLAGS[name])
                    for name in ("cgroup", "ipc", "uts", "net", "pid", "mnt"))


def systemd_is_pid1() -> bool:
    """True where PID 1 is systemd (sd_booted()'s test, plus PID 1's own name)."""
    try:
        with open("/proc/1/comm") as f:
            comm = f.read().strip()
    except OSError:
        return False
    return comm == "systemd" and os.path.isdir("/run/systemd/system")


# Why the box shows a host directory read-write, and how to avoid it when that is refused.
WORKING_DIRECTORY = "the working directory"
ASKED = "asked to bind"
PYTHON_MOUNT = "the mount Python or its sys.path lives on"
_FIXES = {
    WORKING_DIRECTORY: "Run the testbed from a directory that no boot rule reaches, or from one "
                       "inside /tmp or /var/tmp (cd elsewhere).",
    ASKED: "Bind a directory that no boot rule reaches instead (a subdirectory of it that none "
           "reaches, one inside /tmp or /var/tmp, or one elsewhere).",
    PYTHON_MOUNT: "Run the testbed with a Python installed on another file system.",
}


def _is_within(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def bind_reasons(extra: Sequence[str] = ()) -> dict[str, str]:
    """Host paths the box shows read-write, each with why: the working directory, the given
    paths, and every non-root mount under which Python or its sys.path live (the overlay shows
    only the root file system). Ordered parents first.

    A given path is shown alone, not with the mount it lives on: with /home a mount of its own,
    running from /home/alice must not show all of /home, which the box's boot may change."""
    mounts = read_mountinfo()
    wanted = {os.getcwd(): WORKING_DIRECTORY, **{p: ASKED for p in extra}}
    needed = [sys.prefix, sys.base_prefix, sys.executable, *filter(None, sys.path)]
    reasons: dict[str, str] = {}
    for p, why in wanted.items():
        reasons.setdefault(os.path.realpath(p), why)
    for p in [os.path.realpath(p) for p in needed]:
        if any(_is_within(p, shown) for shown in reasons):
            continue   # e.g. `python -m` puts the working directory on sys.path
        mp = mount_containing(mounts, p).mount_point
        if mp != "/" and not mp.startswith(("/proc", "/sys", "/dev", "/run", "/tmp")):
            reasons.setdefault(mp, PYTHON_MOUNT)
    # a bind of a parent hides none of its children's binds only if made first: sort by depth
    unique = sorted((b for b in reasons if os.path.isdir(b) and b != "/"),
                    key=lambda b: b.count("/"))
    return {b: reasons[b] for b in unique if not any(b != o and _is_within(b, o) for o in unique)}


# Where a box shows a directory that lies in /tmp or /var/tmp and that its boot would change there:
# a path no boot rule reaches (checked all the same). The box's /tmp and /var/tmp are tmpfs of its
# own, so once it has booted the directory's own path is free, and holds a symlink to it.
ELSEWHERE = "/concurrentd-testbed"
MOVABLE_FROM = ("/tmp", "/var/tmp")


def _movable(path: str) -> bool:
    return any(path != d and _is_within(path, d) for d in MOVABLE_FROM)


def _place_one(path: str, why: str, rules: list[Rule]) -> str:
    """Where the box mounts the host directory `path`, or TestbedError naming the rule."""
    reason = first_conflict(path, rules)
    if reason is None:
        return path
    if _movable(path) and first_conflict(ELSEWHERE + path, rules) is None:
        return ELSEWHERE + path
    raise TestbedError(f"refusing to show {path} ({why}) read-write in the box: the box's boot "
                       f"would change it on the host, as {reason}. {_FIXES[why]}")


def place(binds: dict[str, str], rules: list[Rule]) -> dict[str, str]:
    """Maps each host directory to show (with why) to where the box mounts it: its own path,
    unless the box's boot would change it there (`D /tmp` empties what /tmp holds). Then one
    inside /tmp or /var/tmp is mounted under ELSEWHERE, so that a clone under /tmp can run its
    tests and keep its files, and any other is refused (TestbedError). Ordered parents first, as
    the box must mount them."""
    placed = {path: _place_one(path, why, rules) for path, why in binds.items()}
    return dict(sorted(placed.items(), key=lambda item: item[1].count("/")))


class Box:
    """A running throwaway systemd. Use as a context manager; stop() is idempotent.

    Args:
        binds: extra host directories to show read-write in the box (the working directory,
            and the mounts holding Python, are always there), each at the same path, or, inside
            /tmp or /var/tmp where the box's boot would change it, under ELSEWHERE with a symlink
            at its own path (``path_in_box`` says where).
        boot_timeout: seconds to wait for systemd to report the system running.

    Raises:
        TestbedError: a directory to show is one the box's boot would change on the host (a
            tmpfiles.d rule, e.g. `D /tmp`, or a boot service writes at, in or above it), and
            it cannot be shown elsewhere (it is not inside /tmp or /var/tmp).
    """

    def __init__(self, binds: Sequence[str] = (), boot_timeout: float = 20.0):
        if os.geteuid() != 0:
            raise PermissionError("the testbed must run as root: it mounts file systems and "
                                  "creates namespaces and cgroups (try: sudo python -m "
                                  "concurrentd.testbed -- …)")
        if not os.path.exists("/lib/systemd/systemd"):
            raise TestbedError("the testbed needs systemd installed (/lib/systemd/systemd is "
                               "missing): apt-get install systemd dbus")
        self.binds = place(bind_reasons(binds), read_boot_rules())   # host path: path in box
        self.name = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.boot_timeout = boot_timeout
        self.pid1: int | None = None       # the box's PID 1 (systemd), as the host sees it
        self._keeper: int | None = None
        self._enterers: set[int] = set()   # run()'s children not yet reaped
        self._state_dir = os.path.join(STATE_ROOT, self.name)
        self._cgroups = SubCgroups(read_hierarchies(), f"concurrentd-testbed-{self.name}")

    # -- life cycle ------------------------------------------------------------------------------
    def __enter__(self) -> "Box":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        try:
            self._start()
            self._wait_running()
            self._link_moved()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        os.makedirs(self._state_dir, mode=0o700)
        self._cgroups.create()
        spec = BootSpec(self._state_dir, read_hierarchies(), self.binds)
        r, w = os.pipe()   # both O_CLOEXEC: EOF on `r` once systemd has exec'd (or the box died)
        keeper = os.fork()
        if keeper == 0:
            os.close(r)
            self._keeper_main(spec, w)
        os.close(w)
        self._keeper = keeper
        with os.fdopen(r, "rb") as pipe:
            report = pipe.read()
        if not report.startswith(b"pid "):
            raise TestbedError(f"booting the box failed: {report.decode(errors='replace') or 'the keeper died'}")
        head, _, error = report.partition(b"\n")
        self.pid1 = int(head.split()[1])
        if error:
            raise TestbedError(f"booting the box failed: {error.decode(errors='replace')}")

    def _keeper_main(self, spec: BootSpec, w: int) -> None:
        """The keeper: joins the sub-cgroups, makes the namespaces, forks PID 1, waits for it."""
        status = 1
        try:
            # if the caller dies without tearing down, the keeper dies, and with it (below) systemd
            _sys.set_parent_death_signal(signal.SIGKILL)
            self._cgroups.join()
            _sys.unshare(_sys.CLONE_NEWPID | _sys.CLONE_NEWNS | _sys.CLONE_NEWUTS |
                         _sys.CLONE_NEWIPC | _sys.CLONE_NEWCGROUP)
            pid1 = os.fork()
            if pid1 == 0:
                try:
                    _sys.set_parent_death_signal(signal.SIGKILL)
                    boot(spec)
                except BaseException as e:   # noqa: BLE001 - reported to the caller, then exit
                    os.write(w, f"{type(e).__name__}: {e}".encode())
                finally:
                    os._exit(1)
            os.write(w, f"pid {pid1}\n".encode())
            os.close(w)
            _, st = os.waitpid(pid1, 0)
            status = os.waitstatus_to_exitcode(st) & 0xFF
        except BaseException as e:   # noqa: BLE001
            try:
                os.write(w, f"keeper: {type(e).__name__}: {e}".encode())
            except OSError:
                pass
        finally:
            os._exit(status)

    def _wait_running(self) -> None:
        deadline = time.monotonic() + self.boot_timeout
        bus = f"/proc/{self.pid1}/root/run/systemd/private"
        while not os.path.exists(bus):
            if time.monotonic() > deadline or not self._alive():
                raise TestbedError("the box's systemd did not come up (no /run/systemd/private in "
                                   f"{self.boot_timeout:.0f} s)")
            time.sleep(0.01)
        left = max(1.0, deadline - time.monotonic())
        out = self.check_output(["timeout", str(int(left) + 1), "systemctl", "is-system-running",
                                 "--wait"], allow_fail=True, scope=False).strip()
        if out != "running":
            failed = self.check_output(["systemctl", "list-units", "--failed", "--plain",
                                        "--no-legend"], allow_fail=True, scope=False)
            raise TestbedError(f"the box's systemd is {out or 'not answering'}, not running; "
                               f"failed units: {failed.strip() or 'none'}")

    def _link_moved(self) -> None:
        """Puts a symlink at the own path of each directory shown elsewhere, so that the paths
        into it mean in the box what they mean on the host. Only once booted: the boot empties
        the box's /tmp."""
        for path, target in self.binds.items():
            if target != path:
                self.check_output(["mkdir", "-p", os.path.dirname(path)], scope=False)
                self.check_output(["ln", "-sT", target, path], scope=False)

    def path_in_box(self, path: str) -> str:
        """Where the host path `path` (absolute, resolved) is in the box: the same path, unless
        it lies in a directory shown elsewhere (under ELSEWHERE)."""
        for host, target in self.binds.items():
            if _is_within(path, host):
                return target + path[len(host):]
        return path

    def _alive(self) -> bool:
        return self.pid1 is not None and os.path.exists(f"/proc/{self.pid1}")

    def stop(self) -> None:
        """Kills the box and removes all it left: processes, mounts, cgroups, state directory."""
        if self.pid1 is not None:
            try:
                os.kill(self.pid1, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._keeper is not None:
            if self.pid1 is None:
                os.kill(self._keeper, signal.SIGKILL)
            os.waitpid(self._keeper, 0)   # the keeper exits once PID 1 and its namespace are gone
            self._keeper = None
        for pid in list(self._enterers):   # their commands died with the box's pid namespace
            os.waitpid(pid, 0)
            self._enterers.discard(pid)
        self.pid1 = None
        left = self._cgroups.remove()
        if os.path.isdir(self._state_dir):
            os.rmdir(self._state_dir)
            try:
                os.rmdir(STATE_ROOT)
            except OSError:
                pass
        if left:
            raise TestbedError("could not remove the box's cgroups: " + "; ".join(left))

    # -- running commands inside -----------------------------------------------------------------
    def run(self, argv: Sequence[str], *, env: dict[str, str] | None = None,
            stdout: int | None = None, scope: bool = True) -> int:
        """Runs argv in the box (all its namespaces, its root, as root); returns its exit status
        (128+N for a signal N, 127 when the command does not exist).

        With ``scope`` (the default) argv runs in a transient scope unit of the box's systemd, as
        a process of a login session or a service does on a real host: in the box's cgroups, not
        in the caller's above them. Where a process sits matters beyond tidiness: a process
        outside the box shares no cpu cgroup with the units it starts, and the scheduler then
        treats its pipe partners as another group's tasks (7 % of a pool's throughput, measured,
        on a host with cgroup v1 hierarchies).
        """
        if not self._alive():
            raise TestbedError("the box is not running")
        env = dict(os.environ if env is None else env)
        env["CONCURRENTD_TESTBED_BOX"] = self.name
        pid = os.fork()
        if pid == 0:
            try:
                if stdout is not None:
                    os.dup2(stdout, 1)
                self._enter_and_exec(list(argv), env, scope)
            finally:
                os._exit(126)
        self._enterers.add(pid)
        _, st = os.waitpid(pid, 0)   # interrupted by a signal that raises: stop() reaps it
        self._enterers.discard(pid)
        code = os.waitstatus_to_exitcode(st)
        return 128 - code if code < 0 else code

    def check_output(self, argv: Sequence[str], allow_fail: bool = False, scope: bool = True) -> str:
        r, w = os.pipe()
        try:
            code = self.run(argv, stdout=w, scope=scope)
        finally:
            os.close(w)
        with os.fdopen(r) as f:
            out = f.read()
        if code != 0 and not allow_fail:
            raise TestbedError(f"{' '.join(argv)} exited with {code} in the box")
        return out

    def _enter_and_exec(self, argv: list[str], env: dict[str, str], scope: bool) -> None:
        """In a fresh child: join the box, fork once more (pid namespaces apply to children),
        exec (through ``systemd-run --scope`` with ``scope``). Never returns."""
        cwd = self.path_in_box(os.getcwd())
        # Into the box's cgroups: its root in each v1 hierarchy (where systemd leaves a process
        # of a unit that uses no controller of that hierarchy), then, with `scope`, systemd-run
        # moves CMD into a scope of its own in the hierarchies systemd manages.
        self._cgroups.join(v1_only=True)
        fds = [(os.open(f"/proc/{self.pid1}/ns/{ns}", os.O_RDONLY), flag) for ns, flag in _NAMESPACES]
        root = os.open(f"/proc/{self.pid1}/root", os.O_RDONLY | os.O_DIRECTORY)
        for fd, flag in fds:
            _sys.setns(fd, flag)
            os.close(fd)
        os.fchdir(root)
        os.chroot(".")
        os.close(root)
        try:
            os.chdir(cwd)
        except OSError:
            os.chdir("/")
        child = os.fork()
        if child == 0:
            try:
                if scope:
                    # systemd-run reports a missing command as a failure of its own (status 1)
                    if shutil.which(argv[0], path=env.get("PATH", os.defpath)) is None:
                        raise FileNotFoundError(argv[0])
                    argv = ["systemd-run", "--scope", "--quiet", "--collect", "--", *argv]
                os.execvpe(argv[0], argv, env)
            except FileNotFoundError:
                print(f"concurrentd.testbed: {argv[0]}: command not found", file=sys.stderr)
                os._exit(127)
            except OSError as e:
                print(f"concurrentd.testbed: {argv[0]}: {e.strerror}", file=sys.stderr)
                os._exit(126)
        _, st = os.waitpid(child, 0)
        code = os.waitstatus_to_exitcode(st)
        os._exit(128 - code if code < 0 else code)

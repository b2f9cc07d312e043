"""Helpers of the entry tests: start a real transient unit, fork a worker into it, read the kernel.

Units are started with systemd-run (the D-Bus layer, concurrentd.systemd, is tested elsewhere) and
Type=exec, so MainPID has exec'd and systemd has applied the confinement. Everything the worker
needs is imported here, before any fork: once entered, it runs as nobody and cannot import from
root's pyenv (mode 700).
"""

from __future__ import annotations

import contextlib
import ctypes
import encodings.idna  # noqa: F401 -- socket host names need it; not importable once entered
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import uuid

import pytest

from concurrentd._core import lib
from concurrentd._entry import EnterError, EntryPlan, anchor_argv, anchor_path, enter, get_filters

HAVE_SYSTEMD = os.path.isdir("/run/systemd/system")
needs_systemd = pytest.mark.skipif(
    not HAVE_SYSTEMD, reason="needs a running systemd (run inside the testbed: "
                             "python -m concurrentd.testbed -- pytest, or sdbox.sh)")

_libc = ctypes.CDLL(None, use_errno=True)

#: Status fields compared between anchor and worker.
STATUS_FIELDS = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
                 "NoNewPrivs", "Seccomp", "Seccomp_filters", "Umask", "Cpus_allowed_list",
                 "Speculation_Store_Bypass")


def systemd_version() -> int:
    """The running systemd's version (252 in the box, 257 in the VM)."""
    out = subprocess.run(["systemctl", "--version"], capture_output=True, text=True).stdout
    return int(out.split()[1])


def _systemctl(*args: str) -> str:
    return subprocess.run(["systemctl", *args], check=True, capture_output=True,
                          text=True).stdout.strip()


@contextlib.contextmanager
def transient_unit(properties: list[str], argv: list[str] | None = None):
    """A running transient service; yields (unit name, MainPID). Stopped on exit."""
    name = f"entB-test-{uuid.uuid4().hex[:12]}.service"
    argv = argv or anchor_argv(os.getpid(), path=public_anchor())
    cmd = ["systemd-run", "--quiet", f"--unit={name}", "-p", "Type=exec",
           *[a for p in properties for a in ("-p", p)], "--", *argv]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    try:
        pid = int(_systemctl("show", "-p", "MainPID", "--value", name))
        assert pid > 0, f"{name} has no main process: {_systemctl('status', name)}"
        yield name, pid
    finally:
        subprocess.run(["systemctl", "stop", name], capture_output=True)
        subprocess.run(["systemctl", "reset-failed", name], capture_output=True)


def public_anchor() -> str:
    """The anchor at a path every user may execute (the checkout may not be)."""
    dst = "/run/concurrentd-entry-test/anchor"
    if not os.path.exists(dst):
        os.makedirs(os.path.dirname(dst), mode=0o755, exist_ok=True)
        shutil.copy2(anchor_path(), dst)
        os.chmod(dst, 0o755)
    return dst


# ---------------------------------------------------------------------------------------------
# What the kernel reports about a process, read from outside (by root, the same view for both)


def _read(path: str, binary: bool = False):
    with open(path, "rb") as f:
        data = f.read()
    return data if binary else data.decode()


def proc_snapshot(pid: int) -> dict[str, object]:
    """Attributes of process ``pid`` as the kernel reports them, from /proc and syscalls."""
    P = f"/proc/{pid}"
    snap: dict[str, object] = {}
    status = dict(line.split(":", 1) for line in _read(f"{P}/status").splitlines() if ":" in line)
    for k in STATUS_FIELDS:
        snap[f"status.{k}"] = status.get(k, "").strip()
    snap["limits"] = _read(f"{P}/limits")
    snap["cgroup"] = _read(f"{P}/cgroup")
    for ns in sorted(os.listdir(f"{P}/ns")):
        snap[f"ns.{ns}"] = os.readlink(f"{P}/ns/{ns}")
    for d in ("root", "cwd"):
        st = os.stat(f"{P}/{d}")
        snap[d] = (st.st_dev, st.st_ino)
    snap["environ"] = sorted(_read(f"{P}/environ", True).decode(errors="replace").split("\0"))
    snap["nice"] = os.getpriority(os.PRIO_PROCESS, pid)
    snap["ioprio"] = lib.cd_ioprio_get(pid)
    snap["affinity"] = sorted(os.sched_getaffinity(pid))
    snap["personality"] = _read(f"{P}/personality").strip()
    snap["oom_score_adj"] = _read(f"{P}/oom_score_adj").strip()
    snap["coredump_filter"] = _read(f"{P}/coredump_filter").strip()
    snap["timerslack_ns"] = _read(f"{P}/timerslack_ns").strip()
    snap["sched"] = os.sched_getscheduler(pid)   # SCHED_RESET_ON_FORK included
    snap["sched_priority"] = os.sched_getparam(pid).sched_priority
    numa = [line.split()[1] for line in _read(f"{P}/numa_maps").splitlines() if " stack" in line]
    snap["numa_policy"] = numa[0] if numa else None   # the task's policy (NUMAPolicy=)
    snap["seccomp_programs"] = [(f.flags, f.program.hex()) for f in get_filters(pid)]
    snap["proc_owner"] = os.stat(P).st_uid  # dumpable
    return snap


def diff_table(anchor: dict, worker: dict) -> str:
    """The attributes that differ, as a table (empty string when none)."""
    def short(v: object) -> str:
        return (repr(v)[:300] + "…") if len(repr(v)) > 300 else repr(v)

    rows = []
    for k in sorted(set(anchor) | set(worker)):
        a, w = anchor.get(k), worker.get(k)
        if a != w:
            rows.append(f"  {k:<28} anchor={short(a)}\n  {'':<28} worker={short(w)}")
    return "\n".join(rows)


# ---------------------------------------------------------------------------------------------
# Workers


def open_fds() -> list[int]:
    """The fds open in this process (without the one that listed them)."""
    def is_open(fd: int) -> bool:
        try:
            os.fstat(fd)
            return True
        except OSError:
            return False
    return sorted(fd for fd in map(int, os.listdir("/proc/self/fd")) if is_open(fd))


def self_report() -> dict:
    """Run in an entered worker: what it sees and may do (behaviour, not just attributes)."""
    rep: dict[str, object] = {"fds": open_fds(), "uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(),
                              "groups": sorted(os.getgroups()), "cwd": os.getcwd(),
                              "environ": dict(os.environ)}
    old = os.umask(0)
    os.umask(old)
    rep["umask"] = old
    rep["tmp"] = sorted(os.listdir("/tmp"))
    try:
        with open("/usr/concurrentd-entry-probe", "w"):
            pass
        rep["write_usr"] = "ok"
    except OSError as e:
        rep["write_usr"] = errno.errorcode.get(e.errno, str(e.errno))
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(1)
        with s:
            s.connect(("1.1.1.1", 53))
        rep["connect_out"] = "ok"
    except OSError as e:
        rep["connect_out"] = errno.errorcode.get(e.errno, str(e))
    try:
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        c = socket.create_connection(srv.getsockname(), timeout=1)
        c.close()
        srv.close()
        rep["connect_loopback"] = "ok"
    except OSError as e:
        rep["connect_loopback"] = errno.errorcode.get(e.errno, str(e))
    # A forbidden system call: @system-service excludes swapon/reboot; systemd's default action
    # kills with SIGSYS, so try it in a child of the worker.
    child = os.fork()
    if child == 0:
        _libc.swapon(b"/nonexistent", 0)
        os._exit(100 + ctypes.get_errno() % 100)
    _, st = os.waitpid(child, 0)
    rep["swapon"] = (f"signal {signal.Signals(os.WTERMSIG(st)).name}" if os.WIFSIGNALED(st)
                     else f"exit {os.WEXITSTATUS(st)}")
    if os.path.exists("/marker"):
        rep["marker"] = _read("/marker")
    return rep


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


class Worker:
    """A forked worker that entered ``plan`` (or not: ``do_enter=False``), reported itself over a
    pipe, and waits for release() so that the parent can read its /proc from outside."""

    def __init__(self, plan: EntryPlan | None, do_enter: bool = True, report=self_report):
        r, w = os.pipe()
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            status = 0
            try:
                os.close(r)
                os.close(go_w)
                if do_enter:
                    enter(plan)
                out = {"ok": report()}
            except EnterError as e:
                out, status = {"enter_error": [e.step, e.errno, str(e)]}, 197
            except BaseException as e:  # noqa: BLE001 -- reported to the test
                out, status = {"exception": repr(e)}, 1
            try:
                _write_all(w, json.dumps(out).encode())
                os.close(w)
                os.read(go_r, 1)
            finally:
                os._exit(status)
        os.close(w)
        os.close(go_r)
        self.pid, self._go = pid, go_w
        self.report = json.loads(_read_all(r) or b"{}")
        os.close(r)
        self.status: int | None = None

    def release(self) -> int:
        if self.status is None:
            os.close(self._go)
            _, st = os.waitpid(self.pid, 0)
            self.status = os.waitstatus_to_exitcode(st)
        return self.status

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def fd_links() -> list[str]:
    """What this process's fds point at (readlink of /proc/self/fd/N), in fd order; an fd closed
    while it is listed (the listing's own) is left out. Also run in workers (fork mode)."""
    import os

    links = []
    for fd in sorted(os.listdir("/proc/self/fd"), key=int):
        try:
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:
            pass
    return links


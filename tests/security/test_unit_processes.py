"""Attacks on the unit's other processes and on what a worker holds: taking the zygote's or
another worker's fds (pidfd_getfd), writing their memory (/proc/<pid>/mem), ptrace; reading the
owner's terminal; fds beyond the worker's own channel.

The attacker is a worker (User=nobody, the same user as every process of the pool) or a process
of another unit running as that user, as an unrelated service would.
"""

from __future__ import annotations

import ctypes
import errno
import os
import subprocess
import sys
import textwrap
import time

import pytest

from concurrentd import TransientUnitPoolExecutor

T = 30
NOBODY = {"User": "nobody"}
SYS_PIDFD_OPEN, SYS_PIDFD_GETFD, PTRACE_ATTACH, PTRACE_DETACH = 434, 438, 16, 17


def reach(pids: list[int]) -> dict:
    """From inside a unit: every way a same-user process could take over ``pids``."""
    libc = ctypes.CDLL(None, use_errno=True)

    def outcome(rc: int) -> str:
        return "ok" if rc >= 0 else errno.errorcode[ctypes.get_errno()]

    report = {}
    for pid in pids:
        if pid == os.getpid():
            continue
        pidfd = libc.syscall(SYS_PIDFD_OPEN, pid, 0)
        got = [outcome(libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)) for fd in range(3, 12)] \
            if pidfd >= 0 else ["no pidfd"]
        try:
            with open(f"/proc/{pid}/mem", "r+b"):
                mem = "ok"
        except OSError as e:
            mem = errno.errorcode[e.errno]
        ptrace = outcome(libc.ptrace(PTRACE_ATTACH, pid, None, None))
        if ptrace == "ok":   # let it go on: the test reports, it does not hang
            os.waitpid(pid, os.WUNTRACED | 0x40000000)   # __WALL
            libc.ptrace(PTRACE_DETACH, pid, None, None)
        report[pid] = {"pidfd_getfd": sorted(set(got)), "mem": mem, "ptrace": ptrace}
    return report


def _family(pool) -> list[int]:
    zygote = pool._session.zygote.pid
    with open(f"/proc/{zygote}/task/{zygote}/children") as f:
        return [zygote, *map(int, f.read().split())]


def _assert_unreachable(report: dict) -> None:
    for pid, ways in report.items():
        assert "ok" not in ways["pidfd_getfd"], (pid, ways)
        assert ways["mem"] in ("EACCES", "EPERM") and ways["ptrace"] == "EPERM", (pid, ways)


@pytest.mark.parametrize("properties", [
    NOBODY,
    # the zygote stays unfiltered: each worker sets the reset-on-fork flag, then the filters
    {**NOBODY, "CPUSchedulingPolicy": "batch", "CPUSchedulingResetOnFork": True,
     "SystemCallFilter": "~sched_setscheduler"},
    # the filters would forbid the zygote's own loop: they go per worker
    {**NOBODY, "SystemCallFilter": "~clone clone3 fork vfork"},
], ids=["plain", "reset-on-fork", "no-fork-filter"])
def test_a_worker_cannot_take_over_the_zygote_or_another_worker(properties):
    with TransientUnitPoolExecutor(2, properties) as pool:
        [f.result(timeout=T) for f in [pool.submit(time.sleep, 0.3) for _ in range(2)]]
        targets = _family(pool)
        report = pool.submit(reach, targets).result(timeout=T)
    assert len(report) == len(targets) - 1   # all but the attacker itself
    _assert_unreachable(report)


def test_another_units_process_cannot_take_over_an_idle_pool():
    # An unrelated service as the same user: another pool's worker (the zygote of an idle pool
    # held the result pipe of every worker before).
    with TransientUnitPoolExecutor(1, NOBODY) as victim, \
            TransientUnitPoolExecutor(1, {**NOBODY, "PrivateTmp": True}) as attacker:
        victim.submit(abs, 1).result(timeout=T)
        report = attacker.submit(reach, _family(victim)).result(timeout=T)
    _assert_unreachable(report)


def test_a_subprocess_of_a_worker_holds_none_of_its_channel():
    # After exec, a process is dumpable again: the channel's fds must not reach it.
    with TransientUnitPoolExecutor(1, NOBODY) as pool:
        fds = pool.submit(subprocess.check_output, ["ls", "/proc/self/fd"], text=True
                          ).result(timeout=T)
    # ls's own: 0, 1 (its output pipe), 2, and the directory it lists
    assert len(fds.split()) <= 4, fds


def _fd_table() -> dict:
    table = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            table[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:   # the listing's own fd, closed since
            pass
    return table


def test_a_worker_holds_its_channel_dev_null_and_output_pipes_only():
    from test_entry_parity import KITCHEN_SINK

    properties = dict(setting.split("=", 1) for setting in KITCHEN_SINK)
    with TransientUnitPoolExecutor(1, properties) as pool:
        table = pool.submit(_fd_table).result(timeout=T)
        anchor_stdin = os.readlink(f"/proc/{pool.unit.main_pid}/fd/0")
    assert table[0] == anchor_stdin == "/dev/null", table
    assert table[1].startswith("pipe:") and table[2].startswith("pipe:"), table
    # beyond stdout and stderr (and the fds sys.stdout and sys.stderr write to, if others: the
    # same pipes), its call and result pipes: nothing else
    own = {fd: link for fd, link in table.items() if fd > 2 and link not in (table[1], table[2])}
    assert len(own) == 2 and all(link.startswith("pipe:") for link in own.values()), table


def test_a_worker_cannot_read_what_is_typed_at_the_owners_terminal():
    # The owner runs on a terminal and asks for a password while a task runs.
    master, slave = os.openpty()
    script = textwrap.dedent("""
        import json, os, select, time
        from concurrentd import TransientUnitPoolExecutor

        def read_stdin_for(seconds):
            got, deadline = b"", time.monotonic() + seconds
            while time.monotonic() < deadline:
                if select.select([0], [], [], 0.05)[0]:
                    chunk = os.read(0, 100)
                    if not chunk:
                        break
                    got += chunk
            return got

        with TransientUnitPoolExecutor(1, {"User": "nobody"}) as pool:
            f = pool.submit(read_stdin_for, 2.0)
            time.sleep(0.3)
            print("ready", flush=True)
            print(json.dumps(f.result().decode()), flush=True)
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdin=slave, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, start_new_session=True)
    os.close(slave)
    try:
        assert p.stdout.readline().strip() == b"ready", p.stderr.read()
        os.write(master, b"hunter2-password\n")
        out, err = p.communicate(timeout=T)
    finally:
        os.close(master)
    assert p.returncode == 0, err
    assert b"hunter2" not in out, out


def _view() -> dict:
    with open("/proc/self/mountinfo") as f:
        mounts = f.read()
    return {"mountinfo": mounts, "root": os.readlink("/proc/self/root"), "cwd": os.getcwd(),
            "stdin": os.readlink("/proc/self/fd/0")}


def test_a_workers_view_of_the_file_system_is_the_anchors():
    from test_entry_parity import KITCHEN_SINK

    properties = dict(setting.split("=", 1) for setting in KITCHEN_SINK)
    with TransientUnitPoolExecutor(1, properties) as pool:
        worker = pool.submit(_view).result(timeout=T)
        anchor = pool.unit.main_pid
        with open(f"/proc/{anchor}/mountinfo") as f:
            assert worker["mountinfo"] == f.read()
        assert worker["cwd"] == os.readlink(f"/proc/{anchor}/cwd")
        assert worker["stdin"] == os.readlink(f"/proc/{anchor}/fd/0") == "/dev/null"


def test_an_owner_started_without_stdout_never_copies_output_onto_its_own_sockets(tmp_path):
    # With fd 1 closed, the pool's root connection to systemd would be fd 1, and the copy of a
    # worker's print() would go there: D-Bus messages, written by the sandbox.
    script = tmp_path / "owner.py"
    script.write_text(textwrap.dedent("""
        import os, sys
        from concurrentd import TransientUnitPoolExecutor
        with TransientUnitPoolExecutor(1, {"PrivateTmp": True}) as pool:
            pool.submit(print, "from the worker").result()
            links = {fd: os.readlink(f"/proc/self/fd/{fd}") for fd in (0, 1, 2)}
        os.write(2, repr(links).encode())
    """))
    r = subprocess.run(["sh", "-c", f'exec "{sys.executable}" "{script}" >&- <&-'],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    links = eval(r.stderr.decode().strip().splitlines()[-1])   # noqa: S307 - our own repr
    assert links[0] == links[1] == "/dev/null", links


def ignore_eof():
    """Answers this task, then never leaves its loop: the call pipe's EOF is ignored."""
    from concurrentd import _protocol

    original = _protocol.read_frame

    def read_frame(fd):
        frame = original(fd)
        while frame is None:
            time.sleep(3600)
        return frame

    _protocol.read_frame = read_frame
    return "patched"


def test_a_worker_that_ignores_its_pools_shutdown_is_killed():
    import threading

    pool = TransientUnitPoolExecutor(1, NOBODY)
    assert pool.submit(ignore_eof).result(timeout=T) == "patched"
    done = threading.Event()
    threading.Thread(target=lambda: (pool.shutdown(), done.set()), daemon=True).start()
    assert done.wait(T), "shutdown() did not return: a worker ignored its EOF"


def _dumpable_now() -> dict:
    import ctypes
    return {"dumpable": ctypes.CDLL(None).prctl(3, 0, 0, 0, 0)}   # PR_GET_DUMPABLE


def test_a_process_is_not_dumpable_at_any_moment_after_it_entered():
    # Dumpable with the unit's uid, if only until Python's next line, a zygote could be taken by
    # a process of another unit of the same user (pidfd_getfd on its socket: the pool's calls
    # and results). enter() itself must leave it non-dumpable, whatever the anchor is.
    from entry_helpers import Worker, public_anchor, transient_unit

    from concurrentd._entry import EntryPlan

    with transient_unit(["User=nobody", "PrivateTmp=yes"]) as (_unit, pid), \
            EntryPlan.from_pid(pid, anchor_exe=public_anchor()) as plan:
        assert plan.dumpable   # the anchor, freshly exec'd, is
        with Worker(plan, report=_dumpable_now) as worker:
            assert worker.report == {"ok": {"dumpable": 0}}, worker.report

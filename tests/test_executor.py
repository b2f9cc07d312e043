"""TransientUnitPoolExecutor against a real systemd: the sandbox holds, deaths are explained,
nothing is left behind. (What it shares with ProcessPoolExecutor: test_conformance.py.)"""

import gc
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures.process import BrokenProcessPool

import pytest
from entry_helpers import fd_links, systemd_version

import concurrentd
from concurrentd import EnterError, TransientUnitPoolExecutor, WorkerKilled, _warm
from concurrentd.systemd import Systemd, SystemdError, UnitStartError

NOBODY = __import__("pwd").getpwnam("nobody").pw_uid
SEED_PROPERTIES = {"User": "nobody", "CPUQuota": 0.2, "PrivateNetwork": True,
                   "ProtectSystem": "strict", "PrivateTmp": True}


def _units():
    out = subprocess.run(["systemctl", "list-units", "--all", "--plain", "--no-legend",
                          "concurrentd-*"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _unit_exists(name):
    with Systemd.connect() as sd:
        try:
            sd.unit(name)
            return True
        except SystemdError as e:
            assert e.name == "org.freedesktop.systemd1.NoSuchUnit"
            return False


def _whoami_and_world():
    import os
    import socket

    def can_write(path):
        try:
            with open(os.path.join(path, "concurrentd-probe"), "w"):
                return True
        except OSError:
            return False

    return {"uid": os.getuid(), "gid": os.getgid(),
            "interfaces": [name for _, name in socket.if_nameindex()],
            "tmp": os.listdir("/tmp"), "tmp_writable": can_write("/tmp"),
            "usr_writable": can_write("/usr"), "etc_writable": can_write("/etc"),
            "cgroup": open("/proc/self/cgroup").read()}


def test_seed_sandbox_holds():
    open("/tmp/concurrentd-host-marker", "w").close()
    with TransientUnitPoolExecutor(max_workers=2, ns_options=SEED_PROPERTIES) as pool:
        name = pool.unit.Id.decode()
        assert name == pool.unit.name and name.startswith("concurrentd-")
        assert pool.unit.get("CPUQuotaPerSecUSec") == 200_000
        world = pool.submit(_whoami_and_world).result()
        assert (world["uid"], world["gid"]) == (65534, 65534)
        assert world["interfaces"] == ["lo"]
        assert world["tmp"] == [] and world["tmp_writable"]
        assert not world["usr_writable"] and not world["etc_writable"]
        assert f"/{name}" in world["cgroup"]
        assert list(pool.map(lambda x: x * x, range(5))) == [0, 1, 4, 9, 16]
    assert not _unit_exists(name), "shutdown stops the unit"
    os.unlink("/tmp/concurrentd-host-marker")


def test_network_is_unreachable_but_loopback_works():
    def probe():
        import socket
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        socket.create_connection(srv.getsockname(), timeout=1).close()
        try:
            socket.create_connection(("192.0.2.1", 80), timeout=1)   # TEST-NET-1: never routed
        except OSError as e:
            return e.errno
        return 0

    import errno
    with TransientUnitPoolExecutor(1, {"PrivateNetwork": True}) as pool:
        assert pool.submit(probe).result() == errno.ENETUNREACH


def test_worker_imports_stdlib_module_the_owner_never_imported():
    # (sndhdr and imghdr last: deprecated on 3.11 and 3.12, their import warns, an error here)
    candidates = ["colorsys", "wave", "netrc", "tabnanny", "mailbox", "plistlib", "graphlib",
                  "zipapp", "sndhdr", "imghdr"]
    name = next(m for m in candidates if m not in sys.modules and not
                subprocess.run([sys.executable, "-c", f"import {m}"], capture_output=True).returncode)

    def load(module):
        import importlib
        import os
        return importlib.import_module(module).__name__, os.getuid()

    with TransientUnitPoolExecutor(1, {"User": "nobody", "ProtectHome": True}) as pool:
        assert pool.submit(load, name).result() == (name, 65534)


def test_unknown_property_and_bad_value_fail_before_anything_starts():
    before = _units()
    with pytest.raises(ValueError, match="CPUQuota"):
        TransientUnitPoolExecutor(1, {"CPUQuotta": "20%"})
    with pytest.raises(ValueError, match="MemoryMax"):
        TransientUnitPoolExecutor(1, {"MemoryMax": "lots"})
    assert _units() == before


def test_a_unit_that_fails_to_start_fails_the_constructor_and_leaves_no_process():
    # The zygote is forked, and the pool's threads started, while systemd starts the unit: a
    # failed start must reap the one and end the others.
    children, threads = _children(os.getpid()), set(threading.enumerate())
    with pytest.raises(UnitStartError) as info:
        TransientUnitPoolExecutor(1, {"User": "no-such-user-concurrentd"})
    assert "concurrentd-" in str(info.value)
    assert _children(os.getpid()) == children
    assert set(threading.enumerate()) == threads
    assert not [u for u in _units() if "failed" in u]


def _hog():
    data = b"x" * (300 << 20)
    return len(data)


def test_oom_kill_breaks_the_pool_and_says_why():
    with TransientUnitPoolExecutor(1, {"MemoryMax": "100M"}) as pool:
        name = pool.unit.name
        with pytest.raises(concurrentd_broken()) as info:
            pool.submit(_hog).result()
        message = str(info.value)
        assert name in message and "SIGKILL" in message and "MemoryMax=100M" in message
        assert "OOM" in message
        with pytest.raises(concurrentd_broken(), match="MemoryMax"):
            pool.submit(int)


@pytest.mark.parametrize("given, expected", [({}, "continue"), ({"OOMPolicy": "kill"}, "kill"),
                                             ({"OOMPolicy": "stop"}, "stop")])
def test_a_pools_unit_outlives_an_oom_kill_unless_the_user_says_otherwise(given, expected):
    # systemd's default OOMPolicy=stop stops a unit when the kernel OOM-kills any process of it
    # (on a pure cgroup v2 host): one task hitting MemoryMax= would end the pool, replace or not.
    # (tests/vm shows the kill itself on such a host; here, the setting systemd was given.)
    with TransientUnitPoolExecutor(1, {"MemoryMax": "100M", **given}) as pool:
        assert pool.unit.get("OOMPolicy", "Service") == expected
        assert pool.submit(int, "7").result() == 7


def test_an_oom_kill_that_stops_the_unit_says_so():
    # With the user's OOMPolicy=stop, systemd stops the unit after the kill (pure cgroup v2:
    # systemd watches memory.events); the pool breaks, naming the kill, the limit and the policy.
    # (systemd 252 on the box's v1 memory controller sees no OOM: the unit runs on.)
    with TransientUnitPoolExecutor(1, {"MemoryMax": "100M", "OOMPolicy": "stop"},
                                   on_worker_death="replace") as pool:
        with pytest.raises(BrokenProcessPool) as info:
            pool.submit(_hog).result()
        if type(info.value) is WorkerKilled:   # replaced: the unit runs on (systemd 252, v1)
            pytest.skip("this host's systemd does not stop a unit for an OOM kill")
        message = str(info.value)
        assert "OOM" in message and "MemoryMax=100M" in message, message
        assert "OOMPolicy=stop" in message, message


def concurrentd_broken():
    from concurrent.futures.process import BrokenProcessPool
    return BrokenProcessPool


def test_replace_fails_only_the_killed_task_and_goes_on():
    with TransientUnitPoolExecutor(2, {"MemoryMax": "100M"}, on_worker_death="replace") as pool:
        hog = pool.submit(_hog)
        others = [pool.submit(pow, 2, i) for i in range(20)]
        with pytest.raises(WorkerKilled) as info:
            hog.result()
        assert info.value.cause == "oom" and info.value.signal == signal.SIGKILL
        assert info.value.unit == pool.unit.name
        assert [f.result() for f in others] == [2 ** i for i in range(20)]
        again = pool.submit(_hog)
        with pytest.raises(WorkerKilled):
            again.result()
        assert pool.submit(sum, [1, 2]).result() == 3


def test_seccomp_kill_says_so():
    def swapon():
        import ctypes
        return ctypes.CDLL(None).swapon(b"/nonexistent", 0)

    with TransientUnitPoolExecutor(1, {"SystemCallFilter": "~@swap"}) as pool:
        with pytest.raises(concurrentd_broken(), match="SIGSYS.*seccomp"):
            pool.submit(swapon).result()


def _wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_unit_gone_breaks_the_pool_and_says_why():
    pool = TransientUnitPoolExecutor(1, {"PrivateTmp": True})
    try:
        main_pid = pool.unit.main_pid
        os.kill(main_pid, signal.SIGKILL)   # the anchor: systemd stops the unit, zygote and all
        _wait_until(lambda: not pool._session.zygote.alive())
        error = pool.submit(os.getpid).exception(timeout=30)
        assert isinstance(error, BrokenProcessPool), error
        assert f"the unit has stopped: its main process (the anchor, pid {main_pid}) exited" \
            in str(error), error
        with pytest.raises(BrokenProcessPool, match="the unit has stopped"):
            pool.submit(os.getpid)
    finally:
        pool.shutdown()


def test_an_anchor_that_exits_during_the_start_fails_the_constructor_and_releases_all():
    from concurrentd._session import UnitSession

    before, children = set(_units()), _children(os.getpid())
    # begin() returns while systemd starts the unit: kill its anchor as soon as it runs
    session = UnitSession.begin({"PrivateTmp": True}, max_workers=1)
    _wait_until(lambda: set(_units()) - before)
    (unit,) = set(_units()) - before
    os.kill(_wait_for_anchor(unit), signal.SIGKILL)
    with pytest.raises(EnterError, match=r"anchor pid .* has exited"):
        session.finish()
    assert _children(os.getpid()) == children, "the zygote was reaped"
    _wait_until(lambda: not _unit_exists(unit))


def _wait_for_anchor(unit):
    """The unit's MainPID once it runs the anchor (exec'd: no longer systemd's fork)."""
    def running():
        out = subprocess.run(["systemctl", "show", "-p", "MainPID", "--value", unit],
                             capture_output=True, text=True).stdout.strip()
        pid = int(out or 0)
        try:
            return pid if pid and "anchor" in os.readlink(f"/proc/{pid}/exe") else 0
        except OSError:
            return 0
    _wait_until(running)
    return running()


def test_worker_holds_none_of_the_owners_files_or_sockets(tmp_path):
    with open(tmp_path / "secret", "w"), TransientUnitPoolExecutor(1, {"User": "nobody"}) as pool:
        links = pool.submit(fd_links).result()
    # The owner holds the file and its D-Bus connection to systemd (as root): neither may reach
    # the unit. What a worker holds: stdin/stdout/stderr and its queues' pipes.
    assert not [link for link in links if "secret" in link or link.startswith("socket:")], links


def _send_through(conn):
    conn.send("from the initializer")


def test_only_the_fds_of_initargs_reach_the_unit(tmp_path):
    # The zygote keeps open the fds its workers' initargs hold (as ProcessPoolExecutor's fork
    # workers inherit them), and no other of the owner's.
    import multiprocessing
    mine, theirs = multiprocessing.Pipe()
    with open(tmp_path / "secret", "w"), TransientUnitPoolExecutor(
            1, {"User": "nobody"}, initializer=_send_through, initargs=(theirs,)) as pool:
        links = pool.submit(fd_links).result()
    assert mine.recv() == "from the initializer"
    assert [link for link in links if link.startswith("socket:")] == [os.readlink(
        f"/proc/self/fd/{theirs.fileno()}")], links
    assert not [link for link in links if "secret" in link], links


@pytest.mark.parametrize("start_method", ["fork", "forkserver"])
def test_pool_worker_is_confined_exactly_as_the_anchor(start_method):
    import multiprocessing

    from entry_helpers import diff_table, proc_snapshot, self_report
    from test_entry_parity import KITCHEN_SINK

    properties = dict(setting.split("=", 1) for setting in KITCHEN_SINK)
    with TransientUnitPoolExecutor(1, properties,
                                   mp_context=multiprocessing.get_context(start_method)) as pool:
        # The zygote entered the unit, filters and all; a worker is a plain fork of it.
        assert not pool._session.zygote.filters_per_worker
        pid = pool.submit(os.getpid).result()
        anchor, worker = proc_snapshot(pool.unit.main_pid), proc_snapshot(pid)
        assert anchor["status.Seccomp"] == "2" and anchor["seccomp_programs"]
        table = diff_table(anchor, worker)
        assert not table, "the pool's worker differs from the anchor:\n" + table
        report = pool.submit(self_report).result()
    assert report["swapon"] == "signal SIGSYS"
    assert report["write_usr"] in ("EROFS", "EACCES") and report["tmp"] == []
    assert report["connect_out"] in ("ENETUNREACH", "EHOSTUNREACH", "EACCES", "EPERM")


def _memory_protection() -> dict:
    """PR_GET_MDWE, and what a W+X mapping gets (MemoryDenyWriteExecute=: systemd >= 253 sets
    the prctl flag, older ones a seccomp filter; either way the mapping fails)."""
    import ctypes
    import errno as errno_
    import mmap

    libc = ctypes.CDLL(None, use_errno=True)
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC).close()
        wx = "ok"
    except OSError as e:
        wx = errno_.errorcode[e.errno]
    return {"mdwe": libc.prctl(66, 0, 0, 0, 0), "wx": wx}   # PR_GET_MDWE (-1: kernel < 6.3)


def test_memory_deny_write_execute_reaches_the_workers_as_systemds_own_process():
    # systemd >= 253 applies MemoryDenyWriteExecute= with prctl(PR_SET_MDWE), not seccomp, and
    # /proc shows no trace of it: the anchor reports it (--state), the zygote sets it.
    import inspect

    probe = inspect.getsource(_memory_protection) + "\nimport json\n" \
        "print(json.dumps(_memory_protection()))"
    r = subprocess.run(["systemd-run", "-q", "--wait", "--pipe", "-p", "MemoryDenyWriteExecute=yes",
                        sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                       timeout=120)
    systemds = json.loads(r.stdout)
    with TransientUnitPoolExecutor(1, {"MemoryDenyWriteExecute": True}) as pool:
        workers = pool.submit(_memory_protection).result()
    assert systemds["wx"] != "ok", systemds
    assert workers == systemds


def test_protect_hostname_private_names_the_workers_host():
    # systemd >= 258: ProtectHostname=private:NAME gives the unit a UTS namespace of its own,
    # named NAME, which the worker joins (its hostname is the unit's, not the owner's).
    if systemd_version() < 258:
        pytest.skip(f"systemd {systemd_version()} has no ProtectHostname=private (258)")
    with TransientUnitPoolExecutor(1, {"ProtectHostname": "private:sandbox"}) as pool:
        assert pool.submit(socket.gethostname).result() == "sandbox"
    assert socket.gethostname() != "sandbox"


def _thp_disable() -> int:
    """prctl(PR_GET_THP_DISABLE): 0, 1 (no transparent huge pages), 3 (only where madvise()d)."""
    import ctypes
    return int(ctypes.CDLL(None).prctl(42, 0, 0, 0, 0))


def test_a_worker_has_the_units_huge_page_setting_not_its_owners(tmp_path):
    # PR_SET_THP_DISABLE is inherited by fork: an owner that turned transparent huge pages off
    # for itself had a zygote, and workers, with them off too, unlike any process of the unit.
    script = tmp_path / "owner.py"
    script.write_text(textwrap.dedent("""
        import ctypes, json
        from concurrentd import TransientUnitPoolExecutor
        assert ctypes.CDLL(None).prctl(41, 1, 0, 0, 0) == 0   # PR_SET_THP_DISABLE
        def thp():
            import ctypes
            return ctypes.CDLL(None).prctl(42, 0, 0, 0, 0)
        with TransientUnitPoolExecutor(1, {"PrivateTmp": True}) as pool:
            print(json.dumps([thp(), pool.submit(thp).result()]))
    """))
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": repo})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [1, 0]   # the owner's off; the worker's as the anchor's


@pytest.mark.parametrize("mode", ["disable", "madvise"])
def test_memory_thp_reaches_the_workers_as_systemds_own_process(mode):
    # MemoryTHP= (systemd >= 260) is prctl(PR_SET_THP_DISABLE) before the exec: the anchor
    # reports it (--state), the entry sets it.
    if systemd_version() < 260:
        pytest.skip(f"systemd {systemd_version()} has no MemoryTHP= (260)")
    import inspect

    probe = inspect.getsource(_thp_disable) + "\nprint(_thp_disable())"
    r = subprocess.run(["systemd-run", "-q", "--wait", "--pipe", "-p", f"MemoryTHP={mode}",
                        sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                       timeout=120)
    systemds = int(r.stdout)
    with TransientUnitPoolExecutor(1, {"MemoryTHP": mode}) as pool:
        workers = pool.submit(_thp_disable).result()
    assert systemds != 0 and workers == systemds


@pytest.mark.parametrize("filters", ["@system-service", "~clone clone3 fork vfork", "~capset"])
def test_a_units_filters_without_no_new_privs_reach_a_worker_of_another_user(filters):
    # systemd 257 loads a unit's filters while it holds CAP_SYS_ADMIN and leaves no_new_privs
    # unset (older ones set it): a worker that had already become nobody could not load them.
    # It holds CAP_SYS_ADMIN until they are in, then drops it; where the filters forbid that
    # (capset), it takes no_new_privs instead: stricter than the anchor, never looser.
    from entry_helpers import diff_table, proc_snapshot

    with TransientUnitPoolExecutor(1, {"User": "nobody", "SystemCallFilter": filters}) as pool:
        pid, uid = pool.submit(os.getpid).result(), pool.submit(os.getuid).result()
        anchor, worker = proc_snapshot(pool.unit.main_pid), proc_snapshot(pid)
    assert uid == NOBODY
    assert worker["status.Seccomp"] == "2" and worker["status.CapEff"] == anchor["status.CapEff"]
    if worker["status.NoNewPrivs"] != anchor["status.NoNewPrivs"]:
        assert filters == "~capset" and worker["status.NoNewPrivs"] == "1", (anchor, worker)
        del anchor["status.NoNewPrivs"], worker["status.NoNewPrivs"]
    table = diff_table(anchor, worker)
    assert not table, "the pool's worker differs from the anchor:\n" + table


def _uid_and_status() -> tuple:
    with open("/proc/self/status") as f:
        st = dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
    return os.getuid(), st["CapEff"].strip(), st["Seccomp"].strip()


@pytest.mark.parametrize("filters", ["@system-service", "~clone clone3 fork vfork"])
def test_run_with_filters_without_no_new_privs_enters_too(filters):
    # run() and a TransientUnitProcess of its own unit: each process enters itself, filters
    # included (the same CAP_SYS_ADMIN held until they are in, then dropped).
    uid, cap_eff, seccomp = concurrentd.run(
        _uid_and_status, properties={"User": "nobody", "SystemCallFilter": filters})
    assert (uid, int(cap_eff, 16), seccomp) == (NOBODY, 0, "2")


def test_filters_that_forbid_fork_are_installed_by_each_worker():
    properties = {"User": "nobody", "SystemCallFilter": "~clone clone3 fork vfork"}
    with TransientUnitPoolExecutor(1, properties) as pool:
        # The zygote's loop could not live under them: it forks unfiltered, each worker filters.
        assert pool._session.zygote.filters_per_worker
        from entry_helpers import diff_table, proc_snapshot

        pid = pool.submit(os.getpid).result()
        table = diff_table(proc_snapshot(pool.unit.main_pid), proc_snapshot(pid))
        assert not table, "the pool's worker differs from the anchor:\n" + table
        with pytest.raises(BrokenProcessPool, match="SIGSYS"):
            pool.submit(os.fork).result()


def test_scheduling_reset_on_fork_survives_the_zygotes_fork():
    # The kernel gives a fork of a process with SCHED_RESET_ON_FORK the default policy and no
    # negative nice: the zygote takes the policy without the flag, and each worker adds it,
    # before the unit's filters (which here forbid the call).
    properties = {"CPUSchedulingPolicy": "batch", "CPUSchedulingResetOnFork": True, "Nice": -5,
                  "User": "nobody", "SystemCallFilter": "~sched_setscheduler"}
    with TransientUnitPoolExecutor(2, properties) as pool:
        from entry_helpers import diff_table, proc_snapshot

        pids = {pool.submit(os.getpid).result() for _ in range(4)}
        anchor = proc_snapshot(pool.unit.main_pid)
        assert anchor["sched"] == os.SCHED_BATCH | os.SCHED_RESET_ON_FORK and anchor["nice"] == -5
        for pid in pids:
            table = diff_table(anchor, proc_snapshot(pid))
            assert not table, "the pool's worker differs from the anchor:\n" + table
        with pytest.raises(BrokenProcessPool, match="SIGSYS"):
            pool.submit(lambda: os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
                        ).result()


def _terminal_probe() -> dict:
    import errno as errno_
    import fcntl
    import termios

    def attempt(action) -> str:
        try:
            action()
            return "ok"
        except OSError as e:
            return errno_.errorcode[e.errno]

    return {"sid": os.getsid(0), "tiocsti": attempt(lambda: fcntl.ioctl(1, termios.TIOCSTI, b"#")),
            "dev_tty": attempt(lambda: os.close(os.open("/dev/tty", os.O_RDWR)))}


def test_a_worker_cannot_type_into_the_owners_terminal():
    # The owner runs on a terminal, which is its controlling terminal and its stdout, as in an
    # interactive session. A worker writes to that stdout, but it is in a session of its own
    # (as a unit's process is), and its stdin and stdout are /dev/null and a pipe (as a unit's
    # process has /dev/null and the journal), so it cannot push input into the terminal
    # (TIOCSTI), change its modes, or open it.
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            os.setsid()
            _, tty = os.openpty()
            import fcntl
            import termios
            fcntl.ioctl(tty, termios.TIOCSCTTY, 0)
            os.dup2(tty, 1)
            with TransientUnitPoolExecutor(1, {"User": "nobody"}) as pool:
                report = pool.submit(_terminal_probe).result()
            report["owner_sid"] = os.getsid(0)
            os.write(w, json.dumps(report).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        data = f.read()
    assert os.waitpid(pid, 0)[1] == 0
    report = json.loads(data)
    assert report["sid"] != report["owner_sid"], report
    # its stdout is a pipe to the owner, not the terminal (ENOTTY); on a terminal, TIOCSTI is
    # refused with EPERM (another session's terminal), or EIO on kernels built without
    # LEGACY_TIOCSTI or with dev.tty.legacy_tiocsti=0 (Debian's 6.12): any of them is a refusal.
    # And it has no terminal to open.
    assert report["tiocsti"] in ("ENOTTY", "EPERM", "EIO"), report
    assert report["dev_tty"] == "ENXIO", report


OWNER_OF_TWO_WORKERS = """
    import time, concurrentd
    pool = concurrentd.TransientUnitPoolExecutor(2, PROPERTIES)
    futures = [pool.submit(time.sleep, 100) for _ in range(2)]
    time.sleep(SETTLE)
    print(pool.unit.name, *pool._processes, flush=True)
    time.sleep(100)
"""


def _owner_of_two_busy_workers(properties: dict, settle: float):
    """A process whose pool runs two workers busy for 100 s: (it, the unit's name, their pids)."""
    code = textwrap.dedent(OWNER_OF_TWO_WORKERS).replace("PROPERTIES", repr(properties)) \
        .replace("SETTLE", repr(settle))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    name, *workers = proc.stdout.readline().split()
    assert _unit_exists(name) and len(workers) == 2
    return proc, name, workers


def _kill_and_see_all_go(proc, name: str, workers: list, within: float) -> None:
    """SIGKILLs the owner; the unit and every worker must be gone ``within`` seconds."""
    proc.kill()
    proc.wait()
    start = time.monotonic()
    while _unit_exists(name) or any(os.path.exists(f"/proc/{pid}") for pid in workers):
        assert time.monotonic() - start < within, \
            f"the unit or a worker outlived its owner by {within:g} s"
        time.sleep(0.02)
    proc.stdout.close()


@pytest.mark.parametrize("kill_mode", ["control-group", "process"])
def test_owner_killed_takes_unit_and_workers_along(kill_mode):
    # KillMode=process: systemd stops only the anchor; the workers must go all the same.
    proc, name, workers = _owner_of_two_busy_workers(
        {"PrivateTmp": True, "KillMode": kill_mode}, settle=0.3)
    _kill_and_see_all_go(proc, name, workers, within=2.0)


needs_257 = pytest.mark.skipif(systemd_version() < 257, reason="PrivatePIDs= is systemd >= 257")


def _pid_view() -> dict:
    return {"pid": os.getpid(), "ns": os.readlink("/proc/self/ns/pid"),
            "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit())}


@needs_257
def test_private_pids_workers_run_in_the_units_pid_namespace():
    with TransientUnitPoolExecutor(1, {"PrivatePIDs": True, "User": "nobody"}) as pool:
        view = pool.submit(_pid_view).result()
        anchor = pool.unit.main_pid
        assert view["ns"] == os.readlink(f"/proc/{anchor}/ns/pid")
        with open(f"/proc/{anchor}/status") as f:
            nspid = next(line for line in f if line.startswith("NSpid:")).split()[1:]
        assert nspid[-1] == "1", nspid   # the anchor is the namespace's init
        assert view["pid"] not in pool._processes and 1 in view["pids"], view
        assert pool.submit(sum, [1, 2]).result() == 3


@needs_257
def test_private_pids_owner_killed_takes_unit_and_workers_along():
    # The anchor, PID 1 of the unit's pid namespace, cannot see the owner's pid: it watches the
    # FIFO the owner holds open instead.
    proc, name, workers = _owner_of_two_busy_workers({"PrivatePIDs": True}, settle=0.5)
    time.sleep(1)
    assert _unit_exists(name), "the unit did not outlive its start (the anchor exited at once?)"
    _kill_and_see_all_go(proc, name, workers, within=10.0)


@needs_257
def test_private_pids_a_unit_started_by_hand_can_be_joined():
    from concurrentd._entry import anchor_argv
    from concurrentd._unitfiles import installed_anchor

    name = f"joined-pids-{os.getpid()}.service"
    argv = anchor_argv(os.getpid(), path=installed_anchor(anchor_argv()[0]))
    subprocess.run(["systemd-run", "--unit", name, "-p", "Type=exec", "-p", "PrivatePIDs=yes",
                    *argv], check=True, capture_output=True)
    try:
        time.sleep(0.5)
        assert _unit_exists(name), "the anchor exited at once"
        with TransientUnitPoolExecutor(1, unit=name) as pool:
            assert pool.submit(_pid_view).result()["ns"] == os.readlink(
                f"/proc/{pool.unit.main_pid}/ns/pid")
    finally:
        subprocess.run(["systemctl", "stop", name], check=False)


def _fd_count():
    return len(os.listdir("/proc/self/fd"))


def _cgroups():
    found = set()
    for root, dirs, _ in os.walk("/sys/fs/cgroup"):
        found.update(os.path.join(root, d) for d in dirs if d.startswith("concurrentd-"))
    return found


def test_a_hundred_pools_leave_nothing_behind():
    with TransientUnitPoolExecutor(1) as pool:   # warm-up: imports, the resource tracker
        pool.submit(int).result()
    del pool
    gc.collect()
    _warm.stop_all()
    fds, mounts = fd_links(), open("/proc/self/mountinfo").read()
    units, cgroups = _units(), _cgroups()
    children = open(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read().split()
    # Without the garbage collector: what a pool holds must be freed when it is (a reference
    # cycle would keep its workers' pipes and pidfds open until a collection).
    gc.disable()
    try:
        for i in range(100):
            with TransientUnitPoolExecutor(1, {"PrivateTmp": True}) as pool:
                assert pool.submit(abs, -i).result() == i
        del pool
        # Each pool took the unit prepared for it and had the next one prepared; a pool of an
        # earlier test, collected meanwhile, may have asked for one too; on a loaded machine the
        # last output copy may still be draining: within seconds, nothing of them is left.
        deadline = time.monotonic() + 30.0
        while _warm.stop_all() or fd_links() != fds:
            if time.monotonic() > deadline:
                now = fd_links()
                gone = [link for link in fds if link not in now]
                extra = [link for link in now if link not in fds]
                gc.collect()   # a reference cycle holding them, or something alive?
                cycle = [link for link in extra if link not in fd_links()]
                raise AssertionError(f"fds left: {extra} (gone: {gone}; freed only by the "
                                     f"garbage collector: {cycle}); threads: "
                                     f"{[t.name for t in threading.enumerate()]}")
            time.sleep(0.05)
    finally:
        gc.enable()
    assert open("/proc/self/mountinfo").read() == mounts
    assert _units() == units
    assert _cgroups() == cgroups
    assert open(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read().split() == children


def test_a_pool_whose_thread_cannot_start_leaves_nothing_behind(monkeypatch):
    # At the interpreter's exit, starting a thread raises RuntimeError: the unit and the zygote
    # that were started before must go.
    from concurrentd import _manager

    def refuse(self):
        raise RuntimeError("can't create new thread at interpreter shutdown")

    monkeypatch.setattr(_manager.PoolManager, "start", refuse)
    units, children = set(_units()), set(_children(os.getpid()))
    with pytest.raises(RuntimeError, match="can't create new thread"):
        TransientUnitPoolExecutor(1, SEED_PROPERTIES)
    assert set(_units()) == units
    assert set(_children(os.getpid())) <= children, "the zygote is left"


def test_join_an_existing_unit_and_leave_it_running():
    name = f"joined-{os.getpid()}.service"
    subprocess.run(["systemd-run", "--unit", name, "-p", "PrivateTmp=yes", "sleep", "60"],
                   check=True, capture_output=True)
    try:
        with TransientUnitPoolExecutor(1, unit=name) as pool:
            assert pool.unit.name == name
            assert f"/{name}" in pool.submit(lambda: open("/proc/self/cgroup").read()).result()
        assert subprocess.run(["systemctl", "is-active", name], capture_output=True,
                              text=True).stdout.strip() == "active"
    finally:
        subprocess.run(["systemctl", "stop", name], check=True)


def test_a_joined_units_main_process_counts_only_once_it_has_execd():
    # systemd-run's Type=simple unit is "started" while its main process is still systemd's own
    # fork: joining then waits for the exec, and never reads that process as the unit's.
    from concurrentd._session import _program_of

    assert _program_of(os.getpid()) == os.readlink("/proc/self/exe")
    with pytest.raises(ValueError, match="has not exec'd its program"):
        _program_of(1, timeout=0.05)   # PID 1 runs systemd's executable: as that fork would


def test_transient_unit_process_own_unit_and_pool_unit(tmp_path):
    def report(path):
        import os
        with open(path, "w") as f:
            f.write(f"{os.getuid()} {open('/proc/self/cgroup').read().split()[0]}")

    out = tmp_path / "own"
    p = concurrentd.TransientUnitProcess(target=report, args=(str(out),),
                                         properties={"ReadWritePaths": str(tmp_path)})
    p.start()
    name = p.unit.name
    p.join(30)
    assert p.exitcode == 0
    assert name in out.read_text()
    assert not _unit_exists(name)

    with TransientUnitPoolExecutor(1) as pool:
        q = concurrentd.TransientUnitProcess(target=time.sleep, args=(60,), pool=pool)
        q.start()
        assert q.is_alive()
        q.terminate()
        q.join(10)
        assert q.exitcode == -signal.SIGTERM


def test_run_and_sandboxed():
    assert concurrentd.run(lambda a, b=0: a + b, 2, b=3, properties={"PrivateTmp": True}) == 5

    @concurrentd.sandboxed(User="nobody")
    def uid():
        return os.getuid()

    assert uid() == 65534
    with pytest.raises(ZeroDivisionError):
        concurrentd.run(lambda: 1 / 0)


def test_pool_leaves_no_named_semaphore_in_dev_shm():
    # Its queues are inherited by the zygote, never pickled: their semaphores need no name, so
    # none can leak, and no resource tracker process is started for them.
    before = set(os.listdir("/dev/shm"))
    with TransientUnitPoolExecutor(2, {"PrivateTmp": True}) as pool:
        assert list(pool.map(abs, [-1, -2, -3])) == [1, 2, 3]
        during = set(os.listdir("/dev/shm"))
    assert not [name for name in during - before if name.startswith("sem.")], during - before


def test_tasks_max_counts_the_zygote_and_a_refused_fork_says_so():
    # TasksMax=4: the anchor, the zygote and two workers.
    with TransientUnitPoolExecutor(2, {"TasksMax": 4}) as pool:
        assert sorted(pool.map(abs, [-1, -2, -3, -4])) == [1, 2, 3, 4]
    with TransientUnitPoolExecutor(3, {"TasksMax": 4}) as pool:
        futures = [pool.submit(time.sleep, 0.5) for _ in range(3)]
        with pytest.raises(BrokenProcessPool, match=r"fork\(\) failed: Resource temporarily "
                                                    r"unavailable.*TasksMax=4\) was hit"):
            for f in futures:
                f.result(timeout=30)


def _children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def _uid(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Uid:"))


def test_a_spare_worker_waits_confined_and_never_exceeds_max_workers():
    with TransientUnitPoolExecutor(2, {"User": "nobody"}) as pool:
        zygote = pool._session.zygote.pid
        # Before any task: one worker-to-be, forked by the zygote, already in the unit.
        (spare,) = _children(zygote)
        assert _uid(spare) == 65534
        assert pool.unit.control_group in open(f"/proc/{spare}/cgroup").read()
        assert pool.submit(os.getpid).result() == spare   # the first worker
        # Two at once: both workers run, and no spare beyond max_workers (it would take one of
        # the unit's tasks, under TasksMax=, that no worker will use).
        futures = [pool.submit(time.sleep, 0.3) for _ in range(2)]
        _wait_until(lambda: len(pool._processes) == 2)
        [f.result() for f in futures]
        assert sorted(_children(zygote)) == sorted(pool._processes)
        everyone = [zygote, *pool._processes]
    assert not [pid for pid in everyone if os.path.exists(f"/proc/{pid}")]


def test_a_spare_that_dies_unasked_is_not_missed():
    with TransientUnitPoolExecutor(1, {"PrivateTmp": True}) as pool:
        (spare,) = _children(pool._session.zygote.pid)
        os.kill(spare, signal.SIGKILL)
        _wait_until(lambda: not os.path.exists(f"/proc/{spare}"))   # reaped by the zygote
        pid = pool.submit(os.getpid).result(timeout=30)   # forked when asked instead
        assert pid != spare and pool.submit(abs, -1).result() == 1


def test_the_spare_leaves_with_an_unused_pool():
    pool = TransientUnitPoolExecutor(1, {"PrivateTmp": True})
    zygote = pool._session.zygote.pid
    (spare,) = _children(zygote)
    pool.shutdown()
    assert not os.path.exists(f"/proc/{spare}") and not os.path.exists(f"/proc/{zygote}")


def test_a_pool_spawns_a_worker_only_when_none_is_idle():
    with TransientUnitPoolExecutor(3, {}) as pool:
        for _ in range(20):   # one at a time: the first worker is always idle again
            pool.submit(os.getpid).result()
        assert len(pool._processes) == 1
        for f in [pool.submit(time.sleep, 0.5) for _ in range(3)]:   # three at once: three
            f.result()
        assert len(pool._processes) == 3


def test_an_idle_pool_manager_thread_sleeps():
    # The manager's wait keeps one poll object; a wakeup left unread would make it spin.
    def cpu_ns(tid):
        with open(f"/proc/self/task/{tid}/schedstat") as f:
            return int(f.read().split()[0])

    with TransientUnitPoolExecutor(2, {}) as pool:
        assert sum(pool.map(abs, range(-50, 50), chunksize=7)) == 2500
        for _ in range(50):
            pool.submit(abs, -1)   # wakeups, some read with a result, some not
        assert pool.submit(abs, -2).result(timeout=10) == 2
        tid = pool._executor_manager_thread.native_id
        time.sleep(0.2)
        before = cpu_ns(tid)
        time.sleep(0.5)
        assert cpu_ns(tid) - before < 20_000_000, "the manager thread ran while the pool was idle"


def test_a_zygote_that_cannot_read_the_anchor_says_so_and_exits():
    from concurrentd._entry import ENTER_FAILED_EXIT_STATUS
    from concurrentd._session import UnitSession
    from concurrentd._zygote import Zygote

    res = UnitSession.begin({}, enters=False).finish()
    try:
        zygote = Zygote((), enters=True)
        # this process is no anchor: the zygote's own read of the plan fails, the owner's did not
        zygote.enter(os.getpid(), os.readlink(f"/proc/{res.plan.anchor_pid}/exe"))
        with pytest.raises(EnterError, match="the zygote could not read the unit's main process"):
            zygote.await_ready(res.plan)
        assert zygote.status == ENTER_FAILED_EXIT_STATUS
    finally:
        res.release()


def test_a_zygote_that_dies_after_entering_is_reported_as_such():
    import signal

    from concurrentd._session import UnitSession
    from concurrentd._zygote import Zygote

    res = UnitSession.begin({}, enters=False).finish()
    try:
        # The kill races the zygote's fork of its spare (~1 ms): the first try wins it but on a
        # very busy machine; a zygote that reported first is a lost try, not a failure.
        for _ in range(10):
            zygote = Zygote((), enters=True, max_workers=1)
            zygote.enter(res.plan.anchor_pid, os.readlink(f"/proc/{res.plan.anchor_pid}/exe"))
            zygote.await_entered()
            os.kill(zygote.pid, signal.SIGKILL)   # before its report that its spare is forked
            try:
                zygote.await_ready(res.plan)
            except EnterError as e:
                assert "died after entering the unit: it was killed by SIGKILL" in str(e)
                assert zygote.status == -signal.SIGKILL
                break
            zygote.close()
        else:
            pytest.fail("the zygote reported its spare before the kill, ten times")
    finally:
        res.release()


def test_a_zygote_that_dies_before_its_entry_report_is_reported_as_such():
    import signal

    from concurrentd._session import UnitSession
    from concurrentd._zygote import Zygote

    res = UnitSession.begin({}, enters=False).finish()
    try:
        zygote = Zygote((), enters=True, max_workers=1)
        os.kill(zygote.pid, signal.SIGKILL)   # before it is even told the anchor
        zygote.enter(res.plan.anchor_pid, os.readlink(f"/proc/{res.plan.anchor_pid}/exe"))
        with pytest.raises(EnterError, match="died while entering the unit: it was killed by SIGKILL"):
            zygote.await_ready(res.plan)
        assert zygote.status == -signal.SIGKILL
    finally:
        res.release()


def _write_and_keep_open(path):
    f = open(path, "wb")   # an fd whose number the owner's pool once used
    f.write(b"data")
    f.flush()
    return f


def test_a_process_exit_leaves_the_owners_other_pools_alone(tmp_path):
    # multiprocessing's Process ends with threading._shutdown(), whose exit hooks include
    # ProcessPoolExecutor's: it wakes every manager thread it knows, through fds of the owner
    # that are closed in the unit, or are another file's now.
    from concurrent.futures import ProcessPoolExecutor

    out = tmp_path / "out"
    with ProcessPoolExecutor(1, mp_context=__import__("multiprocessing").get_context("forkserver")
                             ) as other:
        other.submit(abs, 1).result()
        with TransientUnitPoolExecutor(1) as pool:
            def task(path=str(out)):
                f = _write_and_keep_open(path)
                import threading
                threading._shutdown()   # what Process._bootstrap runs at its end
                f.close()
            q = concurrentd.TransientUnitProcess(target=task, pool=pool)
            q.start()
            q.join(30)
    assert q.exitcode == 0
    assert out.read_bytes() == b"data"


@pytest.mark.parametrize("properties", [{"Type": "oneshot"}, {"Type": "notify"},
                                        {"RemainAfterExit": True}, {"ExecStart": "/bin/true"}])
def test_properties_concurrentd_sets_itself_are_refused_before_anything_starts(properties):
    before = set(_units())
    with pytest.raises(ValueError, match="cannot be set on a pool's unit"):
        TransientUnitPoolExecutor(1, properties)
    assert set(_units()) == before


def test_a_unit_that_does_not_start_in_time_is_stopped_and_says_so():
    before = set(_units())
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="did not start within 1 s"):
        TransientUnitPoolExecutor(1, {"ExecStartPre": "/bin/sleep 30"}, start_timeout=1)
    assert time.monotonic() - t0 < 10
    _wait_until(lambda: set(_units()) <= before)


def test_a_unit_whose_condition_fails_says_so():
    before = set(_units())
    with pytest.raises(concurrentd.UnitStartError,
                       match="condition failed: ConditionPathExists=/no/such/path") as info:
        TransientUnitPoolExecutor(1, {"ConditionPathExists": "/no/such/path"})
    assert info.value.result == "skipped"
    _wait_until(lambda: set(_units()) <= before)


@pytest.mark.parametrize("how", ["systemctl-stop", "RuntimeMaxSec"])
def test_a_unit_stopped_under_a_running_task_says_so_first(how):
    properties = {"PrivateTmp": True, **({"RuntimeMaxSec": 2} if how == "RuntimeMaxSec" else {})}
    with TransientUnitPoolExecutor(1, properties, on_worker_death="replace") as pool:
        task = pool.submit(time.sleep, 60)
        time.sleep(0.5)
        if how == "systemctl-stop":
            subprocess.run(["systemctl", "stop", "--no-block", pool.unit.name], check=True)
        error = task.exception(timeout=30)
    assert isinstance(error, BrokenProcessPool), error
    assert str(error).startswith("The unit has stopped"), str(error)
    assert "the task ended the process" not in str(error)


def test_a_bus_restart_under_a_pool_still_lets_shutdown_stop_its_unit():
    pool = TransientUnitPoolExecutor(1, {"PrivateTmp": True})
    name = pool.unit.name
    assert pool.submit(abs, -1).result(timeout=30) == 1
    subprocess.run(["systemctl", "restart", "dbus"], check=True)
    assert pool.submit(abs, -2).result(timeout=30) == 2   # tasks go on: no D-Bus in them
    pool.shutdown()   # its connection is broken: it reconnects to stop the unit
    _wait_until(lambda: not _unit_exists(name))


def test_not_root_is_said_before_anything_is_touched(monkeypatch):
    before = set(_units())
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(PermissionError, match="concurrentd needs root"):
        TransientUnitPoolExecutor(1, {"PrivateTmp": True})
    assert set(_units()) == before


@pytest.mark.parametrize("properties, words", [
    ({"User": "no-such-user-for-concurrentd"}, "the user to run as does not exist"),
    ({"WorkingDirectory": "/no/such/dir"}, "could not change to the working directory"),
])
def test_a_unit_that_fails_to_start_says_why_in_words(properties, words):
    with pytest.raises(concurrentd.UnitStartError, match=words):
        TransientUnitPoolExecutor(1, properties)



class _State:
    token = "set by the initializer"


_state = _State()


def _touch_state():
    _state.token = None   # an attribute named as a global below: not a use of that global


def test_an_initializer_keeps_only_the_fds_of_its_arguments(tmp_path):
    # The fds kept for the workers are those of initargs, closure and defaults: not a global's
    # that an attribute happens to be named after (red team, F4).
    secret = tmp_path / "secret"
    secret.write_text("owner-only")
    globals()["token"] = open(secret)
    try:
        with TransientUnitPoolExecutor(1, {"User": "nobody"}, initializer=_touch_state) as pool:
            links = pool.submit(fd_links).result()
    finally:
        globals().pop("token").close()
    assert not [link for link in links if "secret" in link], links


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


def test_shutdown_with_cancel_futures_right_after_the_pool_broke_returns_at_once():
    # The manager thread, its loop over, was releasing the unit: shutdown(cancel_futures=True)
    # waited for a dispatch that would never come, 10 s (the zygote's timeout), before.
    for _ in range(2):
        pool = TransientUnitPoolExecutor(1)
        with pytest.raises(BrokenProcessPool):
            pool.submit(_die).result(timeout=30)
        started = time.monotonic()
        pool.shutdown(wait=True, cancel_futures=True)
        assert time.monotonic() - started < 3


def test_a_pool_refuses_to_be_pickled_and_says_where_to_make_it():
    # (Dask's LocalCluster(processes=True, executor=pool) pickles it for each worker process;
    # it failed on the manager's lock, '_thread.lock', or a fork context's SemLock.)
    import pickle
    with TransientUnitPoolExecutor(1) as pool:
        with pytest.raises(TypeError, match="cannot be pickled.*Make the pool in the process "
                                            "that uses it.*SandboxedExecutor"):
            pickle.dumps(pool)
        assert pool.submit(abs, -2).result(timeout=30) == 2


SECOND_POOL = """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrentd import TransientUnitPoolExecutor, TransientUnitProcess

    if __name__ == "__main__":
        fork = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(1, mp_context=fork) as other:
            other.submit(abs, 1).result()
            with TransientUnitPoolExecutor(2, mp_context=fork) as first, \\
                    TransientUnitPoolExecutor(2, mp_context=fork) as second:
                for pool in (first, second):
                    print(sum(pool.map(abs, range(-20, 0))))
                    process = TransientUnitProcess(target=abs, args=(-1,), pool=pool)
                    process.start()
                    process.join()
                    print(process.exitcode)
"""


def test_a_second_pool_in_one_process_ends_without_tracebacks(tmp_path):
    # #17: a second pool in one process printed EBADF tracebacks at exit (the zygote kept the
    # owner's ProcessPoolExecutor wakeups: see test_a_process_exit_leaves_the_owners_other_pools_
    # alone); here at the interpreter's exit, with two pools and a ProcessPoolExecutor.
    script = tmp_path / "second_pool.py"
    script.write_text(textwrap.dedent(SECOND_POOL))
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": repo})
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ["210", "0", "210", "0"]
    assert "Traceback" not in r.stderr and "Bad file descriptor" not in r.stderr, r.stderr[-3000:]


def _rebuild_value_error(args):
    return ValueError(*args)


def _an_exception_with_a_library_reducer_installed():
    import copyreg
    # What importing distributed does (tblib.pickling_support.install()), for every exception
    # class: a reducer of a library's own, whose function the owner does not call.
    copyreg.pickle(ValueError, lambda e: (_rebuild_value_error, (e.args,)))
    return [ValueError("v"), 1]


def test_an_exception_in_a_result_comes_back_when_a_library_registered_a_reducer():
    with TransientUnitPoolExecutor(1) as pool:
        error, one = pool.submit(_an_exception_with_a_library_reducer_installed).result(timeout=30)
    assert type(error) is ValueError and error.args == ("v",) and one == 1

"""The two ways a pool's zygote starts, on a real systemd: forked from the owner (mp_context fork),
or a fresh interpreter (spawn, forkserver, and by default in an owner that runs threads).
(Their confinement is the same: test_executor's parity test runs with both.)"""

import multiprocessing
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from concurrentd import TransientUnitPoolExecutor

PROPS = {"User": "nobody", "PrivateTmp": True}
T = 20
REPO = Path(__file__).resolve().parent.parent

#: set by a test in the owner, after this module was imported
_owner_state = None


def _what_the_worker_has():
    import __main__
    me = sys.modules[__name__]
    return {"uid": os.getuid(), "owner_state": me._owner_state,
            "owner_imported": "colorsys" in sys.modules,
            "main": getattr(__main__, "__file__", None),
            "cgroup": open("/proc/self/cgroup").read()}


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_each_start_method_runs_confined_calls(method):
    global _owner_state
    _owner_state = "read before the pool"
    import colorsys  # noqa: F401 - a module only this test imports, before the pool
    try:
        with TransientUnitPoolExecutor(2, PROPS, mp_context=multiprocessing.get_context(method)) as p:
            seen = p.submit(_what_the_worker_has).result(timeout=T)
            assert p.submit(lambda x: x * 2, 21).result(timeout=T) == 42
            assert list(p.map(abs, range(-3, 3))) == [3, 2, 1, 0, 1, 2]
            assert p._mp_context.get_start_method() == method
            unit_cgroup = p.unit.control_group
    finally:
        _owner_state = None
    assert seen["uid"] != 0 and unit_cgroup in seen["cgroup"]
    fork = method == "fork"
    # A fork has the owner's memory; a fresh interpreter only what the calls imported.
    assert seen["owner_state"] == ("read before the pool" if fork else None)
    assert seen["owner_imported"] is fork


def _log_through(queue):
    import logging.handlers
    logger = logging.getLogger("from-the-worker")
    logger.addHandler(logging.handlers.QueueHandler(queue))
    logger.warning("initialized in %s", os.getpid())


def _nothing():
    return None


def test_a_fresh_pool_takes_initargs_of_its_context_and_refuses_a_fork_contexts():
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    with TransientUnitPoolExecutor(1, PROPS, mp_context=ctx, initializer=_log_through,
                                   initargs=(queue,)) as p:
        pid = p.submit(os.getpid).result(timeout=T)
    assert queue.get(timeout=T).getMessage() == f"initialized in {pid}"
    queue.close()
    units = _units()
    fork_queue = multiprocessing.get_context("fork").Queue()
    if not hasattr(fork_queue._rlock, "_is_fork_ctx"):   # Python 3.10
        pytest.skip("this Python's multiprocessing lets a fork context's Queue go to a spawn")
    with pytest.raises(TypeError, match="fresh interpreter.*fork context"):
        TransientUnitPoolExecutor(1, PROPS, mp_context=ctx, initializer=_log_through,
                                  initargs=(fork_queue,))
    assert _units() == units, "nothing may start for a pool refused"
    fork_queue.close()


def _units():
    out = subprocess.run(["systemctl", "list-units", "--all", "--plain", "--no-legend",
                          "concurrentd-*"], capture_output=True, text=True, check=True).stdout
    return sorted(line.split()[0] for line in out.splitlines() if line.strip())


def _loaded(name):
    return name in sys.modules


@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_preload_imports_in_the_zygote_before_the_first_call(method):
    assert "tabnanny" not in sys.modules   # a stdlib module nothing else imports
    with TransientUnitPoolExecutor(1, PROPS, preload=["tabnanny"],
                                   mp_context=multiprocessing.get_context(method)) as p:
        assert p.submit(_loaded, "tabnanny").result(timeout=T) is True
    assert "tabnanny" not in sys.modules   # the zygote's, not the owner's
    with pytest.raises(ValueError, match="preload: no module named 'no_such_module'"):
        TransientUnitPoolExecutor(1, PROPS, preload=["no_such_module"])


THREADED_OWNER = """
    import logging, threading, warnings
    warnings.simplefilter("error", DeprecationWarning)   # 3.12+: a fork of a threaded process
    logging.basicConfig(format="%(name)s: %(message)s")
    from concurrentd import TransientUnitPoolExecutor

    stop = threading.Event()
    server = threading.Thread(target=stop.wait, name="web-server")
    server.start()
    try:
        for _ in range(2):
            with TransientUnitPoolExecutor(1, {"PrivateTmp": True}) as pool:
                print(pool._mp_context.get_start_method(), pool.submit(abs, -7).result(timeout=20))
    finally:
        stop.set()
"""


def test_an_owner_with_threads_gets_a_fresh_zygote_and_is_told_once(tmp_path):
    script = tmp_path / "threaded_owner.py"
    script.write_text(textwrap.dedent(THREADED_OWNER))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                       env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ["forkserver", "7", "forkserver", "7"]
    told = [line for line in r.stderr.splitlines() if "fresh interpreter" in line]
    assert len(told) == 1 and "web-server" in told[0], r.stderr


def test_the_pools_own_threads_do_not_make_the_next_pool_fresh():
    with TransientUnitPoolExecutor(1, PROPS) as first:
        first.submit(abs, 1).result(timeout=T)
        with TransientUnitPoolExecutor(1, PROPS) as second:
            assert second._mp_context.get_start_method() == "fork"


def _signals():
    status = open("/proc/self/status").read()
    return {k: int(v, 16) for k, v in (line.split(":\t") for line in status.splitlines()
                                        if line.startswith(("SigBlk", "SigIgn")))}


def test_a_fresh_zygote_does_not_take_the_owner_threads_signal_mask():
    # posix_spawn passes the calling thread's mask on: a worker blocking SIGTERM would be deaf
    # to terminate() and to the unit's stop (red team, F7).
    import signal
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    try:
        with TransientUnitPoolExecutor(1, PROPS,
                                       mp_context=multiprocessing.get_context("forkserver")) as p:
            seen = p.submit(_signals).result(timeout=T)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    assert seen["SigBlk"] & (1 << (signal.SIGTERM - 1)) == 0, seen


THREAD_AT_IMPORT = """
import threading, time
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
"""


@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_a_preloaded_module_that_starts_a_thread_is_named_as_the_cause(tmp_path, method):
    # A process with threads cannot enter a mount namespace (setns: EINVAL): the error must say
    # which setting caused it, not "setns(mnt): Invalid argument".
    from concurrentd import EnterError
    (tmp_path / "starts_a_thread.py").write_text(THREAD_AT_IMPORT)
    os.chmod(tmp_path, 0o755)
    sys.path.insert(0, str(tmp_path))
    units = _units()
    try:
        with pytest.raises(EnterError, match="preload=.*started a thread"):
            TransientUnitPoolExecutor(1, {"PrivateTmp": True}, preload=["starts_a_thread"],
                                      mp_context=multiprocessing.get_context(method),
                                      warm_units=False)
    finally:
        sys.path.remove(str(tmp_path))
    assert _units() == units


# -- the zygote created in the unit's cgroup (cgroup v2) --

#: the running system has no cgroup v1 hierarchy (Debian trixie and later, the VMs' testbeds)
PURE_V2 = Path("/proc/self/cgroup").read_text().strip().count("\n") == 0


def _v2_dir(cgroup: str) -> str:
    """The directory of a cgroup v2 path (a unit's ControlGroup) in this process's view."""
    from concurrentd._entry.plan import cgroup_dirs
    dirs = cgroup_dirs(f"0::{cgroup}\n", Path("/proc/self/mountinfo").read_text())
    if not dirs:
        pytest.skip("no cgroup2 file system mounted")
    return next(iter(dirs.values()))


def _ppid(pid):
    """Its parent's pid, or None once it is gone."""
    from concurrentd._entry.plan import parse_status
    try:
        return int(parse_status(Path(f"/proc/{pid}/status").read_text())["PPid"])
    except OSError:
        return None


def test_clone_into_cgroup_creates_the_copy_there_as_a_child_of_the_callers_parent():
    from concurrentd import _sys
    with TransientUnitPoolExecutor(1, PROPS, warm_units=False) as p:
        p.submit(abs, 0).result(timeout=T)
        cgroup = p.unit.control_group
        fd = os.open(_v2_dir(cgroup), os.O_RDONLY | os.O_DIRECTORY)
        r, w = os.pipe()
        first = os.fork()
        if first == 0:   # single-threaded, as the call wants
            try:
                if _sys.clone_into_cgroup(fd):
                    os._exit(0)
                os.write(w, f"{os.getpid()} {os.getppid()}\n"
                            f"{Path('/proc/self/cgroup').read_text()}".encode())
            finally:
                os._exit(0)
        os.close(w)
        os.close(fd)
        with os.fdopen(r) as f:
            ids, cgroups = f.read().split("\n", 1)
        copy, ppid = map(int, ids.split())
        os.waitpid(first, 0)
        os.waitpid(copy, 0)   # this process's child, as its parent's parent
    assert ppid == os.getpid()
    assert f"0::{cgroup}\n" in cgroups.splitlines(keepends=True)


def _zygote_pid():
    return os.getppid()


@pytest.mark.skipif(not PURE_V2, reason="a process cloned into a cgroup joins only its cgroup v2 "
                                        "hierarchy: with v1 ones (hybrid) the zygote moves itself")
@pytest.mark.parametrize("warm", [False, True])
def test_on_cgroup_v2_the_zygote_is_created_in_the_units_cgroup(monkeypatch, warm):
    # Moving a process into a cgroup waits for an RCU grace period (10-30 ms) when no other move
    # ran just before, as after a prepared unit waited: the zygote is re-created in the unit's
    # cgroup instead, and the process the owner forked exits, reaped.
    forked = []
    real_fork = os.fork

    def fork():
        pid = real_fork()
        if pid:
            forked.append(pid)
        return pid
    monkeypatch.setattr(os, "fork", fork)
    props = {**PROPS, "PrivateNetwork": True}
    for _ in range(2 if warm else 1):   # with warm: the second pool takes a prepared unit
        forked.clear()
        with TransientUnitPoolExecutor(1, props, warm_units=warm,
                                       mp_context=multiprocessing.get_context("fork")) as p:
            zygote = p.submit(_zygote_pid).result(timeout=T)
            assert zygote != forked[0] and _ppid(zygote) == os.getpid()
            assert Path(f"/proc/{zygote}/cgroup").read_text() == f"0::{p.unit.control_group}\n"
            assert not Path(f"/proc/{forked[0]}").exists()   # exited, and reaped
    if warm:
        from concurrentd import _warm
        _warm.stop_all()


# -- a start that fails half-way leaves nothing --

def _children():
    """This process's children, zombies included (one not reaped is left behind too)."""
    return sorted(p.name for p in Path("/proc").iterdir()
                  if p.name.isdigit() and _ppid(p.name) == os.getpid())


class _NoThread:
    """A threading.Thread whose start() fails, as at the interpreter's exit or a thread limit."""
    def __init__(self, *args, **kwargs):
        pass

    def start(self):
        raise RuntimeError("can't start new thread")


@pytest.mark.parametrize("fails", ["the manager's eventfd", "the output's thread"])
def test_a_start_that_fails_after_the_zygote_leaves_no_unit_process_or_fd(monkeypatch, fails):
    import types

    from entry_helpers import fd_links

    from concurrentd import _manager, _output
    units, children, fds = _units(), _children(), fd_links()
    if fails == "the manager's eventfd":
        def no_fd(*args):
            raise OSError(24, "Too many open files")
        monkeypatch.setattr(_manager, "os", types.SimpleNamespace(**{
            **{k: getattr(os, k) for k in dir(os) if not k.startswith("__")}, "eventfd": no_fd}))
        expected = OSError
    else:
        monkeypatch.setattr(_output, "threading", types.SimpleNamespace(Thread=_NoThread))
        expected = RuntimeError
    with pytest.raises(expected):
        TransientUnitPoolExecutor(1, PROPS, warm_units=False)
    monkeypatch.undo()
    assert (_units(), _children(), fd_links()) == (units, children, fds)

"""The testbed: a real systemd comes up in it, and nothing of a box outlives it.

Tests marked `host` boot boxes of their own on the host; the others run inside the session's box
(see conftest.py) and check what that systemd can do.
"""

import glob
import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from concurrentd import testbed
from concurrentd._mountinfo import read_hierarchies
from concurrentd.testbed import Box

PY = sys.executable
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _systemctl_show(unit, prop):
    return subprocess.run(["systemctl", "show", "-p", prop, "--value", unit], check=True,
                          capture_output=True, text=True).stdout.strip()


# -- inside a box (or on a systemd host) ----------------------------------------------------------

def test_systemd_is_running_and_the_bus_answers():
    from jeepney import DBusAddress, new_method_call
    from jeepney.io.blocking import open_dbus_connection

    assert testbed.systemd_is_pid1()
    out = subprocess.run(["systemctl", "is-system-running"], capture_output=True, text=True)
    assert out.stdout.strip() == "running", out
    conn = open_dbus_connection(bus="SYSTEM")
    try:
        bus = DBusAddress("/org/freedesktop/DBus", bus_name="org.freedesktop.DBus",
                          interface="org.freedesktop.DBus")
        reply = conn.send_and_get_reply(new_method_call(bus, "GetNameOwner", "s",
                                                        ("org.freedesktop.systemd1",)))
        assert reply.body[0].startswith(":")
    finally:
        conn.close()


def _unit_cgroup_dir(unit, hierarchy):
    cg = _systemctl_show(unit, "ControlGroup")
    for h in read_hierarchies():
        if (h.version == 1 and hierarchy in h.options) or (h.version == 2 and not any(
                x.version == 1 and hierarchy in x.options for x in read_hierarchies())):
            return h.version, os.path.join(h.mount_point, cg.lstrip("/"))
    pytest.fail(f"no {hierarchy} hierarchy")


def test_cpu_quota_reaches_the_cgroup():
    unit = f"testbed-cpu-{os.getpid()}.service"
    subprocess.run(["systemd-run", "--unit", unit, "-p", "CPUQuota=20%", "sleep", "60"],
                   check=True, capture_output=True)
    try:
        version, d = _unit_cgroup_dir(unit, "cpu")
        if version == 1:
            with open(os.path.join(d, "cpu.cfs_quota_us")) as q, open(os.path.join(d, "cpu.cfs_period_us")) as p:
                quota, period = int(q.read()), int(p.read())
        else:
            with open(os.path.join(d, "cpu.max")) as f:
                quota, period = map(int, f.read().split())
        assert quota / period == pytest.approx(0.2)
    finally:
        subprocess.run(["systemctl", "stop", unit], check=True)


def _oom_kills(version, cgroup_dir):
    name = "memory.oom_control" if version == 1 else "memory.events"
    with open(os.path.join(cgroup_dir, name)) as f:
        fields = dict(line.split() for line in f)
    return int(fields["oom_kill"])


def test_memory_max_oom_kills():
    # The unit outlives the hog (sh waits), so its cgroup's own OOM counter can be read: on
    # cgroup v1 systemd 252 reports such a unit as killed by a signal, not as oom-kill.
    unit = f"testbed-oom-{os.getpid()}.service"
    hog = "x = b'a' * (200 << 20); print('survived')"
    # OOMPolicy=continue: on a pure cgroup v2 host systemd would stop the unit for the kill
    # (its default, stop), and its cgroup with it.
    subprocess.run(["systemd-run", "--unit", unit, "-p", "MemoryMax=50M", "-p",
                    "OOMPolicy=continue", "sh", "-c",
                    f'{PY} -c "{hog}"; sleep 60'], check=True, capture_output=True)
    try:
        version, d = _unit_cgroup_dir(unit, "memory")
        deadline = time.monotonic() + 30
        while _oom_kills(version, d) == 0:
            assert time.monotonic() < deadline, "the hog was not OOM-killed"
            time.sleep(0.05)
        limit = "memory.limit_in_bytes" if version == 1 else "memory.max"
        with open(os.path.join(d, limit)) as f:
            assert int(f.read()) == 50 << 20
    finally:
        subprocess.run(["systemctl", "stop", unit], check=True)


@pytest.mark.parametrize("inner, outer, combined", [
    (0, 0, 0), (1, 0, 1), (0, 1, 1), (2, 1, 2),
    (5, 1, 1), (5, 0, 0), (0, 5, 0), (5, 5, 5),   # -k may leave one half nothing to run
])
def test_the_session_fails_if_either_half_failed(inner, outer, combined):
    from conftest import combined_exit_status

    assert combined_exit_status(inner, outer) == combined


# -- on the host: boxes of our own -----------------------------------------------------------------

def _cgroup_dirs():
    return {root for h in read_hierarchies() for root, _, _ in os.walk(h.own_dir)}


def _ours(paths, name):
    return {p for p in paths if name in p}


@pytest.fixture
def bind_dir():
    """A host directory to show in a box. Not tmp_path: that lies in /tmp, whose contents the
    box's boot removes (`D /tmp`), so a box refuses to show it."""
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="concurrentd-test-") as d:
        yield pathlib.Path(d)


@pytest.mark.host
def test_box_boots_runs_and_leaves_nothing(tmp_path):
    keep = tmp_path / "host-file"
    keep.write_text("mine")
    tmp_before = set(os.listdir("/tmp"))
    mounts_before = open("/proc/self/mountinfo").read()
    with Box() as box:
        assert box.check_output(["systemctl", "is-system-running"]).strip() == "running"
        # the box's /tmp is its own, and writes to / stay in the box
        assert box.run(["sh", "-c", "touch /tmp/box-marker /etc/box-marker"]) == 0
        name, pid1 = box.name, box.pid1
        assert _ours(_cgroup_dirs(), name), "the box runs in sub-cgroups of its own"
    assert not os.path.exists("/tmp/box-marker") and not os.path.exists("/etc/box-marker")
    assert tmp_before <= set(os.listdir("/tmp")), "the box removed files from the host's /tmp"
    assert keep.read_text() == "mine"
    assert open("/proc/self/mountinfo").read() == mounts_before
    assert not _ours(_cgroup_dirs(), name)
    assert not os.path.exists(f"/proc/{pid1}")
    assert not glob.glob(f"/run/concurrentd-testbed/{name}")


@pytest.mark.host
def test_box_checkout_is_read_write(bind_dir):
    with Box(binds=[str(bind_dir)]) as box:
        assert box.run(["sh", "-c", f"echo hi > {bind_dir}/out"]) == 0
    assert (bind_dir / "out").read_text() == "hi\n"


@pytest.mark.host
def test_box_refuses_to_show_a_directory_its_boot_cleans():
    # refused before anything is made: /tmp itself, unlike a directory in it, has no other place
    with pytest.raises(testbed.TestbedError,
                       match=r"^refusing to show /tmp \(asked to bind\) .* tmpfiles rule"):
        Box(binds=["/tmp"])


@pytest.mark.host
def test_a_command_runs_in_a_scope_inside_the_box_cgroups():
    # As on a real host, where every process is in some unit: a command left in the caller's
    # cgroups (above the box's, "/.." seen from inside) would share no cpu cgroup with the units
    # it starts, which slows its pipes to them (benchmarks/README.md, throughput).
    with Box() as box:
        lines = box.check_output(["cat", "/proc/self/cgroup"]).split()
        raw = box.check_output(["cat", "/proc/self/cgroup"], scope=False).split()
    paths = dict(line.split(":", 2)[1:] for line in lines)
    assert not [p for p in paths.values() if p.startswith("/..")], lines
    assert paths[""].endswith(".scope") and paths[""].startswith("/system.slice/run-"), lines
    # without the scope, the v1 hierarchies (if any) still hold it inside the box
    assert not [line for line in raw if not line.startswith("0::") and ":/.." in line], raw


@pytest.mark.host
def test_two_boxes_at_once():
    with Box() as a, Box() as b:
        assert a.name != b.name and a.pid1 != b.pid1
        for box in (a, b):
            assert box.run(["systemd-run", "--unit", "same-name", "sleep", "30"]) == 0
        assert a.check_output(["systemctl", "is-active", "same-name"]).strip() == "active"
        ns = {box.check_output(["readlink", "/proc/1/ns/pid"]) for box in (a, b)}
        assert len(ns) == 2


@pytest.mark.host
def test_exception_in_the_with_block_tears_down():
    with pytest.raises(ZeroDivisionError):
        with Box() as box:
            name, pid1 = box.name, box.pid1
            1 / 0  # noqa: B018 - the error the test is about
    assert not os.path.exists(f"/proc/{pid1}")
    assert not _ours(_cgroup_dirs(), name)


def _as_from_a_terminal():
    """In the CLI's process, before exec: SIGINT and SIGHUP handled by default, as a shell
    leaves them for a foreground command. pytest may have inherited them ignored (nohup ignores
    SIGHUP, a script's background command SIGINT), and the CLI, as any program, keeps ignoring a
    signal ignored when it started: the test would signal nothing."""
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def _start_cli(bind_dir, preexec_fn=_as_from_a_terminal):
    """A testbed CLI running `sleep` in a box, once the box runs it."""
    ready = bind_dir / "ready"
    proc = subprocess.Popen([PY, "-m", "concurrentd.testbed", "--bind", str(bind_dir), "--",
                             "sh", "-c", f"echo $$ > {ready}; exec sleep 1000"],
                            preexec_fn=preexec_fn)
    deadline = time.monotonic() + 30
    while not ready.exists() or not ready.read_text().strip():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    return proc


@pytest.mark.host
@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 128 + signal.SIGTERM),
                                         (signal.SIGINT, 130),
                                         (signal.SIGHUP, 128 + signal.SIGHUP)])
def test_cli_tears_down_on_signal(bind_dir, sig, status):
    proc = _start_cli(bind_dir)
    boxes = glob.glob(f"/run/concurrentd-testbed/{proc.pid}-*")
    assert len(boxes) == 1
    name = os.path.basename(boxes[0])
    members = {int(p) for d in _ours(_cgroup_dirs(), name)
               for p in open(os.path.join(d, "cgroup.procs")).read().split()}
    assert members, "the box's processes are in its sub-cgroups"
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == status
    assert not [p for p in members if os.path.exists(f"/proc/{p}")]
    assert not _ours(_cgroup_dirs(), name)
    assert not os.path.exists(boxes[0])


@pytest.mark.host
def test_cli_under_nohup_keeps_its_box_on_a_hangup(bind_dir):
    # nohup leaves SIGHUP ignored so that the command outlives its terminal; its box must too
    proc = _start_cli(bind_dir, lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    proc.send_signal(signal.SIGHUP)
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM


@pytest.mark.host
def test_cli_tears_down_on_signal_when_pytest_runs_under_nohup():
    # as `nohup python -m pytest &` in a script: SIGHUP and SIGINT ignored, and inherited so
    ignoring = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                "signal.signal(signal.SIGHUP, signal.SIG_IGN); "
                "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")
    out = subprocess.run([PY, "-c", ignoring, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          f"{__file__}::test_cli_tears_down_on_signal"],
                         env=dict(os.environ, CONCURRENTD_TESTBED="never"), cwd=CHECKOUT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "3 passed" in out.stdout, out.stdout + out.stderr


@pytest.mark.host
def test_a_host_test_that_leaves_a_process_running_errors_and_the_process_is_stopped(tmp_path):
    # conftest's check after each host test; here it finds a `sleep` a test forgot
    leaky = tmp_path / "test_leaky.py"
    leaky.write_text("import subprocess, pytest\n\n@pytest.mark.host\ndef test_leaks():\n"
                     "    subprocess.Popen(['sleep', '120'])\n")
    out = subprocess.run([PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "conftest",
                          "-W", "ignore::pytest.PytestUnknownMarkWarning", str(leaky)],
                         env=dict(os.environ, CONCURRENTD_TESTBED="never"), cwd=CHECKOUT,
                         capture_output=True, text=True, timeout=120)
    left = re.search(r"left running or behind: process (\d+) \(sleep 120\)", out.stdout)
    assert left and "1 passed, 1 error" in out.stdout, out.stdout + out.stderr
    assert not os.path.exists(f"/proc/{left[1]}"), "it was stopped"


@pytest.mark.host
def test_cli_exit_status_and_missing_command():
    run = lambda *cmd: subprocess.run([PY, "-m", "concurrentd.testbed", "--", *cmd],   # noqa: E731
                                      capture_output=True, text=True)
    assert run("sh", "-c", "exit 7").returncode == 7
    missing = run("no-such-command-here")
    assert missing.returncode == 127
    assert "no-such-command-here: command not found" in missing.stderr


@pytest.mark.host
def test_cli_refuses_without_root():
    from concurrentd.testbed.__main__ import main

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            sys.stderr = open(w, "w", closefd=False)
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            code = main(["--", "true"])
            sys.stderr.flush()
        finally:
            os._exit(locals().get("code", 99))
    os.close(w)
    err = os.read(r, 4096).decode()
    os.close(r)
    _, st = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(st) == 2
    assert err.count("\n") == 1 and "must run as root" in err


# -- the box's boot must not change host files it shows ------------------------------------------

# Runs in a private mount namespace (unshare -m) with a tmpfs over every path in spec["tmpfs"], so
# the host's own directories are never at stake, even if the box is broken. Fills each with a tree,
# runs the testbed CLI (argv after the JSON spec), and reports its status, output and what changed.
# The CLI imports concurrentd from this checkout, shown at /mnt/checkout: the tmpfs may hide it.
_IN_PRIVATE_NAMESPACE = r"""
import ctypes, json, os, subprocess, sys

spec = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)

def mount(source, target, fstype=None, flags=0, data=None):
    if libc.mount(source and source.encode(), target.encode(), fstype and fstype.encode(), flags,
                  data and data.encode()) != 0:
        raise OSError(ctypes.get_errno(), f"mount {source} on {target}")

checkout = os.open(spec["checkout"], os.O_PATH | os.O_DIRECTORY)
for path in ["/mnt", *spec["tmpfs"]]:
    os.makedirs(path, exist_ok=True)
    mount("testbed-test", path, "tmpfs", 0, "mode=" + spec["modes"].get(path, "755"))
os.mkdir("/mnt/checkout")
mount(f"/proc/self/fd/{checkout}", "/mnt/checkout", None, 4096 | 16384)   # MS_BIND | MS_REC
env = dict(os.environ, PYTHONPATH="/mnt/checkout")

def fill(top):
    for rel, mode, data in [("plain", 0o644, b"plain\n"), ("secret", 0o600, b"\x00\x01binary"),
                            ("run.sh", 0o755, b"#!/bin/sh\n"), ("dir/nested/deep", 0o640, b"deep"),
                            (".hidden", 0o644, b"dot"), (".X11-unix/X0", 0o644, b""),
                            (".X0-lock", 0o444, b"42\n"),
                            ("systemd-private-0123-foo.service-AbCd/tmp/kept", 0o644, b"kept"),
                            ("old/file", 0o644, b"old")]:
        p = os.path.join(top, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
        os.chmod(p, mode)
    os.symlink("plain", os.path.join(top, "link"))
    os.utime(os.path.join(top, "old/file"), (0, 0))   # older than any cleaning age
    os.chmod(os.path.join(top, "dir"), 0o700)

def snapshot(top):
    tree = {}
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            p = os.path.join(root, name)
            st = os.lstat(p)
            if os.path.islink(p):
                what = "-> " + os.readlink(p)
            elif os.path.isdir(p):
                what = "dir"
            else:
                what = open(p, "rb").read().hex()
            tree[os.path.relpath(p, top)] = [st.st_mode, st.st_uid, st.st_gid, what]
    st = os.lstat(top)
    tree["."] = [st.st_mode, st.st_uid, st.st_gid, "dir"]
    return tree

for top in spec["fill"]:
    os.makedirs(top, exist_ok=True)
    fill(top)
before = {top: snapshot(top) for top in spec["fill"]}
proc = subprocess.run(spec["argv"], cwd=spec["cwd"], env=env, capture_output=True, text=True,
                      timeout=120)
after = {top: snapshot(top) for top in spec["fill"]}
changed = {top: sorted(k for k in set(before[top]) | set(after[top])
                       if before[top].get(k) != after[top].get(k)) for top in spec["fill"]}
print(json.dumps({"status": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr,
                  "changed": changed}))
"""


def _in_private_namespace(cwd, binds=(), command=("true",), tmpfs=("/tmp", "/var/tmp", "/home")):
    """Runs the testbed CLI from `cwd` with `binds` and `command`, each directory a tmpfs-backed
    tree in a namespace of its own; returns (exit status, stdout, stderr, {tree: paths whose
    content, mode, owner or presence changed})."""
    import json

    fill = sorted({cwd, *binds})
    assert all(any(f == t or f.startswith(t + "/") for t in tmpfs) for f in fill), "only tmpfs"
    spec = {"tmpfs": list(tmpfs), "modes": {"/tmp": "1777", "/var/tmp": "1777"},
            "fill": fill, "cwd": cwd, "checkout": CHECKOUT,
            "argv": [PY, "-m", "concurrentd.testbed",
                     *[a for b in binds for a in ("--bind", b)], "--", *command]}
    out = subprocess.run(["unshare", "-m", "--propagation", "private", PY, "-c",
                          _IN_PRIVATE_NAMESPACE, json.dumps(spec)],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    return report["status"], report["stdout"], report["stderr"], report["changed"]


@pytest.mark.host
@pytest.mark.parametrize("cwd, binds", [("/tmp", ()), ("/var/tmp", ()), ("/home/tester", ("/tmp",)),
                                        ("/home/tester", ("/var/tmp",))])
def test_a_directory_the_boot_cleans_is_refused_and_left_alone(cwd, binds):
    # The box's systemd runs systemd-tmpfiles --create --remove --boot: shown read-write, the
    # host's /tmp would be emptied (`D /tmp`) and /var/tmp's systemd-private-* removed.
    status, _, stderr, changed = _in_private_namespace(cwd, binds)
    assert changed == {top: [] for top in changed}, "the box changed files of the host"
    path = binds[0] if binds else cwd
    assert status == 2, stderr
    assert stderr.count("\n") == 1 and f"refusing to show {path} " in stderr, stderr
    assert "tmpfiles rule" in stderr, stderr


@pytest.mark.host
def test_a_home_directory_no_boot_rule_touches_works_and_is_left_alone():
    status, _, stderr, changed = _in_private_namespace("/home/tester")
    assert (status, stderr) == (0, "")
    assert changed == {"/home/tester": []}


@pytest.mark.host
@pytest.mark.parametrize("cwd, binds, shown", [
    ("/tmp/clone", (), "/tmp/clone"),                  # a clone under /tmp: README's commands
    ("/home/tester", ("/tmp/out",), "/tmp/out"),       # --bind of a directory in /tmp
])
def test_a_directory_in_tmp_is_shown_elsewhere_linked_and_left_alone(cwd, binds, shown):
    # `D /tmp` would empty it at its own path: the box mounts it under ELSEWHERE, and links its
    # own path there once booted, so both paths reach the host's directory
    script = (f"cd {shown} && pwd -P && readlink {shown} && echo hi > {shown}/written && "
              f"cd {cwd} && pwd -P")
    status, stdout, stderr, changed = _in_private_namespace(cwd, binds, ["sh", "-c", script])
    assert (status, stderr) == (0, ""), stderr
    from concurrentd.testbed.box import ELSEWHERE
    in_box = ELSEWHERE + shown
    assert stdout.split() == [in_box, in_box, in_box if cwd == shown else cwd]
    expected = {top: ["written"] if top == shown else [] for top in {cwd, shown}}
    assert changed == expected, "the box changed other files of the host"

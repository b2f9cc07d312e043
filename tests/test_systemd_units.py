"""Transient unit lifecycle and errors against a real systemd (PID 1 of a testbed box)."""

import gc
import os
import signal
import subprocess
import time

import pytest
from entry_helpers import fd_links

from concurrentd.systemd import (
    Systemd,
    SystemdError,
    SystemdUnreachable,
    UnitStartError,
    convert_properties,
)


@pytest.fixture
def sd():
    with Systemd.connect() as sd:
        yield sd


def show(unit, *props):
    out = subprocess.run(["systemctl", "show", "-p", ",".join(props), unit],
                         capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def leftover_units():
    out = subprocess.run(["systemctl", "list-units", "--all", "--plain", "--no-legend", "concurrentd-*.service"],
                         capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line.strip()]


def test_lifecycle_readback_stop_twice(sd):
    unit = sd.start_service(["/bin/sleep", "60"], {"MemoryMax": "100M", "CPUQuota": 0.2})
    assert unit.name.startswith(f"concurrentd-{os.getpid()}-") and unit.name.endswith(".service")
    pid = unit.main_pid
    assert pid > 0 and open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0] == b"/bin/sleep"
    assert unit.control_group.endswith("/" + unit.name)
    assert unit.get("Type") == "exec" and unit.get("MemoryMax") == 100 << 20
    assert unit.get("CPUQuotaPerSecUSec") == 200000
    assert unit.get("CollectMode", "Unit") == "inactive-or-failed"
    assert show(unit.name, "MainPID", "ActiveState") == {"MainPID": str(pid), "ActiveState": "active"}
    assert str(os.getpid()) in unit.get("Description", "Unit")
    unit.stop()
    assert unit.active_state == "inactive"
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    unit.stop()  # harmless a second time (unit is gone)
    unit.reset_failed()


def test_kill_and_reset_failed(sd):
    unit = sd.start_service(["/bin/sleep", "60"], {"CollectMode": "inactive"})
    unit.kill(signal.SIGKILL, who="main")
    for _ in range(100):
        if unit.active_state == "failed":
            break
        time.sleep(0.02)
    assert unit.active_state == "failed"
    assert unit.get("Result") == "signal"
    unit.reset_failed()
    unit.stop()
    assert not leftover_units() or unit.name not in " ".join(leftover_units())


def test_existing_unit_and_no_such_unit(sd):
    assert sd.unit("dbus.service").get("Id", "Unit") == "dbus.service"
    with pytest.raises(SystemdError) as exc:
        sd.unit("no-such-thing.service")
    assert exc.value.name == "org.freedesktop.systemd1.NoSuchUnit"
    assert "no-such-thing.service" in exc.value.message


def test_unit_exists(sd):
    unit = sd.start_service(["/bin/sleep", "60"], {})
    try:
        with pytest.raises(SystemdError) as exc:
            sd.start_service(["/bin/sleep", "60"], {}, name=unit.name)
        assert exc.value.name == "org.freedesktop.systemd1.UnitExists"
    finally:
        unit.stop()


def test_invalid_args_from_systemd(sd):
    with pytest.raises(SystemdError) as exc:  # the converter accepts any string; systemd does not
        sd.start_service(["/bin/sleep", "60"], {"ProtectSystem": "sideways"})
    assert exc.value.name == "org.freedesktop.DBus.Error.InvalidArgs"
    assert "ProtectSystem" in exc.value.message


def test_conversion_errors_are_raised_before_sending(sd):
    sent = sd.conn.send
    calls = []
    sd.conn.send = lambda msg: calls.append(msg) or sent(msg)
    with pytest.raises(ValueError, match="MemoryMax"):
        sd.start_service(["/bin/sleep", "60"], {"MemoryMax": "plenty"})
    with pytest.raises(ValueError, match="did you mean CPUQuota"):
        sd.start_service(["/bin/sleep", "60"], {"CPUQuoat": "20%"})
    assert calls == []


def test_failed_start_reports_systemds_reason(sd):
    with pytest.raises(UnitStartError) as exc:
        sd.start_service(["/nonexistent/program"], {})
    e = exc.value
    assert e.result == "failed"
    assert e.details.get("ExecMainStatus") == 203 and e.details.get("Result") == "exit-code"
    assert "203" in str(e)
    with pytest.raises(UnitStartError) as exc:
        sd.start_service(["/bin/sleep", "60"], {"User": "no-such-user-xyz"})
    assert exc.value.details.get("ExecMainStatus") == 217  # EXIT_USER


def test_begin_service_returns_with_the_job_queued_and_wait_ends_it(sd):
    starting = sd.begin_service(["/bin/sleep", "60"], {"PrivateTmp": True, "User": "nobody"})
    assert starting.job.startswith("/org/freedesktop/systemd1/job/")
    # Systemd's part runs meanwhile: the connection is free for other calls.
    assert sd.unit(starting.unit.name).name == starting.unit.name
    unit = starting.wait()
    assert unit.active_state == "active" and unit.main_pid > 0
    # announced before the job's end, so known without asking
    assert starting.announced["MainPID"] == starting.main_pid == unit.main_pid
    unit.stop()
    failing = sd.begin_service(["/nonexistent/program"], {})
    with pytest.raises(UnitStartError) as exc:
        failing.wait()
    assert exc.value.details.get("ExecMainStatus") == 203
    assert not sd._watched, "a finished start leaves nothing watched"


def test_private_socket_peer_to_peer():
    with Systemd.connect("/run/systemd/private") as sd:
        assert sd.conn.address.p2p and sd.conn.unique_name is None
        unit = sd.start_service(["/bin/sleep", "60"], {"TasksMax": 10})
        assert unit.get("TasksMax") == 10
        unit.stop()


def test_private_socket_answers_the_first_call_of_every_connection():
    # systemd 252 leaves a call that it reads together with the client's BEGIN unanswered until
    # more bytes come. The handshake sends BEGIN with AUTH, and a call only after AUTH's OK, so
    # that never happens; one that sent BEGIN just before its first call went unanswered in 4
    # connections out of 5 (a lone call; a second call in flight woke systemd up).
    for _ in range(50):
        with Systemd.connect("/run/systemd/private") as sd:
            (path,) = sd.conn.call(sd.manager.get_unit("dbus.service"), timeout=2)
            assert path == "/org/freedesktop/systemd1/unit/dbus_2eservice"


def test_unreachable_names_the_fix(tmp_path):
    with pytest.raises(SystemdUnreachable) as exc:
        Systemd.connect(f"unix:path={tmp_path}/nothing")
    assert isinstance(exc.value, ConnectionError)
    assert "systemd is not reachable" in str(exc.value) and "concurrentd.testbed" in str(exc.value)


def _answering(path, answer: bytes):
    """A socket at ``path`` whose server reads the client's first bytes and answers ``answer``."""
    import socket
    import threading

    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def serve():
        conn, _ = server.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(answer)
            conn.recv(4096)   # until the client closes

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, thread


@pytest.mark.parametrize("answer, says", [(b"REJECTED EXTERNAL\r\n", "AUTH EXTERNAL refused: REJECTED EXTERNAL"),
                                          (b"", "no answer to AUTH in 0.3 s")])
def test_a_refused_or_silent_handshake_names_the_address(tmp_path, answer, says):
    server, thread = _answering(tmp_path / "bus", answer)
    with server, pytest.raises(SystemdUnreachable) as exc:
        Systemd.connect(f"unix:path={tmp_path}/bus", timeout=0.3)
    thread.join(5)
    assert f"(bus at {tmp_path}/bus: {says})" in str(exc.value)


def test_not_root_is_permission_error():
    code = ("import os; os.setgid(65534); os.setuid(65534)\n"
            "from concurrentd.systemd import Systemd\n"
            "try:\n"
            "    sd = Systemd.connect(); sd.start_service(['/bin/sleep', '1'], {})\n"
            "except PermissionError as e:\n"
            "    print('PermissionError', e)\n")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import sys
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if "PermissionError" not in out.stdout and ("Permission denied" in out.stderr
                                                or "ModuleNotFoundError" in out.stderr):
        pytest.skip("nobody cannot run this Python (root's home is 0700)")
    assert "PermissionError" in out.stdout, out.stderr
    assert "root" in out.stdout


def _fd_count():
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.slow
def test_200_units_no_leftovers_no_fd_leak():
    before, units = _fd_count(), leftover_units()   # (a pool of another test may be ending)
    with Systemd.connect() as sd:
        during = _fd_count()
        for _ in range(200):
            unit = sd.start_service(["/bin/sleep", "60"], {"MemoryMax": "50M"})
            unit.stop()
        assert _fd_count() == during
        assert len(sd.conn.signals) == 0
    assert _fd_count() == before
    assert [u for u in leftover_units() if u not in units and "concurrentd: sleep " in u] == []
    for _ in range(20):  # connections too
        Systemd.connect().close()
    assert _fd_count() == before


def test_a_connection_dropped_unclosed_is_freed_without_the_garbage_collector():
    # A Systemd and its connection hold no reference cycle: one dropped without close() (a bug,
    # such as a session left unreleased) frees its socket as its last reference goes, not only
    # once the garbage collector runs.
    gc.disable()
    try:
        before = fd_links()
        sd = Systemd.connect()
        unit = sd.start_service(["/bin/sleep", "60"])   # (the connection keeps signals for it)
        unit.stop()
        with pytest.warns(ResourceWarning, match="unclosed"):
            del sd, unit
        assert fd_links() == before
    finally:
        gc.enable()


def test_version_is_the_managers_own(sd):
    out = subprocess.run(["systemctl", "--version"], capture_output=True, text=True,
                         check=True).stdout
    assert sd.version() == int(out.split()[1])
    assert sd.version() is sd.version()   # read once per connection


def test_restrict_namespaces_means_what_this_managers_systemd_run_means(sd):
    # "no" and "~user" are converted against every namespace, time included; a manager that
    # counts time out of "all" (systemd < 258) gets the bit dropped, as its systemd-run sends it.
    from concurrentd.systemd.properties import CLONE_NEWTIME, TIME_IN_ALL_SINCE
    for value in ("no", "~user"):
        (prop,) = convert_properties({"RestrictNamespaces": value})
        assert prop[1][1] & CLONE_NEWTIME
        ((_, (_, sent)),) = sd._for_this_manager([prop])
        assert bool(sent & CLONE_NEWTIME) == (sd.version() >= TIME_IN_ALL_SINCE)
    explicit = convert_properties({"RestrictNamespaces": "net ipc"})
    assert sd._for_this_manager(explicit) == explicit

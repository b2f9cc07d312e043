"""Prepared units (concurrentd._warm), on a real systemd: the next unit for the same properties
is started before it is asked for; every call still gets a fresh unit of its own."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from entry_helpers import fd_links

from concurrentd import TransientUnitPoolExecutor, _warm, run

PROPS = {"User": "nobody", "PrivateTmp": True}
T = 20
REPO = Path(__file__).resolve().parent.parent


def _units():
    out = subprocess.run(["systemctl", "list-units", "--plain", "--no-legend", "concurrentd-*"],
                         capture_output=True, text=True, check=True).stdout
    return sorted(line.split()[0] for line in out.splitlines() if line.strip())


def _wait_until(predicate, timeout=T):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _unit_and_tmp():
    """The unit this call runs in, what its /tmp held, and a mark left there."""
    import re
    unit = re.search(r"concurrentd-[\w-]+\.service", open("/proc/self/cgroup").read()).group()
    seen = sorted(os.listdir("/tmp"))
    open("/tmp/left-by-a-call", "w").close()
    return unit, seen


def test_each_call_gets_a_fresh_unit_and_the_next_is_prepared():
    first_unit, first_tmp = run(_unit_and_tmp, properties=PROPS)
    _wait_until(lambda: _warm._prepared._ready)   # the next one, prepared
    ((session, _),) = _warm._prepared._ready.values()
    prepared = session.unit.name
    assert prepared != first_unit and prepared in _units()
    second_unit, second_tmp = run(_unit_and_tmp, properties=PROPS)
    assert second_unit == prepared   # it took the prepared unit ...
    assert first_tmp == second_tmp == []   # ... with a /tmp of its own
    _wait_until(lambda: first_unit not in _units() and second_unit not in _units())


def _environment_value():
    return os.environ.get("WHICH")


def test_a_prepared_unit_goes_only_to_the_same_properties():
    run(_environment_value, properties={**PROPS, "Environment": "WHICH=a"})
    _wait_until(lambda: _warm._prepared._ready)
    assert run(_environment_value, properties={**PROPS, "Environment": "WHICH=b"}) == "b"
    assert run(_environment_value, properties={**PROPS, "Environment": "WHICH=a"}) == "a"


def test_warm_units_false_prepares_nothing():
    before = _units()
    with TransientUnitPoolExecutor(1, PROPS, warm_units=False) as pool:
        pool.submit(abs, 1).result(timeout=T)
    assert run(abs, -1, properties=PROPS, warm_units=False) == 1
    time.sleep(0.3)
    assert not _warm._prepared._ready and not _warm._prepared._wanted
    _wait_until(lambda: set(_units()) <= set(before))


def test_an_unused_prepared_unit_is_stopped_when_idle(monkeypatch):
    monkeypatch.setattr(_warm, "IDLE_SECONDS", 0.5)
    before = _units()
    run(abs, -1, properties=PROPS)
    _wait_until(lambda: _warm._prepared._ready)
    _wait_until(lambda: not _warm._prepared._ready and _units() == before)


def test_a_prepared_unit_stopped_from_outside_is_not_used():
    run(abs, -1, properties=PROPS)
    _wait_until(lambda: _warm._prepared._ready)
    ((session, _),) = _warm._prepared._ready.values()
    subprocess.run(["systemctl", "stop", session.unit.name], check=True)
    assert run(abs, -2, properties=PROPS) == 2


OWNER = """
    import os, sys, time
    from concurrentd import run
    run(abs, -1, properties={"PrivateTmp": True})
    while not __import__("concurrentd._warm")._warm._prepared._ready:
        time.sleep(0.01)
    print("prepared", flush=True)
    sys.stdin.readline()   # then exit (or be killed before)
"""


@pytest.mark.parametrize("end", ["exits", "killed"])
def test_prepared_units_go_when_the_owner_ends(tmp_path, end):
    script = tmp_path / "owner.py"
    script.write_text(textwrap.dedent(OWNER))
    owner = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    owners = lambda: [u for u in _units() if u.startswith(f"concurrentd-{owner.pid}-")]  # noqa: E731
    assert owner.stdout.readline() == "prepared\n"
    assert owners(), "the prepared unit runs"
    if end == "killed":
        owner.send_signal(signal.SIGKILL)
    owner.stdin.close()
    owner.wait(timeout=T)
    _wait_until(lambda: not owners())


def test_a_unit_whose_start_time_matters_is_never_prepared():
    # RuntimeMaxSec= counts from the unit's start; a prepared unit's would have run down.
    with TransientUnitPoolExecutor(1, {**PROPS, "RuntimeMaxSec": "2s"}) as pool:
        pool.submit(abs, 1).result(timeout=T)
    with TransientUnitPoolExecutor(1, {**PROPS, "ConditionPathExists": "/"}) as pool:
        pool.submit(abs, 1).result(timeout=T)
    time.sleep(0.3)
    assert not _warm._prepared._ready and not _warm._prepared._wanted


def _unit_zygote_and_tmp():
    unit, tmp = _unit_and_tmp()
    return unit, os.getppid(), tmp, os.getuid()


def test_a_fresh_pool_takes_a_prepared_zygote_of_its_own_each_time():
    import multiprocessing
    ctx = multiprocessing.get_context("forkserver")
    first = run(_unit_zygote_and_tmp, properties=PROPS, mp_context=ctx)
    _wait_until(lambda: _warm._prepared._ready)
    ((session, _),) = _warm._prepared._ready.values()
    assert session.zygote is not None   # entered, its first worker forked
    second = run(_unit_zygote_and_tmp, properties=PROPS, mp_context=ctx)
    assert second[:2] == (session.unit.name, session.zygote.pid)
    assert first[0] != second[0] and first[1] != second[1]   # a unit and a zygote of its own
    assert first[2] == second[2] == [] and first[3] == second[3] != 0
    # with an initializer, the zygote is not prepared (only the unit)
    with TransientUnitPoolExecutor(1, PROPS, mp_context=ctx, initializer=abs, initargs=(1,)) as p:
        p.submit(abs, 1).result(timeout=T)
    _wait_until(lambda: len(_warm._prepared._ready) == 2)
    assert sum(s.zygote is None for s, _ in _warm._prepared._ready.values()) == 1


def _read_input():
    return open("/input.txt").read()


def test_a_unit_with_paths_is_never_prepared(tmp_path):
    # Paths are resolved as a unit starts: a unit prepared after call N would bind call N's
    # input (replaced since by an atomic rename) into call N+1 (red team, F3).
    job = tmp_path / "input.txt"
    props = {**PROPS, "BindReadOnlyPaths": f"{job}:/input.txt"}
    for who in ("alice's tax return", "bob's medical record", "carol's keys"):
        (tmp_path / "next").write_text(who)
        os.chmod(tmp_path / "next", 0o644)
        os.replace(tmp_path / "next", job)
        assert run(_read_input, properties=props) == who
        time.sleep(0.3)   # time enough to prepare the next unit, if it were
    assert not _warm._prepared._ready


def _sleep_then_abs(x):
    time.sleep(1.0)
    return abs(x)


def test_the_next_unit_is_prepared_only_once_the_pool_unit_is_stopped():
    # A task of this pool, perhaps an attacker's, must not run beside the next unit's zygote
    # while it enters (red team, F1).
    pool = TransientUnitPoolExecutor(1, PROPS)
    running = pool.submit(_sleep_then_abs, -3)
    pool.shutdown(wait=False)
    time.sleep(0.5)
    assert not running.done()
    assert not _warm._prepared._ready and not _warm._prepared._wanted
    assert running.result(timeout=T) == 3
    _wait_until(lambda: _warm._prepared._ready)


def test_a_unit_is_not_prepared_with_a_sys_path_other_than_its_key(tmp_path):
    # The key says which directories the unit binds for imports: a sys.path changed between the
    # pool's start and the next unit's preparation must not give that unit other binds (F6).
    import sys
    pool = TransientUnitPoolExecutor(1, PROPS)
    pool.submit(abs, 1).result(timeout=T)
    sys.path.append(str(tmp_path))
    try:
        pool.shutdown()
        time.sleep(0.5)
        assert not _warm._prepared._ready
    finally:
        sys.path.remove(str(tmp_path))


def test_a_preparation_that_fails_leaves_no_connection_behind():
    # A unit whose start fails (here: a user that does not exist; under load: a timeout) is
    # released at once: its D-Bus connection is not left to the garbage collector (it is in a
    # reference cycle), nor the unit to its anchor.
    import gc

    props = {"User": "concurrentd-no-such-user", "PrivateTmp": True}
    _warm.stop_all()
    before = fd_links()
    gc.disable()
    try:
        _warm.want(_warm.key_of(props, False), props, False)
        _wait_until(lambda: not _warm._prepared._wanted and fd_links() == before, timeout=10)
        assert fd_links() == before
    finally:
        gc.enable()
        _warm.stop_all()


def test_a_unit_asked_for_while_it_is_being_prepared_is_prepared_once(monkeypatch):
    # The next pool with the same properties may end before the unit asked for by the previous
    # one is ready (a slow start under load), and ask again. A second preparation of that key
    # replaced the first in the ready units, which was dropped unreleased: its unit left running,
    # its D-Bus connection (in a reference cycle) open until the garbage collector ran.
    import gc
    import threading

    from concurrentd import _session

    begin_unit = _session.UnitSession.begin_unit
    starting, go, begun = threading.Event(), threading.Event(), []
    prepare, prepared = _warm._Prepared._prepare, []

    def slow_begin_unit(*args, **kwargs):   # the preparation's start, held until the next want
        begun.append(1)
        starting.set()
        go.wait(T)
        return begin_unit(*args, **kwargs)

    def counted_prepare(self, *args):
        try:
            prepare(self, *args)
        finally:
            prepared.append(1)

    monkeypatch.setattr(_session.UnitSession, "begin_unit", slow_begin_unit)
    monkeypatch.setattr(_warm._Prepared, "_prepare", counted_prepare)
    key = _warm.key_of(PROPS, False)
    _warm.stop_all()
    units, fds = _units(), fd_links()
    gc.disable()
    try:
        _warm.want(key, PROPS, False)
        assert starting.wait(T)
        _warm.want(key, PROPS, False)   # while the first is being prepared
        go.set()
        _wait_until(lambda: len(prepared) == len(begun) and not _warm._prepared._wanted)
        assert key in _warm._prepared._ready
        _warm.stop_all()
        assert fd_links() == fds
        assert _units() == units
        assert len(begun) == 1   # and no unit was started for nothing
    finally:
        go.set()
        gc.enable()
        _warm.stop_all()
        gc.collect()
        for unit in set(_units()) - set(units):   # a dropped session's unit, if any
            subprocess.run(["systemctl", "stop", unit], check=False)

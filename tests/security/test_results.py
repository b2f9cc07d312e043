"""Attacks through what a worker sends back: a result or an exception that would run code in the
owner when unpickled, a raw frame written on the result pipe, a frame that claims a gigabyte, a
frame that stops half-way, a result for another worker's task.

Each attack's marker is a file the owner would create (os.system runs ``touch``): the tests check
it does not exist. ``trust_results=True`` is the opt-out, which behaves as before: the tests that
run the attack against it show the attack is real.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
import uuid
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

import concurrentd
from concurrentd import ResultRefused, TransientUnitPoolExecutor, WorkerKilled

PROPS = {"User": "nobody", "PrivateTmp": True}
T = 30


def _marker() -> Path:
    # Under /run: the owner can write it, the unit's nobody cannot (so only the owner makes it).
    return Path("/run") / f"concurrentd-pwned-{uuid.uuid4().hex}"


class RunsInOwner:
    """Unpickled, runs ``touch path``: in whichever process unpickles it."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


class Raises(Exception):
    pass


def return_payload(path):
    return {"ok": [1, 2, RunsInOwner(path)]}


def raise_payload(path):
    raise Raises("look", RunsInOwner(path))


def raise_reducing_exception(path):
    class Evil(Exception):
        def __reduce__(self):
            return os.system, (f"touch {path}",)
    raise Evil()


def _pipes(writable: bool) -> list[int]:
    """The worker's pipe fds other than stdin/stdout/stderr that it may write (or read)."""
    fds = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd <= 2:
            continue
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:") and \
                    _writable(fd) == writable:
                fds.append(fd)
        except OSError:   # the fd of the listing itself, closed since
            pass
    return fds


def _pipes_to_owner() -> list[int]:
    return _pipes(writable=True)


def _writable(fd: int) -> bool:
    import fcntl
    return fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE != os.O_RDONLY


def write_raw_frame(path, work_ids=range(0, 64)):
    """What an attacker does with no pickling of its own: a RESULT frame of os.system, for every
    work id it might be running, on every pipe it can write."""
    import pickle

    from concurrentd import _protocol as P

    blob = pickle.dumps(RunsInOwner(path))
    for fd in _pipes_to_owner():
        for work_id in work_ids:
            try:
                os.write(fd, P.frame(P.RESULT, work_id, blob))
            except OSError:
                pass
    return "sent"


@pytest.mark.parametrize("task", [return_payload, raise_payload, raise_reducing_exception])
def test_a_result_or_exception_never_runs_code_in_the_owner(task):
    marker = _marker()
    with TransientUnitPoolExecutor(1, PROPS) as pool:
        error = pool.submit(task, str(marker)).exception(timeout=T)
        assert pool.submit(abs, -3).result(timeout=T) == 3   # the pool is unharmed
    assert not marker.exists(), "the worker's result ran a command in the owner"
    assert isinstance(error, (ResultRefused, Raises)), error
    if isinstance(error, ResultRefused):
        assert "result_types=" in str(error) or "not loaded" in str(error), error


def test_the_opt_out_is_the_old_behaviour_and_the_attack_is_real():
    marker = _marker()
    try:
        with TransientUnitPoolExecutor(1, PROPS, trust_results=True) as pool:
            pool.submit(return_payload, str(marker)).exception(timeout=T)
        assert marker.exists(), "with trust_results=True the owner unpickles as pickle does"
    finally:
        marker.unlink(missing_ok=True)


def test_a_raw_frame_on_the_result_pipe_never_runs_code_in_the_owner():
    marker = _marker()
    # One task per worker: the forged frames for the next work ids would otherwise answer the
    # next task given to that worker (a reused worker is the attacker's: see SECURITY.md).
    # (Python 3.10 has no max_tasks_per_child: there the pool is not given a next task.)
    one_each = {"max_tasks_per_child": 1} if sys.version_info >= (3, 11) else {}
    with TransientUnitPoolExecutor(1, PROPS, on_worker_death="replace", **one_each) as pool:
        f = pool.submit(write_raw_frame, str(marker))
        error = f.exception(timeout=T)
        if one_each:
            assert pool.submit(abs, -4).result(timeout=T) == 4
    assert not marker.exists(), "a raw frame ran a command in the owner"
    assert isinstance(error, (ResultRefused, WorkerKilled)), error


def test_run_sandboxed_and_a_pools_process_refuse_code_too():
    marker = _marker()
    with pytest.raises(ResultRefused):
        concurrentd.run(return_payload, str(marker), properties=PROPS)
    sandboxed = concurrentd.sandboxed(**PROPS)(return_payload)
    with pytest.raises(ResultRefused):
        sandboxed(str(marker))
    with TransientUnitPoolExecutor(1, PROPS) as pool:
        # a Process in the pool's unit holds no pipe the owner reads results from
        p = concurrentd.TransientUnitProcess(target=write_raw_frame, args=(str(marker),), pool=pool)
        p.start()
        p.join(T)
        assert pool.submit(abs, -5).result(timeout=T) == 5
    assert not marker.exists()


def test_allowed_types_and_named_types_round_trip():
    import collections
    import datetime
    import decimal
    import fractions
    import pathlib

    values = [None, 1, 2.5, "s", b"b", bytearray(b"ba"), [1], (2,), {3: 4}, {5}, frozenset({6}),
              complex(1, 2), range(3), datetime.datetime(2026, 11, 29, tzinfo=datetime.timezone.utc),
              datetime.timedelta(seconds=3), decimal.Decimal("1.5"), fractions.Fraction(1, 3),
              uuid.UUID(int=7), collections.OrderedDict(a=1), collections.Counter("aab"),
              pathlib.PurePosixPath("/a/b"), ValueError("v")]
    with TransientUnitPoolExecutor(1, PROPS, result_types=[Raises]) as pool:
        back = pool.submit(_identity, values).result(timeout=T)
        assert back[:-1] == values[:-1] and back[-1].args == ("v",)
        assert type(pool.submit(_identity, Raises("x")).result(timeout=T)) is Raises
    with TransientUnitPoolExecutor(1, PROPS) as pool:
        error = pool.submit(_identity, Raises("x")).exception(timeout=T)
    assert isinstance(error, ResultRefused) and "result_types=[Raises]" in str(error), error


def _identity(x):
    return x


# -- the owner's resources -------------------------------------------------------------------------

def claim_a_gigabyte_then_send(_):
    from concurrentd import _protocol as P

    for fd in _pipes_to_owner():
        os.write(fd, P.FRAME.pack(1 << 30, P.RESULT, 0))
        chunk = b"\0" * (1 << 16)
        try:
            for _ in range(1 << 14):
                os.write(fd, chunk)
        except OSError:
            pass
    return "sent"


def _rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def test_a_frame_over_the_cap_is_refused_before_it_is_read():
    with TransientUnitPoolExecutor(1, {**PROPS, "MemoryMax": "64M"},
                                   on_worker_death="replace") as pool:
        before = _rss()
        error = pool.submit(claim_a_gigabyte_then_send, None).exception(timeout=T)
        grown = _rss() - before
        assert pool.submit(abs, -6).result(timeout=T) == 6
    assert isinstance(error, WorkerKilled) and error.cause == "protocol", error
    assert "max_result_size" in str(error), error
    assert grown < 32 << 20, f"the owner grew by {grown >> 20} MiB"


def stop_half_way(_):
    from concurrentd import _protocol as P

    for fd in _pipes_to_owner():
        os.write(fd, P.FRAME.pack(1000, P.RESULT, 0) + b"x" * 10)
    time.sleep(3600)


def test_a_worker_that_stops_half_way_through_a_frame_is_killed_and_shutdown_returns():
    pool = TransientUnitPoolExecutor(1, PROPS, stall_timeout=1.0)
    f = pool.submit(stop_half_way, None)
    done = threading.Event()
    threading.Thread(target=lambda: (pool.shutdown(), done.set()), daemon=True).start()
    assert done.wait(T), "shutdown() did not return: a half-written frame blocked the pool"
    error = f.exception(timeout=0)
    assert isinstance(error, BrokenProcessPool) and "in the middle of sending" in str(error), error


def test_a_result_over_max_result_size_fails_only_its_task():
    with TransientUnitPoolExecutor(1, PROPS, max_result_size=1 << 16) as pool:
        error = pool.submit(bytes, 1 << 17).exception(timeout=T)
        assert isinstance(error, ValueError) and "max_result_size" in str(error), error
        assert pool.submit(bytes, 10).result(timeout=T) == bytes(10)


def test_a_dead_worker_is_seen_at_once_even_with_others_alive():
    # The owner holds no write end of a worker's result pipe: its death is EOF, at once.
    with TransientUnitPoolExecutor(2, PROPS) as pool:
        t0 = time.monotonic()
        error = pool.submit(os._exit, 3).exception(timeout=T)
        assert isinstance(error, BrokenProcessPool) and time.monotonic() - t0 < 5


def test_resource_limits_of_the_owner_are_untouched():
    # (a guard for the tests above: RLIMIT_AS would hide a memory attack as a MemoryError)
    assert resource.getrlimit(resource.RLIMIT_AS)[0] == resource.RLIM_INFINITY


# -- another task ----------------------------------------------------------------------------------

def forge_others(gate_dir):
    """Runs in one worker: answers for every work id it might not be running."""
    import pickle

    from concurrentd import _protocol as P

    blob = pickle.dumps("forged")
    for fd in _pipes_to_owner():
        for work_id in range(0, 64):
            try:
                os.write(fd, P.frame(P.RESULT, work_id, blob))
            except OSError:
                pass
    return "attacker done"


def victim(gate):
    deadline = time.monotonic() + T
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    return "genuine"


def test_a_worker_cannot_answer_for_another_workers_task():
    gate = f"/dev/shm/concurrentd-gate-{uuid.uuid4().hex}"
    try:
        with TransientUnitPoolExecutor(2, {"User": "nobody"}, on_worker_death="replace") as pool:
            v = pool.submit(victim, gate)
            time.sleep(0.2)   # the victim runs in one worker; the attacker gets the other
            a = pool.submit(forge_others, None)
            a.exception(timeout=T)
            Path(gate).touch()
            assert v.result(timeout=T) == "genuine"
    finally:
        Path(gate).unlink(missing_ok=True)


def read_other_calls(started):
    """Everything readable on the worker's pipes besides its own call, once a call for another
    worker has been submitted: that task's arguments, if the pipes were shared."""
    import select

    Path(started).touch()
    time.sleep(0.5)
    seen = b""
    for fd in _pipes(writable=False):
            while select.select([fd], [], [], 0.2)[0]:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    break
                seen += chunk
    return seen


def test_a_worker_cannot_read_another_workers_calls():
    secret = "argument-" + uuid.uuid4().hex
    gate = f"/dev/shm/concurrentd-gate-{uuid.uuid4().hex}"
    started = gate + "-started"
    try:
        with TransientUnitPoolExecutor(2, {"User": "nobody"}) as pool:
            v = pool.submit(victim, gate)          # the first worker
            spy = pool.submit(read_other_calls, started)   # the second
            deadline = time.monotonic() + T
            while not os.path.exists(started):
                assert time.monotonic() < deadline
                time.sleep(0.01)
            # Both are busy with one call each: this one goes behind the victim, in the first
            # worker (ties go to the older worker).
            other = pool.submit(_identity, secret)
            seen = spy.result(timeout=T)
            Path(gate).touch()
            assert v.result(timeout=T) == "genuine" and other.result(timeout=T) == secret
        assert secret.encode() not in seen
    finally:
        for path in (gate, started):
            Path(path).unlink(missing_ok=True)


# -- the zygote ------------------------------------------------------------------------------------

def stop_the_zygote():
    import signal
    os.kill(os.getppid(), signal.SIGSTOP)
    return "stopped"


def test_a_stopped_zygote_hangs_neither_the_pool_nor_shutdown(monkeypatch):
    from concurrentd import _protocol

    monkeypatch.setattr(_protocol, "ZYGOTE_TIMEOUT", 1.0)
    pool = TransientUnitPoolExecutor(2, PROPS)
    assert pool.submit(stop_the_zygote).result(timeout=T) == "stopped"
    # two at once: the second needs a new worker, which only the (stopped) zygote can fork
    futures = [pool.submit(time.sleep, 0.5) for _ in range(2)]
    done = threading.Event()
    threading.Thread(target=lambda: (pool.shutdown(), done.set()), daemon=True).start()
    assert done.wait(T), "shutdown() did not return: the pool waited for a stopped zygote"
    errors = [f.exception(timeout=0) for f in futures]
    assert any(isinstance(e, BrokenProcessPool) and "did not answer" in str(e) for e in errors), \
        errors

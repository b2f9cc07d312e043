"""The "concurrentd" joblib backend with the real joblib (the "joblib" extra), on a real systemd.

Every call reports from inside what confines it (its uid, its network interfaces, its cgroup)."""

import os
import socket
import subprocess
import time

import pytest

joblib = pytest.importorskip("joblib", reason="the joblib extra: pip install -e '.[test]'")

from joblib import Parallel, delayed, parallel_config  # noqa: E402

import concurrentd.joblib  # noqa: E402,F401 - registers the backend
from concurrentd import ResultRefused  # noqa: E402

PROPS = {"User": "nobody", "PrivateNetwork": True}


def where_am_i(x=None):
    """What confines the process that runs it, and the unit it is in."""
    cgroup = open("/proc/self/cgroup").read()
    units = [part for line in cgroup.splitlines() for part in line.split("/")
             if part.startswith("concurrentd-")]
    return {"x": x, "uid": os.getuid(), "pid": os.getpid(),
            "interfaces": sorted(name for _, name in socket.if_nameindex()),
            "unit": units[-1] if units else None}


def confined(seen):
    return seen["uid"] == 65534 and seen["interfaces"] == ["lo"] and seen["unit"] is not None


def _units():
    out = subprocess.run(["systemctl", "list-units", "--all", "--plain", "--no-legend",
                          "concurrentd-*"], capture_output=True, text=True, check=True).stdout
    return sorted(line.split()[0] for line in out.splitlines() if line.strip())


def test_parallel_calls_run_confined_in_one_unit_stopped_at_the_end():
    before = _units()
    # (warm_units=False: no unit is prepared for a next call, which would count here)
    with parallel_config(backend="concurrentd", n_jobs=2, properties=PROPS, warm_units=False):
        seen = Parallel()(delayed(where_am_i)(i) for i in range(10))
    assert [s["x"] for s in seen] == list(range(10))
    assert all(confined(s) for s in seen), seen
    assert len({s["unit"] for s in seen}) == 1
    assert 1 <= len({s["pid"] for s in seen}) <= 2   # n_jobs workers
    assert _units() == before, "the unit stops with the Parallel call"


def test_n_jobs_1_still_runs_in_the_unit():
    # joblib runs a backend reporting one job in this process: the backend never reports one.
    with parallel_config(backend="concurrentd", n_jobs=1, properties=PROPS):
        seen = Parallel()(delayed(where_am_i)(i) for i in range(3))
    assert all(confined(s) for s in seen) and len({s["pid"] for s in seen}) == 1


def test_a_parallel_block_keeps_one_pool_for_its_calls():
    with parallel_config(backend="concurrentd", n_jobs=2, properties=PROPS):
        with Parallel() as parallel:
            first = parallel(delayed(where_am_i)(i) for i in range(2))
            second = parallel(delayed(where_am_i)(i) for i in range(2))
    assert {s["unit"] for s in first} == {s["unit"] for s in second}
    assert all(confined(s) for s in first + second)


def _fail_at_3(x):
    if x == 3:
        raise ValueError("x is 3")
    time.sleep(0.05 if x < 3 else 60)
    return x


def test_an_exception_is_raised_and_the_other_calls_are_stopped():
    before = _units()
    started = time.monotonic()
    with parallel_config(backend="concurrentd", n_jobs=2, properties=PROPS, warm_units=False):
        with pytest.raises(ValueError, match="x is 3"):
            Parallel(batch_size=1)(delayed(_fail_at_3)(i) for i in range(8))
    assert time.monotonic() - started < 30, "a call sleeping 60 s was killed, not waited for"
    assert _units() == before


class Point:
    def __init__(self, x):
        self.x = x

    def __eq__(self, other):
        return isinstance(other, Point) and other.x == self.x


def test_lambdas_generators_and_pool_options_pass_through():
    with parallel_config(backend="concurrentd", n_jobs=2, properties=PROPS,
                         result_types=[Point]):
        assert Parallel()(delayed(lambda x: x * 2)(i) for i in range(500))[-1] == 998
        assert list(Parallel(return_as="generator")(
            delayed(Point)(i) for i in range(3))) == [Point(i) for i in range(3)]
    with parallel_config(backend="concurrentd", n_jobs=2, properties=PROPS):
        with pytest.raises(ResultRefused, match="result_types"):
            Parallel()(delayed(Point)(1) for _ in range(2))
    with parallel_config(backend="concurrentd", n_jobs=2, mp_context="nope"):
        with pytest.raises(TypeError, match="mp_context must be a multiprocessing context"):
            Parallel()(delayed(abs)(i) for i in range(2))


def test_the_backend_refuses_what_it_does_not_take():
    with pytest.raises(TypeError, match="unexpected option 'max_workers'.*n_jobs sets"):
        parallel_config(backend="concurrentd", max_workers=2)
    with pytest.raises(TypeError, match="unexpected option 'propertise'"):
        parallel_config(backend="concurrentd", propertise={})
    with pytest.raises(AssertionError, match="inner_max_num_threads"):   # joblib's own check
        parallel_config(backend="concurrentd", inner_max_num_threads=1)


def test_require_sharedmem_runs_in_this_process_as_joblib_decides():
    # What README says: calls that must share the caller's memory cannot be in a sandbox, and
    # joblib gives them its thread backend, in this process, whatever parallel_config says.
    with parallel_config(backend="concurrentd", n_jobs=2, properties=PROPS):
        seen = Parallel(require="sharedmem")(delayed(where_am_i)(i) for i in range(2))
        assert all(s["pid"] == os.getpid() and s["unit"] is None for s in seen)
        with pytest.raises(ValueError, match="does not support shared memory"):
            Parallel(backend="concurrentd", require="sharedmem")

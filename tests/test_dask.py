"""concurrentd.dask with the real dask and distributed (the "dask" extra), on a real systemd.

Every sandboxed task reports from inside what confines it (its uid, its network interfaces, its
cgroup), and the test compares that with the unit of its Dask worker's pool."""

import multiprocessing
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

pytest.importorskip("dask", reason="the dask extra: pip install -e '.[test]'")
distributed = pytest.importorskip("distributed", reason="the dask extra: pip install -e '.[test]'")

import dask.bag  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402

from concurrentd import ResultRefused, TransientUnitPoolExecutor, WorkerKilled  # noqa: E402
from concurrentd.dask import SandboxedExecutor, WorkerExecutor  # noqa: E402

PROPS = {"User": "nobody", "PrivateNetwork": True}
T = 60
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module", autouse=True)
def no_dask_thread_outlives_this_module():
    """Dask keeps a thread for the rest of the process (its offload executor); a pool made
    without mp_context= in a process with a thread starts fresh instead of forking, so every
    later test of the session would test the fresh start mode only. It is shut down here."""
    yield
    from distributed import utils
    utils._offload_executor.shutdown(wait=True)
    deadline = time.monotonic() + 10   # (its profiling thread ends on its next tick)
    left = [t for t in threading.enumerate()
            if t is not threading.main_thread() and not t.name.startswith("concurrentd-")]
    for thread in left:
        thread.join(max(0.0, deadline - time.monotonic()))
    left = [t.name for t in left if t.is_alive()]
    assert left == [], f"threads the Dask tests left behind: {left}"


def where_am_i(x=None):
    """What confines the process that runs it."""
    return {"x": x, "uid": os.getuid(), "pid": os.getpid(),
            "interfaces": sorted(name for _, name in socket.if_nameindex()),
            "cgroup": open("/proc/self/cgroup").read(),
            "daemon": multiprocessing.current_process().daemon}


def confined_in(seen, unit):
    return seen["uid"] == 65534 and seen["interfaces"] == ["lo"] and \
        f"/{unit}\n" in seen["cgroup"]


def _sandbox_units(dask_worker, name="sandbox"):
    executor = dask_worker.executors[name]
    return {"unit": executor.pool.unit.name, "owned": executor.owns_pool,
            "workers": executor.pool._max_workers}


def _units():
    out = subprocess.run(["systemctl", "list-units", "--all", "--plain", "--no-legend",
                          "concurrentd-*"], capture_output=True, text=True, check=True).stdout
    return sorted(line.split()[0] for line in out.splitlines() if line.strip())


def cluster(processes, **kwargs):
    return LocalCluster(n_workers=2, threads_per_worker=2, processes=processes,
                        dashboard_address=None, **kwargs)


@pytest.mark.parametrize("processes", [False, True], ids=["thread-workers", "nanny-workers"])
def test_annotated_tasks_run_confined_in_their_workers_unit(processes):
    before = _units()
    with cluster(processes) as c, Client(c) as client:
        client.register_plugin(SandboxedExecutor("sandbox", properties=PROPS))
        units = client.run(_sandbox_units)
        with dask.annotate(executor="sandbox"):
            inside = client.gather(client.map(where_am_i, range(8)))
        outside = client.submit(where_am_i, "plain").result(timeout=T)
        if processes:   # Dask's default: its worker processes are daemonic
            assert dask.config.get("distributed.worker.daemon") is True
            assert client.run(lambda: multiprocessing.current_process().daemon) == \
                dict.fromkeys(units, True)
    assert len({u["unit"] for u in units.values()}) == 2, "a unit per Dask worker"
    assert all(u["owned"] and u["workers"] == 2 for u in units.values())   # nthreads
    for seen in inside:
        assert any(confined_in(seen, u["unit"]) for u in units.values()), seen
    assert outside["uid"] == 0 and outside["interfaces"] != ["lo"], "unannotated: as before"
    assert [s["x"] for s in inside] == list(range(8))
    assert _units() == before, "closing the cluster stops every worker's unit"


def _allocate(mib):
    block = bytearray(mib << 20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    return len(block)


def _fails(message):
    raise ValueError(message)


def test_a_memory_kill_fails_its_task_and_the_dask_worker_goes_on():
    props = {**PROPS, "MemoryMax": "60M", "MemorySwapMax": 0}
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=None) as c, Client(c) as client:
        client.register_plugin(SandboxedExecutor("sandbox", properties=props))
        [(address, info)] = client.run(_sandbox_units).items()
        worker_pid = client.run(os.getpid)[address]
        with dask.annotate(executor="sandbox"):
            with pytest.raises(WorkerKilled, match="MemoryMax=60M"):
                client.submit(_allocate, 400).result(timeout=T)
            with pytest.raises(ValueError, match="bad input"):
                client.submit(_fails, "bad input").result(timeout=T)
            after = client.gather(client.map(where_am_i, range(3)))
        assert client.run(os.getpid) == {address: worker_pid}, "the Dask worker was not restarted"
        assert client.run(_sandbox_units) == {address: info}, "nor its pool"
    assert all(confined_in(seen, info["unit"]) for seen in after)


def test_on_worker_death_break_is_there_to_choose():
    props = {**PROPS, "MemoryMax": "60M", "MemorySwapMax": 0}
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as c, \
            Client(c) as client:
        client.register_plugin(SandboxedExecutor("sandbox", 1, props, on_worker_death="break"))
        with dask.annotate(executor="sandbox"):
            with pytest.raises(BrokenProcessPool, match="MemoryMax=60M"):
                client.submit(_allocate, 400).result(timeout=T)
            with pytest.raises(BrokenProcessPool, match="not usable anymore"):   # every task after it
                client.submit(where_am_i).result(timeout=T)


def test_a_lent_pool_runs_dask_tasks_and_outlives_worker_close():
    from concurrentd import _warm

    _warm.stop_all()
    before = _units()
    with TransientUnitPoolExecutor(2, PROPS) as pool:
        lent = WorkerExecutor(pool)
        with cluster(False, executor={"sandbox": lent}) as c, Client(c) as client:
            with dask.annotate(executor="sandbox"):
                inside = client.gather(client.map(where_am_i, range(4)))
        # Worker.close() shut down every executor it held: the lent one refuses new tasks,
        # the pool goes on.
        with pytest.raises(RuntimeError, match="after shutdown"):
            lent.submit(abs, 1)
        assert confined_in(pool.submit(where_am_i).result(timeout=T), pool.unit.name)
        assert all(confined_in(seen, pool.unit.name) for seen in inside)
    _warm.stop_all()   # the unit prepared for the next pool of these properties, by design
    assert _units() == before


def test_a_pool_given_to_dask_as_it_is_says_how_to_give_it():
    with TransientUnitPoolExecutor(1, PROPS) as pool:
        with cluster(False, executor={"sandbox": pool}) as c, Client(c) as client:
            with dask.annotate(executor="sandbox"):
                with pytest.raises(TypeError, match=r"concurrentd\.dask\.WorkerExecutor\(pool\)"):
                    client.submit(where_am_i).result(timeout=T)


NANNY_GETS_A_POOL = """
    import logging, multiprocessing, sys, threading
    from distributed import LocalCluster
    from concurrentd import TransientUnitPoolExecutor

    class Caught(logging.Handler):
        def emit(self, record):
            print("LOG", self.format(record).replace("\\n", " | "))

    if __name__ == "__main__":
        how = sys.argv[1]
        stop = threading.Event()
        if how == "threaded-owner":
            threading.Thread(target=stop.wait, name="other").start()
            pool = TransientUnitPoolExecutor(1, {"PrivateTmp": True})
        else:
            pool = TransientUnitPoolExecutor(1, {"PrivateTmp": True},
                                             mp_context=multiprocessing.get_context(how))
        logging.getLogger("distributed.nanny").addHandler(Caught())
        print("START", pool._mp_context.get_start_method())
        try:
            LocalCluster(n_workers=1, processes=True, executor=pool, dashboard_address=None)
        except RuntimeError as e:
            print("RAISED", e)
        print("STILL", pool.submit(abs, -3).result(timeout=60))
        pool.shutdown()
        stop.set()
"""


@pytest.mark.parametrize("how", ["fork", "forkserver", "threaded-owner"])
def test_a_pool_cannot_go_to_nanny_worker_processes_and_says_what_to_do(tmp_path, how):
    # LocalCluster(processes=True, executor=pool) pickles the pool for each worker process: a
    # pool (its unit, zygote and manager thread) is its process's, whatever its start mode.
    # (A script of its own: the failed Nanny leaves threads behind in its process.)
    script = tmp_path / "nanny_gets_a_pool.py"
    script.write_text(textwrap.dedent(NANNY_GETS_A_POOL))
    r = subprocess.run([sys.executable, str(script), how], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    assert f"START {'fork' if how == 'fork' else 'forkserver'}\n" in out
    assert "RAISED Nanny failed to start" in out and "STILL 3" in out, out
    log = [line for line in out.splitlines() if line.startswith("LOG")]
    assert any("TransientUnitPoolExecutor cannot be pickled" in line and
               "concurrentd.dask.SandboxedExecutor" in line for line in log), out


def test_the_local_scheduler_runs_a_graph_in_a_pool():
    with TransientUnitPoolExecutor(2, PROPS) as pool:
        seen = dask.compute(*[dask.delayed(where_am_i)(i) for i in range(4)], scheduler=pool)
        bag = dask.bag.from_sequence(range(10), npartitions=3).map(lambda x: x * 2)
        assert bag.sum().compute(scheduler=pool) == 90
        with pytest.raises(ValueError, match="in the graph"):
            dask.compute(dask.delayed(_fails)("in the graph"), scheduler=pool)
        assert all(confined_in(s, pool.unit.name) for s in seen)


def test_the_plugin_refuses_what_a_pool_would_before_any_worker_sees_it():
    with pytest.raises(ValueError, match="Nope"):
        SandboxedExecutor("sandbox", properties={"Nope": 1})
    with pytest.raises(ValueError, match="CPUQuota"):
        SandboxedExecutor("sandbox", properties={"CPUQuota": "lots"})
    with pytest.raises(TypeError, match="unexpected option 'max_worker'.*result_types"):
        SandboxedExecutor("sandbox", max_worker=2)
    with pytest.raises(TypeError, match="unit_name= names one unit"):
        SandboxedExecutor("sandbox", unit_name="mine.service")
    with pytest.raises(ValueError, match="Dask's own machinery"):
        SandboxedExecutor("offload")
    with pytest.raises(ValueError, match="on_worker_death must be"):
        SandboxedExecutor(on_worker_death="ignore")
    with pytest.raises(ValueError, match="mp_context must be"):
        SandboxedExecutor(mp_context="thread")


TWO_SANDBOXES = """
    import multiprocessing, dask
    from concurrent.futures import ProcessPoolExecutor
    from distributed import Client, LocalCluster
    from concurrentd.dask import SandboxedExecutor

    if __name__ == "__main__":
        fork = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(1, mp_context=fork) as other:   # a pool of another kind
            other.submit(abs, 1).result()
            with LocalCluster(n_workers=2, processes=PROCESSES, dashboard_address=None) as c, \\
                    Client(c) as client:
                for name in ("first", "second"):
                    client.register_plugin(SandboxedExecutor(name, 2, {"PrivateTmp": True},
                                                             mp_context=START))
                for name in ("first", "second"):
                    with dask.annotate(executor=name):
                        print(sum(client.gather(client.map(abs, range(-20, 0)))))
"""


@pytest.mark.parametrize("processes, start", [(False, "fork"), (True, "forkserver")])
def test_two_sandboxes_in_one_process_end_without_tracebacks(tmp_path, processes, start):
    # (#17: a second pool in one process printed EBADF tracebacks from its workers at exit)
    script = tmp_path / "two_sandboxes.py"
    script.write_text(textwrap.dedent(TWO_SANDBOXES).replace("PROCESSES", str(processes))
                      .replace("START", repr(start)))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ["210", "210"]
    # (distributed itself may log a closed comm as its cluster closes: only the workers' EBADF
    # tracebacks are ours)
    assert "Bad file descriptor" not in r.stderr and "EBADF" not in r.stderr, r.stderr[-3000:]


def test_default_sandboxes_every_task_and_unregistering_gives_dasks_back():
    before = _units()
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as c, \
            Client(c) as client:
        dasks = client.run(lambda dask_worker: type(dask_worker.executors["default"]).__name__)
        client.register_plugin(SandboxedExecutor("default", properties=PROPS))
        [info] = client.run(_sandbox_units, name="default").values()
        assert confined_in(client.submit(where_am_i).result(timeout=T), info["unit"])
        client.unregister_worker_plugin("concurrentd-default")
        assert client.run(lambda dask_worker: type(dask_worker.executors["default"]).__name__) \
            == dasks
        assert _units() == before, "the plugin's removal stopped the unit"
        assert client.submit(where_am_i).result(timeout=T)["uid"] == 0


class Point:
    def __init__(self, x):
        self.x = x


def test_results_come_back_as_data_and_result_types_passes_through():
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as c, \
            Client(c) as client:
        client.register_plugin(SandboxedExecutor("strict", properties=PROPS))
        client.register_plugin(SandboxedExecutor("points", properties=PROPS,
                                                 result_types=[Point]))
        with dask.annotate(executor="strict"):
            with pytest.raises(ResultRefused, match="result_types"):
                client.submit(Point, 1).result(timeout=T)
        with dask.annotate(executor="points"):
            assert client.submit(Point, 2).result(timeout=T).x == 2

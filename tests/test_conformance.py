"""TransientUnitPoolExecutor against what CPython's concurrent.futures tests ask of
ProcessPoolExecutor, one behaviour at a time, on a real systemd.

Tests that leave the pool usable share one module-scoped pool; tests that break it, shut it down or
need other settings start their own (a unit costs a few tens of milliseconds).

Workers block on *gates* (files under /dev/shm, which PrivateTmp= does not hide) instead of
sleeping for guessed durations: a test opens a gate when it wants the task to go on.
"""

from __future__ import annotations

import asyncio
import gc
import json
import multiprocessing
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types
import uuid
from concurrent import futures
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

from concurrentd import RemoteBaseException, ResultRefused, TransientUnitPoolExecutor

PROPS = {"PrivateTmp": True}
GATE_DIR = Path("/dev/shm") / f"concurrentd-conformance-{os.getpid()}"
T = 20   # generous upper bound (s) on anything that should happen "soon"


# -- functions the workers run (module level: importable by name in a worker) -----------------------

def wait_gate(path: str, value=None, timeout: float = T):
    """Blocks until `path` exists; returns `value` (or raises if the gate never opens)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {path} never opened")
        time.sleep(0.005)
    return value


def mark_and_wait(started: str, gate: str, value=None):
    Path(started).touch()
    return wait_gate(gate, value)


def square(x):
    return x * x


def add(a, b, c=0):
    return a + b + c


def pid_after(x=None):
    return os.getpid()


def fail_on(x, bad):
    if x == bad:
        raise ValueError(f"bad value {x}")
    return x


class Boom(Exception):
    pass


def raise_boom(msg):
    local_marker = "frame-of-raise_boom"   # noqa: F841 - shows up in the remote traceback
    raise Boom(msg)


def exit_now(code=3):
    os._exit(code)


def kill_self():
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(5)


def return_lock():
    return threading.Lock()


def identity(x):
    return x


def my_cgroup():
    with open("/proc/self/cgroup") as f:
        return f.read()


_init_state: dict = {}


def record_init(tag, path=None):
    _init_state.setdefault("calls", []).append(tag)
    if path:
        with open(path, "a") as f:
            f.write(f"{os.getpid()}\n")


def init_state(_=None):
    return os.getpid(), list(_init_state.get("calls", []))


def failing_init():
    raise RuntimeError("initializer failed on purpose")


def raise_system_exit():
    raise SystemExit(7)


class FailsToUnpickle:
    """Pickles fine; unpickling raises (in the worker)."""

    def __reduce__(self):
        return (_refuse, ("refusing to unpickle",))


def _refuse(msg):
    raise RuntimeError(msg)


def _submit_until_broken(pool, n=3):
    """The futures of square(0..n-1), submitted until the pool refuses one: it may notice a
    death, and break, at any point of the loop."""
    futures = []
    try:
        for i in range(n):
            futures.append(pool.submit(square, i))
    except BrokenProcessPool:
        pass
    return futures


def _assert_broken(pool, futures):
    """Each future fails with BrokenProcessPool, in order, and so does a new submit."""
    for f in futures:
        with pytest.raises(BrokenProcessPool):
            f.result(timeout=T)
    with pytest.raises(BrokenProcessPool):
        pool.submit(square, 2)


# -- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pool():
    with TransientUnitPoolExecutor(max_workers=2, properties=PROPS) as p:
        yield p


class Gates:
    def __init__(self):
        GATE_DIR.mkdir(exist_ok=True)

    def new(self) -> str:
        return str(GATE_DIR / uuid.uuid4().hex)

    @staticmethod
    def open(path: str) -> None:
        Path(path).touch()

    @staticmethod
    def wait(path: str, timeout: float = T) -> None:
        wait_gate(path, timeout=timeout)


@pytest.fixture
def gates():
    g = Gates()
    yield g


@pytest.fixture(scope="module", autouse=True)
def _gate_dir():
    yield
    if GATE_DIR.exists():
        for p in GATE_DIR.iterdir():
            p.unlink()
        GATE_DIR.rmdir()


@pytest.fixture(scope="module")
def stdlib_ctx():
    """A real ProcessPoolExecutor's context for side-by-side checks (forkserver: no fork of this
    threaded process)."""
    return multiprocessing.get_context("forkserver")


def _blocked_pool_tasks(pool, gates, n_running, n_pending):
    """Fills `pool` with n_running tasks that have started and block on one gate, then queues
    n_pending tasks behind them. Returns (gate, running futures, pending futures)."""
    gate = gates.new()
    running = []
    for i in range(n_running):
        started = gates.new()
        running.append(pool.submit(mark_and_wait, started, gate, ("running", i)))
        gates.wait(started)
    pending = [pool.submit(identity, ("pending", i)) for i in range(n_pending)]
    return gate, running, pending


# -- the workers run in the unit -----------------------------------------------------------------

def test_workers_run_inside_the_pools_unit(pool):
    cgroup = pool.submit(my_cgroup).result(timeout=T)
    assert pool.unit.control_group in cgroup
    assert pool.submit(pid_after).result(timeout=T) != os.getpid()


# -- submit / result -------------------------------------------------------------------------------

def test_submit_positional_and_keyword_arguments(pool):
    assert pool.submit(add, 1, 2).result(timeout=T) == 3
    assert pool.submit(add, 1, b=2, c=3).result(timeout=T) == 6
    # `fn` is positional-only: a keyword argument named fn reaches the callable
    assert pool.submit(lambda **kw: kw, fn=1, self=2).result(timeout=T) == {"fn": 1, "self": 2}


def test_result_timeout_raises_timeout_error_then_result_arrives(pool, gates):
    gate = gates.new()
    f = pool.submit(wait_gate, gate, "late")
    t0 = time.monotonic()
    with pytest.raises(futures.TimeoutError):
        f.result(timeout=0.2)
    assert 0.15 < time.monotonic() - t0 < 5
    assert not f.done()
    with pytest.raises(futures.TimeoutError):
        f.exception(timeout=0.05)
    gates.open(gate)
    assert f.result(timeout=T) == "late"
    assert f.exception() is None


def test_large_arguments_and_results_round_trip(pool):
    blob = os.urandom(8 * 1024 * 1024)
    assert pool.submit(identity, blob).result(timeout=T) == blob


def test_submit_from_many_threads(pool):
    results = {}

    def submitter(k):
        results[k] = [pool.submit(square, k * 100 + i) for i in range(20)]

    threads = [threading.Thread(target=submitter, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, fs in results.items():
        assert [f.result(timeout=T) for f in fs] == [(k * 100 + i) ** 2 for i in range(20)]


# -- exceptions ------------------------------------------------------------------------------------

def test_exception_reraised_with_remote_traceback_as_cause(pool):
    f = pool.submit(raise_boom, "kaboom")
    with pytest.raises(Boom, match="kaboom") as info:
        f.result(timeout=T)
    assert isinstance(f.exception(), Boom)
    cause = info.value.__cause__
    assert cause is not None and type(cause).__name__ == "_RemoteTraceback"
    text = str(cause)
    # the worker's traceback, with the frame that raised and its source line
    assert "Traceback (most recent call last)" in text
    assert "in raise_boom" in text
    assert "raise Boom(msg)" in text
    assert "Boom: kaboom" in text
    # the pool is unharmed
    assert pool.submit(square, 4).result(timeout=T) == 16


def test_remote_traceback_text_like_process_pool_executor(pool, stdlib_ctx):
    with ProcessPoolExecutor(1, mp_context=stdlib_ctx) as ref:
        ref_cause = str(ref.submit(raise_boom, "x").exception(timeout=T).__cause__)
    cause = str(pool.submit(raise_boom, "x").exception(timeout=T).__cause__)
    last = lambda s: [ln for ln in s.strip().splitlines() if ln.strip() and ln.strip() != '"""']  # noqa: E731
    # same ending: the raising frame, its line, the exception
    assert last(cause)[-3:] == last(ref_cause)[-3:]


def test_base_exception_in_task_is_reraised_and_pool_survives(pool):
    # ProcessPoolExecutor raises the SystemExit itself; a worker's data must not end the owner,
    # so here it comes as an Exception that carries it (trust_results=True raises it as is).
    with pytest.raises(RemoteBaseException, match="SystemExit") as info:
        pool.submit(raise_system_exit).result(timeout=T)
    assert type(info.value.exception) is SystemExit and info.value.exception.code == 7
    assert pool.submit(square, 5).result(timeout=T) == 25
    with TransientUnitPoolExecutor(1, PROPS, trust_results=True) as trusting:
        with pytest.raises(SystemExit) as info:
            trusting.submit(raise_system_exit).result(timeout=T)
    assert info.value.code == 7


def exit_when_unpickled():
    sys.exit(3)


class ExitsWhenUnpickled:
    def __reduce__(self):
        return exit_when_unpickled, ()


def return_one_that_exits_when_unpickled():
    return ExitsWhenUnpickled()


def test_a_trusted_result_whose_unpickling_exits_fails_its_future_and_pool_goes_on():
    # With trust_results=True a result's pickle runs code in the owner; a SystemExit from it
    # must neither end the pool's thread nor leave the future waiting for ever.
    with TransientUnitPoolExecutor(1, PROPS, trust_results=True) as trusting:
        f = trusting.submit(return_one_that_exits_when_unpickled)
        with pytest.raises(ResultRefused, match="SystemExit"):
            f.result(timeout=T)
        assert trusting.submit(square, 4).result(timeout=T) == 16


# -- pickling --------------------------------------------------------------------------------------

def test_unpicklable_argument_fails_the_future_and_pool_keeps_working(pool, stdlib_ctx):
    lock = threading.Lock()
    f = pool.submit(identity, lock)
    exc = f.exception(timeout=T)
    assert isinstance(exc, (TypeError, pickle.PicklingError)), exc
    assert "pickle" in str(exc)
    with ProcessPoolExecutor(1, mp_context=stdlib_ctx) as ref:
        ref_exc = ref.submit(identity, lock).exception(timeout=T)
    assert type(exc) is type(ref_exc)
    assert pool.submit(square, 6).result(timeout=T) == 36


def test_unpicklable_result_fails_the_future_and_pool_keeps_working(pool):
    f = pool.submit(return_lock)
    exc = f.exception(timeout=T)
    assert isinstance(exc, (TypeError, pickle.PicklingError)), exc
    assert "pickle" in str(exc)
    assert pool.submit(square, 7).result(timeout=T) == 49


def test_argument_that_fails_to_unpickle_in_the_worker(pool, stdlib_ctx):
    # ProcessPoolExecutor unpickles the whole call item in the worker's loop: the worker dies and
    # the pool breaks. Here a task is unpickled as it runs: only that future fails.
    with ProcessPoolExecutor(1, mp_context=stdlib_ctx) as ref:
        with pytest.raises(BrokenProcessPool):
            ref.submit(identity, FailsToUnpickle()).result(timeout=T)
    with pytest.raises(RuntimeError, match="refusing to unpickle"):
        pool.submit(identity, FailsToUnpickle()).result(timeout=T)
    assert pool.submit(square, 8).result(timeout=T) == 64


def test_a_map_chunk_that_fails_to_unpickle_fails_only_its_results(pool):
    # The same for map: a chunk of plain values travels as bytes read when the chunk runs.
    it = pool.map(identity, [1, 2, FailsToUnpickle(), 4], chunksize=2)
    assert [next(it), next(it)] == [1, 2]
    with pytest.raises(RuntimeError, match="refusing to unpickle"):
        next(it)
    assert list(pool.map(square, range(6), chunksize=2)) == [0, 1, 4, 9, 16, 25]


# -- what ProcessPoolExecutor cannot carry and we can (cloudpickle) --------------------------------

def test_lambda_closure_and_local_class(pool, stdlib_ctx):
    with ProcessPoolExecutor(1, mp_context=stdlib_ctx) as ref:
        with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
            ref.submit(lambda: 1).result(timeout=T)

    offset = 41

    def closure(x):
        return x + offset

    class Local:
        def __init__(self, v):
            self.v = v

        def twice(self):
            return self.v * 2

    assert pool.submit(lambda: 1).result(timeout=T) == 1
    assert pool.submit(closure, 1).result(timeout=T) == 42
    assert pool.submit(lambda o: o.twice(), Local(21)).result(timeout=T) == 42
    assert list(pool.map(lambda x: x + offset, [1, 2])) == [42, 43]


def test_function_of_unregistered_dynamic_module(pool):
    mod = types.ModuleType("conformance_dynamic_unregistered")
    exec("SCALE = 3\ndef scale(x):\n    return SCALE * x\n", mod.__dict__)
    assert pool.submit(mod.scale, 7).result(timeout=T) == 21


def test_function_of_dynamic_module_in_sys_modules(pool):
    # A module built at run time (as by exec/importlib in notebooks, plugin systems, pytest's own
    # assertion rewriting of conftest-less files…) and put in sys.modules after the pool started.
    name = f"conformance_dynamic_{uuid.uuid4().hex[:8]}"
    mod = types.ModuleType(name)
    exec("def triple(x):\n    return 3 * x\n", mod.__dict__)
    sys.modules[name] = mod
    try:
        assert pool.submit(mod.triple, 7).result(timeout=T) == 21
    finally:
        del sys.modules[name]


#: this checkout: a script run from elsewhere would import whichever concurrentd is installed
REPO = Path(__file__).resolve().parent.parent


def _run_script(tmp_path, code, *, stdin=None, args=()):
    """Runs ``code`` as tmp_path/script.py (or from stdin), with this checkout's concurrentd, its
    output buffered as on any machine (whatever PYTHONUNBUFFERED this one sets)."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    cmd = [sys.executable, *args] + ([] if stdin is not None else [str(script)])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return subprocess.run(cmd, input=textwrap.dedent(stdin) if stdin is not None else None,
                          capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env=dict(env, PYTHONPATH=str(REPO)))


MAIN_SCRIPT = """
    from concurrentd import TransientUnitPoolExecutor

    with TransientUnitPoolExecutor(1, {"PrivateTmp": True}) as pool:
        # all defined in __main__ after the pool (and its zygote) started
        OFFSET = 100

        def late(x):
            return x + OFFSET

        class Point:
            def __init__(self, x, y):
                self.x, self.y = x, y

        def norm1(p):
            return abs(p.x) + abs(p.y)

        print(pool.submit(late, 1).result(timeout=20))
        print(pool.submit(norm1, Point(-2, 3)).result(timeout=20))
        print(list(pool.map(late, [1, 2], chunksize=2)))
        print(pool.submit(lambda: OFFSET * 2).result(timeout=20))
        # a function found by name, with arguments plain pickle cannot carry to the worker
        print(list(pool.map(vars, [Point(1, 2)])))
        print(list(pool.map(callable, [lambda: 1, 3], chunksize=2)))
"""


def test_functions_defined_in_main_after_the_pool_started(tmp_path):
    r = _run_script(tmp_path, MAIN_SCRIPT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:6] == ["101", "5", "[101, 102]", "200", "[{'x': 1, 'y': 2}]",
                                         "[True, False]"]


def test_what_the_owner_printed_before_the_pool_comes_out_once(tmp_path):
    # stdout to a pipe is block-buffered: what the owner printed is still in its buffer when the
    # zygote is forked, and must not be written again from the zygote's copy (through the pipes
    # that bring the workers' output back), as multiprocessing flushes before it forks.
    r = _run_script(tmp_path, """
        import sys
        from concurrentd import TransientUnitPoolExecutor

        print("before")
        print("before, on stderr", file=sys.stderr)
        with TransientUnitPoolExecutor(1, {"PrivateTmp": True}) as pool:
            pool.submit(print, "in a worker").result()
        print("after")
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["before", "in a worker", "after"]
    assert r.stderr.splitlines() == ["before, on stderr"]


def test_functions_defined_in_an_interactive_session(tmp_path):
    # `python -` reads the program from stdin: __main__ has no file to import from
    r = _run_script(tmp_path, "", stdin=MAIN_SCRIPT, args=("-",))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:6] == ["101", "5", "[101, 102]", "200", "[{'x': 1, 'y': 2}]",
                                         "[True, False]"]


# What an initializer defined in __main__ sets is what the tasks read (#16 F11), as in a worker of
# ProcessPoolExecutor(fork): first what both pools can run, then what only cloudpickle carries.
INITIALIZER_SCRIPT = """
    import functools
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrentd import TransientUnitPoolExecutor

    X = None
    STATE = {}


    def init():
        global X, ONLY_INIT
        X = 5
        ONLY_INIT = 7          # a global only the initializer creates
        STATE["conn"] = "open"


    def read_x():
        return X


    def read_only_init():
        return ONLY_INIT


    def read_state():
        return STATE.get("conn")


    def helper():
        return X


    def via_helper():
        return helper() + 1


    class Point:
        def __init__(self, v):
            self.v = v

        def times_x(self):
            return self.v * X


    class Outer:
        class Inner:
            pass


    def check_point(p):
        return isinstance(p, Point), p.times_x()


    def check_inner(i):
        return isinstance(i, Outer.Inner)


    def add(a, b):
        return a + b + X


    def counter():             # a task's own global: kept by its worker, as any other
        global COUNT
        COUNT = globals().get("COUNT", 0) + 1
        return COUNT


    def outcome(call, *args):
        try:
            return call(*args)
        except Exception as e:
            return type(e).__name__


    def portable(pool):
        run = lambda fn, *args: outcome(lambda: pool.submit(fn, *args).result(timeout=20))
        return [run(read_x), run(read_only_init), run(read_state), run(via_helper),
                run(check_point, Point(3)), run(Point(4).times_x),
                run(check_inner, Outer.Inner()),
                run(functools.partial(add, 1, 2)), run(counter), run(counter),
                outcome(lambda: list(pool.map(add, [1, 2], [3, 4])))]


    def by_value_only(pool):
        run = lambda fn, *args: outcome(lambda: pool.submit(fn, *args).result(timeout=20))

        def closure(k):
            return lambda: X + k + ONLY_INIT
        global LATE
        LATE = 100             # not in __main__ when the pool started: the owner's, as it is

        def late():
            return LATE + X
        out = [run(lambda: X * ONLY_INIT), run(closure(10)), run(late)]
        LATE = 200
        return out + [run(late)]


    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"),
                             initializer=init) as pool:
        print(portable(pool))
    with TransientUnitPoolExecutor(1, {"PrivateTmp": True}, initializer=init) as pool:
        print(portable(pool))
        print(by_value_only(pool))
"""


@pytest.mark.parametrize("interactive", [False, True], ids=["script", "stdin"])
def test_globals_an_initializer_in_main_sets_are_the_tasks(tmp_path, interactive):
    r = _run_script(tmp_path, INITIALIZER_SCRIPT, **(
        {"stdin": INITIALIZER_SCRIPT, "args": ("-",)} if interactive else {}))
    assert r.returncode == 0, r.stderr[-3000:]
    reference, ours, by_value = r.stdout.splitlines()[:3]
    assert reference == "[5, 7, 'open', 6, (True, 15), 20, True, 8, 1, 2, [9, 11]]"
    assert ours == reference
    assert by_value == "[35, 22, 105, 205]"


# A task's remote traceback shows the file, line and source of a function defined in __main__, as
# ProcessPoolExecutor's does, also where the unit hides the script (PrivateTmp=, ProtectHome=).
TRACEBACK_SCRIPT = """
    import json
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrentd import TransientUnitPoolExecutor


    def boom(x):
        raise ValueError(f"boom {x}")


    def cause(pool, fn, *args):
        return str(pool.submit(fn, *args).exception(timeout=20).__cause__)


    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        reference = cause(pool, boom, 1)
    with TransientUnitPoolExecutor(1, PROPERTIES) as pool:
        ours = cause(pool, boom, 1)
        by_value = cause(pool, lambda: boom(2))   # made after the pool started
    print(json.dumps([reference, ours, by_value]))
"""


@pytest.fixture(params=["PrivateTmp", "ProtectHome", "stdin"])
def hidden_script(request, tmp_path):
    """(directory of the script, the unit's properties that hide it, run from stdin?)."""
    if request.param != "ProtectHome":
        assert str(tmp_path).startswith("/tmp/")   # what PrivateTmp= hides
        yield tmp_path, {"PrivateTmp": True}, request.param == "stdin"
        return
    home = Path("/home") / f"concurrentd-test-{uuid.uuid4().hex[:12]}"
    home.mkdir()
    home.chmod(0o755)   # as Debian makes them: only ProtectHome= hides what is in it
    try:
        yield home, {"ProtectHome": True}, False
    finally:
        shutil.rmtree(home)


def _frames_in(text: str, filename: str) -> list[str]:
    """A traceback's lines from its first frame in ``filename`` on (the task's own frames)."""
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if line.startswith(f'  File "{filename}"')),
                 None)
    assert first is not None, f"no frame in {filename} in the traceback:\n{text}"
    return lines[first:]


def test_remote_traceback_shows_where_a_function_of_main_raised(hidden_script):
    directory, properties, from_stdin = hidden_script
    code = TRACEBACK_SCRIPT.replace("PROPERTIES", repr(properties))
    r = _run_script(directory, code, **({"stdin": code, "args": ("-",)} if from_stdin else {}))
    assert r.returncode == 0, r.stderr[-3000:]
    reference, ours, by_value = json.loads(r.stdout)
    filename = "<stdin>" if from_stdin else str(directory / "script.py")
    # the frames of the task: file, line, and the source line where there is a file
    assert _frames_in(ours, filename) == _frames_in(reference, filename)
    lines = textwrap.dedent(code).splitlines()
    at = next(i for i, line in enumerate(lines) if "lambda: boom(2)" in line)
    frames = _frames_in(by_value, filename)
    assert frames[0] == f'  File "{filename}", line {at + 1}, in <lambda>'
    if not from_stdin:
        assert frames[1].strip() == lines[at].strip()
        assert 'raise ValueError(f"boom {x}")' in _frames_in(reference, filename)[1]
    assert frames[-2:] == ["ValueError: boom 2", '"""']


def test_a_script_read_from_a_fifo_starts_its_pool(tmp_path):
    # Python reads its script from the FIFO once; reading it again for the source of tracebacks
    # (the zygote does, as the pool starts) would wait for a writer for ever
    fifo = tmp_path / "script.py"
    os.mkfifo(fifo)
    code = textwrap.dedent("""
        from concurrentd import TransientUnitPoolExecutor
        with TransientUnitPoolExecutor(1, {"PrivateTmp": True}) as pool:
            print(pool.submit(abs, -3).result(timeout=20))
    """)
    threading.Thread(target=fifo.write_text, args=(code,), daemon=True).start()
    r = subprocess.run([sys.executable, str(fifo)], capture_output=True, text=True, timeout=30,
                       cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "3"


HELPERS_SCRIPT = """
    import json
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrentd import TransientUnitPoolExecutor
    import helper              # imported by the owner, before the pool started


    def lazily(x):
        import late_helper     # imported first in the worker, from the copy the unit sees
        late_helper.fail(x)


    def cause(pool, fn, *args):
        return str(pool.submit(fn, *args).exception(timeout=20).__cause__)


    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        reference = [cause(pool, helper.fail, 1), cause(pool, lazily, 2)]
    with TransientUnitPoolExecutor(1, {"PrivateTmp": True}) as pool:
        ours = [cause(pool, helper.fail, 1), cause(pool, lazily, 2)]
    print(json.dumps([reference, ours]))
"""


def test_remote_traceback_through_modules_of_a_hidden_script_directory(tmp_path):
    # the unit sees a copy of the script directory's code, elsewhere (see _pythonpath)
    for name in ("helper", "late_helper"):
        (tmp_path / f"{name}.py").write_text(f"def fail(x):\n    raise KeyError(('{name}', x))\n")
    r = _run_script(tmp_path, HELPERS_SCRIPT)
    assert r.returncode == 0, r.stderr[-3000:]
    (ref_helper, ref_lazily), (helper, lazily) = json.loads(r.stdout)
    helper_file = str(tmp_path / "helper.py")
    assert _frames_in(helper, helper_file) == _frames_in(ref_helper, helper_file)
    script = str(tmp_path / "script.py")
    assert _frames_in(lazily, script) == _frames_in(ref_lazily, script)
    assert "    raise KeyError(('late_helper', x))" in _frames_in(ref_lazily, script)


def test_returning_an_instance_of_a_class_defined_in_main(tmp_path):
    # Results come back through the owner's allow-list (_results), which takes a class of
    # __main__ once result_types= names it (it must then exist before the pool); the worker's
    # instance is of the worker's own class (#16 F11), which pickles by name.
    r = _run_script(tmp_path, """
        from concurrentd import ResultRefused, TransientUnitPoolExecutor

        class Point:
            def __init__(self, x, y):
                self.x, self.y = x, y

        def moved(p):
            return Point(p.x + 1, p.y)

        with TransientUnitPoolExecutor(1, {"PrivateTmp": True}, result_types=[Point]) as pool:
            p = pool.submit(moved, Point(1, 2)).result(timeout=20)
            print(type(p) is Point, p.x, p.y)
        with TransientUnitPoolExecutor(1, {"PrivateTmp": True}) as pool:
            try:
                pool.submit(moved, Point(1, 2)).result(timeout=20)
            except ResultRefused as e:
                print(e.type_name, "result_types=[Point]" in str(e))
    """)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.splitlines()[:2] == ["True 2 2", "__main__.Point True"]


# -- map -------------------------------------------------------------------------------------------

def test_map_keeps_order(pool):
    # later items finish first; results still come in input order
    delays = [0.2, 0.0, 0.1, 0.0, 0.05]
    out = list(pool.map(lambda d: (time.sleep(d), d)[1], delays))
    assert out == delays
    assert list(pool.map(square, range(50))) == [i * i for i in range(50)]


@pytest.mark.parametrize("chunksize", [1, 3, 7, 100])
def test_map_chunksize(pool, chunksize):
    items = list(range(23))
    out = list(pool.map(pid_after, items, chunksize=chunksize))
    assert len(out) == len(items)
    assert list(pool.map(square, items, chunksize=chunksize)) == [i * i for i in items]
    if chunksize >= len(items):   # one chunk: one task, one worker
        assert len(set(out)) == 1


def test_map_chunksize_below_one_is_a_value_error(pool):
    with pytest.raises(ValueError):
        pool.map(square, [1], chunksize=0)


def test_map_multiple_iterables_stops_at_the_shortest(pool):
    assert list(pool.map(add, [1, 2, 3], [10, 20, 30, 40], [100, 200])) == [111, 222]
    assert list(pool.map(add, range(10), range(10), chunksize=4)) == list(range(0, 20, 2))


def test_map_empty_input(pool):
    assert list(pool.map(square, [])) == []
    assert list(pool.map(square, [], chunksize=5)) == []
    assert list(pool.map(add, [], [1, 2])) == []


def test_map_exception_raised_at_its_place_while_iterating(pool):
    it = pool.map(fail_on, range(6), [3] * 6)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="bad value 3") as info:
        next(it)
    assert "in fail_on" in str(info.value.__cause__)


def test_map_exception_with_chunks_fails_from_its_chunk(pool):
    it = pool.map(fail_on, range(9), [4] * 9, chunksize=3)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="bad value 4"):
        next(it)


def test_map_timeout(pool, gates):
    gate = gates.new()
    t0 = time.monotonic()
    it = pool.map(wait_gate, [gate, gate], timeout=0.3)
    with pytest.raises(futures.TimeoutError):
        list(it)
    assert 0.25 < time.monotonic() - t0 < 5
    gates.open(gate)
    # the pool still works once the blocked tasks end
    assert list(pool.map(square, [2, 3], timeout=T)) == [4, 9]


def test_map_timeout_counts_from_the_call(pool, gates):
    # the deadline is fixed when map() is called, not when iteration starts
    gate = gates.new()
    it = pool.map(wait_gate, [gate], timeout=0.2)
    time.sleep(0.3)
    t0 = time.monotonic()
    with pytest.raises(futures.TimeoutError):
        next(it)
    assert time.monotonic() - t0 < 0.15
    gates.open(gate)


def test_map_is_submitted_eagerly(pool, gates):
    # map() submits everything at once; results are computed even if never iterated
    fin = [gates.new() for _ in range(3)]
    pool.map(Path.touch, [Path(p) for p in fin])
    for p in fin:
        gates.wait(p)


# -- cancel ----------------------------------------------------------------------------------------

def test_cancel_pending_future(pool, gates):
    gate, running, pending = _blocked_pool_tasks(pool, gates, 2, 6)
    try:
        last = pending[-1]
        assert last.cancel()
        assert last.cancelled() and last.done()
        with pytest.raises(futures.CancelledError):
            last.result(timeout=0)
        # a running future cannot be cancelled
        assert not running[0].cancel()
        assert running[0].running()
    finally:
        gates.open(gate)
    assert [f.result(timeout=T) for f in running] == [("running", 0), ("running", 1)]
    assert [f.result(timeout=T) for f in pending[:-1]] == [("pending", i) for i in range(5)]
    assert not last.running()
    # a finished future cannot be cancelled either
    assert not running[0].cancel()


# -- done callbacks --------------------------------------------------------------------------------

def test_done_callbacks(pool, gates):
    gate = gates.new()
    seen = []
    called = threading.Event()
    f = pool.submit(wait_gate, gate, 5)

    def cb(fut):
        seen.append(("cb", fut.result()))
        called.set()

    f.add_done_callback(cb)
    assert seen == []
    gates.open(gate)
    assert called.wait(T)
    assert seen == [("cb", 5)]
    # added to a finished future: called at once, in this thread
    f.add_done_callback(lambda fut: seen.append(("late", fut.result(), threading.get_ident())))
    assert seen[-1] == ("late", 5, threading.get_ident())


def test_done_callback_of_failed_and_cancelled_futures(pool, gates):
    got = []
    f = pool.submit(raise_boom, "cb")
    done = threading.Event()
    f.add_done_callback(lambda fut: (got.append(type(fut.exception())), done.set()))
    assert done.wait(T)
    assert got == [Boom]

    gate, running, pending = _blocked_pool_tasks(pool, gates, 2, 4)
    try:
        cancelled = []
        pending[-1].add_done_callback(lambda fut: cancelled.append(fut.cancelled()))
        assert pending[-1].cancel()
        assert cancelled == [True]
    finally:
        gates.open(gate)
    futures.wait(running + pending, timeout=T)


def test_exception_in_done_callback_is_logged_not_raised(pool, caplog):
    f = pool.submit(square, 3)
    f.result(timeout=T)
    f.add_done_callback(lambda fut: 1 / 0)   # logged by concurrent.futures
    assert "exception calling callback" in caplog.text
    assert pool.submit(square, 3).result(timeout=T) == 9


# -- wait / as_completed ---------------------------------------------------------------------------

def test_wait_first_completed(pool, gates):
    gate = gates.new()
    slow = pool.submit(wait_gate, gate)
    fast = pool.submit(square, 2)
    done, not_done = futures.wait([slow, fast], timeout=T, return_when=FIRST_COMPLETED)
    assert done == {fast} and not_done == {slow}
    gates.open(gate)
    slow.result(timeout=T)


def test_wait_first_exception(pool, gates):
    gate = gates.new()
    slow = pool.submit(wait_gate, gate)
    ok = pool.submit(square, 2)
    ok.result(timeout=T)
    bad = pool.submit(raise_boom, "first")
    done, not_done = futures.wait([slow, ok, bad], timeout=T, return_when=FIRST_EXCEPTION)
    assert done == {ok, bad} and not_done == {slow}
    gates.open(gate)
    slow.result(timeout=T)


def test_wait_first_exception_without_exception_waits_for_all(pool):
    fs = [pool.submit(square, i) for i in range(4)]
    done, not_done = futures.wait(fs, timeout=T, return_when=FIRST_EXCEPTION)
    assert done == set(fs) and not not_done


def test_wait_all_completed(pool):
    fs = [pool.submit(square, i) for i in range(6)] + [pool.submit(raise_boom, "all")]
    done, not_done = futures.wait(fs, timeout=T, return_when=ALL_COMPLETED)
    assert done == set(fs) and not not_done
    assert [f.result() for f in fs[:-1]] == [i * i for i in range(6)]


def test_wait_timeout(pool, gates):
    gate = gates.new()
    slow = pool.submit(wait_gate, gate)
    ok = pool.submit(square, 3)
    t0 = time.monotonic()
    done, not_done = futures.wait([slow, ok], timeout=0.5, return_when=ALL_COMPLETED)
    assert 0.4 < time.monotonic() - t0 < 5
    assert done == {ok} and not_done == {slow}
    gates.open(gate)
    slow.result(timeout=T)


def test_as_completed_yields_in_completion_order(pool, gates):
    g1, g2 = gates.new(), gates.new()
    a = pool.submit(wait_gate, g1, "a")
    b = pool.submit(wait_gate, g2, "b")
    it = futures.as_completed([a, b, a], timeout=T)   # duplicates are yielded once
    gates.open(g2)
    assert next(it) is b
    gates.open(g1)
    assert next(it) is a
    with pytest.raises(StopIteration):
        next(it)


def test_as_completed_includes_already_finished_and_failed(pool):
    fs = [pool.submit(square, 2), pool.submit(raise_boom, "ac")]
    futures.wait(fs, timeout=T)
    assert set(futures.as_completed(fs, timeout=T)) == set(fs)


def test_as_completed_timeout(pool, gates):
    gate = gates.new()
    fast = pool.submit(square, 1)
    slow = pool.submit(wait_gate, gate)
    got = []
    t0 = time.monotonic()
    with pytest.raises(futures.TimeoutError, match="1 \\(of 2\\) futures unfinished"):
        for f in futures.as_completed([fast, slow], timeout=0.5):
            got.append(f)
    assert got == [fast]
    assert 0.4 < time.monotonic() - t0 < 5
    gates.open(gate)
    slow.result(timeout=T)


# -- asyncio ---------------------------------------------------------------------------------------

def test_asyncio_run_in_executor(pool):
    async def main():
        loop = asyncio.get_running_loop()
        one = loop.run_in_executor(pool, square, 9)
        many = [loop.run_in_executor(pool, lambda i=i: i + 1) for i in range(5)]
        failing = loop.run_in_executor(pool, raise_boom, "async")
        assert await asyncio.wait_for(one, T) == 81
        assert await asyncio.gather(*many) == [1, 2, 3, 4, 5]
        with pytest.raises(Boom, match="async"):
            await failing
        return True

    assert asyncio.run(main())


# -- initializer -----------------------------------------------------------------------------------



def test_initializer_runs_once_in_each_worker_before_tasks(gates):
    log = gates.new()
    with TransientUnitPoolExecutor(2, PROPS, initializer=record_init,
                                   initargs=("hello", log)) as p:
        results = [p.submit(init_state) for _ in range(20)]
        states = [r.result(timeout=T) for r in results]
    for _pid, calls in states:
        assert calls == ["hello"]        # ran once, before this task, in this process
    inits = Path(log).read_text().split()
    assert len(inits) == len(set(inits))  # once per worker
    assert set(pid for pid, _ in states) <= set(int(i) for i in inits)
    assert os.getpid() not in {pid for pid, _ in states}
    assert _init_state.get("calls") is None   # never ran in the owner


def test_initializer_lambda_with_closure():
    token = uuid.uuid4().hex
    # Globals a by-value function (a lambda) refers to travel as copies (cloudpickle), so the
    # state goes through something both find by import: the environment.
    with TransientUnitPoolExecutor(1, PROPS, initializer=lambda: os.environ.update(INIT_T=token)) as p:
        assert p.submit(lambda: os.environ.get("INIT_T")).result(timeout=T) == token


def test_failing_initializer_breaks_the_pool(stdlib_ctx):
    with ProcessPoolExecutor(1, mp_context=stdlib_ctx, initializer=failing_init) as ref:
        with pytest.raises(BrokenProcessPool):
            ref.submit(square, 2).result(timeout=T)
    with TransientUnitPoolExecutor(1, PROPS, initializer=failing_init) as p:
        fs = _submit_until_broken(p)   # the worker may fail before the loop ends
        assert fs, "the first submit comes before any worker exists"
        _assert_broken(p, fs)


def log_to_queue_and_fail(log_queue):
    """CPython's test_init: a failing initializer whose log records go through a Queue."""
    import logging
    from logging.handlers import QueueHandler
    logger = logging.getLogger("concurrent.futures")
    logger.addHandler(QueueHandler(log_queue))
    logger.propagate = False
    raise ValueError("error in initializer")


def test_initargs_are_inherited_as_by_processpoolexecutors_fork_workers():
    # A fork context's Queue passes only by inheritance; a thread lock does not pickle at all.
    ctx = multiprocessing.get_context("fork")
    log_queue, lock = ctx.Queue(), threading.Lock()
    with TransientUnitPoolExecutor(1, PROPS, initializer=log_to_queue_and_fail,
                                   initargs=(log_queue,)) as p:
        _assert_broken(p, _submit_until_broken(p))
    record = log_queue.get(timeout=T)
    # (QueueHandler puts the formatted traceback in the message)
    assert "Exception in initializer" in record.getMessage()
    assert "ValueError: error in initializer" in record.getMessage()
    with TransientUnitPoolExecutor(1, PROPS, initializer=record_lock, initargs=(lock,)) as p:
        assert p.submit(lock_was_given).result(timeout=T) is True
    log_queue.close()


_given: dict = {}


def record_lock(lock):
    _given["lock"] = lock


def lock_was_given():
    return type(_given.get("lock")).__name__ == "lock" and _given["lock"].acquire(blocking=False)


def test_initializer_must_be_callable():
    with pytest.raises(TypeError):
        TransientUnitPoolExecutor(1, initializer=42)


# -- max_tasks_per_child ---------------------------------------------------------------------------

@pytest.mark.skipif(sys.version_info < (3, 11), reason="max_tasks_per_child is 3.11+")
def test_max_tasks_per_child_replaces_workers():
    with TransientUnitPoolExecutor(1, PROPS, max_tasks_per_child=2) as p:
        pids = [p.submit(pid_after).result(timeout=T) for _ in range(6)]
        cgroups = {p.submit(my_cgroup).result(timeout=T) for _ in range(2)}
        unit_cgroup = p.unit.control_group
    assert len(set(pids)) == 3, pids
    assert pids[0] == pids[1] and pids[2] == pids[3] and pids[4] == pids[5]
    # the replacements run in the unit too
    assert all(unit_cgroup in c for c in cgroups)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="max_tasks_per_child is 3.11+")
def test_initializer_runs_in_each_replacement_worker(gates):
    log = gates.new()
    with TransientUnitPoolExecutor(1, PROPS, max_tasks_per_child=2, initializer=record_init,
                                   initargs=("w", log)) as p:
        states = [p.submit(init_state).result(timeout=T) for _ in range(6)]
    pids = [pid for pid, _ in states]
    assert len(set(pids)) == 3, pids
    assert all(calls == ["w"] for _, calls in states)
    # every worker that ran tasks was initialized once; a successor started after the last
    # task (max_tasks_per_child) may have been initialized too, as with ProcessPoolExecutor
    initialized = [int(i) for i in Path(log).read_text().split()]
    assert len(initialized) == len(set(initialized))
    assert set(pids) <= set(initialized) and len(initialized) <= len(set(pids)) + 1


@pytest.mark.skipif(sys.version_info < (3, 11), reason="max_tasks_per_child is 3.11+")
def test_max_tasks_per_child_one_with_several_workers():
    with TransientUnitPoolExecutor(2, PROPS, max_tasks_per_child=1) as p:
        pids = list(p.map(pid_after, range(8)))
    assert len(set(pids)) == 8


@pytest.mark.skipif(sys.version_info < (3, 11), reason="max_tasks_per_child is 3.11+")
@pytest.mark.parametrize("bad", [0, -1])
def test_max_tasks_per_child_must_be_positive(bad):
    with pytest.raises(ValueError):
        TransientUnitPoolExecutor(1, max_tasks_per_child=bad)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="max_tasks_per_child is 3.11+")
def test_max_tasks_per_child_type_error_like_stdlib(stdlib_ctx):
    with pytest.raises(TypeError):
        ProcessPoolExecutor(1, mp_context=stdlib_ctx, max_tasks_per_child=1.5)
    with pytest.raises(TypeError):
        TransientUnitPoolExecutor(1, max_tasks_per_child=1.5)


@pytest.mark.parametrize("bad", [0, -2])
def test_max_workers_must_be_positive(bad):
    with pytest.raises(ValueError):
        TransientUnitPoolExecutor(bad)


# -- shutdown --------------------------------------------------------------------------------------

def test_shutdown_wait_true_waits_for_running_and_pending(gates):
    p = TransientUnitPoolExecutor(2, PROPS)
    gate, running, pending = _blocked_pool_tasks(p, gates, 2, 4)
    threading.Timer(0.3, gates.open, (gate,)).start()
    t0 = time.monotonic()
    p.shutdown(wait=True)
    assert time.monotonic() - t0 >= 0.25
    assert all(f.done() for f in running + pending)
    assert [f.result() for f in pending] == [("pending", i) for i in range(4)]


def test_shutdown_wait_false_returns_at_once_and_work_completes(gates):
    p = TransientUnitPoolExecutor(2, PROPS)
    gate, running, pending = _blocked_pool_tasks(p, gates, 2, 4)
    manager = p._executor_manager_thread
    t0 = time.monotonic()
    p.shutdown(wait=False)
    assert time.monotonic() - t0 < 1
    assert not any(f.done() for f in running)
    gates.open(gate)
    assert [f.result(timeout=T) for f in running] == [("running", 0), ("running", 1)]
    assert [f.result(timeout=T) for f in pending] == [("pending", i) for i in range(4)]
    manager.join(T)
    assert not manager.is_alive()


def test_shutdown_wait_false_then_map_results_are_all_computed():
    # CPython's test_shutdown_no_wait
    p = TransientUnitPoolExecutor(5, PROPS)
    res = p.map(abs, range(-5, 5))
    p.shutdown(wait=False)
    assert list(res) == [abs(v) for v in range(-5, 5)]


def test_shutdown_wait_false_then_context_exit_lets_running_tasks_finish(gates, stdlib_ctx):
    # `with pool: ...; pool.shutdown(wait=False)`: __exit__ calls shutdown() again. With
    # ProcessPoolExecutor the running tasks still finish.
    def scenario(executor):
        gate = gates.new()
        started = gates.new()
        with executor as ex:
            f = ex.submit(mark_and_wait, started, gate, "done")
            gates.wait(started)
            ex.shutdown(wait=False)
        threading.Timer(0.3, gates.open, (gate,)).start()
        return f.result(timeout=T)

    assert scenario(ProcessPoolExecutor(1, mp_context=stdlib_ctx)) == "done"
    assert scenario(TransientUnitPoolExecutor(1, PROPS)) == "done"


def test_shutdown_cancel_futures(gates):
    p = TransientUnitPoolExecutor(1, PROPS)
    gate, running, pending = _blocked_pool_tasks(p, gates, 1, 8)
    threading.Timer(0.2, gates.open, (gate,)).start()
    p.shutdown(wait=True, cancel_futures=True)
    assert running[0].result(timeout=0) == ("running", 0)
    assert all(f.done() for f in pending)
    cancelled = [f for f in pending if f.cancelled()]
    # the call queue may hold one item beyond the worker count (it is "running" already);
    # everything else was cancelled
    assert len(cancelled) >= len(pending) - 2
    assert all(f.result(timeout=0) == ("pending", i)
               for i, f in enumerate(pending) if not f.cancelled())
    assert cancelled == pending[len(pending) - len(cancelled):]   # the tail of the queue


def test_shutdown_cancel_futures_right_after_submit_runs_what_workers_took():
    # CPython's test_cancel_futures: ProcessPoolExecutor hands calls to its workers in submit();
    # a shutdown(cancel_futures=True) right after cancels only the rest.
    p = TransientUnitPoolExecutor(3, PROPS)
    fs = [p.submit(time.sleep, 0.05) for _ in range(40)]
    p.shutdown(cancel_futures=True)
    ran = [f for f in fs if not f.cancelled()]
    assert 3 <= len(ran) <= 3 * 2, len(ran)   # each worker takes up to two calls at a time
    assert all(f.done() and f.exception() is None for f in ran)


def test_shutdown_no_wait_cancel_futures(gates):
    p = TransientUnitPoolExecutor(1, PROPS)
    gate, running, pending = _blocked_pool_tasks(p, gates, 1, 6)
    t0 = time.monotonic()
    p.shutdown(wait=False, cancel_futures=True)
    assert time.monotonic() - t0 < 1
    # the tail of the queue is cancelled at once, before the running task ends
    deadline = time.monotonic() + T
    while not pending[-1].done() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pending[-1].cancelled()
    assert not running[0].done()
    gates.open(gate)
    assert running[0].result(timeout=T) == ("running", 0)
    # (not futures.wait: a future cancelled by shutdown is never "notified", wait() would block)
    for f in pending:
        if not f.cancelled():
            assert f.result(timeout=T)[0] == "pending"
    assert sum(f.cancelled() for f in pending) >= len(pending) - 2


def test_shutdown_is_idempotent():
    p = TransientUnitPoolExecutor(1, PROPS)
    assert p.submit(square, 3).result(timeout=T) == 9
    p.shutdown()
    p.shutdown()
    p.shutdown(wait=False)
    p.shutdown(cancel_futures=True)


def test_shutdown_without_any_task():
    p = TransientUnitPoolExecutor(1, PROPS)
    p.shutdown(wait=False)
    p.shutdown()


def test_submit_and_map_after_shutdown_raise_runtime_error():
    p = TransientUnitPoolExecutor(1, PROPS)
    p.submit(square, 1).result(timeout=T)
    p.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        p.submit(square, 2)
    with pytest.raises(RuntimeError, match="after shutdown"):
        p.map(square, [1, 2])


def test_context_manager_returns_the_pool_and_shuts_down():
    with TransientUnitPoolExecutor(1, PROPS) as p:
        assert isinstance(p, TransientUnitPoolExecutor)
        f = p.submit(square, 12)
        name = p.unit.name
    assert f.done() and f.result() == 144
    with pytest.raises(RuntimeError):
        p.submit(square, 2)
    state = subprocess.run(["systemctl", "is-active", name], capture_output=True, text=True)
    assert state.stdout.strip() in ("inactive", "unknown", "failed") and state.returncode != 0


def test_context_manager_exit_on_exception_waits_for_work(gates):
    gate = gates.new()
    with pytest.raises(KeyError):
        with TransientUnitPoolExecutor(1, PROPS) as p:
            f = p.submit(wait_gate, gate, "finished")
            threading.Timer(0.2, gates.open, (gate,)).start()
            raise KeyError("inside the with block")
    assert f.done() and f.result() == "finished"


def test_del_without_shutdown_still_completes_submitted_work(stdlib_ctx, gates):
    # CPython's test_del_shutdown, with tasks that are still running when the pool is dropped
    def scenario(make):
        gate = gates.new()
        executor = make()   # the only reference (an argument would live on in the caller's frame)
        res = executor.map(wait_gate, [gate] * 4, range(4), timeout=T)
        manager = executor._executor_manager_thread
        del executor
        gc.collect()
        threading.Timer(0.5, gates.open, (gate,)).start()
        manager.join(T)
        return list(res)

    assert scenario(lambda: ProcessPoolExecutor(2, mp_context=stdlib_ctx)) == [0, 1, 2, 3]
    assert scenario(lambda: TransientUnitPoolExecutor(2, PROPS)) == [0, 1, 2, 3]


def test_pool_never_shut_down_finishes_its_work_at_interpreter_exit(tmp_path):
    out = tmp_path / "out"
    r = _run_script(tmp_path, f"""
        import time
        from concurrentd import TransientUnitPoolExecutor

        def slow_write(path):
            time.sleep(0.3)
            with open(path, "w") as f:
                f.write("written")

        pool = TransientUnitPoolExecutor(1)
        pool.submit(slow_write, {str(out)!r})
        print(pool.unit.name)
    """)
    assert r.returncode == 0, r.stderr
    assert out.read_text() == "written"
    name = r.stdout.strip()
    state = subprocess.run(["systemctl", "is-active", name], capture_output=True, text=True)
    assert state.returncode != 0, state.stdout


# -- broken pool -----------------------------------------------------------------------------------

def test_worker_exit_breaks_the_pool(stdlib_ctx, gates):
    with ProcessPoolExecutor(1, mp_context=stdlib_ctx) as ref:
        with pytest.raises(BrokenProcessPool):
            ref.submit(exit_now).result(timeout=T)
    with TransientUnitPoolExecutor(2, PROPS) as p:
        assert p.submit(square, 2).result(timeout=T) == 4
        gate, started = gates.new(), gates.new()
        running = p.submit(mark_and_wait, started, gate)
        gates.wait(started)
        dying = p.submit(exit_now, 3)
        pending = _submit_until_broken(p)   # the death may be seen before the loop ends
        # the other worker's task and the queued ones fail too
        _assert_broken(p, [dying, running, *pending])
        with pytest.raises(BrokenProcessPool):
            p.map(square, [1])
        gates.open(gate)


def test_worker_sigkilled_by_itself_breaks_the_pool():
    with TransientUnitPoolExecutor(1, PROPS) as p:
        f = p.submit(kill_self)
        pending = p.submit(square, 3)
        _assert_broken(p, [f, pending])


def test_worker_sigkilled_from_outside_breaks_the_pool(gates):
    with TransientUnitPoolExecutor(1, PROPS) as p:
        gate, started = gates.new(), gates.new()
        f = p.submit(mark_and_wait, started, gate)
        gates.wait(started)
        pid = p.submit(pid_after)   # queued behind
        (worker,) = p._processes.keys()
        os.kill(worker, signal.SIGKILL)
        _assert_broken(p, [f, pid])


def test_processes_has_the_workers_right_after_submit_and_they_can_be_terminated(gates):
    # ProcessPoolExecutor starts workers in submit(); code (CPython's test_killed_child among
    # it) takes one from _processes at once and terminates it.
    with TransientUnitPoolExecutor(2, PROPS) as p:
        gate = gates.new()
        futures = [p.submit(wait_gate, gate) for _ in range(10)]
        processes = p._processes
        assert len(processes) == 2
        worker = next(iter(processes.values()))
        assert worker.is_alive() and worker.exitcode is None
        worker.terminate()
        worker.join(T)
        assert not worker.is_alive() and worker.exitcode == -signal.SIGTERM
        _assert_broken(p, futures)


def test_processes_can_be_joined_after_shutdown():
    p = TransientUnitPoolExecutor(3, PROPS)
    assert list(p.map(square, range(30))) == [i * i for i in range(30)]
    processes = p._processes
    assert processes and all(w.is_alive() for w in processes.values())
    p.shutdown()
    for w in processes.values():
        w.join(T)
        assert w.exitcode == 0, w


def test_a_shutdown_after_the_end_writes_into_no_file(tmp_path):
    # The manager's wakeup eventfd is closed when its thread ends; a later wakeup (a second
    # shutdown, the finalizer) must not write 8 bytes to whatever file now has that number.
    p = TransientUnitPoolExecutor(1, PROPS)
    p.submit(square, 2).result(timeout=T)
    p.shutdown()
    files = [os.open(tmp_path / f"f{i}", os.O_RDWR | os.O_CREAT) for i in range(64)]
    try:
        p.shutdown()
        p.shutdown(wait=False)
    finally:
        for fd in files:
            os.close(fd)
    assert not [f.name for f in tmp_path.iterdir() if f.stat().st_size], "a wakeup wrote into a file"


def test_idle_worker_killed_breaks_the_pool():
    with TransientUnitPoolExecutor(1, PROPS) as p:
        worker = p.submit(pid_after).result(timeout=T)
        os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + T
        while True:   # the pool notices the death on its own, then refuses work
            try:
                f = p.submit(square, 2)
            except BrokenProcessPool:
                break
            with pytest.raises(BrokenProcessPool):
                f.result(timeout=T)
            assert time.monotonic() < deadline
            time.sleep(0.01)


def test_broken_pool_exception_message_and_cause():
    with TransientUnitPoolExecutor(1, PROPS) as p:
        f = p.submit(exit_now, 9)
        exc = f.exception(timeout=T)
    assert isinstance(exc, BrokenProcessPool)
    # ProcessPoolExecutor says "terminated abruptly"; this pool says which worker of which unit
    assert p.unit.name in str(exc) and "9" in str(exc), str(exc)


def test_a_broken_pool_fails_each_future_with_an_exception_of_its_own():
    # As ProcessPoolExecutor since 3.14 (CPython's test_broken_process_pool_traceback): one
    # exception shared by every future would gather a traceback frame per result() call.
    with TransientUnitPoolExecutor(1, PROPS) as p:
        futures_ = [p.submit(time.sleep, 30) for _ in range(3)]
        next(iter(p._processes.values())).terminate()
        errors = [f.exception(timeout=T) for f in futures_]
    assert all(isinstance(e, BrokenProcessPool) for e in errors), errors
    assert len({id(e) for e in errors}) == 3
    assert len({str(e) for e in errors}) == 1


@pytest.mark.parametrize("how", ["terminate_workers", "kill_workers"])
def test_terminate_and_kill_workers_end_the_pool_as_processpoolexecutors_do(how):
    # Python 3.14's ProcessPoolExecutor.terminate_workers() and kill_workers() (CPython's
    # test_force_shutdown_workers*), which reached into private attributes this pool lacks.
    p = TransientUnitPoolExecutor(1, PROPS)
    name = p.unit.name
    running = p.submit(time.sleep, 60)
    assert p.submit(os.getpid) is not None
    worker = next(iter(p._processes.values()))
    getattr(p, how)()
    worker.join(T)
    assert not worker.is_alive()
    assert worker.exitcode == -(signal.SIGTERM if how == "terminate_workers" else signal.SIGKILL)
    assert isinstance(running.exception(timeout=T), BrokenProcessPool)
    with pytest.raises(RuntimeError):
        p.submit(int)
    getattr(p, how)()   # again, and on a pool without workers: nothing to do
    with pytest.raises(ValueError, match="Unsupported operation"):   # as ProcessPoolExecutor's
        p._force_shutdown(operation="invalid operation")
    deadline = time.monotonic() + T   # the unit goes once the workers have (shutdown(wait=False))
    while subprocess.run(["systemctl", "is-active", "--quiet", name]).returncode == 0:
        assert time.monotonic() < deadline, f"{name} still active"
        time.sleep(0.05)


def test_broken_pool_shutdown_stops_the_unit():
    p = TransientUnitPoolExecutor(1, PROPS)
    name = p.unit.name
    with pytest.raises(BrokenProcessPool):
        p.submit(exit_now).result(timeout=T)
    p.shutdown()
    state = subprocess.run(["systemctl", "is-active", name], capture_output=True, text=True)
    assert state.returncode != 0, state.stdout


def test_module_pool_still_healthy(pool):
    # runs last among the shared-pool users: nothing above broke it
    assert list(pool.map(square, range(10), chunksize=3)) == [i * i for i in range(10)]


def test_shutdown_without_waiting_from_a_done_callback_lets_running_tasks_finish(gates):
    # ProcessPoolExecutor lets the running task finish; the callback runs in the manager thread.
    p = TransientUnitPoolExecutor(2, PROPS)
    manager = p._executor_manager_thread
    gate, started = gates.new(), gates.new()
    running = p.submit(mark_and_wait, started, gate, "finished")
    gates.wait(started)
    first = p.submit(square, 3)
    first.add_done_callback(lambda _: p.shutdown(wait=False))
    assert first.result(timeout=T) == 9
    gates.open(gate)
    assert running.result(timeout=T) == "finished"
    manager.join(T)
    assert not manager.is_alive()


def test_ctrl_c_in_the_with_block_cancels_the_queued_calls(gates):
    gate, started = gates.new(), gates.new()
    with pytest.raises(KeyboardInterrupt):
        with TransientUnitPoolExecutor(1, PROPS) as p:
            running = p.submit(mark_and_wait, started, gate, "ran")
            queued = [p.submit(square, i) for i in range(5)]
            gates.wait(started)
            threading.Timer(0.3, gates.open, (gate,)).start()
            raise KeyboardInterrupt
    assert running.result(timeout=0) == "ran"
    # (the worker holds the call after the one it runs: that one was no longer cancellable)
    done = [f for f in queued if not f.cancelled()]
    assert len(done) <= 1 and all(f.result(timeout=0) == 0 for f in done), done

"""How a call is pickled for a worker: plain pickle where a worker reads the same thing back,
cloudpickle where it must. Pure: no systemd."""

import functools
import pickle
import sys
import types
from concurrent.futures.process import _process_chunk

import pytest

from concurrentd import _payload

pytestmark = pytest.mark.pure   # needs neither root nor systemd (see conftest)


def _closure():
    x = 1
    return lambda: x


class _Thing:
    def method(self):
        return 1


def _decoded(fn, args=(), kwargs=None):
    cloud, blob = _payload.encode_call(fn, args, kwargs or {})
    return cloud, _payload.loads(cloud, blob)


def test_functions_found_by_name_travel_plain():
    for fn, args in ((abs, (-1,)), (pow, (2, 10)), (_Thing, ()), (_Thing().method, ())):
        cloud, (fn2, args2, _) = _decoded(fn, args)
        assert not cloud, fn
        assert args2 == args


def test_lambdas_closures_and_main_go_by_cloudpickle():
    for fn in (lambda: 1, _closure()):
        cloud, (fn2, _, _) = _decoded(fn)
        assert cloud and fn2() == 1


def test_a_function_of_a_module_made_at_run_time_goes_by_value():
    made = types.ModuleType("made_at_run_time")
    exec("def f(): return 41 + 1", made.__dict__)
    sys.modules["made_at_run_time"] = made
    try:
        cloud, blob = _payload.encode_call(made.f, (), {})
    finally:
        del sys.modules["made_at_run_time"]
    assert cloud
    fn, _, _ = _payload.loads(cloud, blob)   # the worker has no such module: by value
    assert fn() == 42


def test_a_map_chunk_is_pickled_once_with_its_function_by_name():
    chunk = ((1,), (2,), (3,))
    cloud, (fn, args, _) = _decoded(functools.partial(_process_chunk, abs), (chunk,))
    assert not cloud and fn(*args) == [1, 2, 3]


def test_a_map_chunk_of_a_lambda_goes_by_cloudpickle():
    cloud, (fn, args, _) = _decoded(functools.partial(_process_chunk, lambda x: -x), (((1,),),))
    assert cloud and fn(*args) == [-1]


def test_an_unpicklable_argument_raises_at_encoding():
    import threading

    try:
        _payload.encode_call(abs, (threading.Lock(),), {})
    except TypeError as e:
        assert "pickle" in str(e)
    else:
        raise AssertionError("a lock was pickled")


def test_a_task_round_trips_what_plain_pickle_cannot():
    task = _payload.Task(_closure())
    assert pickle.loads(pickle.dumps(task))() == 1


def test_code_sent_by_value_keeps_its_file_name():
    # cloudpickle 3 names it "<dynamic-code>": a worker's traceback would show no file
    cloud, (fn, _, _) = _decoded(lambda: lambda: 1)
    assert cloud and fn.__code__.co_filename == __file__
    assert fn().__code__.co_filename == __file__   # a code object within another

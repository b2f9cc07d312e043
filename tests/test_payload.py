"""Which calls skip the Task wrapper (ProcessPoolExecutor's own pickling carries them), and that
the others still travel whole."""

import os
import pickle
import types

from concurrentd import _payload


def _closure():
    x = 1
    return lambda: x


class _Thing:
    def method(self):
        return 1


def test_functions_found_by_name_with_plain_arguments_travel_plain():
    assert _payload.travels_plain(abs, (-1,), {})
    assert _payload.travels_plain(os.getpid, (), {})
    assert _payload.travels_plain(pow, (2, 10), {"mod": None})
    assert _payload.travels_plain(_Thing, (), {})


def test_anything_else_goes_in_a_task():
    assert not _payload.travels_plain(lambda: 1, (), {})
    assert not _payload.travels_plain(_closure(), (), {})
    assert not _payload.travels_plain(_Thing().method, (), {})
    assert not _payload.travels_plain(abs, ([1],), {})          # a container may hold anything
    assert not _payload.travels_plain(abs, (), {"x": _Thing()})
    made = types.ModuleType("made_at_run_time")
    exec("def f(): return 1", made.__dict__)
    assert not _payload.travels_plain(made.f, (), {})


def test_a_name_that_now_means_another_object_goes_in_a_task():
    def original():
        return 1
    original.__module__, original.__qualname__ = __name__, "_Thing"   # _Thing is another object
    assert not _payload.travels_plain(original, (), {})


def test_a_task_round_trips_what_plain_pickle_cannot():
    task = _payload.Task(_closure(), (), {})
    assert pickle.loads(pickle.dumps(task))() == 1


def test_a_function_found_before_is_checked_again(monkeypatch):
    # The answer for a function is remembered; a rebinding or a new module must still count.
    made = types.ModuleType("made_and_imported")
    made.__spec__ = types.SimpleNamespace(name="made_and_imported")   # importable, as it were
    exec("def f(): return 1", made.__dict__)
    f = made.f
    monkeypatch.setitem(__import__("sys").modules, "made_and_imported", made)
    assert _payload.travels_plain(f, (), {})
    assert f in _payload._FOUND
    made.f = lambda: 2                                    # the name now means another object
    assert not _payload.travels_plain(f, (), {})
    made.f = f
    assert _payload.travels_plain(f, (), {})
    again = types.ModuleType("made_and_imported")         # a fresh module under the same name
    again.__spec__, again.f = made.__spec__, f
    monkeypatch.setitem(__import__("sys").modules, "made_and_imported", again)
    assert _payload.travels_plain(f, (), {})              # found by name there too
    del again.f
    assert not _payload.travels_plain(f, (), {})


def test_the_memory_of_found_functions_is_bounded(monkeypatch):
    monkeypatch.setattr(_payload, "_FOUND_MAX", 2)
    _payload._FOUND.clear()
    for fn in (abs, len, min, max):
        assert _payload.travels_plain(fn, (), {})
        assert len(_payload._FOUND) <= 2


def test_a_plain_chunk_of_map_is_pickled_once_and_read_when_iterated():
    import functools
    from concurrent.futures.process import _process_chunk

    chunk = ((-1,), (-2,))
    got = _payload.plain_chunk(functools.partial(_process_chunk, abs), (chunk,), {})
    assert isinstance(got, _payload.PlainChunk)
    assert list(pickle.loads(pickle.dumps(got))) == list(chunk)
    assert _process_chunk(abs, pickle.loads(pickle.dumps(got))) == [1, 2]


def test_a_chunk_plain_pickle_cannot_carry_goes_in_a_task(monkeypatch):
    import __main__
    import functools
    from concurrent.futures.process import _process_chunk

    plain_fn = functools.partial(_process_chunk, abs)
    assert _payload.plain_chunk(plain_fn, (((lambda: 1,),),), {}) is None
    assert _payload.plain_chunk(functools.partial(_process_chunk, lambda x: x), (((1,),),), {}) is None
    assert _payload.plain_chunk(functools.partial(abs), (((1,),),), {}) is None   # not map's
    # found by name in this __main__, which a worker's (forked when the pool started) may lack
    defined_late = type("DefinedLate", (), {"__module__": "__main__"})
    monkeypatch.setattr(__main__, "DefinedLate", defined_late, raising=False)
    assert _payload.plain_chunk(plain_fn, (((defined_late(),),),), {}) is None

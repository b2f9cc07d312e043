"""How a call travels to a worker: plain pickle where it can, cloudpickle where it must.

Plain pickle is the fast path (the throughput of a plain ProcessPoolExecutor). cloudpickle carries
what plain pickle cannot: lambdas, closures, and everything defined in ``__main__`` (a worker is
forked from the zygote, so a function defined in ``__main__`` after the pool started is not there
by name).

A call is deserialized only as it runs, in the worker, inside the unit (a pool's worker unpickles
its call frame as it takes it; a TransientUnitProcess's Task only when it is called).
"""

from __future__ import annotations

import functools
import pickle
import sys
from typing import Any, Callable

import cloudpickle

from . import _cpython

def _cloud(obj: Any) -> bytes:
    return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _plain(obj: Any) -> bytes | None:
    """``obj`` by plain pickle, or None where a worker may not read that back: plain pickle
    cannot carry it, or it refers into ``__main__`` by name (the worker may not have it)."""
    try:
        blob = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError):
        return None
    return None if b"__main__" in blob else blob


def encode(payload: Any, fn: Callable | None = None) -> tuple[bool, bytes]:
    """``payload`` for a worker, as (by cloudpickle?, bytes): plain pickle where a worker reads
    it back the same, cloudpickle where it must. ``fn``: the function the payload calls, whose
    module, if made at run time, goes by value."""
    module = None if fn is None else _run_time_module(_target(fn))
    if module is not None:
        # cloudpickle takes whatever is in sys.modules by reference, unless told
        cloudpickle.register_pickle_by_value(module)
        return True, _cloud(payload)
    blob = _plain(payload)
    return (True, _cloud(payload)) if blob is None else (False, blob)


def encode_call(fn: Callable, args: tuple, kwargs: dict) -> tuple[bool, bytes]:
    """``fn(*args, **kwargs)`` for a worker's call pipe, pickled once (see encode)."""
    return encode((fn, args, kwargs), fn)


def loads(cloud: bool, blob: bytes) -> Any:
    return (cloudpickle.loads if cloud else pickle.loads)(blob)


def _target(fn: Callable) -> Callable:
    """The function a call runs: map's chunks call ``partial(process_chunk, user_fn)``."""
    while isinstance(fn, functools.partial):
        fn = fn.args[0] if fn.func is _cpython.process_chunk and fn.args else fn.func
    return fn


class Task:
    """fn(*args, **kwargs), picklable whatever fn is."""

    __slots__ = ("fn", "args", "kwargs", "_blob")

    def __init__(self, fn: Callable, args: tuple = (), kwargs: dict | None = None):
        self.fn, self.args, self.kwargs = fn, args, kwargs or {}
        self._blob: tuple[bool, bytes] | None = None

    def __reduce__(self):
        if self._blob is None:
            self._blob = encode_call(self.fn, self.args, self.kwargs)
        return _received, self._blob

    def __call__(self):   # where it is called before travelling (ProcessPoolExecutor checks it)
        return self.fn(*self.args, **self.kwargs)


def _run_time_module(fn: Callable):
    """``fn``'s module if it was made at run time (types.ModuleType, exec): a worker cannot
    import it by name, even where plain pickle finds it in the owner's sys.modules."""
    module = sys.modules.get(getattr(fn, "__module__", None) or "")
    if module is None or module.__name__ in ("builtins", "__main__"):
        return None
    if getattr(module, "__spec__", None) is None and getattr(module, "__file__", None) is None:
        return module
    return None


class _ReceivedTask:
    """A Task on the worker's side: still bytes until called."""

    __slots__ = ("cloud", "blob")

    def __init__(self, cloud: bool, blob: bytes):
        self.cloud, self.blob = cloud, blob

    def __call__(self):
        fn, args, kwargs = loads(self.cloud, self.blob)
        return fn(*args, **kwargs)


def _received(cloud: bool, blob: bytes) -> _ReceivedTask:
    return _ReceivedTask(cloud, blob)

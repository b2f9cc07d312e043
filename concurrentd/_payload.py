"""How a task travels to a worker: plain pickle where it can, cloudpickle where it must.

Plain pickle is the fast path (the throughput of a plain ProcessPoolExecutor). cloudpickle carries
what plain pickle cannot: lambdas, closures, and everything defined in ``__main__`` (a worker is
forked from the zygote, so a function defined in ``__main__`` after the pool started is not there
by name).

A Task is deserialized only when it is called, in the worker, inside the unit: merely receiving it
runs no user code.
"""

from __future__ import annotations

import functools
import pickle
import sys
import types
from concurrent.futures.process import _process_chunk
from typing import Any, Callable

import cloudpickle

from . import _taskboard

_PLAIN, _CLOUD = 0, 1


def _cloud(obj: Any) -> tuple[int, bytes]:
    return _CLOUD, cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _plain(obj: Any) -> bytes | None:
    """``obj`` by plain pickle, or None where a worker may not read that back: plain pickle
    cannot carry it, or it refers into ``__main__`` by name (the worker may not have it)."""
    try:
        blob = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError):
        return None
    return None if b"__main__" in blob else blob


def dumps(obj: Any) -> tuple[int, bytes]:
    blob = _plain(obj)
    return _cloud(obj) if blob is None else (_PLAIN, blob)


def loads(kind: int, blob: bytes) -> Any:
    return (pickle.loads if kind == _PLAIN else cloudpickle.loads)(blob)


_ATOMS = frozenset({int, float, complex, str, bytes, bool, type(None)})


def travels_plain(fn: Callable, args: tuple, kwargs: dict) -> bool:
    """Whether ProcessPoolExecutor's own pickling surely carries ``fn(*args, **kwargs)``: ``fn``
    found by name in an importable module, every argument a plain value. Such a call needs no
    Task around it (which would pickle it once more, ~6 % of a no-op task's cost)."""
    for value in args:
        if type(value) not in _ATOMS:
            return False
    if kwargs:
        for value in kwargs.values():
            if type(value) not in _ATOMS:
                return False
    return _found_by_name(fn)


#: Functions and classes already found by name: fn → (its module, the module's namespace). A
#: submit loop asks about the same few functions again and again, and the full check costs more
#: than 1 % of a no-op task. A hit is still checked: the module must be the one sys.modules
#: holds and the name must still mean fn (a reload or a rebinding falls back to the full check).
_FOUND: dict[Callable, tuple[Any, dict]] = {}
_FOUND_MAX = 4096
_BY_IDENTITY = frozenset({types.FunctionType, types.BuiltinFunctionType, type})


def _found_by_name(fn: Callable) -> bool:
    """Whether a worker unpickles the same object as ``fn`` from plain pickle's reference."""
    cacheable = type(fn) in _BY_IDENTITY
    if cacheable:
        seen = _FOUND.get(fn)
        if seen is not None and sys.modules.get(fn.__module__) is seen[0] \
                and seen[1].get(fn.__qualname__) is fn:
            return True
    module_name = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module_name or not isinstance(qualname, str) or module_name == "__main__" \
            or "<" in qualname:
        return False
    module = sys.modules.get(module_name)
    if module is None or _run_time_module(fn) is not None:
        return False
    found = module
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if found is not fn:
        return False
    if cacheable and "." not in qualname:
        if len(_FOUND) >= _FOUND_MAX:
            _FOUND.clear()
        _FOUND[fn] = (module, module.__dict__)
    return True


def plain_chunk(fn: Callable, args: tuple, kwargs: dict) -> "PlainChunk | None":
    """For one chunk of ProcessPoolExecutor.map, ``fn(*args)`` = ``_process_chunk(user_fn, chunk)``:
    the chunk, pickled already, if user_fn travels by name and plain pickle carries the chunk (no
    reference into ``__main__``); else None, and the call goes in a Task.

    A Task would pickle the chunk once more inside the call's own pickle, and unpickle it twice:
    measured, 4.3 µs of the owner's and 2 µs of a worker's time per chunk of 100, 5 % of a map of
    no-ops. Here the chunk is pickled once, and only its bytes are copied into the call's pickle.
    """
    if type(fn) is not functools.partial or fn.func is not _process_chunk or len(fn.args) != 1 \
            or fn.keywords or len(args) != 1 or kwargs or not _found_by_name(fn.args[0]):
        return None
    blob = _plain(args[0])
    return None if blob is None else PlainChunk(blob)


class PlainChunk:
    """A chunk of map's arguments as plain pickle's bytes; unpickled when the worker iterates it,
    in _process_chunk (so that a failure fails the chunk's future, as in a Task)."""

    __slots__ = ("blob",)

    def __init__(self, blob: bytes):
        self.blob = blob

    def __reduce__(self):
        return PlainChunk, (self.blob,)

    def __iter__(self):
        return iter(pickle.loads(self.blob))


class Task:
    """fn(*args, **kwargs), picklable whatever fn is."""

    __slots__ = ("fn", "args", "kwargs", "_blob")

    def __init__(self, fn: Callable, args: tuple = (), kwargs: dict | None = None):
        self.fn, self.args, self.kwargs = fn, args, kwargs or {}
        self._blob: tuple[int, bytes] | None = None

    def __reduce__(self):
        if self._blob is None:
            payload = (self.fn, self.args, self.kwargs)
            module = _run_time_module(self.fn)
            if module is not None:
                # cloudpickle takes whatever is in sys.modules by reference, unless told
                cloudpickle.register_pickle_by_value(module)
                self._blob = _cloud(payload)
            else:
                self._blob = dumps(payload)
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

    __slots__ = ("kind", "blob")

    def __init__(self, kind: int, blob: bytes):
        self.kind, self.blob = kind, blob

    def __call__(self):
        fn, args, kwargs = loads(self.kind, self.blob)
        result = fn(*args, **kwargs)
        if _taskboard.current is not None:
            _taskboard.current.set(_taskboard.SENDING)   # a death from here on is not the task's
        return result


def _received(kind: int, blob: bytes) -> _ReceivedTask:
    return _ReceivedTask(kind, blob)

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
import io
import pickle
import socket
import sys
import threading
import types
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


class _FdFinder(pickle.Pickler):
    """Walks an object graph as pickle would, noting the fds of the files, sockets and
    multiprocessing connections in it; writes nothing anyone reads."""

    def __init__(self):
        super().__init__(_Discard(), protocol=pickle.HIGHEST_PROTOCOL)
        self.fds: set[int] = set()
        mp = sys.modules.get("multiprocessing.connection"), sys.modules.get("multiprocessing.synchronize")
        self._with_fd = (io.IOBase, socket.socket) + ((mp[0].Connection,) if mp[0] else ())
        self._opaque = (types.ModuleType, type(threading.Lock()), type(threading.RLock()),
                        *((mp[1].SemLock,) if mp[1] else ()))

    def reducer_override(self, obj):
        if isinstance(obj, self._with_fd):
            try:
                self.fds.add(obj.fileno())
            except (OSError, ValueError):   # closed, or a file without an fd
                pass
            return int, ()
        if isinstance(obj, self._opaque):   # not walked: no fd, and pickle refuses them
            return int, ()
        if isinstance(obj, types.FunctionType):   # what it closes over, defaults to, names
            cells = tuple(c.cell_contents for c in obj.__closure__ or () if _has_contents(c))
            names = tuple(obj.__globals__[name] for name in obj.__code__.co_names
                          if name in obj.__globals__)
            return tuple, ((obj.__defaults__, obj.__kwdefaults__, cells, names),)
        return NotImplemented

    def duplicate_for_child(self, fd: int) -> int:
        """As a spawning Popen: what multiprocessing's reducers pass on by fd."""
        self.fds.add(fd)
        return fd


class _Discard:
    """A file that keeps nothing: the walk of a large initarg copies none of it."""

    def write(self, data) -> int:
        return len(data)


def _has_contents(cell) -> bool:
    try:
        cell.cell_contents
    except ValueError:   # an empty cell
        return False
    return True


def fds_held_by(obj: Any) -> set[int]:
    """The fds that ``obj`` holds open through files, sockets and multiprocessing connections,
    as far as pickle can walk it (what it cannot walk, such as a thread lock, ends the search
    there: the fds found so far are returned)."""
    finder = _FdFinder()
    # multiprocessing's objects pickle only "while spawning" (a Queue refuses otherwise): the
    # finder stands in for the Popen being spawned.
    context = sys.modules.get("multiprocessing.context")
    previous = context.get_spawning_popen() if context else None
    if context:
        context.set_spawning_popen(finder)
    try:
        finder.dump(obj)
    except Exception:   # noqa: BLE001 - an object pickle cannot walk: not an error here
        pass
    finally:
        if context:
            context.set_spawning_popen(previous)
    return finder.fds

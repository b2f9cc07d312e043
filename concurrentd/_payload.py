"""How a call travels to a worker: plain pickle where it can, cloudpickle where it must.

Plain pickle is the fast path (the throughput of a plain ProcessPoolExecutor). cloudpickle carries
what plain pickle cannot: lambdas, closures, and everything defined in ``__main__`` (a worker is
forked from the zygote, so a function defined in ``__main__`` after the pool started is not there
by name).

A call is deserialized only as it runs, in the worker, inside the unit (a pool's worker unpickles
its call frame as it takes it; a TransientUnitProcess's Task only when it is called).

A pool's worker is a fork of the owner as it was when the pool started (through the zygote), as a
worker of ProcessPoolExecutor(fork) is a fork of it at its first submit: its ``__main__`` is the
owner's then, plus what its initializer and tasks do. cloudpickle would give every function sent
by value a globals dict of its own, so that a global the initializer set was not what a task read
(#16 F11). For a pool, what ``__main__`` defines lives in the worker's own ``__main__`` instead
(see _Pickler): a name it had from its fork is the worker's, a name it lacked then comes with
each call that uses it, at the owner's value of the moment.
"""

from __future__ import annotations

import functools
import io
import pickle
import socket
import sys
import threading
import types
from typing import Any, Callable, Mapping

import cloudpickle

from . import _cpython


def _cloudpickle_reducer(name: str) -> Callable[..., Any]:
    """One of cloudpickle's reducers, whose results _Pickler adjusts: each exists, with the same
    results, from cloudpickle 2.2 on (in cloudpickle_fast before 3.0)."""
    for module in (cloudpickle.cloudpickle, getattr(cloudpickle, "cloudpickle_fast", None)):
        reducer: Callable[..., Any] | None = getattr(module, name, None)
        if reducer is not None:
            return reducer
    raise ImportError(f"concurrentd does not know this cloudpickle ({cloudpickle.__version__}): "
                      f"it has no {name}")


_cloudpickle_code_reduce = _cloudpickle_reducer("_code_reduce")
_cloudpickle_class_reduce = _cloudpickle_reducer("_class_reduce")
_cloudpickle_reducer_override = cloudpickle.Pickler.reducer_override

#: A pool's snapshot of __main__ (see forked_main): its classes by name.
Forked = Mapping[str, type]


def forked_main() -> Forked:
    """The classes ``__main__`` defines (nested ones too), by qualified name, as a pool's workers
    will have them: taken as the pool starts, before its zygote's fork (no code of the user's
    runs in between). A class of this snapshot travels to a worker as the worker's own (see
    _Pickler)."""
    found: dict[str, type] = {}
    main = sys.modules.get("__main__")
    if main is not None:
        _add_classes(found, vars(main), "")
    return found


def _add_classes(found: dict[str, type], namespace: Mapping[str, Any], prefix: str) -> None:
    """The classes defined in ``namespace`` (a module's or a class's) under their own names."""
    for name, obj in list(namespace.items()):
        qualname = prefix + name
        if isinstance(obj, type) and obj.__module__ == "__main__" and \
                obj.__qualname__ == qualname and qualname not in found:
            found[qualname] = obj
            _add_classes(found, vars(obj), qualname + ".")


def _cloud(obj: Any, forked: Forked | None = None) -> bytes:
    """``obj`` by cloudpickle, as _Pickler adjusts it (``forked``: a pool's, see forked_main)."""
    out = io.BytesIO()
    _Pickler(out, forked).dump(obj)
    return out.getvalue()


def _filename_index() -> int:
    """Where cloudpickle's reduction of a code object puts its file name, in the arguments of
    the code type: found once, on a code object of a file name of our own."""
    _, args = _cloudpickle_code_reduce(compile("pass", "<concurrentd>", "exec"))
    for index, arg in enumerate(args):
        if arg in ("<concurrentd>", "<dynamic-code>"):
            return index
    raise ImportError("concurrentd does not know this cloudpickle: its code objects hold no "
                      "file name")


_FILENAME_INDEX = _filename_index()


def _code_reduce(code: types.CodeType) -> tuple[Any, ...]:
    """cloudpickle's reduction of a code object, with its file name kept: cloudpickle 3 names
    every one "<dynamic-code>" (so that a payload does not depend on where a function was
    defined), and a traceback through a function sent by value then showed no file."""
    make, args = _cloudpickle_code_reduce(code)
    at = _FILENAME_INDEX
    return make, (*args[:at], code.co_filename, *args[at + 1:])


class _Pickler(cloudpickle.Pickler):   # type: ignore[misc]  # cloudpickle ships no types
    """cloudpickle's Pickler, with code that keeps its file name (see _code_reduce), and, for a
    pool's worker (``forked`` given, see forked_main), with what ``__main__`` defines living in
    the worker's ``__main__``:

    - a function whose globals are ``__main__``'s is made, in the worker, with the worker's
      ``__main__`` as its globals: it reads what the initializer or an earlier task set there,
      and its ``global`` statements set it there. The globals it is sent with (cloudpickle
      takes every one its code names) are set there only if ``__main__`` lacked them when the
      worker was forked (see _set_main_function_state);
    - a class of ``forked`` is the worker's own class: an instance sent along and the name a
      task reads are one class, and the worker's (an isinstance() holds in the task). Its
      methods still travel, for the globals they bring, but do not replace the worker's.

    Functions and classes of other modules are cloudpickle's business as before.
    """

    def __init__(self, file: io.BytesIO, forked: Forked | None = None):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._forked = forked
        self._main = vars(sys.modules["__main__"]) if forked is not None else None

    def reducer_override(self, obj: Any) -> Any:
        # called for (almost) every object pickled: the common case first
        if type(obj) is types.CodeType:
            return _code_reduce(obj)
        if self._forked and isinstance(obj, type) and \
                self._forked.get(obj.__qualname__) is obj:
            # by value (cloudpickle's reduction), but made in the worker as its own class
            _, _, state, *_ = _cloudpickle_class_reduce(obj)
            return _forked_class, (obj.__qualname__,), state, None, None, _keep_forked_class
        return _cloudpickle_reducer_override(self, obj)

    def _dynamic_function_reduce(self, func: types.FunctionType) -> tuple[Any, ...]:
        reduced: tuple[Any, ...] = super()._dynamic_function_reduce(func)
        if func.__globals__ is not self._main:
            return reduced
        _, args, state, *_ = reduced
        return _main_function, args, state, None, None, _set_main_function_state


# -- in the worker: what a pool's _Pickler sends is made in the worker's __main__ -------------

#: The names __main__ had when this process was forked (its pool's start): set by note_forked().
_forked_names: frozenset[str] = frozenset()


def note_forked() -> None:
    """In a pool's worker, before its initializer: the names its ``__main__`` has from the
    owner's, which the worker keeps against what calls bring (see _set_main_function_state)."""
    global _forked_names
    _forked_names = frozenset(vars(sys.modules["__main__"]))


def _main_function(code: types.CodeType, base_globals: dict[str, Any], name: str | None,
                   argdefs: tuple[Any, ...] | None,
                   closure: tuple[types.CellType, ...] | None) -> types.FunctionType:
    """cloudpickle's making of a function sent by value, with the worker's own ``__main__`` as
    its globals instead of ``base_globals``, a dict of its own."""
    return types.FunctionType(code, vars(sys.modules["__main__"]), name, argdefs, closure)


def _set_main_function_state(func: types.FunctionType,
                             state: tuple[dict[str, Any], dict[str, Any]]) -> None:
    """cloudpickle's _function_setstate for a function made by _main_function: its attributes
    and closure as sent; of the globals it was sent with, those ``__main__`` lacked when the
    worker was forked (made by the owner after the pool started: their value now is the
    owner's), never those it had (the worker's own, set by its initializer or its tasks, as
    in a forked ProcessPoolExecutor worker)."""
    attrs, slots = state
    slots = dict(slots)
    main = func.__globals__
    for key, value in slots.pop("__globals__").items():
        if key not in _forked_names or key not in main:
            main[key] = value
    cells = slots.pop("__closure__", None)
    slots.pop("_cloudpickle_submodules", None)   # only held them, to import them first
    func.__dict__.update(attrs)
    # cells: None when the function was sent without its closure
    for cell, sent in zip(func.__closure__ or (), cells or (), strict=False):
        try:
            cell.cell_contents = sent.cell_contents
        except ValueError:   # an empty cell (a variable not assigned yet)
            pass
    for key, value in slots.items():
        setattr(func, key, value)


def _forked_class(qualname: str) -> type:
    """The worker's own class of that qualified name in ``__main__``, which it had from its
    fork (looked up in the namespaces, as forked_main found it)."""
    cls: Any = sys.modules["__main__"]
    for part in qualname.split("."):
        cls = vars(cls).get(part)
        if not isinstance(cls, type):
            break
    if not isinstance(cls, type):
        raise pickle.UnpicklingError(
            f"__main__.{qualname} is not a class in the worker anymore (its initializer or a "
            "task rebound that name), but a call sends an instance of that class")
    return cls


def _keep_forked_class(cls: type, state: Any) -> type:
    """The worker's class keeps its own attributes: the methods sent along were made only for
    the globals they bring (see _set_main_function_state)."""
    return cls


def _plain(obj: Any) -> bytes | None:
    """``obj`` by plain pickle, or None where a worker may not read that back: plain pickle
    cannot carry it, or it refers into ``__main__`` by name (the worker may not have it)."""
    try:
        blob = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError):
        return None
    return None if b"__main__" in blob else blob


def encode(payload: Any, fn: Callable[..., Any] | None = None,
           forked: Forked | None = None) -> tuple[bool, bytes]:
    """``payload`` for a worker, as (by cloudpickle?, bytes): plain pickle where a worker reads
    it back the same, cloudpickle where it must. ``fn``: the function the payload calls, whose
    module, if made at run time, goes by value. ``forked``: for a pool's worker, its pool's
    forked_main() (what ``__main__`` defines then lives in the worker's ``__main__``)."""
    module = None if fn is None else _run_time_module(_target(fn))
    if module is not None:
        # cloudpickle takes whatever is in sys.modules by reference, unless told
        cloudpickle.register_pickle_by_value(module)
        return True, _cloud(payload, forked)
    blob = _plain(payload)
    return (True, _cloud(payload, forked)) if blob is None else (False, blob)


def encode_call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                forked: Forked | None = None) -> tuple[bool, bytes]:
    """``fn(*args, **kwargs)`` for a worker's call pipe, pickled once (see encode)."""
    return encode((fn, args, kwargs), fn, forked)


def loads(cloud: bool, blob: bytes) -> Any:
    return (cloudpickle.loads if cloud else pickle.loads)(blob)


def _target(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The function a call runs: map's chunks call ``partial(process_chunk, user_fn)``."""
    while isinstance(fn, functools.partial):
        fn = fn.args[0] if fn.func is _cpython.process_chunk and fn.args else fn.func
    return fn


class Task:
    """fn(*args, **kwargs), picklable whatever fn is."""

    __slots__ = ("fn", "args", "kwargs", "_blob")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...] = (),
                 kwargs: dict[str, Any] | None = None):
        self.fn, self.args, self.kwargs = fn, args, kwargs or {}
        self._blob: tuple[bool, bytes] | None = None

    def __reduce__(self) -> tuple[Callable[[bool, bytes], _ReceivedTask], tuple[bool, bytes]]:
        if self._blob is None:
            self._blob = encode_call(self.fn, self.args, self.kwargs)
        return _received, self._blob

    def __call__(self) -> Any:   # called before travelling (ProcessPoolExecutor checks it)
        return self.fn(*self.args, **self.kwargs)


def _run_time_module(fn: Callable[..., Any]) -> types.ModuleType | None:
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

    def __call__(self) -> Any:
        fn, args, kwargs = loads(self.cloud, self.blob)
        return fn(*args, **kwargs)


def _received(cloud: bool, blob: bytes) -> _ReceivedTask:
    return _ReceivedTask(cloud, blob)


class _FdFinder(pickle.Pickler):
    """Walks an object graph as pickle would, noting the fds of the files, sockets and
    multiprocessing connections in it; writes nothing anyone reads."""

    def __init__(self) -> None:
        super().__init__(_Discard(), protocol=pickle.HIGHEST_PROTOCOL)
        self.fds: set[int] = set()
        mp = sys.modules.get("multiprocessing.connection"), sys.modules.get("multiprocessing.synchronize")
        self._with_fd = (io.IOBase, socket.socket) + ((mp[0].Connection,) if mp[0] else ())
        self._opaque: tuple[type, ...] = (types.ModuleType, type(threading.Lock()), type(threading.RLock()),
                        *((mp[1].SemLock,) if mp[1] else ()))

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, self._with_fd):
            try:
                self.fds.add(obj.fileno())
            except (OSError, ValueError):   # closed, or a file without an fd
                pass
            return int, ()
        if isinstance(obj, self._opaque):   # not walked: no fd, and pickle refuses them
            return int, ()
        if isinstance(obj, types.FunctionType):   # what it closes over and defaults to, only
            cells = tuple(c.cell_contents for c in obj.__closure__ or () if _has_contents(c))
            return tuple, ((obj.__defaults__, obj.__kwdefaults__, cells),)
        return NotImplemented

    def duplicate_for_child(self, fd: int) -> int:
        """As a spawning Popen: what multiprocessing's reducers pass on by fd."""
        self.fds.add(fd)
        return fd


class _Discard:
    """A file that keeps nothing: the walk of a large initarg copies none of it."""

    def write(self, data: bytes) -> int:
        return len(data)


def _has_contents(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - reading it is the test
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

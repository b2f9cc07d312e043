"""Results and exceptions as data: what the owner accepts from a worker.

A worker is inside the sandbox and may be the attacker's: an unrestricted unpickler in the owner
would run whatever a result's ``__reduce__`` names (``os.system``…) as the owner, outside every
restriction of the unit. So the owner unpickles a worker's bytes with ``find_class`` limited to an
allow-list of types whose construction only builds a value:

- the builtin scalars and containers (most need no lookup at all) and the builtin exceptions;
- a small stdlib set: datetime, decimal, fractions, uuid, collections, pathlib, ipaddress;
- the types the pool's user names (``result_types=[MyResult, ...]``): the user's own code is trusted.

Anything else fails only its own future, with ResultRefused naming the type and the parameter that
allows it. Nothing is imported on a worker's say-so.

An exception travels as a record: its class's module and qualified name, its args and its
``__dict__`` (both unpickled as above), and its traceback as text. The owner rebuilds it only if
the class is an exception class it has loaded already, as pickle would (``cls(*args)``, then the
state), with the traceback text as its ``__cause__``, as ProcessPoolExecutor does.

``trust_results=True`` turns all of this off: plain pickle, for workers whose data is trusted.
"""

from __future__ import annotations

import builtins
import collections
import datetime
import decimal
import fractions
import io
import ipaddress
import pathlib
import pickle
import sys
import traceback
import uuid
from concurrent.futures.process import _RemoteTraceback
from typing import Any, Iterable

#: Types a result may hold by default. Each is rebuilt from its pickle by a call that only
#: builds a value; the call goes through _Guard, which charges what it copies to the load.
_STDLIB_TYPES: tuple[type, ...] = (
    complex, range, slice, bytearray,
    datetime.date, datetime.time, datetime.datetime, datetime.timedelta, datetime.timezone,
    decimal.Decimal, fractions.Fraction, uuid.SafeUUID,
    collections.OrderedDict, collections.deque, collections.Counter,
    pathlib.PurePath, pathlib.PurePosixPath, pathlib.PureWindowsPath, pathlib.Path,
    pathlib.PosixPath,
    ipaddress.IPv4Address, ipaddress.IPv6Address, ipaddress.IPv4Network, ipaddress.IPv6Network,
    ipaddress.IPv4Interface, ipaddress.IPv6Interface,
)
#: Types rebuilt with NEWOBJ (``cls.__new__`` then ``__setstate__``): pickle needs the class itself.
_NEWOBJ_TYPES: tuple[type, ...] = (uuid.UUID,)
_BUILTIN_EXCEPTIONS = tuple(v for v in vars(builtins).values()
                            if isinstance(v, type) and issubclass(v, BaseException))
#: Fraction normalizes with gcd, quadratic in the size of its numbers: a bound on their bits.
_MAX_FRACTION_BITS = 1 << 16


def _key(obj: Any) -> tuple[str, str]:
    return obj.__module__, obj.__qualname__


class ResultRefused(Exception):
    """A worker sent a result the owner does not unpickle: an object of a type not allowed (see
    ``result_types=``), or an exception of a class the owner has not loaded.

    Attributes:
        type_name: the refused type, as ``module.qualname``.
    """

    def __init__(self, message: str, type_name: str = ""):
        super().__init__(message)
        self.type_name = type_name


class ResultPolicy:
    """What a pool's owner accepts from its workers.

    Args:
        result_types: classes (or functions a type's pickle calls, e.g. a reconstructor) that
            results may hold besides the default set.
        trust: unpickle with plain pickle (no restriction at all).
    """

    def __init__(self, result_types: Iterable[Any] = (), trust: bool = False):
        self.trust = bool(trust)
        allowed: dict[tuple[str, str], Any] = {}
        for obj in (*_STDLIB_TYPES, *_BUILTIN_EXCEPTIONS):
            allowed[_key(obj)] = _Guard(obj)
        for obj in _NEWOBJ_TYPES:
            allowed[_key(obj)] = obj
        for obj in result_types:
            if not callable(obj) or not hasattr(obj, "__qualname__"):
                raise TypeError("result_types must hold classes (or the functions their pickles "
                                f"call), not {obj!r}")
            allowed[_key(obj)] = obj
        self._allowed = allowed

    def loads(self, blob: bytes) -> Any:
        """A value from a worker's bytes. Raises ResultRefused for a type not allowed."""
        if self.trust:
            return pickle.loads(blob)
        return _RestrictedUnpickler(blob, self._allowed).load()

    def rebuild_exception(self, blob: bytes) -> BaseException:
        """An exception from a worker's record (see encode_exception), with the worker's
        traceback text as its ``__cause__``; a ResultRefused where it cannot be rebuilt."""
        module_name, qualname, args_blob, state_blob, tb_text, text = \
            _RestrictedUnpickler(blob, {}).load()
        name = f"{module_name}.{qualname}"
        try:
            cls = _loaded_exception_class(module_name, qualname)
            if cls is None:
                raise ResultRefused(
                    f"the task raised {name}: {text}; the owner has not loaded that exception "
                    "class, and does not import modules a worker names (import it in the owner "
                    "before the call)", name)
            args = self.loads(args_blob) if args_blob is not None else (text,)
            state = self.loads(state_blob) if state_blob else None
            exc = _construct(cls, tuple(args) if isinstance(args, tuple) else (text,))
            if isinstance(state, dict):
                exc.__dict__.update(state)
        except ResultRefused as refused:
            exc = refused
        exc.__cause__ = _RemoteTraceback(tb_text)
        return exc


def _construct(cls: type, args: tuple) -> BaseException:
    """``cls(*args)`` as pickle rebuilds an exception; a class whose ``__init__`` does not take
    its own args back gets them set directly."""
    try:
        return cls(*args)
    except Exception:   # noqa: BLE001 - its __init__ wants other arguments than its args
        exc = cls.__new__(cls, *args)
        exc.args = args
        return exc


def _loaded_exception_class(module_name: str, qualname: str) -> type | None:
    module = sys.modules.get(module_name)
    obj: Any = module
    for part in qualname.split("."):
        if obj is None or part.startswith("<"):
            return None
        obj = getattr(obj, part, None)
    if isinstance(obj, type) and issubclass(obj, BaseException) and _key(obj) == (module_name,
                                                                                    qualname):
        return obj
    return None


class _Guard:
    """An allowed type as find_class gives it to the unpickler: its call (pickle's REDUCE) is
    charged to the load's budget by the size of what it copies.

    Without it, a few bytes of pickle could call ``Counter(d)`` or ``PosixPath(s)`` again and
    again on one large memoized object, each call a full copy: unbounded memory from a bounded
    frame. With it, what the calls copy is bounded by the frame's own size.
    """

    __slots__ = ("cls",)

    def __init__(self, cls: type):
        self.cls = cls


def _weight(value: Any) -> int:
    if isinstance(value, (str, bytes, bytearray, tuple, list, dict, set, frozenset)):
        return len(value)
    if isinstance(value, int):
        return value.bit_length() // 8
    return 1


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, blob: bytes, allowed: dict[tuple[str, str], Any]):
        super().__init__(io.BytesIO(blob))
        self._allowed = allowed
        self._budget = 2 * len(blob) + 65536

    def find_class(self, module: str, name: str) -> Any:
        obj = self._allowed.get((module, name))
        if obj is None:
            short = name.rsplit(".", 1)[-1]
            raise ResultRefused(
                f"the result holds a {module}.{name}, a type the owner does not unpickle from a "
                "worker by default (a worker's bytes could otherwise run code in the owner): "
                f"allow it with result_types=[{short}], or pass trust_results=True if you trust "
                "the data your workers process", f"{module}.{name}")
        if isinstance(obj, _Guard):
            return lambda *args, _cls=obj.cls: self._construct(_cls, args)
        return obj

    def _construct(self, cls: type, args: tuple) -> Any:
        self._budget -= 1 + sum(_weight(a) + sum(_weight(x) for x in a)
                                if isinstance(a, (tuple, list)) else _weight(a) for a in args)
        if self._budget < 0:
            raise ResultRefused("the result's pickle copies more than its own size in "
                                f"{cls.__qualname__} objects: refused as a memory attack")
        if cls is fractions.Fraction and any(isinstance(a, int) and a.bit_length() >
                                             _MAX_FRACTION_BITS for a in args):
            raise ResultRefused(f"a Fraction of more than {_MAX_FRACTION_BITS} bits: refused")
        return cls(*args)

    def persistent_load(self, pid: Any) -> Any:
        raise ResultRefused("the result refers to a persistent id, which workers may not send")


# -- the worker's side ------------------------------------------------------------------------------

def encode_result(value: Any) -> bytes:
    return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)


def encode_exception(exc: BaseException) -> bytes:
    """The record the owner rebuilds ``exc`` from: plain values only, so that a refused type in
    its args costs the exception's class and traceback nothing."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    cls = type(exc)
    try:
        args_blob: bytes | None = pickle.dumps(exc.args, pickle.HIGHEST_PROTOCOL)
    except Exception:   # noqa: BLE001 - unpicklable args: the owner uses the text
        args_blob = None
    try:
        state_blob = pickle.dumps(exc.__dict__, pickle.HIGHEST_PROTOCOL) if exc.__dict__ else b""
    except Exception:   # noqa: BLE001
        state_blob = b""
    try:
        text = str(exc)
    except Exception:   # noqa: BLE001
        text = f"<{cls.__qualname__} whose str() failed>"
    record = (cls.__module__, cls.__qualname__, args_blob, state_blob, f'\n"""\n{tb}"""', text)
    return pickle.dumps(record, pickle.HIGHEST_PROTOCOL)

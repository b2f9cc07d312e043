"""Results and exceptions as data: what the owner accepts from a worker.

A worker is inside the sandbox and may be the attacker's: an unrestricted unpickler in the owner
would run whatever a result's ``__reduce__`` names (``os.system``…) as the owner, outside every
restriction of the unit. So the owner unpickles a worker's bytes with ``find_class`` limited to an
allow-list of types whose construction only builds a value:

- the builtin scalars and containers (most need no lookup at all) and the builtin exceptions;
- a small stdlib set: datetime, decimal, fractions, uuid, collections, pathlib, ipaddress;
- the types the pool's user names (``result_types=[MyResult, ...]``): the user's code is trusted.

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
import copyreg
import datetime
import decimal
import fractions
import io
import ipaddress
import pathlib
import pickle
import re
import sys
import uuid
from typing import Any, Callable, Iterable

from . import _cpython, _sources
from ._core import ffi, lib


class _CheckedUUID(uuid.UUID):
    """What find_class gives for uuid.UUID, which pickle rebuilds with NEWOBJ (it needs a class)
    and BUILD: a UUID whose state is checked before it is set, then a plain UUID again."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, dict) and set(state) <= {"int", "is_safe"}
                and type(state.get("int")) is int and 0 <= state["int"] < 1 << 128
                and type(state.get("is_safe", uuid.SafeUUID.unknown)) is uuid.SafeUUID):
            raise ResultRefused("a UUID whose state is not a 128-bit int: refused")
        object.__setattr__(self, "int", state["int"])
        object.__setattr__(self, "is_safe", state.get("is_safe", uuid.SafeUUID.unknown))
        object.__setattr__(self, "__class__", uuid.UUID)
_BUILTIN_EXCEPTIONS = tuple(v for v in vars(builtins).values()
                            if isinstance(v, type) and issubclass(v, BaseException))
#: Fraction normalizes with gcd, quadratic in the size of its numbers: a bound on their bits.
_MAX_FRACTION_BITS = 1 << 16
#: Python 3.10 pickles a Fraction as its text, "numerator/denominator" (4300 digits: Python's
#: own limit on the digits int() converts, about 14,000 bits)
_FRACTION_TEXT = re.compile(r"-?[0-9]{1,4300}/[0-9]{1,4300}")


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


class RemoteBaseException(Exception):
    """A task raised a BaseException that is not an Exception (SystemExit, KeyboardInterrupt,
    GeneratorExit, a BaseExceptionGroup…): raised in the owner as this Exception instead, so that
    a worker cannot end the owner, or escape its ``except Exception:``.

    Attributes:
        type_name: the class the task raised, as ``module.qualname``.
        exception: that exception, rebuilt (for SystemExit, its ``code``).
    """

    def __init__(self, message: str, type_name: str = "", exception: BaseException | None = None):
        super().__init__(message)
        self.type_name, self.exception = type_name, exception


class ResultPolicy:
    """What a pool's owner accepts from its workers.

    Args:
        result_types: classes (or functions a type's pickle calls, e.g. a reconstructor) that
            results may hold besides the default set.
        trust: unpickle with plain pickle (no restriction at all).
    """

    def __init__(self, result_types: Iterable[Any] = (), trust: bool = False):
        self.trust = bool(trust)
        named = list(result_types)
        for obj in named:
            if not callable(obj) or not hasattr(obj, "__qualname__"):
                raise TypeError("result_types must hold classes (or the functions their pickles "
                                f"call), not {obj!r}")
        self._allowed = {**_DEFAULT_ALLOWED, **{_key(obj): obj for obj in named}}
        # the types named may receive all (they are the user's own)
        self._buildable = _capabilities([("bas", obj) for obj in named]) + _DEFAULT_CAPABILITIES

    def loads(self, blob: bytes) -> Any:
        """A value from a worker's bytes. Raises ResultRefused for a type not allowed."""
        if self.trust:
            return pickle.loads(blob)
        return _RestrictedUnpickler(blob, self._allowed, self._buildable).load()

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
            if not self.trust and not isinstance(exc, Exception):
                exc = RemoteBaseException(
                    f"the task raised {name}: {text} (a worker's BaseException is raised in the "
                    "owner as this Exception; trust_results=True raises it as is)", name, exc)
        except ResultRefused as refused:
            exc = refused
        exc.__cause__ = _cpython.RemoteTraceback(tb_text)
        return exc


def _capabilities(pairs: Iterable[tuple[str, Any]]) -> bytes:
    """csrc/pickle_check.h's list of what instances of a global may receive: "flags\\0module\\0
    name\\0" for each (flags, global)."""
    return b"".join(f"{flags}\0{module}\0{name}\0".encode()
                    for flags, (module, name) in ((f, _key(obj)) for f, obj in pairs))


def _construct(cls: type[BaseException], args: tuple[Any, ...]) -> BaseException:
    """``cls(*args)`` as pickle rebuilds an exception; a class whose ``__init__`` does not take
    its own args back gets them set directly."""
    try:
        return cls(*args)
    except Exception:   # noqa: BLE001 - its __init__ wants other arguments than its args
        exc = cls.__new__(cls, *args)
        exc.args = args
        return exc


def _loaded_exception_class(module_name: str, qualname: str) -> type[BaseException] | None:
    """The class by its names, looked up in the namespaces themselves: no getattr, which would
    run a module's __getattr__ (an import) or a property on a worker's say-so."""
    module = sys.modules.get(module_name)
    obj: Any = module
    for part in qualname.split("."):
        if obj is None or part.startswith("<"):
            return None
        namespace = obj.__dict__ if isinstance(obj, type) else vars(obj) \
            if obj is module else None
        obj = namespace.get(part) if namespace is not None else None
    if isinstance(obj, type) and issubclass(obj, BaseException) and _key(obj) == (module_name,
                                                                                    qualname):
        return obj
    return None


class _Guard:
    """An allowed type as find_class gives it to the unpickler: its call (pickle's REDUCE) is
    checked against the arguments that type's own pickle gives it, and charged to the load's
    budget by the size of what it copies.

    Without the check, a few bytes of pickle could call ``bytearray(1 << 32)``,
    ``deque(range(1 << 62), 0)`` or ``Fraction("1e30000000")``; without the budget, they could
    call ``Counter(d)`` again and again on one large memoized dict, each call a full copy.
    """

    __slots__ = ("cls", "check")

    def __init__(self, cls: type, check: Callable[[tuple[Any, ...]], bool]):
        self.cls, self.check = cls, check


def _is(value: Any, *types: type) -> bool:
    return type(value) in types


def _small_int(value: Any, bits: int = 64) -> bool:
    return type(value) is int and value.bit_length() <= bits


def _short_str(value: Any, size: int = 256) -> bool:
    return type(value) is str and len(value) <= size


def _date_state(a: tuple[Any, ...]) -> bool:
    return 1 <= len(a) <= 2 and _is(a[0], bytes) and len(a[0]) <= 10 and \
        (len(a) == 1 or a[1] is None or isinstance(a[1], datetime.tzinfo))


#: For each type, the arguments its own pickle passes to it (anything else is refused).
_CHECKS: dict[type, Callable[[tuple[Any, ...]], bool]] = {
    complex: lambda a: len(a) <= 2 and all(_is(x, float) or _small_int(x) for x in a),
    range: lambda a: 1 <= len(a) <= 3 and all(_small_int(x) for x in a),
    slice: lambda a: len(a) <= 3 and all(x is None or _small_int(x) for x in a),
    bytearray: lambda a: a == () or (len(a) == 1 and _is(a[0], bytes)),
    datetime.date: _date_state,
    datetime.time: _date_state,
    datetime.datetime: _date_state,
    datetime.timedelta: lambda a: len(a) <= 3 and all(_small_int(x) for x in a),
    datetime.timezone: lambda a: 1 <= len(a) <= 2 and _is(a[0], datetime.timedelta) and
    (len(a) == 1 or _short_str(a[1])),
    decimal.Decimal: lambda a: len(a) == 1 and _short_str(a[0], 4096),
    fractions.Fraction: lambda a: (len(a) == 2 and all(_small_int(x, _MAX_FRACTION_BITS)
                                                       for x in a))
    or (len(a) == 1 and _is(a[0], str) and _FRACTION_TEXT.fullmatch(a[0]) is not None),
    uuid.SafeUUID: lambda a: len(a) == 1 and (a[0] is None or _small_int(a[0], 8)),
    collections.OrderedDict: lambda a: a == (),
    collections.Counter: lambda a: a == () or (len(a) == 1 and _is(a[0], dict)),
    **{cls: (lambda a: all(_is(x, str) for x in a)) for cls in (
        pathlib.PurePath, pathlib.PurePosixPath, pathlib.PureWindowsPath, pathlib.Path,
        pathlib.PosixPath)},
    **{cls: (lambda a: len(a) == 1 and (_short_str(a[0], 128) or _small_int(a[0], 128)))
       for cls in (ipaddress.IPv4Address, ipaddress.IPv6Address, ipaddress.IPv4Network,
                   ipaddress.IPv6Network, ipaddress.IPv4Interface, ipaddress.IPv6Interface)},
}


def _weight(value: Any) -> int:
    """Roughly what rebuilding from ``value`` copies, in bytes or items."""
    if isinstance(value, (str, bytes, bytearray, tuple, list, dict, set, frozenset)):
        return len(value)
    if isinstance(value, int):
        return value.bit_length() // 8 + 1
    return 1


#: What every pool allows (built once): the guarded stdlib types, the builtin exceptions
#: (BaseException.__reduce__: (cls, args), then state), UUID through its checked subclass.
_DEFAULT_ALLOWED: dict[tuple[str, str], Any] = {
    **{_key(obj): _Guard(obj, check) for obj, check in _CHECKS.items()},
    **{_key(obj): _Guard(obj, lambda a: True) for obj in _BUILTIN_EXCEPTIONS},
    _key(uuid.UUID): _CheckedUUID,
}
#: UUID and exceptions may receive their state (BUILD: for exceptions, BaseException.__reduce__
#: gives their __dict__); OrderedDict, its items (SETITEMS).
_DEFAULT_CAPABILITIES = _capabilities(
    [("b", uuid.UUID), *[("b", obj) for obj in _BUILTIN_EXCEPTIONS],
     ("s", collections.OrderedDict)])


#: At most this many dict keys and set members whose hashes a worker can make collide (all but
#: str, bytes, None, bool and ints below 2**61): a hash-flooded dict of them costs quadratic time.
MAX_COLLIDABLE_KEYS = 4096
#: Tuples nested deeper than this are refused: hashing one recurses in C without a limit.
MAX_TUPLE_DEPTH = 1000
_VERDICTS = {   # csrc/pickle_check.h's enum cd_pickle_verdict
    lib.CD_PICKLE_OPCODE: "an opcode that protocol 5's pickler never writes",
    lib.CD_PICKLE_TRUNCATED: "a truncated pickle",
    lib.CD_PICKLE_STACK: "an opcode that finds too few items, or the wrong kind, on the stack",
    lib.CD_PICKLE_BUILD: "a BUILD (setting an object's state) on what its type's own pickle "
                         "never sets state on (a class, a stdlib value)",
    lib.CD_PICKLE_KEYS: f"more than {MAX_COLLIDABLE_KEYS} dict keys or set members other than "
                        "strings, bytes and small ints (whose hashes a worker could make collide)",
    lib.CD_PICKLE_MEMO: "a memo read beyond what was memoized",
    lib.CD_PICKLE_NOMEM: "a pickle too large to check",
    lib.CD_PICKLE_DEPTH: f"tuples nested more than {MAX_TUPLE_DEPTH} deep",
    lib.CD_PICKLE_TARGET: "items added to a class or a plain value",
}


def check_pickle(blob: bytes, buildable: bytes = b"") -> None:
    """Refuses, before any unpickling, what only an attacker's pickle holds (csrc/pickle_check.c):
    opcodes that allocate at an arbitrary memo index, BUILD except on instances of the
    ``buildable`` globals ("module\0name\0" pairs), hash-flooded keys, deep tuples."""
    offset = ffi.new("size_t *")
    verdict = lib.cd_pickle_check(ffi.from_buffer(blob), len(blob), buildable, len(buildable),
                                  MAX_COLLIDABLE_KEYS, MAX_TUPLE_DEPTH, offset)
    if verdict:
        raise ResultRefused(f"the result's pickle holds {_VERDICTS.get(verdict, verdict)} "
                            f"(at byte {offset[0]}): refused")


def _globals_of(blob: bytes) -> list[tuple[str, str]]:
    """The (module, name) pairs a pickle looks up (for the message of a refusal): pickletools
    parses, and runs nothing."""
    import pickletools

    found: list[tuple[str, str]] = []
    pushed: list[str | None] = []   # what the last opcodes pushed: a string, or None for anything else
    memo: list[str | None] = []
    try:
        for op, arg, _ in pickletools.genops(blob):
            if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8"):
                pushed.append(arg)
            elif op.name == "MEMOIZE":
                memo.append(pushed[-1] if pushed else None)
            elif op.name in ("BINGET", "LONG_BINGET"):
                pushed.append(memo[arg] if isinstance(arg, int) and arg < len(memo) else None)
            elif op.name == "STACK_GLOBAL":
                if len(pushed) >= 2 and isinstance(pushed[-2], str) and \
                        isinstance(pushed[-1], str):
                    found.append((pushed[-2], pushed[-1]))
                pushed.append(None)
            else:
                pushed.append(None)
            del pushed[:-2]
    except Exception:   # noqa: BLE001 - a malformed pickle: what was found so far
        pass
    return found


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, blob: bytes, allowed: dict[tuple[str, str], Any], buildable: bytes = b""):
        self._allowed = allowed
        try:
            check_pickle(blob, buildable)
        except ResultRefused:
            for module, name in _globals_of(blob):   # a type not allowed: say which, and how
                self.find_class(module, name)
            raise
        super().__init__(io.BytesIO(blob))
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
            return lambda *args, _guard=obj: self._construct(_guard, args)
        return obj

    def _construct(self, guard: _Guard, args: tuple[Any, ...]) -> Any:
        cls = guard.cls
        if not guard.check(args):
            raise ResultRefused(f"the result rebuilds a {cls.__module__}.{cls.__qualname__} from "
                                f"({', '.join(type(a).__name__ for a in args)}), which its own "
                                "pickle never does: refused")
        self._budget -= 1 + sum(_weight(a) for a in args)
        if self._budget < 0:
            raise ResultRefused("the result's pickle copies more than its own size in "
                                f"{cls.__qualname__} objects: refused as a memory attack")
        return cls(*args)

    def persistent_load(self, pid: Any) -> Any:
        raise ResultRefused("the result refers to a persistent id, which workers may not send")


# -- the worker's side ----------------------------------------------------------------------------

def encode_result(value: Any) -> bytes:
    return _dumps(value)


#: (size of copyreg's table when last looked at, that table less its exception entries, or None
#: when it has none)
_table_seen: tuple[int, dict[type, Any] | None] = (-1, None)


def _dumps(value: Any) -> bytes:
    """pickle.dumps, with exceptions reduced as Python reduces them: a library may register its
    own reducer for every exception class in copyreg (distributed does, with tblib: importing
    it is enough), whose function the owner, rightly, does not call; with it, an exception in a
    result was refused."""
    global _table_seen
    registered = copyreg.dispatch_table
    if _table_seen[0] != len(registered):
        kept = {k: v for k, v in registered.items()
                if not (isinstance(k, type) and issubclass(k, BaseException))}
        _table_seen = (len(registered), kept if len(kept) != len(registered) else None)
    table = _table_seen[1]
    if table is None:
        return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    out = io.BytesIO()
    pickler = pickle.Pickler(out, pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = table
    pickler.dump(value)
    return out.getvalue()


def encode_exception(exc: BaseException) -> bytes:
    """The record the owner rebuilds ``exc`` from: plain values only, so that a refused type in
    its args costs the exception's class and traceback nothing."""
    tb = _sources.format_exception(exc)
    cls = type(exc)
    args, state = _reduced(exc)
    try:
        args_blob: bytes | None = _dumps(args)
    except Exception:   # noqa: BLE001 - unpicklable args: the owner uses the text
        args_blob = None
    try:
        state_blob = _dumps(state) if state else b""
    except Exception:   # noqa: BLE001
        state_blob = b""
    try:
        text = str(exc)
    except Exception:   # noqa: BLE001
        text = f"<{cls.__qualname__} whose str() failed>"
    record = (cls.__module__, cls.__qualname__, args_blob, state_blob, f'\n"""\n{tb}"""', text)
    return pickle.dumps(record, pickle.HIGHEST_PROTOCOL)


def _reduced(exc: BaseException) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
    """The args and state pickle would rebuild ``exc`` from (OSError's hold its filename)."""
    try:
        reduced = exc.__reduce__()
    except Exception:   # noqa: BLE001
        reduced = ()
    if isinstance(reduced, tuple) and len(reduced) >= 2 and reduced[0] is type(exc) and \
            isinstance(reduced[1], tuple):
        state = reduced[2] if len(reduced) > 2 and isinstance(reduced[2], dict) else None
        return reduced[1], state
    return exc.args, exc.__dict__ or None

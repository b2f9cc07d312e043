"""What ``python -m concurrentd call`` runs inside the unit, and its outcome as plain data.

A target is a function (``MODULE:FUNCTION``), a module run as ``__main__`` (``-m MODULE``) or a
script run as ``__main__`` (``SCRIPT.py``). None of the user's code runs in the owner, which is
root and outside the sandbox: the function's module is imported inside the unit, the module of
``-m`` is found there, and a script is compiled there. The owner only reads the script's bytes,
as ``python script.py`` would, so that a unit that hides its directory (``User=``,
``ProtectHome=``, ``PrivateTmp=``) still runs it; the modules beside it reach the unit as any
sys.path directory's do (see _pythonpath).

The worker answers with an outcome, ``(exit status, text for stdout, text for stderr)``: the
result rendered as JSON or repr (in the worker, where its class lives), a traceback, the message
of a ``SystemExit``. So the owner receives strings and an int, never the user's objects.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import linecache
import math
import sys
import types
from dataclasses import dataclass
from typing import Any

from . import _sources

FUNCTION, MODULE, SCRIPT = "function", "module", "script"

#: (exit status, what to print on stdout, what to print on stderr)
Outcome = tuple[int, str | None, str | None]


@dataclass(frozen=True)
class Target:
    """What to run: ``kind`` is FUNCTION, MODULE or SCRIPT; ``name`` is ``MODULE:FUNCTION``,
    the module's name, or the script's absolute path; ``source`` is a script's bytes."""

    kind: str
    name: str
    source: bytes = b""


def is_function_name(text: str) -> bool:
    """``pkg.mod:func`` or ``pkg.mod:Class.method``: dotted identifiers on both sides."""
    module, colon, qualname = text.partition(":")
    return bool(colon) and all(part.isidentifier() for part in
                               (*module.split("."), *qualname.split(".")))


def parse_arg(text: str) -> Any:
    """A function's argument from the command line: the JSON value ``text`` is, when it is one
    (``42``, ``1.5``, ``true``, ``null``, ``"42"``, ``[1, 2]``, ``{"a": 1}``), else ``text``
    itself. ``NaN`` and ``Infinity``, which only Python's JSON reads, stay strings."""
    def no_constant(name: str) -> Any:
        raise ValueError(name)
    try:
        return json.loads(text, parse_constant=no_constant)
    except ValueError:   # JSONDecodeError included
        return text


def render(value: Any) -> str | None:
    """A result as the command line prints it: None prints nothing (as in the interactive
    interpreter); a value made of JSON's types (None, bools, ints, finite floats, strings,
    lists and tuples, dicts with string keys) as one line of JSON; anything else as repr()."""
    if value is None:
        return None
    try:
        if _is_json(value, 0):
            return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except RecursionError:
        pass
    return repr(value)


def _is_json(value: Any, depth: int) -> bool:
    if depth > 500:   # json.dumps itself would recurse as deep
        return False
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_is_json(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v, depth + 1) for k, v in value.items())
    return False


def exit_outcome(code: Any) -> Outcome:
    """The outcome of ``SystemExit(code)``, as Python's own exit reports it: None is 0, an int
    is the status, anything else is printed on stderr and the status is 1."""
    if code is None:
        return 0, None, None
    if isinstance(code, int):
        return int(code), None, None
    return 1, None, f"{code}\n"


# -- the worker's side ----------------------------------------------------------------------------

def run(target: Target, args: list[str]) -> Outcome:
    """In the worker, inside the unit: runs ``target`` with the command line's ``args`` (sys.argv
    is ``[TARGET, *args]``: the function's name, the module's file, the script's path); returns
    its outcome. Whatever the target raises is part of the outcome."""
    try:
        value = _RUNNERS[target.kind](target, list(args))
        return 0, render(value), None
    except SystemExit as e:
        return exit_outcome(e.code)
    except BaseException as e:   # noqa: BLE001 - the user's code's, whatever it is: reported
        return 1, None, format_exception(e)
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()   # before the result, which the owner prints after the output
            except (OSError, ValueError, AttributeError):
                pass


def _call_function(target: Target, args: list[str]) -> Any:
    module_name, _, qualname = target.name.partition(":")
    sys.argv = [target.name, *args]
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj(*[parse_arg(a) for a in args])


def _run_module(target: Target, args: list[str]) -> None:
    import runpy
    sys.argv = [target.name, *args]   # runpy makes sys.argv[0] the module's file, as python -m
    runpy.run_module(target.name, run_name="__main__", alter_sys=True)


def _run_script(target: Target, args: list[str]) -> None:
    path = target.name
    lines = importlib.util.decode_source(target.source).splitlines(keepends=True)
    # its lines for tracebacks, kept without a stat: the unit may not see the file
    linecache.cache[path] = (len(target.source), None, lines, path)
    code = compile(target.source, path, "exec", dont_inherit=True)
    module = types.ModuleType("__main__")
    module.__file__ = path
    module.__cached__ = None   # type: ignore[attr-defined]  # typeshed's ModuleType lacks it
    sys.argv = [path, *args]
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = module
    try:
        exec(code, module.__dict__)   # noqa: S102 - running the user's script is the point
    finally:
        if main is not None:
            sys.modules["__main__"] = main


_RUNNERS = {FUNCTION: _call_function, MODULE: _run_module, SCRIPT: _run_script}


def format_exception(exc: BaseException) -> str:
    """The traceback Python would print for ``exc``, from the user's first frame: the frames of
    this module and of the import machinery that found the target come off the top (so that a
    missing module reads ``ModuleNotFoundError: No module named 'x'``, as ``python -m x``)."""
    tb = exc.__traceback__
    while tb is not None and _is_machinery(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    exc.__traceback__ = tb
    return _sources.format_exception(exc)


def _is_machinery(filename: str) -> bool:
    import runpy
    return (filename in (__file__, runpy.__file__, importlib.__file__)
            or filename.startswith(("<frozen importlib", "<frozen runpy")))

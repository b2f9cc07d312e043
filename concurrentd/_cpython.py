"""Every use of CPython's private concurrent.futures and multiprocessing internals, in one place.

concurrentd reimplements ProcessPoolExecutor's machinery and borrows only these, so that its
results look like ProcessPoolExecutor's: the exception that carries a worker's traceback as text,
the function map() sends in each chunk, the logger that reports a failed initializer, the
registry of manager threads that the interpreter's exit wakes, and the steps with which
multiprocessing's fork children start and end. Each exists, with this meaning,
in CPython 3.10 to 3.14; a version without one fails here, at import, with the name.
"""

from __future__ import annotations

import sys
from concurrent.futures import _base
from concurrent.futures import process as _process
from typing import Any, Callable

try:
    #: str(RemoteTraceback(text)) is the text: an exception's __cause__ that shows a traceback
    #: (typeshed's takes a TracebackType; CPython's keeps and shows the text it is given)
    RemoteTraceback: Callable[[str], Exception] = _process._RemoteTraceback   # type: ignore[assignment]
    #: map()'s per-chunk function: partial(process_chunk, fn) is called with a chunk of args
    process_chunk = _process._process_chunk
    #: "concurrent.futures": where ProcessPoolExecutor logs "Exception in initializer:"
    LOGGER = _base.LOGGER
    _wakeups = _process._threads_wakeups
except AttributeError as e:   # pragma: no cover - a CPython that changed them
    raise ImportError(f"concurrentd does not know this Python's concurrent.futures: {e}") from e


def forget_executor_wakeups() -> None:
    """In a fork of the owner: its ProcessPoolExecutors' manager threads are not here, and the
    interpreter's exit must not wake them (through fds that are closed, or another file's)."""
    _wakeups.clear()


def become_a_fork_child() -> None:
    """In the zygote, as multiprocessing's forked children start: the owner's children are not
    its children, the owner's finalizers are not its own, and objects that registered for it
    (a Queue, a Lock inherited through initargs) reset their after-fork state."""
    process, util = sys.modules.get("multiprocessing.process"), sys.modules.get("multiprocessing.util")
    if process is None or util is None:
        return
    # CPython private (module docstring); typeshed declares neither name
    process._children = set()   # type: ignore[attr-defined]
    util._finalizer_registry.clear()
    util._run_after_forkers()


def end_as_a_fork_child() -> None:
    """In a worker about to exit, as a multiprocessing fork child exits: finalizers run (a
    Queue's feeder thread flushes what the worker put)."""
    util = sys.modules.get("multiprocessing.util")
    if util is not None:
        util._exit_function()


def multiprocessing_reducers() -> dict[type, Callable[[Any], Any]]:
    """How multiprocessing pickles what it passes to a spawned process by fd (a Connection, a
    socket): the reducers its ForkingPickler adds to copyreg's, by type."""
    from multiprocessing import reduction
    # CPython private (module docstring), which typeshed does not declare
    return dict(reduction.ForkingPickler._extra_reducers)   # type: ignore[attr-defined]

"""One call in a fresh unit: run() and the @sandboxed decorator."""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, Mapping, TypeVar

from .executor import TransientUnitPoolExecutor

__all__ = ["run", "sandboxed"]

T = TypeVar("T")


def run(fn: Callable[..., T], /, *args: Any, properties: Mapping[str, Any] | None = None,
        warm_units: bool = True, mp_context: Any = None, preload: Iterable[str] = (),
        **kwargs: Any) -> T:
    """Runs ``fn(*args, **kwargs)`` once, in a transient unit of its own, and returns its result.

    The unit is started for this call (or was prepared for it by the previous call with the same
    properties: ``warm_units``) and stopped after it. ``mp_context``: as for
    TransientUnitPoolExecutor (spawn or forkserver: a fresh interpreter, whose zygote can be
    prepared too: the fastest repeated calls); ``preload``: modules its zygote imports ahead (a
    fresh one's: the module of ``fn``, else each call's worker imports it). ``fn`` may be a lambda or a closure. An
    exception raised by ``fn`` is raised here, with the worker's traceback as its cause.
    """
    pool = TransientUnitPoolExecutor(1, properties or {}, warm_units=warm_units,
                                     mp_context=mp_context, preload=preload)
    try:
        return pool.submit(fn, *args, **kwargs).result()
    finally:
        # The unit stops once the worker has exited, without holding the caller (a few ms, as
        # long as the call when it is a small one); the interpreter's exit waits for it.
        pool.shutdown(wait=False)


def sandboxed(**properties: Any) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorator: every call of the function runs it in a fresh unit with these properties.

    >>> @sandboxed(PrivateNetwork=True, User="nobody")
    ... def fetch(): ...
    """
    def decorate(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> T:
            return run(fn, *args, properties=properties, **kwargs)
        call.__wrapped__ = fn
        return call
    return decorate

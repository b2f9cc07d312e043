"""TransientUnitProcess: multiprocessing.Process, confined in a systemd unit."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

from ._popen import UnitProcess
from ._session import UnitSession
from .executor import PoolUnit, TransientUnitPoolExecutor

__all__ = ["TransientUnitProcess"]


class TransientUnitProcess(UnitProcess):
    """The multiprocessing.Process API (target/args/kwargs or a run() override, start, join,
    is_alive, exitcode, terminate, kill), run in a transient unit of its own, or in a pool's unit.

    Args:
        target, args, kwargs, name, daemon: as for multiprocessing.Process. ``target`` may be a
            lambda or a closure.
        properties: the settings of the process's own unit (see TransientUnitPoolExecutor).
        pool: run inside this pool's unit instead (``properties`` must then be empty).

    The own unit is started by start() and stopped by join() once the process has exited (or when
    the object is collected).
    """

    def __init__(self, target: Callable[..., object] | None = None, name: str | None = None,
                 args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None, *,
                 daemon: bool | None = None, properties: Mapping[str, Any] | None = None,
                 pool: TransientUnitPoolExecutor | None = None):
        if pool is not None and properties:
            raise TypeError("pool= runs the process in that pool's unit: properties= do not apply")
        from . import _payload

        if target is not None:
            target, args, kwargs = _payload.Task(target, tuple(args), dict(kwargs or {})), (), {}
        super().__init__(target=target, name=name, args=args, kwargs=kwargs or {}, daemon=daemon)
        self._pool = pool
        self._properties = dict(properties or {})
        self._own: UnitSession | None = None

    def start(self) -> None:
        if self._pool is not None:
            session = self._pool._session
        else:
            self._own = session = UnitSession.begin(self._properties, enters=False).finish()
        if session.zygote is None:
            raise ValueError("the pool has been shut down")
        self._zygote = session.zygote
        try:
            super().start()
        except BaseException:
            self._release()
            raise

    @property
    def unit(self) -> PoolUnit | None:
        """The unit the process runs in (a PoolUnit), once started."""
        if self._pool is not None:
            return self._pool.unit
        if self._own is None or self._own.unit is None:
            return None
        return PoolUnit(self._own.unit, True)

    def join(self, timeout: float | None = None) -> None:
        super().join(timeout)
        if self.exitcode is not None:
            self._release()

    def _release(self) -> None:
        own, self._own = self._own, None
        if own is not None:
            own.release()

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        for private in ("_pool", "_own"):
            state.pop(private, None)
        return state

    def __del__(self) -> None:
        if getattr(self, "_own", None) is not None and self.exitcode is not None:
            self._release()

"""A pool worker's loop, inside the unit: read a call, run it, write its result as data.

Its channel is its own: a call pipe only the owner writes and a result pipe only the owner reads
(see _protocol). How it starts (the initializer, the most tasks to run) it inherits from the
zygote (a Start); then each CALL is unpickled, called and answered with RESULT or EXCEPTION, in
order, until STOP, EOF (the owner is gone) or the task limit. A call is unpickled only here,
inside the unit, and only as it runs: one that fails to unpickle fails its own future.
"""

from __future__ import annotations

import os
from typing import Callable, NamedTuple

from . import _cpython, _payload
from . import _protocol as P
from ._results import encode_exception, encode_result


class Start(NamedTuple):
    """What every worker of a pool starts with. It is never pickled: the zygote is forked from
    the owner holding it, and each worker from the zygote, as ProcessPoolExecutor's fork workers
    inherit their initializer and initargs. So initargs may hold what multiprocessing passes
    only by inheritance (a fork context's Queue or Lock); the fds such objects hold stay open in
    the zygote (see fds())."""
    initializer: Callable[..., object] | None
    initargs: tuple[object, ...]
    max_tasks: int | None
    max_result: int
    preload: tuple[str, ...] = ()   # modules the zygote imports before it enters the unit

    def fds(self) -> set[int]:
        """The open fds the initializer and its arguments hold (a Queue's pipe, a socket)."""
        return _payload.fds_held_by((self.initializer, self.initargs))


def serve(call_fd: int, result_fd: int, start: Start) -> int:
    """Runs the worker; returns its exit status."""
    for fd in (call_fd, result_fd):
        os.set_inheritable(fd, False)   # not into a task's subprocesses
    _payload.note_forked()   # before anything of __main__'s is unpickled
    try:
        return _serve(call_fd, result_fd, start)
    finally:
        _cpython.end_as_a_fork_child()


def _serve(call_fd: int, result_fd: int, start: Start) -> int:
    if start.initializer is not None:
        try:
            start.initializer(*start.initargs)
        except BaseException as e:   # noqa: BLE001 - reported, as ProcessPoolExecutor logs it
            _cpython.LOGGER.critical("Exception in initializer:", exc_info=True)
            # The log record may go through a Queue the initializer set up: flushed before the
            # owner, told, breaks the pool and kills its workers.
            _cpython.end_as_a_fork_child()
            P.write_all(result_fd, P.frame(P.INIT_FAILED, -1, encode_exception(e)))
            return 1
    max_tasks, max_result = start.max_tasks, start.max_result
    del start
    done = 0
    while True:
        call = P.read_frame(call_fd)
        if call is None or call[0] == P.STOP:
            return 0
        kind, work_id, payload = call
        P.write_all(result_fd, _answer(kind, work_id, payload, max_result))
        del call, payload
        done += 1
        if max_tasks and done >= max_tasks:
            return 0


def _answer(kind: int, work_id: int, payload: bytes, max_result: int) -> bytes:
    """The result frame of one call."""
    try:
        fn, args, kwargs = _payload.loads(kind == P.CALL_CLOUD, payload)
        value = fn(*args, **kwargs)
        del fn, args, kwargs
        blob = encode_result(value)
        del value
        if max_result and len(blob) > max_result:
            raise ValueError(f"the task's result is {len(blob)} bytes pickled, more than the "
                             f"pool's max_result_size ({max_result} bytes): raise it, or return "
                             "less")
        return P.frame(P.RESULT, work_id, blob)
    except BaseException as e:   # noqa: BLE001 - the task's, whatever it is: it goes back
        return P.frame(P.EXCEPTION, work_id, encode_exception(e))

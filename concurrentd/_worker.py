"""A pool worker's loop, inside the unit: read a call, run it, write its result as data.

Its channel is its own: a call pipe only the owner writes and a result pipe only the owner reads
(see _protocol). The first frame says how to start (the initializer, the most tasks to run);
then each CALL is unpickled, called and answered with RESULT or EXCEPTION, in order, until STOP,
EOF (the owner is gone) or the task limit. A call is unpickled only here, inside the unit, and
only as it runs: one that fails to unpickle fails its own future.
"""

from __future__ import annotations

import os
import pickle

from . import _cpython, _payload
from . import _protocol as P
from ._results import encode_exception, encode_result


def serve(call_fd: int, result_fd: int) -> int:
    """Runs the worker; returns its exit status."""
    for fd in (call_fd, result_fd):
        os.set_inheritable(fd, False)   # not into a task's subprocesses
    _payload.note_forked()   # before anything of __main__'s is unpickled (the initializer)
    hello = P.read_frame(call_fd)
    if hello is None or hello[0] != P.HELLO:
        return 0
    initializer, initargs, max_tasks, max_result = pickle.loads(hello[2])
    if initializer is not None:
        try:
            initializer(*initargs)
        except BaseException as e:   # noqa: BLE001 - reported, as ProcessPoolExecutor logs it
            _cpython.LOGGER.critical("Exception in initializer:", exc_info=True)
            P.write_all(result_fd, P.frame(P.INIT_FAILED, -1, encode_exception(e)))
            return 1
        del initializer, initargs
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

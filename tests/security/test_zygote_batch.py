"""Attacks on the owner's batched requests to the zygote (8c10f9c: the manager asks the zygote
for every worker the queue needs before it reads any pid).

The attacker is a worker (User=nobody, the zygote's user): it can stop or kill the zygote, as any
process of the unit can signal its siblings (SECURITY.md). What it must not get: an owner that
waits for ever ("every wait on the zygote has a deadline").
"""

from __future__ import annotations

import os
import signal
import threading
from concurrent.futures.process import BrokenProcessPool

from concurrentd import TransientUnitPoolExecutor

PROPS = {"User": "nobody", "PrivateTmp": True}
T = 30


def stop_the_zygote() -> str:
    os.kill(os.getppid(), signal.SIGSTOP)
    return "stopped"


def test_a_stopped_zygote_with_a_big_batch_hangs_neither_the_pool_nor_shutdown(monkeypatch):
    """A worker stops the zygote; the owner then needs more new workers at once than the zygote
    socket's send buffer holds requests (~278 with the default 208 KiB: a pool of the default
    size on a machine with that many CPUs). socket.send_fds() ignores its flags (CPython passes
    none to sendmsg), so the MSG_DONTWAIT of Zygote.launch() is dropped: the manager thread
    blocked in sendmsg for ever, before any deadline-bounded read of a pid, and shutdown() and
    the interpreter's exit with it."""
    from concurrentd import _protocol

    monkeypatch.setattr(_protocol, "ZYGOTE_TIMEOUT", 1.0)
    n = 1000   # nothing is forked: the zygote is stopped before any request reaches it
    pool = TransientUnitPoolExecutor(n, PROPS)
    zygote = pool._session.zygote
    try:
        assert pool.submit(stop_the_zygote).result(timeout=T) == "stopped"
        manager = pool._executor_manager_thread
        with manager.lock:   # all queued before the manager dispatches: one batch (as map() may)
            futures = [pool.submit(int, i) for i in range(n)]
        done = threading.Event()
        threading.Thread(target=lambda: (pool.shutdown(), done.set()), daemon=True).start()
        assert done.wait(T), "shutdown() did not return: the manager blocked sending requests " \
                             "to a stopped zygote"
        errors = [f.exception(timeout=0) for f in futures if not f.cancelled()]
        assert any(isinstance(e, BrokenProcessPool) for e in errors), errors
    finally:
        # Unblock a manager stuck in sendmsg, so that this session can end either way.
        if zygote.status is None:
            zygote.kill()

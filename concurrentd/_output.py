"""What a unit's processes print, copied to the owner's stdout and stderr.

The zygote, and every worker it forks, has /dev/null as stdin and two pipes as stdout and stderr,
as systemd gives a unit's process /dev/null and the journal: no process of the unit holds the
owner's terminal (it could read what is typed there, or change its modes with ioctls). A thread
of the owner copies the pipes' bytes, as they come, to its own fds 1 and 2, so ``print()`` in a
task still shows where the owner's own output goes.
"""

from __future__ import annotations

import os
import select
import threading

from ._protocol import write_all


class OutputPipes:
    """The two pipes, made before the zygote's fork: ``ends_for_zygote`` are its stdout and
    stderr; start() (after the fork) copies what comes out of them until every writer is gone."""

    def __init__(self) -> None:
        # Copies of the owner's stdout and stderr as they are now: the copy goes there even if
        # fd 1 or 2 is later closed, and its number given to another file or socket.
        self._targets = [_copy_of(1), _copy_of(2)]
        self._out_r, out_w = os.pipe()
        self._err_r, err_w = os.pipe()
        self.ends_for_zygote = (out_w, err_w)
        self._ends_closed = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """In the owner, after the fork: closes its copies of the write ends, starts copying.
        If no thread can be started (RuntimeError), every fd is closed before it raises."""
        for fd in self.ends_for_zygote:
            os.close(fd)
        self._ends_closed = True
        thread = threading.Thread(target=self._copy, name="concurrentd-output", daemon=True)
        try:
            thread.start()
        except BaseException:
            self.discard()
            raise
        self._thread = thread

    def _copy(self) -> None:
        poller = select.poll()
        targets = {self._out_r: self._targets[0], self._err_r: self._targets[1]}
        for fd in targets:
            poller.register(fd, select.POLLIN)
        try:
            while targets:
                for fd, _ in poller.poll():
                    data = os.read(fd, 1 << 16)
                    if not data:
                        poller.unregister(fd)
                        del targets[fd]
                        continue
                    target = targets[fd]
                    if target is None:
                        continue
                    try:
                        write_all(target, data)
                    except OSError:   # the owner's own stdout is gone: drop, keep draining
                        pass
        finally:
            for end in (self._out_r, self._err_r, *self._targets):
                if end is not None:
                    os.close(end)

    def join(self, timeout: float) -> None:
        """Waits (at most ``timeout``) for the last output once every unit process has exited."""
        if self._thread is not None:
            self._thread.join(timeout)

    def discard(self) -> None:
        """Closes every fd (the zygote was never forked, or the copy could not start)."""
        ends = () if self._ends_closed else self.ends_for_zygote
        for fd in (*ends, self._out_r, self._err_r, *self._targets):
            if fd is not None:
                os.close(fd)


def _copy_of(fd: int) -> int | None:
    """A close-on-exec copy of ``fd``, or None if it is closed (its output is then dropped)."""
    try:
        return os.dup(fd)
    except OSError:
        return None


def ensure_stdio() -> None:
    """Opens /dev/null as each of fds 0, 1 and 2 that is closed, before the owner opens anything
    else: a process started with its stdout closed would otherwise get its D-Bus connection, a
    root socket to systemd, as fd 1, and the copy of a worker's output would go there."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd, inheritable=True)
                os.close(null)
            else:
                os.set_inheritable(fd, True)


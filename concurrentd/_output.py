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


class OutputPipes:
    """The two pipes, made before the zygote's fork: ``ends_for_zygote`` are its stdout and
    stderr; start() (after the fork) copies what comes out of them until every writer is gone."""

    def __init__(self):
        self._out_r, out_w = os.pipe()
        self._err_r, err_w = os.pipe()
        self.ends_for_zygote = (out_w, err_w)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """In the owner, after the fork: closes its copies of the write ends, starts copying."""
        for fd in self.ends_for_zygote:
            os.close(fd)
        self._thread = threading.Thread(target=self._copy, name="concurrentd-output", daemon=True)
        self._thread.start()

    def _copy(self) -> None:
        poller = select.poll()
        targets = {self._out_r: 1, self._err_r: 2}
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
                    try:
                        _write_all(targets[fd], data)
                    except OSError:   # the owner's own stdout is gone: drop, keep draining
                        pass
        finally:
            os.close(self._out_r)
            os.close(self._err_r)

    def join(self, timeout: float) -> None:
        """Waits (at most ``timeout``) for the last output once every unit process has exited."""
        if self._thread is not None:
            self._thread.join(timeout)

    def discard(self) -> None:
        """Closes all four ends (the zygote was never forked)."""
        for fd in (*self.ends_for_zygote, self._out_r, self._err_r):
            os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]

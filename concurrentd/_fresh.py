"""A zygote that is a fresh interpreter, not a fork of the owner (mp_context spawn or forkserver).

The fork zygote (see _zygote) is a copy of the owner: fast, and it has every module the owner
loaded, but also the owner's memory (its globals, secrets, files read before the pool), and a
fork of an owner that has threads (a web server, a Dask worker) may deadlock. This zygote is a new
Python, started with posix_spawn (safe in a threaded process), that imports what the owner's
calls name, as multiprocessing's forkserver does; from there on it is the same zygote
(_zygote_loop.main): it enters the unit once and forks every worker.

    owner                                           fresh interpreter (python -I -c BOOT)
    ─────                                           ─────────────────────────────────────
    posix_spawn: the zygote socket, the setup  ───▶ boot(): reads the Setup; the owner's sys.path;
      pipe and the fds the initargs hold              the Start unpickled (its fds resolved);
      (kept at their numbers), stdio = pipes          then _zygote_loop.main()
    setup pipe ◀── Setup (pickled) ─────────────

The Setup goes by pickle from the owner to the zygote, the trusted direction. Its Start (the
initializer and initargs) is pickled as multiprocessing pickles a Process for spawn: objects that
pass only "while spawning" (a spawn or forkserver context's Queue or Lock) pass, their fds with
them; a fork context's refuse, as with ProcessPoolExecutor(mp_context=spawn).
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import _protocol as P

if TYPE_CHECKING:
    from ._pythonpath import PathMap

#: the program the new interpreter runs: where concurrentd is, then boot(); -I: no environment
#: variable and no user site changes what it imports
_BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); "
         "from concurrentd._fresh import boot; boot(int(sys.argv[2]), int(sys.argv[3]))")
#: every signal a process may catch, set to its default in the new interpreter
_CATCHABLE = tuple(s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP))
#: the environment the zygote starts with (the unit's replaces it as it enters)
_ENVIRONMENT = ("PATH", "LANG", "LC_ALL", "LC_CTYPE")


@dataclass
class Setup:
    """What the owner tells its fresh zygote, once, as it starts."""
    sys_path: list[str]
    path_map: PathMap
    enters: bool
    owner: int
    max_workers: int
    start: bytes | None   # a pickled _worker.Start, or None (a zygote without pool workers)
    main_file: str | None = None   # the owner's script, for the tracebacks' source lines
    fds: tuple[int, ...] = field(default=())   # kept open at their numbers: the Start's


class _Spawning:
    """Stands in for the Popen multiprocessing pickles a Process for: its objects' fds are
    passed to the new interpreter at their own numbers."""

    def __init__(self) -> None:
        self.fds: list[int] = []

    def duplicate_for_child(self, fd: int) -> int:
        self.fds.append(fd)
        return fd

    class DupFd:
        def __init__(self, fd: int):
            self.fd = fd

        def detach(self) -> int:
            return self.fd


@dataclass
class Fresh:
    """A pool's choice of a fresh zygote: its Start pickled (checked before any unit starts),
    and the fds that needs."""
    start: bytes | None
    fds: tuple[int, ...]

    @classmethod
    def prepare(cls, start: Any) -> "Fresh":
        """Raises TypeError where ``start`` cannot go to another interpreter."""
        if start is None:
            return cls(None, ())
        return cls(*pickle_start(start))


def pickle_start(start: Any) -> tuple[bytes, tuple[int, ...]]:
    """``start`` (a _worker.Start) pickled for a fresh interpreter, and the fds it needs there.

    Raises:
        TypeError: something in it cannot go to another interpreter (the message says what).
    """
    import collections
    import io
    from multiprocessing import context

    import cloudpickle

    from . import _cpython
    spawning = _Spawning()
    out = io.BytesIO()
    # (the C pickler reads dispatch_table as the class is made); cloudpickle ships no types
    class SpawnPickler(cloudpickle.Pickler):   # type: ignore[misc]
        dispatch_table = collections.ChainMap(_cpython.multiprocessing_reducers(),
                                              cloudpickle.Pickler.dispatch_table)

    pickler = SpawnPickler(out, protocol=pickle.HIGHEST_PROTOCOL)
    previous = context.get_spawning_popen()
    # typeshed admits only multiprocessing's own Popens; reduction asks for duplicate_for_child()
    context.set_spawning_popen(spawning)   # type: ignore[arg-type]
    try:
        pickler.dump(start)
        blob = out.getvalue()
    except Exception as e:   # noqa: BLE001 - any pickling failure says the same to the user
        raise TypeError(
            f"initializer/initargs cannot go to the pool's fresh interpreter (mp_context spawn "
            f"or forkserver): {e}; use objects of that context (a fork context's Queue or Lock "
            "passes only to a fork pool)") from e
    finally:
        context.set_spawning_popen(previous)
    return blob, tuple(spawning.fds)


def spawn(setup: Setup, stdout: int, stderr: int, sock: int) -> int:
    """Starts the fresh interpreter with ``sock`` as its zygote socket and ``stdout``/``stderr``
    as its own; sends it ``setup``; returns its pid."""
    setup_r, setup_w = os.pipe()
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    argv = [sys.executable, "-I", "-c", _BOOT, package_parent, str(sock), str(setup_r)]
    # dup2(fd, fd) clears the fd's close-on-exec flag in the child alone: it keeps its number.
    actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
               (os.POSIX_SPAWN_DUP2, stdout, 1), (os.POSIX_SPAWN_DUP2, stderr, 2),
               *((os.POSIX_SPAWN_DUP2, fd, fd) for fd in (sock, setup_r, *setup.fds))]
    env = {k: os.environ[k] for k in _ENVIRONMENT if k in os.environ}
    try:
        # Signals as a new process gets them, not as the calling thread has them (blocked or
        # ignored SIGTERM would make the workers deaf to terminate() and the unit's stop).
        pid = os.posix_spawn(sys.executable, argv, env, file_actions=actions, setsigmask=(),
                             setsigdef=_CATCHABLE)
    finally:
        os.close(setup_r)
    with open(setup_w, "wb") as f:
        try:
            pickle.dump(setup, f, protocol=pickle.HIGHEST_PROTOCOL)
        except BrokenPipeError:   # it died at start: the caller sees it exit
            pass
    return pid


def boot(sock_fd: int, setup_fd: int) -> None:
    """The fresh interpreter's program: reads its Setup, imports as the owner would, then runs
    the zygote's loop and exits with its status."""
    with open(setup_fd, "rb") as f:
        setup: Setup = pickle.load(f)
    sys.path[:] = setup.sys_path
    code = P.ZYGOTE_FAILED_EXIT_STATUS
    try:
        import socket

        from . import _pythonpath, _sources, _zygote_loop
        start = pickle.loads(setup.start) if setup.start is not None else None
        if setup.main_file:
            _sources.keep_main_source(setup.main_file)
        sock = socket.socket(fileno=sock_fd)
        keep = {0, 1, 2, sock_fd, *setup.fds}
        code = _zygote_loop.main(sock, _pythonpath.Rewrite(setup.path_map), setup.enters, keep,
                                 setup.owner, setup.max_workers, start)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

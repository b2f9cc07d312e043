"""A unit session: one unit (started or joined), its zygote, the owner's plan of it, released once.

Used alike by a pool, a TransientUnitProcess with a unit of its own, and run()/@sandboxed:

    session = UnitSession.begin(properties, enters=True, max_workers=n)
        connect to systemd; StartTransientUnit (or join a running unit); fork the zygote
        while systemd sets the unit up
    session.finish()
        wait for the unit's start; the zygote reads the anchor (and enters); the owner reads its
        own plan (the cgroups whose counters say why a worker died)
    session.release()   (or release_after(thread, block))
        end the zygote, close the plan, stop the unit (if started here), disconnect

Each phase releases whatever was started if it fails, so a failed start leaves nothing behind.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Mapping

from . import _deaths, _fresh, _pythonpath, _worker
from ._entry import EntryPlan, anchor_argv
from ._entry.enter import anchor_exited
from ._entry.plan import AnchorGone
from ._output import ensure_stdio
from ._unitfiles import OwnerFifo, add_read_only_binds, anchor_for_unit
from ._zygote import Zygote
from .systemd import StartingService, Systemd, Unit, UnitStartError
from .systemd.properties import convert_property
from .systemd.properties.effects import effects_of

#: seconds release() waits for the last output of the unit's processes to be copied
_OUTPUT_DRAIN = 1.0
#: seconds a unit may take to start (its ExecStartPre= included) unless the caller says otherwise
DEFAULT_START_TIMEOUT = 60.0

#: Properties that make the unit's main process something else than concurrentd's anchor, or
#: its start job end at another moment than the anchor's exec, fully confined (Type=exec).
_OWNED = {
    "Type": "concurrentd starts the unit as Type=exec: its start job ends once the anchor has "
            "exec'd with all sandboxing applied, which the workers wait for",
    "ExecStart": "the unit's main process is concurrentd's anchor",
    "RemainAfterExit": "the unit lives as long as its anchor, which lives as long as its owner",
    "PIDFile": "the unit's main process is concurrentd's anchor",
    "BusName": "the unit's main process is concurrentd's anchor",
}


def check_root() -> None:
    """Says that root is needed, before anything is touched."""
    if os.geteuid() != 0:
        raise PermissionError(
            f"concurrentd needs root (this process runs as uid {os.geteuid()}): it starts "
            "systemd units and moves its workers into them (namespaces, cgroups, "
            "credentials), which only root in the initial user namespace may do")


#: What a unit of concurrentd's gets unless the caller sets it. OOMPolicy=continue: with
#: systemd's default (stop, or DefaultOOMPolicy=), one worker killed by the kernel's OOM killer
#: stops the whole unit on a pure cgroup v2 host (systemd watches memory.events there), and
#: on_worker_death="replace" could never replace it. The kill itself is reported as the worker's
#: death (_deaths), naming the memory limit.
DEFAULTS = {"OOMPolicy": "continue"}


def with_defaults(properties: Mapping[str, Any]) -> dict[str, Any]:
    """``properties`` with DEFAULTS added where the caller did not set them (theirs win)."""
    return {**DEFAULTS, **properties}


def _private_pids(properties: Mapping[str, Any]) -> bool:
    """Whether the unit gets a pid namespace of its own (PrivatePIDs=, systemd >= 257)."""
    return effects_of(properties).private_pids


#: Type=exec as the table converts it: systemd's names are case-sensitive ("EXEC" is refused)
_TYPE_EXEC = [("Type", ("s", "exec"))]


def check_owned(properties: Mapping[str, Any]) -> None:
    """Refuses the properties concurrentd sets itself, before anything is sent."""
    for name, why in _OWNED.items():
        value = properties.get(name)
        if value is None or (name == "Type" and convert_property(name, value) == _TYPE_EXEC):
            continue
        raise ValueError(f"{name}= cannot be set on a pool's unit ({name}={value!r}): {why}; "
                         f"leave it out")


class UnitSession:
    """What a unit's user holds outside Python: the D-Bus connection, the unit, the zygote, the
    plan. Released once, in reverse order, by whoever gets there first."""

    def __init__(self) -> None:
        self.systemd: Systemd | None = None
        self.unit: Unit | None = None
        self.owned = True
        self.plan: EntryPlan | None = None
        self.zygote: Zygote | None = None
        self.counters_seen = _deaths.Counters()
        self._starting: StartingService | None = None
        self._main_pid = 0
        self._anchor_exe = ""
        self._path_map: _pythonpath.PathMap = ()
        self._conditions: dict[str, Any] = {}
        self._owner_fifo: OwnerFifo | None = None
        self._lock = threading.Lock()

    # -- begin ---------------------------------------------------------------------------------
    @classmethod
    def begin(cls, properties: Mapping[str, Any], *, unit_name: str | None = None,
              unit: str | None = None, enters: bool = True, max_workers: int = 0,
              import_binds: Any = True, start: _worker.Start | None = None,
              fresh: _fresh.Fresh | None = None) -> "UnitSession":
        """Starts (or joins) the unit and forks the zygote; returns while systemd may still be
        setting the unit up (call finish()).

        Args:
            enters: the zygote enters the unit itself (a pool's); else each worker enters on its
                own (a TransientUnitProcess's own unit).
            max_workers: a pool's size (the zygote keeps a spare while fewer run).
            start: how a pool's workers start (the zygote's fork carries it to them).
            fresh: the zygote is a fresh interpreter, not a fork of this process (see _fresh).
            import_binds: see TransientUnitPoolExecutor.
        """
        if os.geteuid() != 0:
            raise PermissionError(
                f"concurrentd needs root (this process runs as uid {os.geteuid()}): it starts "
                "systemd units and moves its workers into them (namespaces, cgroups, "
                "credentials), which only root in the initial user namespace may do")
        session = cls.begin_unit(properties, unit_name=unit_name, unit=unit,
                                 import_binds=import_binds)
        session.fork_zygote(enters=enters, max_workers=max_workers, start=start, fresh=fresh)
        return session

    @classmethod
    def begin_unit(cls, properties: Mapping[str, Any], *, unit_name: str | None = None,
                   unit: str | None = None, import_binds: Any = True) -> "UnitSession":
        """begin()'s first half: the unit started (or joined), no zygote yet."""
        check_root()
        if unit is None:
            check_owned(properties)
        ensure_stdio()
        session = cls()
        session._conditions = {k: v for k, v in properties.items()
                               if k.startswith(("Condition", "Assert"))}
        try:
            session.systemd = Systemd.connect()
            path_map: _pythonpath.PathMap = ()
            if unit is None:
                python_binds, path_map = _pythonpath.plan_binds(properties, **_binds_options(
                    import_binds))
                properties = add_read_only_binds(with_defaults(properties), python_binds)
                if _private_pids(properties):   # the anchor cannot see the owner's pid
                    session._owner_fifo = OwnerFifo()
                fifo = session._owner_fifo.path if session._owner_fifo else None
                argv, properties = anchor_for_unit(anchor_argv(os.getpid(), owner_fifo=fifo),
                                                   properties, [fifo] if fifo else [])
                session._anchor_exe = argv[0]
                session._starting = session.systemd.begin_service(argv, properties, name=unit_name)
                session.unit = session._starting.unit   # from here on, release() stops it
            else:
                session.owned = False
                session.unit = session.systemd.unit(unit)
                session._main_pid = session.unit.main_pid
                if not session._main_pid:
                    raise ValueError(f"unit {unit} has no main process to join (is it running?)")
                session._anchor_exe = _program_of(session._main_pid)
        except BaseException:
            session.release()
            raise
        session._path_map = path_map
        return session

    def fork_zygote(self, *, enters: bool = True, max_workers: int = 0,
                    start: _worker.Start | None = None, fresh: _fresh.Fresh | None = None) -> None:
        """begin()'s second half: the zygote, which waits for the anchor (systemd sets the unit up
        meanwhile, ~10 ms with a sandbox)."""
        try:
            self.zygote = Zygote(self._path_map, enters=enters, max_workers=max_workers,
                                 start=start, fresh=fresh)
        except BaseException:
            self.release()
            raise

    def await_unit(self, timeout: float = DEFAULT_START_TIMEOUT) -> None:
        """Waits for the unit's start job (a prepared unit's, before any zygote): afterwards
        finish() has nothing to wait for but the zygote. Releases everything if it fails."""
        try:
            if self._starting is not None:
                self._starting.wait(timeout)
                self._main_pid = self._starting.main_pid
                self._starting = None
            if not self._main_pid:
                raise self._skipped() or anchor_exited(self._main_pid)
        except BaseException:
            self.release()
            raise

    def anchor_alive(self) -> bool:
        """The unit's main process still runs (a prepared unit may have been stopped since)."""
        try:
            os.close(os.pidfd_open(self._main_pid))
        except OSError:
            return False
        return True

    # -- finish --------------------------------------------------------------------------------
    def finish(self, timeout: float = DEFAULT_START_TIMEOUT) -> "UnitSession":
        """Waits for the unit (at most ``timeout`` seconds) and for the zygote's report (a pool's
        zygote: entered, and its first worker-to-be forked). Raises what went wrong, after
        releasing everything.

        Raises:
            TimeoutError: the unit did not start in time (a slow ExecStartPre=, a Condition
                systemd waits on…); it has been stopped.
        """
        try:
            starting, main_pid = self._starting, self._main_pid
            if starting is not None:
                EntryPlan.rehearse()   # the owner reads the anchor too, once the unit runs
                try:
                    starting.wait(timeout)
                except TimeoutError:
                    raise TimeoutError(f"unit {starting.unit.name} did not start within {timeout:g} s"
                                       " (a slow ExecStartPre=?): it was stopped; give the pool "
                                       "start_timeout= to wait longer") from None
                main_pid = self._main_pid = starting.main_pid
                self._starting = None
                if not main_pid:   # skipped (a condition failed), or it ran and exited already
                    raise self._skipped() or anchor_exited(main_pid)
            zygote = self.zygote
            assert zygote is not None, "finish() follows fork_zygote()"
            zygote.enter(main_pid, self._anchor_exe)
            zygote.await_entered()
            # The owner's own plan, read while the zygote forks its first worker-to-be: the
            # cgroups to watch, the steps to name. Without the seccomp filters: only one process
            # at a time can copy them.
            try:
                self.plan = EntryPlan.from_pid(main_pid, anchor_exe=self._anchor_exe, seccomp=False)
            except AnchorGone as e:
                raise anchor_exited(main_pid) from e
            self.counters_seen = self.read_counters()
            zygote.await_ready(self.plan)
        except BaseException:
            self.release()
            raise
        return self

    def _skipped(self) -> UnitStartError | None:
        """The error for a unit systemd did not start because a Condition…= failed (its start
        job still ends in 'done'), or None if that is not why it has no main process."""
        unit = self.unit
        if unit is None:   # never started: nothing to say (as the except below, before)
            return None
        try:
            if unit.get("ConditionResult", "Unit"):
                return None
        except Exception:   # noqa: BLE001 - only for the message: the anchor error will do
            return None
        # (systemd has forgotten a skipped transient unit's conditions by now: the ones given)
        given = ", ".join(f"{k}={v}" for k, v in self._conditions.items()) or "its Condition…="
        return UnitStartError(unit.name, "skipped", {
            "because": f"its condition failed: {given}; systemd did not start it"})

    # -- while it runs -------------------------------------------------------------------------
    def read_counters(self) -> _deaths.Counters:
        dirs = [os.path.dirname(p) for p in self.plan.cgroup_procs] if self.plan else []
        return _deaths.read_counters(dirs)

    def unit_stopped(self) -> str | None:
        """Why the unit has stopped (its anchor exited), or None while it runs."""
        plan = self.plan
        if plan is None or plan.anchor_alive():
            return None
        return ("the unit has stopped: its main process (the anchor, pid "
                f"{plan.anchor_pid}) exited, and systemd ended the rest of it")

    def zygote_gone(self) -> str | None:
        """Why the zygote cannot fork workers anymore, or None while it can."""
        zygote, plan = self.zygote, self.plan
        if zygote is None or plan is None:
            return "the pool has been shut down"
        # The anchor first: systemd ends the rest of the unit after it, in no set order, so a
        # worker may be found dead while the zygote still runs.
        stopped = self.unit_stopped()
        if stopped is not None:
            return stopped
        if zygote.alive():
            return None
        return f"the pool's zygote (pid {zygote.pid}), which forks its workers, has exited"

    # -- release -------------------------------------------------------------------------------
    def release(self) -> None:
        """Ends the zygote, closes the plan, stops the unit (if started here), closes the
        connection. A second call waits for the first, then does nothing.

        Raises:
            RuntimeError: a step failed (the others were still taken); the message names each.
        """
        with self._lock:
            zygote, plan, unit, systemd = self.zygote, self.plan, self.unit, self.systemd
            self.zygote = self.plan = self.unit = self.systemd = None
            errors = []
            for step, action in (("closing the zygote", zygote and zygote.close),
                                 ("closing the entry plan", plan and plan.close),
                                 ("stopping the unit",
                                  unit and self.owned and (lambda: _stop(unit))),
                                 ("closing the D-Bus connection", systemd and systemd.close),
                                 ("closing the owner's fifo",
                                  self._owner_fifo and self._owner_fifo.close)):
                if action:
                    try:
                        action()
                    except Exception as e:   # noqa: BLE001 - release the rest, then report
                        errors.append(f"{step}: {e}")
            if zygote is not None:
                zygote.output.join(_OUTPUT_DRAIN)
        if errors:
            raise RuntimeError("releasing the unit's resources failed: " + "; ".join(errors))

    def release_after(self, thread: threading.Thread | None, block: bool) -> None:
        """release() once ``thread`` (a pool's manager, which finishes the submitted work) has
        ended: at once with ``block``, else from a helper thread."""
        if thread is None or not thread.is_alive() or thread is threading.current_thread():
            self.release()
        elif block:
            thread.join()
            self.release()
        else:
            threading.Thread(target=self.release_after, args=(thread, True),
                             name="concurrentd-release", daemon=True).start()


#: seconds to wait for a unit's stop on the pool's own connection before trying a new one (a
#: connection to a bus that restarted may never see the job's end)
_STOP_WAIT = 10.0
#: seconds to wait for it on the new one (systemd's own TimeoutStopSec= is 90 s)
_STOP_WAIT_AGAIN = 100.0


def _stop(unit: Unit) -> None:
    """Stops the unit, over a new connection if the pool's is broken (the bus restarted)."""
    try:
        unit.stop(timeout=_STOP_WAIT)
    except (OSError, EOFError) as first:   # TimeoutError is an OSError
        try:
            systemd = Systemd.connect()
        except Exception:   # noqa: BLE001 - report the first failure, which says more
            raise first from None
        try:
            systemd.unit(unit.name).stop(timeout=_STOP_WAIT_AGAIN)
        finally:
            systemd.close()


def _binds_options(import_binds: Any) -> dict[str, Any]:
    """plan_binds()'s options for the pools' ``import_binds=`` (True, False, or extra paths)."""
    if import_binds is True:
        return {}
    if import_binds is False or import_binds is None:
        return {"enabled": False}
    if isinstance(import_binds, (str, bytes)):
        raise TypeError("import_binds must be True, False or a list of directories "
                        f"(not the string {import_binds!r}: put it in a list)")
    return {"extra": [os.fspath(p) for p in import_binds]}


def _program_of(pid: int, timeout: float = 5.0) -> str:
    """The executable of a joined unit's main process, once it runs it. A Type=simple unit is
    reported started as soon as systemd has forked that process, which is then still systemd's
    own child (systemd's executable, or systemd-executor's), not yet confined: wait for its exec."""
    systemd = os.readlink("/proc/1/exe")
    not_yet = {systemd, os.path.join(os.path.dirname(systemd), "systemd-executor")}
    deadline = time.monotonic() + timeout
    while True:
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except FileNotFoundError:
            raise anchor_exited(pid) from None
        if exe not in not_yet:
            return exe
        if time.monotonic() > deadline:
            raise ValueError(f"the unit's main process (pid {pid}) has not exec'd its program "
                             f"{timeout:.0f} s after systemd forked it: it is not confined yet")
        time.sleep(0.001)

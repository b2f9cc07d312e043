"""Prepared units: the next unit for the same properties, started before it is asked for.

Starting a unit is most of what a pool's start costs (systemd sets the sandbox up: ~12 ms, ~20 ms
with connecting). So after a unit is used, a thread of the owner starts the next one with the same
properties and waits for it; the next pool, run() or @sandboxed call with those properties takes
it and only forks its zygote into it. A pool whose zygote is a fresh interpreter (and that has no
initializer) takes a prepared zygote too, already entered, its first worker forked: a fresh
interpreter has nothing of the owner's that could go stale meanwhile. Each call still gets a unit
(and a zygote) of its own, started for it and stopped after it, never reused: a fresh PrivateTmp,
a fresh cgroup, nothing a previous call left.

Only units that are the same whenever they start are prepared (sandboxing and resource settings;
not paths resolved as it starts, Condition…=, RuntimeMaxSec=, EnvironmentFile=, credentials…:
see _SAME_WHENEVER), and only once the previous unit is stopped. Bounded: one prepared
unit per set of properties, at most MAX_PREPARED in all (the least recently
asked for goes first), each stopped once nobody took it for IDLE_SECONDS, and at the interpreter's
exit. If the owner dies, its prepared units go as any other: their anchors watch it.

A unit is prepared for exactly the unit the caller would start: the same properties, the same
import binds (which follow sys.path and the working directory, so those are in the key too).
"""

from __future__ import annotations

import atexit
import collections
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:   # (at run time, _prepare() imports it where it needs it)
    from ._session import UnitSession

#: the most prepared units a process keeps
MAX_PREPARED = 4
#: seconds a prepared unit waits to be taken before it is stopped
IDLE_SECONDS = 30.0
#: seconds a unit may take to start in the background before it is given up
_START_TIMEOUT = 60.0


#: The properties a prepared unit may have: those whose effect does not depend on when the unit
#: starts. Others are fixed as it starts, from the time or from files: paths resolved to the
#: files there then (InaccessiblePaths= would hide a file since replaced, BindReadOnlyPaths= show
#: the previous call's input), a runtime already counting, a condition checked, an environment
#: file or a credential read then. A unit with any of those is never prepared.
_SAME_WHENEVER = frozenset({
    "Description", "Environment", "User", "Group", "DynamicUser", "SupplementaryGroups",
    "NoNewPrivileges", "SecureBits", "CapabilityBoundingSet", "AmbientCapabilities",
    "LockPersonality", "Personality", "MemoryDenyWriteExecute", "RemoveIPC", "KeyringMode",
    "UMask", "Nice", "OOMScoreAdjust", "OOMPolicy", "CPUAffinity", "NUMAPolicy", "NUMAMask",
    "IPAccounting", "Delegate", "KillMode", "KillSignal", "SendSIGKILL", "SendSIGHUP",
    "FinalKillSignal", "TimeoutStopSec", "CPUSchedulingPolicy", "CPUSchedulingPriority",
    "CPUSchedulingResetOnFork", "IOSchedulingClass", "IOSchedulingPriority", "TimerSlackNSec",
    "ProcSubset", "NotifyAccess"})
_SAME_WHENEVER_PREFIXES = ("Private", "Protect", "Restrict", "SystemCall", "Limit", "CPU",
                           "Memory", "IO", "Tasks", "IPAddress", "Startup")


def preparable(properties: Mapping[str, Any]) -> bool:
    """A unit with these properties is the same whenever it starts."""
    return all(str(name) in _SAME_WHENEVER or str(name).startswith(_SAME_WHENEVER_PREFIXES)
               for name in properties)


def key_of(properties: Mapping[str, Any], import_binds: Any, zygote: Any = None) -> str:
    """What a prepared unit must match: the properties as given, the import binds' inputs, and
    for a prepared zygote what it was started with (``zygote``, by its repr)."""
    items = sorted((str(k), repr(v)) for k, v in properties.items())
    return repr((items, repr(import_binds), tuple(sys.path), os.getcwd(), repr(zygote)))


#: what want() asks for: (properties, import_binds, fork_zygote()'s arguments or None, zygote_key)
_Request = tuple[dict[str, Any], Any, dict[str, Any] | None, Any]


class _Prepared:
    """The process's prepared units and the thread that starts them."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        #: each prepared session, and since when it waits
        self._ready: collections.OrderedDict[str, tuple[UnitSession, float]] = \
            collections.OrderedDict()
        self._wanted: collections.OrderedDict[str, _Request] = collections.OrderedDict()
        #: the key whose unit the thread is starting now (in neither of the above meanwhile)
        self._preparing: str | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    def take(self, key: str) -> UnitSession | None:
        """The prepared session for ``key`` (its unit started, no zygote yet), or None."""
        with self._lock:
            entry = self._ready.pop(key, None)
        if entry is None:
            return None
        session, _ = entry
        if session.anchor_alive():
            return session
        _release(session)   # stopped meanwhile (systemctl stop): start afresh
        return None

    def want(self, key: str, properties: Mapping[str, Any], import_binds: Any,
             zygote: dict[str, Any] | None = None, zygote_key: Any = None) -> None:
        """Asks for a unit to be prepared for ``key`` (once one is not there already); with
        ``zygote`` (fork_zygote's arguments: a fresh interpreter's), its zygote too. A key
        whose unit is being prepared is not asked for again: the next pool with the same
        properties may end before that unit is ready (a slow start, under load)."""
        with self._lock:
            if self._closed or key in self._ready or key in self._wanted or key == self._preparing:
                return
            self._wanted[key] = (dict(properties), import_binds, zygote, zygote_key)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="concurrentd-warm",
                                                daemon=True)
                self._thread.start()
            self._lock.notify()

    def close(self) -> None:
        """Stops every prepared unit, and the one being prepared; prepares nothing more (the
        interpreter's exit)."""
        with self._lock:
            self._closed = True
            ready, self._ready = list(self._ready.values()), collections.OrderedDict()
            self._wanted.clear()
            self._lock.notify()
            thread = self._thread
        for session, _ in ready:
            _release(session)
        if thread is not None and thread is not threading.current_thread():
            thread.join()   # it releases what it was preparing, seeing it closed

    # -- the thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._closed and not self._wanted and not self._expired():
                    self._lock.wait(self._next_expiry())
                if self._closed:
                    return
                expired = [self._ready.pop(key)[0] for key in self._expired()]
                job = self._wanted.popitem(last=False) if self._wanted else None
                self._preparing = job[0] if job is not None else None
            for session in expired:
                _release(session)
            if job is not None:
                self._prepare(*job)

    def _prepare(self, key: str, request: _Request) -> None:
        session = self._start(key, request)
        evicted: list[UnitSession] = []
        with self._lock:
            self._preparing = None
            if session is None:
                return
            if self._closed:
                evicted.append(session)
            else:
                # (never there: want() does not ask again for a key being prepared) A session
                # replaced in _ready would be dropped unreleased: its unit left running.
                replaced = self._ready.pop(key, None)
                if replaced is not None:
                    evicted.append(replaced[0])
                self._ready[key] = (session, time.monotonic())
                while len(self._ready) > MAX_PREPARED:
                    evicted.append(self._ready.popitem(last=False)[1][0])
                self._lock.notify()
        for old in evicted:
            _release(old)

    @staticmethod
    def _start(key: str, request: _Request) -> UnitSession | None:
        """The unit for ``key``, started (and its zygote, if asked for), or None."""
        from ._session import UnitSession
        properties, import_binds, zygote, zygote_key = request
        if key_of(properties, import_binds, zygote_key) != key:
            return None   # sys.path or the working directory changed since: the binds would differ
        try:
            session = UnitSession.begin_unit(properties, import_binds=import_binds)
            if zygote is None:
                session.await_unit(_START_TIMEOUT)
            else:
                session.fork_zygote(**zygote)
                session.finish(_START_TIMEOUT)
        except Exception:   # noqa: BLE001 - the call that wants it starts its own, and says why
            return None
        return session

    def _expired(self) -> list[str]:
        now = time.monotonic()
        return [k for k, (_, since) in self._ready.items() if now - since > IDLE_SECONDS]

    def _next_expiry(self) -> float | None:
        if not self._ready:
            return None
        oldest = min(since for _, since in self._ready.values())
        return max(0.0, oldest + IDLE_SECONDS - time.monotonic()) + 0.01


def _release(session: UnitSession) -> None:
    try:
        session.release()
    except Exception:   # noqa: BLE001 - a unit that will not stop: its anchor still ends it
        pass


_prepared = _Prepared()


def take(key: str) -> UnitSession | None:
    return _prepared.take(key)


def want(key: str, properties: Mapping[str, Any], import_binds: Any,
         zygote: dict[str, Any] | None = None, zygote_key: Any = None) -> None:
    _prepared.want(key, properties, import_binds, zygote, zygote_key)


def stop_all() -> None:
    """Stops every prepared unit, and the one being prepared; later calls prepare afresh."""
    global _prepared
    old, _prepared = _prepared, _Prepared()
    old.close()


def _forget_in_child() -> None:
    """A fork of the owner (a worker's zygote, a user's child) has no prepared units: they are
    the parent's, as is the thread that made them."""
    global _prepared
    _prepared = _Prepared()


os.register_at_fork(after_in_child=_forget_in_child)
atexit.register(lambda: _prepared.close())

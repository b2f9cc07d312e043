"""Transient service units: start one, read it back, stop, kill, reset.

Start flow (as systemd-run and bus-wait-for-jobs.c do it): Subscribe() and watch JobRemoved
*before* StartTransientUnit, so the job's end cannot be missed; then wait for that job's
JobRemoved and turn any result other than ``done`` into :class:`UnitStartError` with systemd's
reason. Type=exec makes the start job end only after the main process has exec'd with all its
sandboxing applied, so nothing ever joins a unit that is still being set up.
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import signal as _signal
import sys
from typing import Any, Callable, Mapping

from jeepney.low_level import HeaderFields, Message

from . import messages
from .bus import Address, Connection, connect_first, default_addresses, parse_address
from .errors import SystemdError, UnitStartError
from .properties import CLONE_NEWTIME, TIME_IN_ALL_SINCE, Converted, convert_properties

NO_SUCH_UNIT = "org.freedesktop.systemd1.NoSuchUnit"
_counter = itertools.count(1)


def unique_unit_name() -> str:
    """``concurrentd-<pid>-<n>-<random>.service``: unique per process, per call, per boot."""
    return f"concurrentd-{os.getpid()}-{next(_counter)}-{secrets.token_hex(4)}.service"


def _is_properties_changed(msg: Message) -> bool:
    fields = msg.header.fields
    return bool(fields.get(HeaderFields.member) == "PropertiesChanged"
                and fields.get(HeaderFields.interface) == messages.PROPERTIES_IFACE)


def _is_job_removed(msg: Message) -> bool:
    fields = msg.header.fields
    return bool(fields.get(HeaderFields.member) == "JobRemoved"
                and fields.get(HeaderFields.interface) == messages.MANAGER_IFACE)


def _signal_keeper(watched: set[str]) -> Callable[[Message], bool]:
    """What a connection keeps of the signals it reads: every JobRemoved, and the
    PropertiesChanged of the units in ``watched`` (the caller's set, updated in place)."""
    def keep(msg: Message) -> bool:
        if _is_job_removed(msg):
            return True
        return (_is_properties_changed(msg)
                and msg.header.fields.get(HeaderFields.path) in watched)
    return keep


class Systemd:
    """A connection to one systemd manager.

    Use :meth:`connect`; close with :meth:`close` or a ``with`` block.
    """

    def __init__(self, conn: Connection):
        self.conn = conn
        self.manager = messages.Manager(conn.destination)
        self._subscribed = False
        self._watched: set[str] = set()  # object paths of units being started
        self._version: int | None = None
        # Not a bound method of self: the connection would hold this object, which holds it, and
        # a Systemd dropped without close() would keep its socket open until the garbage
        # collector ran, not until its last reference went.
        conn.keep_signal = _signal_keeper(self._watched)

    def version(self) -> int:
        """The manager's systemd version (its Version property, e.g. "257.13-1~deb13u1" -> 257),
        read once per connection, when a setting means different things on different ones."""
        if self._version is None:
            (value,) = self.conn.call(
                messages.get_property(messages.MANAGER_PATH, messages.MANAGER_IFACE, "Version",
                                      self.conn.destination), step="Get Manager.Version")
            digits = "".join(itertools.takewhile(str.isdigit, str(value[1]).lstrip("v")))
            if not digits:
                raise SystemdError("org.freedesktop.DBus.Error.InvalidArgs",
                                   f"systemd reports a version without a number: {value[1]!r}",
                                   "Get Manager.Version")
            self._version = int(digits)
        return self._version

    def _for_this_manager(self, converted: Converted) -> Converted:
        """Converted properties as this manager's own systemd-run would send them: for
        RestrictNamespaces= "no" and "~…", a manager older than TIME_IN_ALL_SINCE does not count
        the time namespace among all (its systemd-run leaves the bit out, and a unit with it shows
        "time" where systemd-run's does not)."""
        out: Converted = []
        for name, (signature, value) in converted:
            if (name == "RestrictNamespaces" and value & CLONE_NEWTIME
                    and self.version() < TIME_IN_ALL_SINCE):
                value &= ~CLONE_NEWTIME
            out.append((name, (signature, value)))
        return out

    @classmethod
    def connect(cls, address: "str | Address | None" = None, *, timeout: float = 5.0) -> "Systemd":
        """Connect to systemd.

        Args:
            address: a D-Bus address (``unix:path=…``), a socket path or an :class:`Address`;
                default: the system bus (``$DBUS_SYSTEM_BUS_ADDRESS`` honoured), else systemd's
                private socket ``/run/systemd/private``.
            timeout: seconds allowed for connecting and authenticating.

        Raises:
            SystemdUnreachable: nothing answered at any candidate address.
            PermissionError: (a :class:`SystemdPermissionError`) not allowed, e.g. not root.
        """
        addresses = default_addresses() if address is None else [parse_address(address)]
        return cls(connect_first(addresses, timeout))

    def __enter__(self) -> "Systemd":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (twice is harmless)."""
        self.conn.close()

    # -- signals --------------------------------------------------------------------------------

    def _subscription(self) -> list[tuple[Message, str]]:
        """The calls that make systemd send JobRemoved to us (Subscribe) and, on a bus, route it
        to us (AddMatch); none once made."""
        if self._subscribed:
            return []
        calls = []
        if not self.conn.address.p2p:
            calls += [(messages.add_match(messages.job_removed_rule()), "AddMatch(JobRemoved)"),
                      (messages.add_match(messages.service_changes_rule()),
                       "AddMatch(PropertiesChanged)")]
        return calls + [(self.manager.subscribe(), "Subscribe")]

    def _subscribe(self) -> None:
        for reply in self.conn.call_all(self._subscription()):
            if isinstance(reply, SystemdError):
                raise reply
        self._subscribed = True

    def wait_job(self, job_path: str, *, timeout: float | None = None) -> str:
        """Wait for job ``job_path``'s JobRemoved and return its result (``done``, ``failed`` …)."""
        msg = self.conn.wait_signal(lambda m: _is_job_removed(m) and m.body[1] == job_path,
                                    timeout=timeout)
        result: str = msg.body[3]
        return result

    # -- units ----------------------------------------------------------------------------------

    def start_service(self, argv: list[str], properties: Mapping[str, Any] | None = None, *, name: str | None = None,
                      description: str | None = None, timeout: float | None = None) -> "Unit":
        """Start ``argv`` as a transient service and wait until its start job has finished.

        Type=exec is used unless ``properties`` gives Type; CollectMode=inactive-or-failed unless
        given. Properties use systemd-run's ``-p`` syntax or Python values (see
        :func:`convert_properties`).

        Raises:
            ValueError: bad argv or property (nothing was sent to systemd).
            UnitStartError: the start job did not end in ``done``; carries systemd's reason.
            SystemdError: systemd refused the request (UnitExists, InvalidArgs …).
        """
        return self.begin_service(argv, properties, name=name, description=description).wait(timeout)

    def begin_service(self, argv: list[str], properties: Mapping[str, Any] | None = None, *,
                      name: str | None = None, description: str | None = None) -> "StartingService":
        """start_service() in two halves: this one returns as soon as systemd has accepted the
        unit and queued its start job; ``.wait()`` waits for the job (systemd takes ~10 ms to set
        a sandboxed unit up, which the caller may spend on its own preparations).

        Raises: ValueError and SystemdError, as start_service().
        """
        argv = [os.fspath(a) for a in argv]
        if not argv:
            raise ValueError("argv must name a program to run (got an empty list)")
        properties = dict(properties or {})
        for reserved in ("ExecStart",):
            if reserved in properties:
                raise ValueError(f"{reserved} cannot be given as a property: it is built from argv")
        converted = self._for_this_manager(convert_properties(properties))
        given = {k for k, _ in converted}
        path = argv[0] if "/" in argv[0] else shutil.which(argv[0])
        if not path or not os.path.isabs(path):
            raise ValueError(f"argv[0] {argv[0]!r} is not an absolute path and was not found in PATH")
        name = name or unique_unit_name()
        if not name.endswith(".service"):
            name += ".service"
        if description is None:
            description = properties.get("Description") or (
                f"concurrentd: {os.path.basename(argv[0])} for pid {os.getpid()} "
                f"({os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else 'python'})")
        props: Converted = [("Description", ("s", str(description)))]
        if "Type" not in given:
            props.append(("Type", ("s", "exec")))
        if "CollectMode" not in given:
            props.append(("CollectMode", ("s", "inactive-or-failed")))
        props.append(("ExecStart", ("a(sasb)", [(path, argv, False)])))
        props.extend(p for p in converted if p[0] != "Description")

        unit_path = messages.unit_object_path(name)
        self._watched.add(unit_path)
        try:
            # Subscribing and starting in one round trip: in order, so the JobRemoved match is in
            # place before the job can end.
            subscription = self._subscription()
            *subscribed, started = self.conn.call_all(
                [*subscription,
                 (self.manager.start_transient_unit(name, "fail", props), f"StartTransientUnit({name})")])
            failed = [reply for reply in subscribed if isinstance(reply, SystemdError)]
            if failed:
                if not isinstance(started, SystemdError):   # started, but we would not see it end
                    self.conn.call(self.manager.stop_unit(name, "replace"), step=f"StopUnit({name})")
                raise failed[0]
            self._subscribed = True
            if isinstance(started, SystemdError):
                raise started
        except BaseException:
            self._unwatch(unit_path)
            raise
        (job,) = started
        return StartingService(Unit(self, name, unit_path), job)

    def _unwatch(self, path: str) -> None:
        """Stop keeping the PropertiesChanged signals of ``path``, and drop those kept."""
        self._watched.discard(path)
        self._changes(path)

    def _changes(self, path: str) -> dict[str, Any]:
        """Drain the kept PropertiesChanged signals of ``path``; return the merged changes."""
        merged: dict[str, Any] = {}
        for msg in [m for m in self.conn.signals
                    if _is_properties_changed(m) and m.header.fields.get(HeaderFields.path) == path]:
            self.conn.signals.remove(msg)
            merged.update({k: v[1] for k, v in msg.body[1].items()})
        return merged

    def unit(self, name: str) -> "Unit":
        """An existing, loaded unit.

        Raises:
            SystemdError: ``org.freedesktop.systemd1.NoSuchUnit`` if it is not loaded.
        """
        (path,) = self.conn.call(self.manager.get_unit(name), step=f"GetUnit({name})")
        return Unit(self, name, path)


class StartingService:
    """A transient service whose start job systemd has queued (see Systemd.begin_service)."""

    def __init__(self, unit: "Unit", job: str):
        self.unit, self.job = unit, job
        #: the unit's Service properties systemd announced while the job ran (PropertiesChanged)
        self.announced: dict[str, Any] = {}

    def wait(self, timeout: float | None = None) -> "Unit":
        """Waits for the start job; returns the unit once it runs.

        Raises:
            UnitStartError: the start job did not end in ``done``; carries systemd's reason.
        """
        unit, systemd = self.unit, self.unit.systemd
        try:
            result = systemd.wait_job(self.job, timeout=timeout)
            self.announced = systemd._changes(unit.object_path)
            if result != "done":
                raise UnitStartError(unit.name, result, unit._failure_details(self.announced))
        finally:
            systemd._unwatch(unit.object_path)
        return unit

    @property
    def main_pid(self) -> int:
        """After wait(): the main process's pid as systemd announced it (it sends a unit's
        changes before its job's end: no round trip), else read live; 0 when there is none."""
        return self.announced.get("MainPID") or self.unit.main_pid


#: What systemd's own exit statuses say (systemd.exec(5), "Process Exit Codes"): the step of
#: setting the process up that failed, in words, with the property that usually causes it.
EXIT_STATUS_MEANINGS = {
    200: "systemd could not change to the working directory (WorkingDirectory=)",
    203: "systemd could not run the program (a missing or unreadable executable; RootDirectory=?)",
    204: "systemd ran out of memory setting the process up",
    205: "systemd could not set a resource limit (Limit…=)",
    209: "systemd could not set up standard output (StandardOutput=)",
    210: "systemd could not change the root directory (RootDirectory=/RootImage=)",
    214: "systemd could not set the scheduling policy (CPUScheduling…=)",
    215: "systemd could not set the CPU affinity (CPUAffinity=)",
    216: "the group to run as does not exist, or could not be set (Group=, SupplementaryGroups=)",
    217: "the user to run as does not exist, or could not be set (User=)",
    218: "systemd could not set the capabilities (CapabilityBoundingSet=, AmbientCapabilities=)",
    219: "systemd could not set up the unit's cgroup",
    225: "systemd could not set up the network namespace (PrivateNetwork=)",
    226: "systemd could not set up the file system namespace (ProtectSystem=, PrivateTmp=, "
         "ReadOnlyPaths=, BindPaths=, … a path that does not exist?)",
    227: "systemd could not set no_new_privs (NoNewPrivileges=)",
    228: "systemd could not install the seccomp filter (SystemCallFilter=)",
    230: "systemd could not set the personality (Personality=)",
    232: "systemd could not restrict the address families (RestrictAddressFamilies=)",
    233: "systemd could not create the runtime directory (RuntimeDirectory=)",
    237: "systemd could not set up the keyring",
    238: "systemd could not create the state directory (StateDirectory=)",
    242: "systemd could not set the NUMA policy (NUMAPolicy=)",
    243: "systemd could not load the credentials (LoadCredential=, SetCredential=)",
}


class Unit:
    """A systemd unit, as seen through one :class:`Systemd` connection."""

    def __init__(self, systemd: Systemd, name: str, object_path: str):
        self.systemd = systemd
        self.name = name
        self.object_path = object_path

    def __repr__(self) -> str:
        return f"<Unit {self.name}>"

    def get(self, prop: str, interface: str = "Service") -> Any:
        """Read property ``prop`` of ``interface`` (``Unit``, ``Service``, … or a full name) live.

        Raises:
            SystemdError: e.g. UnknownObject once the unit is gone, UnknownProperty.
        """
        iface = messages.unit_interface(interface)
        (value,) = self.systemd.conn.call(
            messages.get_property(self.object_path, iface, prop, self.systemd.conn.destination),
            step=f"Get {self.name} {interface}.{prop}")
        return value[1]

    def get_all(self, interface: str = "Service") -> dict[str, Any]:
        """All properties of ``interface`` as ``{name: python value}``."""
        iface = messages.unit_interface(interface)
        (values,) = self.systemd.conn.call(
            messages.get_all_properties(self.object_path, iface, self.systemd.conn.destination),
            step=f"GetAll {self.name} {interface}")
        return {k: v[1] for k, v in values.items()}

    @property
    def main_pid(self) -> int:
        """The main process's pid (0 when there is none), read live."""
        pid: int = self.get("MainPID")
        return pid

    @property
    def control_group(self) -> str:
        """The unit's cgroup path, relative to the cgroup root, read live."""
        group: str = self.get("ControlGroup")
        return group

    @property
    def active_state(self) -> str:
        """ActiveState, read live (``inactive`` once the unit is gone)."""
        try:
            state: str = self.get("ActiveState", "Unit")
            return state
        except SystemdError as e:
            if e.name.endswith(("UnknownObject", "UnknownMethod", "NoSuchUnit")):
                return "inactive"
            raise

    def stop(self, wait: bool = True, *, timeout: float | None = None) -> None:
        """Stop the unit; with ``wait`` return once its stop job has finished (unit inactive or
        gone). Stopping an inactive or already collected unit is harmless."""
        if wait:
            # Before the call: systemd sends JobRemoved only to subscribed clients, and a job
            # that ends before the subscription would never be seen (a new connection's case).
            self.systemd._subscribe()
        try:
            (job,) = self.systemd.conn.call(self.systemd.manager.stop_unit(self.name, "replace"),
                                            step=f"StopUnit({self.name})")
        except SystemdError as e:
            if e.name == NO_SUCH_UNIT:
                return
            raise
        if wait:
            self.systemd.wait_job(job, timeout=timeout)

    def kill(self, signal: int = _signal.SIGTERM, who: str = "all") -> None:
        """Send ``signal`` to the unit's processes (``who``: ``main``, ``control`` or ``all``)."""
        self.systemd.conn.call(self.systemd.manager.kill_unit(self.name, who, int(signal)),
                               step=f"KillUnit({self.name}, {who}, {int(signal)})")

    def reset_failed(self) -> None:
        """Reset the failed state (a unit that is not loaded is ignored)."""
        try:
            self.systemd.conn.call(self.systemd.manager.reset_failed_unit(self.name),
                                   step=f"ResetFailedUnit({self.name})")
        except SystemdError as e:
            if e.name != NO_SUCH_UNIT:
                raise

    def _failure_details(self, seen: dict[str, Any] | None = None) -> dict[str, Any]:
        """Why a start failed: the Service properties systemd announced while the job ran
        (``seen``), completed by a live read if the unit has not been garbage-collected yet."""
        details: dict[str, Any] = {}
        wanted = {"Service": ("Result", "ExecMainCode", "ExecMainStatus", "StatusText"),
                  "Unit": ("ActiveState", "SubState")}
        for iface, props in wanted.items():
            try:
                values = self.get_all(iface)
            except SystemdError:
                continue
            if values.get("LoadState") == "not-found":
                continue
            details.update((p, values[p]) for p in props if p in values)
        details.update((k, v) for k, v in (seen or {}).items() if k in wanted["Service"])
        if not details.get("StatusText"):
            details.pop("StatusText", None)
        code = details.get("ExecMainCode")
        if code:  # CLD_EXITED=1, CLD_KILLED=2, CLD_DUMPED=3
            details["ExecMainCode"] = {1: "exited", 2: "killed", 3: "dumped"}.get(code, code)
        status = details.get("ExecMainStatus")
        if details.get("ExecMainCode") == "exited" and status in EXIT_STATUS_MEANINGS:
            details["because"] = EXIT_STATUS_MEANINGS[status]
        elif details.get("ExecMainCode") in ("killed", "dumped") and status == _signal.SIGSYS:
            details["because"] = ("the unit's seccomp filter (SystemCallFilter=) killed its main "
                                  "process: the filter forbids a call it makes before it runs")
        return details

"""Pure builders for the D-Bus messages concurrentd sends to systemd.

Nothing here does I/O: each function returns a :class:`jeepney.low_level.Message` whose serial is
assigned by the connection at send time, so a built message can be compared byte for byte in a
test without a bus. ``destination`` is ``None`` on a peer-to-peer connection (systemd's private
socket), and the well-known name ``org.freedesktop.systemd1`` on a message bus.
"""

from __future__ import annotations

from typing import Any, Iterable

from jeepney.bus_messages import MatchRule
from jeepney.low_level import HeaderFields, Message, MessageType
from jeepney.wrappers import new_header

SYSTEMD_NAME = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER_IFACE = "org.freedesktop.systemd1.Manager"
UNIT_IFACE_PREFIX = "org.freedesktop.systemd1."
PROPERTIES_IFACE = "org.freedesktop.DBus.Properties"
DBUS_NAME = "org.freedesktop.DBus"
DBUS_PATH = "/org/freedesktop/DBus"


def method_call(path: str, interface: str, member: str, signature: str | None = None,
                body: tuple[Any, ...] = (), destination: str | None = None) -> Message:
    """A method call message; no destination header field when ``destination`` is None (p2p)."""
    header = new_header(MessageType.method_call)
    header.fields[HeaderFields.path] = path
    if destination is not None:
        header.fields[HeaderFields.destination] = destination
    header.fields[HeaderFields.interface] = interface
    header.fields[HeaderFields.member] = member
    if signature:
        header.fields[HeaderFields.signature] = signature
    return Message(header, body)


def unit_object_path(name: str) -> str:
    """The object path systemd gives unit ``name`` (its bus_label_escape())."""
    out = []
    for i, ch in enumerate(name):
        if ("a" <= ch <= "z" or "A" <= ch <= "Z" or (i > 0 and "0" <= ch <= "9")):
            out.append(ch)
        else:
            out.extend(f"_{b:02x}" for b in ch.encode())
    return f"{MANAGER_PATH}/unit/{''.join(out) or '_'}"


# -- the message bus daemon ---------------------------------------------------------------------

def hello() -> Message:
    """org.freedesktop.DBus.Hello: the first call on a message bus."""
    return method_call(DBUS_PATH, DBUS_NAME, "Hello", destination=DBUS_NAME)


def job_removed_rule() -> MatchRule:
    """The match rule for the Manager's JobRemoved signal."""
    return MatchRule(type="signal", sender=SYSTEMD_NAME, interface=MANAGER_IFACE,
                     member="JobRemoved", path=MANAGER_PATH)


def service_changes_rule() -> MatchRule:
    """The match rule for PropertiesChanged of any unit's Service interface (a failed start's
    reason arrives this way: the unit itself may be garbage-collected before it can be read)."""
    rule = MatchRule(type="signal", sender=SYSTEMD_NAME, interface=PROPERTIES_IFACE,
                     member="PropertiesChanged", path_namespace=MANAGER_PATH + "/unit")
    rule.add_arg_condition(0, UNIT_IFACE_PREFIX + "Service")
    return rule


def add_match(rule: MatchRule) -> Message:
    """org.freedesktop.DBus.AddMatch(rule)."""
    return method_call(DBUS_PATH, DBUS_NAME, "AddMatch", "s", (rule.serialise(),),
                       destination=DBUS_NAME)


# -- org.freedesktop.systemd1.Manager ----------------------------------------------------------

class Manager:
    """Message builders for ``org.freedesktop.systemd1.Manager`` (no I/O).

    Args:
        destination: ``org.freedesktop.systemd1`` on a bus, ``None`` peer-to-peer.
    """

    def __init__(self, destination: str | None = SYSTEMD_NAME):
        self.destination = destination

    def _call(self, member: str, signature: str | None = None,
              body: tuple[Any, ...] = ()) -> Message:
        return method_call(MANAGER_PATH, MANAGER_IFACE, member, signature, body, self.destination)

    def subscribe(self) -> Message:
        """Subscribe(): without it systemd sends no JobRemoved/PropertiesChanged at all."""
        return self._call("Subscribe")

    def start_transient_unit(self, name: str, mode: str, properties: Iterable[tuple[str, Any]],
                             aux: Iterable[tuple[str, list[tuple[str, Any]]]] = ()) -> Message:
        """StartTransientUnit(name, mode, a(sv) properties, a(sa(sv)) aux) -> job path."""
        return self._call("StartTransientUnit", "ssa(sv)a(sa(sv))",
                          (name, mode, list(properties), list(aux)))

    def stop_unit(self, name: str, mode: str = "replace") -> Message:
        """StopUnit(name, mode) -> job path."""
        return self._call("StopUnit", "ss", (name, mode))

    def kill_unit(self, name: str, who: str, signal: int) -> Message:
        """KillUnit(name, who, signal)."""
        return self._call("KillUnit", "ssi", (name, who, int(signal)))

    def reset_failed_unit(self, name: str) -> Message:
        """ResetFailedUnit(name)."""
        return self._call("ResetFailedUnit", "s", (name,))

    def get_unit(self, name: str) -> Message:
        """GetUnit(name) -> object path; NoSuchUnit if it is not loaded."""
        return self._call("GetUnit", "s", (name,))


# -- org.freedesktop.DBus.Properties on a unit -------------------------------------------------

def get_property(path: str, interface: str, prop: str, destination: str | None = SYSTEMD_NAME) -> Message:
    """Properties.Get(interface, prop) on object ``path``."""
    return method_call(path, PROPERTIES_IFACE, "Get", "ss", (interface, prop), destination)


def get_all_properties(path: str, interface: str, destination: str | None = SYSTEMD_NAME) -> Message:
    """Properties.GetAll(interface) on object ``path``."""
    return method_call(path, PROPERTIES_IFACE, "GetAll", "s", (interface,), destination)


def unit_interface(short: str) -> str:
    """``"Service"`` → ``org.freedesktop.systemd1.Service``; full names pass through."""
    return short if "." in short else UNIT_IFACE_PREFIX + short

"""What a unit's properties do that concurrentd must know itself: which of the owner's paths the
unit no longer reaches, whether it has a root or users of its own, a pid namespace.

Read from the values the table converts the properties to, that is as systemd reads them: quoted
paths kept whole, the '-' and '+' prefixes of a path, booleans however spelled, the …Ex forms
(PrivateTmp=disconnected is PrivateTmpEx=). Which property does what is the rows' last column
(:data:`table.EFFECTS`), so concurrentd and systemd cannot disagree on a value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

from .._syntax import parse_boolean
from ._kind import Effect
from .table import EFFECTS, convert_property

#: what ProtectHome=yes (or tmpfs) hides
HOME_PATHS = ("/home", "/root", "/run/user")
#: what PrivateTmp= hides: the unit gets its own
TMP_PATHS = ("/tmp", "/var/tmp")


@dataclass(frozen=True)
class Effects:
    """What a unit's properties do that concurrentd must know.

    Attributes:
        root: it has a root of its own (RootDirectory=, RootImage=): every path is elsewhere.
        other_user: it runs as another user or in a user namespace (User=, Group=, DynamicUser=,
            PrivateUsers=): paths that not every user may read are out of its reach.
        hidden: the paths it does not see (ProtectHome=, PrivateTmp=), in the properties' order.
        named: the paths it hides one by one (InaccessiblePaths=, TemporaryFileSystem=),
            simplified as systemd simplifies them.
        private_pids: it has a pid namespace of its own (PrivatePIDs=).
    """

    root: bool = False
    other_user: bool = False
    hidden: tuple[str, ...] = ()
    named: tuple[str, ...] = ()
    private_pids: bool = False


def effects_of(properties: Mapping[str, Any]) -> Effects:
    """The effects of ``properties`` (as the user gives them). A value the table refuses has
    none: starting the unit converts it again and fails with the table's message."""
    root = other_user = private_pids = False
    hidden: list[str] = []
    named: list[str] = []
    for name, value in properties.items():
        effect = EFFECTS.get(name) if isinstance(name, str) else None
        if effect is None:
            continue
        try:
            converted = convert_property(name, value)
        except ValueError:
            continue
        for _, (_, dbus_value) in converted:
            if effect is Effect.HIDES_NAMED:
                named += _named_paths(dbus_value)
            elif effect is Effect.ROOT:   # a path: set when not empty
                root = root or bool(dbus_value)
            elif effect is Effect.RUNS_AS:   # a name: set when not empty
                other_user = other_user or bool(dbus_value)
            elif not _mode_on(dbus_value):
                continue
            elif effect is Effect.OWN_USERS:
                other_user = True
            elif effect is Effect.PRIVATE_PIDS:
                private_pids = True
            elif effect is Effect.PRIVATE_TMP:
                hidden += TMP_PATHS
            elif effect is Effect.PROTECT_HOME and dbus_value != "read-only":
                hidden += HOME_PATHS
    return Effects(root=root, other_user=other_user, hidden=tuple(hidden), named=tuple(named),
                   private_pids=private_pids)


def _mode_on(value: object) -> bool:
    """A mode's converted value: a boolean, or the word of an …Ex form (or of ProtectHome=,
    PrivatePIDs=), which is on unless empty or a false boolean."""
    if isinstance(value, bool):
        return value
    if not isinstance(value, str) or not value:
        return False
    try:
        return parse_boolean(value)
    except ValueError:
        return True   # a word: "disconnected", "identity", "tmpfs"…


def _named_paths(value: object) -> list[str]:
    """The paths of InaccessiblePaths= (``as``: each may start with '-', ignore if missing, then
    '+', inside the root) or TemporaryFileSystem= (``a(ss)``: path and options), simplified."""
    out = []
    for entry in value if isinstance(value, list) else []:
        if isinstance(entry, tuple):
            path = entry[0]
        else:
            path = entry.removeprefix("-").removeprefix("+")
        if path.startswith("/"):   # systemd refuses any other
            out.append(simplified_path(path))
    return out


def simplified_path(path: str) -> str:
    """An absolute path as systemd's path_simplify() leaves it: no '//', no '.' component, no
    trailing '/' (and, as os.path.normpath, no 'x/..')."""
    return "/" + os.path.normpath(path).lstrip("/")

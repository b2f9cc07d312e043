"""The property table: every property systemd accepts on a transient service through
``systemd-run -p``, section by section, to its kind; and the conversion of ``{name: value}``."""

from __future__ import annotations

import difflib
import struct
from typing import Any, Iterable

from . import execution, kill, resource_control, service, unit
from ._kind import Converted, Effect, Kind, Row, as_text, short_repr
from .dbus_values import check_dbus_value

#: The systemd version that added a property (or, for the …Ex forms, those words) after 252, the
#: version the rest of the table is checked against.
SINCE = {
    "MemoryZSwapMax": 253, "RestartMode": 254, "RestartSteps": 254, "RestartMaxDelaySec": 254,
    "RootEphemeral": 254, "DelegateSubgroup": 254, "MemoryPressureWatch": 254,
    "MemoryPressureThresholdSec": 254, "ImportCredential": 254, "SetLoginEnvironment": 255,
    "CoredumpReceive": 255, "SurviveFinalKillSignal": 255, "PrivateUsersEx": 256,
    "MemoryZSwapWriteback": 256, "PrivatePIDs": 257, "ProtectControlGroupsEx": 257,
    "PrivateTmpEx": 257, "BindLogSockets": 257, "ManagedOOMMemoryPressureDurationSec": 257,
    "ProtectHostnameEx": 258, "PrivateBPF": 258, "UserNamespacePath": 259, "MemoryTHP": 260,
    "BindNetworkInterface": 260,
    "CPUPressureWatch": 261, "CPUPressureThresholdSec": 261, "IOPressureWatch": 261,
    "IOPressureThresholdSec": 261,
}


def _build_table(rows: Iterable[Row]) -> dict[str, Kind]:
    table: dict[str, Kind] = {}
    for row in rows:
        for name in row.names.split():
            if name in table:
                raise AssertionError(f"{name} appears twice in the property table")
            table[name] = row.kind
    return table


#: every section's rows, in the order of systemd's manual pages
ROWS: list[Row] = [*unit.ROWS, *resource_control.ROWS, *execution.ROWS, *kill.ROWS, *service.ROWS]
#: property name (as in unit files / systemd-run -p) → its kind.
TABLE: dict[str, Kind] = _build_table(ROWS)
#: property name → what it does that concurrentd must know (the rows' last column)
EFFECTS: dict[str, Effect] = {name: row.effect for row in ROWS if row.effect is not None
                              for name in row.names.split()}


def convert_property(name: str, value: Any) -> Converted:
    """Convert one property; see :func:`convert_properties`."""
    if not isinstance(name, str):
        raise TypeError(f"property names must be strings (not {type(name).__name__}: {name!r:.60})")
    kind = TABLE.get(name)
    if kind is None:
        close = difflib.get_close_matches(name, TABLE, n=3, cutoff=0.6)
        if not close:
            close = [k for k in TABLE if k.lower() == name.lower()]
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise ValueError(f"unknown unit property {name!r}{hint}")
    try:
        if value is None:
            converted = kind.text(name, "")
        elif isinstance(value, str):
            converted = kind.text(name, value)
        elif kind.py is not None:
            converted = kind.py(name, value)
        else:
            converted = kind.text(name, as_text(value))
        for _, (signature, dbus_value) in converted:
            check_dbus_value(signature, dbus_value)
        return converted
    # ValueError includes Bad and the parsers' own. The others are what a value of the wrong
    # shape makes a converter meet (OverflowError for inf, RecursionError for deep nesting…):
    # a bad value all the same, said so before anything is sent.
    except (ValueError, TypeError, AttributeError, OverflowError, RecursionError,
            UnicodeError, LookupError, struct.error) as e:
        raise ValueError(f"invalid value {short_repr(value)} for property {name}: {e}; "
                         f"expected {kind.form}") from None


def convert_properties(properties: dict[str, Any]) -> Converted:
    """Convert ``{name: value}`` to the ``a(sv)`` list StartTransientUnit takes.

    Values are systemd-run ``-p`` strings (``"20%"``, ``"100M"``, ``"~@mount"``) or Python values
    (``True``, ``1024``, ``0.2`` for CPUQuota, lists, ``pathlib.Path``, ``timedelta``). Pure: no
    I/O, nothing sent.

    Returns:
        ``[(dbus_name, (signature, value)), …]`` — ``CPUQuota`` becomes ``CPUQuotaPerSecUSec``,
        ``…Sec`` time spans become ``…USec`` and so on.

    Raises:
        ValueError: an unknown property (with the closest names) or a bad value (with the
            property, the value and the expected form).
    """
    if not isinstance(properties, dict):
        raise TypeError(f"properties must be a dict, not {type(properties).__name__}")
    out: Converted = []
    for name, value in properties.items():
        out.extend(convert_property(name, value))
    return out

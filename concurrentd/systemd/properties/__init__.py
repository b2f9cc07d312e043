"""Unit properties: systemd-run ``-p`` syntax or Python values → D-Bus ``(name, (signature, value))``.

One declarative table (:data:`TABLE`) maps every property systemd 252 accepts on a transient
service through ``systemd-run -p`` to one *kind*; each kind is a single converter that knows the
D-Bus signature, the D-Bus name (``…Sec`` → ``…USec``, ``CPUQuota`` → ``CPUQuotaPerSecUSec`` …)
and both input forms. Mirrors src/shared/bus-unit-util.c. The table's rows live with their
section of systemd's manual: unit.py ([Unit]), resource_control.py, execution.py (with
sandboxing.py's kinds), kill.py and service.py; scalars.py holds the kinds they share.

Python values: ``bool`` for booleans; ``int`` for counts and bytes; ``float``/``int`` seconds or
``datetime.timedelta`` for time spans; ``0.2`` for ``CPUQuota`` (a fifth of one CPU); lists (or
tuples) for lists; ``pathlib.Path`` wherever a path goes; ``None`` for "reset" (the empty string).
"""

from __future__ import annotations

from typing import Any

from ._kind import Converted, Kind
from .dbus_values import MAX_VALUE_BYTES, check_dbus_value
from .sandboxing import CLONE_NEWTIME, TIME_IN_ALL_SINCE
from .table import SINCE, TABLE, convert_properties, convert_property

__all__ = ["convert_properties", "convert_property", "TABLE", "SINCE", "PropertyValue",
           "Converted", "Kind", "check_dbus_value", "MAX_VALUE_BYTES", "CLONE_NEWTIME",
           "TIME_IN_ALL_SINCE"]

#: one property's value as D-Bus carries it: (signature, value)
PropertyValue = tuple[str, Any]

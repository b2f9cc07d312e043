"""The kill settings (systemd.kill(5)): how the unit's processes are stopped."""

from __future__ import annotations

from ._kind import Row
from .scalars import BOOL, SIGNAL, STRING

ROWS = [
    Row(STRING, "KillMode"),
    Row(BOOL, "SendSIGHUP SendSIGKILL"),
    Row(SIGNAL, "KillSignal RestartKillSignal FinalKillSignal WatchdogSignal"),
]

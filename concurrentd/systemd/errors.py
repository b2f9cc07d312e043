"""Exceptions of the systemd layer.

Every exception that comes from systemd carries the D-Bus error name (``.name``) and systemd's own
text (``.message``), so callers can branch on the name and show the text unchanged.
"""

from __future__ import annotations

__all__ = [
    "SystemdError",
    "SystemdPermissionError",
    "SystemdUnreachable",
    "UnitStartError",
]

#: D-Bus errors that mean "the caller may not do this" (mapped to :class:`SystemdPermissionError`).
PERMISSION_ERRORS = frozenset({
    "org.freedesktop.DBus.Error.AccessDenied",
    "org.freedesktop.DBus.Error.AuthFailed",
    "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired",
})

ROOT_HINT = ("the system manager only accepts transient units from root: run as root "
             "(or use a user manager's bus, once supported)")


class SystemdError(Exception):
    """systemd answered a request with a D-Bus error.

    Attributes:
        name: the D-Bus error name, e.g. ``org.freedesktop.systemd1.NoSuchUnit``.
        message: systemd's human-readable text.
        step: what concurrentd was doing, e.g. ``"StartTransientUnit(x.service)"``.
    """

    def __init__(self, name: str, message: str, step: str = ""):
        self.name = name
        self.message = message
        self.step = step
        where = f"{step}: " if step else ""
        super().__init__(f"{where}{message} [{name}]")

    @classmethod
    def from_reply(cls, name: str, message: str, step: str = "") -> "SystemdError":
        """Build the most specific exception for a D-Bus error reply."""
        if name in PERMISSION_ERRORS:
            return SystemdPermissionError(name, f"{message} ({ROOT_HINT})", step)
        return cls(name, message, step)


class SystemdPermissionError(SystemdError, PermissionError):
    """systemd refused the request because the caller lacks privileges (not root)."""


class SystemdUnreachable(ConnectionError):
    """No systemd could be reached at any candidate address."""


class UnitStartError(SystemdError):
    """A transient unit's start job did not complete with ``done``.

    Attributes:
        unit: the unit name.
        result: the job result from JobRemoved (``failed``, ``dependency``, ``timeout``, …).
        details: what systemd still knew about the unit (Result, ExecMainCode, ExecMainStatus, …).
    """

    def __init__(self, unit: str, result: str, details: dict[str, object] | None = None):
        self.unit = unit
        self.result = result
        self.details = dict(details or {})
        info = ", ".join(f"{k}={v}" for k, v in self.details.items())
        message = f"start job for {unit} finished with result '{result}'" + (f" ({info})" if info else "")
        super().__init__("org.concurrentd.UnitStartFailed", message, f"start {unit}")

"""concurrentd's systemd layer: transient units over D-Bus (jeepney), no systemctl/systemd-run.

Modules: :mod:`.bus` (addresses, connection, blocking I/O), :mod:`.messages` (pure message
builders), :mod:`.properties` (the property table and converters), :mod:`.units` (transient unit
lifecycle), :mod:`.errors`.
"""

from .bus import Address
from .errors import SystemdError, SystemdPermissionError, SystemdUnreachable, UnitStartError
from .properties import convert_properties
from .units import StartingService, Systemd, Unit

__all__ = ["Address", "StartingService", "Systemd", "Unit", "SystemdError", "SystemdPermissionError",
           "SystemdUnreachable", "UnitStartError", "convert_properties"]

"""concurrentd: run Python callables inside systemd transient units.

The public names are those in ``__all__``, documented in README.md. Modules whose names start
with an underscore are implementation.
"""

from ._deaths import WorkerKilled
from ._entry import EnterError
from .executor import PoolUnit, TransientUnitPoolExecutor
from ._results import RemoteBaseException, ResultRefused
from .oneshot import run, sandboxed
from .process import TransientUnitProcess
from .systemd import SystemdError, SystemdUnreachable, UnitStartError

__version__ = "0.1.0"

__all__ = [
    "EnterError",
    "PoolUnit",
    "RemoteBaseException",
    "ResultRefused",
    "SystemdError",
    "SystemdUnreachable",
    "TransientUnitPoolExecutor",
    "TransientUnitProcess",
    "UnitStartError",
    "WorkerKilled",
    "__version__",
    "run",
    "sandboxed",
]

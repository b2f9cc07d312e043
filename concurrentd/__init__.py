"""concurrentd: run Python callables inside systemd transient units.

The public names are those in ``__all__``, documented in README.md. Modules whose names start
with an underscore are implementation. The names are loaded on first use (PEP 562): a worker's
code, the testbed, or the D-Bus layer alone imports only what it uses.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_WHERE = {
    "EnterError": "._entry",
    "PoolUnit": ".executor",
    "RemoteBaseException": "._results",
    "ResultRefused": "._results",
    "SystemdError": ".systemd",
    "SystemdUnreachable": ".systemd",
    "TransientUnitPoolExecutor": ".executor",
    "TransientUnitProcess": ".process",
    "UnitStartError": ".systemd",
    "WorkerKilled": "._deaths",
    "run": ".oneshot",
    "sandboxed": ".oneshot",
}

__all__ = sorted([*_WHERE, "__version__"])


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'concurrentd' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value   # once: later lookups find it directly
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})

"""The names pystemd-style code imports (``from concurrentd.transient import …``)."""

from .executor import TransientUnitPoolExecutor
from .process import TransientUnitProcess

__all__ = ["TransientUnitPoolExecutor", "TransientUnitProcess"]

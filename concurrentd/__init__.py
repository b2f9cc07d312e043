"""concurrentd: run Python callables inside systemd transient units.

The public names are listed in ``__all__``; everything in a module whose name starts with an
underscore, and every subpackage not re-exported here, is implementation.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]

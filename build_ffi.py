"""Builds concurrentd._core, the C core, with cffi (API mode, out of line).

The C lives in csrc/*.c; csrc/cdef.h declares what Python may call. Run by setuptools through
`cffi_modules` in setup.py, or directly (`python build_ffi.py`) to build in place.
"""

import os
import shutil
import sysconfig

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(HERE, "csrc")


def _check_toolchain():
    """Fail early, with the fix, where the extension cannot be compiled."""
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        raise SystemExit(
            f"concurrentd: no C compiler found ({cc!r} is not on PATH). The C core must be "
            "compiled: install one (Debian/Ubuntu: apt-get install gcc) and try again."
        )
    include = sysconfig.get_paths()["include"]
    if not os.path.exists(os.path.join(include, "Python.h")):
        raise SystemExit(
            f"concurrentd: Python's C headers are missing (no Python.h in {include}). Install "
            "them (Debian/Ubuntu: apt-get install python3-dev) and try again."
        )


def _read(name):
    with open(os.path.join(CSRC, name), encoding="utf-8") as f:
        return f.read()


_check_toolchain()

ffibuilder = FFI()
ffibuilder.cdef(_read("cdef.h"))
_sources = sorted(f for f in os.listdir(CSRC) if f.endswith(".c") and not f.startswith("anchor"))
ffibuilder.set_source(
    "concurrentd._core",
    """
    #ifndef _GNU_SOURCE   /* Python.h, included first, defines it already */
    #define _GNU_SOURCE 1
    #endif
    #include <sched.h>
    #include <sys/mount.h>
    #include <sys/prctl.h>
    #include "sys.h"
    #include "enter.h"
    #include "pickle_check.h"
    """,
    sources=[os.path.relpath(os.path.join(CSRC, f), HERE) for f in _sources],
    include_dirs=[os.path.relpath(CSRC, HERE)],
    extra_compile_args=["-std=gnu11", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)

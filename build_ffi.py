"""Builds concurrentd._core, the C core, with cffi (API mode, out of line).

The C lives in csrc/*.c. What Python may call is declared once, in csrc's headers: cffi's cdef
is csrc/cdef_libc.h (the libc calls and constants Python uses directly) followed by those headers,
less the preprocessor lines cffi cannot parse (see header_cdef). Run by setuptools through
`cffi_modules` in setup.py, or directly (`python build_ffi.py`) to build in place.
"""

import os
import re
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


#: The headers whose declarations Python sees, in the order of set_source's includes below.
HEADERS = ("sys.h", "enter.h", "pickle_check.h")

#: `#define NAME <integer>` (not a macro with arguments, whose name a "(" follows at once): a
#: constant cffi reads, and checks against the compiler's value.
_CONSTANT = re.compile(r"#\s*define\s+\w+\s+\S")
#: The lines cffi cannot parse that a header may hold: its include guard and its #includes.
_DROPPED = re.compile(r"#\s*(ifndef|endif|include|define\s+\w+\s*$)")


def header_cdef(name):
    """The declarations of csrc/<name> as cffi's cdef() takes them: the header without its include
    guard and #includes. Integer #defines, enums, structs and prototypes stay as written, and cffi
    checks each value and layout against the compiled C. Any other directive (#if, a macro with
    arguments) is refused here rather than misread: such a header needs a cdef of its own."""
    out = []
    for n, line in enumerate(_read(name).splitlines(), 1):
        directive = line.lstrip()
        if not directive.startswith("#") or _CONSTANT.match(directive):
            out.append(line)
        elif _DROPPED.match(directive):
            out.append("")  # keeps cffi's line numbers the header's
        else:
            raise SystemExit(f"concurrentd: csrc/{name}:{n}: cffi cannot read {line.strip()!r}; "
                             "keep the header to constants, enums, structs and prototypes")
    return "\n".join(out)


_check_toolchain()

ffibuilder = FFI()
ffibuilder.cdef(_read("cdef_libc.h"))
for _header in HEADERS:
    ffibuilder.cdef(header_cdef(_header))
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

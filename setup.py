# The C core is built by cffi from build_ffi.py; everything else is in pyproject.toml.
# build_ext also compiles csrc/anchor.c, the units' main process, into a static executable
# concurrentd/_anchor (static: it must run inside any RootDirectory= with only itself bound in).
# The core uses only Python's stable ABI (cffi builds it with Py_LIMITED_API; csrc/ is plain C),
# so the wheel is tagged abi3 for every CPython from the oldest one supported.
import os
import subprocess

import setuptools
from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
#: the oldest CPython supported (pyproject.toml's requires-python): the wheel's abi3 tag
LIMITED_API = "cp310"

# pyproject.toml's license is an SPDX expression with license-files (PEP 639), which older
# setuptools refuse with a schema error that does not say this.
if int(setuptools.__version__.split(".")[0]) < 77:
    raise SystemExit(
        f"concurrentd: building needs setuptools 77 or newer (this one is "
        f"{setuptools.__version__}). Build with pip, which fetches it (pip install -e . in a "
        "virtual environment), or upgrade it: python -m pip install --upgrade 'setuptools>=77'"
    )


class build_ext_with_anchor(build_ext):
    def run(self):
        super().run()
        inplace = self.inplace or getattr(self, "editable_mode", False)
        out_dir = os.path.join(HERE if inplace else self.build_lib, "concurrentd")
        os.makedirs(out_dir, exist_ok=True)
        cmd = ["cc", "-static", "-Os", "-s", "-Wall", "-Wextra", "-o",
               os.path.join(out_dir, "_anchor"), os.path.join(HERE, "csrc", "anchor.c")]
        try:
            subprocess.run(cmd, check=True)
        except (OSError, subprocess.CalledProcessError) as e:
            raise SystemExit(
                f"concurrentd: could not build the static anchor ({' '.join(cmd)}): {e}. A static "
                "libc is needed (Debian/Ubuntu: apt-get install libc6-dev)."
            ) from e


setup(cffi_modules=["build_ffi.py:ffibuilder"], cmdclass={"build_ext": build_ext_with_anchor},
      options={"bdist_wheel": {"py_limited_api": LIMITED_API}})

# The C core, built by cffi from csrc/ (build_ffi.py): its ffi and lib are typed by cffi at run
# time only, from csrc's headers.
from typing import Any

ffi: Any
lib: Any

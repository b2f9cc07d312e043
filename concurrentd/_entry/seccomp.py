"""Copy another process's seccomp filters, exactly, with PTRACE_SECCOMP_GET_FILTER.

The kernel numbers a process's filters from the OLDEST (index 0) to the newest and answers ENOENT
after the last (kernel/seccomp.c get_nth_filter() counts back from the newest; ptrace(2) says
index 0 is the newest, which is wrong: systemd installs SystemCallFilter= last, and its
~300-instruction program is the one at the highest index). The process is seized (PTRACE_SEIZE,
no signal), stopped (PTRACE_INTERRUPT) for the few microseconds of the copy, and detached; it
then resumes whatever it was blocked in. The whole
sequence runs in C (csrc/enter.c) because a tracee belongs to one thread of the tracer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .._core import ffi, lib

#: Bytes of one BPF instruction (struct sock_filter: u16 code, u8 jt, u8 jf, u32 k).
INSN_SIZE = 8
#: The kernel's per-filter limit is BPF_MAXINSNS = 4096; systemd's filters stay far below.
_CAPACITY = 64 * 4096

#: What failed, by csrc/enter.h's enum cd_ptrace_call.
_REQUESTS = {lib.CD_PTRACE_SEIZE: "PTRACE_SEIZE", lib.CD_PTRACE_INTERRUPT: "PTRACE_INTERRUPT",
             lib.CD_PTRACE_WAIT: "waitpid", lib.CD_PTRACE_GET_FILTER: "PTRACE_SECCOMP_GET_FILTER",
             lib.CD_PTRACE_GET_METADATA: "PTRACE_SECCOMP_GET_METADATA",
             lib.CD_PTRACE_BUFFER: "copy buffer"}


@dataclass(frozen=True)
class SeccompFilter:
    """One classic-BPF seccomp program and the SECCOMP_FILTER_FLAG_* it was loaded with."""

    program: bytes
    flags: int = 0

    @property
    def length(self) -> int:
        return len(self.program) // INSN_SIZE


def get_filters(pid: int) -> tuple[SeccompFilter, ...]:
    """The seccomp filters of process ``pid`` in install order: the oldest first.

    Raises:
        OSError: with the errno of the ptrace request that failed, named in the message.
    """
    buf = ffi.new("char[]", _CAPACITY * INSN_SIZE)
    lens = ffi.new("unsigned int[]", lib.CD_MAX_FILTERS)
    flags = ffi.new("unsigned int[]", lib.CD_MAX_FILTERS)
    failed = ffi.new("int *")
    n = lib.cd_seccomp_get_filters(pid, buf, _CAPACITY, lens, flags, lib.CD_MAX_FILTERS, failed)
    if n < 0:
        err = ffi.errno
        raise OSError(err, f"copying the seccomp filters of pid {pid}: "
                           f"{_REQUESTS[failed[0]]}: {os.strerror(err)}")
    raw = ffi.buffer(buf)
    out, off = [], 0
    for i in range(n):
        size = lens[i] * INSN_SIZE
        out.append(SeccompFilter(bytes(raw[off:off + size]), flags[i]))
        off += size
    return tuple(out)  # the kernel's index 0 is the oldest: already install order

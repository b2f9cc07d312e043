"""Unit properties: systemd-run ``-p`` syntax or Python values → D-Bus ``(name, (signature, value))``.

One declarative table (:data:`TABLE`, built from :data:`_ROWS`) maps every property systemd 252
accepts on a transient service through ``systemd-run -p`` to one *kind*; each kind is a single
converter that knows the D-Bus signature, the D-Bus name (``…Sec`` → ``…USec``, ``CPUQuota`` →
``CPUQuotaPerSecUSec`` …) and both input forms. Mirrors src/shared/bus-unit-util.c.

Python values: ``bool`` for booleans; ``int`` for counts and bytes; ``float``/``int`` seconds or
``datetime.timedelta`` for time spans; ``0.2`` for ``CPUQuota`` (a fifth of one CPU); lists (or
tuples) for lists; ``pathlib.Path`` wherever a path goes; ``None`` for "reset" (the empty string).
"""

from __future__ import annotations

import datetime
import difflib
import errno as _errno
import os
import shlex
import signal as _signal
import struct
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Iterable

from .. import _namespaces
from . import _syntax as sx
from ._syntax import UINT64_MAX

__all__ = ["convert_properties", "convert_property", "TABLE", "SINCE", "PropertyValue"]

PropertyValue = tuple  # (signature, value)
#: properties as D-Bus carries them: [(dbus_name, (signature, value)), …]
Converted = list[tuple[str, tuple[str, Any]]]


class _Bad(ValueError):
    """A reason why a value does not parse; turned into the user-facing ValueError."""


@dataclass(frozen=True)
class Kind:
    """A kind of property value.

    Attributes:
        form: the expected form, for error messages.
        text: converts systemd-run text ``(prop, text) -> Converted``.
        py: converts a non-string Python value ``(prop, value) -> Converted``; default: render it
            as text (:func:`_as_text`) and use ``text``.
    """

    form: str
    text: Callable[[str, str], Converted]
    py: Callable[[str, object], Converted] | None = None


# -- helpers -------------------------------------------------------------------------------------

def _usec_name(prop: str) -> str:
    """``TimeoutStopSec`` → ``TimeoutStopUSec`` (bus_append_parse_sec_rename)."""
    return prop[:-3] + "USec" if prop.endswith("Sec") else prop


def _one(prop: str, sig: str, value) -> Converted:
    return [(prop, (sig, value))]


def _as_text(value) -> str:
    """Render a Python value in systemd-run syntax (bool → yes/no, timedelta → µs …)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime.timedelta):
        return f"{value // datetime.timedelta(microseconds=1)}us"
    if isinstance(value, (int, float)):
        return repr(value) if isinstance(value, float) else str(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return " ".join(shlex.quote(_as_text(v)) for v in value)
    raise _Bad(f"unsupported Python type {type(value).__name__}")


def _words(value, *, unescape: bool = False) -> list[str]:
    """A list of words from text (unquoted/unescaped) or from a Python list (taken literally)."""
    if isinstance(value, str):
        return sx.split_words(value, unescape=unescape)
    if isinstance(value, (list, tuple)):
        return [v if isinstance(v, str) else _as_text(v) for v in value]
    if isinstance(value, os.PathLike):
        return [os.fspath(value)]
    raise _Bad("expected a string or a list of strings")


def _kind(form: str, py: Callable | None = None):
    def wrap(text: Callable) -> Kind:
        return Kind(form, text, py)
    return wrap


def _list_kind(form: str, build: Callable[[str, list[str]], Converted], *, unescape: bool = False) -> Kind:
    """A kind whose value is a word list (text split like systemd, Python lists literal)."""
    return Kind(form, lambda p, s: build(p, _words(s, unescape=unescape)),
                lambda p, v: build(p, _words(v, unescape=unescape)))


# -- scalar kinds -------------------------------------------------------------------------------

STRING = Kind("a string", lambda p, s: _one(p, "s", s))
BOOL = Kind("a boolean (yes/no, true/false, 1/0, on/off, or Python bool)",
            lambda p, s: _one(p, "b", sx.parse_boolean(s)))


def _bool_or_ex(prop: str, s: str) -> Converted:
    """A boolean as ever, or one of the words newer systemds take, which travel as the string
    property ``<name>Ex`` (PrivateUsers=identity → PrivateUsersEx, systemd >= 256;
    ProtectControlGroups=private|strict, PrivateTmp=disconnected, systemd >= 257)."""
    try:
        return _one(prop, "b", sx.parse_boolean(s))
    except ValueError:
        if prop == "ProtectHostname":   # a mode with a hostname ("yes:NAME") is a word too
            return _protect_hostname_ex("ProtectHostnameEx", s)
        if s.partition(":")[0] not in _EX_WORDS[prop]:
            raise _Bad(f"not a boolean nor one of {', '.join(sorted(_EX_WORDS[prop]))}") from None
        return _one(prop + "Ex", "s", s)


def _protect_hostname_ex(prop: str, s: str) -> Converted:
    """ProtectHostname= of systemd >= 258: yes, no or private, and optionally ":NAME", the
    hostname the unit's UTS namespace starts with; on the bus a pair (mode, name)."""
    mode, _, name = s.partition(":")
    try:
        mode = "yes" if sx.parse_boolean(mode) else "no"
    except ValueError:
        if mode != "private":
            raise _Bad(f"{mode!r}: expected yes, no or private, then optionally ':HOSTNAME'") \
                from None
    if mode == "no" and name:
        raise _Bad(f"{s!r}: a hostname needs a UTS namespace of the unit's (yes or private)")
    return _one(prop, "(ss)", (mode, name))


PROTECT_HOSTNAME_EX = Kind("yes, no or private, optionally ':HOSTNAME' (systemd >= 258)",
                           _protect_hostname_ex)


#: The words besides booleans (systemd.exec(5) of 256-258); ProtectHostname's are
#: _protect_hostname_ex's.
_EX_WORDS = {"PrivateUsers": {"self", "identity", "full", "managed"},
             "ProtectControlGroups": {"private", "strict"},
             "PrivateTmp": {"disconnected"}}

BOOL_OR_EX = Kind("a boolean, or a word of the property's …Ex form (PrivateUsers=identity, "
                  "ProtectControlGroups=private: systemd >= 256)", _bool_or_ex)


def _time(prop: str, s: str, *, name: str | None = None, empty_infinity: bool = False) -> Converted:
    if empty_infinity and not s.strip():
        return _one(name or _usec_name(prop), "t", UINT64_MAX)
    return _one(name or _usec_name(prop), "t", sx.parse_time(s))


def _time_py(convert):
    def py(prop, value):
        if isinstance(value, bool):
            raise _Bad("a boolean is not a time span")
        if isinstance(value, (int, float)):
            if value < 0:
                raise _Bad("negative time span")
            value = datetime.timedelta(seconds=value)
        return convert(prop, _as_text(value))
    return py


TIMESPAN = Kind("a time span ('5s', '1min 30s', '500ms', 'infinity'; seconds or timedelta)",
                _time, _time_py(_time))
TIMESPAN_DEF_INF = Kind(TIMESPAN.form + ", empty for infinity",
                        lambda p, s: _time(p, s, empty_infinity=True),
                        _time_py(lambda p, s: _time(p, s, empty_infinity=True)))
NSEC = Kind("a time span, bare numbers in nanoseconds ('50us', '1000'; or timedelta)",
            lambda p, s: _one(p, "t", sx.parse_time(s, Fraction(1, 1000), nsec=True)))


def _both_timeouts(prop: str, s: str) -> Converted:
    t = sx.parse_time(s)
    return [("TimeoutStartUSec", ("t", t)), ("TimeoutStopUSec", ("t", t))]


TIMEOUT_BOTH = Kind(TIMESPAN.form, _both_timeouts, _time_py(_both_timeouts))


def _int_kind(sig: str, lo: int, hi: int, form: str) -> Kind:
    def py(prop, value):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad("expected an int")
        return _one(prop, sig, sx.parse_int(str(value), lo, hi))
    return Kind(form, lambda p, s: _one(p, sig, sx.parse_int(s, lo, hi)), py)


UINT32 = _int_kind("u", 0, 2**32 - 1, "an unsigned integer")
UINT64 = _int_kind("t", 0, UINT64_MAX, "an unsigned integer")
INT32 = _int_kind("i", -2**31, 2**31 - 1, "an integer")
NICE = _int_kind("i", -20, 19, "a nice level -20…19")
IOPRIO = _int_kind("i", 0, 7, "an I/O priority 0…7")
OOM_ADJ = _int_kind("i", -1000, 1000, "an OOM score adjustment -1000…1000")


def _mode(prop, s):
    s = s.strip()
    if not s or any(c not in "01234567" for c in s):
        raise _Bad("not an octal mode")
    value = int(s, 8)
    if value > 0o7777:
        raise _Bad("mode above 07777")
    return _one(prop, "u", value)


def _mode_py(prop, value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad("expected an int (e.g. 0o755) or an octal string")
    return _mode(prop, format(value, "o"))


MODE = Kind("an octal file mode ('0755' or 0o755)", _mode, _mode_py)


def _enum_kind(sig: str, table: dict, form: str, *, numbers: tuple[int, int] | None = None) -> Kind:
    """A name from ``table`` (or, with ``numbers``, a number in that range) → an integer."""
    def text(prop, s):
        key = s.strip()
        if key in table:
            return _one(prop, sig, table[key])
        if numbers is not None:
            return _one(prop, sig, sx.parse_int(key, *numbers))
        raise _Bad(f"unknown name {key!r}")
    return Kind(form + ": " + ", ".join(table), text)


LOG_LEVELS = {n: i for i, n in enumerate("emerg alert crit err warning notice info debug".split())}
LOG_LEVEL = _enum_kind("i", LOG_LEVELS, "a log level", numbers=(0, 7))
LOG_FACILITIES = {n: i for i, n in enumerate(
    "kern user mail daemon auth syslog lpr news uucp cron authpriv ftp".split())}
LOG_FACILITIES.update({f"local{i}": 16 + i for i in range(8)})
LOG_FACILITY = _enum_kind("i", LOG_FACILITIES, "a syslog facility", numbers=(0, 127))
SCHED_POLICY = _enum_kind("i", {"other": 0, "fifo": 1, "rr": 2, "batch": 3, "idle": 5},
                          "a scheduling policy", numbers=(0, 2**31 - 2))
IOPRIO_CLASS = _enum_kind("i", {"none": 0, "realtime": 1, "best-effort": 2, "idle": 3},
                          "an I/O scheduling class", numbers=(0, 3))
NUMA_POLICY = _enum_kind("i", {"default": 0, "preferred": 1, "bind": 2, "interleave": 3, "local": 4},
                         "a NUMA policy")


def _signal_number(s: str) -> int:
    """signal_from_string(): SIGTERM, TERM, 15, RTMIN+3, SIGRTMAX-1."""
    name = s.strip()
    base = name[3:] if name.startswith("SIG") else name
    for rt, anchor in (("RTMIN", _signal.SIGRTMIN), ("RTMAX", _signal.SIGRTMAX)):
        if base == rt:
            return int(anchor)
        if base.startswith(rt + "+") or base.startswith(rt + "-"):
            off = sx.parse_int(base[len(rt) + 1:], 0, 64)
            n = anchor + off if base[len(rt)] == "+" else anchor - off
            if _signal.SIGRTMIN <= n <= _signal.SIGRTMAX:
                return int(n)
            raise _Bad("real-time signal out of range")
    sig = getattr(_signal.Signals, "SIG" + base, None) if base.isupper() and base.isalnum() else None
    if isinstance(sig, _signal.Signals) and not base.startswith(("RTMIN", "RTMAX")):
        return int(sig)
    if name.isdigit() and 1 <= int(name) <= int(_signal.SIGRTMAX):
        return int(name)
    raise _Bad("not a signal name or number")


def _signal_py(prop, value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad("expected a signal number or name")
    return _one(prop, "i", _signal_number(str(int(value))))


SIGNAL = Kind("a signal (SIGTERM, TERM, 15, RTMIN+1)",
              lambda p, s: _one(p, "i", _signal_number(s)), _signal_py)

SECCOMP_ERRNO_KILL = 2**31 - 2  # SECCOMP_ERROR_NUMBER_KILL (INT_MAX - 1), as systemd 252 reads it


def _errno_action(prop, s):
    s = s.strip()
    if s == "kill":
        return _one(prop, "i", SECCOMP_ERRNO_KILL)
    if hasattr(_errno, s) and s.startswith("E"):
        return _one(prop, "i", getattr(_errno, s))
    return _one(prop, "i", sx.parse_int(s, 0, 4095))


ERRNO_ACTION = Kind("an errno name or number (EPERM, 1) or 'kill'", _errno_action)


def _bitset(names: dict, s: str, *, hexnums: bool = False) -> int:
    mask = 0
    for word in s.split():
        if word in names:
            mask |= names[word]
        elif hexnums:
            try:
                mask |= int(word, 16)
            except ValueError:
                raise _Bad(f"unknown name {word!r}") from None
        else:
            raise _Bad(f"unknown name {word!r}")
    return mask


SECURE_BITS = {"noroot": 1 << 0, "noroot-locked": 1 << 1, "no-setuid-fixup": 1 << 2,
               "no-setuid-fixup-locked": 1 << 3, "keep-caps": 1 << 4, "keep-caps-locked": 1 << 5}
SECUREBITS = _list_kind("secure bits: " + " ".join(SECURE_BITS),
                        lambda p, w: _one(p, "i", _bitset(SECURE_BITS, " ".join(w))))
COREDUMP_BITS = {n: 1 << i for i, n in enumerate(
    "private-anonymous shared-anonymous private-file-backed shared-file-backed elf-headers "
    "private-huge shared-huge private-dax shared-dax".split())}
COREDUMP_BITS.update({"default": 0x33, "all": UINT64_MAX})
COREDUMP = _list_kind("coredump filter names or hex masks",
                      lambda p, w: _one(p, "t", _bitset(COREDUMP_BITS, " ".join(w), hexnums=True)))
MOUNT_PROPAGATION = _enum_kind("t", {"shared": 1 << 20, "slave": 1 << 19, "private": 1 << 18, "": 0},
                               "a mount propagation")


# -- cgroup kinds -------------------------------------------------------------------------------

def _weight_kind(lo: int, hi: int, *, idle: bool = False) -> Kind:
    def text(prop, s):
        s = s.strip()
        if not s:
            return _one(prop, "t", UINT64_MAX)
        if idle and s == "idle":
            return _one(prop, "t", 0)
        return _one(prop, "t", sx.parse_int(s, lo, hi))
    return Kind(f"a weight {lo}…{hi}" + (" or 'idle'" if idle else ""), text)


CPU_WEIGHT = _weight_kind(1, 10000, idle=True)
IO_WEIGHT = _weight_kind(1, 10000)
CPU_SHARES = _weight_kind(2, 262144)
BLKIO_WEIGHT = _weight_kind(10, 1000)

_EMPTY_IS_MIN = {"DefaultMemoryLow", "DefaultMemoryMin", "MemoryLow", "MemoryMin"}


def _limit(prop, s):
    s = s.strip()
    if s == "infinity":
        return _one(prop, "t", UINT64_MAX)
    if not s:
        return _one(prop, "t", 0 if prop in _EMPTY_IS_MIN else UINT64_MAX)
    if sx.is_percentage(s):
        return _one(prop + "Scale", "u", sx.scale_from_permyriad(sx.parse_permyriad(s)))
    if prop == "TasksMax":
        return _one(prop, "t", sx.parse_int(s, 0, UINT64_MAX))
    return _one(prop, "t", sx.parse_size(s, 1024))


def _limit_py(prop, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Bad("expected a non-negative int (bytes/count) or a string such as '100M', '50%'")
    return _one(prop, "t", value)


LIMIT = Kind("bytes ('100M', '1G'), a percentage ('50%'), 'infinity' or an int", _limit, _limit_py)


def _cpu_quota(prop, s):
    if not s.strip():
        return _one("CPUQuotaPerSecUSec", "t", UINT64_MAX)
    p = sx.parse_permyriad(s, bounded=False)
    if p == 0:
        raise _Bad("CPU quota too small")
    return _one("CPUQuotaPerSecUSec", "t", p * 1_000_000 // 10000)


def _cpu_quota_py(prop, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise _Bad("expected a positive number of CPUs (0.2 = 20%) or a percentage string")
    return _cpu_quota(prop, f"{round(value * 10000)}‱")


CPU_QUOTA = Kind("a percentage of one CPU ('20%', '150%') or a number of CPUs (0.2)",
                 _cpu_quota, _cpu_quota_py)


def _oom_limit(prop, s):
    return _one(prop, "u", sx.scale_from_permyriad(sx.parse_permyriad(s)))


OOM_LIMIT = Kind("a percentage ('60%')", _oom_limit)


def _cpu_set(s: str) -> bytes:
    """parse_cpu_set() + cpu_set_to_dbus(): '0-3 5,7' → little-endian bitmask bytes."""
    cpus: set[int] = set()
    for word in s.replace(",", " ").split():
        lo, _, hi = word.partition("-")
        a = sx.parse_int(lo, 0, 8191)
        b = sx.parse_int(hi, 0, 8191) if hi else a
        if b < a:
            raise _Bad(f"range {word!r} is reversed")
        cpus.update(range(a, b + 1))
    if not cpus:
        return b""
    out = bytearray((max(cpus) // 64 + 1) * 8)
    for c in cpus:
        out[c // 8] |= 1 << (c % 8)
    return bytes(out)


CPU_SET = _list_kind("a CPU/node list ('0-3 5', '0,2')",
                     lambda p, w: _one(p, "ay", _cpu_set(" ".join(w))))


def _cpu_affinity(prop, words):
    if words == ["numa"]:
        return _one("CPUAffinityFromNUMA", "b", True)
    return _one(prop, "ay", _cpu_set(" ".join(words)))


CPU_AFFINITY = _list_kind("a CPU list ('0-3 5') or 'numa'", _cpu_affinity)


def _numa_mask(prop, words):
    if words == ["all"]:
        try:
            with open("/sys/devices/system/node/possible") as f:
                words = [f.read().strip()]
        except OSError:
            words = ["0"]
    return _one(prop, "ay", _cpu_set(" ".join(words)))


NUMA_MASK = _list_kind("a NUMA node list ('0-1') or 'all'", _numa_mask)


def _delegate(prop, s):
    try:
        return _one(prop, "b", sx.parse_boolean(s))
    except ValueError:
        return _one("DelegateControllers", "as", sx.split_words(s))


def _delegate_py(prop, value):
    if isinstance(value, bool):
        return _one(prop, "b", value)
    return _one("DelegateControllers", "as", _words(value))


DELEGATE = Kind("a boolean or a list of controllers ('cpu memory')", _delegate, _delegate_py)


def _path_pair(s: str, what: str) -> tuple[str, str]:
    path, sep, rest = s.strip().partition(" ")
    if not sep or not rest.strip():
        raise _Bad(f"expected '<path> <{what}>'")
    return path, rest.strip()


def _device_allow(prop, s):
    if not s.strip():
        return _one(prop, "a(ss)", [])
    path, _, rwm = s.partition(" ")
    return _one(prop, "a(ss)", [(path, rwm)])


DEVICE_ALLOW = Kind("'<device> [r][w][m]' (e.g. '/dev/null rw')", _device_allow)


def _io_limit(prop, s):
    if not s.strip():
        return _one(prop, "a(st)", [])
    path, value = _path_pair(s, "limit")
    return _one(prop, "a(st)", [(path, UINT64_MAX if value == "infinity" else sx.parse_size(value, 1000))])


IO_LIMIT = Kind("'<device> <bytes or IOPS>' (e.g. '/dev/sda 10M'; base 1000) or 'infinity'", _io_limit)


def _io_device_weight(prop, s):
    if not s.strip():
        return _one(prop, "a(st)", [])
    path, value = _path_pair(s, "weight")
    return _one(prop, "a(st)", [(path, sx.parse_int(value, 0, UINT64_MAX))])


IO_DEVICE_WEIGHT = Kind("'<device> <weight>'", _io_device_weight)


def _io_latency(prop, s):
    if not s.strip():
        return _one("IODeviceLatencyTargetUSec", "a(st)", [])
    path, value = _path_pair(s, "time span")
    return _one("IODeviceLatencyTargetUSec", "a(st)", [(path, sx.parse_time(value))])


IO_LATENCY = Kind("'<device> <time span>'", _io_latency)

AF_INET, AF_INET6 = 2, 10
_IP_SHORTCUTS = {
    "any": [(AF_INET, "0.0.0.0", 0), (AF_INET6, "::", 0)],
    "localhost": [(AF_INET, "127.0.0.0", 8), (AF_INET6, "::1", 128)],
    "link-local": [(AF_INET, "169.254.0.0", 16), (AF_INET6, "fe80::", 64)],
    "multicast": [(AF_INET, "224.0.0.0", 4), (AF_INET6, "ff00::", 8)],
}


def _ip_addresses(prop, words):
    import ipaddress
    entries = []
    if len(words) == 1 and words[0] in _IP_SHORTCUTS:
        for family, addr, plen in _IP_SHORTCUTS[words[0]]:
            entries.append((family, ipaddress.ip_address(addr).packed, plen))
        return _one(prop, "a(iayu)", entries)
    for w in words:
        try:
            net = ipaddress.ip_network(w, strict=False)
            addr = ipaddress.ip_address(w.split("/")[0])
        except ValueError:
            raise _Bad(f"{w!r} is not an IP address or prefix") from None
        family = AF_INET if addr.version == 4 else AF_INET6
        entries.append((family, addr.packed, net.prefixlen))
    return _one(prop, "a(iayu)", entries)


IP_ADDRESSES = _list_kind("IP prefixes ('10.0.0.0/8 ::1') or any/localhost/link-local/multicast",
                          _ip_addresses)
SINGLE_PATH_LIST = Kind("a path (empty to reset)",
                        lambda p, s: _one(p, "as", [s] if s else []))


def _bpf_program(prop, s):
    if not s:
        return _one(prop, "a(ss)", [])
    kind, sep, path = s.partition(":")
    if not sep:
        raise _Bad("expected '<type>:<path>'")
    return _one(prop, "a(ss)", [(kind, path)])


BPF_PROGRAM = Kind("'<type>:<path>' (e.g. 'egress:/sys/fs/bpf/prog')", _bpf_program)


def _socket_bind(prop, s):
    s = s.strip()
    if not s:
        return _one(prop, "a(iiqq)", [])
    parts = s.split(":")
    family, proto = 0, 0
    if len(parts) > 1 and parts[0] in ("ipv4", "ipv6"):
        family = AF_INET if parts.pop(0) == "ipv4" else AF_INET6
    if len(parts) > 1 and parts[0] in ("tcp", "udp"):
        proto = 6 if parts.pop(0) == "tcp" else 17
    if len(parts) != 1:
        raise _Bad("expected '[ipv4|ipv6:][tcp|udp:]<port>[-<port>]' or 'any'")
    port = parts[0]
    if port == "any":
        return _one(prop, "a(iiqq)", [(family, proto, 0, 0)])
    lo, _, hi = port.partition("-")
    a = sx.parse_int(lo, 1 if not hi else 0, 65535)
    b = sx.parse_int(hi, a, 65535) if hi else a
    return _one(prop, "a(iiqq)", [(family, proto, b - a + 1, a)])


SOCKET_BIND = Kind("'[ipv4|ipv6:][tcp|udp:]<port>[-<port>]' or 'any'", _socket_bind)


# -- execution kinds ----------------------------------------------------------------------------

STRV = _list_kind("a space-separated list (quotes allowed) or a Python list",
                  lambda p, w: _one(p, "as", w))
STRV_ESCAPED = _list_kind("a space-separated list ('A=1 B=2'; quotes and C escapes) or a Python list",
                          lambda p, w: _one(p, "as", w), unescape=True)


def _env_file(prop, s):
    if not s:
        return _one("EnvironmentFiles", "a(sb)", [])
    return _one("EnvironmentFiles", "a(sb)", [(s[1:], True) if s.startswith("-") else (s, False)])


ENV_FILE = Kind("a path, '-' prefixed to ignore a missing file", _env_file)


def _set_credential(prop, s):
    if not s:
        return _one(prop, "a(say)", [])
    ident, sep, data = s.partition(":")
    if not sep:
        raise _Bad("missing ':' (expected '<id>:<data>')")
    if prop == "SetCredentialEncrypted":
        import base64
        try:
            blob = base64.b64decode(data, validate=False)
        except ValueError:
            raise _Bad("not base64") from None
    else:
        blob = sx.cunescape(data).encode()
    return _one(prop, "a(say)", [(ident, blob)])


SET_CREDENTIAL = Kind("'<id>:<data>'", _set_credential)


def _load_credential(prop, s):
    if not s:
        return _one(prop, "a(ss)", [])
    ident, _, path = s.partition(":")
    if not ident:
        raise _Bad("missing credential id")
    return _one(prop, "a(ss)", [(ident, path or ident)])


LOAD_CREDENTIAL = Kind("'<id>[:<path>]'", _load_credential)
LOG_EXTRA_FIELDS = Kind("'FIELD=value'", lambda p, s: _one(p, "aay", [s.encode()]))


def _stdio(prop, s):
    for prefix, suffix in (("fd:", "FileDescriptorName"), ("file:", "File"),
                           ("append:", "FileToAppend"), ("truncate:", "FileToTruncate")):
        if s.startswith(prefix):
            return _one(prop + suffix, "s", s[len(prefix):])
    return _one(prop, "s", s)


STDIO = Kind("null, inherit, journal, tty, socket, file:<path>, append:<path>, truncate:<path>, fd:<name>",
             _stdio)
STDIN_TEXT = Kind("text (C escapes allowed); a newline is appended",
                  lambda p, s: _one("StandardInputData", "ay", (sx.cunescape(s) + "\n").encode()))


def _stdin_data(prop, s):
    import base64
    import binascii
    try:
        return _one(prop, "ay", base64.b64decode("".join(s.split()), validate=True))
    except (binascii.Error, ValueError):
        raise _Bad("not base64") from None


STDIN_DATA = Kind("base64 data", _stdin_data,
                  lambda p, v: _one(p, "ay", bytes(v)) if isinstance(v, (bytes, bytearray))
                  else _stdin_data(p, _as_text(v)))

RLIMIT_SIZE = {"LimitFSIZE", "LimitDATA", "LimitSTACK", "LimitCORE", "LimitRSS", "LimitMEMLOCK",
               "LimitAS", "LimitMSGQUEUE"}


def _rlimit_one(prop: str, s: str) -> int:
    s = s.strip()
    if s == "infinity":
        return UINT64_MAX
    if prop in RLIMIT_SIZE:
        return sx.parse_size(s, 1024)
    if prop == "LimitCPU":
        t = sx.parse_time(s)
        return UINT64_MAX if t == UINT64_MAX else -(-t // 1_000_000)
    if prop == "LimitRTTIME":
        return sx.parse_time(s, 1)
    if prop == "LimitNICE":
        if s[:1] in "+-":
            return 20 - sx.parse_int(s, -20, 19)
        return sx.parse_int(s, 0, 40)
    return sx.parse_int(s, 0, UINT64_MAX)


def _rlimit(prop, s):
    soft, sep, hard = s.partition(":")
    soft_v = _rlimit_one(prop, soft)
    hard_v = _rlimit_one(prop, hard) if sep else soft_v
    if soft_v > hard_v:
        raise _Bad("soft limit above hard limit")
    return [(prop, ("t", hard_v)), (prop + "Soft", ("t", soft_v))]


def _rlimit_py(prop, value):
    if isinstance(value, tuple) and len(value) == 2:
        return _rlimit(prop, f"{_as_text(value[0])}:{_as_text(value[1])}")
    if isinstance(value, bool) or not isinstance(value, (int, datetime.timedelta)):
        raise _Bad("expected an int, a (soft, hard) tuple or a string")
    return _rlimit(prop, _as_text(value))


RLIMIT = Kind("a limit or 'soft:hard' ('1024', '1024:4096', 'infinity'; sizes/times where apt)",
              _rlimit, _rlimit_py)


def _bool_string(prop, s):
    return _one(prop, "(bs)", (True, s[1:]) if s.startswith("-") else (False, s))


BOOL_STRING = Kind("a profile/label, '-' prefixed to ignore failure", _bool_string)

CAPABILITIES = {n: i for i, n in enumerate((
    "chown dac_override dac_read_search fowner fsetid kill setgid setuid setpcap linux_immutable "
    "net_bind_service net_broadcast net_admin net_raw ipc_lock ipc_owner sys_module sys_rawio "
    "sys_chroot sys_ptrace sys_pacct sys_admin sys_boot sys_nice sys_resource sys_time "
    "sys_tty_config mknod lease audit_write audit_control setfcap mac_override mac_admin syslog "
    "wake_alarm block_suspend audit_read perfmon bpf checkpoint_restore").split())}


def _caps(prop, s):
    s = s.strip()
    invert = s.startswith("~")
    mask = 0
    for word in (s[1:] if invert else s).split():
        name = word.lower().removeprefix("cap_")
        if name in CAPABILITIES:
            mask |= 1 << CAPABILITIES[name]
        elif word.isdigit() and int(word) < 64:
            mask |= 1 << int(word)
        else:
            raise _Bad(f"unknown capability {word!r}")
    return _one(prop, "t", (~mask & UINT64_MAX) if invert else mask)


CAPS = _list_kind("capabilities ('CAP_NET_ADMIN CAP_SYS_PTRACE', '~CAP_SYS_ADMIN' to invert)",
                  lambda p, w: _caps(p, " ".join(w)))


def _allow_deny(prop, s):
    s = s.strip()
    allow = not s.startswith("~")
    return _one(prop, "(bas)", (allow, sx.split_words(s if allow else s[1:])))


def _allow_deny_py(prop, value):
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], bool):
        return _one(prop, "(bas)", (value[0], _words(value[1])))
    words = _words(value)
    if words and words[0].startswith("~"):
        return _one(prop, "(bas)", (False, [words[0][1:]] + words[1:]) if words[0] != "~"
                    else (False, words[1:]))
    return _one(prop, "(bas)", (True, words))


ALLOW_DENY = Kind("a list, '~' prefixed for a deny list ('@system-service', '~@mount @swap')",
                  _allow_deny, _allow_deny_py)

#: RestrictNamespaces='s words and their CLONE_NEW* flags
NAMESPACES = {ns.name: ns.flag for ns in _namespaces.NAMESPACES if ns.restrictable}
#: what "no" allows and "~…" subtracts from: every namespace the kernel has, time included.
#: systemd before TIME_IN_ALL_SINCE leaves time out of its own "all": Systemd.begin_service()
#: drops the bit for such a manager, so a unit gets the mask that manager's systemd-run sends.
_NS_ALL = sum(ns.flag for ns in _namespaces.NAMESPACES)
CLONE_NEWTIME = _namespaces.FLAGS["time"]
#: the first systemd counting the time namespace among all (257 does not, 262 does: both
#: checked against systemd-run by tests/test_systemd_differential.py; 258 brought
#: DelegateNamespaces= and its table of every namespace)
TIME_IN_ALL_SINCE = 258


def _restrict_ns(prop, s):
    try:
        return _one(prop, "t", 0 if sx.parse_boolean(s) else _NS_ALL)
    except ValueError:
        pass
    s = s.strip()
    invert = s.startswith("~")
    flags = _bitset(NAMESPACES, s[1:] if invert else s)
    return _one(prop, "t", (~flags & _NS_ALL) if invert else flags)


RESTRICT_NS = Kind("yes/no or namespace types allowed ('net ipc', '~user' to deny)", _restrict_ns)


def _bind_paths(prop, words):
    entries = []
    for w in words:
        parts = w.split(":")
        if len(parts) > 3 or any(p == "" for p in parts[:2]):
            raise _Bad(f"{w!r}: expected '[-]<source>[:<destination>[:rbind|norbind]]'")
        src = parts[0]
        ignore = src.startswith("-")
        src = src[1:] if ignore else src
        dst = parts[1] if len(parts) > 1 else src
        opt = parts[2] if len(parts) > 2 else ""
        if opt not in ("", "rbind", "norbind"):
            raise _Bad(f"unknown bind option {opt!r} (rbind or norbind)")
        entries.append((src, dst, ignore, 0 if opt == "norbind" else 16384))  # MS_REC
    return _one(prop, "a(ssbt)", entries)


BIND_PATHS = _list_kind("'[-]<source>[:<destination>[:rbind|norbind]]' entries", _bind_paths)


def _tmpfs(prop, words):
    entries = []
    for w in words:
        path, _, opts = w.partition(":")
        entries.append((path, opts))
    return _one(prop, "a(ss)", entries)


TMPFS = _list_kind("'<path>[:<options>]' entries", _tmpfs)


def _image_options(prop, words):
    entries = []
    for w in words:
        part, sep, opts = w.partition(":")
        entries.append((part, opts) if sep and opts else ("root", part))
    return _one(prop, "a(ss)", entries)


IMAGE_OPTIONS = _list_kind("'[<partition>:]<options>' entries", _image_options)


def _mount_images(prop, words):
    entries = []
    for w in words:
        parts = w.split(":")
        if len(parts) < 2 or not parts[1]:
            raise _Bad(f"{w!r}: expected '[-]<image>:<path>[:<partition>:<options>…]'")
        src = parts[0]
        opts = _partition_options(parts[2:])
        entries.append((src.lstrip("-"), parts[1], src.startswith("-"), opts))
    return _one(prop, "a(ssba(ss))", entries)


def _partition_options(rest: list[str]) -> list[tuple[str, str]]:
    if len(rest) == 1:
        return [("root", rest[0])]
    return [(rest[i], rest[i + 1]) for i in range(0, len(rest) - 1, 2)]


def _extension_images(prop, words):
    entries = []
    for w in words:
        parts = w.split(":")
        entries.append((parts[0].lstrip("-"), parts[0].startswith("-"), _partition_options(parts[1:])))
    return _one(prop, "a(sba(ss))", entries)


MOUNT_IMAGES = _list_kind("'[-]<image>:<path>[:<options>]' entries", _mount_images)
EXTENSION_IMAGES = _list_kind("'[-]<image>[:<options>]' entries", _extension_images)


def _directories(prop, words):
    plain, links = [], []
    for w in words:
        src, sep, dst = w.partition(":")
        if not src:
            raise _Bad(f"{w!r}: empty directory name")
        if sep and dst:
            links.append((os.path.normpath(src), os.path.normpath(dst), 0))
        else:
            plain.append(os.path.normpath(src))
    out = [] if (links and not plain) else [(prop, ("as", plain))]
    if links:
        out.append((prop + "Symlink", ("a(sst)", links)))
    return out


DIRECTORIES = _list_kind("directory names relative to the base ('foo bar', 'foo:link')", _directories)


def _root_hash(prop, s):
    if s.startswith("/"):
        return _one("RootHashPath", "s", s)
    try:
        data = bytes.fromhex(s)
    except ValueError:
        raise _Bad("neither an absolute path nor hex") from None
    if len(data) < 16:
        raise _Bad("root hash too short")
    return _one(prop, "ay", data)


def _root_hash_sig(prop, s):
    import base64
    import binascii
    if s.startswith("/"):
        return _one("RootHashSignaturePath", "s", s)
    if not s.startswith("base64:"):
        raise _Bad("neither an absolute path nor 'base64:…'")
    try:
        return _one(prop, "ay", base64.b64decode(s[7:], validate=True))
    except (binascii.Error, ValueError):
        raise _Bad("not base64") from None


ROOT_HASH = Kind("hex or an absolute path", _root_hash)
ROOT_HASH_SIG = Kind("'base64:…' or an absolute path", _root_hash_sig)


# -- service kinds ------------------------------------------------------------------------------

_EXEC_PREFIX_FLAGS = {"-": "ignore-failure", "@": None, ":": "no-env-expand", "+": "privileged",
                      "!": "no-setuid", "!!": "ambient"}


def _exec_command(prop, s):
    s = s.strip()
    flags, explicit = [], False
    while s[:1] in ("-", "@", ":", "+", "!"):
        if s.startswith("!!"):
            flags.append("ambient")
            s = s[2:]
            continue
        c, s = s[0], s[1:]
        if c == "@":
            explicit = True
        else:
            flags.append(_EXEC_PREFIX_FLAGS[c])
    words = sx.split_words(s, unescape=True)
    if not words:
        return _one(prop, "a(sasb)", [])
    path = words.pop(0) if explicit else words[0]
    if not path.startswith("/"):
        raise _Bad("the program must be an absolute path")
    if not (set(flags) - {"ignore-failure"}) and not prop.endswith("Ex"):
        return _one(prop, "a(sasb)", [(path, words, "ignore-failure" in flags)])
    name = prop if prop.endswith("Ex") else prop + "Ex"
    return _one(name, "a(sasas)", [(path, words, flags)])


def _exec_py(prop, value):
    words = _words(value)
    if not words:
        return _one(prop, "a(sasb)", [])
    return _one(prop, "a(sasb)", [(words[0], words, False)])


EXEC_COMMAND = Kind("a command line with an absolute path ('-/bin/true arg'; prefixes - @ : + ! !!)",
                    _exec_command, _exec_py)

EXIT_STATUS_NAMES = {"SUCCESS": 0, "FAILURE": 1, "INVALIDARGUMENT": 2, "NOTIMPLEMENTED": 3,
                     "NOPERMISSION": 4, "NOTINSTALLED": 5, "NOTCONFIGURED": 6, "NOTRUNNING": 7}


def _exit_status(prop, words):
    codes, sigs = [], []
    for w in words:
        if w.isdigit():
            codes.append(sx.parse_int(w, 0, 255))
        elif w in EXIT_STATUS_NAMES:
            codes.append(EXIT_STATUS_NAMES[w])
        else:
            sigs.append(_signal_number(w))
    return _one(prop, "(aiai)", (codes, sigs))


EXIT_STATUS = _list_kind("exit statuses and signals ('0 1 SIGTERM')", _exit_status)


def _action_status(prop, s):
    return _one(prop, "i", -1 if not s.strip() else sx.parse_int(s, 0, 255))


ACTION_EXIT_STATUS = Kind("an exit status 0…255 (empty to reset)", _action_status)


def _condition(prop, s):
    field = "Asserts" if prop.startswith("Assert") else "Conditions"
    if not s:
        return _one(field, "a(sbbs)", [])
    trigger = s.startswith("|")
    s = s[1:] if trigger else s
    negate = s.startswith("!")
    return _one(field, "a(sbbs)", [(prop, trigger, negate, s[1:] if negate else s)])


CONDITION = Kind("a condition argument ('|' trigger and '!' negate prefixes)", _condition)


# -- the table ----------------------------------------------------------------------------------

_CONDITIONS = ("Architecture Firmware Virtualization Host KernelCommandLine KernelVersion Credential "
               "Security Capability ACPower NeedsUpdate FirstBoot PathExists PathExistsGlob "
               "PathIsDirectory PathIsSymbolicLink PathIsMountPoint PathIsReadWrite PathIsEncrypted "
               "DirectoryNotEmpty FileNotEmpty FileIsExecutable User Group ControlGroupController CPUs "
               "Memory Environment CPUFeature OSRelease MemoryPressure CPUPressure IOPressure").split()

_ROWS: list[tuple[Kind, str]] = [
    # [Unit] section
    (STRING, "Description SourcePath OnFailureJobMode JobTimeoutAction JobTimeoutRebootArgument "
             "StartLimitAction FailureAction SuccessAction RebootArgument CollectMode"),
    (BOOL, "StopWhenUnneeded RefuseManualStart RefuseManualStop AllowIsolate IgnoreOnIsolate "
           "DefaultDependencies"),
    (TIMESPAN, "JobTimeoutSec JobRunningTimeoutSec StartLimitIntervalSec"),
    (UINT32, "StartLimitBurst"),
    (ACTION_EXIT_STATUS, "SuccessActionExitStatus FailureActionExitStatus"),
    (STRV, "Documentation RequiresMountsFor Requires Requisite Wants BindsTo PartOf Upholds Conflicts "
           "Before After OnSuccess OnFailure Triggers PropagatesReloadTo ReloadPropagatedFrom "
           "PropagatesStopTo StopPropagatedFrom JoinsNamespaceOf"),
    (CONDITION, " ".join("Condition" + c for c in _CONDITIONS) + " "
                + " ".join("Assert" + c for c in _CONDITIONS)),
    # resource control (cgroups)
    (STRING, "DevicePolicy Slice ManagedOOMSwap ManagedOOMMemoryPressure ManagedOOMPreference"),
    (OOM_LIMIT, "ManagedOOMMemoryPressureLimit"),
    (BOOL, "CPUAccounting MemoryAccounting IOAccounting BlockIOAccounting TasksAccounting IPAccounting"),
    (CPU_WEIGHT, "CPUWeight StartupCPUWeight"),
    (IO_WEIGHT, "IOWeight StartupIOWeight"),
    (CPU_SHARES, "CPUShares StartupCPUShares"),
    (CPU_SET, "AllowedCPUs StartupAllowedCPUs AllowedMemoryNodes StartupAllowedMemoryNodes"),
    (BLKIO_WEIGHT, "BlockIOWeight StartupBlockIOWeight"),
    (STRV, "DisableControllers"),
    (DELEGATE, "Delegate"),
    (LIMIT, "MemoryMin DefaultMemoryLow DefaultMemoryMin MemoryLow MemoryHigh MemoryMax MemorySwapMax "
            "MemoryLimit TasksMax"),
    (CPU_QUOTA, "CPUQuota"),
    (TIMESPAN_DEF_INF, "CPUQuotaPeriodSec"),
    (DEVICE_ALLOW, "DeviceAllow"),
    (IO_LIMIT, "IOReadBandwidthMax IOWriteBandwidthMax IOReadIOPSMax IOWriteIOPSMax "
               "BlockIOReadBandwidth BlockIOWriteBandwidth"),
    (IO_DEVICE_WEIGHT, "IODeviceWeight BlockIODeviceWeight"),
    (IO_LATENCY, "IODeviceLatencyTargetSec"),
    (IP_ADDRESSES, "IPAddressAllow IPAddressDeny"),
    (SINGLE_PATH_LIST, "IPIngressFilterPath IPEgressFilterPath"),
    (BPF_PROGRAM, "BPFProgram"),
    (SOCKET_BIND, "SocketBindAllow SocketBindDeny"),
    # execution environment and sandboxing
    (STRING, "User Group UtmpIdentifier UtmpMode PAMName TTYPath WorkingDirectory RootDirectory "
             "SyslogIdentifier ProtectSystem ProtectHome SELinuxContext RootImage RootVerity "
             "RuntimeDirectoryPreserve Personality KeyringMode ProtectProc ProcSubset "
             "NetworkNamespacePath IPCNamespacePath LogNamespace"),
    (BOOL, "IgnoreSIGPIPE TTYVHangup TTYReset TTYVTDisallocate PrivateDevices PrivateNetwork "
           "PrivateMounts PrivateIPC NoNewPrivileges SyslogLevelPrefix "
           "MemoryDenyWriteExecute RestrictRealtime DynamicUser RemoveIPC ProtectKernelTunables "
           "ProtectKernelModules ProtectKernelLogs ProtectClock MountAPIVFS "
           "CPUSchedulingResetOnFork LockPersonality RestrictSUIDSGID"),
    (BOOL_OR_EX, "PrivateTmp PrivateUsers ProtectControlGroups ProtectHostname"),
    # newer than systemd 252 (SINCE says which version): systemd refuses them where it is older
    (BOOL, "MemoryZSwapWriteback BindLogSockets SetLoginEnvironment RootEphemeral "
           "CoredumpReceive SurviveFinalKillSignal"),
    (PROTECT_HOSTNAME_EX, "ProtectHostnameEx"),
    (STRING, "PrivatePIDs PrivateUsersEx ProtectControlGroupsEx PrivateTmpEx "
             "RestartMode "
             "DelegateSubgroup MemoryPressureWatch PrivateBPF UserNamespacePath MemoryTHP "
             "BindNetworkInterface CPUPressureWatch IOPressureWatch"),
    (UINT32, "RestartSteps"),
    (TIMESPAN, "RestartMaxDelaySec MemoryPressureThresholdSec ManagedOOMMemoryPressureDurationSec "
               "CPUPressureThresholdSec IOPressureThresholdSec"),
    (STRV, "ImportCredential"),
    (LIMIT, "MemoryZSwapMax"),
    (STRV, "ReadWriteDirectories ReadOnlyDirectories InaccessibleDirectories ReadWritePaths "
           "ReadOnlyPaths InaccessiblePaths ExecPaths NoExecPaths ExecSearchPath ExtensionDirectories "
           "ConfigurationDirectory SupplementaryGroups SystemCallArchitectures"),
    (LOG_LEVEL, "SyslogLevel LogLevelMax"),
    (LOG_FACILITY, "SyslogFacility"),
    (SECUREBITS, "SecureBits"),
    (SCHED_POLICY, "CPUSchedulingPolicy"),
    (INT32, "CPUSchedulingPriority"),
    (OOM_ADJ, "OOMScoreAdjust"),
    (COREDUMP, "CoredumpFilter"),
    (NICE, "Nice"),
    (ERRNO_ACTION, "SystemCallErrorNumber"),
    (IOPRIO_CLASS, "IOSchedulingClass"),
    (IOPRIO, "IOSchedulingPriority"),
    (MODE, "RuntimeDirectoryMode StateDirectoryMode CacheDirectoryMode LogsDirectoryMode "
           "ConfigurationDirectoryMode UMask"),
    (NSEC, "TimerSlackNSec"),
    (TIMESPAN, "LogRateLimitIntervalSec"),
    (UINT32, "LogRateLimitBurst TTYRows TTYColumns"),
    (MOUNT_PROPAGATION, "MountFlags"),
    (STRV_ESCAPED, "Environment UnsetEnvironment PassEnvironment"),
    (ENV_FILE, "EnvironmentFile"),
    (SET_CREDENTIAL, "SetCredential SetCredentialEncrypted"),
    (LOAD_CREDENTIAL, "LoadCredential LoadCredentialEncrypted"),
    (LOG_EXTRA_FIELDS, "LogExtraFields"),
    (STDIO, "StandardInput StandardOutput StandardError"),
    (STDIN_TEXT, "StandardInputText"),
    (STDIN_DATA, "StandardInputData"),
    (RLIMIT, " ".join("Limit" + r for r in "CPU FSIZE DATA STACK CORE RSS NPROC NOFILE MEMLOCK AS "
                                            "LOCKS SIGPENDING MSGQUEUE NICE RTPRIO RTTIME".split())),
    (BOOL_STRING, "AppArmorProfile SmackProcessLabel"),
    (CAPS, "CapabilityBoundingSet AmbientCapabilities"),
    (CPU_AFFINITY, "CPUAffinity"),
    (NUMA_POLICY, "NUMAPolicy"),
    (NUMA_MASK, "NUMAMask"),
    (ALLOW_DENY, "RestrictAddressFamilies RestrictFileSystems SystemCallFilter SystemCallLog "
                 "RestrictNetworkInterfaces"),
    (RESTRICT_NS, "RestrictNamespaces"),
    (BIND_PATHS, "BindPaths BindReadOnlyPaths"),
    (TMPFS, "TemporaryFileSystem"),
    (ROOT_HASH, "RootHash"),
    (ROOT_HASH_SIG, "RootHashSignature"),
    (IMAGE_OPTIONS, "RootImageOptions"),
    (MOUNT_IMAGES, "MountImages"),
    (EXTENSION_IMAGES, "ExtensionImages"),
    (DIRECTORIES, "StateDirectory RuntimeDirectory CacheDirectory LogsDirectory"),
    # kill settings
    (STRING, "KillMode"),
    (BOOL, "SendSIGHUP SendSIGKILL"),
    (SIGNAL, "KillSignal RestartKillSignal FinalKillSignal WatchdogSignal"),
    # service settings
    (STRING, "PIDFile Type ExitType Restart BusName NotifyAccess USBFunctionDescriptors "
             "USBFunctionStrings OOMPolicy TimeoutStartFailureMode TimeoutStopFailureMode"),
    (BOOL, "PermissionsStartOnly RootDirectoryStartOnly RemainAfterExit GuessMainPID"),
    (TIMESPAN, "RestartSec TimeoutStartSec TimeoutStopSec TimeoutAbortSec RuntimeMaxSec "
               "RuntimeRandomizedExtraSec WatchdogSec"),
    (TIMEOUT_BOTH, "TimeoutSec"),
    (UINT32, "FileDescriptorStoreMax"),
    (EXEC_COMMAND, "ExecCondition ExecStartPre ExecStartPost ExecReload ExecStop ExecStopPost "
                   "ExecConditionEx ExecStartPreEx ExecStartPostEx ExecReloadEx ExecStopEx ExecStopPostEx"),
    (EXIT_STATUS, "RestartPreventExitStatus RestartForceExitStatus SuccessExitStatus"),
]


#: The systemd version that added a property (or, for the …Ex forms, those words) after 252, the
#: version the rest of the table is checked against.
SINCE = {
    "MemoryZSwapMax": 253, "RestartMode": 254, "RestartSteps": 254, "RestartMaxDelaySec": 254,
    "RootEphemeral": 254, "DelegateSubgroup": 254, "MemoryPressureWatch": 254,
    "MemoryPressureThresholdSec": 254, "ImportCredential": 254, "SetLoginEnvironment": 255,
    "CoredumpReceive": 255, "SurviveFinalKillSignal": 255, "PrivateUsersEx": 256,
    "MemoryZSwapWriteback": 256, "PrivatePIDs": 257, "ProtectControlGroupsEx": 257,
    "PrivateTmpEx": 257, "BindLogSockets": 257, "ManagedOOMMemoryPressureDurationSec": 257,
    "ProtectHostnameEx": 258, "PrivateBPF": 258, "UserNamespacePath": 259, "MemoryTHP": 260,
    "BindNetworkInterface": 260,
    "CPUPressureWatch": 261, "CPUPressureThresholdSec": 261, "IOPressureWatch": 261,
    "IOPressureThresholdSec": 261,
}


def _build_table(rows: Iterable[tuple[Kind, str]]) -> dict[str, Kind]:
    table: dict[str, Kind] = {}
    for kind, names in rows:
        for name in names.split():
            if name in table:
                raise AssertionError(f"{name} appears twice in the property table")
            table[name] = kind
    return table


#: property name (as in unit files / systemd-run -p) → its kind.
TABLE: dict[str, Kind] = _build_table(_ROWS)


def convert_property(name: str, value) -> Converted:
    """Convert one property; see :func:`convert_properties`."""
    if not isinstance(name, str):
        raise TypeError(f"property names must be strings (not {type(name).__name__}: {name!r:.60})")
    kind = TABLE.get(name)
    if kind is None:
        close = difflib.get_close_matches(name, TABLE, n=3, cutoff=0.6)
        if not close:
            close = [k for k in TABLE if k.lower() == name.lower()]
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise ValueError(f"unknown unit property {name!r}{hint}")
    try:
        if value is None:
            converted = kind.text(name, "")
        elif isinstance(value, str):
            converted = kind.text(name, value)
        elif kind.py is not None:
            converted = kind.py(name, value)
        else:
            converted = kind.text(name, _as_text(value))
        for _, (signature, dbus_value) in converted:
            check_dbus_value(signature, dbus_value)
        return converted
    # ValueError includes _Bad and the parsers' own. The others are what a value of the wrong
    # shape makes a converter meet (OverflowError for inf, RecursionError for deep nesting…):
    # a bad value all the same, said so before anything is sent.
    except (ValueError, TypeError, AttributeError, OverflowError, RecursionError,
            UnicodeError, LookupError, struct.error) as e:
        raise ValueError(f"invalid value {_short(value)} for property {name}: {e}; "
                         f"expected {kind.form}") from None


def _short(value) -> str:
    try:
        text = repr(value)
    except Exception:   # noqa: BLE001 - a value whose repr fails is still named by its type
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


#: The ranges of D-Bus's integer types.
_INT_RANGES = {"y": (0, 2**8 - 1), "n": (-2**15, 2**15 - 1), "q": (0, 2**16 - 1),
               "i": (-2**31, 2**31 - 1), "u": (0, 2**32 - 1), "x": (-2**63, 2**63 - 1),
               "t": (0, 2**64 - 1), "h": (0, 2**32 - 1)}
#: The most a value may take on the wire: systemd refuses messages over 128 MiB, and the bus
#: daemon ones over 32 MiB, by closing the connection; this leaves room for the rest.
MAX_VALUE_BYTES = 16 << 20


def check_dbus_value(signature: str, value) -> None:
    """Raises ValueError (or TypeError) if ``value`` cannot travel as ``signature``: an int out of
    its type's range, a string with a NUL or not encodable as UTF-8, a value over
    MAX_VALUE_BYTES. What D-Bus would refuse by dropping the connection is refused here."""
    size = _check(signature, value)
    if size > MAX_VALUE_BYTES:
        raise ValueError(f"it takes {size} bytes on the wire, more than D-Bus carries "
                         f"({MAX_VALUE_BYTES} bytes at most here)")


def _check(signature: str, value) -> int:
    """Checks ``value`` against one complete type; returns its approximate size in bytes."""
    head = signature[0]
    if head in _INT_RANGES:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{value!r} is not an integer")
        low, high = _INT_RANGES[head]
        if not low <= value <= high:
            raise ValueError(f"{value} is out of range for D-Bus type {head!r} ({low}..{high})")
        return 8
    if head == "b":
        if not isinstance(value, (bool, int)):
            raise TypeError(f"{value!r} is not a boolean")
        return 4
    if head == "d":
        if not isinstance(value, (int, float)):
            raise TypeError(f"{value!r} is not a number")
        return 8
    if head in "sog":
        if not isinstance(value, str):
            raise TypeError(f"{value!r} is not a string")
        if "\0" in value:
            raise ValueError(f"{_short(value)} holds a NUL character, which D-Bus strings cannot")
        return len(value.encode("utf-8")) + 5   # UnicodeEncodeError for lone surrogates
    if head == "a":
        inner = _one_type(signature[1:])
        if inner.startswith("{"):
            key, val = _split_struct(inner[1:-1])
            return 4 + sum(_check(key, k) + _check(val, v) for k, v in value.items())
        if inner == "y" and isinstance(value, (bytes, bytearray)):
            return 4 + len(value)
        return 4 + sum(_check(inner, item) for item in value)
    if head == "(":
        members = _split_struct(signature[1:_one_type_end(signature, 0) - 1])
        if len(members) != len(value):
            raise ValueError(f"{_short(value)} does not have the {len(members)} fields of "
                             f"{signature}")
        return sum(_check(t, v) for t, v in zip(members, value, strict=True))
    if head == "v":
        sig, inner_value = value
        return len(sig) + 2 + _check(sig, inner_value)
    raise ValueError(f"unknown D-Bus signature {signature!r}")


def _one_type_end(signature: str, i: int) -> int:
    """The index after the complete type starting at ``signature[i]``."""
    c = signature[i]
    if c == "a":
        return _one_type_end(signature, i + 1)
    if c in "({":
        close = ")" if c == "(" else "}"
        j = i + 1
        while signature[j] != close:
            j = _one_type_end(signature, j)
        return j + 1
    return i + 1


def _one_type(signature: str) -> str:
    return signature[:_one_type_end(signature, 0)]


def _split_struct(body: str) -> list[str]:
    types, i = [], 0
    while i < len(body):
        j = _one_type_end(body, i)
        types.append(body[i:j])
        i = j
    return types


def convert_properties(properties: dict) -> list[tuple[str, tuple[str, object]]]:
    """Convert ``{name: value}`` to the ``a(sv)`` list StartTransientUnit takes.

    Values are systemd-run ``-p`` strings (``"20%"``, ``"100M"``, ``"~@mount"``) or Python values
    (``True``, ``1024``, ``0.2`` for CPUQuota, lists, ``pathlib.Path``, ``timedelta``). Pure: no
    I/O, nothing sent.

    Returns:
        ``[(dbus_name, (signature, value)), …]`` — ``CPUQuota`` becomes ``CPUQuotaPerSecUSec``,
        ``…Sec`` time spans become ``…USec`` and so on.

    Raises:
        ValueError: an unknown property (with the closest names) or a bad value (with the
            property, the value and the expected form).
    """
    if not isinstance(properties, dict):
        raise TypeError(f"properties must be a dict, not {type(properties).__name__}")
    out: list = []
    for name, value in properties.items():
        out.extend(convert_property(name, value))
    return out

"""The value kinds every section uses: strings, booleans, word lists, time spans, integers, names
from a table, signals, bit sets and CPU sets (src/shared/bus-unit-util.c's parsers)."""

from __future__ import annotations

import datetime
import signal as _signal
from fractions import Fraction
from typing import Any, Callable, Mapping

from .. import _syntax as sx
from .._syntax import UINT64_MAX
from ._kind import Bad, Converted, Kind, as_text, list_kind, one, usec_name

STRING = Kind("a string", lambda p, s: one(p, "s", s))
BOOL = Kind("a boolean (yes/no, true/false, 1/0, on/off, or Python bool)",
            lambda p, s: one(p, "b", sx.parse_boolean(s)))
STRV = list_kind("a space-separated list (quotes allowed) or a Python list",
                 lambda p, w: one(p, "as", w))
STRV_ESCAPED = list_kind("a space-separated list ('A=1 B=2'; quotes and C escapes) or a Python list",
                         lambda p, w: one(p, "as", w), unescape=True)


# -- time spans ---------------------------------------------------------------------------------

def _time(prop: str, s: str, *, empty_infinity: bool = False) -> Converted:
    if empty_infinity and not s.strip():
        return one(usec_name(prop), "t", UINT64_MAX)
    return one(usec_name(prop), "t", sx.parse_time(s))


def time_py(convert: Callable[[str, str], Converted]) -> Callable[[str, Any], Converted]:
    """The Python reading of a time span kind: seconds (int, float) or a timedelta, as text."""
    def py(prop: str, value: Any) -> Converted:
        if isinstance(value, bool):
            raise Bad("a boolean is not a time span")
        if isinstance(value, (int, float)):
            if value < 0:
                raise Bad("negative time span")
            value = datetime.timedelta(seconds=value)
        return convert(prop, as_text(value))
    return py


def _time_or_infinity(prop: str, s: str) -> Converted:
    return _time(prop, s, empty_infinity=True)


TIMESPAN = Kind("a time span ('5s', '1min 30s', '500ms', 'infinity'; seconds or timedelta)",
                _time, time_py(_time))
TIMESPAN_DEF_INF = Kind(TIMESPAN.form + ", empty for infinity",
                        _time_or_infinity, time_py(_time_or_infinity))
NSEC = Kind("a time span, bare numbers in nanoseconds ('50us', '1000'; or timedelta)",
            lambda p, s: one(p, "t", sx.parse_time(s, Fraction(1, 1000), nsec=True)))


# -- integers, names, signals, bits ---------------------------------------------------------------

def int_kind(sig: str, lo: int, hi: int, form: str) -> Kind:
    """An integer in ``lo``…``hi``, as D-Bus type ``sig``."""
    def py(prop: str, value: Any) -> Converted:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Bad("expected an int")
        return one(prop, sig, sx.parse_int(str(value), lo, hi))
    return Kind(form, lambda p, s: one(p, sig, sx.parse_int(s, lo, hi)), py)


UINT32 = int_kind("u", 0, 2**32 - 1, "an unsigned integer")
UINT64 = int_kind("t", 0, UINT64_MAX, "an unsigned integer")
INT32 = int_kind("i", -2**31, 2**31 - 1, "an integer")


def enum_kind(sig: str, table: Mapping[str, int], form: str, *,
              numbers: tuple[int, int] | None = None) -> Kind:
    """A name from ``table`` (or, with ``numbers``, a number in that range) → an integer."""
    def text(prop: str, s: str) -> Converted:
        key = s.strip()
        if key in table:
            return one(prop, sig, table[key])
        if numbers is not None:
            return one(prop, sig, sx.parse_int(key, *numbers))
        raise Bad(f"unknown name {key!r}")
    return Kind(form + ": " + ", ".join(table), text)


def signal_number(s: str) -> int:
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
            raise Bad("real-time signal out of range")
    sig = getattr(_signal.Signals, "SIG" + base, None) if base.isupper() and base.isalnum() else None
    if isinstance(sig, _signal.Signals) and not base.startswith(("RTMIN", "RTMAX")):
        return int(sig)
    if name.isdigit() and 1 <= int(name) <= int(_signal.SIGRTMAX):
        return int(name)
    raise Bad("not a signal name or number")


def _signal_py(prop: str, value: Any) -> Converted:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Bad("expected a signal number or name")
    return one(prop, "i", signal_number(str(int(value))))


SIGNAL = Kind("a signal (SIGTERM, TERM, 15, RTMIN+1)",
              lambda p, s: one(p, "i", signal_number(s)), _signal_py)


def bitset(names: Mapping[str, int], s: str, *, hexnums: bool = False) -> int:
    """The bits of the names in ``s`` (with ``hexnums``, hexadecimal masks too), or'ed."""
    mask = 0
    for word in s.split():
        if word in names:
            mask |= names[word]
        elif hexnums:
            try:
                mask |= int(word, 16)
            except ValueError:
                raise Bad(f"unknown name {word!r}") from None
        else:
            raise Bad(f"unknown name {word!r}")
    return mask


def cpu_set(s: str) -> bytes:
    """parse_cpu_set() + cpu_set_to_dbus(): '0-3 5,7' → little-endian bitmask bytes."""
    cpus: set[int] = set()
    for word in s.replace(",", " ").split():
        lo, _, hi = word.partition("-")
        a = sx.parse_int(lo, 0, 8191)
        b = sx.parse_int(hi, 0, 8191) if hi else a
        if b < a:
            raise Bad(f"range {word!r} is reversed")
        cpus.update(range(a, b + 1))
    if not cpus:
        return b""
    out = bytearray((max(cpus) // 64 + 1) * 8)
    for c in cpus:
        out[c // 8] |= 1 << (c % 8)
    return bytes(out)

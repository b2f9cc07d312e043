"""systemd's value syntax, re-implemented: booleans, time spans, sizes, percentages, word lists.

Each parser takes a string and returns a Python value or raises ``ValueError`` with a short
reason; the caller (the property table, properties/) adds the property name and the expected form.
"""

from __future__ import annotations

import codecs
import re
from fractions import Fraction
from typing import Iterator

UINT64_MAX = 2**64 - 1
USEC_INFINITY = UINT64_MAX
UINT32_MAX = 2**32 - 1

_TRUE = {"1", "yes", "y", "true", "t", "on"}
_FALSE = {"0", "no", "n", "false", "f", "off"}


def parse_boolean(s: str) -> bool:
    """systemd's parse_boolean(): 1/yes/y/true/t/on, 0/no/n/false/f/off (any case)."""
    low = s.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError("not a boolean")


_USEC = 1
_MSEC = 1000
_SEC = 1000_000
_MIN = 60 * _SEC
_HOUR = 60 * _MIN
_DAY = 24 * _HOUR
_TIME_UNITS_USEC = {  # longest names first matters only for the regexp below
    "seconds": _SEC, "second": _SEC, "sec": _SEC, "s": _SEC,
    "minutes": _MIN, "minute": _MIN, "min": _MIN,
    "months": 2629800 * _SEC, "month": 2629800 * _SEC, "M": 2629800 * _SEC,
    "msec": _MSEC, "ms": _MSEC,
    "m": _MIN,
    "hours": _HOUR, "hour": _HOUR, "hr": _HOUR, "h": _HOUR,
    "days": _DAY, "day": _DAY, "d": _DAY,
    "weeks": 7 * _DAY, "week": 7 * _DAY, "w": 7 * _DAY,
    "years": 31557600 * _SEC, "year": 31557600 * _SEC, "y": 31557600 * _SEC,
    "usec": _USEC, "us": _USEC, "µs": _USEC, "μs": _USEC,
}
_TIME_TERM = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(" + "|".join(
    sorted(map(re.escape, list(_TIME_UNITS_USEC) + ["nsec", "ns"]), key=len, reverse=True)) + r")?")


def _terms(text: str, term: re.Pattern[str], what: str) -> Iterator[re.Match[str]]:
    """The matches of ``term`` that make up the whole of ``text``, in order (whitespace may
    separate them); ValueError("not a <what>") where none matches."""
    pos = 0
    while pos < len(text):
        m = term.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"not a {what}")
        yield m
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1


def parse_time(s: str, default_unit_usec: Fraction | int = _SEC, *, nsec: bool = False) -> int:
    """A time span such as ``5s``, ``1min 30s``, ``0.5`` (default unit), ``infinity``.

    Returns microseconds (nanoseconds if ``nsec``); ``infinity`` gives UINT64_MAX.
    """
    text = s.strip()
    if text == "infinity":
        return UINT64_MAX
    if not text:
        raise ValueError("empty time span")
    total = Fraction(0)
    for m in _terms(text, _TIME_TERM, "time span"):
        number, unit = m.group(1), m.group(2)
        end = m.end()
        if unit is None and end < len(text) and not text[end].isspace():
            raise ValueError(f"unknown time unit in {text[m.start(1):]!r}")
        if unit in ("nsec", "ns"):
            mult = Fraction(1, 1000)
        elif unit is None:
            mult = Fraction(default_unit_usec)
        else:
            mult = Fraction(_TIME_UNITS_USEC[unit])
        total += Fraction(number) * mult
    value = int(total * 1000) if nsec else int(total)
    if value >= UINT64_MAX:
        raise ValueError("time span too large")
    return value


_SIZE_1024 = {"B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50, "E": 1 << 60}
_SIZE_1000 = {"B": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_SIZE_TERM = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([BKMGTPE]?)")


def parse_size(s: str, base: int = 1024) -> int:
    """A byte size such as ``100M``, ``1.5G``, ``4096`` (parse_size(); ``base`` 1024 or 1000)."""
    table = _SIZE_1024 if base == 1024 else _SIZE_1000
    text = s.strip()
    if not text:
        raise ValueError("empty size")
    total = sum((Fraction(m.group(1)) * table[m.group(2) or "B"]
                 for m in _terms(text, _SIZE_TERM, "size")), Fraction(0))
    if total >= 2**64:
        raise ValueError("size too large")
    return int(total)


_PERCENT = re.compile(r"^\s*(\d+)(?:\.(\d))?\s*%\s*$")
_PERMILLE = re.compile(r"^\s*(\d+)(?:\.(\d))?\s*‰\s*$")
_PERMYRIAD = re.compile(r"^\s*(\d+)\s*‱\s*$")


def parse_permyriad(s: str, *, bounded: bool = True) -> int:
    """``20%``, ``12.5%``? (one decimal), ``200‰``, ``2000‱`` → parts per ten thousand."""
    m = _PERCENT.match(s)
    if m:
        value = int(m.group(1)) * 100 + int(m.group(2) or 0) * 10
    elif (m := _PERMILLE.match(s)):
        value = int(m.group(1)) * 10 + int(m.group(2) or 0)
    elif (m := _PERMYRIAD.match(s)):
        value = int(m.group(1))
    else:
        raise ValueError("not a percentage")
    if bounded and value > 10000:
        raise ValueError("percentage above 100%")
    if value > 2**31 - 1:
        raise ValueError("percentage too large")
    return value


def is_percentage(s: str) -> bool:
    """Whether ``s`` is written as a percentage (%, ‰ or ‱)."""
    return s.strip().endswith(("%", "‰", "‱"))


def scale_from_permyriad(p: int) -> int:
    """systemd's UINT32_SCALE_FROM_PERMYRIAD(): 10000 ↦ UINT32_MAX."""
    return min(UINT32_MAX, (p * UINT32_MAX + 5000) // 10000)


def split_words(s: str, *, unescape: bool = False) -> list[str]:
    """Split on whitespace honouring quotes and backslashes (EXTRACT_UNQUOTE); with ``unescape``
    also C escapes such as ``\\n`` (EXTRACT_CUNESCAPE).

    The rules are POSIX shell words' (shlex's, in posix mode): outside quotes a backslash takes
    the next character as it is; in single quotes nothing is special; in double quotes a
    backslash escapes only a double quote or a backslash. In one pass, with no string grown a
    character at a time (shlex's own loop takes quadratic time on a long word: a 1 MB value, a
    minute). With ``unescape``, backslashes are kept for the C-unescape step.
    """
    escape = not unescape
    words: list[str] = []
    token: list[str] = []
    in_word = False
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c.isspace():
            if in_word:
                words.append("".join(token))
                token, in_word = [], False
            i += 1
            continue
        in_word = True
        if c == "'":
            end = s.find("'", i + 1)
            if end < 0:
                raise ValueError("bad quoting (No closing quotation)")
            token.append(s[i + 1:end])
            i = end + 1
        elif c == '"':
            i += 1
            while True:
                j = _next_of(s, '"\\' if escape else '"', i)
                if j < 0:
                    raise ValueError("bad quoting (No closing quotation)")
                token.append(s[i:j])
                if s[j] == '"':
                    i = j + 1
                    break
                if j + 1 >= n:   # a backslash at the very end, inside the quotes
                    raise ValueError("bad quoting (No closing quotation)")
                nxt = s[j + 1]
                token.append(nxt if nxt in '"\\' else "\\" + nxt)
                i = j + 2
        elif c == "\\" and escape:
            if i + 1 >= n:
                raise ValueError("bad quoting (No escaped character)")
            token.append(s[i + 1])
            i += 2
        else:
            j = _next_special(s, i, escape)
            token.append(s[i:j])
            i = j
    if in_word:
        words.append("".join(token))
    if unescape:
        words = [cunescape(w) for w in words]
    return words


_SPECIAL = re.compile(r"""[\s'"\\]""")
_SPECIAL_NO_ESCAPE = re.compile(r"""[\s'"]""")


def _next_special(s: str, i: int, escape: bool) -> int:
    """The index of the next whitespace, quote (or backslash) from ``i``, or len(s)."""
    m = (_SPECIAL if escape else _SPECIAL_NO_ESCAPE).search(s, i)
    return m.start() if m else len(s)


def _next_of(s: str, chars: str, i: int) -> int:
    """The index of the first of ``chars`` in ``s`` from ``i``, or -1."""
    found = [j for j in (s.find(c, i) for c in chars) if j >= 0]
    return min(found) if found else -1


def cunescape(s: str) -> str:
    """Resolve C escapes (``\\n``, ``\\t``, ``\\x41``, ``\\\\`` …) like systemd's cunescape()."""
    if "\\" not in s:
        return s
    try:
        return codecs.decode(s.encode("utf-8", "surrogateescape"), "unicode_escape").encode(
            "latin-1").decode("utf-8")
    except (UnicodeDecodeError, UnicodeEncodeError) as e:
        raise ValueError(f"bad escape ({e})") from None


def parse_int(s: str, lo: int, hi: int) -> int:
    """A decimal integer within [lo, hi] (safe_atoi() and friends; ``0x`` prefix accepted)."""
    text = s.strip()
    try:
        value = int(text, 0) if text.lower().startswith(("0x", "+0x", "-0x")) else int(text, 10)
    except ValueError:
        raise ValueError("not an integer") from None
    if not lo <= value <= hi:
        raise ValueError(f"out of range {lo}…{hi}")
    return value

"""Whether a value can travel as a D-Bus signature: what D-Bus would refuse by dropping the
connection (an int out of range, a NUL in a string, a message too large) is refused before
anything is sent."""

from __future__ import annotations

from typing import Any

from ._kind import short_repr

_INT_RANGES = {"y": (0, 2**8 - 1), "n": (-2**15, 2**15 - 1), "q": (0, 2**16 - 1),
               "i": (-2**31, 2**31 - 1), "u": (0, 2**32 - 1), "x": (-2**63, 2**63 - 1),
               "t": (0, 2**64 - 1), "h": (0, 2**32 - 1)}
#: The most a value may take on the wire: systemd refuses messages over 128 MiB, and the bus
#: daemon ones over 32 MiB, by closing the connection; this leaves room for the rest.
MAX_VALUE_BYTES = 16 << 20


def check_dbus_value(signature: str, value: Any) -> None:
    """Raises ValueError (or TypeError) if ``value`` cannot travel as ``signature``: an int out of
    its type's range, a string with a NUL or not encodable as UTF-8, a value over
    MAX_VALUE_BYTES. What D-Bus would refuse by dropping the connection is refused here."""
    size = _check(signature, value)
    if size > MAX_VALUE_BYTES:
        raise ValueError(f"it takes {size} bytes on the wire, more than D-Bus carries "
                         f"({MAX_VALUE_BYTES} bytes at most here)")


def _check(signature: str, value: Any) -> int:
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
            raise ValueError(f"{short_repr(value)} holds a NUL character, which D-Bus strings cannot")
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
            raise ValueError(f"{short_repr(value)} does not have the {len(members)} fields of "
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
    types: list[str] = []
    i = 0
    while i < len(body):
        j = _one_type_end(body, i)
        types.append(body[i:j])
        i = j
    return types


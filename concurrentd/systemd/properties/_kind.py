"""What every section's converters share: a Kind (one way of reading a value), the Converted
result, and the helpers that read a Python value or a word list the way systemd-run reads text."""

from __future__ import annotations

import datetime
import enum
import os
import shlex
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

from .._syntax import split_words

#: properties as D-Bus carries them: [(dbus_name, (signature, value)), …]
Converted = list[tuple[str, tuple[str, Any]]]


class Bad(ValueError):
    """A reason why a value does not parse; turned into the user-facing ValueError."""


@dataclass(frozen=True)
class Kind:
    """A kind of property value.

    Attributes:
        form: the expected form, for error messages.
        text: converts systemd-run text ``(prop, text) -> Converted``.
        py: converts a non-string Python value ``(prop, value) -> Converted``; default: render it
            as text (:func:`as_text`) and use ``text``.
    """

    form: str
    text: Callable[[str, str], Converted]
    py: Callable[[str, Any], Converted] | None = None


def usec_name(prop: str) -> str:
    """``TimeoutStopSec`` → ``TimeoutStopUSec`` (bus_append_parse_sec_rename)."""
    return prop[:-3] + "USec" if prop.endswith("Sec") else prop


def one(prop: str, sig: str, value: Any) -> Converted:
    """One D-Bus property: ``[(prop, (sig, value))]``."""
    return [(prop, (sig, value))]


def as_text(value: object) -> str:
    """Render a Python value in systemd-run syntax (bool → yes/no, timedelta → µs …)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime.timedelta):
        return f"{value // datetime.timedelta(microseconds=1)}us"
    if isinstance(value, (int, float)):
        return repr(value) if isinstance(value, float) else str(value)
    if isinstance(value, os.PathLike):
        path: str = os.fspath(value)
        return path
    if isinstance(value, (list, tuple, set, frozenset)):
        return " ".join(shlex.quote(as_text(v)) for v in value)
    raise Bad(f"unsupported Python type {type(value).__name__}")


def word_list(value: object, *, unescape: bool = False) -> list[str]:
    """A list of words from text (unquoted/unescaped) or from a Python list (taken literally)."""
    if isinstance(value, str):
        return split_words(value, unescape=unescape)
    if isinstance(value, (list, tuple)):
        return [v if isinstance(v, str) else as_text(v) for v in value]
    if isinstance(value, os.PathLike):
        path: str = os.fspath(value)
        return [path]
    raise Bad("expected a string or a list of strings")


def list_kind(form: str, build: Callable[[str, list[str]], Converted], *,
              unescape: bool = False) -> Kind:
    """A kind whose value is a word list (text split like systemd, Python lists literal)."""
    return Kind(form, lambda p, s: build(p, word_list(s, unescape=unescape)),
                lambda p, v: build(p, word_list(v, unescape=unescape)))


def short_repr(value: object) -> str:
    """``repr(value)``, cut to 80 characters, for error messages."""
    try:
        text = repr(value)
    except Exception:   # noqa: BLE001 - a value whose repr fails is still named by its type
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


class Effect(enum.Enum):
    """What a property does that concurrentd must know itself, a row's last column: the reading
    of its converted value is effects.py's. A name or path is set when it is not empty; a mode
    (a boolean, or a word of its …Ex form) is set unless it is a false boolean."""

    ROOT = "gives the unit a root of its own (a path)"
    RUNS_AS = "runs the unit as the user or group it names (a name)"
    OWN_USERS = "runs the unit as a user of its own or in a user namespace (a mode)"
    PRIVATE_TMP = "gives the unit /tmp and /var/tmp of its own (a mode)"
    PROTECT_HOME = "hides /home, /root and /run/user, unless read-only (a mode)"
    HIDES_NAMED = "hides the paths it names (a path list)"
    PRIVATE_PIDS = "gives the unit a pid namespace of its own (a mode)"


class Row(NamedTuple):
    """One row of the property table: the properties (space-separated names) of one kind, and
    what they do that concurrentd must know, if anything."""

    kind: Kind
    names: str
    effect: Effect | None = None

"""A unit's properties on the command line: ``-p NAME=VALUE`` and properties files.

Values are systemd-run's text, checked as the Python API checks them (the property table of
systemd/properties/, and the properties concurrentd sets itself) before anything is started,
and shown as systemd will receive them (``--dry-run``). Pure: the caller reads the files.

A properties file holds one ``NAME=VALUE`` a line, as ``-p`` takes it; blank lines, comments
(``#``, ``;``) and section headers (``[Service]``) are skipped, so a unit file's settings can be
pasted in. A name is given once per source: systemd would append a list property's second
assignment to its first, and a dict cannot, so a second one is refused with the way to write both
in one (``-p 'SystemCallFilter=~@mount @swap'``). ``-p`` overrides the file.
"""

from __future__ import annotations

import json
from typing import Any, Iterable


class PropertyError(ValueError):
    """A property the command line cannot use; the message says which and how to fix it."""


def parse_assignment(text: str, where: str = "-p") -> tuple[str, str]:
    """``"User=nobody"`` → ``("User", "nobody")``."""
    name, eq, value = text.partition("=")
    name = name.strip()
    if not eq or not name:
        raise PropertyError(f"{where} {text!r}: expected NAME=VALUE, as systemd-run -p takes it "
                            "(e.g. User=nobody)")
    return name, value


def parse_file(text: str, filename: str) -> list[tuple[str, str, str]]:
    """The assignments of a properties file, each as ``(name, value, "FILE:LINE")``."""
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith(("#", ";")) or (line.startswith("[") and line.endswith("]")):
            continue
        where = f"{filename}:{number}"
        name, value = parse_assignment(line, where)
        out.append((name, value.strip(), where))
    return out


def collect(from_file: Iterable[tuple[str, str, str]],
            from_options: Iterable[tuple[str, str, str]]) -> dict[str, str]:
    """The unit's properties: the file's, then the options', which override the file's."""
    properties: dict[str, str] = {}
    for source in (from_file, from_options):
        seen: dict[str, str] = {}
        for name, value, where in source:
            if name in seen:
                raise PropertyError(
                    f"{where}: {name}= is given a second time (first at {seen[name]}): give all "
                    f"its values in one assignment, as systemd's list syntax has them (e.g. "
                    f"-p '{name}=A B'; for SystemCallFilter= and the like, one ~ for all: "
                    f"'~@mount @swap')")
            seen[name] = where
            properties[name] = value
    return properties


def check(properties: dict[str, Any]) -> list[tuple[str, tuple[str, Any]]]:
    """The properties as D-Bus will carry them, ``[(dbus_name, (signature, value)), …]``; a
    property the pool would refuse raises PropertyError with its own message."""
    from ._session import check_owned
    from .systemd.properties import convert_property

    converted = []
    try:
        check_owned(properties)
        for name, value in properties.items():
            converted.extend(convert_property(name, value))
    except (ValueError, TypeError) as e:
        raise PropertyError(str(e)) from None
    return converted


def format_dbus(converted: Iterable[tuple[str, tuple[str, Any]]]) -> str:
    """One line per D-Bus property: its name, its signature, its value in JSON (structs and
    arrays as arrays, bytes as an array of ints), e.g. ``SystemCallFilter (bas) [false,
    ["@mount"]]``."""
    return "".join(f"{name} {signature} {json.dumps(value, default=_bytes_as_list)}\n"
                   for name, (signature, value) in converted)


def _bytes_as_list(value: Any) -> list[int]:
    if isinstance(value, (bytes, bytearray)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not a D-Bus value")

"""Which host directories a box may not show read-write: those its own boot would change.

A box's root is an overlay whose writes die with the box, but the directories it binds from the
host (the working directory, each ``--bind``, the mounts Python lives on) are the host's own. The
box's systemd boots as any does: ``systemd-tmpfiles --create --remove --boot`` applies the host's
tmpfiles.d rules (the box's /etc and /usr are the host's), and a few services write their state
without a rule (BOOT_WRITERS). Shown read-write, a host's /tmp is emptied by ``D /tmp``, its
/var/tmp loses its systemd-private-* directories to ``R! /var/tmp/systemd-private-*``, and a bound
/root gains a .ssh directory from ``d- /root/.ssh``.

A directory conflicts with a rule when the rule's path is that directory, lies inside it, or
contains it and the rule reaches below its path (it empties, cleans by age, or changes modes,
owners or attributes recursively). A directory no rule reaches may be bound, e.g. a home directory
under /home where the only rule is ``Q /home 0755``. The test is static: a rule conflicts even if,
on this host, it would find nothing to change; so it never depends on the state of the host.

The rules are read with ``systemd-tmpfiles --cat-config``: the merged configuration that the box's
systemd-tmpfiles applies, with one difference. The box's /run is empty, so a host file in
/run/tmpfiles.d, which shadows the same name in /usr/lib/tmpfiles.d, is not there in the box: the
shadowed file is read too. Rule paths are matched as patterns, and a specifier the box fills in
at boot (%b, %m, ...) matches any name.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import subprocess
from dataclasses import dataclass

from ._errors import TestbedError

# Services of the box's boot that change files with no tmpfiles rule, seen by listing what a
# fresh box had changed in its root (path, whether they write below it too, who and why).
_SYSUSERS = "the boot service systemd-sysusers (it adds missing system users)"
BOOT_WRITERS = (
    ("/etc/machine-id", False, "the box's systemd (it sets up the machine id)"),
    ("/etc/.pwd.lock", False, _SYSUSERS),
    ("/etc/passwd", False, _SYSUSERS),
    ("/etc/group", False, _SYSUSERS),
    ("/etc/shadow", False, _SYSUSERS),
    ("/etc/gshadow", False, _SYSUSERS),
    ("/var/log/journal", True, "the boot service systemd-journald (it stores the journal there)"),
    ("/var/log/wtmp", False, "the boot service systemd-update-utmp (it records the boot)"),
    ("/var/lib/systemd", True, "the box's systemd (it and its services keep state there)"),
    ("/run/systemd", True, "the box's systemd (it keeps its state and the box's units there)"),
)

# Rule types that change what lies below their path, whatever their age field says: D empties
# the directory (the box passes --remove), R removes it whole, C copies a tree into it, and
# Z, T, A, H change modes and owners, extended attributes, ACLs and file attributes recursively.
_REACH_BELOW = set("DRCZTAH")
# Rule types that change nothing: they only exclude paths from the others.
_EXCLUSIONS = set("xX")

# tmpfiles.d(5) specifiers that name a directory, as the box's systemd-tmpfiles (run as root, in
# system mode) fills them in. Every other specifier (boot and machine id, host name, kernel
# release, user, ...) becomes a pattern matching any one name.
_DIRECTORY_SPECIFIERS = {"C": "/var/cache", "h": "/root", "L": "/var/log", "S": "/var/lib",
                         "t": "/run", "T": "/tmp", "V": "/var/tmp", "%": "%"}

# The configuration directories systemd-tmpfiles reads after /run/tmpfiles.d, in its order.
_AFTER_RUN = ("/usr/local/lib/tmpfiles.d", "/usr/lib/tmpfiles.d", "/lib/tmpfiles.d")

# systemd-tmpfiles --cat-config names each file it prints on a line of its own: "# /path/x.conf".
_HEADER = re.compile(r"^# (/\S+\.conf)$")


@dataclass(frozen=True)
class Rule:
    """A path the box's boot may change, as components that may hold fnmatch patterns."""

    pattern: tuple[str, ...]
    reaches_below: bool   # it also changes what lies under the path
    origin: str           # who changes it, for messages: the rule as written and its file


def expand_specifiers(path: str) -> str:
    """The path with each %-specifier replaced by what the box puts there, or by a pattern."""
    return re.sub(r"%(.)", lambda m: _DIRECTORY_SPECIFIERS.get(m.group(1), "*"), path)


def _fields(line: str) -> list[str]:
    """The whitespace-separated fields of a rule, quotes undone (the argument may be unquotable)."""
    try:
        return shlex.split(line)
    except ValueError:
        return line.split()


def parse_rule(line: str, source: str) -> Rule | None:
    """The Rule of one tmpfiles.d line, or None for an exclusion (x, X), which changes nothing."""
    fields = _fields(line)
    if len(fields) < 2 or fields[0][0] in _EXCLUSIONS:
        return None
    kind, path = fields[0], fields[1]
    age = fields[5] if len(fields) > 5 else "-"
    reaches_below = kind[0] in _REACH_BELOW or age != "-"   # with an age it is cleaned
    parts = tuple(p for p in expand_specifiers(path).split("/") if p)
    return Rule(parts, reaches_below, f"the tmpfiles rule `{' '.join(line.split())}` ({source})")


def parse_cat_config(text: str) -> list[Rule]:
    """Every rule in the output of ``systemd-tmpfiles --cat-config``, each tagged with its file."""
    rules: list[Rule] = []
    source = "tmpfiles.d"
    for line in text.splitlines():
        line = line.strip()
        header = _HEADER.match(line)
        if header:
            source = header.group(1)
        elif line and not line.startswith("#"):
            rule = parse_rule(line, source)
            if rule is not None:
                rules.append(rule)
    return rules


def shadowed_by_run(text: str) -> list[str]:
    """The files a host's /run/tmpfiles.d hides from --cat-config but not from the box's boot."""
    shadowed = []
    for line in text.splitlines():
        header = _HEADER.match(line.strip())
        if header and os.path.dirname(header.group(1)) == "/run/tmpfiles.d":
            name = os.path.basename(header.group(1))
            found = [p for p in (os.path.join(d, name) for d in _AFTER_RUN) if os.path.isfile(p)]
            shadowed += found[:1]
    return shadowed


def _cat_config() -> str:
    try:
        out = subprocess.run(["systemd-tmpfiles", "--cat-config", "--no-pager"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise TestbedError(f"reading the tmpfiles.d rules the box's boot applies failed "
                           f"(systemd-tmpfiles --cat-config: {e}); the testbed needs systemd "
                           "installed: apt-get install systemd") from None
    if out.returncode != 0:
        raise TestbedError(f"reading the tmpfiles.d rules the box's boot applies failed "
                           f"(systemd-tmpfiles --cat-config exited with {out.returncode}: "
                           f"{out.stderr.strip()}); fix the tmpfiles.d configuration it names")
    return out.stdout


def read_boot_rules() -> list[Rule]:
    """Every path the box's boot may change: the tmpfiles.d rules it applies, and BOOT_WRITERS."""
    text = _cat_config()
    for path in shadowed_by_run(text):
        with open(path) as f:
            text += f"\n# {path}\n{f.read()}"
    writers = [Rule(tuple(p for p in path.split("/") if p), below, who)
               for path, below, who in BOOT_WRITERS]
    return parse_cat_config(text) + writers


def _components_match(names: tuple[str, ...], patterns: tuple[str, ...]) -> bool:
    # the shorter of the two against the start of the other: one lies inside the other
    return all(fnmatch.fnmatchcase(n, p) for n, p in zip(names, patterns, strict=False))


# How a rule's path relates to a directory, most telling first (the order messages prefer).
SAME, CONTAINS, INSIDE = "same", "contains", "inside"
_RELATIONS = (SAME, CONTAINS, INSIDE)


def relation(path: str, rule: Rule) -> str | None:
    """Whether `rule` may change the host directory `path` (absolute, resolved): SAME (it names
    the directory), CONTAINS (its path contains the directory and it reaches below), INSIDE (its
    path lies inside the directory), or None."""
    names = tuple(p for p in path.split("/") if p)
    if not _components_match(names, rule.pattern):
        return None
    if len(names) == len(rule.pattern):
        return SAME
    if len(names) < len(rule.pattern):
        return INSIDE
    return CONTAINS if rule.reaches_below else None


def describe(rule: Rule, how: str) -> str:
    """The phrase a refusal gives as its cause: what `rule` does to the directory."""
    shown = "/" + "/".join(rule.pattern)
    if how == SAME:
        target = f"{shown} and what it holds" if rule.reaches_below else f"{shown} itself"
        return f"{rule.origin} removes, creates or changes {target}"
    if how == CONTAINS:
        return f"it lies inside {shown}, whose contents {rule.origin} removes or changes"
    return f"{rule.origin} removes, creates or changes {shown}, inside it"


def first_conflict(path: str, rules: list[Rule]) -> str | None:
    """The most telling way the box's boot would change the host directory `path`, or None."""
    found: dict[str, Rule] = {}
    for rule in rules:
        how = relation(path, rule)
        if how is not None:
            found.setdefault(how, rule)
    how = next((h for h in _RELATIONS if h in found), None)
    return None if how is None else describe(found[how], how)

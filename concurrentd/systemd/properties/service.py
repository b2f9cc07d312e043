"""The [Service] section's properties (systemd.service(5)): type, restarts, timeouts, the Exec*=
command lines besides the main one, exit statuses."""

from __future__ import annotations

from typing import Any

from .. import _syntax as sx
from ._kind import Bad, Converted, Kind, Row, list_kind, one, word_list
from .scalars import BOOL, STRING, TIMESPAN, UINT32, signal_number, time_py


def _both_timeouts(prop: str, s: str) -> Converted:
    t = sx.parse_time(s)
    return [("TimeoutStartUSec", ("t", t)), ("TimeoutStopUSec", ("t", t))]


TIMEOUT_BOTH = Kind(TIMESPAN.form, _both_timeouts, time_py(_both_timeouts))


_EXEC_PREFIX_FLAGS = {"-": "ignore-failure", ":": "no-env-expand", "+": "privileged",
                      "!": "no-setuid"}


def _exec_command(prop: str, s: str) -> Converted:
    s = s.strip()
    flags: list[str] = []
    explicit = False
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
        return one(prop, "a(sasb)", [])
    path = words.pop(0) if explicit else words[0]
    if not path.startswith("/"):
        raise Bad("the program must be an absolute path")
    if not (set(flags) - {"ignore-failure"}) and not prop.endswith("Ex"):
        return one(prop, "a(sasb)", [(path, words, "ignore-failure" in flags)])
    name = prop if prop.endswith("Ex") else prop + "Ex"
    return one(name, "a(sasas)", [(path, words, flags)])


def _exec_py(prop: str, value: Any) -> Converted:
    words = word_list(value)
    if not words:
        return one(prop, "a(sasb)", [])
    return one(prop, "a(sasb)", [(words[0], words, False)])


EXEC_COMMAND = Kind("a command line with an absolute path ('-/bin/true arg'; prefixes - @ : + ! !!)",
                    _exec_command, _exec_py)

EXIT_STATUS_NAMES = {"SUCCESS": 0, "FAILURE": 1, "INVALIDARGUMENT": 2, "NOTIMPLEMENTED": 3,
                     "NOPERMISSION": 4, "NOTINSTALLED": 5, "NOTCONFIGURED": 6, "NOTRUNNING": 7}


def _exit_status(prop: str, words: list[str]) -> Converted:
    codes: list[int] = []
    sigs: list[int] = []
    for w in words:
        if w.isdigit():
            codes.append(sx.parse_int(w, 0, 255))
        elif w in EXIT_STATUS_NAMES:
            codes.append(EXIT_STATUS_NAMES[w])
        else:
            sigs.append(signal_number(w))
    return one(prop, "(aiai)", (codes, sigs))


EXIT_STATUS = list_kind("exit statuses and signals ('0 1 SIGTERM')", _exit_status)

ROWS = [
    Row(STRING, "PIDFile Type ExitType Restart BusName NotifyAccess USBFunctionDescriptors "
                "USBFunctionStrings OOMPolicy TimeoutStartFailureMode TimeoutStopFailureMode"),
    Row(BOOL, "PermissionsStartOnly RootDirectoryStartOnly RemainAfterExit GuessMainPID"),
    Row(TIMESPAN, "RestartSec TimeoutStartSec TimeoutStopSec TimeoutAbortSec RuntimeMaxSec "
                  "RuntimeRandomizedExtraSec WatchdogSec"),
    Row(TIMEOUT_BOTH, "TimeoutSec"),
    Row(UINT32, "FileDescriptorStoreMax"),
    Row(EXEC_COMMAND, "ExecCondition ExecStartPre ExecStartPost ExecReload ExecStop ExecStopPost "
                      "ExecConditionEx ExecStartPreEx ExecStartPostEx ExecReloadEx ExecStopEx "
                      "ExecStopPostEx"),
    Row(EXIT_STATUS, "RestartPreventExitStatus RestartForceExitStatus SuccessExitStatus"),
    # newer than systemd 252 (table.SINCE says which version)
    Row(STRING, "RestartMode"),
    Row(UINT32, "RestartSteps"),
    Row(TIMESPAN, "RestartMaxDelaySec"),
]

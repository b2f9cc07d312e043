"""The [Unit] section's properties (systemd.unit(5)): dependencies, start limits, actions,
conditions and asserts."""

from __future__ import annotations

from .. import _syntax as sx
from ._kind import Converted, Kind, Row, one
from .scalars import BOOL, STRING, STRV, TIMESPAN, UINT32


def _action_status(prop: str, s: str) -> Converted:
    return one(prop, "i", -1 if not s.strip() else sx.parse_int(s, 0, 255))


ACTION_EXIT_STATUS = Kind("an exit status 0…255 (empty to reset)", _action_status)


def _condition(prop: str, s: str) -> Converted:
    field = "Asserts" if prop.startswith("Assert") else "Conditions"
    if not s:
        return one(field, "a(sbbs)", [])
    trigger = s.startswith("|")
    s = s[1:] if trigger else s
    negate = s.startswith("!")
    return one(field, "a(sbbs)", [(prop, trigger, negate, s[1:] if negate else s)])


CONDITION = Kind("a condition argument ('|' trigger and '!' negate prefixes)", _condition)

_CONDITIONS = ("Architecture Firmware Virtualization Host KernelCommandLine KernelVersion Credential "
               "Security Capability ACPower NeedsUpdate FirstBoot PathExists PathExistsGlob "
               "PathIsDirectory PathIsSymbolicLink PathIsMountPoint PathIsReadWrite PathIsEncrypted "
               "DirectoryNotEmpty FileNotEmpty FileIsExecutable User Group ControlGroupController CPUs "
               "Memory Environment CPUFeature OSRelease MemoryPressure CPUPressure IOPressure").split()

ROWS = [
    Row(STRING, "Description SourcePath OnFailureJobMode JobTimeoutAction JobTimeoutRebootArgument "
                "StartLimitAction FailureAction SuccessAction RebootArgument CollectMode"),
    Row(BOOL, "StopWhenUnneeded RefuseManualStart RefuseManualStop AllowIsolate IgnoreOnIsolate "
              "DefaultDependencies"),
    Row(TIMESPAN, "JobTimeoutSec JobRunningTimeoutSec StartLimitIntervalSec"),
    Row(UINT32, "StartLimitBurst"),
    Row(ACTION_EXIT_STATUS, "SuccessActionExitStatus FailureActionExitStatus"),
    Row(STRV, "Documentation RequiresMountsFor Requires Requisite Wants BindsTo PartOf Upholds "
              "Conflicts Before After OnSuccess OnFailure Triggers PropagatesReloadTo "
              "ReloadPropagatedFrom PropagatesStopTo StopPropagatedFrom JoinsNamespaceOf"),
    Row(CONDITION, " ".join("Condition" + c for c in _CONDITIONS) + " "
                   + " ".join("Assert" + c for c in _CONDITIONS)),
    # newer than systemd 252 (table.SINCE says which version)
    Row(BOOL, "SurviveFinalKillSignal"),
]

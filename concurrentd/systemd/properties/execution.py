"""The execution settings (systemd.exec(5)): user, process attributes, scheduling, logging,
standard I/O, credentials, limits, and the sandboxing whose value kinds are sandboxing.py's."""

from __future__ import annotations

import datetime
import errno as _errno
from typing import Any

from .. import _syntax as sx
from .._syntax import UINT64_MAX
from ._kind import Bad, Converted, Effect, Kind, Row, as_text, list_kind, one
from .sandboxing import (
    ALLOW_DENY,
    BIND_PATHS,
    BOOL_OR_EX,
    CAPS,
    DIRECTORIES,
    EXTENSION_IMAGES,
    IMAGE_OPTIONS,
    MOUNT_IMAGES,
    PROTECT_HOSTNAME_EX,
    RESTRICT_NS,
    ROOT_HASH,
    ROOT_HASH_SIG,
    TMPFS,
)
from .scalars import (
    BOOL,
    INT32,
    NSEC,
    STRING,
    STRV,
    STRV_ESCAPED,
    TIMESPAN,
    UINT32,
    bitset,
    cpu_set,
    enum_kind,
    int_kind,
)

NICE = int_kind("i", -20, 19, "a nice level -20…19")
IOPRIO = int_kind("i", 0, 7, "an I/O priority 0…7")
OOM_ADJ = int_kind("i", -1000, 1000, "an OOM score adjustment -1000…1000")


def _mode(prop: str, s: str) -> Converted:
    s = s.strip()
    if not s or any(c not in "01234567" for c in s):
        raise Bad("not an octal mode")
    value = int(s, 8)
    if value > 0o7777:
        raise Bad("mode above 07777")
    return one(prop, "u", value)


def _mode_py(prop: str, value: Any) -> Converted:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Bad("expected an int (e.g. 0o755) or an octal string")
    return _mode(prop, format(value, "o"))


MODE = Kind("an octal file mode ('0755' or 0o755)", _mode, _mode_py)


LOG_LEVELS = {n: i for i, n in enumerate("emerg alert crit err warning notice info debug".split())}
LOG_LEVEL = enum_kind("i", LOG_LEVELS, "a log level", numbers=(0, 7))
LOG_FACILITIES = {n: i for i, n in enumerate(
    "kern user mail daemon auth syslog lpr news uucp cron authpriv ftp".split())}
LOG_FACILITIES.update({f"local{i}": 16 + i for i in range(8)})
LOG_FACILITY = enum_kind("i", LOG_FACILITIES, "a syslog facility", numbers=(0, 127))
SCHED_POLICY = enum_kind("i", {"other": 0, "fifo": 1, "rr": 2, "batch": 3, "idle": 5},
                          "a scheduling policy", numbers=(0, 2**31 - 2))
IOPRIO_CLASS = enum_kind("i", {"none": 0, "realtime": 1, "best-effort": 2, "idle": 3},
                          "an I/O scheduling class", numbers=(0, 3))
NUMA_POLICY = enum_kind("i", {"default": 0, "preferred": 1, "bind": 2, "interleave": 3, "local": 4},
                         "a NUMA policy")


SECCOMP_ERRNO_KILL = 2**31 - 2  # SECCOMP_ERROR_NUMBER_KILL (INT_MAX - 1), as systemd 252 reads it


def _errno_action(prop: str, s: str) -> Converted:
    s = s.strip()
    if s == "kill":
        return one(prop, "i", SECCOMP_ERRNO_KILL)
    if hasattr(_errno, s) and s.startswith("E"):
        return one(prop, "i", getattr(_errno, s))
    return one(prop, "i", sx.parse_int(s, 0, 4095))


ERRNO_ACTION = Kind("an errno name or number (EPERM, 1) or 'kill'", _errno_action)


SECURE_BITS = {"noroot": 1 << 0, "noroot-locked": 1 << 1, "no-setuid-fixup": 1 << 2,
               "no-setuid-fixup-locked": 1 << 3, "keep-caps": 1 << 4, "keep-caps-locked": 1 << 5}
SECUREBITS = list_kind("secure bits: " + " ".join(SECURE_BITS),
                        lambda p, w: one(p, "i", bitset(SECURE_BITS, " ".join(w))))
COREDUMP_BITS = {n: 1 << i for i, n in enumerate(
    "private-anonymous shared-anonymous private-file-backed shared-file-backed elf-headers "
    "private-huge shared-huge private-dax shared-dax".split())}
COREDUMP_BITS.update({"default": 0x33, "all": UINT64_MAX})
COREDUMP = list_kind("coredump filter names or hex masks",
                      lambda p, w: one(p, "t", bitset(COREDUMP_BITS, " ".join(w), hexnums=True)))
MOUNT_PROPAGATION = enum_kind("t", {"shared": 1 << 20, "slave": 1 << 19, "private": 1 << 18, "": 0},
                               "a mount propagation")


def _cpu_affinity(prop: str, words: list[str]) -> Converted:
    if words == ["numa"]:
        return one("CPUAffinityFromNUMA", "b", True)
    return one(prop, "ay", cpu_set(" ".join(words)))


CPU_AFFINITY = list_kind("a CPU list ('0-3 5') or 'numa'", _cpu_affinity)


def _numa_mask(prop: str, words: list[str]) -> Converted:
    if words == ["all"]:
        try:
            with open("/sys/devices/system/node/possible") as f:
                words = [f.read().strip()]
        except OSError:
            words = ["0"]
    return one(prop, "ay", cpu_set(" ".join(words)))


NUMA_MASK = list_kind("a NUMA node list ('0-1') or 'all'", _numa_mask)


def _env_file(prop: str, s: str) -> Converted:
    if not s:
        return one("EnvironmentFiles", "a(sb)", [])
    return one("EnvironmentFiles", "a(sb)", [(s[1:], True) if s.startswith("-") else (s, False)])


ENV_FILE = Kind("a path, '-' prefixed to ignore a missing file", _env_file)


def _set_credential(prop: str, s: str) -> Converted:
    if not s:
        return one(prop, "a(say)", [])
    ident, sep, data = s.partition(":")
    if not sep:
        raise Bad("missing ':' (expected '<id>:<data>')")
    if prop == "SetCredentialEncrypted":
        import base64
        try:
            blob = base64.b64decode(data, validate=False)
        except ValueError:
            raise Bad("not base64") from None
    else:
        blob = sx.cunescape(data).encode()
    return one(prop, "a(say)", [(ident, blob)])


SET_CREDENTIAL = Kind("'<id>:<data>'", _set_credential)


def _load_credential(prop: str, s: str) -> Converted:
    if not s:
        return one(prop, "a(ss)", [])
    ident, _, path = s.partition(":")
    if not ident:
        raise Bad("missing credential id")
    return one(prop, "a(ss)", [(ident, path or ident)])


LOAD_CREDENTIAL = Kind("'<id>[:<path>]'", _load_credential)
LOG_EXTRA_FIELDS = Kind("'FIELD=value'", lambda p, s: one(p, "aay", [s.encode()]))


def _stdio(prop: str, s: str) -> Converted:
    for prefix, suffix in (("fd:", "FileDescriptorName"), ("file:", "File"),
                           ("append:", "FileToAppend"), ("truncate:", "FileToTruncate")):
        if s.startswith(prefix):
            return one(prop + suffix, "s", s[len(prefix):])
    return one(prop, "s", s)


STDIO = Kind("null, inherit, journal, tty, socket, file:<path>, append:<path>, truncate:<path>, fd:<name>",
             _stdio)
STDIN_TEXT = Kind("text (C escapes allowed); a newline is appended",
                  lambda p, s: one("StandardInputData", "ay", (sx.cunescape(s) + "\n").encode()))


def _stdin_data(prop: str, s: str) -> Converted:
    import base64
    import binascii
    try:
        return one(prop, "ay", base64.b64decode("".join(s.split()), validate=True))
    except (binascii.Error, ValueError):
        raise Bad("not base64") from None


STDIN_DATA = Kind("base64 data", _stdin_data,
                  lambda p, v: one(p, "ay", bytes(v)) if isinstance(v, (bytes, bytearray))
                  else _stdin_data(p, as_text(v)))

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


def _rlimit(prop: str, s: str) -> Converted:
    soft, sep, hard = s.partition(":")
    soft_v = _rlimit_one(prop, soft)
    hard_v = _rlimit_one(prop, hard) if sep else soft_v
    if soft_v > hard_v:
        raise Bad("soft limit above hard limit")
    return [(prop, ("t", hard_v)), (prop + "Soft", ("t", soft_v))]


def _rlimit_py(prop: str, value: Any) -> Converted:
    if isinstance(value, tuple) and len(value) == 2:
        return _rlimit(prop, f"{as_text(value[0])}:{as_text(value[1])}")
    if isinstance(value, bool) or not isinstance(value, (int, datetime.timedelta)):
        raise Bad("expected an int, a (soft, hard) tuple or a string")
    return _rlimit(prop, as_text(value))


RLIMIT = Kind("a limit or 'soft:hard' ('1024', '1024:4096', 'infinity'; sizes/times where apt)",
              _rlimit, _rlimit_py)


def _bool_string(prop: str, s: str) -> Converted:
    return one(prop, "(bs)", (True, s[1:]) if s.startswith("-") else (False, s))


BOOL_STRING = Kind("a profile/label, '-' prefixed to ignore failure", _bool_string)


ROWS = [
    Row(STRING, "UtmpIdentifier UtmpMode PAMName TTYPath WorkingDirectory SyslogIdentifier "
                "ProtectSystem SELinuxContext RootVerity RuntimeDirectoryPreserve Personality "
                "KeyringMode ProtectProc ProcSubset NetworkNamespacePath IPCNamespacePath "
                "LogNamespace"),
    Row(STRING, "User Group", Effect.RUNS_AS),
    Row(STRING, "RootDirectory RootImage", Effect.ROOT),
    Row(STRING, "ProtectHome", Effect.PROTECT_HOME),
    Row(BOOL, "IgnoreSIGPIPE TTYVHangup TTYReset TTYVTDisallocate PrivateDevices PrivateNetwork "
              "PrivateMounts PrivateIPC NoNewPrivileges SyslogLevelPrefix "
              "MemoryDenyWriteExecute RestrictRealtime RemoveIPC ProtectKernelTunables "
              "ProtectKernelModules ProtectKernelLogs ProtectClock MountAPIVFS "
              "CPUSchedulingResetOnFork LockPersonality RestrictSUIDSGID"),
    Row(BOOL, "DynamicUser", Effect.OWN_USERS),
    Row(BOOL_OR_EX, "ProtectControlGroups ProtectHostname"),
    Row(BOOL_OR_EX, "PrivateTmp", Effect.PRIVATE_TMP),
    Row(BOOL_OR_EX, "PrivateUsers", Effect.OWN_USERS),
    Row(STRV, "ReadWriteDirectories ReadOnlyDirectories ReadWritePaths ReadOnlyPaths ExecPaths "
              "NoExecPaths ExecSearchPath ExtensionDirectories ConfigurationDirectory "
              "SupplementaryGroups SystemCallArchitectures"),
    Row(STRV, "InaccessibleDirectories InaccessiblePaths", Effect.HIDES_NAMED),
    Row(LOG_LEVEL, "SyslogLevel LogLevelMax"),
    Row(LOG_FACILITY, "SyslogFacility"),
    Row(SECUREBITS, "SecureBits"),
    Row(SCHED_POLICY, "CPUSchedulingPolicy"),
    Row(INT32, "CPUSchedulingPriority"),
    Row(OOM_ADJ, "OOMScoreAdjust"),
    Row(COREDUMP, "CoredumpFilter"),
    Row(NICE, "Nice"),
    Row(ERRNO_ACTION, "SystemCallErrorNumber"),
    Row(IOPRIO_CLASS, "IOSchedulingClass"),
    Row(IOPRIO, "IOSchedulingPriority"),
    Row(MODE, "RuntimeDirectoryMode StateDirectoryMode CacheDirectoryMode LogsDirectoryMode "
              "ConfigurationDirectoryMode UMask"),
    Row(NSEC, "TimerSlackNSec"),
    Row(TIMESPAN, "LogRateLimitIntervalSec"),
    Row(UINT32, "LogRateLimitBurst TTYRows TTYColumns"),
    Row(MOUNT_PROPAGATION, "MountFlags"),
    Row(STRV_ESCAPED, "Environment UnsetEnvironment PassEnvironment"),
    Row(ENV_FILE, "EnvironmentFile"),
    Row(SET_CREDENTIAL, "SetCredential SetCredentialEncrypted"),
    Row(LOAD_CREDENTIAL, "LoadCredential LoadCredentialEncrypted"),
    Row(LOG_EXTRA_FIELDS, "LogExtraFields"),
    Row(STDIO, "StandardInput StandardOutput StandardError"),
    Row(STDIN_TEXT, "StandardInputText"),
    Row(STDIN_DATA, "StandardInputData"),
    Row(RLIMIT, " ".join("Limit" + r for r in "CPU FSIZE DATA STACK CORE RSS NPROC NOFILE MEMLOCK AS "
                                               "LOCKS SIGPENDING MSGQUEUE NICE RTPRIO RTTIME".split())),
    Row(BOOL_STRING, "AppArmorProfile SmackProcessLabel"),
    Row(CAPS, "CapabilityBoundingSet AmbientCapabilities"),
    Row(CPU_AFFINITY, "CPUAffinity"),
    Row(NUMA_POLICY, "NUMAPolicy"),
    Row(NUMA_MASK, "NUMAMask"),
    Row(ALLOW_DENY, "RestrictAddressFamilies RestrictFileSystems SystemCallFilter SystemCallLog "
                    "RestrictNetworkInterfaces"),
    Row(RESTRICT_NS, "RestrictNamespaces"),
    Row(BIND_PATHS, "BindPaths BindReadOnlyPaths"),
    Row(TMPFS, "TemporaryFileSystem", Effect.HIDES_NAMED),
    Row(ROOT_HASH, "RootHash"),
    Row(ROOT_HASH_SIG, "RootHashSignature"),
    Row(IMAGE_OPTIONS, "RootImageOptions"),
    Row(MOUNT_IMAGES, "MountImages"),
    Row(EXTENSION_IMAGES, "ExtensionImages"),
    Row(DIRECTORIES, "StateDirectory RuntimeDirectory CacheDirectory LogsDirectory"),
    # newer than systemd 252 (table.SINCE says which version)
    Row(BOOL, "BindLogSockets SetLoginEnvironment RootEphemeral"),
    Row(PROTECT_HOSTNAME_EX, "ProtectHostnameEx"),
    Row(STRING, "ProtectControlGroupsEx PrivateBPF UserNamespacePath MemoryTHP"),
    Row(STRING, "PrivatePIDs", Effect.PRIVATE_PIDS),
    Row(STRING, "PrivateUsersEx", Effect.OWN_USERS),
    Row(STRING, "PrivateTmpEx", Effect.PRIVATE_TMP),
    Row(STRV, "ImportCredential"),
]

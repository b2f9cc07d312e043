"""The oracle is systemd-run: a unit started with ``systemd-run -p P=V`` and one started with our
converter must show the same values (``systemctl show -p``), and what systemd-run rejects we
reject too. Properties are batched, many per unit pair, to keep the run short."""

import os
import re
import subprocess

import pytest
from entry_helpers import systemd_version

from concurrentd.systemd import Systemd, SystemdError, convert_properties

# (property, value) in systemd-run -p syntax; every conversion kind appears at least once.
GOOD = [
    # strings / enums passed as strings
    ("Description", "differential"), ("ProtectSystem", "strict"), ("ProtectSystem", "full"),
    ("ProtectHome", "read-only"), ("ProtectHome", "tmpfs"), ("KillMode", "mixed"), ("KillMode", "process"),
    ("WorkingDirectory", "/tmp"), ("User", "nobody"), ("Group", "nogroup"), ("SyslogIdentifier", "diff"),
    ("KeyringMode", "private"), ("ProtectProc", "invisible"), ("ProcSubset", "pid"),
    ("Personality", "x86-64"), ("OOMPolicy", "kill"), ("DevicePolicy", "closed"), ("Restart", "no"),
    ("NotifyAccess", "none"), ("TimeoutStopFailureMode", "kill"), ("RuntimeDirectoryPreserve", "no"),
    ("ManagedOOMSwap", "kill"), ("ManagedOOMPreference", "avoid"), ("UtmpIdentifier", "d1"),
    # booleans
    ("PrivateTmp", "yes"), ("PrivateTmp", "no"), ("PrivateDevices", "true"), ("PrivateNetwork", "1"),
    ("PrivateIPC", "on"), ("PrivateMounts", "y"), ("NoNewPrivileges", "yes"), ("ProtectClock", "yes"),
    ("ProtectKernelTunables", "yes"), ("ProtectKernelModules", "yes"), ("ProtectKernelLogs", "yes"),
    ("ProtectControlGroups", "yes"), ("ProtectHostname", "yes"), ("RestrictRealtime", "yes"),
    ("RestrictSUIDSGID", "yes"), ("LockPersonality", "yes"), ("MemoryDenyWriteExecute", "yes"),
    ("IgnoreSIGPIPE", "no"), ("CPUAccounting", "yes"), ("MemoryAccounting", "yes"),
    ("TasksAccounting", "yes"), ("IOAccounting", "yes"), ("IPAccounting", "yes"), ("SendSIGHUP", "yes"),
    ("SendSIGKILL", "no"), ("RemainAfterExit", "no"), ("GuessMainPID", "no"), ("RemoveIPC", "yes"),
    ("SyslogLevelPrefix", "no"), ("DefaultDependencies", "no"), ("RefuseManualStop", "no"),
    ("CPUSchedulingResetOnFork", "yes"), ("Delegate", "yes"), ("Delegate", "cpu memory"),
    # time spans (Sec -> USec)
    ("TimeoutStopSec", "5s"), ("TimeoutStopSec", "1min 30s"), ("TimeoutStopSec", "500ms"),
    ("TimeoutStartSec", "infinity"), ("TimeoutStartSec", "2h"), ("RuntimeMaxSec", "1d"),
    ("RuntimeMaxSec", "1.5s"), ("TimeoutAbortSec", "10"), ("RestartSec", "250ms"), ("WatchdogSec", "0"),
    ("RuntimeRandomizedExtraSec", "3s"), ("TimeoutSec", "7s"), ("StartLimitIntervalSec", "20s"),
    ("LogRateLimitIntervalSec", "2s"),
    ("CPUQuotaPeriodSec", "50ms"), ("TimerSlackNSec", "50us"), ("TimerSlackNSec", "1000"),
    # sizes, percentages, limits
    ("MemoryMax", "100M"), ("MemoryMax", "1G"), ("MemoryMax", "infinity"), ("MemoryMax", "1.5G"),
    ("MemoryMax", "8388608"), ("MemoryHigh", "50M"), ("MemoryLow", "1M"), ("MemoryMin", "512K"),
    ("MemorySwapMax", "0"), ("MemoryLimit", "200M"), ("MemoryMax", "10%"), ("MemoryHigh", "25%"),
    ("TasksMax", "100"), ("TasksMax", "infinity"), ("TasksMax", "10%"), ("CPUQuota", "20%"),
    ("CPUQuota", "150%"), ("CPUQuota", "2.5%"), ("ManagedOOMMemoryPressureLimit", "60%"),
    ("CPUWeight", "idle"), ("CPUWeight", "100"), ("StartupCPUWeight", "50"), ("IOWeight", "500"),
    ("StartupIOWeight", "10"), ("CPUShares", "512"), ("BlockIOWeight", "100"),
    ("AllowedCPUs", "0"), ("AllowedCPUs", "0-1"), ("AllowedMemoryNodes", "0"),
    ("IOReadBandwidthMax", "/dev/null 1M"), ("IOWriteIOPSMax", "/dev/null 1000"),
    ("IODeviceWeight", "/dev/null 200"), ("IODeviceLatencyTargetSec", "/dev/null 25ms"),
    ("DeviceAllow", "/dev/null rw"), ("DeviceAllow", "char-pts rwm"),
    ("IPAddressDeny", "any"), ("IPAddressAllow", "localhost"), ("IPAddressAllow", "10.0.0.0/8 ::1"),
    ("IPAddressDeny", "link-local"), ("IPAddressAllow", "multicast"), ("IPAddressAllow", "192.168.1.7"),
    ("SocketBindAllow", "tcp:8080"), ("SocketBindDeny", "any"), ("SocketBindAllow", "ipv6:udp:5000-5010"),
    ("DisableControllers", "cpu io"),
    # resource limits
    ("LimitNOFILE", "1024"), ("LimitNOFILE", "1024:2048"), ("LimitNOFILE", "infinity"),
    ("LimitNPROC", "100:200"), ("LimitCORE", "0"), ("LimitCORE", "1M:infinity"), ("LimitAS", "1G"),
    ("LimitCPU", "30"), ("LimitCPU", "2min"), ("LimitRTTIME", "1s"), ("LimitNICE", "+5"),
    ("LimitNICE", "10"), ("LimitMEMLOCK", "64K"), ("LimitSTACK", "8M:16M"), ("LimitFSIZE", "infinity"),
    ("LimitMSGQUEUE", "1M"), ("LimitRTPRIO", "5"), ("LimitSIGPENDING", "1000"), ("LimitLOCKS", "50"),
    ("LimitDATA", "1G"), ("LimitRSS", "1G"),
    # integers, modes, enums to ints
    ("Nice", "5"), ("Nice", "-3"), ("OOMScoreAdjust", "500"), ("OOMScoreAdjust", "-100"),
    ("CPUSchedulingPolicy", "batch"), ("CPUSchedulingPolicy", "idle"), ("CPUSchedulingPriority", "0"),
    ("IOSchedulingClass", "idle"), ("IOSchedulingClass", "best-effort"), ("IOSchedulingPriority", "3"),
    ("UMask", "0027"), ("UMask", "077"), ("RuntimeDirectoryMode", "0700"), ("StateDirectoryMode", "0750"),
    ("SyslogLevel", "debug"), ("SyslogLevel", "3"), ("LogLevelMax", "warning"), ("SyslogFacility", "local3"),
    ("SyslogFacility", "daemon"), ("SecureBits", "keep-caps noroot"), ("CoredumpFilter", "default"),
    ("CoredumpFilter", "private-anonymous elf-headers"), ("MountFlags", "slave"), ("MountFlags", "private"),
    ("SystemCallErrorNumber", "EPERM"), ("SystemCallErrorNumber", "kill"), ("SystemCallErrorNumber", "13"),
    ("KillSignal", "SIGINT"), ("KillSignal", "TERM"), ("KillSignal", "9"), ("FinalKillSignal", "SIGKILL"),
    ("WatchdogSignal", "SIGABRT"), ("RestartKillSignal", "RTMIN+3"), ("LogRateLimitBurst", "100"),
    ("StartLimitBurst", "7"), ("FileDescriptorStoreMax", "3"), ("TTYRows", "40"), ("TTYColumns", "100"),
    ("NUMAPolicy", "default"), ("NUMAPolicy", "local"), ("NUMAMask", "0"), ("CPUAffinity", "0"),
    ("CPUAffinity", "0-1"),
    # lists
    ("ReadWritePaths", "/tmp /var/tmp"), ("ReadOnlyPaths", "/etc"), ("InaccessiblePaths", "-/nonexistent"),
    ("ExecPaths", "/usr/bin"), ("NoExecPaths", "/tmp"), ("SupplementaryGroups", "nogroup"),
    ("SystemCallArchitectures", "native"), ("Environment", "A=1 B=2"), ("Environment", "'C=x y' D=\\tz"),
    ("UnsetEnvironment", "HOME"), ("PassEnvironment", "PATH"), ("Documentation", "man:sleep(1)"),
    ("After", "dbus.service"), ("Wants", "dbus.service"), ("Conflicts", "nothing-here.service"),
    ("RequiresMountsFor", "/tmp"), ("ConfigurationDirectory", "cfgdiff"),
    ("StateDirectory", "statediff"), ("RuntimeDirectory", "rundiff other"), ("CacheDirectory", "cachediff"),
    ("LogsDirectory", "logsdiff"),
    # allow/deny lists, capabilities, namespaces
    ("SystemCallFilter", "@system-service"), ("SystemCallFilter", "~@mount @swap"),
    ("SystemCallFilter", "~@mount"), ("SystemCallLog", "@obsolete"),
    ("RestrictAddressFamilies", "AF_UNIX AF_INET"), ("RestrictAddressFamilies", "~AF_PACKET"),
    ("RestrictNetworkInterfaces", "lo"), ("RestrictFileSystems", "~ext4"),
    ("CapabilityBoundingSet", "CAP_NET_ADMIN CAP_SYS_PTRACE"), ("CapabilityBoundingSet", "~CAP_SYS_ADMIN"),
    ("CapabilityBoundingSet", ""), ("AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
    ("RestrictNamespaces", "yes"), ("RestrictNamespaces", "no"), ("RestrictNamespaces", "net ipc"),
    ("RestrictNamespaces", "~user"),
    # structured values
    ("BindPaths", "/tmp:/mnt"), ("BindPaths", "/tmp:/mnt:norbind"), ("BindPaths", "-/nonexistent:/opt"),
    ("BindReadOnlyPaths", "/etc /usr:/srv:rbind"), ("TemporaryFileSystem", "/mnt:ro /srv"),
    ("EnvironmentFile", "-/nonexistent/env"), ("EnvironmentFile", "/dev/null"),
    ("LoadCredential", "cred1:/etc/hostname"), ("SetCredential", "cred2:secret"),
    ("LogExtraFields", "FOO=bar"), ("StandardOutput", "null"), ("StandardOutput", "file:/tmp/diff.out"),
    ("StandardError", "append:/tmp/diff.err"), ("StandardError", "truncate:/tmp/diff.err2"),
    ("StandardInput", "null"), ("StandardInputData", "aGVsbG8K"),
    ("AppArmorProfile", "-unconfined"), ("ExecStartPost", "/bin/true"), ("ExecStopPost", "-/bin/true x"),
    ("ExecStartPre", "+/bin/true"), ("ExecStop", "/bin/true stop"),
    ("SuccessExitStatus", "3 SIGUSR1"), ("RestartPreventExitStatus", "1 2 SIGTERM"),
    ("RestartForceExitStatus", "SIGHUP"), ("SuccessActionExitStatus", "5"),
    ("ConditionPathExists", "/"), ("ConditionPathExists", "|!/nonexistent"), ("AssertPathIsDirectory", "/tmp"),
    ("CollectMode", "inactive-or-failed"),
]

# newer than systemd 252 (properties.SINCE): checked where systemd has them. PrivateUsers=identity
# and the like: systemd-run 257 takes them only as the …Ex property (see test_ex_words below).
GOOD_NEWER = [
    ("PrivatePIDs", "yes"), ("PrivateUsersEx", "identity"),
    ("ProtectControlGroupsEx", "private"), ("ProtectControlGroupsEx", "strict"),
    ("PrivateTmpEx", "disconnected"), ("RestartMode", "direct"), ("RestartSteps", "3"),
    ("RestartMaxDelaySec", "10s"), ("MemoryZSwapWriteback", "no"),
    ("ManagedOOMMemoryPressureDurationSec", "20s"), ("BindLogSockets", "yes"),
    ("SetLoginEnvironment", "no"), ("RootEphemeral", "no"), ("DelegateSubgroup", "sub"),
    ("MemoryPressureWatch", "skip"), ("MemoryPressureThresholdSec", "150ms"),
    ("SurviveFinalKillSignal", "yes"), ("CoredumpReceive", "no"), ("MemoryZSwapMax", "1G"),
    ("ImportCredential", "foo"),
    ("MemoryTHP", "disable"),
    ("MemoryTHP", "madvise"), ("BindNetworkInterface", "lo"), ("CPUPressureWatch", "skip"),
    ("CPUPressureThresholdSec", "150ms"), ("IOPressureWatch", "no"),
    ("IOPressureThresholdSec", "1s"), ("PrivateUsersEx", "full"), ("ProtectHostnameEx", "private"),
    ("ProtectHostname", "private:box"),
]
#: values newer than their property
VALUE_SINCE = {("PrivateUsersEx", "full"): 258, ("ProtectHostname", "private:box"): 258}
#: each in a unit of its own: systemd 262 cannot set PrivateBPF= up with PrivatePIDs= ("Failed
#: to set up mount namespacing: /sys/fs/bpf: Broken pipe"), with systemd-run as with us
GOOD_NEWER_ALONE = [("PrivateBPF", "yes")]


# values systemd-run itself refuses (client side or systemd side)
BAD = [
    ("CPUQuota", "0%"), ("CPUQuota", "abc"), ("MemoryMax", "lots"), ("MemoryMax", "-1"),
    ("MemoryHigh", "101%"), ("TasksMax", "-5"), ("PrivateTmp", "perhaps"), ("TimeoutStopSec", "5x"),
    ("TimeoutStopSec", "-1"), ("Nice", "20"), ("Nice", "-21"), ("OOMScoreAdjust", "1001"),
    ("CPUWeight", "0"), ("CPUWeight", "10001"), ("IOWeight", "idle"), ("CPUShares", "1"),
    ("BlockIOWeight", "5"), ("KillSignal", "SIGNOPE"), ("KillSignal", "0"), ("LimitNOFILE", "x"),
    ("LimitNOFILE", "2048:1024"), ("UMask", "0999"), ("UMask", "u=rwx"), ("IOSchedulingClass", "fast"),
    ("IOSchedulingPriority", "8"), ("CPUSchedulingPolicy", "turbo"), ("SyslogLevel", "loud"),
    ("SyslogFacility", "local9"), ("IPAddressDeny", "999.1.1.1"), ("BindPaths", "/a:/b:weird"),
    ("BindPaths", "/a:"), ("IOReadBandwidthMax", "/dev/null"), ("IOReadBandwidthMax", "/dev/null fast"),
    ("ProtectSystem", "sideways"), ("ProtectHome", "maybe"),
    ("KillMode", "everything"), ("SocketBindAllow", "tcp:99999"), ("RestrictNamespaces", "weird"),
    ("ManagedOOMMemoryPressureLimit", "120%"), ("SystemCallErrorNumber", "ENOTANERRNO"),
    ("MountFlags", "sometimes"), ("NUMAPolicy", "random"), ("ExecStartPost", "relative/path"),
    ("LoadCredential", ":path"), ("StandardInputData", "!!notbase64!!"),
]

SLEEP = ["/bin/sleep", "60"]
#: cgroup v1 settings: systemd >= 258 (no cgroup v1) ignores them, systemd-run with a warning
#: whatever the value; concurrentd still refuses a value v1 never took
V1_ONLY = {"CPUShares", "BlockIOWeight"}


def show_names(prop, value):
    """The `systemctl show` names that reflect (prop, value), from our D-Bus names."""
    names = []
    for dbus_name, _ in convert_properties({prop: value}):
        n = dbus_name
        if n.endswith("Scale"):
            n = n[:-5]
        for std in ("StandardInput", "StandardOutput", "StandardError"):
            if n.startswith(std):
                n = std
        if n in ("Conditions", "Asserts", "StandardInputData", "SetCredential", "LoadCredential",
                 "LogExtraFields", "CPUAffinityFromNUMA"):
            continue  # systemctl show does not print these (or prints them unparsed)
        if n.endswith("Symlink"):
            continue
        names.append(n)
    return names


def batches(pairs, size=45):
    """Group pairs so that no two in one batch set the same D-Bus property."""
    out = []
    for prop, value in pairs:
        keys = {n for n, _ in convert_properties({prop: value})} | {prop}
        for batch in out:
            if len(batch[0]) < size and not (keys & batch[1]):
                batch[0].append((prop, value))
                batch[1].update(keys)
                break
        else:
            out.append(([(prop, value)], set(keys)))
    return [b[0] for b in out]


_VOLATILE = re.compile(r" ; (start_time|stop_time)=\[[^]]*\]| ; (pid|code|status)=[^ ;]*")


def normalise(name, value):
    """Drop what differs between any two units (run times, pids) and order-only differences."""
    if value is None:
        return None
    if name.startswith("Exec"):
        return _VOLATILE.sub("", value)
    if name in ("After", "Before", "Wants", "Requires", "Conflicts", "RequiresMountsFor"):
        return " ".join(sorted(value.split()))
    return value


def show(unit, names):
    out = subprocess.run(["systemctl", "show", "-p", ",".join(names), unit],
                         capture_output=True, text=True, check=True).stdout
    return {k: normalise(k, v) for k, v in (line.split("=", 1) for line in out.splitlines() if "=" in line)}


def test_table_is_big_enough():
    assert len(GOOD) >= 150
    assert len({p for p, _ in GOOD}) >= 150


def _same_as_systemd_run(ref: str, batch: list, description: str | None = None) -> None:
    """Starts ``batch`` as unit ``ref`` with systemd-run and as a unit of ours; asserts that
    systemd reports every property of the batch the same for both (``description``: ours gets
    it, and Description is not compared)."""
    cmd = ["systemd-run", "--quiet", f"--unit={ref}", "-p", "Type=exec"]
    for prop, value in batch:
        cmd += ["-p", f"{prop}={value}"]
    res = subprocess.run(cmd + SLEEP, capture_output=True, text=True)
    assert res.returncode == 0, f"systemd-run refused: {res.stderr!r} (batch {batch})"
    ours = dict(batch) | ({"Description": description} if description else {})
    with Systemd.connect() as sd:
        unit = sd.start_service(SLEEP, ours)
        try:
            names = sorted({n for p, v in batch for n in show_names(p, v)}
                           - ({"Description"} if description else set()))
            want, got = show(ref, names), show(unit.name, names)
            diffs = {n: (want.get(n), got.get(n)) for n in names if want.get(n) != got.get(n)}
            assert diffs == {}, f"systemd-run vs concurrentd differ: {sorted(diffs.items())}"
        finally:
            unit.stop()
            subprocess.run(["systemctl", "stop", ref], capture_output=True)


@pytest.mark.parametrize("batch_no", range(len(batches(GOOD))))
def test_differential_against_systemd_run(batch_no):
    _same_as_systemd_run(f"concurrentd-oracle-{os.getpid()}-{batch_no}.service",
                         batches(GOOD)[batch_no], description=f"differential {batch_no}")


def test_newer_properties_against_systemd_run():
    from concurrentd.systemd.properties import SINCE

    version = systemd_version()
    def has(p: str, v: str) -> bool:
        return (VALUE_SINCE.get((p, v)) or SINCE[p]) <= version

    have = [(p, v) for p, v in GOOD_NEWER if has(p, v)]
    alone = [[(p, v)] for p, v in GOOD_NEWER_ALONE if has(p, v)]
    if not have:
        pytest.skip(f"systemd {version} has none of the properties newer than 252")
    for batch_no, batch in enumerate(batches(have) + alone):
        _same_as_systemd_run(f"concurrentd-oracle-new-{os.getpid()}-{batch_no}.service", batch)


def test_ex_words():
    # systemd >= 256/257 take words besides yes/no; they travel as the …Ex string property,
    # ProtectHostname's (258) as a pair: the mode and the hostname the unit starts with.
    for prop, word in (("PrivateUsers", "identity"), ("PrivateUsers", "full"),
                       ("ProtectControlGroups", "private"), ("ProtectControlGroups", "strict"),
                       ("PrivateTmp", "disconnected")):
        assert convert_properties({prop: word}) == [(prop + "Ex", ("s", word))]
    for value, pair in (("private", ("private", "")), ("private:box", ("private", "box")),
                        ("yes:box", ("yes", "box")), ("on", ("yes", ""))):
        assert convert_properties({"ProtectHostnameEx": value}) == [
            ("ProtectHostnameEx", ("(ss)", pair))]
    for value, pair in (("private:box", ("private", "box")), ("yes:box", ("yes", "box"))):
        assert convert_properties({"ProtectHostname": value}) == [
            ("ProtectHostnameEx", ("(ss)", pair))]
    for bad in ("maybe", "no:box", "sometimes:box"):
        with pytest.raises(ValueError, match="ProtectHostname"):
            convert_properties({"ProtectHostname": bad})
    assert convert_properties({"PrivateUsers": True}) == [("PrivateUsers", ("b", True))]
    assert convert_properties({"PrivateTmp": "no"}) == [("PrivateTmp", ("b", False))]


@pytest.mark.parametrize("prop,value", BAD)
def test_rejected_like_systemd_run(prop, value):
    ref = f"concurrentd-oracle-bad-{os.getpid()}.service"
    res = subprocess.run(["systemd-run", "--quiet", f"--unit={ref}", "-p", "Type=exec",
                          "-p", f"{prop}={value}"] + SLEEP, capture_output=True, text=True)
    if res.returncode == 0:
        subprocess.run(["systemctl", "stop", ref], capture_output=True)
        if not (prop in V1_ONLY and systemd_version() >= 258 and "deprecated" in res.stderr):
            pytest.fail(f"systemd-run accepted {prop}={value}: the BAD table is wrong")
    with Systemd.connect() as sd:
        with pytest.raises((ValueError, SystemdError)):
            unit = sd.start_service(SLEEP, {prop: value})
            unit.stop()

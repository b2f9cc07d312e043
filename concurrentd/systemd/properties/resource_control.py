"""The resource control settings (systemd.resource-control(5)): accounting, weights, limits,
quotas, devices, I/O, IP and BPF filters, socket binds, delegation, OOM handling, pressure."""

from __future__ import annotations

from typing import Any

from .. import _syntax as sx
from .._syntax import UINT64_MAX
from ._kind import Bad, Converted, Kind, Row, list_kind, one, word_list
from .scalars import BOOL, STRING, STRV, TIMESPAN, TIMESPAN_DEF_INF, cpu_set


def _weight_kind(lo: int, hi: int, *, idle: bool = False) -> Kind:
    def text(prop: str, s: str) -> Converted:
        s = s.strip()
        if not s:
            return one(prop, "t", UINT64_MAX)
        if idle and s == "idle":
            return one(prop, "t", 0)
        return one(prop, "t", sx.parse_int(s, lo, hi))
    return Kind(f"a weight {lo}…{hi}" + (" or 'idle'" if idle else ""), text)


CPU_WEIGHT = _weight_kind(1, 10000, idle=True)
IO_WEIGHT = _weight_kind(1, 10000)
CPU_SHARES = _weight_kind(2, 262144)
BLKIO_WEIGHT = _weight_kind(10, 1000)

_EMPTY_IS_MIN = {"DefaultMemoryLow", "DefaultMemoryMin", "MemoryLow", "MemoryMin"}


def _limit(prop: str, s: str) -> Converted:
    s = s.strip()
    if s == "infinity":
        return one(prop, "t", UINT64_MAX)
    if not s:
        return one(prop, "t", 0 if prop in _EMPTY_IS_MIN else UINT64_MAX)
    if sx.is_percentage(s):
        return one(prop + "Scale", "u", sx.scale_from_permyriad(sx.parse_permyriad(s)))
    if prop == "TasksMax":
        return one(prop, "t", sx.parse_int(s, 0, UINT64_MAX))
    return one(prop, "t", sx.parse_size(s, 1024))


def _limit_py(prop: str, value: Any) -> Converted:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Bad("expected a non-negative int (bytes/count) or a string such as '100M', '50%'")
    return one(prop, "t", value)


LIMIT = Kind("bytes ('100M', '1G'), a percentage ('50%'), 'infinity' or an int", _limit, _limit_py)


def _cpu_quota(prop: str, s: str) -> Converted:
    if not s.strip():
        return one("CPUQuotaPerSecUSec", "t", UINT64_MAX)
    p = sx.parse_permyriad(s, bounded=False)
    if p == 0:
        raise Bad("CPU quota too small")
    return one("CPUQuotaPerSecUSec", "t", p * 1_000_000 // 10000)


def _cpu_quota_py(prop: str, value: Any) -> Converted:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise Bad("expected a positive number of CPUs (0.2 = 20%) or a percentage string")
    return _cpu_quota(prop, f"{round(value * 10000)}‱")


CPU_QUOTA = Kind("a percentage of one CPU ('20%', '150%') or a number of CPUs (0.2)",
                 _cpu_quota, _cpu_quota_py)


def _oom_limit(prop: str, s: str) -> Converted:
    return one(prop, "u", sx.scale_from_permyriad(sx.parse_permyriad(s)))


OOM_LIMIT = Kind("a percentage ('60%')", _oom_limit)


CPU_SET = list_kind("a CPU/node list ('0-3 5', '0,2')",
                     lambda p, w: one(p, "ay", cpu_set(" ".join(w))))


def _delegate(prop: str, s: str) -> Converted:
    try:
        return one(prop, "b", sx.parse_boolean(s))
    except ValueError:
        return one("DelegateControllers", "as", sx.split_words(s))


def _delegate_py(prop: str, value: Any) -> Converted:
    if isinstance(value, bool):
        return one(prop, "b", value)
    return one("DelegateControllers", "as", word_list(value))


DELEGATE = Kind("a boolean or a list of controllers ('cpu memory')", _delegate, _delegate_py)


def _path_pair(s: str, what: str) -> tuple[str, str]:
    path, sep, rest = s.strip().partition(" ")
    if not sep or not rest.strip():
        raise Bad(f"expected '<path> <{what}>'")
    return path, rest.strip()


def _device_allow(prop: str, s: str) -> Converted:
    if not s.strip():
        return one(prop, "a(ss)", [])
    path, _, rwm = s.partition(" ")
    return one(prop, "a(ss)", [(path, rwm)])


DEVICE_ALLOW = Kind("'<device> [r][w][m]' (e.g. '/dev/null rw')", _device_allow)


def _io_limit(prop: str, s: str) -> Converted:
    if not s.strip():
        return one(prop, "a(st)", [])
    path, value = _path_pair(s, "limit")
    return one(prop, "a(st)", [(path, UINT64_MAX if value == "infinity" else sx.parse_size(value, 1000))])


IO_LIMIT = Kind("'<device> <bytes or IOPS>' (e.g. '/dev/sda 10M'; base 1000) or 'infinity'", _io_limit)


def _io_device_weight(prop: str, s: str) -> Converted:
    if not s.strip():
        return one(prop, "a(st)", [])
    path, value = _path_pair(s, "weight")
    return one(prop, "a(st)", [(path, sx.parse_int(value, 0, UINT64_MAX))])


IO_DEVICE_WEIGHT = Kind("'<device> <weight>'", _io_device_weight)


def _io_latency(prop: str, s: str) -> Converted:
    if not s.strip():
        return one("IODeviceLatencyTargetUSec", "a(st)", [])
    path, value = _path_pair(s, "time span")
    return one("IODeviceLatencyTargetUSec", "a(st)", [(path, sx.parse_time(value))])


IO_LATENCY = Kind("'<device> <time span>'", _io_latency)

AF_INET, AF_INET6 = 2, 10
_IP_SHORTCUTS = {
    "any": [(AF_INET, "0.0.0.0", 0), (AF_INET6, "::", 0)],
    "localhost": [(AF_INET, "127.0.0.0", 8), (AF_INET6, "::1", 128)],
    "link-local": [(AF_INET, "169.254.0.0", 16), (AF_INET6, "fe80::", 64)],
    "multicast": [(AF_INET, "224.0.0.0", 4), (AF_INET6, "ff00::", 8)],
}


def _ip_addresses(prop: str, words: list[str]) -> Converted:
    import ipaddress
    entries = []
    if len(words) == 1 and words[0] in _IP_SHORTCUTS:
        for family, text, plen in _IP_SHORTCUTS[words[0]]:
            entries.append((family, ipaddress.ip_address(text).packed, plen))
        return one(prop, "a(iayu)", entries)
    for w in words:
        try:
            net = ipaddress.ip_network(w, strict=False)
            addr = ipaddress.ip_address(w.split("/")[0])
        except ValueError:
            raise Bad(f"{w!r} is not an IP address or prefix") from None
        family = AF_INET if addr.version == 4 else AF_INET6
        entries.append((family, addr.packed, net.prefixlen))
    return one(prop, "a(iayu)", entries)


IP_ADDRESSES = list_kind("IP prefixes ('10.0.0.0/8 ::1') or any/localhost/link-local/multicast",
                          _ip_addresses)
SINGLE_PATH_LIST = Kind("a path (empty to reset)",
                        lambda p, s: one(p, "as", [s] if s else []))


def _bpf_program(prop: str, s: str) -> Converted:
    if not s:
        return one(prop, "a(ss)", [])
    kind, sep, path = s.partition(":")
    if not sep:
        raise Bad("expected '<type>:<path>'")
    return one(prop, "a(ss)", [(kind, path)])


BPF_PROGRAM = Kind("'<type>:<path>' (e.g. 'egress:/sys/fs/bpf/prog')", _bpf_program)


def _socket_bind(prop: str, s: str) -> Converted:
    s = s.strip()
    if not s:
        return one(prop, "a(iiqq)", [])
    parts = s.split(":")
    family, proto = 0, 0
    if len(parts) > 1 and parts[0] in ("ipv4", "ipv6"):
        family = AF_INET if parts.pop(0) == "ipv4" else AF_INET6
    if len(parts) > 1 and parts[0] in ("tcp", "udp"):
        proto = 6 if parts.pop(0) == "tcp" else 17
    if len(parts) != 1:
        raise Bad("expected '[ipv4|ipv6:][tcp|udp:]<port>[-<port>]' or 'any'")
    port = parts[0]
    if port == "any":
        return one(prop, "a(iiqq)", [(family, proto, 0, 0)])
    lo, _, hi = port.partition("-")
    a = sx.parse_int(lo, 1 if not hi else 0, 65535)
    b = sx.parse_int(hi, a, 65535) if hi else a
    return one(prop, "a(iiqq)", [(family, proto, b - a + 1, a)])


SOCKET_BIND = Kind("'[ipv4|ipv6:][tcp|udp:]<port>[-<port>]' or 'any'", _socket_bind)


ROWS = [
    Row(STRING, "DevicePolicy Slice ManagedOOMSwap ManagedOOMMemoryPressure ManagedOOMPreference"),
    Row(OOM_LIMIT, "ManagedOOMMemoryPressureLimit"),
    Row(BOOL, "CPUAccounting MemoryAccounting IOAccounting BlockIOAccounting TasksAccounting "
              "IPAccounting"),
    Row(CPU_WEIGHT, "CPUWeight StartupCPUWeight"),
    Row(IO_WEIGHT, "IOWeight StartupIOWeight"),
    Row(CPU_SHARES, "CPUShares StartupCPUShares"),
    Row(CPU_SET, "AllowedCPUs StartupAllowedCPUs AllowedMemoryNodes StartupAllowedMemoryNodes"),
    Row(BLKIO_WEIGHT, "BlockIOWeight StartupBlockIOWeight"),
    Row(STRV, "DisableControllers"),
    Row(DELEGATE, "Delegate"),
    Row(LIMIT, "MemoryMin DefaultMemoryLow DefaultMemoryMin MemoryLow MemoryHigh MemoryMax "
               "MemorySwapMax MemoryLimit TasksMax"),
    Row(CPU_QUOTA, "CPUQuota"),
    Row(TIMESPAN_DEF_INF, "CPUQuotaPeriodSec"),
    Row(DEVICE_ALLOW, "DeviceAllow"),
    Row(IO_LIMIT, "IOReadBandwidthMax IOWriteBandwidthMax IOReadIOPSMax IOWriteIOPSMax "
                  "BlockIOReadBandwidth BlockIOWriteBandwidth"),
    Row(IO_DEVICE_WEIGHT, "IODeviceWeight BlockIODeviceWeight"),
    Row(IO_LATENCY, "IODeviceLatencyTargetSec"),
    Row(IP_ADDRESSES, "IPAddressAllow IPAddressDeny"),
    Row(SINGLE_PATH_LIST, "IPIngressFilterPath IPEgressFilterPath"),
    Row(BPF_PROGRAM, "BPFProgram"),
    Row(SOCKET_BIND, "SocketBindAllow SocketBindDeny"),
    # newer than systemd 252 (table.SINCE says which version)
    Row(BOOL, "MemoryZSwapWriteback CoredumpReceive"),
    Row(STRING, "DelegateSubgroup MemoryPressureWatch BindNetworkInterface CPUPressureWatch "
                "IOPressureWatch"),
    Row(TIMESPAN, "MemoryPressureThresholdSec ManagedOOMMemoryPressureDurationSec "
                  "CPUPressureThresholdSec IOPressureThresholdSec"),
    Row(LIMIT, "MemoryZSwapMax"),
]

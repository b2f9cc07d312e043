"""systemd.exec(5)'s sandboxing settings' value kinds: the …Ex words of newer systemds,
capabilities, allow/deny lists, namespaces, binds, temporary file systems, images, directories
and root hashes. The rows that use them are execution.py's."""

from __future__ import annotations

import os
from typing import Any

from ... import _namespaces
from .. import _syntax as sx
from .._syntax import UINT64_MAX
from ._kind import Bad, Converted, Kind, list_kind, one, word_list
from .scalars import bitset


def _bool_or_ex(prop: str, s: str) -> Converted:
    """A boolean as ever, or one of the words newer systemds take, which travel as the string
    property ``<name>Ex`` (PrivateUsers=identity → PrivateUsersEx, systemd >= 256;
    ProtectControlGroups=private|strict, PrivateTmp=disconnected, systemd >= 257)."""
    try:
        return one(prop, "b", sx.parse_boolean(s))
    except ValueError:
        if prop == "ProtectHostname":   # a mode with a hostname ("yes:NAME") is a word too
            return _protect_hostname_ex("ProtectHostnameEx", s)
        if s.partition(":")[0] not in _EX_WORDS[prop]:
            raise Bad(f"not a boolean nor one of {', '.join(sorted(_EX_WORDS[prop]))}") from None
        return one(prop + "Ex", "s", s)


def _protect_hostname_ex(prop: str, s: str) -> Converted:
    """ProtectHostname= of systemd >= 258: yes, no or private, and optionally ":NAME", the
    hostname the unit's UTS namespace starts with; on the bus a pair (mode, name)."""
    mode, _, name = s.partition(":")
    try:
        mode = "yes" if sx.parse_boolean(mode) else "no"
    except ValueError:
        if mode != "private":
            raise Bad(f"{mode!r}: expected yes, no or private, then optionally ':HOSTNAME'") \
                from None
    if mode == "no" and name:
        raise Bad(f"{s!r}: a hostname needs a UTS namespace of the unit's (yes or private)")
    return one(prop, "(ss)", (mode, name))


PROTECT_HOSTNAME_EX = Kind("yes, no or private, optionally ':HOSTNAME' (systemd >= 258)",
                           _protect_hostname_ex)


#: The words besides booleans (systemd.exec(5) of 256-258); ProtectHostname's are
#: _protect_hostname_ex's.
_EX_WORDS = {"PrivateUsers": {"self", "identity", "full", "managed"},
             "ProtectControlGroups": {"private", "strict"},
             "PrivateTmp": {"disconnected"}}

BOOL_OR_EX = Kind("a boolean, or a word of the property's …Ex form (PrivateUsers=identity, "
                  "ProtectControlGroups=private: systemd >= 256)", _bool_or_ex)


CAPABILITIES = {n: i for i, n in enumerate((
    "chown dac_override dac_read_search fowner fsetid kill setgid setuid setpcap linux_immutable "
    "net_bind_service net_broadcast net_admin net_raw ipc_lock ipc_owner sys_module sys_rawio "
    "sys_chroot sys_ptrace sys_pacct sys_admin sys_boot sys_nice sys_resource sys_time "
    "sys_tty_config mknod lease audit_write audit_control setfcap mac_override mac_admin syslog "
    "wake_alarm block_suspend audit_read perfmon bpf checkpoint_restore").split())}


def _caps(prop: str, s: str) -> Converted:
    s = s.strip()
    invert = s.startswith("~")
    mask = 0
    for word in (s[1:] if invert else s).split():
        name = word.lower().removeprefix("cap_")
        if name in CAPABILITIES:
            mask |= 1 << CAPABILITIES[name]
        elif word.isdigit() and int(word) < 64:
            mask |= 1 << int(word)
        else:
            raise Bad(f"unknown capability {word!r}")
    return one(prop, "t", (~mask & UINT64_MAX) if invert else mask)


CAPS = list_kind("capabilities ('CAP_NET_ADMIN CAP_SYS_PTRACE', '~CAP_SYS_ADMIN' to invert)",
                  lambda p, w: _caps(p, " ".join(w)))


def _allow_deny(prop: str, s: str) -> Converted:
    s = s.strip()
    allow = not s.startswith("~")
    return one(prop, "(bas)", (allow, sx.split_words(s if allow else s[1:])))


def _allow_deny_py(prop: str, value: Any) -> Converted:
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], bool):
        return one(prop, "(bas)", (value[0], word_list(value[1])))
    words = word_list(value)
    if words and words[0].startswith("~"):
        return one(prop, "(bas)", (False, [words[0][1:]] + words[1:]) if words[0] != "~"
                    else (False, words[1:]))
    return one(prop, "(bas)", (True, words))


ALLOW_DENY = Kind("a list, '~' prefixed for a deny list ('@system-service', '~@mount @swap')",
                  _allow_deny, _allow_deny_py)

#: RestrictNamespaces='s words and their CLONE_NEW* flags
NAMESPACES = {ns.name: ns.flag for ns in _namespaces.NAMESPACES if ns.restrictable}
#: what "no" allows and "~…" subtracts from: every namespace the kernel has, time included.
#: systemd before TIME_IN_ALL_SINCE leaves time out of its own "all": Systemd.begin_service()
#: drops the bit for such a manager, so a unit gets the mask that manager's systemd-run sends.
_NS_ALL = sum(ns.flag for ns in _namespaces.NAMESPACES)
CLONE_NEWTIME = _namespaces.FLAGS["time"]
#: the first systemd counting the time namespace among all (257 does not, 262 does: both
#: checked against systemd-run by tests/test_systemd_differential.py; 258 brought
#: DelegateNamespaces= and its table of every namespace)
TIME_IN_ALL_SINCE = 258


def _restrict_ns(prop: str, s: str) -> Converted:
    try:
        return one(prop, "t", 0 if sx.parse_boolean(s) else _NS_ALL)
    except ValueError:
        pass
    s = s.strip()
    invert = s.startswith("~")
    flags = bitset(NAMESPACES, s[1:] if invert else s)
    return one(prop, "t", (~flags & _NS_ALL) if invert else flags)


RESTRICT_NS = Kind("yes/no or namespace types allowed ('net ipc', '~user' to deny)", _restrict_ns)


def _bind_paths(prop: str, words: list[str]) -> Converted:
    entries = []
    for w in words:
        parts = w.split(":")
        if len(parts) > 3 or any(p == "" for p in parts[:2]):
            raise Bad(f"{w!r}: expected '[-]<source>[:<destination>[:rbind|norbind]]'")
        src = parts[0]
        ignore = src.startswith("-")
        src = src[1:] if ignore else src
        dst = parts[1] if len(parts) > 1 else src
        opt = parts[2] if len(parts) > 2 else ""
        if opt not in ("", "rbind", "norbind"):
            raise Bad(f"unknown bind option {opt!r} (rbind or norbind)")
        entries.append((src, dst, ignore, 0 if opt == "norbind" else 16384))  # MS_REC
    return one(prop, "a(ssbt)", entries)


BIND_PATHS = list_kind("'[-]<source>[:<destination>[:rbind|norbind]]' entries", _bind_paths)


def _tmpfs(prop: str, words: list[str]) -> Converted:
    entries = []
    for w in words:
        path, _, opts = w.partition(":")
        entries.append((path, opts))
    return one(prop, "a(ss)", entries)


TMPFS = list_kind("'<path>[:<options>]' entries", _tmpfs)


def _image_options(prop: str, words: list[str]) -> Converted:
    entries = []
    for w in words:
        part, sep, opts = w.partition(":")
        entries.append((part, opts) if sep and opts else ("root", part))
    return one(prop, "a(ss)", entries)


IMAGE_OPTIONS = list_kind("'[<partition>:]<options>' entries", _image_options)


def _mount_images(prop: str, words: list[str]) -> Converted:
    entries = []
    for w in words:
        parts = w.split(":")
        if len(parts) < 2 or not parts[1]:
            raise Bad(f"{w!r}: expected '[-]<image>:<path>[:<partition>:<options>…]'")
        src = parts[0]
        opts = _partition_options(parts[2:])
        entries.append((src.lstrip("-"), parts[1], src.startswith("-"), opts))
    return one(prop, "a(ssba(ss))", entries)


def _partition_options(rest: list[str]) -> list[tuple[str, str]]:
    if len(rest) == 1:
        return [("root", rest[0])]
    return [(rest[i], rest[i + 1]) for i in range(0, len(rest) - 1, 2)]


def _extension_images(prop: str, words: list[str]) -> Converted:
    entries = []
    for w in words:
        parts = w.split(":")
        entries.append((parts[0].lstrip("-"), parts[0].startswith("-"), _partition_options(parts[1:])))
    return one(prop, "a(sba(ss))", entries)


MOUNT_IMAGES = list_kind("'[-]<image>:<path>[:<options>]' entries", _mount_images)
EXTENSION_IMAGES = list_kind("'[-]<image>[:<options>]' entries", _extension_images)


def _directories(prop: str, words: list[str]) -> Converted:
    plain: list[str] = []
    links: list[tuple[str, str, int]] = []
    for w in words:
        src, sep, dst = w.partition(":")
        if not src:
            raise Bad(f"{w!r}: empty directory name")
        if sep and dst:
            links.append((os.path.normpath(src), os.path.normpath(dst), 0))
        else:
            plain.append(os.path.normpath(src))
    out: Converted = [] if (links and not plain) else [(prop, ("as", plain))]
    if links:
        out.append((prop + "Symlink", ("a(sst)", links)))
    return out


DIRECTORIES = list_kind("directory names relative to the base ('foo bar', 'foo:link')", _directories)


def _root_hash(prop: str, s: str) -> Converted:
    if s.startswith("/"):
        return one("RootHashPath", "s", s)
    try:
        data = bytes.fromhex(s)
    except ValueError:
        raise Bad("neither an absolute path nor hex") from None
    if len(data) < 16:
        raise Bad("root hash too short")
    return one(prop, "ay", data)


def _root_hash_sig(prop: str, s: str) -> Converted:
    import base64
    import binascii
    if s.startswith("/"):
        return one("RootHashSignaturePath", "s", s)
    if not s.startswith("base64:"):
        raise Bad("neither an absolute path nor 'base64:…'")
    try:
        return one(prop, "ay", base64.b64decode(s[7:], validate=True))
    except (binascii.Error, ValueError):
        raise Bad("not base64") from None


ROOT_HASH = Kind("hex or an absolute path", _root_hash)
ROOT_HASH_SIG = Kind("'base64:…' or an absolute path", _root_hash_sig)

"""The box's side of the boot: lay out its root and become its systemd.

Runs in the process that will be the box's PID 1, after it entered fresh pid, mount, uts, ipc and
cgroup namespaces. Every step is a plain syscall; a failure raises OSError naming the step, and the
caller reports it to the host through a pipe.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .. import _sys
from .._mountinfo import Hierarchy

SYSTEMD = "/lib/systemd/systemd"
TARGET = "testbed.target"   # not concurrentd-*: tests list their units by that pattern

# Units that would reach out of the box: they change kernel settings (/proc/sys is read-only in the
# box anyway), load modules, register binfmt handlers, remount the host's file systems, step the
# clock, or grab the console.
MASKED_UNITS = (
    "systemd-sysctl.service",
    "systemd-modules-load.service",
    "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount",
    "proc-sys-fs-binfmt_misc.mount",
    "systemd-remount-fs.service",
    "systemd-timesyncd.service",
    "getty@tty1.service",
    "console-getty.service",
    "serial-getty@console.service",
)


@dataclass
class BootSpec:
    state_dir: str                 # an empty host directory; a tmpfs is mounted on it in the box
    hierarchies: list[Hierarchy]   # the caller's cgroup hierarchies, to mount again in the box
    # host directories shown read-write, each mapped to where the box mounts it (box.place)
    binds: dict[str, str] = field(default_factory=dict)


def _mkdirs(path: str) -> None:
    os.makedirs(path, exist_ok=True)


def _mount_cgroups(root: str, hierarchies: list[Hierarchy]) -> bool:
    """Mounts every hierarchy the host has, each on its own; returns True for a unified host.

    The cgroup namespace roots each mount at the box's sub-cgroup. systemd's own mount step would
    co-mount cpu,cpuacct where the host has them apart, and fail; so the box mounts them first.
    """
    base = os.path.join(root, "sys/fs/cgroup")
    v1 = [h for h in hierarchies if h.version == 1]
    if not v1:
        _sys.mount("cgroup2", base, "cgroup2", _sys.MS_NOSUID | _sys.MS_NODEV | _sys.MS_NOEXEC)
        return True
    _sys.mount("cgroup", base, "tmpfs", _sys.MS_NOSUID | _sys.MS_NODEV | _sys.MS_NOEXEC, "mode=755")
    for h in hierarchies:
        target = os.path.join(base, os.path.basename(h.mount_point))
        os.mkdir(target)
        if h.version == 2:
            _sys.mount("cgroup2", target, "cgroup2", _sys.MS_NOSUID | _sys.MS_NODEV | _sys.MS_NOEXEC)
        else:
            opts = ",".join(h.options) if any(not o.startswith("name=") for o in h.options) \
                else ",".join(("none",) + h.options)
            _sys.mount("cgroup", target, "cgroup", _sys.MS_NOSUID | _sys.MS_NODEV | _sys.MS_NOEXEC,
                       opts)
    return False


def _write_units(root: str) -> None:
    units = os.path.join(root, "run/systemd/system")
    _mkdirs(units)
    with open(os.path.join(units, TARGET), "w") as f:
        f.write("[Unit]\nDescription=concurrentd testbed\nWants=dbus.socket dbus.service\n")
    for unit in MASKED_UNITS:
        os.symlink("/dev/null", os.path.join(units, unit))


def boot(spec: BootSpec) -> None:
    """Never returns: execs systemd, or raises OSError."""
    s = spec.state_dir
    # 1. nothing mounted from here on may propagate back to the host
    _sys.mount(None, "/", None, _sys.MS_REC | _sys.MS_PRIVATE)

    # 2. the root: an overlay of the host's / whose writes land in a tmpfs that dies with the box.
    #    Without it the box's systemd-tmpfiles would empty the host's /tmp.
    _sys.mount("concurrentd-testbed", s, "tmpfs", 0, "mode=755")
    for d in ("upper", "work", "root"):
        os.mkdir(os.path.join(s, d))
    root = os.path.join(s, "root")
    _sys.mount("overlay", root, "overlay", 0,
               f"lowerdir=/,upperdir={s}/upper,workdir={s}/work")

    # 3. API file systems. /proc/sys read-only: no unit in the box changes the host's kernel.
    _sys.mount("/dev", os.path.join(root, "dev"), None, _sys.MS_BIND | _sys.MS_REC)
    _sys.mount("proc", os.path.join(root, "proc"), "proc", _sys.MS_NOSUID | _sys.MS_NODEV | _sys.MS_NOEXEC)
    procsys = os.path.join(root, "proc/sys")
    _sys.mount(procsys, procsys, None, _sys.MS_BIND)
    _sys.mount(None, procsys, None, _sys.MS_BIND | _sys.MS_REMOUNT | _sys.MS_RDONLY)
    _sys.mount("sysfs", os.path.join(root, "sys"), "sysfs", _sys.MS_NOSUID | _sys.MS_NODEV | _sys.MS_NOEXEC)
    unified = _mount_cgroups(root, spec.hierarchies)
    #    /tmp and /var/tmp are the box's own, empty, as a unit's with PrivateTmp=
    for d, mode in (("run", "755"), ("tmp", "1777"), ("var/tmp", "1777")):
        _sys.mount("tmpfs", os.path.join(root, d), "tmpfs", _sys.MS_NOSUID | _sys.MS_NODEV,
                   f"mode={mode}")

    # 4. what the command needs, read-write (results come back to the host): at the same path,
    #    or where box.place put it
    for path, where in spec.binds.items():
        target = root + where
        _mkdirs(target)
        _sys.mount(path, target, None, _sys.MS_BIND | _sys.MS_REC)

    # 5. a minimal default target with the system bus, host-touching units masked
    _write_units(root)

    # 6. switch root and become systemd
    os.chdir(root)
    os.mkdir(".oldroot")
    _sys.pivot_root(".", ".oldroot")
    _sys.umount("/.oldroot", _sys.MNT_DETACH)
    os.rmdir("/.oldroot")
    os.chdir("/")
    devnull = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.execve(SYSTEMD, [SYSTEMD, "--system", f"--unit={TARGET}",
                        f"systemd.unified_cgroup_hierarchy={1 if unified else 0}"],
              {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"})

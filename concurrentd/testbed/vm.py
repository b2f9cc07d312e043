"""A real Debian host in a VM: another systemd as PID 1 on pure cgroup v2, for what a box
cannot show.

    python -m concurrentd.testbed.vm [--suite trixie|sid|bookworm] [--dir DIR] [--timeout S]
                                     [-- CMD ARGS...]

The testbed box boots the host's own systemd over its cgroup hierarchy (here: systemd 252,
hybrid). Some behaviour exists only on other hosts: systemd's OOMPolicy= acting on memory.events,
MemoryDenyWriteExecute= applied with prctl(PR_SET_MDWE) (systemd >= 253), PrivatePIDs= (257),
systemd >= 258 without any cgroup v1, another kernel and Python. This module boots a Debian suite
(SUITES; trixie by default) on pure cgroup v2 under QEMU, runs CMD as root in a copy of this
checkout inside it (built there first), streams its output, and exits with its status. CMD
defaults to the test suite (``python3 -m pytest -q -p no:cacheprovider -m "not host"``: the tests
marked host boot testbed boxes, for hosts whose PID 1 is not systemd); name tests to run only
those, e.g. ``-- python3 -m pytest -q -p no:cacheprovider tests/test_executor.py -k oom``, or run
CI's selection: ``-- sh .ci/vm-tests all``.

How (each step is cached in DIR, default ~/.cache/concurrentd-vm/SUITE, or
$CONCURRENTD_VM_DIR/SUITE; the first run builds the image, 2 to 10 minutes and ~1.7 GB; later runs
only boot, ~20 s):

    apt (a state directory of its own, the host's apt untouched) -> Debian's kernel and busybox
    kernel -> vmlinux (QEMU boots the uncompressed ELF), a few modules -> a busybox initrd that
        mounts the root disk and switch_root's to systemd
    debootstrap -> the suite's root file system with systemd, Python and the test dependencies;
        vmrun.service runs /mnt/host/run.sh from a 9p share once the system is up, powers off
    mkfs.ext4 -d -> root.img, booted read-only (snapshot=on): every run starts from the same disk

QEMU runs with TCG (software emulation: no KVM needed); the guest boots in about 20 s and runs
commands 10 to 20 times slower than the host. The guest has no network. Needs root on a Debian or
Ubuntu host (it installs qemu-system-x86, debootstrap, zstd, xz-utils when missing).
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from typing import Any, BinaryIO, Sequence

from ._errors import TestbedError

#: The Debian suites a VM can run, with what each brings that the box's host does not.
SUITES = {
    "trixie": "Debian 13: systemd 257, Python 3.13, kernel 6.12",
    "sid": "Debian unstable: systemd 258 or newer (no cgroup v1 at all), Python 3.14",
    "bookworm": "Debian 12: systemd 252 as on the box's host, but on pure cgroup v2",
}
#: Each suite's python3, whose test package (CPython's own tests, for tests/cpython_suite.py)
#: the image holds too.
PYTHONS = {"trixie": "3.13", "sid": "3.14", "bookworm": "3.11"}
DEFAULT_SUITE = "trixie"
#: The guest's packages: systemd as PID 1 (debootstrap's), and what building and testing
#: concurrentd needs (apt's, in the new root: debootstrap does not resolve virtual packages, such
#: as python3-pycparser's python3-ply-lex-3.10).
BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "udev", "kmod")
PACKAGES = ("python3", "python3-dev", "gcc", "libc6-dev", "python3-cffi", "python3-setuptools",
            "python3-pytest", "python3-jeepney", "python3-cloudpickle")
#: Modules the initrd loads to mount the root disk (virtio-blk, ext4) and the share (9p), each
#: after those it depends on (its .modinfo's depends=). Some are needed with no depends= naming
#: them: crc32c_generic (ext4 asks the crypto API for crc32c) and virtio_pci (the bus the virtio
#: devices are found on). Those a kernel has built in are left out.
INITRD_MODULES = ("crc32c_generic", "virtio_pci", "virtio_blk", "ext4", "9pnet_virtio", "9p")
#: Units of a real host that have nothing to do in the VM, or wait for hardware it lacks.
MASKED = ("systemd-udev-trigger", "getty@tty1", "serial-getty@ttyS0", "modprobe@fuse",
          "modprobe@drm", "modprobe@configfs", "modprobe@efi_pstore", "modprobe@dm_mod",
          "modprobe@loop")
HOST_TOOLS = {"qemu-system-x86_64": "qemu-system-x86", "debootstrap": "debootstrap",
              "zstd": "zstd", "xz": "xz-utils", "mkfs.ext4": "e2fsprogs", "cpio": "cpio"}
#: The suite, without the tests marked host: those boot testbed boxes of their own, for hosts
#: whose PID 1 is not systemd (the VM's is).
DEFAULT_CMD = ("python3", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not host")
IMAGE_SIZE = "4G"
#: main()'s status when the image could not be built (no mirror, no root…): nothing was run
NO_IMAGE = 3
#: bump when the image's recipe changes: a cached image of another version is rebuilt
IMAGE_VERSION = "5"

_INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /dev /r
mount -t proc proc /proc
mount -t devtmpfs dev /dev
for m in $(cat /m/order); do insmod /m/$m.ko; done
i=0; while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
mount /dev/vda /r || { echo "initrd: cannot mount /dev/vda"; poweroff -f; }
umount /proc
mount --move /dev /r/dev
exec switch_root /r /sbin/init
"""

# Waits for the system to be up (a test of a host, not of a booting one), mounts the share, runs
# run.sh there, writes its status beside it, powers off. Type=simple: its own start job must be
# done, or is-system-running --wait would wait for it for ever.
_VMRUN = """[Unit]
Description=concurrentd: run the command shared by the host, then power off

[Service]
Type=simple
StandardOutput=journal+console
ExecStart=/bin/sh -c 'systemctl is-system-running --wait; \
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 host /mnt/host && cd /mnt/host && \
{ ./run.sh > out.txt 2>&1; echo $$? > status; cd /; umount /mnt/host; }; systemctl poweroff'

[Install]
WantedBy=multi-user.target
"""

_RUN_SH = """#!/bin/sh
# Written by concurrentd.testbed.vm: build the checkout's copy, then run the command.
cd /mnt/host/src || exit 2
export HOME=/root PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# importable as after pip install -e (the disk is a snapshot: gone at power-off), also for the
# scripts the tests start with an environment of their own (examples, owners in tmp_path)
echo /mnt/host/src > "$(python3 -c 'import site; print(site.getsitepackages()[0])')/concurrentd-checkout.pth"
echo "vm: $(systemctl --version | head -1), cgroup $(stat -fc %T /sys/fs/cgroup), kernel $(uname -r), $(python3 -V)"
if python3 -c 'import setuptools as s, sys; sys.exit(int(s.__version__.split(".")[0]) < 77)'; then
  python3 setup.py -q build_ext --inplace > /tmp/build.log 2>&1 || { cat /tmp/build.log; exit 2; }
else  # Debian 12's setuptools cannot read pyproject.toml (its license): cffi's C, then cc
  { python3 -c 'import build_ffi; build_ffi.ffibuilder.emit_c_code("concurrentd/_core.c")' &&
    cc -shared -fPIC -O2 $(python3-config --includes) -Icsrc concurrentd/_core.c \
      $(ls csrc/*.c | grep -v anchor) -o "concurrentd/_core$(python3-config --extension-suffix)" &&
    cc -static -Os -s -o concurrentd/_anchor csrc/anchor.c; } > /tmp/build.log 2>&1 \
    || { cat /tmp/build.log; exit 2; }
fi
exec {cmd}
"""


def default_dir(suite: str = DEFAULT_SUITE) -> str:
    base = os.environ.get("CONCURRENTD_VM_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "concurrentd-vm")
    return os.path.join(base, suite)


def _say(msg: str) -> None:
    print(f"concurrentd.testbed.vm: {msg}", file=sys.stderr, flush=True)


def _run(cmd: Sequence[str], what: str, **kw: Any) -> subprocess.CompletedProcess[Any]:
    try:
        return subprocess.run(list(cmd), check=True, **kw)
    except subprocess.CalledProcessError as e:
        detail = (e.stderr or b"").decode(errors="replace").strip()[-2000:] if isinstance(
            e.stderr, bytes) else ""
        raise TestbedError(f"{what}: {shlex.join(cmd)} exited with status {e.returncode}"
                           + (f": {detail}" if detail else "")) from None
    except FileNotFoundError:
        raise TestbedError(f"{what}: {cmd[0]} is not installed") from None


def _host_mirror() -> str:
    """The Debian mirror the host's apt uses (deb822 sources first), else deb.debian.org."""
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        with open(path) as f:
            for line in f:
                if line.startswith("URIs:") and "security" not in line:
                    return line.split()[1]
    return "http://deb.debian.org/debian"


class VM:
    """The image of one Debian ``suite`` and its runs, in ``directory``."""

    def __init__(self, directory: str | None = None, *, suite: str = DEFAULT_SUITE,
                 mirror: str | None = None, memory: str = "2048", cpus: int = 2,
                 accel: str = "tcg"):
        if suite not in SUITES:
            raise TestbedError(f"unknown Debian suite {suite!r}: choose one of "
                               + ", ".join(SUITES))
        self.suite = suite
        self.dir = os.path.abspath(directory or default_dir(suite))
        self.mirror = mirror or _host_mirror()
        self.memory, self.cpus, self.accel = memory, cpus, accel

    def path(self, *parts: str) -> str:
        return os.path.join(self.dir, *parts)

    # -- the image -------------------------------------------------------------------------
    def ready(self) -> bool:
        return _done(self.path("image.version")) and all(
            os.path.exists(self.path(p)) for p in ("vmlinux", "initrd.gz", "root.img"))

    def prepare(self) -> None:
        """Builds what is missing: host tools, kernel, initrd, root file system, disk image."""
        if os.geteuid() != 0:
            raise TestbedError("the VM image is built as root (debootstrap, mkfs)")
        os.makedirs(self.dir, exist_ok=True)
        if self.ready():
            return
        self._host_tools()
        self._apt_update()
        if not _done(self.path("kernel.done")):
            self._kernel_and_initrd()
            _mark(self.path("kernel.done"))
        if not _done(self.path("rootfs", ".complete")):
            self._rootfs()
        self._image()
        _mark(self.path("image.version"))

    def _host_tools(self) -> None:
        missing = sorted({pkg for tool, pkg in HOST_TOOLS.items() if not shutil.which(tool)})
        if missing:
            _say(f"installing {' '.join(missing)} on the host")
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
                 "installing the host's tools", env=env, stdout=subprocess.DEVNULL)

    def _apt(self) -> list[str]:
        """apt options for a state of our own: the suite's lists, never the host's."""
        a = self.path("apt")
        return ["-o", "Dir::Etc::SourceList=/dev/null", "-o", f"Dir::Etc::SourceParts={a}/src",
                "-o", f"Dir::State::Lists={a}/lists", "-o", "Dir::State::status=/dev/null",
                "-o", f"Dir::Cache={a}/cache", "-o", "Debug::NoLocking=1"]

    def _apt_update(self) -> None:
        a = self.path("apt")
        for d in ("src", "lists/partial", "cache/archives/partial"):
            os.makedirs(os.path.join(a, d), exist_ok=True)
        with open(os.path.join(a, "src", "suite.sources"), "w") as f:
            f.write(f"Types: deb\nURIs: {self.mirror}\nSuites: {self.suite}\nComponents: main\n"
                    "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
        _say(f"apt update ({self.suite}, {self.mirror})")
        _run(["apt-get", *self._apt(), "update", "-qq"], "apt-get update", capture_output=True)

    def _download(self, package: str, into: str) -> str:
        os.makedirs(into, exist_ok=True)
        _run(["apt-get", *self._apt(), "download", "-qq", package], f"downloading {package}",
             cwd=into, capture_output=True)
        (deb,) = glob.glob(os.path.join(into, f"{package}_*.deb"))
        return deb

    def _depends(self, package: str) -> list[str]:
        out = _run(["apt-cache", *self._apt(), "depends", package], "apt-cache depends",
                   capture_output=True, text=True).stdout
        return [line.split(":", 1)[1].strip() for line in out.splitlines()
                if line.strip().startswith("Depends:")]

    def _kernel_packages(self) -> list[str]:
        """The suite's kernel: linux-image-VERSION, and since Debian's 7.x kernels the
        linux-binary- and linux-modules- packages it depends on, which hold the files."""
        images = [p for p in self._depends("linux-image-amd64")
                  if re.fullmatch(r"linux-image-\d.*", p)]
        if not images:
            raise TestbedError("no kernel package found in linux-image-amd64's depends")
        parts = [p for p in self._depends(images[0])
                 if re.fullmatch(r"linux-(binary|modules)-\d.*", p)]
        return [images[0], *parts]

    def _kernel_and_initrd(self) -> None:
        work = self.path("kernel")
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        kpkgs = self._kernel_packages()
        kpkg = kpkgs[0]
        _say(f"kernel {kpkg}, busybox")
        kdebs = [self._download(p, work) for p in kpkgs]
        bdeb = self._download("busybox-static", work)
        for deb in kdebs:
            _run(["dpkg-deb", "-x", deb, os.path.join(work, "k")], "unpacking the kernel")
        _run(["dpkg-deb", "-x", bdeb, os.path.join(work, "bb")], "unpacking busybox")
        # /boot/vmlinuz-VERSION; since the 7.x packages /usr/lib/modules/VERSION/vmlinuz
        found = (glob.glob(os.path.join(work, "k", "boot", "vmlinuz-*"))
                 + glob.glob(os.path.join(work, "k", "usr", "lib", "modules", "*", "vmlinuz")))
        if not found:
            raise TestbedError(f"{', '.join(kpkgs)}: no vmlinuz in /boot or /usr/lib/modules")
        vmlinuz = found[0]
        with open(vmlinuz, "rb") as f:
            data = f.read()
        # the compressed kernel inside the bzImage: zstd (trixie, sid) or xz (bookworm); the
        # bzImage's trailer follows the stream: the tool reports it, the ELF is complete
        streams = [(data.find(magic), tool) for magic, tool in (
            (b"\x28\xb5\x2f\xfd", ["zstd", "-dcq"]),
            (b"\xfd7zXZ\x00", ["xz", "-dcq", "--single-stream"]))]
        found_streams = [(start, tool) for start, tool in streams if start >= 0]
        if not found_streams:
            raise TestbedError(f"{vmlinuz}: no zstd or xz payload (another compression?)")
        start, tool = found_streams[0]
        with open(self.path("vmlinux.tmp"), "wb") as out:
            subprocess.run(tool, input=data[start:], stdout=out, stderr=subprocess.DEVNULL)
        if os.path.getsize(self.path("vmlinux.tmp")) < 1 << 20:
            raise TestbedError(f"{vmlinuz}: decompressing the kernel failed")
        ir = os.path.join(work, "ir")
        for d in ("bin", "m"):
            os.makedirs(os.path.join(ir, d))
        busybox = glob.glob(os.path.join(work, "bb", "*", "busybox")) + glob.glob(
            os.path.join(work, "bb", "usr", "*", "busybox"))   # /bin, or /usr/bin (merged /usr)
        if not busybox:
            raise TestbedError("busybox-static has no busybox executable")
        shutil.copy(busybox[0], os.path.join(ir, "bin", "busybox"))
        loaded = _initrd_modules(os.path.join(work, "k"), os.path.join(ir, "m"))
        with open(os.path.join(ir, "m", "order"), "w") as f:
            f.write("\n".join(loaded) + "\n")
        with open(os.path.join(ir, "init"), "w") as f:
            f.write(_INIT)
        os.chmod(os.path.join(ir, "init"), 0o755)
        names = subprocess.run(["find", "."], cwd=ir, capture_output=True, check=True).stdout
        cpio = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=ir, input=names,
                              capture_output=True, check=True).stdout
        with open(self.path("initrd.gz.tmp"), "wb") as out:
            subprocess.run(["gzip", "-1"], input=cpio, stdout=out, check=True)
        os.replace(self.path("vmlinux.tmp"), self.path("vmlinux"))
        os.replace(self.path("initrd.gz.tmp"), self.path("initrd.gz"))
        # the guest's own modules (loop, overlay…), for what systemd or a test may load
        modules = glob.glob(os.path.join(work, "k", "usr", "lib", "modules", "*")) or glob.glob(
            os.path.join(work, "k", "lib", "modules", "*"))
        with open(self.path("kernel.modules"), "w") as f:
            f.write(modules[0] if modules else "")

    def _rootfs(self) -> None:
        root = self.path("rootfs")
        if not _done(os.path.join(root, ".packages")):
            self._packages(root)
        self._configure(root)
        _mark(os.path.join(root, ".complete"))

    def _packages(self, root: str) -> None:
        shutil.rmtree(root, ignore_errors=True)
        _say(f"debootstrap {self.suite} (several minutes)")
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", self.suite,
              root, self.mirror], "debootstrap", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        packages = [*PACKAGES, f"libpython{PYTHONS[self.suite]}-testsuite"]
        _say("apt-get install (in the new root) " + " ".join(packages))
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive",
               "LC_ALL": "C"}
        _run(["chroot", root, "apt-get", "install", "-y", "-q", "--no-install-recommends",
              *packages], "apt-get install in the new root", env=env, stdout=subprocess.DEVNULL,
             stderr=subprocess.PIPE)
        _run(["chroot", root, "apt-get", "clean"], "apt-get clean", env=env)
        _mark(os.path.join(root, ".packages"))

    def _configure(self, root: str) -> None:
        etc = os.path.join(root, "etc")
        open(os.path.join(etc, "fstab"), "w").close()
        for stamp in ("etc/.updated", "var/.updated"):   # no ConditionNeedsUpdate= work at boot
            open(os.path.join(root, stamp), "w").close()
        with open(os.path.join(etc, "hostname"), "w") as f:
            f.write("concurrentd-vm\n")
        os.makedirs(os.path.join(root, "mnt", "host"), exist_ok=True)
        units = os.path.join(etc, "systemd", "system")
        for unit in MASKED:
            link = os.path.join(units, f"{unit}.service")
            if os.path.lexists(link):
                os.unlink(link)
            os.symlink("/dev/null", link)
        with open(os.path.join(units, "vmrun.service"), "w") as f:
            f.write(_VMRUN)
        wants = os.path.join(units, "multi-user.target.wants")
        os.makedirs(wants, exist_ok=True)
        if not os.path.lexists(os.path.join(wants, "vmrun.service")):
            os.symlink("../vmrun.service", os.path.join(wants, "vmrun.service"))
        with open(self.path("kernel.modules")) as f:
            modules = f.read().strip()
        if modules:
            dest = os.path.join(root, "usr", "lib", "modules", os.path.basename(modules))
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(modules, dest, symlinks=True)
            depmod = ["depmod", "-b", root] if shutil.which("depmod") else ["chroot", root, "depmod"]
            try:
                _run([*depmod, os.path.basename(modules)], "depmod", capture_output=True)
            except TestbedError as e:   # modules stay loadable by path (insmod), not by name
                _say(f"{e} (going on)")

    def _image(self) -> None:
        _say("root.img")
        tmp = self.path("root.img.tmp")
        if os.path.exists(tmp):
            os.unlink(tmp)
        _run(["truncate", "-s", IMAGE_SIZE, tmp], "truncate")
        _run(["mkfs.ext4", "-q", "-F", "-d", self.path("rootfs"), tmp], "mkfs.ext4",
             capture_output=True)
        os.replace(tmp, self.path("root.img"))

    # -- a run -----------------------------------------------------------------------------
    def run(self, cmd: Sequence[str], *, source: str, timeout: float = 3600,
            out: BinaryIO | None = None) -> int:
        """Boots the VM, runs ``cmd`` in a copy of ``source`` (a checkout) and returns its status;
        its output is copied to ``out`` (default: stdout) as it comes."""
        out = out or sys.stdout.buffer
        if not self.ready():
            raise TestbedError(f"no VM image in {self.dir}: prepare() (python -m "
                               "concurrentd.testbed.vm builds it)")
        share = self.path("runs", str(os.getpid()))
        shutil.rmtree(share, ignore_errors=True)
        os.makedirs(share)
        try:
            _copy_checkout(source, os.path.join(share, "src"))
            with open(os.path.join(share, "run.sh"), "w") as f:
                f.write(_RUN_SH.replace("{cmd}", shlex.join(cmd)))
            os.chmod(os.path.join(share, "run.sh"), 0o755)
            return self._boot(share, timeout, out)
        finally:
            shutil.rmtree(share, ignore_errors=True)

    def _boot(self, share: str, timeout: float, out: BinaryIO) -> int:
        console = self.path("console.log")
        qemu = ["qemu-system-x86_64", "-accel", self.accel, "-cpu", "max", "-m", self.memory,
                "-smp", str(self.cpus), "-nographic", "-no-reboot", "-net", "none",
                "-kernel", self.path("vmlinux"), "-initrd", self.path("initrd.gz"),
                "-append", "console=ttyS0 panic=-1 quiet mitigations=off no5lvl",
                "-drive", f"file={self.path('root.img')},if=virtio,format=raw,snapshot=on",
                "-virtfs", f"local,path={share},mount_tag=host,security_model=none"]
        output, status = os.path.join(share, "out.txt"), os.path.join(share, "status")
        start = time.monotonic()
        with open(console, "wb") as log:
            p = subprocess.Popen(qemu, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                 start_new_session=True)
            offset = 0
            try:
                while True:
                    done = p.poll() is not None
                    offset = _copy_new(output, offset, out)
                    if done:
                        break
                    if time.monotonic() - start > timeout:
                        _say(f"the VM did not finish within {timeout:g} s: stopped")
                        return 124
                    time.sleep(0.5)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        try:
            with open(status) as f:
                return int(f.read().strip())
        except (FileNotFoundError, ValueError):
            with open(console, "rb") as f:
                tail = f.read()[-3000:].decode(errors="replace")
            raise TestbedError(f"the VM stopped without running the command (QEMU exited "
                               f"{p.returncode}); the end of {console}:\n{tail}") from None


def _initrd_modules(tree: str, into: str) -> list[str]:
    """Unpacks INITRD_MODULES and what they depend on from the kernel package's ``tree`` into
    ``into``, as NAME.ko; returns the names in an order insmod can load them in."""
    order: list[str] = []

    def add(name: str) -> None:
        if name in order:
            return
        found = (glob.glob(os.path.join(tree, "**", f"{name}.ko*"), recursive=True)
                 or glob.glob(os.path.join(tree, "**", f"{name.replace('_', '-')}.ko*"),
                              recursive=True))
        if not found:   # built in
            return
        if found[0].endswith(".xz"):
            data = _run(["xz", "-dc", found[0]], f"unpacking {name}", capture_output=True).stdout
        elif found[0].endswith(".zst"):
            data = _run(["zstd", "-dcq", found[0]], f"unpacking {name}",
                        capture_output=True).stdout
        else:
            with open(found[0], "rb") as f:
                data = f.read()
        for dep in _module_depends(data):
            add(dep)
        with open(os.path.join(into, f"{name}.ko"), "wb") as out:
            out.write(data)
        order.append(name)

    for name in INITRD_MODULES:
        add(name)
    return order


def _module_depends(module: bytes) -> list[str]:
    """The modules a kernel module needs loaded first: its .modinfo's ``depends=a,b``."""
    start = module.find(b"\0depends=")
    if start < 0:
        return []
    value = module[start + len(b"\0depends="):module.index(b"\0", start + 1)]
    return [d for d in value.decode().split(",") if d]


def _done(marker: str) -> bool:
    """Whether the step that writes ``marker`` ran with this IMAGE_VERSION's recipe."""
    try:
        with open(marker) as f:
            return f.read().strip() == IMAGE_VERSION
    except FileNotFoundError:
        return False


def _mark(marker: str) -> None:
    with open(marker, "w") as f:
        f.write(IMAGE_VERSION + "\n")


def _copy_new(path: str, offset: int, out: BinaryIO) -> int:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return offset
    if data:
        out.write(data)
        out.flush()
    return offset + len(data)


def _copy_checkout(source: str, dest: str) -> None:
    """The checkout's files as they are now (tracked and untracked, not ignored: uncommitted
    changes included); without git, everything but builds and caches."""
    try:
        names = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"],
                               cwd=source, capture_output=True, check=True).stdout
        files = [n for n in names.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        files = None
    if files is None:
        skip = ("__pycache__", ".git", "build")
        shutil.copytree(source, dest, ignore=shutil.ignore_patterns(*skip, "*.so", ".venv*"))
        return
    for name in files:
        src = os.path.join(source, name)
        if not os.path.isfile(src):   # deleted in the work tree
            continue
        target = os.path.join(dest, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(src, target)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m concurrentd.testbed.vm",
                                description="Run a command in a Debian VM (pure cgroup v2), in "
                                            "a copy of this checkout.")
    p.add_argument("--suite", choices=sorted(SUITES), default=DEFAULT_SUITE,
                   help="; ".join(f"{k}: {v}" for k, v in SUITES.items())
                   + f" (default {DEFAULT_SUITE})")
    p.add_argument("--dir", default=None,
                   help=f"the image's cache (default {default_dir('SUITE')})")
    p.add_argument("--timeout", type=float, default=3600, help="seconds for the whole run")
    p.add_argument("--prepare-only", action="store_true", help="build the image, run nothing")
    p.add_argument("--mirror", default=None, help="Debian mirror (default: the host apt's)")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS... (default: the suite)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    source = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    vm = VM(args.dir, suite=args.suite, mirror=args.mirror)
    try:
        vm.prepare()
    except TestbedError as e:
        _say(f"{e}\nno VM image: nothing was run (status {NO_IMAGE})")
        return NO_IMAGE
    except KeyboardInterrupt:
        return 130
    try:
        if args.prepare_only:
            return 0
        return vm.run(cmd or list(DEFAULT_CMD), source=source, timeout=args.timeout)
    except TestbedError as e:
        _say(str(e))
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

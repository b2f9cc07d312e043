"""The VM testbed's pure parts (building and booting the image is `python -m concurrentd.testbed.vm`'s,
by hand: see README, "Another host: a Debian VM")."""

import os
import shutil
import subprocess

import pytest

from concurrentd.testbed import vm

pytestmark = pytest.mark.pure   # needs neither root nor systemd (see conftest)


@pytest.mark.skipif(shutil.which("git") is None, reason="no git here (the VM's guest has none)")
def test_a_checkout_is_copied_as_it_is_now_without_what_git_ignores(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    run = lambda *a: subprocess.run(["git", *a], cwd=src, check=True, capture_output=True)  # noqa: E731
    run("init", "-q")
    (src / ".gitignore").write_text("*.so\nbuild/\n")
    (src / "pkg").mkdir()
    (src / "pkg" / "a.py").write_text("committed")
    run("add", "-A")
    run("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "x")
    (src / "pkg" / "a.py").write_text("changed, not committed")
    (src / "pkg" / "new.py").write_text("untracked")
    (src / "pkg" / "core.so").write_text("ignored")
    (src / "build").mkdir()
    (src / "build" / "x.o").write_text("ignored")
    vm._copy_checkout(str(src), str(dst))
    got = sorted(os.path.relpath(os.path.join(d, f), dst) for d, _, fs in os.walk(dst) for f in fs)
    assert got == [".gitignore", "pkg/a.py", "pkg/new.py"]
    assert (dst / "pkg" / "a.py").read_text() == "changed, not committed"


def test_the_guest_script_runs_the_command_quoted_and_finds_the_checkout():
    script = vm._RUN_SH.replace("{cmd}", __import__("shlex").join(
        ["python3", "-m", "pytest", "-k", "oom or memory_deny"]))
    assert "exec python3 -m pytest -k 'oom or memory_deny'" in script
    assert "echo /mnt/host/src > " in script and ".pth" in script   # as pip install -e
    assert vm.DEFAULT_CMD[-2:] == ("-m", "not host")


def test_an_image_is_ready_only_when_whole_and_of_this_recipe(tmp_path):
    v = vm.VM(str(tmp_path))
    assert not v.ready()
    for name in ("vmlinux", "initrd.gz", "root.img"):
        (tmp_path / name).write_text("")
    (tmp_path / "image.version").write_text("0\n")
    assert not v.ready()
    (tmp_path / "image.version").write_text(vm.IMAGE_VERSION + "\n")
    assert v.ready()


def test_a_step_done_with_another_recipe_is_done_again(tmp_path):
    marker = str(tmp_path / ".packages")
    assert not vm._done(marker)
    (tmp_path / ".packages").write_text("")   # as the first recipe left it
    assert not vm._done(marker)
    vm._mark(marker)
    assert vm._done(marker)


def test_an_initrd_module_comes_after_those_it_depends_on(tmp_path):
    ko = lambda depends: b"\x7fELF..." + b"\0license=GPL\0depends=" + depends + b"\0name=x\0"  # noqa: E731
    assert vm._module_depends(ko(b"virtio,virtio_ring")) == ["virtio", "virtio_ring"]
    assert vm._module_depends(ko(b"")) == []
    assert vm._module_depends(b"\x7fELF no modinfo") == []
    tree, into = tmp_path / "k", tmp_path / "m"
    (tree / "fs").mkdir(parents=True)
    into.mkdir()
    (tree / "fs" / "ext4.ko").write_bytes(ko(b"jbd2,mbcache"))
    (tree / "fs" / "jbd2.ko").write_bytes(ko(b""))
    (tree / "fs" / "mbcache.ko").write_bytes(ko(b""))
    (tree / "fs" / "9p.ko").write_bytes(ko(b"9pnet"))   # 9pnet: built in, as virtio_blk here
    order = vm._initrd_modules(str(tree), str(into))
    assert order == ["jbd2", "mbcache", "ext4", "9p"]
    assert sorted(p.name for p in into.iterdir()) == ["9p.ko", "ext4.ko", "jbd2.ko", "mbcache.ko"]


def test_the_testbeds_vm_option_is_the_vm_modules_suite(capsys):
    from concurrentd.testbed.__main__ import main

    with pytest.raises(SystemExit):   # argparse refuses the suite, naming the choices
        main(["--vm", "nope", "--", "true"])
    assert "choose from 'bookworm', 'sid', 'trixie'" in capsys.readouterr().err

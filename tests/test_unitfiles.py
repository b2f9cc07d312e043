"""The copies a unit runs or imports from: made once, whole, whatever the number of threads that
want them at the same moment. Pure: a temporary directory stands for /run."""

import threading

import pytest

from concurrentd import _unitfiles

pytestmark = pytest.mark.pure   # needs neither root nor systemd (see conftest)


def _at_once(n, fn):
    errors, barrier = [], threading.Barrier(n)

    def run():
        barrier.wait()
        try:
            fn()
        except BaseException as e:   # noqa: BLE001 - collected, then asserted
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_twenty_threads_install_the_anchor_at_once(tmp_path, monkeypatch):
    src = tmp_path / "anchor"
    src.write_bytes(b"\x7fELF" + b"x" * (1 << 20))
    for attempt in range(5):
        monkeypatch.setattr(_unitfiles, "ANCHOR_DIR", str(tmp_path / f"run{attempt}"))
        monkeypatch.setattr(_unitfiles, "_installed", {})
        assert _at_once(20, lambda: _unitfiles.installed_anchor(str(src))) == []
        (copy,) = (tmp_path / f"run{attempt}").iterdir()   # one copy, no temporary left
        assert copy.read_bytes() == src.read_bytes()


def test_twenty_threads_copy_the_same_code_at_once(tmp_path, monkeypatch):
    module = tmp_path / "mod.py"
    module.write_text("VALUE = 1\n" * 10000)
    files = [(str(module), module.stat(), "mod.py")]
    monkeypatch.setattr(_unitfiles, "CODE_DIR", str(tmp_path / "code"))
    assert _at_once(20, lambda: _unitfiles.code_copy(files)) == []
    (copy,) = (tmp_path / "code").iterdir()
    assert (copy / "mod.py").read_text() == module.read_text()

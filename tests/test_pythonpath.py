"""Pure tests of the import binds' plan (_pythonpath) and of the binds' merge (_unitfiles): no
systemd, no root (copies go to a temporary directory)."""

from __future__ import annotations

import os
import sys

import pytest

from concurrentd import _pythonpath, _unitfiles
from concurrentd._pythonpath import Hiding, code_files, plan_binds

pytestmark = pytest.mark.pure   # needs neither root nor systemd (see conftest)


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A script's directory hidden by ProtectHome=-like settings: code, bytecode, a package with
    data, a namespace directory, secrets. It is sys.path[0] and the working directory."""
    root = tmp_path / "proj"
    (root / "pkg" / "sub" / "__pycache__").mkdir(parents=True)
    (root / "pkg" / "data").mkdir()
    (root / "notes").mkdir()
    (root / "__pycache__").mkdir()
    for name, text in {"main.py": "", "helper.py": "", ".env": "SECRET", "id_rsa": "SECRET",
                       "__pycache__/helper.cpython-311.pyc": "", "__pycache__/stray.txt": "x",
                       "pkg/__init__.py": "", "pkg/mod.py": "", "pkg/.env": "SECRET",
                       "pkg/data/table.csv": "SECRET", "pkg/sub/__init__.py": "",
                       "pkg/sub/__pycache__/__init__.cpython-311.pyc": "", "notes/x.py": "",
                       "link.py": ""}.items():
        (root / name).write_text(text)
    (root / "link.py").unlink()
    (root / "link.py").symlink_to(root / "id_rsa")        # a module name, a key's content
    monkeypatch.setattr(_unitfiles, "CODE_DIR", str(tmp_path / "code"))
    monkeypatch.setattr(sys, "path", ["", str(root)])   # as after `python -c` in root
    monkeypatch.chdir(root)
    return root


def copied(binds: list[str]) -> set[str]:
    """Every file under the sources of the given binds, relative to its bind's source."""
    out = set()
    for bind in binds:
        src = bind.split(":")[0]
        for top, _dirs, files in os.walk(src):
            out.update(os.path.relpath(os.path.join(top, f), src) for f in files)
    return out


@pytest.mark.parametrize("value", [False, "false", "no", "0", "off", 0, None, ""])
def test_a_boolean_that_is_off_hides_nothing(value):
    assert not Hiding.of({"PrivateTmp": value, "PrivateUsers": value, "DynamicUser": value})
    assert plan_binds({"PrivateTmp": value}) == ([], ())


@pytest.mark.parametrize("value", [True, "true", "yes", "1", "on", 1])
def test_a_boolean_that_is_on_hides(value):
    assert Hiding.of({"PrivateTmp": value}).hidden == ("/tmp", "/var/tmp")


def test_protect_home_spellings():
    for value in (True, "yes", "tmpfs", "true"):
        assert "/root" in Hiding.of({"ProtectHome": value}).hidden
    for value in (False, "no", "read-only", "false", ""):
        assert not Hiding.of({"ProtectHome": value})


def test_path_lists_are_read_as_systemd_reads_them():
    hiding = Hiding.of({"InaccessiblePaths": '-/srv/a "/srv/b c" +/srv/d',
                        "TemporaryFileSystem": ["/var/e:ro,mode=0700"]})
    assert hiding.named[:4] == ("/srv/a", "/srv/b c", "/srv/d", "/var/e")


@pytest.mark.parametrize("properties", [{"PrivateTmp": "disconnected"},
                                        {"PrivateTmpEx": "yes"}, {"PrivateTmpEx": "disconnected"}])
def test_a_private_tmp_of_either_name_hides_tmp(properties):
    assert Hiding.of(properties).hidden == ("/tmp", "/var/tmp")
    assert not Hiding.of({"PrivateTmpEx": "no"})


def test_a_user_namespace_of_either_name_makes_another_user():
    assert Hiding.of({"PrivateUsersEx": "self"}).user
    assert not Hiding.of({"PrivateUsersEx": "no"})


def test_a_namespace_path_is_read_whole_and_simplified_as_systemd_reads_it():
    # a ':' belongs to an InaccessiblePaths= path (only TemporaryFileSystem= has options), and
    # systemd simplifies '//home' to '/home'
    hiding = Hiding.of({"InaccessiblePaths": "/srv/a:b //home"})
    assert hiding.named[:2] == ("/srv/a:b", "/home")
    assert hiding.hides("/home/someone/project")


def test_user_bind_paths_keep_quoted_words_whole():
    merged = _unitfiles.add_read_only_binds({"BindReadOnlyPaths": '"/a b" /c:/d'}, ["/x:/y"])
    assert merged["BindReadOnlyPaths"] == ["/a b", "/c:/d", "/x:/y"]
    merged = _unitfiles.add_read_only_binds({"BindReadOnlyPaths": ["/a b"]}, ["/x"])
    assert merged["BindReadOnlyPaths"] == ["/a b", "/x"]


def test_only_code_is_copied_from_a_hidden_script_directory(project):
    binds, mapping = plan_binds({"TemporaryFileSystem": str(project)})
    assert len(binds) == 1 and binds[0].endswith(":/run/concurrentd-python/0")
    assert not binds[0].startswith(str(project))          # a copy, never the directory
    assert copied(binds) == {"main.py", "helper.py", "__pycache__/helper.cpython-311.pyc",
                             "pkg/__init__.py", "pkg/mod.py", "pkg/sub/__init__.py",
                             "pkg/sub/__pycache__/__init__.cpython-311.pyc"}
    assert _pythonpath.remap("", mapping) == "/run/concurrentd-python/0"
    assert _pythonpath.remap(str(project / "pkg"), mapping) == "/run/concurrentd-python/0/pkg"


def test_a_named_path_inside_an_entry_is_left_out(project):
    binds, _ = plan_binds({"ProtectHome": True, "TemporaryFileSystem": str(project.parent),
                           "InaccessiblePaths": [str(project / "helper.py"), str(project / "pkg")]})
    assert copied(binds) == {"main.py", "__pycache__/helper.cpython-311.pyc"}


def test_a_visible_entry_is_not_bound(project):
    # InaccessiblePaths= inside the entry: the unit sees the entry, less that file
    assert plan_binds({"InaccessiblePaths": str(project / ".env")})[0] == []


def test_the_root_directory_is_never_bound_whole(project, monkeypatch):
    monkeypatch.chdir("/")
    monkeypatch.setattr(sys, "path", [""])
    binds, mapping = plan_binds({"RootDirectory": "/srv/root"})
    assert not [b for b in binds if b.split(":")[0] == "/"], binds


def test_installation_directories_are_bound_whole(tmp_path, monkeypatch):
    stdlib = os.path.dirname(os.__file__)
    monkeypatch.setattr(sys, "path", [stdlib])
    monkeypatch.setattr(_unitfiles, "CODE_DIR", str(tmp_path / "code"))
    binds, _ = plan_binds({"RootDirectory": "/srv/root"})
    assert binds == [f"{os.path.realpath(stdlib)}:/run/concurrentd-python/0"]


def test_extra_paths_and_turning_binds_off(project):
    binds, _ = plan_binds({"ProtectHome": True, "TemporaryFileSystem": str(project)},
                          extra=[project / "pkg" / "data"])
    assert binds[-1] == f"{project}/pkg/data:/run/concurrentd-python/0/pkg/data"
    assert plan_binds({"ProtectHome": True}, enabled=False) == ([], ())
    with pytest.raises(TypeError, match="list of paths"):
        plan_binds({}, extra=str(project))
    with pytest.raises(ValueError, match="InaccessiblePaths"):
        plan_binds({"InaccessiblePaths": str(project / ".env")}, extra=[project])


def test_code_files_never_include_set_id_files(tmp_path):
    (tmp_path / "m.py").write_text("")
    (tmp_path / "s.py").write_text("")
    os.chmod(tmp_path / "s.py", 0o4755)
    assert [rel for _, _, rel in code_files(str(tmp_path))] == ["m.py"]

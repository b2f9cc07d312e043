"""Attacks on the import binds: a worker that runs the attacker's code tries to read what the
unit's properties hide, through the directories bound so that it can import the owner's modules.

Each test runs a small program as ``__main__`` in a subprocess (sys.path[0] and the working
directory are what the attack depends on), with a secret the unit hides next to its code. The
worker tries the secret's own path and the same file under every bind at
/run/concurrentd-python; it must find nothing, and still import the program's own modules.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import concurrentd

REPO = Path(concurrentd.__file__).resolve().parent.parent
SECRET = "the-secret-" + uuid.uuid4().hex

# The worker's side of every attack: read `secrets` (owner paths) directly, and at every path a
# bind of one of their ancestors would give them; import `module`, which the owner never imported.
PROGRAM = """
import json, os, sys
from concurrentd import TransientUnitPoolExecutor

def attack(secrets, module):
    import importlib
    base = "/run/concurrentd-python"
    read = {}
    for secret in secrets:
        parts = secret.strip("/").split("/")
        candidates = [secret] + [os.path.join(base, n, *parts[i:])
                                 for n in (os.listdir(base) if os.path.isdir(base) else [])
                                 for i in range(len(parts))]
        for path in candidates:
            try:
                with open(path) as f:
                    read[path] = f.read()
            except OSError:
                pass
    try:
        value = importlib.import_module(module).VALUE
    except ImportError as e:
        value = repr(e)
    return read, value

if __name__ == "__main__":
    properties, secrets, module = json.loads(sys.argv[-1])
    with TransientUnitPoolExecutor(1, properties) as pool:
        print(json.dumps(pool.submit(attack, secrets, module).result(timeout=30)))
"""


def run_attack(properties: dict, secrets: list[Path], module: str, *, cwd: Path,
               argv: list[str]) -> dict:
    """Runs ``python *argv <json>`` in ``cwd`` with this checkout first on the path; returns
    what the worker read of the secrets (once it is known to have imported ``module``)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    arg = json.dumps([properties, [str(s) for s in secrets], module])
    r = subprocess.run([sys.executable, *argv, arg], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=90)
    assert r.returncode == 0, r.stderr[-3000:]
    read, value = json.loads(r.stdout.strip().splitlines()[-1])
    read = {path: text for path, text in read.items() if SECRET in text}   # not an empty mask
    assert not read, f"the worker read what the unit hides: {read}"
    assert value == "imported", value
    return read


def project(root: Path) -> tuple[Path, Path]:
    """A program (main.py, and helper.py it imports only in workers) with a .env next to them."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "main.py").write_text(PROGRAM)
    (root / "helper.py").write_text("VALUE = 'imported'\n")
    secret = root / ".env"
    secret.write_text(SECRET)
    return root / "main.py", secret


@pytest.fixture
def home():
    """A home directory under /home (ProtectHome= hides it), removed afterwards."""
    path = Path("/home") / f"concurrentd-test-{uuid.uuid4().hex[:12]}"
    path.mkdir()
    path.chmod(0o755)   # as Debian makes them: only ProtectHome= hides what is in it
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_protect_home_hides_the_file_next_to_the_script(home):
    script, secret = project(home / "proj")
    read = run_attack({"ProtectHome": True}, [secret], "helper", cwd=script.parent,
                      argv=[str(script)])
    assert not read


def test_inaccessible_paths_naming_a_file_in_the_script_directory(home):
    script, secret = project(home / "proj")
    hidden_module = script.parent / "settings.py"
    hidden_module.write_text(f"KEY = {SECRET!r}\n")
    properties = {"ProtectHome": "yes", "InaccessiblePaths": [str(secret), str(hidden_module)]}
    read = run_attack(properties, [secret, hidden_module], "helper", cwd=script.parent,
                      argv=[str(script)])
    assert not read
    # InaccessiblePaths= alone: the directory is visible, the named file is not
    read = run_attack({"InaccessiblePaths": str(secret)}, [secret], "helper", cwd=script.parent,
                      argv=[str(script)])
    assert not read


def test_temporary_file_system_over_the_home_run_with_python_m(home):
    # `python -m pkg.main` from the home directory: sys.path[0] is the home directory itself
    pkg = home / "pkg"
    project(pkg)
    (pkg / "__init__.py").write_text("")
    (pkg / "helper.py").write_text("VALUE = 'imported'\n")
    ssh = home / ".ssh"
    ssh.mkdir()
    key = ssh / "id_rsa"
    key.write_text(SECRET)
    notes = home / "notes.txt"
    notes.write_text(SECRET)
    read = run_attack({"TemporaryFileSystem": f"{home}:ro"},
                      [key, notes, pkg / ".env"], "pkg.helper", cwd=home, argv=["-m", "pkg.main"])
    assert not read


def test_private_tmp_with_the_script_in_tmp(tmp_path):
    script, secret = project(tmp_path / "proj")
    other = tmp_path / "other-users-file"
    other.write_text(SECRET)
    read = run_attack({"PrivateTmp": True}, [secret, other], "helper", cwd=script.parent,
                      argv=[str(script)])
    assert not read


def test_working_directory_root_with_python_c(tmp_path):
    # `cd /; python -c ...`: '' in sys.path stands for /, which must never be bound whole; the
    # program's modules are in a directory PrivateTmp= hides, next to another file in /tmp
    script, secret = project(tmp_path / "proj")
    other = tmp_path / "other-users-file"
    other.write_text(SECRET)
    code = script.read_text().replace('if __name__ == "__main__":', "if True:")
    code = f"import sys; sys.path.append({str(script.parent)!r})\n" + code
    read = run_attack({"PrivateTmp": True}, [secret, other], "helper", cwd=Path("/"),
                      argv=["-c", code])
    assert not read

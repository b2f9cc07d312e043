""""In a container": the workers see another root directory (RootDirectory=), here a small one
made on the spot with its own /etc/os-release. Python still imports: concurrentd binds the
interpreter's paths into the unit.

    python -m concurrentd.testbed --auto -- python examples/container.py [ROOT]
"""
import os
import sys
import tempfile

from concurrentd import TransientUnitPoolExecutor


def make_root(path):
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o755)   # the unit's user must be able to enter its root
    for d in ("etc", "proc", "dev", "run", "tmp", "sys"):
        os.makedirs(os.path.join(path, d), exist_ok=True)
    with open(os.path.join(path, "etc", "os-release"), "w") as f:
        f.write('NAME="concurrentd example root"\nID=concurrentd-example\n')
    return path


def os_release():
    with open("/etc/os-release") as f:
        return dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)


def main(root=None):
    root = root or make_root(tempfile.mkdtemp(prefix="concurrentd-root-", dir="/var/tmp"))
    with TransientUnitPoolExecutor(1, {"RootDirectory": root, "User": "nobody"}) as pool:
        inside = pool.submit(os_release).result()
        listing = pool.submit(os.listdir, "/").result()
    print(f"root {root}: the worker sees NAME={inside['NAME']} and / = {sorted(listing)}")
    return inside


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)

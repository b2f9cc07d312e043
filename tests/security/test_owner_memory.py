"""What a fork-mode worker finds of its owner's memory: the owner's environment must not be there
(README: workers get the environment systemd gave the anchor, not yours).

The owner is a fresh interpreter started with a secret in its environment, which it never reads;
a worker searches its whole memory for the secret.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid

PROGRAM = textwrap.dedent("""
    import sys
    from concurrentd import TransientUnitPoolExecutor

    def count(head, tail):
        # how many times head + tail is in this process memory (no object holds both)
        found = 0
        with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", 0) as mem:
            for line in maps:
                span, perms = line.split()[:2]
                if not perms.startswith("r") or "[vvar]" in line or "[vsyscall]" in line:
                    continue
                start, end = (int(x, 16) for x in span.split("-"))
                try:
                    mem.seek(start)
                    chunk = mem.read(end - start)
                except (OSError, OverflowError):
                    continue
                i = chunk.find(head)
                while i >= 0:
                    found += chunk[i + len(head):i + len(head) + len(tail)] == tail
                    i = chunk.find(head, i + 1)
        return found

    with TransientUnitPoolExecutor(1, {"PrivateTmp": True}) as pool:
        # the needle travels in halves: whole, it is only in the owner's environment
        print(pool.submit(lambda a, b: count(a.encode(), b.encode()), sys.argv[1], sys.argv[2]
                          ).result())
""")


def test_the_owners_environment_is_not_in_a_workers_memory(tmp_path):
    secret = "SECRET" + uuid.uuid4().hex
    half = len(secret) // 2
    script = tmp_path / "owner.py"
    script.write_text(PROGRAM)
    r = subprocess.run([sys.executable, str(script), secret[:half], secret[half:]],
                       env={"PATH": "/usr/bin:/bin", "API_TOKEN": secret}, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.strip()) == 0, f"{r.stdout.strip()} copies of the owner's secret"

"""Time from the call to a running anchor (Type=exec, /bin/sleep): concurrentd's systemd layer
against `systemd-run` for the same unit, in the same run.

    python benchmarks/unit_start.py [-n 50]      # inside a systemd box (python -m concurrentd.testbed -- …)

Both sides: Type=exec, the same properties, wait for the start job; the unit is stopped outside
the timed section. systemd-run is timed as a whole process (fork+exec+connect+start+wait), which
is what a caller would pay; concurrentd reuses one connection, as the executor does.
"""

import argparse
import statistics
import subprocess
import time

from concurrentd.systemd import Systemd

PROPS = {"MemoryMax": "200M", "CPUQuota": "50%", "PrivateTmp": "yes", "NoNewPrivileges": "yes",
         "SystemCallFilter": "@system-service", "TasksMax": "64"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=50, help="repeats per side (default 50)")
    args = ap.parse_args()
    ours, theirs = [], []
    with Systemd.connect() as sd:
        sd.start_service(["/bin/sleep", "60"], PROPS).stop()  # warm up: Subscribe, AddMatch
        for i in range(args.n):
            t0 = time.perf_counter()
            unit = sd.start_service(["/bin/sleep", "60"], PROPS)
            ours.append(time.perf_counter() - t0)
            unit.stop()
            name = f"bench-systemd-run-{i}.service"
            cmd = ["systemd-run", "--quiet", f"--unit={name}", "-p", "Type=exec"]
            cmd += [arg for k, v in PROPS.items() for arg in ("-p", f"{k}={v}")]
            t0 = time.perf_counter()
            subprocess.run(cmd + ["/bin/sleep", "60"], check=True)
            theirs.append(time.perf_counter() - t0)
            sd.unit(name).stop()
    m_ours, m_theirs = statistics.median(ours), statistics.median(theirs)
    print(f"runs per side: {args.n}")
    print(f"concurrentd start_service  median {m_ours * 1e3:7.2f} ms")
    print(f"systemd-run               median {m_theirs * 1e3:7.2f} ms")
    print(f"ratio concurrentd/systemd-run: {m_ours / m_theirs:.2f}x (target <= 1.0x)")


if __name__ == "__main__":
    main()

"""A CPU-capped pool: a busy loop gets 20 % of one CPU (CPUQuota=20%), measured by the unit's
own cgroup CPU accounting.

    python -m concurrentd.testbed --auto -- python examples/cpu_capped.py
"""
import time

from concurrentd import TransientUnitPoolExecutor


def spin(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def cpu_usage_ns(control_group):
    for path in (f"/sys/fs/cgroup/cpuacct{control_group}/cpuacct.usage",   # cgroup v1
                 f"/sys/fs/cgroup/unified{control_group}/cpu.stat",
                 f"/sys/fs/cgroup{control_group}/cpu.stat"):                # cgroup v2
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        if path.endswith("usage"):
            return int(text)
        stats = dict(line.split() for line in text.splitlines())
        if "usage_usec" in stats:
            return int(stats["usage_usec"]) * 1000
    raise RuntimeError(f"no CPU accounting found for {control_group}")


def main(seconds=3.0):
    with TransientUnitPoolExecutor(1, {"CPUQuota": "20%", "CPUAccounting": True}) as pool:
        pool.submit(int).result()   # the worker is up
        before, start = cpu_usage_ns(pool.unit.control_group), time.monotonic()
        pool.submit(spin, seconds).result()
        used = (cpu_usage_ns(pool.unit.control_group) - before) / 1e9
        share = used / (time.monotonic() - start)
    print(f"busy for {seconds:.0f} s with CPUQuota=20%: used {share:.0%} of one CPU")
    return share


if __name__ == "__main__":
    main()

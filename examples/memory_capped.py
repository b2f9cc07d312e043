"""A memory cap: MemoryMax=100M. A task that stays below it runs; one that goes above is killed
by the kernel's OOM killer, and (with on_worker_death="replace") only that task fails.

    python -m concurrentd.testbed --auto -- python examples/memory_capped.py
"""
from concurrentd import TransientUnitPoolExecutor, WorkerKilled


def allocate(mib):
    block = b"x" * (mib << 20)
    return len(block) >> 20


def main():
    with TransientUnitPoolExecutor(1, {"MemoryMax": "100M"}, on_worker_death="replace") as pool:
        print("50 MiB:", pool.submit(allocate, 50).result(), "MiB allocated")
        try:
            pool.submit(allocate, 300).result()
        except WorkerKilled as e:
            print(f"300 MiB: {e.cause}: {e}")
            cause = e.cause
        print("the pool goes on:", pool.submit(allocate, 10).result(), "MiB allocated")
    return cause


if __name__ == "__main__":
    main()

"""concurrentd's benchmark suite: ``python -m benchmarks [--quick] [--cases a,b]``.

Runs inside a real systemd (``python -m concurrentd.testbed -- python -m benchmarks``). See
benchmarks/README.md for the cases, the targets and the set-up (pystemd needs libsystemd-dev).
"""

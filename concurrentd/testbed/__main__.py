"""python -m concurrentd.testbed [--auto] [--bind DIR]... -- CMD ARGS...
python -m concurrentd.testbed --vm trixie|sid|bookworm [VM OPTIONS] [-- CMD ARGS...]

Boots a throwaway systemd, runs CMD in it as root, tears it down, and exits with CMD's status
(127: no such command; 2: the testbed itself could not run). With --vm, the same in a Debian VM
of that suite instead of a box: ``python -m concurrentd.testbed.vm --suite SUITE`` (see there).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from . import Box, TestbedError, needed


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m concurrentd.testbed",
                                description="Run a command inside a throwaway systemd.")
    p.add_argument("--auto", action="store_true",
                   help="run CMD directly where systemd is already PID 1 (CONCURRENTD_TESTBED "
                        "overrides)")
    p.add_argument("--bind", action="append", default=[], metavar="DIR",
                   help="also show this host directory read-write in the box (repeatable)")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    args = p.parse_args(argv)
    if args.cmd and args.cmd[0] == "--":
        args.cmd = args.cmd[1:]
    if not args.cmd:
        p.error("no command given (usage: python -m concurrentd.testbed -- CMD ARGS...)")
    return args


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _tear_down_on(*signums: int) -> None:
    """Makes each signal end the command and tear the box down, unless it was ignored when the
    CLI started: under nohup (SIGHUP ignored) the box must outlive the terminal as the command
    does, as Python itself leaves an ignored SIGINT ignored."""
    for signum in signums:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _terminate)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    before = argv[:argv.index("--")] if "--" in argv else argv
    if "--vm" in before or any(a.startswith("--vm=") for a in before):
        from . import vm  # QEMU's VM: its own options, the suite first
        return vm.main([a.replace("--vm", "--suite", 1) if a == "--vm" or a.startswith("--vm=")
                        else a for a in argv])
    args = _parse(argv)
    if args.auto and not needed():
        try:
            os.execvp(args.cmd[0], args.cmd)
        except FileNotFoundError:
            print(f"concurrentd.testbed: {args.cmd[0]}: command not found", file=sys.stderr)
            return 127
    if os.geteuid() != 0:
        print("concurrentd.testbed: must run as root (it mounts file systems and creates "
              "namespaces and cgroups)", file=sys.stderr)
        return 2
    _tear_down_on(signal.SIGTERM, signal.SIGHUP)
    try:
        with Box(binds=args.bind) as box:
            return box.run(args.cmd)
    except (TestbedError, OSError) as e:
        print(f"concurrentd.testbed: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

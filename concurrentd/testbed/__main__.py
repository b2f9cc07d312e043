"""python -m concurrentd.testbed [--auto] [--bind DIR]... -- CMD ARGS...

Boots a throwaway systemd, runs CMD in it as root, tears it down, and exits with CMD's status
(127: no such command; 2: the testbed itself could not run).
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
    args = _parse(sys.argv[1:] if argv is None else argv)
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

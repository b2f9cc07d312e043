"""``python -m concurrentd``: the command line.

    python -m concurrentd call [OPTIONS...] MODULE:FUNCTION|-m MODULE|SCRIPT.py [ARGS...]
    python -m concurrentd check [OPTIONS...]

``call`` runs one call in a fresh unit, as ``run()`` does, and prints its outcome (see
_target); ``check`` starts the unit ``call`` would start and shows ``systemd-analyze
security``'s report on it. Reading the command line (:func:`parse`) and turning outcomes into
what is printed (:func:`outcome_report`, :func:`failure_report`) are pure; files are read, units
started and text printed by :func:`main` and the two commands.

Exit statuses: the call's own (0, 1 with a traceback, N for ``SystemExit(N)``); 128+N for a
worker killed by signal N; 2 for a usage error, as argparse's; 125 when the unit could not be
started, as ``env`` and ``chroot`` report their own failures.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Any, NamedTuple, NoReturn

from . import __version__, _cli_properties, _target
from ._cli_properties import PropertyError
from ._target import Target

PROG = "python -m concurrentd"
USAGE_ERROR = 2
NOT_STARTED = 125
INTERRUPTED = 130

_PROPERTY_OPTIONS = """\
  -p --property=NAME=VALUE        Set a unit property, as systemd-run -p takes it
                                  (e.g. -p User=nobody -p MemoryMax=100M)
     --properties-file=FILE       Read properties from FILE: one NAME=VALUE a line,
                                  # and ; comments, [Section] lines skipped; -p
                                  overrides the file
     --dry-run                    Print the properties as systemd will receive them
                                  (D-Bus name, signature, value) and exit"""

HELP = {
    None: f"""\
{PROG} [OPTIONS...] COMMAND ...

Run Python code in a transient systemd unit, confined by the unit's properties
(no network, a read-only file system, another user, CPU and memory caps...).

Commands:
  call [OPTIONS...] TARGET [ARGS...]
                                  Run one call in a fresh unit, print its result
  check [OPTIONS...]              Show systemd-analyze security for a unit with
                                  these properties

  -h --help                       Show this help
     --version                    Show package version

See "{PROG} COMMAND --help", and README.md ("Command line").""",

    "call": f"""\
{PROG} call [OPTIONS...] MODULE:FUNCTION [ARGS...]
{PROG} call [OPTIONS...] -m MODULE [ARGS...]
{PROG} call [OPTIONS...] SCRIPT.py [ARGS...]

Run one call in a fresh transient unit with the properties given, print its
result, and stop the unit. Nothing of the call runs outside the unit: the
function's module is imported in it, the module or script runs in it.

  -h --help                       Show this help
{_PROPERTY_OPTIONS}
  -m MODULE                       Run MODULE as __main__, as python -m does

Targets (options end at the target; what follows it is ARGS):
  MODULE:FUNCTION                 Call FUNCTION(*ARGS); FUNCTION may be dotted
                                  (Class.method). Each ARG is the JSON value it
                                  spells (42, 1.5, true, null, "42", [1, 2],
                                  {{"a": 1}}), or else the string itself. The
                                  result is printed as one line of JSON when it is
                                  made of JSON's types (lists, tuples, dicts with
                                  string keys, strings, numbers, booleans), else
                                  as its repr(); None prints nothing
  -m MODULE / SCRIPT.py           Run it as __main__; ARGS are sys.argv[1:], as
                                  strings. sys.path[0] is the script's directory,
                                  or the working directory for -m, as python's

In the unit, sys.argv[0] is MODULE:FUNCTION, the module's file (where the unit
sees it) or the script's absolute path; stdin is /dev/null; the working
directory is the unit's (WorkingDirectory=, / by default); the worker's output
is copied to this process's stdout and stderr.

Exit status:
  0                               The call returned
  1                               It raised: its traceback is printed on stderr
  N                               It raised SystemExit(N)
  128+N                           The worker was killed by signal N, the cause
                                  printed on stderr: 137 (SIGKILL) for the OOM
                                  killer at MemoryMax=, 159 (SIGSYS) for a
                                  system call SystemCallFilter= forbids
  2                               A usage error: a bad option, property or target
  125                             The unit could not be started (systemd refused
                                  it, no systemd, not root...)""",

    "check": f"""\
{PROG} check [OPTIONS...]

Start the unit "call" would start with these properties, print systemd-analyze
security's report on its exposure, and stop it. Exits with systemd-analyze's
status (125 when the unit could not be started).

  -h --help                       Show this help
{_PROPERTY_OPTIONS}
     --threshold=N                Exit non-zero when the overall exposure level
                                  is over N (systemd-analyze --threshold=N)""",
}

#: the options of call and check that take a value as the next word
_VALUED = {"-p", "--property", "--properties-file", "--threshold"}


class UsageError(Exception):
    """A command line that cannot run; printed with its command's usage, status 2."""

    def __init__(self, message: str, command: str | None = None):
        super().__init__(message)
        self.command = command

    def format(self) -> str:
        usage = HELP[self.command].split("\n\n", 1)[0].replace("\n", "\n       ")
        where = f"{PROG} {self.command}" if self.command else PROG
        return f"usage: {usage}\n{where}: error: {self}\n"


class _Parser(argparse.ArgumentParser):
    """argparse's parsing, with its errors raised as UsageError (printed by main())."""

    def __init__(self, command: str):
        super().__init__(prog=f"{PROG} {command}", add_help=False, allow_abbrev=False)
        self.command = command

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, self.command)


@dataclass(frozen=True)
class Request:
    """What the command line asks for, before any file is read.

    Attributes:
        command: "help", "version", "call" or "check".
        topic: for "help": None (the commands) or a command's name.
        assignments: the -p options, as (name, value, "-p").
        properties_file: the --properties-file option.
        target: for call: ("module", name) for -m, else ("path or function", the word).
    """

    command: str
    topic: str | None = None
    assignments: tuple[tuple[str, str, str], ...] = ()
    properties_file: str | None = None
    dry_run: bool = False
    target: tuple[str, str] | None = None
    args: tuple[str, ...] = ()
    threshold: int | None = None


def parse(argv: list[str]) -> Request:
    """The request of a command line (without the program's name). Raises UsageError."""
    if not argv:
        raise UsageError(f"no command given (commands: call, check; see {PROG} --help)")
    if argv[0] in ("-h", "--help"):
        return Request("help")
    if argv[0] == "--version":
        return Request("version")
    command, rest = argv[0], argv[1:]
    if command not in ("call", "check"):
        what = "option" if command.startswith("-") else "command"
        raise UsageError(f"unknown {what} {command!r} (commands: call, check; see {PROG} "
                         "--help)")
    options, target, args = split_at_target(rest) if command == "call" else (rest, None, [])
    parser = _Parser(command)
    parser.add_argument("-h", "--help", action="store_true")
    parser.add_argument("-p", "--property", action="append", default=[])
    parser.add_argument("--properties-file")
    parser.add_argument("--dry-run", action="store_true")
    if command == "check":
        parser.add_argument("--threshold", type=_threshold)
    ns = parser.parse_args(options)
    if ns.help:
        return Request("help", topic=command)
    try:
        assignments = tuple((*_cli_properties.parse_assignment(p), "-p") for p in ns.property)
    except PropertyError as e:
        raise UsageError(str(e), command) from None
    if command == "call" and target is None and not ns.dry_run:
        raise UsageError("no target given: MODULE:FUNCTION, -m MODULE or SCRIPT.py", command)
    return Request(command, assignments=assignments, properties_file=ns.properties_file,
                   dry_run=ns.dry_run, target=target, args=tuple(args),
                   threshold=getattr(ns, "threshold", None))


def split_at_target(argv: list[str]) -> tuple[list[str], tuple[str, str] | None, list[str]]:
    """``call``'s words as (its options, the target, the target's ARGS). Options end at the
    target, as python's own end at the script or ``-m``: what follows is the target's, dashes
    and all. The target is ``("module", name)`` for ``-m``, else ``("word", word)``."""
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--":
            rest = argv[i + 1:]
            return argv[:i], (("word", rest[0]) if rest else None), rest[1:]
        if word == "-m" or (word.startswith("-m") and not word.startswith("--")):
            name = word[2:] or (argv[i + 1] if i + 1 < len(argv) else "")
            if not name:
                raise UsageError("-m needs a module's name (-m MODULE)", "call")
            return argv[:i], ("module", name), argv[i + (1 if word[2:] else 2):]
        if word in _VALUED:
            i += 2
        elif word.startswith("-") and word != "-":
            i += 1
        else:
            return argv[:i], ("word", word), argv[i + 1:]
    return argv, None, []


def _threshold(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text!r} is not an exposure level (0 to 100)")
    return value


# -- what a request needs from files ----------------------------------------------------------

def load_properties(request: Request) -> tuple[dict[str, str], list[tuple[str, tuple[str, Any]]]]:
    """The unit's properties (the file's, then -p's), and the same as D-Bus will carry them.
    Raises UsageError."""
    from_file: list[tuple[str, str, str]] = []
    try:
        if request.properties_file is not None:
            path = request.properties_file
            try:
                with open(path, encoding="utf-8") as f:
                    text = f.read()
            except (OSError, UnicodeDecodeError) as e:
                raise PropertyError(f"--properties-file {path}: cannot read it: {e}") from None
            from_file = _cli_properties.parse_file(text, path)
        properties = _cli_properties.collect(from_file, request.assignments)
        return properties, _cli_properties.check(properties)
    except PropertyError as e:
        raise UsageError(str(e), request.command) from None


def resolve_target(kind: str, word: str) -> Target:
    """The Target a command line names: ``-m MODULE``; a script (a file: its bytes are read
    here, as python reads its script); or ``MODULE:FUNCTION``. Raises UsageError."""
    if kind == "module":
        if not all(part.isidentifier() for part in word.split(".")):
            raise UsageError(f"-m {word!r}: not a module's name (dotted identifiers)", "call")
        return Target(_target.MODULE, word)
    if os.path.exists(word):
        path = os.path.abspath(word)
        try:
            with open(path, "rb") as f:
                return Target(_target.SCRIPT, path, f.read())
        except OSError as e:
            raise UsageError(f"cannot read the script {word!r}: {e.strerror or e}", "call") \
                from None
    if _target.is_function_name(word):
        return Target(_target.FUNCTION, word)
    if word.endswith(".py") or os.sep in word:
        raise UsageError(f"no such script: {word!r}", "call")
    raise UsageError(f"target {word!r}: expected MODULE:FUNCTION (e.g. json:dumps), -m MODULE, "
                     "or a script's path", "call")


def script_sys_path(path: list[str], script: str, safe_path: bool) -> list[str]:
    """sys.path as ``python SCRIPT`` has it, from the one ``python -m concurrentd`` got: the
    working directory that -m put first becomes the script's directory (under -P, neither)."""
    if safe_path:
        return list(path)
    return [os.path.dirname(script), *path[1:]]


# -- what is printed ----------------------------------------------------------------------------

class Report(NamedTuple):
    """What a command prints (either text may be None) and its exit status."""
    status: int
    stdout: str | None = None
    stderr: str | None = None


def outcome_report(outcome: Any) -> Report:
    """The report of a call's outcome as the worker sent it (see _target.run). The worker may
    be the attacker's: anything but (int, str or None, str or None) is said to be malformed."""
    if (isinstance(outcome, tuple) and len(outcome) == 3 and type(outcome[0]) is int
            and all(t is None or type(t) is str for t in outcome[1:])):
        status, out, err = outcome
        return Report(status & 0xFF, out, err)
    return Report(1, None, f"{PROG} call: the worker sent a malformed outcome "
                           f"({type(outcome).__name__})\n")


def failure_report(error: BaseException) -> Report:
    """The report of a call that did not answer: its worker died (WorkerKilled: 128+signal and
    the cause; a plain exit as it is, silent, as python's own os._exit), or the pool broke."""
    from ._deaths import EXIT, WorkerKilled

    if isinstance(error, WorkerKilled):
        if error.signal is not None:
            return Report(128 + error.signal, None, f"{PROG} call: {error}\n")
        if error.cause == EXIT:
            return Report(error.exitcode & 0xFF)
        return Report((error.exitcode & 0xFF) or 1, None, f"{PROG} call: {error}\n")
    return Report(1, None, f"{PROG} call: {type(error).__name__}: {error}\n")


def not_started_report(command: str, error: BaseException) -> Report:
    return Report(NOT_STARTED, None, f"{PROG} {command}: the unit could not be started: "
                                     f"{error}\n")


def emit(report: Report) -> int:
    """Prints a report; returns its status."""
    if report.stdout is not None:
        print(report.stdout, flush=True)
    if report.stderr:
        sys.stderr.write(report.stderr)
        sys.stderr.flush()
    return report.status


# -- the commands -------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        request = parse(argv)
        if request.command == "help":
            print(HELP[request.topic])
            return 0
        if request.command == "version":
            print(f"concurrentd {__version__}")
            return 0
        properties, converted = load_properties(request)
        target = resolve_target(*request.target) if request.target else None
    except UsageError as e:
        sys.stderr.write(e.format())
        return USAGE_ERROR
    if request.dry_run:
        print(_cli_properties.format_dbus(converted), end="")
        return 0
    try:
        if request.command == "check":
            return check(properties, request.threshold)
        assert target is not None   # parse(): a call without one is a UsageError, or --dry-run
        return call(properties, target, list(request.args))
    except KeyboardInterrupt:   # before the call ran (while its unit started), or after
        return emit(Report(INTERRUPTED, None, f"{PROG} {request.command}: interrupted\n"))


def call(properties: dict[str, str], target: Target, args: list[str]) -> int:
    """Runs ``target`` in a fresh unit; prints its outcome; returns the exit status."""
    from .executor import TransientUnitPoolExecutor  # before sys.path changes

    if target.kind == _target.SCRIPT:
        sys.path[:] = script_sys_path(sys.path, target.name,
                                      getattr(sys.flags, "safe_path", False))
    try:
        # "replace": a death fails the call with WorkerKilled, which carries the signal
        pool = TransientUnitPoolExecutor(1, properties, on_worker_death="replace")
    except Exception as e:   # noqa: BLE001 - whatever stopped the unit, said
        return emit(not_started_report("call", e))
    with pool:
        future = pool.submit(_target.run, target, args)
        try:
            report = outcome_report(future.result())
        except KeyboardInterrupt:
            for worker in pool._processes.values():
                worker.kill()
            report = Report(INTERRUPTED, None, f"{PROG} call: interrupted: the call was "
                                               "killed\n")
        except Exception as e:   # noqa: BLE001 - the worker died, or the pool broke
            report = failure_report(e)
    # the pool has stopped: the worker's output is all printed, the result comes after it
    return emit(report)


def check(properties: dict[str, str], threshold: int | None) -> int:
    """Starts the unit ``call`` would start, runs systemd-analyze security on it, stops it."""
    import shutil
    import subprocess

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return emit(Report(NOT_STARTED, None, f"{PROG} check: systemd-analyze was not found on "
                                              "PATH: it comes with systemd (Debian/Ubuntu: the "
                                              "systemd package)\n"))
    from .executor import TransientUnitPoolExecutor
    try:
        pool = TransientUnitPoolExecutor(1, properties)
    except Exception as e:   # noqa: BLE001 - whatever stopped the unit, said
        return emit(not_started_report("check", e))
    with pool:
        command = [analyze, "security", "--no-pager", pool.unit.name]
        if threshold is not None:
            command[2:2] = [f"--threshold={threshold}"]
        sys.stdout.flush()
        return subprocess.run(command, check=False).returncode

"""python -m concurrentd: the command line, run as a subprocess against a real systemd (results,
tracebacks, deaths, the -m and script forms, properties files, --dry-run, check, usage errors),
and its pure parts alone."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from concurrentd import _cli, _cli_properties, _target
from concurrentd._cli import UsageError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HELPERS = '''
import os
import sys


def add(a, b):
    return a + b


def identity(*args):
    return list(args)


def whoami():
    import socket
    return {"uid": os.getuid(), "argv": sys.argv,
            "interfaces": [name for _, name in socket.if_nameindex()]}


def divide(x):
    return 1 / x


def a_set():
    return {1, 2}


def hog():
    return len(b"x" * (300 << 20))


def swapon():
    import ctypes
    return ctypes.CDLL(None).swapon(b"/nonexistent", 0)


def leave(code):
    sys.exit(code)


def noisy():
    print("printed in the unit", flush=True)
    return "done"


class Tool:
    @staticmethod
    def version():
        return "1.0"
'''


def _units():
    out = subprocess.run(["systemctl", "list-units", "--all", "--plain", "--no-legend",
                          "concurrentd-*"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


@pytest.fixture
def cli(tmp_path):
    """Runs `python -m concurrentd ARGS` in tmp_path (which holds helpers.py), this checkout's
    concurrentd first on its path; returns the CompletedProcess."""
    (tmp_path / "helpers.py").write_text(HELPERS)

    def run(*args, timeout=120, **kwargs):
        env = {**os.environ, "PYTHONPATH": ROOT}
        return subprocess.run([sys.executable, "-m", "concurrentd", *args], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=timeout, **kwargs)
    return run


# -- against systemd --------------------------------------------------------------------------

def test_a_result_is_printed_as_json(cli):
    r = cli("call", "helpers:add", "1", "2")
    assert (r.returncode, r.stdout, r.stderr) == (0, "3\n", "")
    r = cli("call", "helpers:identity", "42", "1.5", "true", "null", '"42"', "[1, 2]",
            '{"a": 1}', "text", "NaN", "--flag")
    assert r.stdout == '[42, 1.5, true, null, "42", [1, 2], {"a": 1}, "text", "NaN", "--flag"]\n'
    assert cli("call", "helpers:Tool.version").stdout == '"1.0"\n'


def test_what_json_cannot_say_is_printed_as_its_repr_and_none_as_nothing(cli):
    assert cli("call", "helpers:a_set").stdout == "{1, 2}\n"
    r = cli("call", "os:sync")
    assert (r.returncode, r.stdout) == (0, "")


def test_the_call_runs_confined_by_the_properties(cli, tmp_path):
    # tmp_path is out of nobody's reach: helpers.py comes through the import binds
    r = cli("call", "-p", "User=nobody", "-p", "PrivateNetwork=yes", "--property=PrivateTmp=yes",
            "helpers:whoami")
    assert r.returncode == 0, r.stderr
    assert r.stdout == '{"uid": 65534, "argv": ["helpers:whoami"], "interfaces": ["lo"]}\n'


def test_the_workers_output_comes_before_the_result(cli):
    assert cli("call", "helpers:noisy").stdout == 'printed in the unit\n"done"\n'


def test_an_exception_prints_the_remote_traceback_and_exits_1(cli, tmp_path):
    r = cli("call", "helpers:divide", "0")
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr.startswith("Traceback (most recent call last):\n")
    assert f'File "{tmp_path}/helpers.py", line ' in r.stderr
    assert "return 1 / x" in r.stderr
    assert r.stderr.endswith("ZeroDivisionError: division by zero\n")
    assert "_target.py" not in r.stderr   # the machinery's frames are left out


def test_a_missing_module_or_function_is_said_in_one_line(cli):
    r = cli("call", "no_such_module:f")
    assert (r.returncode, r.stderr) == (1, "ModuleNotFoundError: No module named "
                                           "'no_such_module'\n")
    r = cli("call", "helpers:nope")
    assert (r.returncode, r.stderr) == (1, "AttributeError: module 'helpers' has no attribute "
                                           "'nope'\n")


def test_system_exit_is_the_exit_status(cli):
    assert cli("call", "helpers:leave", "3").returncode == 3
    r = cli("call", "helpers:leave", "bye")
    assert (r.returncode, r.stderr) == (1, "bye\n")
    assert cli("call", "helpers:leave", "null").returncode == 0


def test_an_oom_kill_exits_128_plus_sigkill_and_says_so(cli):
    r = cli("call", "-p", "MemoryMax=100M", "helpers:hog")
    assert r.returncode == 128 + signal.SIGKILL, r.stderr
    assert "SIGKILL" in r.stderr and "OOM" in r.stderr and "MemoryMax=100M" in r.stderr


def test_a_seccomp_kill_exits_128_plus_sigsys_and_says_so(cli):
    r = cli("call", "-p", "SystemCallFilter=~@swap", "helpers:swapon")
    assert r.returncode == 128 + signal.SIGSYS, r.stderr
    assert "SIGSYS" in r.stderr and "SystemCallFilter=" in r.stderr


def test_a_script_runs_as_main_in_the_unit_with_its_argv_and_directory(cli, tmp_path):
    (tmp_path / "script.py").write_text(textwrap.dedent("""\
        import os, sys
        import helpers   # beside it: sys.path[0] is the script's directory
        print(__name__, sys.argv[1:], os.getuid(), helpers.add(1, 2), __file__ == sys.argv[0])
        if sys.argv[1:] == ["fail"]:
            raise RuntimeError("the script failed")
        """))
    r = cli("call", "-p", "User=nobody", "-p", "PrivateTmp=yes", "script.py", "a", "--b", "-p")
    assert (r.returncode, r.stdout, r.stderr) == (0, "__main__ ['a', '--b', '-p'] 65534 3 True\n",
                                                  "")
    r = cli("call", str(tmp_path / "script.py"), "fail")
    assert r.returncode == 1
    assert f'File "{tmp_path}/script.py", line 5, in <module>' in r.stderr
    assert 'raise RuntimeError("the script failed")' in r.stderr


def test_a_module_runs_as_main_in_the_unit(cli, tmp_path):
    (tmp_path / "tool").mkdir()
    (tmp_path / "tool" / "__init__.py").write_text("")
    (tmp_path / "tool" / "__main__.py").write_text(
        "import os, sys\nprint(__name__, sys.argv, os.getuid())\n")
    r = cli("call", "-m", "tool", "x", "--y")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"__main__ ['{tmp_path}/tool/__main__.py', 'x', '--y'] 0\n"
    # where the unit cannot see tmp_path, the module's file is the copy the unit imports from
    r = cli("call", "-p", "User=nobody", "-m", "tool", "x", "--y")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("__main__ ['/run/concurrentd-python/")
    assert r.stdout.endswith("/tool/__main__.py', 'x', '--y'] 65534\n")
    r = cli("call", "-mjson.tool", "--help")
    assert r.returncode == 0 and "json.tool" in r.stdout


def test_a_properties_file_sets_the_unit_and_p_overrides_it(cli, tmp_path):
    (tmp_path / "unit.conf").write_text(textwrap.dedent("""\
        # the sandbox
        [Service]
        User = nobody
        PrivateNetwork=yes
        ; overridden below
        MemoryMax=1
        """))
    r = cli("call", "--properties-file", "unit.conf", "-p", "MemoryMax=200M", "helpers:whoami")
    assert r.returncode == 0, r.stderr
    assert '"uid": 65534' in r.stdout and '"interfaces": ["lo"]' in r.stdout


def test_check_shows_systemd_analyze_security_and_leaves_nothing(cli):
    before = _units()
    r = cli("check", "-p", "PrivateNetwork=yes", "-p", "User=nobody")
    assert r.returncode == 0, r.stderr
    assert "✓ PrivateNetwork=" in r.stdout
    assert "Overall exposure level for concurrentd-" in r.stdout
    assert _units() == before
    # the threshold is systemd-analyze's
    r = cli("check", "--threshold=1")
    assert r.returncode != 0 and "Overall exposure level" in r.stdout


def test_a_unit_systemd_refuses_exits_125(cli):
    r = cli("call", "-p", "User=no-such-user-concurrentd", "helpers:add", "1", "2")
    assert r.returncode == 125
    assert "the unit could not be started" in r.stderr and "User=" in r.stderr


def test_an_interrupted_call_is_killed_with_its_unit(tmp_path):
    before = _units()
    proc = subprocess.Popen([sys.executable, "-m", "concurrentd", "call", "time:sleep", "60"],
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": ROOT},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while len(_units()) == len(before):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    time.sleep(0.3)   # the call is running
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert _units() == before


# -- usage errors (no unit started) --------------------------------------------------------------

def test_dry_run_prints_the_typed_dbus_properties(cli):
    r = cli("call", "--dry-run", "-p", "User=nobody", "-p", "CPUQuota=20%", "-p",
            "SystemCallFilter=~@mount", "-p", "PrivateNetwork=yes", "-p", "TimeoutSec=5s")
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == textwrap.dedent("""\
        User s "nobody"
        CPUQuotaPerSecUSec t 200000
        SystemCallFilter (bas) [false, ["@mount"]]
        PrivateNetwork b true
        TimeoutStartUSec t 5000000
        TimeoutStopUSec t 5000000
        """)


def test_a_bad_property_is_a_usage_error_with_its_message(cli):
    before = _units()
    r = cli("call", "-p", "MemoryMax=lots", "helpers:add", "1", "2")
    assert r.returncode == 2
    assert r.stderr.startswith("usage: python -m concurrentd call")
    assert ("python -m concurrentd call: error: invalid value 'lots' for property MemoryMax"
            in r.stderr)
    r = cli("check", "-p", "CPUQuotta=20%")
    assert r.returncode == 2 and "did you mean CPUQuota" in r.stderr
    r = cli("call", "-p", "ExecStart=/bin/sh", "helpers:add", "1", "2")
    assert r.returncode == 2 and "ExecStart= cannot be set" in r.stderr
    assert _units() == before


def test_an_unknown_command_or_target_is_a_usage_error(cli):
    r = cli("cal", "helpers:add")
    assert r.returncode == 2 and "unknown command 'cal'" in r.stderr
    assert cli().returncode == 2
    r = cli("call", "helpers")
    assert r.returncode == 2 and "expected MODULE:FUNCTION" in r.stderr
    r = cli("call", "missing.py")
    assert r.returncode == 2 and "no such script: 'missing.py'" in r.stderr
    r = cli("call", "--properties-file", "missing.conf", "helpers:add")
    assert r.returncode == 2 and "--properties-file missing.conf: cannot read it" in r.stderr


def test_help_in_the_style_of_systemd_run(cli):
    r = cli("--help")
    assert r.returncode == 0
    assert r.stdout.startswith("python -m concurrentd [OPTIONS...] COMMAND ...\n\n")
    r = cli("call", "--help")
    assert r.returncode == 0
    assert "  -p --property=NAME=VALUE        Set a unit property" in r.stdout
    assert "Exit status:" in r.stdout
    assert cli("check", "-h").stdout.startswith("python -m concurrentd check [OPTIONS...]\n")


# -- the pure parts --------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, options, target, args", [
    (["m:f", "1", "-p", "x"], [], ("word", "m:f"), ["1", "-p", "x"]),
    (["-p", "A=1", "--property", "B=2", "--dry-run", "m:f"], ["-p", "A=1", "--property", "B=2",
                                                             "--dry-run"], ("word", "m:f"), []),
    (["-pA=1", "--property=B=2", "s.py", "--", "x"], ["-pA=1", "--property=B=2"],
     ("word", "s.py"), ["--", "x"]),
    (["-p", "A=1", "-m", "mod", "-p", "x"], ["-p", "A=1"], ("module", "mod"), ["-p", "x"]),
    (["-mmod", "x"], [], ("module", "mod"), ["x"]),
    (["--", "-odd.py", "x"], [], ("word", "-odd.py"), ["x"]),
    (["--dry-run"], ["--dry-run"], None, []),
])
def test_options_end_at_the_target(argv, options, target, args):
    assert _cli.split_at_target(argv) == (options, target, args)


def test_parse_gathers_the_request():
    request = _cli.parse(["call", "-p", "User=nobody", "--properties-file", "f", "m:f", "1"])
    assert request == _cli.Request("call", assignments=(("User", "nobody", "-p"),),
                                   properties_file="f", target=("word", "m:f"), args=("1",))
    assert _cli.parse(["check", "--threshold", "5"]).threshold == 5
    for argv, message in [(["call"], "no target given"), (["call", "-p", "User"], "NAME=VALUE"),
                          (["check", "x"], "unrecognized arguments"),
                          (["check", "--threshold", "x"], "exposure level"),
                          (["--nope"], "unknown option"), (["call", "--nope", "m:f"], "--nope")]:
        with pytest.raises(UsageError, match=message):
            _cli.parse(argv)


@pytest.mark.parametrize("text, value", [
    ("42", 42), ("-1.5", -1.5), ("true", True), ("null", None), ('"42"', "42"), ("[1, 2]", [1, 2]),
    ('{"a": [null]}', {"a": [None]}), ("text", "text"), ("", ""), ("NaN", "NaN"),
    ("Infinity", "Infinity"), ("01", "01"), ("[1,", "[1,"),
])
def test_an_argument_is_its_json_value_or_else_its_text(text, value):
    assert _target.parse_arg(text) == value and type(_target.parse_arg(text)) is type(value)


@pytest.mark.parametrize("value, text", [
    (None, None), (3, "3"), ("é", '"é"'), ((1, [True, None]), "[1, [true, null]]"),
    ({"a": 1.5}, '{"a": 1.5}'), ({1: 2}, "{1: 2}"), ({1, 2}, "{1, 2}"), (float("nan"), "nan"),
    (b"x", "b'x'"), ([{1}], "[{1}]"),
])
def test_a_result_renders_as_json_when_json_says_it_exactly_else_as_repr(value, text):
    assert _target.render(value) == text


def _nested(depth):
    value = []
    for _ in range(depth):
        value = [value]
    return value


def test_deep_results_render_as_far_as_repr_goes():
    assert _target.render(_nested(400)) == "[" * 401 + "]" * 401
    with pytest.raises(RecursionError):   # in the worker: reported as the call's exception
        _target.render(_nested(100_000))


@pytest.mark.parametrize("code, outcome", [
    (None, (0, None, None)), (0, (0, None, None)), (3, (3, None, None)), (True, (1, None, None)),
    ("bye", (1, None, "bye\n")), ([1], (1, None, "[1]\n")),
])
def test_system_exit_as_python_reports_it(code, outcome):
    assert _target.exit_outcome(code) == outcome


def test_outcome_reports_take_only_what_an_outcome_is():
    assert _cli.outcome_report((0, "3", None)) == _cli.Report(0, "3", None)
    assert _cli.outcome_report((256 + 3, None, "x")).status == 3
    for bad in [(0, 3, None), ("0", None, None), (0, None), [0, None, None], None]:
        report = _cli.outcome_report(bad)
        assert report.status == 1 and "malformed outcome" in report.stderr


def test_a_worker_death_reports_its_signal_or_status():
    from concurrentd._deaths import WorkerKilled
    oom = WorkerKilled("worker 5 … OOM", cause="oom", exitcode=-9, pid=5, unit="u")
    assert _cli.failure_report(oom) == (137, None, "python -m concurrentd call: worker 5 … OOM\n")
    exited = WorkerKilled("worker 5 exited", cause="exit", exitcode=4, pid=5, unit="u")
    assert _cli.failure_report(exited) == (4, None, None)


def test_properties_files_and_their_duplicates():
    text = "# c\n; c\n[Service]\n\n User = nobody \nEnvironment=A=1 B=2\n"
    assert _cli_properties.parse_file(text, "f") == [("User", "nobody", "f:5"),
                                                     ("Environment", "A=1 B=2", "f:6")]
    with pytest.raises(_cli_properties.PropertyError, match="f:2 'oops': expected NAME=VALUE"):
        _cli_properties.parse_file("User=x\noops\n", "f")
    assert _cli_properties.collect([("User", "a", "f:1"), ("MemoryMax", "1G", "f:2")],
                                   [("User", "b", "-p")]) == {"User": "b", "MemoryMax": "1G"}
    with pytest.raises(_cli_properties.PropertyError,
                       match=r"-p: SystemCallFilter= is given a second time \(first at -p\)"):
        _cli_properties.collect([], [("SystemCallFilter", "~@mount", "-p"),
                                     ("SystemCallFilter", "~@swap", "-p")])


def test_dbus_values_print_as_json():
    converted = _cli_properties.check({"CPUAffinity": "0-2", "LimitNOFILE": "1024:4096"})
    assert _cli_properties.format_dbus(converted) == (
        "CPUAffinity ay [7, 0, 0, 0, 0, 0, 0, 0]\nLimitNOFILE t 4096\nLimitNOFILESoft t 1024\n")


def test_a_script_gets_the_sys_path_python_gives_it():
    assert _cli.script_sys_path(["/cwd", "/lib"], "/a/s.py", False) == ["/a", "/lib"]
    assert _cli.script_sys_path(["/lib"], "/a/s.py", True) == ["/lib"]

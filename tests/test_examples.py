"""Each example runs with its one command and does what it says."""

import importlib.util
import os
import subprocess
import sys

import pytest

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(CHECKOUT, "examples")


def load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", os.path.join(EXAMPLES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_python(*args):
    """README's run command for `python ARGS`; --auto runs it directly where systemd is PID 1
    (as here). With this checkout first on the path: a script's own directory is first there,
    and the concurrentd installed may be another checkout's."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [CHECKOUT, os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "concurrentd.testbed", "--auto", "--",
                           sys.executable, *args],
                          capture_output=True, text=True, timeout=120, env=env, cwd=CHECKOUT)


def run_command(name, *args):
    return run_python(os.path.join(EXAMPLES, f"{name}.py"), *args)


def test_examples_run_with_the_concurrentd_of_this_checkout(tmp_path):
    # a script, as an example is: its own directory, not the working directory, leads sys.path
    probe = tmp_path / "probe.py"
    probe.write_text("import concurrentd, os\nprint(os.path.dirname(concurrentd.__file__))\n")
    out = run_python(str(probe))
    assert out.stdout.strip() == os.path.join(CHECKOUT, "concurrentd"), out.stderr


@pytest.mark.parametrize("name", ["seed", "cpu_capped", "memory_capped", "single_process",
                                  "container", "asyncio_pool"])
def test_example_runs_with_its_command(name):
    run = run_command(name)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip()


def test_seed_is_nobody_without_network_read_only_with_private_tmp():
    out = run_command("seed").stdout
    assert "unit: concurrentd-" in out
    assert out.count("user nobody, interfaces ['lo']") == 3
    assert "squares: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]" in out
    seed = load("seed")

    def world():
        import os

        def writes(path):
            try:
                with open(os.path.join(path, "probe"), "w"):
                    return True
            except OSError:
                return False
        return os.listdir("/tmp"), writes("/tmp"), writes("/usr"), writes("/var"), writes("/root")

    from concurrentd import TransientUnitPoolExecutor
    with TransientUnitPoolExecutor(1, {"User": "nobody", "CPUQuota": 0.2, "PrivateNetwork": True,
                                       "ProtectSystem": "strict", "PrivateTmp": True}) as pool:
        assert pool.submit(seed.whoami, 0).result()[1:] == ("nobody", ["lo"])
        assert pool.submit(world).result() == ([], True, False, False, False)


def test_cpu_capped_uses_at_most_a_quarter_of_a_cpu():
    share = load("cpu_capped").main(3.0)
    assert 0.05 < share <= 0.25


def test_memory_cap_kills_at_the_cap():
    assert load("memory_capped").main() == "oom"


def test_single_process_and_run():
    exitcode, uid = load("single_process").main()
    assert exitcode == 0
    assert uid not in (0, 65534)   # DynamicUser= allocated a user of its own


def test_container_sees_the_other_roots_os_release(tmp_path):
    container = load("container")
    root = container.make_root(str(tmp_path / "root"))
    os.chmod(tmp_path, 0o755)
    assert container.main(root)["NAME"] == '"concurrentd example root"'
    with open("/etc/os-release") as f:
        assert "concurrentd example root" not in f.read()


def test_asyncio_run_in_executor():
    import asyncio
    assert asyncio.run(load("asyncio_pool").main()) == [65534] * 4

"""Acceptance of issue 4: a worker that entered a unit is confined exactly as the unit's main
process. Real systemd, real kernel, no mocks: every value is what /proc and the syscalls report."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess

import pytest
from entry_helpers import (
    Worker,
    diff_table,
    needs_systemd,
    proc_snapshot,
    public_anchor,
    systemd_version,
    transient_unit,
)

from concurrentd._core import lib
from concurrentd._entry import (
    ENTER_FAILED_EXIT_STATUS,
    AnchorGone,
    EnterError,
    EntryPlan,
    enter,
    fork_and_enter,
)

pytestmark = needs_systemd

KITCHEN_SINK = [
    "User=nobody", "Group=nogroup", "SupplementaryGroups=users",
    "PrivateTmp=yes", "PrivateNetwork=yes", "PrivateIPC=yes", "ProtectHostname=yes",
    "ProtectSystem=strict", "ProtectHome=yes", "ReadWritePaths=/var/tmp", "PrivateDevices=yes",
    "NoNewPrivileges=yes", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_CHOWN",
    "AmbientCapabilities=CAP_NET_BIND_SERVICE",
    "SystemCallFilter=@system-service", "SystemCallArchitectures=native",
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    "LimitNOFILE=1234", "LimitNPROC=321", "UMask=0027", "Nice=5", "CPUSchedulingPolicy=batch",
    "OOMScoreAdjust=300", "CoredumpFilter=private-anonymous shared-anonymous",
    "CPUAffinity=0", "NUMAPolicy=bind", "NUMAMask=0", "IOSchedulingClass=best-effort",
    "IOSchedulingPriority=6",
    "WorkingDirectory=/var/tmp", "Environment=CONCURRENTD_TEST=kitchen-sink",
    "CPUQuota=50%", "MemoryMax=200M", "TasksMax=50",
]

NOBODY = pwd.getpwnam("nobody").pw_uid


def _parity(anchor_pid: int, plan: EntryPlan):
    with Worker(plan) as w:
        assert "ok" in w.report, w.report
        anchor, worker = proc_snapshot(anchor_pid), proc_snapshot(w.pid)
        table = diff_table(anchor, worker)
        assert not table, "worker differs from the anchor:\n" + table
        return w.report["ok"], anchor


def test_kitchen_sink_parity_and_behaviour():
    with transient_unit(KITCHEN_SINK) as (_unit, pid), EntryPlan.from_pid(
            pid, anchor_exe=public_anchor()) as plan:
        assert plan.uid == (NOBODY,) * 3
        assert plan.filters, "the unit's seccomp filters were not copied"
        rep, anchor = _parity(pid, plan)
        # The unit really is confined (parity with an unconfined anchor would prove nothing).
        assert anchor["status.NoNewPrivs"] == "1" and anchor["status.Seccomp"] == "2"
        assert rep["uid"] == rep["euid"] == NOBODY
        assert rep["environ"].get("CONCURRENTD_TEST") == "kitchen-sink"
        assert rep["cwd"] == "/var/tmp"
        assert rep["umask"] == 0o027
        assert rep["tmp"] == []
        assert rep["write_usr"] in ("EROFS", "EACCES")
        assert rep["connect_out"] in ("ENETUNREACH", "EHOSTUNREACH", "EACCES", "EPERM")
        assert rep["connect_loopback"] == "ok"
        assert rep["swapon"] == "signal SIGSYS", rep["swapon"]
        # Negative control: the comparison does see a worker that did not enter.
        with Worker(None, do_enter=False) as plain:
            differs = diff_table(anchor, proc_snapshot(plain.pid))
        for key in ("status.Uid", "status.CapEff", "status.Seccomp_filters", "ns.net", "ns.mnt",
                    "limits", "cgroup", "environ", "seccomp_programs", "nice", "sched",
                    "numa_policy", "coredump_filter", "affinity"):
            assert f"  {key} " in differs, key


def test_root_directory_parity(tmp_path):
    root = tmp_path / "root"
    for d in ("usr", "tmp", "var/tmp", "proc", "dev"):
        (root / d).mkdir(parents=True)
    (root / "marker").write_text("only this root has it")
    shutil.copy2(public_anchor(), root / "anchor")
    os.chmod(root, 0o755)
    for p in (tmp_path, tmp_path.parent, tmp_path.parent.parent):
        os.chmod(p, 0o755)
    props = [f"RootDirectory={root}", "User=nobody", "Group=nogroup", "PrivateNetwork=yes",
             "NoNewPrivileges=yes", "SystemCallFilter=@system-service", "MountAPIVFS=yes",
             "WorkingDirectory=/var/tmp", "Environment=WHERE=rootdir"]
    argv = ["/anchor", "--owner-pid", str(os.getpid()), "--state", "-" * 24]
    with transient_unit(props, argv) as (_unit, pid), EntryPlan.from_pid(
            pid, anchor_exe=str(root / "anchor")) as plan:
        rep, _ = _parity(pid, plan)
        assert rep["marker"] == "only this root has it"
        assert rep["cwd"] == "/var/tmp"
        assert rep["environ"]["WHERE"] == "rootdir"


def test_plan_fds_never_reach_the_worker():
    with transient_unit(["User=nobody", "PrivateNetwork=yes", "PrivateTmp=yes"]) as (_u, pid), \
            EntryPlan.from_pid(pid, anchor_exe=public_anchor()) as plan:
        # One after the other, so that both are forked from the same set of the parent's fds.
        with Worker(None, do_enter=False) as plain:
            expected = set(plain.report["ok"]["fds"]) - set(plan.fds())
        with Worker(plan) as entered:
            assert "ok" in entered.report, entered.report
            assert set(entered.report["ok"]["fds"]) == expected


def test_failed_entry_raises_and_exits_distinctively():
    with transient_unit(["PrivateNetwork=yes", "PrivateIPC=yes"]) as (_u, pid), \
            EntryPlan.from_pid(pid, anchor_exe=public_anchor()) as plan:
        # Break the plan: claim the first namespace fd is of another kind; setns refuses it.
        wrong = lib.CLONE_NEWUTS if plan._c.ns[0].nstype != lib.CLONE_NEWUTS else lib.CLONE_NEWNET
        plan._c.ns[0].nstype = wrong
        with Worker(plan) as w:
            step, err, message = w.report["enter_error"]
            assert step.startswith("setns(") and err == 22
            assert message.endswith(": Invalid argument"), message
            assert w.release() == ENTER_FAILED_EXIT_STATUS


def test_fork_and_enter_reports_a_dead_anchor():
    with transient_unit(["PrivateNetwork=yes"]) as (unit, pid):
        plan = EntryPlan.from_pid(pid, anchor_exe=public_anchor())
        subprocess.run(["systemctl", "stop", unit], check=True)
        with plan, pytest.raises(EnterError) as ei:
            child = fork_and_enter(plan)
            if child == 0:
                os._exit(0)
        assert ei.value.step == "anchor" and "has exited" in str(ei.value)
    with pytest.raises(AnchorGone):
        EntryPlan.from_pid(pid, anchor_exe=public_anchor())


def test_fork_and_enter_runs_confined():
    with transient_unit(["User=nobody", "PrivateNetwork=yes"]) as (_u, pid), \
            EntryPlan.from_pid(pid, anchor_exe=public_anchor()) as plan:
        r, w = os.pipe()
        child = fork_and_enter(plan)
        if child == 0:
            os.write(w, str(os.getuid()).encode())
            os._exit(0)
        os.close(w)
        assert os.read(r, 32) == str(NOBODY).encode()
        os.close(r)
        assert os.waitpid(child, 0)[1] == 0


def test_plan_refuses_a_process_that_is_not_the_anchor():
    with transient_unit(["PrivateNetwork=yes"], ["/bin/sleep", "infinity"]) as (_u, pid):
        with pytest.raises(ValueError, match="not the anchor"):
            EntryPlan.from_pid(pid, anchor_exe=public_anchor())
        # Any executable may be the anchor if named; securebits are then assumed (0).
        with EntryPlan.from_pid(pid, anchor_exe=os.path.realpath("/bin/sleep")) as plan:
            assert not plan.securebits_known
            with Worker(plan) as w:
                assert "ok" in w.report, w.report
                assert not diff_table(proc_snapshot(pid), proc_snapshot(w.pid))


@pytest.mark.parametrize("settings", [
    ["CPUSchedulingPolicy=idle"],
    ["CPUSchedulingPolicy=batch", "Nice=7", "CPUSchedulingResetOnFork=yes"],
    ["CPUSchedulingPolicy=other", "Nice=-5", "CPUSchedulingResetOnFork=yes", "User=nobody"],
], ids=["idle", "batch-reset-on-fork", "negative-nice-reset-on-fork"])
def test_scheduling_policy_parity(settings):
    with transient_unit(settings) as (_unit, pid), EntryPlan.from_pid(
            pid, anchor_exe=public_anchor()) as plan:
        _, anchor = _parity(pid, plan)
    policy = {"idle": os.SCHED_IDLE, "batch": os.SCHED_BATCH, "other": os.SCHED_OTHER}[
        settings[0].partition("=")[2]]
    reset = os.SCHED_RESET_ON_FORK if "CPUSchedulingResetOnFork=yes" in settings else 0
    assert anchor["sched"] == policy | reset   # what systemd set, which the worker matched


def test_private_users_parity():
    """PrivateUsers=: the unit has its own user namespace, joined last (csrc/enter.c ns_order)."""
    props = ["User=nobody", "Group=nogroup", "PrivateUsers=yes", "PrivateNetwork=yes",
             "PrivateTmp=yes", "NoNewPrivileges=yes", "SystemCallFilter=@system-service"]
    with transient_unit(props) as (_u, pid), EntryPlan.from_pid(
            pid, anchor_exe=public_anchor()) as plan:
        assert "user" in plan.namespaces
        rep, _ = _parity(pid, plan)
        assert rep["uid"] == NOBODY and rep["tmp"] == []


@pytest.mark.parametrize("since, settings", [
    (256, ["PrivateUsersEx=identity", "User=nobody"]),
    (258, ["PrivateUsersEx=full", "User=nobody"]),
    (257, ["ProtectControlGroupsEx=private", "User=nobody"]),
    (257, ["ProtectControlGroupsEx=strict", "User=nobody"]),
    (257, ["PrivateTmpEx=disconnected", "User=nobody"]),
    (258, ["ProtectHostnameEx=private", "User=nobody"]),
    (258, ["PrivateBPF=yes", "User=nobody"]),
    (260, ["MemoryTHP=disable", "BindNetworkInterface=lo", "User=nobody"]),
], ids=["users-identity", "users-full", "cgroups-private", "cgroups-strict", "tmp-disconnected",
        "hostname-private", "private-bpf", "thp-bind-interface"])
def test_newer_sandboxing_parity(since, settings):
    """What systemd 256 to 260 added to the sandbox: a worker matches the anchor there too.
    (PrivatePIDs=: a pool's workers, children of the entered zygote, are in the unit's pid
    namespace; test_executor checks them.)"""
    if systemd_version() < since:
        pytest.skip(f"systemd >= {since}")
    with transient_unit(settings) as (_u, pid), EntryPlan.from_pid(
            pid, anchor_exe=public_anchor()) as plan:
        rep, anchor = _parity(pid, plan)
        assert rep["uid"] == NOBODY


def test_filters_that_forbid_dropping_the_held_capability_get_no_new_privs_instead():
    # An anchor with filters and neither no_new_privs nor CAP_SYS_ADMIN (systemd 257, User=,
    # SystemCallFilter=, no NoNewPrivileges=): the zygote holds CAP_SYS_ADMIN to load them and
    # each load drops it after them, with capset. Filters that forbid capset cannot be followed
    # by that drop: the zygote then takes no_new_privs and drops the capability at once. systemd
    # itself sets no_new_privs for such filters, so the plan is made to say it has none.
    from concurrentd._entry import filters_let_admin_go, install_filters, release_admin

    props = ["User=nobody", "NoNewPrivileges=yes", "SystemCallFilter=~capset"]
    with transient_unit(props) as (_u, pid), EntryPlan.from_pid(
            pid, anchor_exe=public_anchor()) as plan:
        plan.no_new_privs = False
        plan._build_c(True)
        assert plan.needs_sys_admin_for_filters and plan._c.hold_sys_admin
        r, w = os.pipe()
        child = os.fork()
        if child == 0:
            code = 1
            try:
                os.close(r)

                def status():
                    with open("/proc/self/status") as f:
                        return dict(line.split(":\t", 1) for line in f.read().splitlines()
                                    if ":\t" in line)
                enter(plan, seccomp=False)
                held = status()["CapEff"]
                allowed = filters_let_admin_go(plan)
                release_admin(plan)
                install_filters(plan)
                st = status()
                os.write(w, repr((held, allowed, st["CapEff"], st["NoNewPrivs"], st["Seccomp"],
                                  os.getuid())).encode())
                code = 0
            except BaseException as e:
                os.write(w, repr(e).encode())
            finally:
                os._exit(code)
        os.close(w)
        with os.fdopen(r) as f:
            report = f.read()
        assert os.waitpid(child, 0)[1] == 0, report
        held, allowed, cap_eff, nnp, seccomp, uid = eval(report)   # noqa: S307 - our own repr
        assert int(held, 16) == 1 << 21   # CAP_SYS_ADMIN, held for the filters
        assert allowed is False           # the trial child could not drop it under them
        assert int(cap_eff, 16) == plan.caps["effective"] == 0
        assert (nnp, seccomp, uid) == ("1", "2", NOBODY)


def test_a_rehearsal_reads_the_process_itself_and_keeps_nothing():
    """EntryPlan.rehearse() (run while waiting for systemd) ignores errors: check that the read it
    makes succeeds on the calling process, and that it leaves no fd behind."""
    with EntryPlan.from_pid(os.getpid(), anchor_exe="/proc/self/exe", seccomp=False) as plan:
        assert plan.anchor_pid == os.getpid() and plan.uid == (os.getuid(),) * 3
        assert not plan.namespaces and not plan.cgroup_procs   # nothing to enter: it is us
    before = sorted(os.listdir("/proc/self/fd"))
    EntryPlan.rehearse()
    assert sorted(os.listdir("/proc/self/fd")) == before

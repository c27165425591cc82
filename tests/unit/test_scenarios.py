"""Scenario parameters are validated and the guest-side shell they generate is sound.

The generated text is checked with ``sh -n`` (syntax) and, where it can run on any Linux
host without touching it, run for real in a scratch directory.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from dataclasses import FrozenInstanceError
from pathlib import Path
from typing import Any

import pytest

from reprolab.detect.events import GuestEvent
from reprolab.errors import UserError
from reprolab.scenario import (
    LKDTM_EXPECTED,
    BackgroundLoad,
    CfsBandwidthStorm,
    HungTask,
    Lkdtm,
    LoadBalanceStress,
    NestedKvm,
    RebootUnderLoad,
    RtHog,
    Scenario,
    Together,
)
from reprolab.scenario.base import detached, kill_detached, one_line
from reprolab.scenario.needs import nested_missing

ALL: list[Scenario] = [
    RtHog(), RtHog(cpus=None, runtime_us=-1, runtime_share=True, ignore_sigterm=True),
    CfsBandwidthStorm(), CfsBandwidthStorm(cgroup="v1", churn_interval_s=0),
    LoadBalanceStress(), LoadBalanceStress(hotplug=False, migration_storm=False),
    LoadBalanceStress(rt_churn=6), RtHog(cpus=None, stop_after_s=2, keep_cpus=(0, 2)),
    BackgroundLoad(), HungTask(), HungTask(method="lkdtm"), Lkdtm("SOFTLOCKUP"), NestedKvm(),
    RebootUnderLoad(load=RtHog(), after_reboot="echo -1 > /proc/sys/kernel/x"),
]


def _scripts(sc: Scenario) -> list[str]:
    out = [sc.setup_script(), sc.inject_script(), sc.stop_script(), sc.cleanup_script()]
    for name in ("freeze_script", "module_script", "arm_script", "reboot_script",
                 "throttled_script", "hotplug_loop", "sysctl_script"):
        if hasattr(sc, name):
            out.append(getattr(sc, name)())
    return [s for s in out if s]


@pytest.mark.parametrize("sc", ALL, ids=lambda s: type(s).__name__)
def test_generated_shell_parses(sc: Scenario) -> None:
    for script in _scripts(sc):
        for text in (script, one_line(script)):
            done = subprocess.run(["sh", "-n", "-c", text], capture_output=True, text=True,
                                  check=False)
            assert done.returncode == 0, (text, done.stderr)


@pytest.mark.parametrize("kwargs, message", [
    ({"priority": 0}, "priority must be 1..99"),
    ({"runtime_us": 2_000_000}, "runtime_us must be -1 or 0..period_us"),
    ({"runtime_us": -2}, "runtime_us must be -1"),
    ({"cpus": ()}, "cpus must be None or"),
    ({"cpus": (-1,)}, "cpus must be None or"),
    ({"period_us": 0}, "period_us must be positive"),
])
def test_rt_hog_rejects(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError, match=message):
        RtHog(**kwargs)


def test_rt_hog_commands() -> None:
    sc = RtHog(cpus=(0, 1), priority=70, runtime_us=-1, hogs_per_cpu=2)
    assert sc.unthrottled
    inject = sc.inject_script()
    assert "chrt -f 70 taskset -c $c" in inject and "for c in 0 1;" in inject
    assert "setsid sh -c" in inject and "</dev/null >/dev/null 2>&1 &" in inject
    assert "/run/reprolab/rt_hog.pids" in inject
    setup = sc.setup_script()
    assert "echo -1 > /proc/sys/kernel/sched_rt_runtime_us" in setup
    assert "RT_RUNTIME_SHARE" not in setup
    assert "echo RT_RUNTIME_SHARE" in RtHog(runtime_share=True).setup_script()
    assert "NO_RT_RUNTIME_SHARE" in RtHog(runtime_share=True).cleanup_script()
    assert "trap" in RtHog(ignore_sigterm=True).hog_command("0")
    assert "ls -d /sys/devices/system/cpu/cpu[0-9]*" in RtHog(cpus=None).inject_script()
    with pytest.raises(FrozenInstanceError):
        sc.priority = 1  # type: ignore[misc]


def test_rt_hog_knobs_are_saved_set_and_restored(tmp_path: Any) -> None:
    """Run the knob scripts against a fake /proc/sys/kernel: save, set, restore."""
    sysctl = tmp_path / "k"
    sysctl.mkdir()
    (sysctl / "sched_rt_runtime_us").write_text("950000\n")
    (sysctl / "sched_rt_period_us").write_text("1000000\n")
    sc = RtHog(runtime_us=10_000, period_us=20_000)

    def run(script: str) -> None:
        text = script.replace("/proc/sys/kernel", str(sysctl)).replace(
            "/run/reprolab", str(tmp_path / "state"))
        subprocess.run(["sh", "-c", text], check=True)

    run(sc.setup_script())
    assert (sysctl / "sched_rt_runtime_us").read_text().strip() == "10000"
    assert (sysctl / "sched_rt_period_us").read_text().strip() == "20000"
    run(RtHog(runtime_us=-1).setup_script())  # a second setup keeps the first save
    run(sc.cleanup_script())
    assert (sysctl / "sched_rt_runtime_us").read_text().strip() == "950000"
    assert (sysctl / "sched_rt_period_us").read_text().strip() == "1000000"


@pytest.mark.parametrize("kwargs, message", [
    ({"width": 0}, "width must be"),
    ({"width": 100, "depth": 3}, "make 1010100 groups"),
    ({"quota_us": 999}, "quota_us must be at least 1000"),
    ({"period_us": 500}, "period_us must be 1000..1000000"),
    ({"cgroup": "v3"}, "cgroup must be auto, v1 or v2"),
    ({"churn_interval_s": -1}, "must not be negative"),
])
def test_cfs_storm_rejects(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError, match=message):
        CfsBandwidthStorm(**kwargs)


def test_cfs_storm_sizes_and_commands() -> None:
    sc = CfsBandwidthStorm(width=3, depth=2, quota_us=2000, period_us=5000)
    assert (sc.groups, sc.leaves) == (12, 9)
    setup = sc.setup_script()
    assert "cgroup.subtree_control" in setup and '"$2 5000" > $1/cpu.max' in setup
    assert "setq $d/g$i 2000" in setup
    v1 = CfsBandwidthStorm(cgroup="v1").setup_script()
    assert "V=1; R=/sys/fs/cgroup/cpu/rl_storm" in v1 and "cpu.cfs_quota_us" in v1
    inject = sc.inject_script()
    assert "setq $g max" in inject and "setq $g 2000" in inject
    assert "wait" in CfsBandwidthStorm(churn_interval_s=0).inject_script()
    assert "nr_throttled" in sc.throttled_script()


def test_cfs_storm_tree_on_a_scratch_directory(tmp_path: Any) -> None:
    """The tree builder creates width**1 + ... + width**depth groups and lists the leaves."""
    sc = CfsBandwidthStorm(width=2, depth=3, cgroup="v2")
    root = tmp_path / "cg"
    root.mkdir()
    text = sc.setup_script().replace("/sys/fs/cgroup", str(root)).replace(
        "/run/reprolab", str(tmp_path / "state"))
    done = subprocess.run(["sh", "-c", text], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == str(sc.groups)
    leaves = (tmp_path / "state" / "cfs_storm.leaves").read_text().split()
    assert len(leaves) == sc.leaves == 8
    assert (root / "rl_storm/g1/g0/g1/cpu.max").read_text() == "1000 10000\n"
    assert (root / "rl_storm/g1/cgroup.subtree_control").read_text() == "+cpu\n"
    # The root's quota never binds and keeps a bandwidth user while every group churns to
    # max (the cfs_bandwidth_used static key is not flipped under TCG).
    assert (root / "rl_storm/cpu.max").read_text() == "10240000 10000\n"


def test_load_balance_commands() -> None:
    sc = LoadBalanceStress(hogs=3)
    inject = sc.inject_script()
    assert "taskset -pc" in inject and "/online" in inject
    assert "taskset -c $((RANDOM % N))" in inject
    assert "&;" not in inject
    bare = LoadBalanceStress(hotplug=False, migration_storm=False, affinity_interval_s=0)
    assert "online" not in bare.inject_script() and "taskset" not in bare.inject_script()
    assert "echo 1 > $f" in sc.cleanup_script()


def test_background_load_command() -> None:
    assert BackgroundLoad(io=0, vm=2).command() == (
        "stress-ng --timeout 0 --cpu 1 --vm 2 --fork 1 --timer 1 --vm-bytes 32M")
    with pytest.raises(UserError, match="at least one stressor"):
        BackgroundLoad(cpu=0, vm=0, io=0, fork=0, timer=0)
    with pytest.raises(UserError, match="vm_bytes"):
        BackgroundLoad(vm_bytes="lots")


def test_hung_task_commands() -> None:
    sc = HungTask(timeout_s=7, check_interval_s=2)
    assert sc.cmdline()["sysctl.kernel.hung_task_timeout_secs"] == 7
    assert "fsfreeze --freeze /mnt/rl-hung" in sc.freeze_script()
    assert "mount -t ext4 -o loop" in sc.freeze_script()
    assert sc.blocker("lkdtm") == "echo HUNG_TASK > /sys/kernel/debug/provoke-crash/DIRECT"
    assert "fsfreeze --unfreeze" in sc.stop_script()
    with pytest.raises(UserError, match="method must be"):
        HungTask(method="nfs")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="timeout_s"):
        HungTask(timeout_s=0)


def test_lkdtm_types_and_expectations() -> None:
    for name in ("SOFTLOCKUP", "HARDLOCKUP", "SPINLOCKUP", "HUNG_TASK", "PANIC", "BUG",
                 "WARNING", "EXCEPTION"):
        assert name in LKDTM_EXPECTED
        assert Lkdtm(name).expected is LKDTM_EXPECTED[name]
    assert Lkdtm("PANIC").expected.expect() == {  # type: ignore[union-attr]
        "kind": "panic", "title": "kernel panic: dumptest"}
    assert "echo SOFTLOCKUP > /sys/kernel/debug/provoke-crash/DIRECT" in (
        Lkdtm("SOFTLOCKUP").inject_script())
    assert Lkdtm("CORRUPT_STACK").expected is None
    with pytest.raises(UserError, match="LKDTM name"):
        Lkdtm("panic; reboot")


def test_nested_and_reboot_commands() -> None:
    assert "modprobe $M nested=1" in NestedKvm().module_script()
    assert NestedKvm(vendor="intel").module_script().startswith("M=kvm_intel")
    with pytest.raises(UserError, match="runs must be"):
        NestedKvm(runs=0)
    sc = RebootUnderLoad(load=RtHog(), watchdog_timeout_s=10, feed_interval_s=2,
                         after_reboot="echo -1 > x")
    assert "modprobe i6300esb heartbeat=10 nowayout=1" in sc.arm_script()
    assert "busybox watchdog -F -T 10 -t 2 /dev/watchdog" in sc.feeder()
    assert sc.reboot_script().count("reboot; echo -1 > x") == 1
    assert sc.cmdline() == {"i6300esb.heartbeat": 10, "i6300esb.nowayout": 1}
    with pytest.raises(UserError, match="feed_interval_s"):
        RebootUnderLoad(watchdog_timeout_s=5, feed_interval_s=5)
    with pytest.raises(UserError, match="cannot itself be a reboot"):
        RebootUnderLoad(load=RebootUnderLoad())


def test_together_rejects_duplicates() -> None:
    with pytest.raises(UserError, match="appear once"):
        Together((RtHog(), RtHog(cpus=(1,))))
    with pytest.raises(UserError, match="at least one"):
        Together(())


def test_detached_processes_are_started_and_killed(tmp_path: Any) -> None:
    """The detach/kill pair on this host: the whole process group goes."""
    start = detached("t", "sleep 300 & sleep 301 & wait").replace(
        "/run/reprolab", str(tmp_path))
    subprocess.run(["sh", "-c", start], check=True)
    pid = int((tmp_path / "t.pids").read_text().split()[0])
    listing: list[str] = []
    for _ in range(50):  # the sleeps start a moment after the detached shell
        listing = subprocess.run(["pgrep", "-g", str(pid)], capture_output=True, text=True,
                                 check=False).stdout.split()
        if len(listing) >= 3:
            break
        time.sleep(0.1)
    assert len(listing) >= 3  # the group leader and its two sleeps
    subprocess.run(["sh", "-c", kill_detached("t").replace("/run/reprolab", str(tmp_path))],
                   check=True)
    subprocess.run(["sh", "-c", f"for i in $(seq 50); do pgrep -g {pid} >/dev/null || "
                    "exit 0; sleep 0.1; done; exit 1"], check=True)
    assert not (tmp_path / "t.pids").exists()


class _DeadGuest:
    """A guest whose kernel already crashed: stop and cleanup must not touch it."""

    ssh = None
    calls: list[str]

    def __init__(self) -> None:
        self.calls = []

    @property
    def fatal_event(self) -> GuestEvent:
        return GuestEvent("panic", "Kernel panic", "console", True, 1.0)

    def sh(self, command: str, timeout: float = 60.0) -> str:
        self.calls.append(command)
        raise AssertionError("the guest is gone")

    def wait(self, seconds: float) -> GuestEvent | None:
        return self.fatal_event


def test_stop_and_cleanup_do_nothing_on_a_dead_guest() -> None:
    guest = _DeadGuest()
    for sc in ALL:
        sc.stop(guest)
        sc.cleanup(guest)
    assert guest.calls == []
    with pytest.raises(AssertionError, match="gone"):
        RtHog().run(guest, 1)


def test_one_line_round_trips() -> None:
    script = "echo 'a b'; echo \"$X\"\necho done"
    assert shlex.split(one_line(script)) == ["sh", "-c", script]


def test_nested_reason_names_the_capability() -> None:
    reason = nested_missing("vmx")
    assert reason is None or "VMX" in reason
    # TCG emulates SVM, so a nested SVM case always runs on a TCG host.
    if reason is not None and "TCG" in reason:
        assert nested_missing("svm") is None


def test_lkdtm_spinlockup_writes_twice() -> None:
    # lkdtm_SPINLOCKUP returns holding its lock; only the second write deadlocks.
    assert Lkdtm("SPINLOCKUP").writes == 2
    assert Lkdtm("SPINLOCKUP").inject_script().count("echo SPINLOCKUP >") == 2
    assert Lkdtm("PANIC").writes == 1 and Lkdtm("PANIC", repeat=3).writes == 3
    with pytest.raises(UserError, match="repeat"):
        Lkdtm("PANIC", repeat=0)


def test_built_kernel_need(monkeypatch: pytest.MonkeyPatch) -> None:
    from reprolab.scenario.needs import BUILD_ENV, built_kernel_missing, unreliable_stacks

    assert built_kernel_missing("stock") is None
    assert unreliable_stacks("stock") is None
    monkeypatch.setenv(BUILD_ENV, "1")
    assert built_kernel_missing("build:linux-source-6.12") is None
    monkeypatch.delenv(BUILD_ENV)
    reason = built_kernel_missing("build:linux-source-6.12")
    assert reason is None or "reprolab build-kernel build:linux-source-6.12" in reason \
        or "cannot be built here" in reason


def test_rt_hog_stopper_kills_only_hogs_off_the_kept_cpus(tmp_path: Any) -> None:
    """Run the launcher's stopper with ``sleep`` standing in for the hog: the kept CPU's
    hog survives the stop time, the others are killed."""
    sc = RtHog(cpus=(0, 1, 2), stop_after_s=0.3, keep_cpus=(1,))
    script = (
        "for c in 0 1 2; do sleep 5 & " + sc._stopper() + "echo $c:$! >> pids; done; "
        "sleep 1; for e in $(cat pids); do p=${e#*:}; "
        "if kill -0 $p 2>/dev/null; then echo alive:${e%:*}; kill $p; fi; done"
    )
    done = subprocess.run(["sh", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          check=True, timeout=20)
    assert done.stdout.split() == ["alive:1"], done.stdout


def test_rt_hog_rejects_negative_stop_time() -> None:
    with pytest.raises(UserError, match="stop_after_s"):
        RtHog(stop_after_s=-1)


def test_load_balance_rt_churn() -> None:
    assert "chrt -f" not in LoadBalanceStress().inject_script()
    script = LoadBalanceStress(rt_churn=3).inject_script()
    assert "chrt -f $((10 + n))" in script and "-lt 3" in script
    with pytest.raises(UserError, match="rt_churn"):
        LoadBalanceStress(rt_churn=65)
def test_built_kernel_need_takes_relative_patches_from_base_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A case's ``patches=patches`` is relative to its file, not to where pytest started."""
    from reprolab.scenario.needs import BUILD_ENV, built_kernel_missing

    monkeypatch.delenv(BUILD_ENV, raising=False)
    (tmp_path / "patches").mkdir()
    (tmp_path / "patches" / "0001-x.patch").write_text("--- a/x\n+++ b/x\n")
    monkeypatch.chdir(tmp_path.parent)
    spec = "build:linux-source-6.12+patches=patches"
    lost = built_kernel_missing(spec)
    assert lost is not None and "does not exist" in lost
    found = built_kernel_missing(spec, base_dir=tmp_path)
    assert found is None or "does not exist" not in found


def test_load_balance_keeps_to_its_cpus() -> None:
    script = LoadBalanceStress(hogs=2, rt_churn=2, cpus=(0, 1)).inject_script()
    # Hotplug cycles only the load's CPUs; a witness CPU is never taken offline.
    assert "/sys/devices/system/cpu/cpu0/online /sys/devices/system/cpu/cpu1/online" in script
    assert "cpu[0-9]*/online" not in script
    # Hogs and RT churn start pinned to the load's CPUs; affinity churn stays within them.
    assert script.count("taskset -c 0,1 ") == 2
    assert "taskset -pc 0,1 $p" in script and "0-$((N - 1))" not in script
    unrestricted = LoadBalanceStress(hogs=2).inject_script()
    assert "cpu[0-9]*/online" in unrestricted and "taskset -c 0,1" not in unrestricted
    for bad in ((), (1, 1), (-1,)):
        with pytest.raises(UserError):
            LoadBalanceStress(cpus=bad)

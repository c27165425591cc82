"""Each scenario that can run on the stock kernel, in a real guest (TCG here).

Durations are seconds, not minutes: these prove each mechanism is provoked and seen, and
that stop/cleanup leave the guest as they found it; the field-bug cases in testcases/ run
the scenarios at their real sizes.
"""

from __future__ import annotations

from typing import Any

import pytest
from vmtools import domain_name, make_case, our_domains

from reprolab.guest.handle import Guest
from reprolab.run.session import Session
from reprolab.run.verdict import Outcome
from reprolab.scenario import (
    BackgroundLoad,
    CfsBandwidthStorm,
    HungTask,
    LoadBalanceStress,
    NestedKvm,
    RebootUnderLoad,
    RtHog,
    Together,
    clock_report,
)

pytestmark = pytest.mark.vm
TOOLS = {"vcpus": 2, "memory": "512M", "image": "tools"}
WATCHDOG = ("<watchdog model='i6300esb' action='pause'><address type='pci' domain='0x0000' "
            "bus='0x00' slot='0x1e' function='0x0'/></watchdog>")


def _alive(guest: Guest, name: str) -> str:
    """Processes of the scenario's detached groups still alive, as "pid pid ..."."""
    return guest.sh(
        f"f=/run/reprolab/{name}.pids; [ -f $f ] || exit 0; "
        "for p in $(cat $f); do kill -0 $p 2>/dev/null && echo -n \"$p \"; done; true"
    ).strip()


def _run(session: Session, body: Any, **marker: Any) -> Any:
    marker.setdefault("guest", TOOLS)
    marker.setdefault("expect", {"kind": "hard-lockup"})
    result, err = session.run_attempt(make_case("it::scenario", **marker), 1, body)
    if err is not None:
        raise err
    assert result.outcome is not Outcome.INFRA_ERROR, result.error
    assert domain_name(result.directory) not in our_domains()
    return result


def test_rt_hog_with_background_load(session: Session) -> None:
    seen: dict[str, Any] = {}
    hog = RtHog(cpus=(1,), runtime_us=900_000, period_us=1_000_000)
    noise = BackgroundLoad(cpu=1, vm=1, io=0, fork=1, timer=1, vm_bytes="16M")
    both = Together((noise, hog))

    def body(guest: Guest) -> None:
        both.setup(guest)
        seen["knob"] = guest.sh("cat /proc/sys/kernel/sched_rt_runtime_us").strip()
        both.inject(guest)
        seen["event"] = guest.wait_for_event("rt-throttling", 60)
        seen["stressors"] = int(guest.sh("pgrep -c stress-ng || true").strip() or 0)
        both.stop(guest)
        seen["left"] = _alive(guest, "rt_hog") + _alive(guest, "background_load")
        both.cleanup(guest)
        seen["restored"] = guest.sh("cat /proc/sys/kernel/sched_rt_runtime_us").strip()

    result = _run(session, body, expect={"events": ["rt-throttling"]})
    assert seen["knob"] == "900000" and seen["restored"] == "950000"
    assert seen["event"] is not None and not seen["event"].fatal
    assert seen["stressors"] >= 4
    assert seen["left"] == ""
    assert result.outcome is Outcome.REPRODUCED
    assert result.title == "sched: RT throttling activated"


def test_hung_task_on_a_frozen_filesystem(session: Session) -> None:
    """Stock kernel: ext4 on loop (modules copied in from the host), frozen, written to."""
    hung = HungTask(timeout_s=5, check_interval_s=1)
    result = _run(session, lambda g: hung.run(g, 90),
                  cmdline=hung.cmdline(),
                  expect={"kind": "hung-task", "title": r"INFO: task hung in \w+"})
    assert result.outcome is Outcome.REPRODUCED, (result.title, result.events)
    assert result.title == "INFO: task hung in mnt_want_write"
    log = (result.directory / "console.log").read_text(errors="replace")
    assert "blocked for more than 5 seconds" in log
    assert result.vmcore is not None


def test_cfs_bandwidth_storm_throttles_without_lockup(session: Session) -> None:
    storm = CfsBandwidthStorm(width=4, depth=3, quota_us=1000, period_us=5000,
                              churn_interval_s=0.2)
    seen: dict[str, Any] = {}

    def body(guest: Guest) -> None:
        seen["groups"] = int(guest.sh(f"sh -c {_q(storm.setup_script())}").strip())
        storm.inject(guest)
        guest.wait(15)
        seen["throttled"] = storm.nr_throttled(guest)
        storm.stop(guest)
        storm.cleanup(guest)
        seen["gone"] = guest.sh("[ -d /sys/fs/cgroup/rl_storm ] && echo left || echo gone")

    result = _run(session, body)
    assert seen["groups"] == storm.groups == 84
    assert seen["throttled"] > 0
    assert seen["gone"].strip() == "gone"
    assert result.outcome is Outcome.NOT_REPRODUCED
    assert not any(e.fatal for e in result.events), result.events


def test_load_balance_stress_with_hotplug(session: Session) -> None:
    stress = LoadBalanceStress(hogs=6, affinity_interval_s=0.1, hotplug_interval_s=0.3)
    seen: dict[str, Any] = {}

    def body(guest: Guest) -> None:
        stress.setup(guest)
        stress.inject(guest)
        guest.wait(12)
        seen["cycles"] = stress.hotplug_cycles(guest)
        stress.stop(guest)
        stress.cleanup(guest)
        seen["online"] = guest.sh("cat /sys/devices/system/cpu/online").strip()
        seen["left"] = _alive(guest, "load_balance")

    result = _run(session, body)
    assert seen["cycles"] >= 2
    assert seen["online"] == "0-1"
    assert seen["left"] == ""
    assert not any(e.fatal for e in result.events), result.events


def test_nested_kvm_runs_an_l2_guest(session: Session) -> None:
    scenario = NestedKvm(runs=2)
    seen: dict[str, Any] = {}

    def body(guest: Guest) -> None:
        scenario.setup(guest)
        seen["module"] = scenario.loaded_module(guest)
        seen["ok"] = scenario.run_l2(guest)
        seen["clock"] = clock_report(guest)

    result = _run(session, body, guest={"vcpus": 1, "memory": "512M", "image": "tools",
                                        "nested": True})
    assert seen["module"] == "kvm_amd nested=1"
    assert seen["ok"] == 2
    assert seen["clock"].current in seen["clock"].available
    if result.accel == "kvm":
        assert seen["clock"].on_kvmclock


def test_reboot_with_the_watchdog_armed_completes(session: Session) -> None:
    """An idle reboot: the armed (nowayout) watchdog must not fire, the guest restarts."""
    reboot = RebootUnderLoad(watchdog_timeout_s=10, feed_interval_s=2, load_s=1)
    seen: dict[str, Any] = {}

    def body(guest: Guest) -> None:
        seen["outcome"] = reboot.run_reboot(guest, 90)

    result = _run(session, body, guest={**TOOLS, "devices": [WATCHDOG]})
    assert seen["outcome"] == "rebooted"
    log = (result.directory / "console.log").read_text(errors="replace")
    assert "nowayout=1" in log
    assert not any(e.fatal for e in result.events), result.events


def test_rt_starved_reboot_fires_the_watchdog(session: Session) -> None:
    reboot = RebootUnderLoad(load=RtHog(cpus=None, ignore_sigterm=True),
                             watchdog_timeout_s=10, feed_interval_s=2, load_s=3,
                             after_reboot="echo -1 > /proc/sys/kernel/sched_rt_runtime_us")
    seen: dict[str, Any] = {}

    def body(guest: Guest) -> None:
        seen["outcome"] = reboot.run_reboot(guest, 90)

    result = _run(session, body, guest={**TOOLS, "devices": [WATCHDOG]},
                  expect={"events": ["rt-throttling", "watchdog-fire"]})
    assert seen["outcome"] == "watchdog-fire"
    assert result.outcome is Outcome.REPRODUCED
    assert result.vmcore is not None


def _q(text: str) -> str:
    import shlex

    return shlex.quote(text)

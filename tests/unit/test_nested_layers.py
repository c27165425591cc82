"""Layer attribution, vCPU spin detection, the kvm-clock and KVM-flow parsers.

The parsers are fed real output kept in tests/data/nested (an L2 boot log from QEMU in a
TCG L1, L1's KVM debugfs and kvm_exit trace counts read after it).
"""

from __future__ import annotations

import json
from pathlib import Path

from reprolab.detect.events import NMI_INJECTED, NO_OUTPUT, PVPANIC, GuestEvent
from reprolab.detect.parser import ConsoleParser
from reprolab.run.layers import attribute, l2_state, layer_of_l1_event, timeline
from reprolab.run.vcpustats import Sample, shares, spinning
from reprolab.scenario.kvmexits import parse as parse_flow
from reprolab.scenario.nested_linux import (
    MSR_KVM_SYSTEM_TIME_NEW,
    NestedLinux,
    frozen_clock,
    l1_cmdline,
    parse_clock,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "nested"


def _ev(kind: str, at: float, *, fatal: bool = True, source: str = "console") -> GuestEvent:
    return GuestEvent(kind, f"{kind} line", source, fatal, at)  # type: ignore[arg-type]


# -- attribution ---------------------------------------------------------------------------
def test_l2_panic_with_l1_alive_is_l2s() -> None:
    v = attribute([], [_ev("panic", 50.0)], l2_state="running", l1_alive=True)
    assert (v.layer, v.title, v.kind) == ("L2", "L2 panic, L1 alive", "panic")


def test_l1_panic_while_l2_starts_is_l1s() -> None:
    v = attribute([_ev("panic", 30.0)], [], l2_state="starting", l1_alive=False)
    assert (v.layer, v.title) == ("L1", "L1 panic while starting L2")


def test_the_first_fatal_layer_wins() -> None:
    v = attribute([_ev("panic", 30.0)], [_ev("panic", 31.0)], l2_state="running",
                  l1_alive=False)
    assert (v.layer, v.title) == ("L1", "L1 panic while L2 ran (L2 panic follows)")
    v = attribute([_ev("panic", 32.0)], [_ev("panic", 31.0)], l2_state="running",
                  l1_alive=False)
    assert (v.layer, v.title) == ("L2", "L2 panic, then L1 panic")


def test_a_starved_l2_is_the_stuck_l1s_consequence() -> None:
    # Seen here: L1's only CPU stuck in KVM_RUN for 386 s; L2's RCU stall report reached
    # the host 8 ms before L1's soft lockup report.
    v = attribute([_ev("soft-lockup", 500.129)], [_ev("rcu-stall", 500.121)],
                  l2_state="starting", l1_alive=False)
    assert (v.layer, v.title) == (
        "L1", "L1 soft lockup while starting L2 (L2 rcu stall follows)")
    # Long before L1's failure, an L2 stall is L2's own.
    v = attribute([_ev("soft-lockup", 500.0)], [_ev("rcu-stall", 300.0)],
                  l2_state="running", l1_alive=False)
    assert v.layer == "L2"


def test_pvpanic_alone_is_an_l1_panic_seen_by_l0() -> None:
    ev = _ev(PVPANIC, 10.0, source="libvirt")
    assert layer_of_l1_event(ev) == "L0"
    assert attribute([ev], [], l2_state="none", l1_alive=False).title == "L1 panic"


def test_silent_l1_is_told_from_silent_l2() -> None:
    silent_l1 = attribute([_ev(NO_OUTPUT, 90.0, source="harness")], [], l2_state="running",
                          l1_alive=False, l2_silence=200.0)
    assert (silent_l1.layer, silent_l1.title) == ("L1", "L1 silent while L2 ran")
    silent_l2 = attribute([], [], l2_state="running", l1_alive=True, l2_silence=200.0)
    assert (silent_l2.layer, silent_l2.title) == ("L2", "L2 silent for 200 s, L1 alive")
    # A quiet L2 for less than the limit is no verdict; nor is one whose L1 did not answer.
    assert attribute([], [], l2_state="running", l1_alive=True, l2_silence=5.0).layer is None
    assert attribute([], [], l2_state="running", l1_alive=None, l2_silence=500.0).layer is None


def test_silent_l1_with_a_spinning_vcpu_is_named_at_l0() -> None:
    v = attribute([_ev(NO_OUTPUT, 90.0, source="harness")], [], l2_state="none",
                  l1_alive=False, spinning_vcpus=(1,))
    assert (v.layer, v.title, v.spinning_vcpus) == (
        "L0", "L0: QEMU vCPU 1 thread spinning, L1 silent", (1,))
    v = attribute([_ev(NO_OUTPUT, 90.0, source="harness")], [], l2_state="none",
                  l1_alive=False, spinning_vcpus=(1, 0))
    assert v.title == "L0: QEMU vCPU 0 and 1 threads spinning, L1 silent"


def test_l2_state_and_timeline_tags() -> None:
    assert l2_state(False, False, False) == "none"
    assert l2_state(True, False, False) == "starting"
    assert l2_state(True, True, False) == "running"
    assert l2_state(True, True, True) == "ended"
    nmi = _ev(NMI_INJECTED, 5.0, fatal=False, source="harness")
    tagged = timeline([_ev("panic", 9.0), nmi], [_ev("panic", 7.0)])
    assert [(t.layer, t.event.at) for t in tagged] == [("L0", 5.0), ("L2", 7.0), ("L1", 9.0)]
    assert tagged[1].to_json()["layer"] == "L2"


# -- vCPU threads --------------------------------------------------------------------------
def _samples(per_s: dict[int, float], n: int = 12) -> list[Sample]:
    return [Sample(float(t), {c: int(rate * t * 1e9) for c, rate in per_s.items()})
            for t in range(n)]


def test_spinning_names_the_busy_vcpu() -> None:
    samples = _samples({0: 0.05, 1: 0.98})
    spin = spinning(samples, 11.0)
    assert spin is not None and spin.vcpu == 1 and 0.97 < spin.share < 0.99
    assert spin.spinning == (1,)
    assert "QEMU vCPU 1 thread spinning" in spin.describe()


def test_every_wedged_vcpu_is_named() -> None:
    # Measured in the all-CPU wedge under load: both vCPU threads at ~30% of a host CPU.
    spin = spinning(_samples({0: 0.31, 1: 0.28}), 11.0)
    assert spin is not None and spin.spinning == (0, 1)
    assert "QEMU vCPU 0 and 1 threads spinning" in spin.describe()


def test_no_spin_when_every_vcpu_idles_or_samples_are_missing() -> None:
    assert spinning(_samples({0: 0.1, 1: 0.15}), 11.0) is None
    assert spinning([], 11.0) is None
    assert shares(_samples({0: 1.0}, n=1), 0.0, 5.0) == {}


# -- kvm-clock in L2 -----------------------------------------------------------------------
def test_parse_clock_on_a_real_l2_boot() -> None:
    log = (DATA / "console-l2.log").read_text(errors="replace")
    # The MSR reads ran on L2's console, so the log holds their output too.
    clock = parse_clock("kvm-clock\nkvm-clock hpet acpi_pm \n", log, log)
    assert clock.on_kvmclock
    assert clock.msrs == (0x4B564D00, 0x4B564D01)
    areas = clock.pvclock_areas()
    assert sorted(areas) == [0, 1] and areas[0] != areas[1]
    assert 1 in clock.cpu_lines  # the secondary vCPU's own line (dynamic debug)
    assert clock.problems(2) == []


def test_clock_problems_name_what_is_wrong() -> None:
    clock = parse_clock("tsc\ntsc hpet\n", "", "cpu 0 msr 0x4b564d01 = 0x0\n")
    problems = clock.problems(2)
    assert any("not kvm-clock" in p for p in problems)
    assert any("expected 4b564d00 and 4b564d01" in p for p in problems)
    assert any("pvclock areas enabled on vCPUs []" in p for p in problems)


def test_l2_console_panic_is_seen_by_the_same_detector() -> None:
    events = ConsoleParser().feed((DATA / "console-l2.log").read_bytes())
    assert any(e.kind == "panic" and e.fatal for e in events)


def test_vmm_is_qemu_with_kvm_and_serial_on_stdio() -> None:
    argv = NestedLinux(l2_vcpus=2, l2_memory_mib=128).vmm_argv()
    assert argv[:3] == ["qemu-system-x86_64", "-accel", "kvm"]
    assert "stdio,id=l2con,signal=off" in argv and "chardev:l2con" in argv
    assert argv[argv.index("-smp") + 1] == "2"
    assert f"{MSR_KVM_SYSTEM_TIME_NEW:#x}" == "0x4b564d01"


# -- KVM flow in L1 ------------------------------------------------------------------------
def test_kvm_flow_on_real_l1_counters() -> None:
    flow = parse_flow((DATA / "kvm-flow-l1.txt").read_text())
    assert flow.stage == "KVM_RUN entered, exits seen"
    assert sorted(c for cpus in flow.vcpus.values() for c in cpus) == [0, 1]
    assert flow.reasons and all(n > 0 for n in flow.reasons.values())


def test_kvm_flow_stages() -> None:
    assert parse_flow("nodebugfs").debugfs is False
    assert parse_flow("").stage.startswith("no VM")
    assert parse_flow("VM 123-4\nexits=0\n").stage == "KVM_CREATE_VM done, no vCPU"
    assert parse_flow("VM 123-4\nexits=0\nVCPU vcpu0\n").stage.startswith(
        "KVM_CREATE_VCPU done")


def test_real_stuck_l1_starving_l2_is_l1s() -> None:
    """Seen here once in about ten nested boots: L1's only CPU stuck in KVM_RUN for 386 s
    (kvm_arch_vcpu_ioctl_run), L2 meanwhile an RCU stall. Both consoles through the one
    detector; the arrival times are the ones the harness recorded (layers.json)."""
    stuck = DATA / "stuck-l1"
    arrived = {e["layer"]: e["at"] for e in
               json.loads((stuck / "layers.json").read_text())["timeline"]}

    def first_fatal(name: str, layer: str) -> GuestEvent:
        ev = next(e for e in ConsoleParser().feed((stuck / name).read_bytes()) if e.fatal)
        return GuestEvent(ev.kind, ev.line, "console", True, arrived[layer], ev.cpu)

    l1, l2 = first_fatal("console.log", "L1"), first_fatal("console-l2.log", "L2")
    assert (l1.kind, l2.kind) == ("soft-lockup", "rcu-stall")
    assert "kvm_arch_vcpu_ioctl_run" in (stuck / "console.log").read_text()
    v = attribute([l1], [l2], l2_state="starting", l1_alive=False)
    assert (v.layer, v.title) == ("L1", "L1 soft lockup while starting L2 (L2 rcu stall follows)")


def test_frozen_l2_clock_is_told_from_a_good_boot() -> None:
    """Seen here once: L2's printk time stuck at 18.406617 after kvm-clock took over, and
    the idle L2 never answered its console again."""
    bad = (DATA / "frozen-clock" / "console-l2.log").read_text(errors="replace")
    why = frozen_clock(bad)
    assert why is not None and "stood still at 18.406617 s" in why
    assert frozen_clock((DATA / "console-l2.log").read_text(errors="replace")) is None
    assert frozen_clock((DATA / "stuck-l1" / "console-l2.log").read_text(errors="replace")) is None


def test_l1_gets_the_hosts_tsc_rate_under_tcg_only() -> None:
    cpuinfo = "processor\t: 0\ncpu MHz\t\t: 2445.424\nflags\t\t: fpu tsc constant_tsc\n"
    assert l1_cmdline("tcg", cpuinfo) == {"tsc_early_khz": 2445424}
    assert l1_cmdline("kvm", cpuinfo) == {}
    assert l1_cmdline("tcg", cpuinfo.replace(" constant_tsc", "")) == {}

"""A real Linux kernel as L2: booted by QEMU with ``-accel kvm`` inside an L1 guest.

Under TCG the L1 kernel has no kvm-clock ("Booting paravirtualized kernel on bare
hardware"), but L1 gets emulated SVM and runs KVM, so an L2 guest started by a VMM in L1
does get KVM's paravirtual clock, from L1's KVM. This scenario boots that L2 and reads
kvm-clock where it lives: L2's clocksource, its boot line naming the two MSRs
(MSR_KVM_WALL_CLOCK_NEW 0x4b564d00, MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01) and, per vCPU, the
pvclock area the vCPU registered (MSR_KVM_SYSTEM_TIME_NEW read back on that vCPU through
/dev/cpu/N/msr; 6.12 prints "kvm-clock: cpu N, msr ..." only as pr_debug, which dynamic
debug turns on for the secondary vCPUs).

The VMM is QEMU 7.2 from the host, carried into the L1 initramfs with its library closure
(images/nested.yaml), booting a pc machine with ``-kernel``. Measured here under TCG on the
loaded 2-core host (bench/results/nested_boot*.json): the L1 image is 33 MB gzip'd (QEMU
and its 50 libraries; the busybox-only L2 initramfs is 1.5 MB, its kernel 3.8 MB), L1
boots to ready in 8 s, the copy takes 2 s, and L2 boots to its ready marker in 36 s median
(28-44 s) in a 1-vCPU L1; a 2-vCPU L1 was slower (55 s median) for twice the host CPU, so
L1 gets one vCPU and L2 two. The smaller VMM, kvmtool, is not packaged for bookworm (apt
has no kvmtool here), and a bzImage loader of our own would not be the VMM of the field
reports, whose KVM ioctl flow is QEMU's: QEMU it is, at the cost of L1's image size.
Two nested failures seen here, both kept as real logs in tests/data/nested: L1's single
CPU stuck in KVM_RUN for minutes (an L1 soft lockup in kvm_arch_vcpu_ioctl_run) while L2
starves (RCU stall), attributed to L1; and L2's kvm-clock standing still right after L2
switched to it, whenever L1's PIT calibration failed under host load (KVM built into L1
kept the early TSC rate, 780 ppm off the refined one, and QEMU's KVM_SET_TSC_KHZ failed):
:func:`l1_cmdline` gives L1 the host's TSC rate as its early calibration, which cured it
(4/4 runs since, all with "Fast TSC calibration failed", at load average 7).

L2's serial console is the VMM's stdio, run as its own SSH exec channel: see
:mod:`reprolab.guest.l2console` (``console-l2.log`` in the attempt directory, the same detector).
"""

from __future__ import annotations

import re
import shlex
import time
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from reprolab.errors import InfraError
from reprolab.image.guestinit import READY_MARKER
from reprolab.scenario.base import GuestLike, Scenario, one_line, require

if TYPE_CHECKING:
    from reprolab.guest.handle import Guest
    from reprolab.guest.l2console import L2Console

#: Where the L2 kernel and initramfs are copied in L1 (a tmpfs).
L2_DIR = "/run/l2"
QEMU = "qemu-system-x86_64"
MSR_KVM_WALL_CLOCK_NEW = 0x4B564D00
MSR_KVM_SYSTEM_TIME_NEW = 0x4B564D01
#: The L2 image (images/nested-l2.yaml) ships this MSR reader.
RDMSR = "/usr/local/bin/l2-rdmsr"
#: 6.12 arch/x86/kernel/kvmclock.c: ``pr_info("kvm-clock: Using msrs %x and %x", ...)``.
USING_MSRS = re.compile(r"kvm-clock: Using msrs ([0-9a-f]+) and ([0-9a-f]+)")
#: ``pr_debug("kvm-clock: cpu %d, msr %llx, %s", ...)`` (with dynamic debug on).
CPU_MSR = re.compile(r"kvm-clock: cpu (\d+), msr ([0-9a-f]+), (.+)")
_RDMSR_OUT = re.compile(r"cpu (\d+) msr 0x[0-9a-f]+ = 0x([0-9a-f]+)")
_PRINTK_TIME = re.compile(r"^\[ *(\d+\.\d+)\]\[ *([CT]\d+)\]", re.M)
#: Console lines in a row with one printk time, from more than one task or CPU, that mean
#: the clock stood still (a boot prints a few per timestamp at most: 7 in the good L2 boots
#: here; one report, a panic's, shares its time but comes from one caller).
FROZEN_LINES = 12

#: L2's own command line. panic=0 keeps a panicked L2 in place (its console is the evidence);
#: loglevel=8 lets the pr_debug per-vCPU kvm-clock lines through once dyndbg enables them.
L2_CMDLINE = ("console=ttyS0,115200 panic=0 printk.time=1 loglevel=8 "
              "dyndbg=\"file kvmclock.c +p\"")


@dataclass(frozen=True)
class L2Clock:
    """kvm-clock as L2 sees it."""

    current: str
    available: tuple[str, ...]
    #: (wall clock MSR, system time MSR) from "kvm-clock: Using msrs ...", None if absent.
    msrs: tuple[int, int] | None
    #: vCPU -> MSR_KVM_SYSTEM_TIME_NEW as read on that vCPU (pvclock area | enable bit).
    system_time: dict[int, int] = field(default_factory=dict)
    #: vCPU -> the kernel's own "kvm-clock: cpu N, msr ..." line (secondaries, dyndbg).
    cpu_lines: dict[int, str] = field(default_factory=dict)

    @property
    def on_kvmclock(self) -> bool:
        return self.current == "kvm-clock"

    def pvclock_areas(self) -> dict[int, int]:
        """vCPU -> guest-physical address of its enabled pvclock area."""
        return {cpu: v & ~0x1 for cpu, v in self.system_time.items() if v & 0x1}

    def problems(self, vcpus: int) -> list[str]:
        """What is not as kvm-clock should be in an L2 with ``vcpus`` vCPUs (empty: all)."""
        out = []
        if not self.on_kvmclock:
            out.append(f"clocksource is {self.current!r}, not kvm-clock "
                       f"(available: {' '.join(self.available)})")
        if self.msrs != (MSR_KVM_WALL_CLOCK_NEW, MSR_KVM_SYSTEM_TIME_NEW):
            out.append(f"boot log names MSRs {self.msrs}, expected 4b564d00 and 4b564d01")
        areas = self.pvclock_areas()
        if sorted(areas) != list(range(vcpus)):
            out.append(f"pvclock areas enabled on vCPUs {sorted(areas)}, expected "
                       f"{list(range(vcpus))} (MSR values {self.system_time})")
        elif len(set(areas.values())) != vcpus:
            out.append(f"vCPUs share a pvclock area: {areas}")
        return out


def parse_clock(clocksource: str, dmesg: str, rdmsr: str) -> L2Clock:
    """An :class:`L2Clock` from what L2 printed (pure: unit-tested on real output)."""
    lines = clocksource.replace("\r", "").strip().splitlines()
    current = lines[0].strip() if lines else ""
    available = tuple(lines[1].split()) if len(lines) > 1 else ()
    m = USING_MSRS.search(dmesg)
    # The kernel prints the system time MSR first: "Using msrs 4b564d01 and 4b564d00".
    msrs = (int(m.group(2), 16), int(m.group(1), 16)) if m else None
    cpu_lines = {int(c.group(1)): c.group(0) for c in CPU_MSR.finditer(dmesg)}
    system_time = {int(r.group(1)): int(r.group(2), 16) for r in _RDMSR_OUT.finditer(rdmsr)}
    return L2Clock(current, available, msrs, system_time, cpu_lines)


def host_tsc_khz(cpuinfo: str | None = None) -> int | None:
    """This host's TSC rate in kHz when it is constant ("cpu MHz" then is the TSC's), else
    None. Under TCG, L1's TSC is the host's."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    m = re.search(r"^cpu MHz\s*:\s*(\d+)\.(\d{3})", cpuinfo, re.M)
    if m is None or not re.search(r"^flags\s*:.*\bconstant_tsc\b", cpuinfo, re.M):
        return None
    return int(m.group(1) + m.group(2))


def l1_cmdline(accel: str, cpuinfo: str | None = None) -> dict[str, int]:
    """L1's kernel parameters for a nested L2 under TCG: the host's TSC rate as L1's early
    TSC calibration.

    KVM built into L1 keeps L1's early TSC rate as the default rate of its guests. When L1's
    PIT calibration fails under host load (seen here: 2443.5 and 2443.7 MHz instead of
    2445.4), the refinement a second later moves L1's rate past KVM's 250 ppm tolerance:
    QEMU's KVM_SET_TSC_KHZ in L1 then fails ("kvm: user requested TSC rate below hardware
    speed") and L2's kvm-clock stands still once L2 switches to it (L2ClockFrozen). Given
    the right early rate, the refinement stays within a few ppm of it.
    """
    khz = host_tsc_khz(cpuinfo) if accel == "tcg" else None
    return {"tsc_early_khz": khz} if khz else {}


class L2ClockFrozen(AssertionError):
    """L2's kvm-clock stood still after L2 switched to it, and L2 stopped answering."""


def frozen_clock(log: str) -> str | None:
    """Why L2's clock looks frozen in its console ``log``, or None.

    Seen here under nested TCG: right after "Switched to clocksource kvm-clock" every
    printk time stays the same (sched_clock "Marking stable (0, ...)"), and the idle L2
    never wakes again: its timers are never due. Checked after kvm-clock took over only.
    """
    start = log.find("Switched to clocksource kvm-clock")
    if start < 0:
        return None
    stamps: list[tuple[str, str]] = _PRINTK_TIME.findall(log[start:])
    run, callers = 1, {stamps[0][1]} if stamps else set()
    longest, at = 0, ""
    for (prev, _), (cur, caller) in pairwise(stamps):
        if cur == prev:
            run += 1
            callers.add(caller)
        else:
            run, callers = 1, {caller}
        if run > longest and len(callers) > 1:
            longest, at = run, cur
    if longest < FROZEN_LINES:
        return None
    return (f"L2's kvm-clock stood still at {at} s over {longest} console lines after L2 "
            "switched to it")


@dataclass(frozen=True)
class NestedLinux(Scenario):
    name: ClassVar[str] = "nested_linux"

    #: Host paths of L2's kernel and initramfs (copied into L1 by :meth:`setup`).
    l2_kernel: Path = Path()
    l2_initrd: Path = Path()
    l2_vcpus: int = 2
    l2_memory_mib: int = 128
    l2_cmdline: str = L2_CMDLINE
    #: Seconds L2 may take to print its ready marker: nested boots under TCG on a loaded
    #: 2-core host are slow, and waiting longer loosens no detection.
    l2_boot_timeout: float = 900.0

    def __post_init__(self) -> None:
        require(1 <= self.l2_vcpus <= 8, "nested_linux", f"l2_vcpus must be 1..8, got "
                f"{self.l2_vcpus}")
        require(32 <= self.l2_memory_mib <= 4096, "nested_linux",
                f"l2_memory_mib must be 32..4096, got {self.l2_memory_mib}")

    def vmm_argv(self) -> list[str]:
        """QEMU in L1: KVM-accelerated pc machine, no devices but L2's serial on stdio."""
        return [
            QEMU, "-accel", "kvm", "-M", "pc", "-cpu", "host",
            "-smp", str(self.l2_vcpus), "-m", str(self.l2_memory_mib),
            "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none",
            "-monitor", "none", "-no-reboot",
            "-chardev", "stdio,id=l2con,signal=off", "-serial", "chardev:l2con",
            "-kernel", f"{L2_DIR}/bzImage", "-initrd", f"{L2_DIR}/initrd.img",
            "-append", self.l2_cmdline,
        ]

    def vmm_command(self) -> str:
        """The SSH command that becomes L2's console: QEMU's pid recorded, then exec'd."""
        return (f"mkdir -p {L2_DIR}; echo $$ > {L2_DIR}/vmm.pid; "
                f"exec {shlex.join(self.vmm_argv())}")

    def setup(self, guest: GuestLike) -> None:
        """Copy L2's kernel and initramfs into L1 and check L1 can run KVM guests."""
        require(self.l2_kernel.is_file(), "nested_linux", f"L2 kernel {self.l2_kernel} missing")
        require(self.l2_initrd.is_file(), "nested_linux", f"L2 initrd {self.l2_initrd} missing")
        if guest.ssh is None:
            raise InfraError("nested_linux needs an SSH image in L1 (images/nested.yaml)")
        guest.sh(one_line(
            f"mkdir -p {L2_DIR}; [ -c /dev/kvm ] || {{ echo 'no /dev/kvm in L1 (is the CPU "
            "given svm/vmx and KVM built in or loaded?)' >&2; exit 1; }; "
            f"command -v {QEMU} >/dev/null || {{ echo 'no {QEMU} in L1' >&2; exit 1; }}"))
        guest.ssh.put(self.l2_kernel, f"{L2_DIR}/bzImage", timeout=300.0)
        guest.ssh.put(self.l2_initrd, f"{L2_DIR}/initrd.img", timeout=300.0)

    def start(self, guest: Guest) -> L2Console:
        """Start L2's VMM; its console streams into ``console-l2.log`` from the first byte."""
        from reprolab.guest.l2console import L2Console, attach_l2

        assert guest.ssh is not None
        from reprolab.scenario.kvmexits import enable_trace

        enable_trace(guest)  # exits by reason, when L1's kernel has the tracepoint
        l2 = L2Console(guest.ssh, guest.directory / "console-l2.log",
                       t0=time.monotonic() - guest.elapsed())
        l2.start(self.vmm_command())
        attach_l2(guest, l2)

        def watch_l1() -> str | None:
            guest.poll(0.2)  # L1's console through L1's detector, libvirt's view of L1
            return guest.stop_reason()

        l2.watch = watch_l1
        return l2

    def wait_ready(self, l2: L2Console) -> float:
        """Wait for L2's ready marker; returns L2's boot time (VMM start to marker)."""
        l2.wait_for(rf"(?m)^{re.escape(READY_MARKER)}\r?$", self.l2_boot_timeout, since=0)
        assert l2.started_at is not None
        l2.ready_at = l2.now()
        return l2.ready_at - l2.started_at

    def inject(self, guest: GuestLike) -> None:
        """Boot L2 to its ready marker (the start-up path is the mechanism here)."""
        from reprolab.guest.handle import Guest

        assert isinstance(guest, Guest)
        self.wait_ready(self.start(guest))

    def stop_script(self) -> str | None:
        return f"[ -f {L2_DIR}/vmm.pid ] && kill -9 $(cat {L2_DIR}/vmm.pid) 2>/dev/null; true"

    @staticmethod
    def clock_commands(vcpus: int) -> tuple[str, str, str]:
        """Shell commands for :func:`parse_clock`: clocksources, boot lines, MSR per vCPU."""
        base = "/sys/devices/system/clocksource/clocksource0"
        return (f"cat {base}/current_clocksource {base}/available_clocksource",
                "dmesg | grep -E 'kvm-clock|kvmclock|clocksource' || true",
                f"for c in $(seq 0 {vcpus - 1}); do {RDMSR} $c {MSR_KVM_SYSTEM_TIME_NEW:#x}; "
                "done")

    def clock(self, l2: L2Console, timeout: float = 180.0) -> L2Clock:
        """kvm-clock in L2: clocksource, the MSR boot line, each vCPU's pvclock MSR.

        An L2 that does not answer because its kvm-clock froze raises
        :class:`L2ClockFrozen` saying so (a finding about L2's clock, not a harness error).
        """
        from reprolab.guest.l2console import L2ConsoleTimeout

        try:
            cs, dmesg, rdmsr = (l2.run(c, timeout) for c in self.clock_commands(self.l2_vcpus))
        except L2ConsoleTimeout as exc:
            why = frozen_clock(l2.text())
            if why is None:
                raise
            raise L2ClockFrozen(f"{why}; then L2 did not answer its console: {exc}") from exc
        return parse_clock(cs, dmesg, rdmsr)

    @classmethod
    def l1_clock(cls, guest: GuestLike, vcpus: int) -> L2Clock:
        """The same checks in L1, where kvm-clock lives on a KVM host (the nested image
        ships the MSR reader too). Under TCG L1 has no kvm-clock: nothing to check there."""
        cs, dmesg, rdmsr = (guest.sh(one_line(c)) for c in cls.clock_commands(vcpus))
        return parse_clock(cs, dmesg, rdmsr)

    @staticmethod
    def panic_l2(l2: L2Console) -> None:
        """sysrq c in L2: an L2 panic, L1 untouched."""
        l2.send("echo c > /proc/sysrq-trigger")

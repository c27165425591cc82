"""KVM inside the guest: load the vendor module with nesting on and run an L2 guest.

Field bug: "panic in kvm_cpu_vmxon as soon as qemu-kvm starts" on a new CPU model. Loading
kvm_intel and creating the first VM turns VMX on on every CPU (``hardware_enable_all`` ->
``kvm_cpu_vmxon``); a CPU model whose VMX capabilities the host kernel mishandles faults
right there. This scenario walks the same start-up path in an L1 guest: it loads kvm_amd
(SVM, emulated by TCG here) or kvm_intel (VMX, on a KVM host) with ``nested=1`` and runs
``kvm-hello`` (in the tools images), which creates a VM and runs an L2 vCPU to HLT. It also
reads the clocksource and the kvm-clock boot lines, the area of the kvmclock investigations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar, Literal

from reprolab.scenario.base import GuestLike, Scenario, one_line, require

KVM_HELLO = "/usr/local/bin/kvm-hello"
CLOCKSOURCE = "/sys/devices/system/clocksource/clocksource0"
Vendor = Literal["auto", "amd", "intel"]


@dataclass(frozen=True)
class NestedKvm(Scenario):
    name: ClassVar[str] = "nested_kvm"

    vendor: Vendor = "auto"
    #: L2 runs of kvm-hello (each creates and destroys a VM: the start-up path each time).
    runs: int = 3

    def __post_init__(self) -> None:
        require(self.vendor in ("auto", "amd", "intel"), "nested_kvm",
                f"vendor must be auto, amd or intel, got {self.vendor!r}")
        require(1 <= self.runs <= 1000, "nested_kvm", f"runs must be 1..1000, got {self.runs}")

    def module_script(self) -> str:
        """Pick the module from the CPU flags, (re)load it with nested=1, print it."""
        pick = {
            "amd": "M=kvm_amd",
            "intel": "M=kvm_intel",
            "auto": ("if grep -qw svm /proc/cpuinfo; then M=kvm_amd; "
                     "elif grep -qw vmx /proc/cpuinfo; then M=kvm_intel; "
                     "else echo 'no svm or vmx flag in the guest CPU' >&2; exit 1; fi"),
        }[self.vendor]
        return (
            f"{pick}; P=/sys/module/$M/parameters/nested; "
            "if [ -f $P ] && ! grep -qE '^(1|Y)$' $P; then modprobe -r $M; fi; "
            "[ -f $P ] || modprobe $M nested=1; "
            "[ -c /dev/kvm ] || { echo \"/dev/kvm missing after loading $M\" >&2; exit 1; }; "
            "echo \"$M nested=$(cat $P 2>/dev/null || echo built-in)\""
        )

    def setup(self, guest: GuestLike) -> None:
        guest.sh(one_line(self.module_script()), timeout=120.0)

    def inject(self, guest: GuestLike) -> None:
        self.run_l2(guest)

    def run_l2(self, guest: GuestLike) -> int:
        """Run kvm-hello ``runs`` times; returns how many reached HLT ("kvm-hello: ok")."""
        out = guest.sh(one_line(
            f"i=0; while [ $i -lt {self.runs} ]; do {KVM_HELLO} || exit 1; i=$((i+1)); done"
        ), timeout=60.0 + 10.0 * self.runs)
        return out.count("kvm-hello: ok")

    def stop_script(self) -> None:
        return None

    def loaded_module(self, guest: GuestLike) -> str:
        return guest.sh(one_line(self.module_script())).strip().splitlines()[-1]


@dataclass(frozen=True)
class ClockReport:
    current: str
    available: tuple[str, ...]
    #: Boot lines about kvm-clock (registration, the pvclock page, TSC stability).
    kvmclock_lines: tuple[str, ...]

    @property
    def on_kvmclock(self) -> bool:
        return self.current == "kvm-clock"


def clock_report(guest: GuestLike) -> ClockReport:
    """The guest's clocksource and what its kernel said about kvm-clock and pvclock."""
    out = guest.sh(one_line(
        f"cat {CLOCKSOURCE}/current_clocksource; cat {CLOCKSOURCE}/available_clocksource; "
        "dmesg | grep -iE 'kvm-clock|kvmclock|pvclock' || true"
    ))
    lines = out.splitlines()
    current = lines[0].strip() if lines else ""
    available = tuple(lines[1].split()) if len(lines) > 1 else ()
    kvm = tuple(re.sub(r"^\[\s*[\d.]+\]\s*", "", ln) for ln in lines[2:] if ln.strip())
    return ClockReport(current, available, kvm)

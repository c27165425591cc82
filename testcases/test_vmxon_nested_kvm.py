"""Field bug: "panic in kvm_cpu_vmxon as soon as qemu-kvm starts" on a new CPU model.

Seen when a host kernel met a CPU model whose VMX capabilities it mishandled: loading
kvm_intel is harmless, but the first VM creation turns VMX on on every CPU
(``hardware_enable_all`` -> ``kvm_cpu_vmxon``), and VMXON faulted, panicking the host. The
nested_kvm scenario walks that start-up path in an L1 guest given nested virtualisation:
it loads the vendor module with nested=1 and runs an L2 guest (kvm-hello) to HLT.

Reproduced means: a crash in the VMX/SVM enable path, named as the kernel that runs (the
stock Debian 6.1) has it: ``kvm_cpu_vmxon`` is inlined into ``vmx_hardware_enable`` in its
kvm-intel.ko, so it is never a frame of its own; the SVM analogue is ``svm_hardware_enable``
there, renamed ``svm_enable_virtualization_cpu`` in 6.12 (run with a 6.12 kernel and the
symbol check stops the case before boot, naming the function). Regression checks. The
VMX case needs VMX in the L1 guest, which only a KVM host with nested VMX gives (TCG
emulates SVM only), so it skips here with that reason; the SVM case runs everywhere and also
records the L1 clocksource and the kvm-clock boot lines (the kvmclock investigations' area)
in the attempt's directory.
"""

import json

import pytest

from reprolab.scenario import NestedKvm, clock_report
from reprolab.scenario.needs import nested_missing

_no_vmx = nested_missing("vmx")
_no_svm = nested_missing("svm")


def _start_l2(guest, vendor):
    scenario = NestedKvm(vendor=vendor, runs=3)
    scenario.setup(guest)
    assert scenario.run_l2(guest) == 3
    clock = clock_report(guest)
    (guest.directory / "clock.json").write_text(json.dumps({
        "current": clock.current, "available": clock.available,
        "kvmclock_lines": clock.kvmclock_lines}, indent=2) + "\n")


@pytest.mark.skipif(_no_vmx is not None, reason=_no_vmx or "")
@pytest.mark.reprolab(
    guest={"vcpus": 2, "memory": "1G", "image": "tools", "nested": True, "cpu": "host"},
    expect={"in_stack": "vmx_hardware_enable"},
    mode="regression",
)
def test_vmxon_on_nested_kvm_start(guest):
    _start_l2(guest, "intel")


@pytest.mark.skipif(_no_svm is not None, reason=_no_svm or "")
@pytest.mark.reprolab(
    guest={"vcpus": 1, "memory": "512M", "image": "tools", "nested": True},
    expect={"in_stack": "svm_hardware_enable"},
    mode="regression",
)
def test_svm_enable_on_nested_kvm_start(guest):
    _start_l2(guest, "amd")

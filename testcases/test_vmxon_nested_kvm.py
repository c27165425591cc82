"""Field bug: "panic in kvm_cpu_vmxon as soon as qemu-kvm starts" on a new CPU model.

Seen on a host kernel carrying patches for a new CPU model on v4.1-rc2: loading kvm_intel
was harmless, but every qemu-kvm start printed a screen of errors and panicked in
``kvm_cpu_vmxon``. Creating the first VM is what turns hardware virtualisation on, on every
CPU; in 6.12 that is ``kvm_create_vm`` -> ``kvm_enable_virtualization`` -> the CPU hotplug
callback ``kvm_online_cpu`` -> ``kvm_arch_enable_virtualization_cpu`` -> the vendor's
``vmx_enable_virtualization_cpu`` (-> ``kvm_cpu_vmxon``) or ``svm_enable_virtualization_cpu``
(there is no ``svm_hardware_enable`` in 6.12), run by each CPU's hotplug thread. That
happens at the first KVM_CREATE_VM only with ``kvm.enable_virt_at_load=0``; by default 6.12
enables virtualisation when KVM loads. The nested_kvm scenario walks this start-up path in
an L1 guest given nested virtualisation: KVM with nested=1, then an L2 guest (kvm-hello)
run to HLT.

Regression checks on the stock kernel (Debian 6.1, where the bug is long fixed): a crash
with 6.1's enable function in the stack fails them. 6.1 names them ``vmx_hardware_enable``
(into which kvm-intel.ko inlines ``kvm_cpu_vmxon``, so that name is never a frame there) and
``svm_hardware_enable``; 6.12 renamed both to ``*_enable_virtualization_cpu``.

Controls (reprolab's 6.12 build with the field-bug series in patches/, see
patches/vm-start/): the patched enable path executes an unchecked faulting instruction
(STGI before EFER.SVME, VMXON before CR4.VMXE: #UD, "invalid opcode") when the guest CPU
shows MOVBE, a CPUID feature QEMU's TCG implements and nothing else in the guest needs. One
kernel gives both controls: MOVBE required in the domain XML must reproduce the field
signature (an oops in the enable function, a panic with oops=panic as on the field hosts)
at the first VM start; MOVBE disabled must let L2 reach HLT. The VMX variants need VMX in
L1, which only a KVM host with nested VMX gives (TCG emulates SVM only): they skip here
with that reason. The SVM regression case also records the L1 clocksource and the
kvm-clock boot lines (the kvmclock investigations' area) in the attempt's directory.
"""

import json

import pytest
from fieldkernel import FIELD_KERNEL

from reprolab.scenario import NestedKvm, clock_report
from reprolab.scenario.needs import built_kernel_missing, nested_missing
from reprolab.scenario.nested_kvm import KVM_HELLO

_no_vmx = nested_missing("vmx")
_no_svm = nested_missing("svm")

#: reprolab's 6.12 build with every field-bug series (patches/series) applied.
PATCHED = FIELD_KERNEL
_no_patched = built_kernel_missing(PATCHED)
#: reprolab's plain 6.12 build, the recipe the new-CPU-model series is bisected with.
PLAIN = "build:linux-source-6.12"
_no_plain = built_kernel_missing(PLAIN)
#: The CPUID feature the patched enable path keys on (see patches/vm-start/).
FEATURE = "movbe"
#: Virtualisation turned on at the first KVM_CREATE_VM, as in the field; an oops is a panic.
VMSTART = {"kvm.enable_virt_at_load": 0, "oops": "panic"}
SVM_CMDLINE = {**VMSTART, "kvm_amd.nested": 1}
VMX_CMDLINE = {**VMSTART, "kvm_intel.nested": 1}
SVM_FAULT = {"kind": "oops", "title": r"invalid opcode in svm_enable_virtualization_cpu",
             "in_stack": "svm_enable_virtualization_cpu"}
VMX_FAULT = {"kind": "oops", "title": r"invalid opcode in kvm_cpu_vmxon",
             "in_stack": "kvm_cpu_vmxon"}


def _start_l2(guest, vendor):
    scenario = NestedKvm(vendor=vendor, runs=3)
    scenario.setup(guest)
    assert scenario.run_l2(guest) == 3
    clock = clock_report(guest)
    (guest.directory / "clock.json").write_text(json.dumps({
        "current": clock.current, "available": clock.available,
        "kvmclock_lines": clock.kvmclock_lines}, indent=2) + "\n")


def _cpu_shows(guest, flag):
    """Whether the guest's CPU flags show ``flag``: the control's knob, checked, not assumed."""
    return guest.sh(f"grep -cw {flag} /proc/cpuinfo || true").strip() not in ("", "0")


_FINISHED = "vm-starts-finished"


def _vm_starts(guest, vendor, runs):
    """Start ``runs`` L2 guests one after the other; how many reached HLT, None on a crash.

    kvm-hello runs in the background and the console is watched meanwhile, so a kernel
    that dies at the first VM start ends the wait at once instead of at an SSH timeout.
    """
    NestedKvm(vendor=vendor, runs=runs).setup(guest)  # nested on, /dev/kvm there
    guest.sh(f"(i=0; while [ $i -lt {runs} ]; do {KVM_HELLO} || break; i=$((i+1)); done; "
             f"echo {_FINISHED}) > /tmp/kvm-hello.log 2>&1 < /dev/null &")
    log = ""
    for _ in range(60 + 20 * runs):
        if guest.wait(1) is not None:
            return None
        log = guest.sh("cat /tmp/kvm-hello.log")
        if _FINISHED in log:
            break
    return log.count("kvm-hello: ok")


def _first_vm_start(guest, vendor):
    """The positive control: the feature is there, the first VM start must kill the kernel."""
    assert _cpu_shows(guest, FEATURE), f"the domain XML asked for {FEATURE}; the guest lacks it"
    if _vm_starts(guest, vendor, 1) is not None:
        guest.wait(10)  # a late report still counts; none means "not reproduced"


def _negative_control(guest, vendor):
    assert not _cpu_shows(guest, FEATURE), f"the domain XML disabled {FEATURE}; the guest has it"
    assert _vm_starts(guest, vendor, 3) == 3


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


@pytest.mark.skipif(_no_svm is not None, reason=_no_svm or "")
@pytest.mark.skipif(_no_patched is not None, reason=_no_patched or "")
@pytest.mark.reprolab(
    kernel=PATCHED,
    guest={"vcpus": 1, "memory": "512M", "image": "tools", "nested": True,
           "cpu_features": [f"+{FEATURE}"]},
    cmdline=SVM_CMDLINE,
    expect=SVM_FAULT,
    mode="reproduce",
    attempts=5,
    until="all",
    dump="kdump-zlib",
)
def test_svm_vmstart_fault_reproduces(guest):
    _first_vm_start(guest, "amd")


@pytest.mark.skipif(_no_svm is not None, reason=_no_svm or "")
@pytest.mark.skipif(_no_patched is not None, reason=_no_patched or "")
@pytest.mark.reprolab(
    kernel=PATCHED,
    guest={"vcpus": 1, "memory": "512M", "image": "tools", "nested": True,
           "cpu_features": [f"-{FEATURE}"]},
    cmdline=SVM_CMDLINE,
    expect={"in_stack": "svm_enable_virtualization_cpu"},
    mode="regression",
    attempts=5,
    until="all",
)
def test_svm_vmstart_negative_control(guest):
    _negative_control(guest, "amd")


@pytest.mark.skipif(_no_svm is not None, reason=_no_svm or "")
@pytest.mark.skipif(_no_plain is not None, reason=_no_plain or "")
@pytest.mark.reprolab(
    kernel=PLAIN,
    guest={"vcpus": 1, "memory": "512M", "image": "tools", "nested": True,
           "cpu_features": [f"+{FEATURE}"]},
    cmdline=SVM_CMDLINE,
    expect=SVM_FAULT,
    mode="regression",
    dump="kdump-zlib",
)
def test_svm_first_vm_start_on_new_cpu_model(guest):
    """Unpatched 6.12 on a CPU showing the feature: the first VM start must survive.

    Also the oracle of the new-CPU-model series bisection
    (tests/integration/test_bisect_vm.py), which builds this case's kernel recipe at each
    commit of that series: one VM start and a small dump, so a step costs a build and a boot.
    """
    assert _cpu_shows(guest, FEATURE), f"the domain XML asked for {FEATURE}; the guest lacks it"
    assert _vm_starts(guest, "amd", 1) == 1


@pytest.mark.skipif(_no_vmx is not None, reason=_no_vmx or "")
@pytest.mark.skipif(_no_patched is not None, reason=_no_patched or "")
@pytest.mark.reprolab(
    kernel=PATCHED,
    guest={"vcpus": 2, "memory": "1G", "image": "tools", "nested": True, "cpu": "host",
           "cpu_features": [f"+{FEATURE}"]},
    cmdline=VMX_CMDLINE,
    expect=VMX_FAULT,
    mode="reproduce",
    attempts=5,
    until="all",
    dump="kdump-zlib",
)
def test_vmxon_vmstart_fault_reproduces(guest):
    _first_vm_start(guest, "intel")


@pytest.mark.skipif(_no_vmx is not None, reason=_no_vmx or "")
@pytest.mark.skipif(_no_patched is not None, reason=_no_patched or "")
@pytest.mark.reprolab(
    kernel=PATCHED,
    guest={"vcpus": 2, "memory": "1G", "image": "tools", "nested": True, "cpu": "host",
           "cpu_features": [f"-{FEATURE}"]},
    cmdline=VMX_CMDLINE,
    expect={"in_stack": "kvm_cpu_vmxon"},
    mode="regression",
    attempts=5,
    until="all",
)
def test_vmxon_vmstart_negative_control(guest):
    _negative_control(guest, "intel")

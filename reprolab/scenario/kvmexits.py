"""How far L1's VMM got through the KVM ioctl flow, from KVM's own counters in L1.

A VM-start failure is located by the step it reached: ``KVM_CREATE_VM`` makes KVM add a
``<pid>-<fd>`` directory under ``/sys/kernel/debug/kvm``, each ``KVM_CREATE_VCPU`` a
``vcpuN`` directory in it, and ``KVM_RUN`` counts exits (``exits``, ``io_exits``,
``halt_exits`` ... in the VM's directory). With tracing in L1's kernel, the ``kvm:kvm_exit``
tracepoint adds the exits by reason (the SVM/VMX exit code KVM names) over the trace
buffer's window, the latest exits before the snapshot (tracing stops for the read). Read
over SSH from L1 and saved as ``kvm-flow-l1.json`` (and the raw ``.txt``) in the attempt
directory.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from reprolab.scenario.base import GuestLike, one_line

DEBUGFS = "/sys/kernel/debug/kvm"
TRACEFS = "/sys/kernel/tracing"
KVM_EXIT_EVENT = f"{TRACEFS}/events/kvm/kvm_exit"

#: Per-CPU trace buffer: the latest few thousand exits. Reading a bigger one through
#: ``trace`` under TCG takes minutes (measured: 8 MiB did not finish in 120 s).
TRACE_BUFFER_KB = 256

#: Enables the kvm_exit tracepoint (before the VMM starts) when the kernel has it; prints
#: whether it did.
ENABLE_TRACE = (
    f"if [ -d {KVM_EXIT_EVENT} ]; then echo {TRACE_BUFFER_KB} > {TRACEFS}/buffer_size_kb; "
    f"echo 1 > {KVM_EXIT_EVENT}/enable && echo trace=on; else echo trace=absent; fi"
)

#: Prints ``VM <dir>``, ``<stat>=<value>`` for each VM's counters, ``VCPU <dir>`` per vCPU,
#: then ``REASON <count> <reason>`` from the trace (if enabled).
SNAPSHOT = (
    f"cd {DEBUGFS} 2>/dev/null || {{ echo nodebugfs; exit 0; }}; "
    "for vm in *-*; do [ -d \"$vm\" ] || continue; echo \"VM $vm\"; "
    "for f in \"$vm\"/*; do [ -f \"$f\" ] || continue; "
    "case \"$f\" in *exits|*hypercalls|*halt_wakeup) echo \"${f#*/}=$(cat $f)\";; esac; done; "
    "for v in \"$vm\"/vcpu*; do [ -d \"$v\" ] && echo \"VCPU ${v#*/}\"; done; done; "
    "for f in exits io_exits mmio_exits halt_exits irq_exits; do "
    "[ -f $f ] && echo \"total_$f=$(cat $f)\"; done; "
    f"if [ -f {KVM_EXIT_EVENT}/enable ] && grep -q 1 {KVM_EXIT_EVENT}/enable; then "
    f"echo 0 > {TRACEFS}/tracing_on; "
    f"sed -n 's/.*kvm_exit: .*reason \\([A-Za-z_0-9]*\\).*/\\1/p' "
    f"{TRACEFS}/trace | sort | uniq -c | sed 's/^ */REASON /'; fi"
)

_VM = re.compile(r"^VM (\S+)$")
_STAT = re.compile(r"^(\w+)=(\d+)$")
_VCPU = re.compile(r"^VCPU vcpu(\d+)$")
_REASON = re.compile(r"^REASON (\d+) (\S+)$")


@dataclass(frozen=True)
class KvmFlow:
    """What L1's KVM saw of its VMs."""

    #: VM directory -> its counters (exits, io_exits, halt_exits ...).
    vms: dict[str, dict[str, int]] = field(default_factory=dict)
    #: VM directory -> vCPU numbers created.
    vcpus: dict[str, list[int]] = field(default_factory=dict)
    #: KVM-wide counters (``total_exits`` ...).
    totals: dict[str, int] = field(default_factory=dict)
    #: Exit reason -> count, from the kvm_exit tracepoint (empty without tracing).
    reasons: dict[str, int] = field(default_factory=dict)
    debugfs: bool = True

    @property
    def stage(self) -> str:
        """The last step of the flow the counters prove."""
        if not self.vms:
            return "no VM (KVM_CREATE_VM not reached)"
        if not any(self.vcpus.values()):
            return "KVM_CREATE_VM done, no vCPU"
        if not any(v.get("exits", 0) for v in self.vms.values()):
            return "KVM_CREATE_VCPU done, no exit yet (KVM_RUN not entered or never exited)"
        return "KVM_RUN entered, exits seen"

    def to_json(self) -> dict[str, object]:
        return {"stage": self.stage, "vms": self.vms, "vcpus": self.vcpus,
                "totals": self.totals, "exit_reasons": self.reasons,
                "debugfs": self.debugfs}


def parse(text: str) -> KvmFlow:
    if text.strip() == "nodebugfs":
        return KvmFlow(debugfs=False)
    flow = KvmFlow()
    vm: str | None = None
    for line in text.replace("\r", "").splitlines():
        line = line.strip()
        if m := _VM.match(line):
            vm = m.group(1)
            flow.vms[vm] = {}
            flow.vcpus[vm] = []
        elif (m := _VCPU.match(line)) and vm is not None:
            flow.vcpus[vm].append(int(m.group(1)))
        elif m := _REASON.match(line):
            flow.reasons[m.group(2)] = int(m.group(1))
        elif m := _STAT.match(line):
            name, value = m.group(1), int(m.group(2))
            if name.startswith("total_"):
                flow.totals[name[len("total_"):]] = value
            elif vm is not None:
                flow.vms[vm][name] = value
    return flow


def enable_trace(guest: GuestLike) -> bool:
    """Turn on kvm:kvm_exit in L1 if its kernel has it (before the VMM starts)."""
    return "trace=on" in guest.sh(one_line(ENABLE_TRACE), timeout=60.0)


def snapshot(guest: GuestLike, directory: Path, name: str = "kvm-flow-l1.json") -> KvmFlow:
    """Read the counters (and reasons) in L1 and save them into the attempt's artifacts."""
    raw = guest.sh(one_line(SNAPSHOT), timeout=120.0)
    (directory / name).with_suffix(".txt").write_text(raw)
    flow = parse(raw)
    (directory / name).write_text(json.dumps(flow.to_json(), indent=2) + "\n")
    return flow

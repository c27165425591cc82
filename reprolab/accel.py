"""Which acceleration a guest can really use on this host.

``/dev/kvm`` existing proves nothing: on nested or emulated hosts it can be present while a
guest under ``-accel kvm`` hangs before its first console byte. KVM is claimed only when the
CPU advertises vmx/svm *and* a probe guest really boots under it; anything else is TCG, with
the reason, and every run records which one it used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class AccelInfo:
    accel: Literal["kvm", "tcg"]
    reason: str
    #: "vmx", "svm" or None: the host CPU's virtualisation flag.
    cpu_flag: str | None
    #: Nested virtualisation a guest can be given: "vmx"/"svm" (hardware, nested=1),
    #: "svm-emulated" under TCG, or None.
    nested: str | None
    nested_reason: str


def cpu_virt_flag(cpuinfo: str) -> str | None:
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    if "vmx" in flags:
        return "vmx"
    if "svm" in flags:
        return "svm"
    return None


def _nested_param(module: str, sys_module: Path) -> str | None:
    try:
        return (sys_module / module / "parameters" / "nested").read_text().strip()
    except OSError:
        return None


def detect_accel(
    *,
    cpuinfo: str | None = None,
    dev_kvm: Path = Path("/dev/kvm"),
    sys_module: Path = Path("/sys/module"),
    probe: object = None,
) -> AccelInfo:
    """Decide KVM or TCG.

    ``probe`` is a callable returning ``(booted: bool, detail: str)`` that boots a throwaway
    guest under KVM; it is only consulted once the cheap checks pass, so a host without
    hardware virtualisation never pays for (or hangs on) a KVM boot attempt.
    """
    if cpuinfo is None:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    flag = cpu_virt_flag(cpuinfo)
    tcg_nested = ("svm-emulated", "TCG emulates SVM for a qemu64,+svm guest CPU")
    if flag is None:
        why = "no vmx/svm flag in /proc/cpuinfo"
        if dev_kvm.exists():
            why += f" ({dev_kvm} exists but is not hardware virtualisation)"
        return AccelInfo("tcg", why, None, *tcg_nested)
    if not dev_kvm.exists() or not os.access(dev_kvm, os.R_OK | os.W_OK):
        return AccelInfo("tcg", f"{dev_kvm} missing or not accessible", flag, *tcg_nested)
    if probe is not None:
        booted, detail = probe()  # type: ignore[operator]
        if not booted:
            return AccelInfo("tcg", f"a KVM probe guest did not boot: {detail}", flag,
                             *tcg_nested)
    module = "kvm_intel" if flag == "vmx" else "kvm_amd"
    nested = _nested_param(module, sys_module)
    if nested in ("1", "Y", "y"):
        return AccelInfo("kvm", f"{flag} present and a KVM guest boots", flag, flag,
                         f"{module} nested={nested}")
    return AccelInfo("kvm", f"{flag} present and a KVM guest boots", flag, None,
                     f"{module} nested={nested or 'not loaded'}: enable with "
                     f"`modprobe {module} nested=1`")



"""An L2 Linux guest booted by QEMU (-accel kvm) inside L1, under TCG here.

L1 gets emulated SVM and runs KVM, so L2 gets kvm-clock from L1's KVM: the checks of
kvm-clock that cannot run in a TCG L1 run in L2. Each failure is attributed to its layer:
an L2 panic leaves L1 alive and is L2's; an L1 panic while L2 starts is L1's.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import pytest
from vmtools import domain_name, make_case, our_domains

from reprolab.guest.handle import Guest
from reprolab.image.build import build_image
from reprolab.run.session import Session
from reprolab.run.verdict import Outcome
from reprolab.scenario.needs import built_kernel_missing
from reprolab.scenario.nested_linux import NestedLinux, l1_cmdline

#: One kernel for both layers: the small 6.12 build, which has /dev/cpu/N/msr, dynamic debug
#: and the kvm_exit tracepoint for these checks (reprolab/data/fragments/reprolab.config).
KERNEL = "build:linux-source-6.12"

pytestmark = [pytest.mark.vm,
              pytest.mark.skipif(bool(built_kernel_missing(KERNEL)),
                                 reason=built_kernel_missing(KERNEL) or "")]
#: One L1 vCPU keeps the CPU cost down; L2 gets two to show a pvclock area per vCPU.
L1 = {"vcpus": 1, "memory": "640M", "image": "nested", "nested": True}


def _scenario(session: Session) -> NestedLinux:
    kernel = session.kernel(KERNEL)
    image = build_image("nested-l2", kernel)
    assert image.initrd is not None
    return NestedLinux(l2_kernel=kernel.image, l2_initrd=image.initrd, l2_vcpus=2)


#: Under TCG an L1 vCPU was seen once in ~15 nested boots stuck for minutes in KVM_RUN (L1
#: soft lockup in kvm_arch_vcpu_ioctl_run, L2 starved; tests/data/nested/stuck-l1). That is
#: TCG's nested SVM, not the plumbing these tests prove: such an attempt is run once more,
#: with a warning naming its directory. Any other failure fails at once.
_L1_WEDGED_IN_KVM_RUN = re.compile(r"soft lockup.*\n(?:.*\n){0,40}?.*kvm_arch_vcpu_ioctl_run")


def _l1_wedged_in_kvm_run(directory: Path) -> bool:
    log = (directory / "console.log").read_text(errors="replace")
    return bool(_L1_WEDGED_IN_KVM_RUN.search(log))


def _run(session: Session, name: str, body: Any) -> Any:
    case = make_case(name, kernel=KERNEL, guest=L1, boot_timeout=600,
                     cmdline=l1_cmdline(session.accel.accel), expect={"kind": "panic"})
    result, err = session.run_attempt(case, 1, body)
    if _l1_wedged_in_kvm_run(result.directory):
        warnings.warn(f"L1 wedged in KVM_RUN under TCG ({result.directory}); one more attempt",
                      stacklevel=2)
        result, err = session.run_attempt(case, 2, body)
    if err is not None:
        raise err
    assert result.outcome is not Outcome.INFRA_ERROR, result.error
    assert domain_name(result.directory) not in our_domains()
    return result


def _layers(result: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((result.directory / "layers.json").read_text())
    return data


def test_l2_linux_has_kvmclock_and_its_panic_is_l2s(session: Session) -> None:
    scenario = _scenario(session)
    seen: dict[str, Any] = {}

    def body(guest: Guest) -> None:
        scenario.setup(guest)
        l2 = scenario.start(guest)
        seen["l2_boot"] = scenario.wait_ready(l2)
        seen["clock"] = scenario.clock(l2)
        scenario.panic_l2(l2)
        seen["l2_fatal"] = l2.wait_fatal(300.0)
        seen["l1"] = guest.sh("echo L1-alive").strip()

    result = _run(session, "it::nested_l2_panic", body)
    clock = seen["clock"]
    assert clock.problems(2) == [], clock
    assert seen["l2_fatal"] is not None and seen["l2_fatal"].kind == "panic"
    assert seen["l1"] == "L1-alive"
    # L1's own console saw no crash: the attempt's L1 verdict is "not reproduced".
    assert result.outcome is Outcome.NOT_REPRODUCED
    assert not any(e.fatal for e in result.events), result.events
    layers = _layers(result)
    assert layers["verdict"]["layer"] == "L2"
    assert layers["verdict"]["title"] == "L2 panic, L1 alive"
    assert any(e["layer"] == "L2" and e["fatal"] for e in layers["timeline"])
    assert "layer verdict: L2 panic, L1 alive" in result.notes
    l2_log = (result.directory / "console-l2.log").read_text(errors="replace")
    assert "Kernel panic - not syncing: sysrq triggered crash" in l2_log
    flow = json.loads((result.directory / "kvm-flow-l1.json").read_text())
    assert flow["stage"] == "KVM_RUN entered, exits seen", flow
    assert sorted(c for cpus in flow["vcpus"].values() for c in cpus) == [0, 1]
    assert flow["exit_reasons"], flow
    assert (result.directory / "vcpustats.jsonl").stat().st_size > 0


def test_l1_panic_while_starting_l2_is_l1s(session: Session) -> None:
    scenario = _scenario(session)

    def body(guest: Guest) -> None:
        scenario.setup(guest)
        l2 = scenario.start(guest)
        # L2's kernel is running (KVM_RUN entered), its boot is not done.
        l2.wait_for("Linux version", 300.0)
        guest.sh("echo c > /proc/sysrq-trigger", timeout=60.0)

    result = _run(session, "it::nested_l1_panic", body)
    assert result.outcome is Outcome.REPRODUCED
    layers = _layers(result)
    assert layers["verdict"]["layer"] == "L1"
    assert layers["verdict"]["title"] == "L1 panic while starting L2"
    assert layers["verdict"]["l2_state"] == "starting"
    assert "REPROLAB-READY" not in (result.directory / "console-l2.log").read_text(
        errors="replace")

"""L2 Linux boot time inside a TCG L1, with L1's own boot time beside it.

Each run boots L1 (images/nested.yaml: busybox, dropbear, QEMU with its library closure)
under TCG with emulated SVM, copies the L2 kernel and initramfs in, and boots L2 with QEMU
``-accel kvm`` in L1 to its ready marker; then reads kvm-clock in L2. Measured: L1 boot to
ready, the copy, L2 boot (VMM start to L2's ready marker), and the image sizes that decided
the VMM (see reprolab.scenario.nested_linux). Prints a table and writes
bench/results/nested_boot.json (nested_boot_l1xN.json with ``--l1-vcpus N``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from reprolab.case import CaseSpec
from reprolab.guest.handle import Guest
from reprolab.image.build import build_image
from reprolab.run.session import Session
from reprolab.scenario.nested_linux import NestedLinux, l1_cmdline

RESULTS = Path(__file__).parent / "results"
#: The small 6.12 build serves both layers (its fragments carry the nested checks' options).
KERNEL = "build:linux-source-6.12"


def one_run(session: Session, scenario: NestedLinux, l1_vcpus: int) -> dict[str, Any]:
    case = CaseSpec.from_marker("bench::nested_boot", {
        "kernel": KERNEL, "expect": {"kind": "panic"}, "dump": None, "boot_timeout": 600,
        "cmdline": l1_cmdline(session.accel.accel),
        "guest": {"vcpus": l1_vcpus, "memory": "640M", "image": "nested", "nested": True}})
    timing: dict[str, Any] = {}

    def body(guest: Guest) -> None:
        timing["l1_boot_s"] = guest.boot_seconds
        t = time.monotonic()
        scenario.setup(guest)
        timing["copy_s"] = time.monotonic() - t
        l2 = scenario.start(guest)
        timing["l2_boot_s"] = scenario.wait_ready(l2)
        clock = scenario.clock(l2)
        timing["l2_kvmclock_problems"] = clock.problems(scenario.l2_vcpus)

    result, err = session.run_attempt(case, 1, body)
    if err is not None or "l2_boot_s" not in timing:
        raise RuntimeError(f"nested boot failed: {result.error or err} ({result.directory})")
    timing["attempt_s"] = result.duration
    return timing


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--l1-vcpus", type=int, default=1)
    ap.add_argument("--artifacts", type=Path, default=Path("/var/tmp/reprolab-bench-nested"))
    args = ap.parse_args()
    session = Session(artifacts=args.artifacts)
    try:
        kernel = session.kernel(KERNEL)
        l1_image = session.image("nested", kernel)
        l2_image = build_image("nested-l2", kernel)
        assert l1_image.initrd is not None and l2_image.initrd is not None
        scenario = NestedLinux(l2_kernel=kernel.image, l2_initrd=l2_image.initrd)
        runs = [one_run(session, scenario, args.l1_vcpus) for _ in range(args.runs)]
    finally:
        session.close()
    sizes = {"l1_initrd_bytes": l1_image.initrd.stat().st_size,
             "l2_initrd_bytes": l2_image.initrd.stat().st_size,
             "l2_kernel_bytes": kernel.image.stat().st_size}
    keys = ("l1_boot_s", "copy_s", "l2_boot_s", "attempt_s")
    summary = {k: statistics.median(r[k] for r in runs) for k in keys}
    print(f"{'measure':<22}{'median':>10}  runs")
    for k in keys:
        print(f"{k:<22}{summary[k]:>10.1f}  " + " ".join(f"{r[k]:.1f}" for r in runs))
    for k, v in sizes.items():
        print(f"{k:<22}{v / 1e6:>9.1f}M")
    RESULTS.mkdir(exist_ok=True)
    out = {"kernel": KERNEL, "l1_vcpus": args.l1_vcpus,
           "l2_vcpus": scenario.l2_vcpus, "runs": runs, "median": summary, "sizes": sizes,
           "load_note": "2-core host shared with kernel builds and other guests"}
    name = "nested_boot.json" if args.l1_vcpus == 1 else f"nested_boot_l1x{args.l1_vcpus}.json"
    (RESULTS / name).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

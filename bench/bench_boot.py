"""Harness overhead and dump cost, measured on this host.

Boot-to-userspace of a reprolab guest (libvirt domain, console attached, ready marker seen)
against bare ``qemu-system-x86_64`` booting the same kernel and initramfs to the same
marker in the same run: the ratio is what libvirt and the harness add. Then the time to take
a memory-only ELF vmcore of a 512 MiB and a 2 GiB guest. Prints a table and writes
bench/results/boot.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from reprolab.case import CaseSpec
from reprolab.guest.handle import Guest
from reprolab.image.build import build_image
from reprolab.kernel.artifacts import stock_kernel
from reprolab.run.session import Session
from reprolab.virt.dump import take_vmcore

RESULTS = Path(__file__).parent / "results"
MARKER = b"REPROLAB-READY"


def bare_qemu_boot(kernel: Path, initrd: Path, timeout: float = 120.0) -> float:
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-m", "512", "-smp", "1", "-nographic",
            "-no-reboot", "-kernel", str(kernel), "-initrd", str(initrd),
            "-append", "console=ttyS0,115200 panic=-1"]
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    buf = b""
    try:
        while MARKER not in buf:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk or time.monotonic() - start > timeout:
                raise RuntimeError("bare QEMU never printed the ready marker")
            buf = buf[-4096:] + chunk
        return time.monotonic() - start
    finally:
        proc.kill()
        proc.wait()


def reprolab_boot(session: Session, memory: str) -> tuple[float, float, float]:
    """(boot-to-ready seconds, total seconds from start call, dump seconds)."""
    case = CaseSpec.from_marker("bench::boot", {
        "expect": {"kind": "panic"}, "dump": None,
        "guest": {"vcpus": 1, "memory": memory, "image": "minimal"}})
    timing: dict[str, float] = {}

    def body(guest: Guest) -> None:
        assert guest.boot_seconds is not None
        timing["boot"] = guest.boot_seconds
        with tempfile.TemporaryDirectory(dir=guest.directory) as tmp:
            core = take_vmcore(guest.domain.dom, Path(tmp) / "vmcore.elf")
            timing["dump"] = core.seconds
            timing["size"] = core.size

    start = time.monotonic()
    result, err = session.run_attempt(case, 1, body)
    if err is not None or "boot" not in timing:
        raise RuntimeError(f"reprolab boot failed: {result.error or err}")
    return timing["boot"], time.monotonic() - start, timing["dump"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    kernel = stock_kernel()
    image = build_image("minimal", kernel)
    assert image.initrd is not None
    with tempfile.TemporaryDirectory(prefix="rl-bench-") as tmp:
        session = Session(artifacts=Path(tmp))
        try:
            bare = [bare_qemu_boot(kernel.image, image.initrd) for _ in range(args.runs)]
            rl = [reprolab_boot(session, "512M") for _ in range(args.runs)]
            big = reprolab_boot(session, "2G")
        finally:
            session.close()
    bare_med = statistics.median(bare)
    boot_med = statistics.median(r[0] for r in rl)
    total_med = statistics.median(r[1] for r in rl)
    data = {
        "host": os.uname().nodename,
        "loadavg": os.getloadavg(),
        "accel": "tcg",
        "kernel": kernel.release,
        "runs": args.runs,
        "bare_qemu_boot_s": bare,
        "reprolab_boot_s": [r[0] for r in rl],
        "reprolab_attempt_s": [r[1] for r in rl],
        "overhead_ratio_boot": boot_med / bare_med,
        "vmcore_512mib_s": statistics.median(r[2] for r in rl),
        "vmcore_2gib_s": big[2],
    }
    rows = [
        ("bare qemu boot to ready (median)", f"{bare_med:.2f} s"),
        ("reprolab boot to ready (median)", f"{boot_med:.2f} s"),
        ("harness overhead ratio (boot)", f"{data['overhead_ratio_boot']:.2f}x"),
        ("reprolab attempt incl. start/teardown", f"{total_med:.2f} s"),
        ("vmcore ELF 512 MiB", f"{data['vmcore_512mib_s']:.2f} s"),
        ("vmcore ELF 2 GiB", f"{data['vmcore_2gib_s']:.2f} s"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  value")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "boot.json").write_text(json.dumps(data, indent=2) + "\n")
    print(f"written {RESULTS / 'boot.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

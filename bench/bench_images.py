"""Guest image cost, measured on this host.

1. Build time of each shipped recipe, cold (empty cache) and cached (second call), and for
   the disk image also "rootfs cached" (a new kernel: modules change, the Debian rootfs
   tarball is reused).
2. Boot-to-ready per image kind: a libvirt domain (tests/integration/_imagehost.py) to the
   console ready marker and on to the first SSH command, against bare qemu-system-x86_64
   booting the same kernel, initramfs/disk and devices to the same marker and SSH command.

Prints a table and writes bench/results/images.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from _imagehost import boot

from reprolab.image.build import GuestImage, build_image, make_overlay
from reprolab.kernel.artifacts import KernelArtifacts, stock_kernel
from reprolab.paths import runtime_root, state_root
from reprolab.ssh import SshChannel, free_port, generate_keypair

RESULTS = Path(__file__).parent / "results"
RECIPES = ("minimal", "tools", "tools-disk")
CMDLINE = ("console=ttyS0,115200", "panic=-1", "quiet", "loglevel=4")


def timed_build(name: str, kernel: KernelArtifacts) -> tuple[float, GuestImage]:
    start = time.monotonic()
    image = build_image(name, kernel)
    return time.monotonic() - start, image


def bench_builds(kernel: KernelArtifacts, with_disk: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    old = os.environ.get("REPROLAB_CACHE")
    scratch = Path(tempfile.mkdtemp(prefix="bench-images-", dir=state_root()))
    os.environ["REPROLAB_CACHE"] = str(scratch)
    try:
        for name in RECIPES:
            if name == "tools-disk" and not with_disk:
                continue
            cold, image = timed_build(name, kernel)
            cached, again = timed_build(name, kernel)
            assert again.cached
            row: dict[str, Any] = {"recipe": name, "kind": image.kind, "cold_s": cold,
                                   "cached_s": cached, "size_mb": _size_mb(image)}
            if image.kind == "disk":
                warm, _ = timed_build(name, replace(kernel, key=kernel.key + "-bench"))
                row["rootfs_cached_s"] = warm
            rows.append(row)
    finally:
        if old is None:
            os.environ.pop("REPROLAB_CACHE", None)
        else:
            os.environ["REPROLAB_CACHE"] = old
        shutil.rmtree(scratch, ignore_errors=True)
    return rows


def _size_mb(image: GuestImage) -> float:
    total = sum(p.stat().st_size for p in (image.initrd, image.disk) if p is not None)
    return total / 2**20


def bare_qemu(image: GuestImage, kernel: KernelArtifacts, timeout: float = 300.0
              ) -> tuple[float, float | None]:
    """(seconds to the marker, seconds to the first SSH command) for plain QEMU."""
    work = Path(tempfile.mkdtemp(prefix="rl-img-bench-", dir=runtime_root()))
    port = free_port()
    key, _ = generate_keypair(work / "ssh")
    argv = [
        "qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-cpu", "qemu64",
        "-m", "1024", "-smp", "2", "-nographic", "-nodefaults", "-serial", "stdio",
        "-monitor", "none", "-no-reboot", "-kernel", str(kernel.image),
        "-append", " ".join((*CMDLINE, *image.cmdline)),
        "-netdev", f"user,id=n,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", "virtio-net-pci,netdev=n,bus=pcie.0,addr=0x10",
        "-fw_cfg", f"name=opt/reprolab/authorized_keys,file={key}.pub",
    ]
    if image.initrd is not None:
        argv += ["-initrd", str(image.initrd)]
    if image.disk is not None:
        overlay = make_overlay(image, work)
        argv += ["-drive", f"file={overlay},if=virtio,format=qcow2"]
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    marker = f"\n{image.ready_marker}".encode()
    buf = b""
    try:
        while marker not in buf.replace(b"\r", b""):
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk or time.monotonic() - start > timeout:
                raise RuntimeError("bare QEMU never printed the ready marker")
            buf = buf[-8192:] + chunk
        ready = time.monotonic() - start
        ssh_ready = None
        if image.has_ssh and image.host_key:
            with SshChannel("127.0.0.1", port, key, image.host_key) as chan:
                chan.wait_ready(timeout=60)
            ssh_ready = time.monotonic() - start
        return ready, ssh_ready
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def libvirt_boot(image: GuestImage, kernel: KernelArtifacts) -> tuple[float, float | None]:
    """(seconds to the marker, seconds to the first SSH command) through libvirt."""
    start = time.monotonic()
    with boot(image, kernel, ssh=False) as guest:
        ready = time.monotonic() - start
        ssh_ready = None
        if image.has_ssh and image.host_key:
            key = guest.run_dir / "ssh" / "id_ed25519"
            with SshChannel("127.0.0.1", guest.port, key, image.host_key) as chan:
                chan.wait_ready(timeout=60)
            ssh_ready = time.monotonic() - start
    return ready, ssh_ready


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def bench_boots(kernel: KernelArtifacts, reps: int) -> list[dict[str, Any]]:
    """Boots alternate between libvirt and bare QEMU so host load hits both alike."""
    rows = []
    paths = (("libvirt", libvirt_boot), ("bare-qemu", bare_qemu))
    for name in RECIPES:
        image = build_image(name, kernel)
        ready: dict[str, list[float]] = {p: [] for p, _ in paths}
        ssh: dict[str, list[float]] = {p: [] for p, _ in paths}
        for _ in range(reps):
            for path, fn in paths:
                r, s = fn(image, kernel)
                ready[path].append(r)
                if s is not None:
                    ssh[path].append(s)
        for path, _ in paths:
            rows.append({"recipe": name, "kind": image.kind, "path": path, "reps": reps,
                         "ready_s": _stats(ready[path]),
                         "ssh_s": _stats(ssh[path]) if ssh[path] else None})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="boots per image and path")
    parser.add_argument("--no-disk-cold", action="store_true",
                        help="skip the cold disk build (downloads a Debian rootfs)")
    args = parser.parse_args()
    kernel = stock_kernel()
    load_before = os.getloadavg()
    builds = bench_builds(kernel, with_disk=not args.no_disk_cold)
    boots = bench_boots(kernel, args.reps)

    print(f"{'recipe':12} {'kind':10} {'cold s':>8} {'rootfs-cached s':>16} {'cached s':>9} "
          f"{'MiB':>7}")
    for b in builds:
        warm = f"{b['rootfs_cached_s']:.1f}" if "rootfs_cached_s" in b else "-"
        print(f"{b['recipe']:12} {b['kind']:10} {b['cold_s']:8.1f} {warm:>16} "
              f"{b['cached_s']:9.3f} {b['size_mb']:7.1f}")
    print()
    print(f"{'recipe':12} {'path':10} {'ready s (median [min-max])':>28} "
          f"{'ssh s (median [min-max])':>28}")
    for r in boots:
        def fmt(s: dict[str, float] | None) -> str:
            return "-" if s is None else f"{s['median']:.1f} [{s['min']:.1f}-{s['max']:.1f}]"
        print(f"{r['recipe']:12} {r['path']:10} {fmt(r['ready_s']):>28} {fmt(r['ssh_s']):>28}")

    RESULTS.mkdir(exist_ok=True)
    out = {
        "host": {"cpus": os.cpu_count(), "accel": "tcg", "kernel": kernel.release,
                 "loadavg_at_start": load_before, "loadavg_at_end": os.getloadavg(),
                 "note": "shared 2-core host; other sessions' guests ran at the same time"},
        "builds": builds,
        "boots": boots,
    }
    (RESULTS / "images.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwrote {RESULTS / 'images.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

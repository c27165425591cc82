"""Bare ``qemu-system-x86_64``: the floor reprolab's guests are compared with in ``bench/``.

The same kernel and reprolab's own initramfs, plus a one-file cpio whose init does what the
benchmark needs (print ``uname -r``, or panic through sysrq) and lets QEMU exit; run in
libvirt's ``machine`` CPU cgroup when it exists, so that under load the floor gets the share
a libvirt guest gets and the ratio compares tools, not cgroups.
"""

from __future__ import annotations

import gzip
from pathlib import Path

from reprolab.proc import run

#: libvirt's CPU cgroup for its guests (cgroup v1 here).
MACHINE_CGROUP = "/sys/fs/cgroup/cpu/machine"


def bare_initrd(base: Path, workdir: Path, script: str) -> Path:
    """``base`` with ``/bench-init`` (``script``) appended: a later cpio member wins."""
    root = workdir / "extra"
    root.mkdir(exist_ok=True)
    (root / "bench-init").write_text(script)
    (root / "bench-init").chmod(0o755)
    extra = workdir / "extra.cpio"
    run(["cpio", "-o", "-H", "newc", "-O", extra], cwd=root, stdin="bench-init\n")
    out = workdir / "bare-initrd.img"
    out.write_bytes(base.read_bytes() + gzip.compress(extra.read_bytes()))
    return out


def in_cgroup(cgroup: str) -> list[str]:
    """An argv prefix that moves the command into ``cgroup`` (none when it does not exist)."""
    procs = Path(cgroup) / "cgroup.procs" if cgroup else None
    if procs is None or not procs.exists():
        return []
    return ["sh", "-c", f'echo $$ > {procs} && exec "$@"', "in-cgroup"]


def bare_qemu(kernel: Path, initrd: Path, append: str, *, memory_mib: int = 512,
              cgroup: str = MACHINE_CGROUP) -> list[str]:
    """The argv: TCG, 1 vCPU, serial on stdout, exits when the guest reboots or powers off."""
    return [*in_cgroup(cgroup), "qemu-system-x86_64", "-machine", "pc,accel=tcg", "-cpu", "qemu64",
            "-m", str(memory_mib), "-smp", "1", "-display", "none", "-serial", "stdio",
            "-monitor", "none", "-no-reboot", "-kernel", str(kernel), "-initrd", str(initrd),
            "-append", append]

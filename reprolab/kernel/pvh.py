"""The uncompressed kernel, booted through its PVH entry: no decompression under TCG.

Debian's kernels are XZ-compressed, and under TCG the boot stub's decompression is most of
a boot: measured here, the stock 6.1 reaches init 6.5 s after QEMU starts from its bzImage
and 2.4 s from its vmlinux, which QEMU loads directly when the ELF carries the PVH entry
note (``XEN_ELFNOTE_PHYS32_ENTRY``, ``CONFIG_PVH=y``). Same kernel, same command line and
initramfs; what changes is the entry: the decompressor does not run, so neither does its
KASLR (the kernel sits at its link address, as with ``nokaslr``), which makes attempts more
alike, not less.

Only a vmlinux that is the bzImage's own build is booted. The first choice is the one inside
the bzImage (kernel/payload.py: its compressed payload, unpacked once, 66 MB for the stock
6.1), which is that build by construction and needs no -dbg package. When the payload is in
a compression Python cannot read, a vmlinux beside the kernel is stripped instead: a built
kernel's always matches; the stock kernel's -dbg vmlinux must carry the banner the bzImage's
header names. The file is kept beside the bzImage in the cache, so QEMU (as libvirt-qemu)
can read it. Anything else, or ``REPROLAB_BOOT=bzimage``, boots the bzImage as before; the
reason is kept in a file next to it.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

from filelock import FileLock

from reprolab.kernel.artifacts import KernelArtifacts
from reprolab.kernel.elf import iter_notes, note_segments
from reprolab.kernel.payload import unpack_vmlinux
from reprolab.proc import run

#: ``XEN_ELFNOTE_PHYS32_ENTRY``: the 32-bit entry QEMU's PVH loader jumps to.
_PHYS32_ENTRY = 18
PVH_NAME = "vmlinux.pvh"
NO_PVH = "vmlinux.pvh.none"


def boot_image(kernel: KernelArtifacts) -> Path:
    """The file the guest boots: the PVH vmlinux when it can be, else the bzImage."""
    if os.environ.get("REPROLAB_BOOT", "") == "bzimage":
        return kernel.image
    dest = kernel.image.with_name(PVH_NAME)
    refused = kernel.image.with_name(NO_PVH)
    if dest.exists():
        return dest
    if refused.exists():
        return kernel.image
    with FileLock(str(dest) + ".lock"):
        if dest.exists():
            return dest
        tmp = dest.with_suffix(".tmp")
        try:
            why = _from_payload(kernel, tmp)
            if why is not None and kernel.vmlinux is not None:
                also = _from_vmlinux(kernel, tmp)
                why = None if also is None else f"{why}; {also}"
            if why is None:
                tmp.chmod(0o644)
                tmp.rename(dest)
                return dest
        finally:
            tmp.unlink(missing_ok=True)
        refused.write_text(why + "\n")
    return kernel.image


def _from_payload(kernel: KernelArtifacts, out: Path) -> str | None:
    """The bzImage's own payload: always its build, and no -dbg package needed."""
    why = unpack_vmlinux(kernel.image, out)
    if why is None and not has_pvh_entry(out):
        why = f"{kernel.image}'s vmlinux has no PVH entry note (CONFIG_PVH is off)"
    return why


def _from_vmlinux(kernel: KernelArtifacts, out: Path) -> str | None:
    """The vmlinux beside the kernel (a build's, or the -dbg package's), stripped."""
    assert kernel.vmlinux is not None
    why = _unusable(kernel)
    if why is None:
        done = run(["objcopy", "--strip-debug", str(kernel.vmlinux), str(out)],
                   check=False, timeout=300)
        why = _other_build(kernel, out) if done.ok else f"objcopy failed: {done.tail(2)}"
    return why


def has_pvh_entry(vmlinux: Path) -> bool:
    try:
        return any(name == b"Xen" and ntype == _PHYS32_ENTRY
                   for data in note_segments(vmlinux, max_size=1 << 20)
                   for name, ntype, _desc in iter_notes(data))
    except (OSError, struct.error):
        return False


def bzimage_version(image: Path) -> str | None:
    """The version string the bzImage's setup header points at (``uname -r`` and more)."""
    try:
        with image.open("rb") as f:
            head = f.read(0x10000)  # the string sits in the setup code, within 64 KiB
    except OSError:
        return None
    if head[0x202:0x206] != b"HdrS" or len(head) < 0x210:
        return None
    offset = struct.unpack_from("<H", head, 0x20E)[0] + 0x200
    if not 0x200 <= offset < len(head):
        return None
    return head[offset:].split(b"\0", 1)[0].decode("ascii", errors="replace")


def _unusable(kernel: KernelArtifacts) -> str | None:
    assert kernel.vmlinux is not None
    if not has_pvh_entry(kernel.vmlinux):
        return f"{kernel.vmlinux} has no PVH entry note (CONFIG_PVH is off)"
    return None


def _other_build(kernel: KernelArtifacts, vmlinux: Path) -> str | None:
    """Why ``vmlinux`` may not be the bzImage's own build (None when it is)."""
    if kernel.origin == "build":
        return None  # one build wrote both
    version = bzimage_version(kernel.image)
    if version is None or not version.startswith(kernel.release + " "):
        return f"{kernel.image} has no version string naming {kernel.release}"
    # "<release> (<builder>) #1 SMP PREEMPT_DYNAMIC Debian <version> (<date>)": the banner
    # in vmlinux carries the same "#1 SMP ..." (and the compiler between them).
    build = version.split(") ", 1)[-1]
    banner = f"Linux version {kernel.release} ".encode()
    # Mapped, not read: the stripped vmlinux is ~100 MB.
    with vmlinux.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        at = data.find(banner)
        while at >= 0:  # more than one banner-like string: any may be the one
            if build.encode() in data[at : at + 512]:
                return None
            at = data.find(banner, at + 1)
    return f"{kernel.vmlinux} is not the build of {kernel.image} ({build})"

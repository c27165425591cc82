"""Which file a guest boots: the PVH vmlinux only when it is the bzImage's own build."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from reprolab.kernel.artifacts import KernelArtifacts
from reprolab.kernel.pvh import NO_PVH, PVH_NAME, boot_image, bzimage_version

RELEASE = "6.1.0-57-amd64"
VERSION = f"{RELEASE} (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3"


def _note(name: bytes, ntype: int, desc: bytes) -> bytes:
    name += b"\0"
    pad = lambda b: b + b"\0" * (-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(name), len(desc), ntype) + pad(name) + pad(desc)


def _vmlinux(path: Path, *, pvh: bool, banner: str) -> Path:
    """An x86-64 ELF (objcopy wants sections) with a PT_NOTE holding the PVH entry or
    another Xen note, and the kernel's banner in .rodata."""
    notes = _note(b"Xen", 18 if pvh else 6, struct.pack("<I", 0x1000000))
    rodata = f"Linux version {RELEASE} (gcc-12) {banner}\0".encode()
    names = b"\0.notes\0.rodata\0.shstrtab\0"
    notes_at = 64 + 56
    rodata_at = notes_at + len(notes)
    names_at = rodata_at + len(rodata)
    shoff = names_at + len(names) + (-(names_at + len(names)) % 8)
    ehdr = bytearray(64)
    ehdr[:7] = b"\x7fELF\x02\x01\x01"
    struct.pack_into("<HHIQQQIHHHHHH", ehdr, 16, 2, 62, 1, 0, 64, shoff, 0, 64, 56, 1, 64, 4,
                     3)
    phdr = struct.pack("<IIQQQQQQ", 4, 4, notes_at, 0, 0, len(notes), len(notes), 4)
    sh = struct.Struct("<IIQQQQIIQQ")
    sections = (sh.pack(0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
                + sh.pack(1, 7, 2, 0, notes_at, len(notes), 0, 0, 4, 0)  # SHT_NOTE, ALLOC
                + sh.pack(8, 1, 2, 0, rodata_at, len(rodata), 0, 0, 1, 0)  # PROGBITS, ALLOC
                + sh.pack(16, 3, 0, 0, names_at, len(names), 0, 0, 1, 0))  # STRTAB
    data = bytes(ehdr) + phdr + notes + rodata + names
    path.write_bytes(data + bytes(shoff - len(data)) + sections)
    return path


def _bzimage(path: Path, version: str) -> Path:
    head = bytearray(0x5000)
    head[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", head, 0x20E, 0x4400)  # the string at 0x4600: past the first 16 KiB
    head[0x4600 : 0x4600 + len(version)] = version.encode()
    path.write_bytes(bytes(head))
    return path


def _kernel(tmp_path: Path, *, pvh: bool = True, banner: str = VERSION.split(") ", 1)[1],
            origin: str = "stock") -> KernelArtifacts:
    cache = tmp_path / "cache"
    cache.mkdir()
    return KernelArtifacts(image=_bzimage(cache / "bzImage", VERSION), release=RELEASE,
                           modules_root=tmp_path, config=None,
                           vmlinux=_vmlinux(tmp_path / "vmlinux", pvh=pvh, banner=banner),
                           key="k", origin=origin)


def test_the_bzimage_names_its_version() -> None:
    assert bzimage_version(Path("/nonexistent")) is None


def test_the_stock_builds_vmlinux_is_booted_stripped_and_kept(tmp_path: Path) -> None:
    kernel = _kernel(tmp_path)
    assert bzimage_version(kernel.image) == VERSION
    booted = boot_image(kernel)
    assert booted == kernel.image.with_name(PVH_NAME) and booted.is_file()
    assert booted.stat().st_mode & 0o444 == 0o444  # QEMU runs as another user
    assert boot_image(kernel) == booted


def test_a_vmlinux_of_another_build_is_not_booted(tmp_path: Path) -> None:
    """A -dbg package of another upload with the same ABI name: the bzImage boots."""
    kernel = _kernel(tmp_path, banner="#1 SMP PREEMPT_DYNAMIC Debian 6.1.191-1")
    assert boot_image(kernel) == kernel.image
    why = kernel.image.with_name(NO_PVH).read_text()
    assert "is not the build of" in why and not kernel.image.with_name(PVH_NAME).exists()


def test_no_pvh_entry_or_asked_not_to_boots_the_bzimage(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = _kernel(tmp_path, pvh=False, origin="build")
    assert boot_image(kernel) == kernel.image
    assert "CONFIG_PVH is off" in kernel.image.with_name(NO_PVH).read_text()
    monkeypatch.setenv("REPROLAB_BOOT", "bzimage")
    (tmp_path / "asked").mkdir()
    asked = _kernel(tmp_path / "asked")  # would boot its vmlinux, but the user said no
    assert boot_image(asked) == asked.image
    assert not asked.image.with_name(PVH_NAME).exists()

"""Which file a guest boots: the PVH vmlinux only when it is the bzImage's own build."""

from __future__ import annotations

import gzip
import lzma
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from reprolab.kernel.artifacts import KernelArtifacts
from reprolab.kernel.payload import unpack_vmlinux
from reprolab.kernel.pvh import NO_PVH, PVH_NAME, boot_image, bzimage_version, has_pvh_entry

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


def _bzimage(path: Path, version: str, payload: bytes | None = None) -> Path:
    """A bzImage's setup header; with ``payload`` (compressed, size appended), protocol 2.15
    and the payload 0x100 bytes into the protected-mode code, as mkpiggy lays it out."""
    head = bytearray(0x5000)
    head[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", head, 0x20E, 0x4400)  # the string at 0x4600: past the first 16 KiB
    head[0x4600 : 0x4600 + len(version)] = version.encode()
    if payload is None:
        path.write_bytes(bytes(head))
        return path
    head[0x1F1] = 0x5000 // 512 - 1  # setup sectors after the boot sector
    struct.pack_into("<H", head, 0x206, 0x20F)
    struct.pack_into("<II", head, 0x248, 0x100, len(payload))
    path.write_bytes(bytes(head) + bytes(0x100) + payload + bytes(64))
    return path


def _packed(elf: bytes, compress: Callable[[bytes], bytes] = lzma.compress,
            announce: int | None = None) -> bytes:
    size = len(elf) if announce is None else announce
    return compress(elf) + struct.pack("<I", size)


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


def _stock_without_dbg(tmp_path: Path, payload: bytes) -> KernelArtifacts:
    cache = tmp_path / "cache"
    cache.mkdir()
    return KernelArtifacts(image=_bzimage(cache / "bzImage", VERSION, payload), release=RELEASE,
                           modules_root=tmp_path, config=None, vmlinux=None, key="k",
                           origin="stock")


@pytest.mark.parametrize("compress", [lzma.compress, gzip.compress], ids=["xz", "gzip"])
def test_the_vmlinux_inside_the_bzimage_is_booted_without_a_dbg_package(
        tmp_path: Path, compress: Callable[[bytes], bytes]) -> None:
    elf = _vmlinux(tmp_path / "inner", pvh=True, banner="#1").read_bytes()
    kernel = _stock_without_dbg(tmp_path, _packed(elf, compress))
    booted = boot_image(kernel)
    assert booted == kernel.image.with_name(PVH_NAME)
    assert booted.read_bytes() == elf and booted.stat().st_mode & 0o444 == 0o444


def test_a_payload_without_the_pvh_note_boots_the_bzimage(tmp_path: Path) -> None:
    elf = _vmlinux(tmp_path / "inner", pvh=False, banner="#1").read_bytes()
    kernel = _stock_without_dbg(tmp_path, _packed(elf))
    assert boot_image(kernel) == kernel.image
    assert "CONFIG_PVH is off" in kernel.image.with_name(NO_PVH).read_text()
    assert not list(kernel.image.parent.glob("*.tmp"))


@pytest.mark.parametrize(("payload", "why"), [
    (b"\x28\xb5\x2f\xfd" + bytes(60), "compression reprolab does not unpack (magic 28b52ffd)"),
    (_packed(b"\x7fELF" + bytes(5000), announce=100), "unpacks past the 100 bytes"),
    (_packed(b"\x7fELF" + bytes(5000), announce=9000), "unpacked to 5004 bytes, not the 9000"),
    (lzma.compress(bytes(5000))[:40] + struct.pack("<I", 5000), "unpacked to 1096 bytes"),
    (_packed(b"x", announce=2 << 30), "announces 2147483648 bytes: not a kernel"),
], ids=["zstd", "bomb", "short", "truncated", "huge"])
def test_a_bad_payload_is_refused_with_its_reason(tmp_path: Path, payload: bytes,
                                                  why: str) -> None:
    image = _bzimage(tmp_path / "bzImage", VERSION, payload)
    assert why in (unpack_vmlinux(image, tmp_path / "out") or "")


def test_a_header_pointing_outside_the_file_is_refused(tmp_path: Path) -> None:
    image = _bzimage(tmp_path / "bzImage", VERSION, _packed(b"\x7fELF"))
    data = bytearray(image.read_bytes())
    struct.pack_into("<I", data, 0x24C, 1 << 20)
    image.write_bytes(bytes(data))
    assert "points outside the file" in (unpack_vmlinux(image, tmp_path / "out") or "")
    (tmp_path / "pe").write_bytes(b"MZ" + bytes(0x300))
    assert "no x86 boot setup header" in (unpack_vmlinux(tmp_path / "pe", tmp_path / "x") or "")


def test_the_stock_kernels_own_payload_has_the_pvh_entry(tmp_path: Path) -> None:
    """Debian builds with CONFIG_PVH=y and XZ: its bzImage alone boots through PVH."""
    images = sorted(Path("/boot").glob("vmlinuz-*"))
    if not images:
        pytest.skip("no kernel in /boot (linux-image-amd64 is not installed)")
    out = tmp_path / "vmlinux"
    assert unpack_vmlinux(images[-1], out) is None
    assert out.read_bytes()[:4] == b"\x7fELF" and has_pvh_entry(out)

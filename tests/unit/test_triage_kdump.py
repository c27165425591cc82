"""kdump-compressed and flattened dumps rewritten as ELF cores, on synthetic files."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from reprolab.errors import UserError
from reprolab.triage import rawdump
from reprolab.triage.kdump import kdump_to_elf, pages

BLOCK = 4096


def _kdump(pages: dict[int, bytes], notes: bytes) -> bytes:
    """A QEMU-style kdump file: header, sub-header, bitmaps, page descriptors, pages."""
    header = bytearray(BLOCK)
    header[:8] = b"KDUMP   "
    struct.pack_into("<i", header, 8, 6)
    header[12 + 4 * 65 : 12 + 4 * 65 + 6] = b"x86_64"
    struct.pack_into("<IIIII", header, 424, 1, BLOCK, 1, 1, 64)  # status..max_mapnr
    bitmap = bytearray(BLOCK)
    for pfn in pages:
        bitmap[pfn >> 3] |= 1 << (pfn & 7)  # valid
        bitmap[BLOCK // 2 + (pfn >> 3)] |= 1 << (pfn & 7)  # dumped
    desc_off = 3 * BLOCK  # descriptors follow header, sub-header and the bitmap block
    data_off = desc_off + 24 * len(pages)
    descs, data = b"", b""
    for pfn in sorted(pages):
        blob = zlib.compress(pages[pfn]) if pfn % 2 else pages[pfn]
        descs += struct.pack("<QIIQ", data_off + len(data), len(blob), 1 if pfn % 2 else 0, 0)
        data += blob
    sub = bytearray(BLOCK)
    struct.pack_into("<QQ", sub, 48, data_off + len(data), len(notes))  # notes at the end
    return bytes(header) + bytes(sub) + bytes(bitmap) + descs + data + notes


def _flatten(plain: bytes) -> bytes:
    head = b"makedumpfile\0".ljust(BLOCK, b"\0")
    out = head
    for off in range(0, len(plain), 5000):
        chunk = plain[off : off + 5000]
        out += struct.pack(">qq", off, len(chunk)) + chunk
    return out + struct.pack(">qq", -1, 0)


def _pt_loads(elf: bytes) -> list[tuple[int, int, int]]:
    phoff, = struct.unpack_from("<Q", elf, 32)
    phnum, = struct.unpack_from("<H", elf, 56)
    loads = []
    for i in range(phnum):
        p_type, _f, off, _va, paddr, size, _m, _a = struct.unpack_from("<IIQQQQQQ", elf,
                                                                      phoff + 56 * i)
        if p_type == 1:
            loads.append((paddr, off, size))
    return loads


def test_kdump_becomes_sparse_elf_with_notes(tmp_path: Path) -> None:
    vmcoreinfo = b"OSRELEASE=6.1.0-test\n"
    name = b"VMCOREINFO\0"
    notes = struct.pack("<III", len(name), len(vmcoreinfo), 0) + name + b"\0" + vmcoreinfo
    notes += b"\0" * (-len(notes) % 4)
    pages = {3: b"\xaa" * BLOCK, 4: b"\xbb" * BLOCK, 9: bytes(BLOCK)}
    src, dst = tmp_path / "dump.kdump", tmp_path / "dump.elf"
    src.write_bytes(_kdump(pages, notes))
    kdump_to_elf(src, dst)
    elf = dst.read_bytes()
    loads = _pt_loads(elf)
    assert [(p // BLOCK, s // BLOCK) for p, _o, s in loads] == [(3, 2), (9, 1)]
    (_p3, off3, _), (_p9, off9, _) = loads
    assert elf[off3 : off3 + BLOCK] == b"\xaa" * BLOCK
    assert elf[off3 + BLOCK : off3 + 2 * BLOCK] == b"\xbb" * BLOCK
    assert elf[off9 : off9 + BLOCK] == bytes(BLOCK)
    assert b"OSRELEASE=6.1.0-test" in elf[:off3]
    assert len(elf) == off9 + BLOCK


def test_pages_yields_every_dumped_page_at_its_address(tmp_path: Path) -> None:
    held = {3: b"\xaa" * BLOCK, 4: b"\xbb" * BLOCK, 9: bytes(BLOCK)}
    src = tmp_path / "dump.kdump"
    src.write_bytes(_kdump(held, b""))
    assert list(pages(src)) == [(pfn * BLOCK, held[pfn]) for pfn in (3, 4, 9)]
    src.write_bytes(_kdump(held, b"")[: 3 * BLOCK + 30])  # cut inside the descriptors
    with pytest.raises(UserError, match="truncated"):
        list(pages(src))


def test_flattened_stream_is_rearranged(tmp_path: Path) -> None:
    plain = bytes(range(256)) * 100
    src, dst = tmp_path / "flat", tmp_path / "plain"
    src.write_bytes(_flatten(plain))
    assert rawdump.is_flattened(src)
    rawdump.unflatten(src, dst)
    assert dst.read_bytes() == plain
    src.write_bytes(_flatten(plain)[:-16])
    with pytest.raises(UserError, match="truncated"):
        rawdump.unflatten(src, dst)


def test_bad_kdump_header_is_a_user_error(tmp_path: Path) -> None:
    src = tmp_path / "bad.kdump"
    src.write_bytes(b"KDUMP   " + bytes(600))
    with pytest.raises(UserError, match="unexpected layout"):
        kdump_to_elf(src, tmp_path / "out.elf")


def test_shared_zero_page_descriptor_is_read_once_and_left_a_hole(tmp_path: Path) -> None:
    """QEMU points every zero page at one stored zero page; a page after them still lands."""
    pages = {2: bytes(BLOCK), 4: bytes(BLOCK), 6: b"\xcc" * BLOCK, 8: bytes(BLOCK)}
    raw = bytearray(_kdump(pages, b""))
    desc_off = 3 * BLOCK
    first = raw[desc_off : desc_off + 24]
    raw[desc_off + 24 * 3 : desc_off + 24 * 4] = first  # pfn 8 shares pfn 2's zero page
    src, dst = tmp_path / "dump.kdump", tmp_path / "dump.elf"
    src.write_bytes(bytes(raw))
    kdump_to_elf(src, dst)
    elf = dst.read_bytes()
    by_pfn = {p // BLOCK: o for p, o, _s in _pt_loads(elf)}
    assert elf[by_pfn[6] : by_pfn[6] + BLOCK] == b"\xcc" * BLOCK
    assert elf[by_pfn[8] : by_pfn[8] + BLOCK] == bytes(BLOCK)
    assert len(elf) == by_pfn[8] + BLOCK


def test_cut_page_descriptors_are_a_user_error(tmp_path: Path) -> None:
    pages = {1: b"\xaa" * BLOCK, 2: b"\xbb" * BLOCK}
    src = tmp_path / "cut.kdump"
    src.write_bytes(_kdump(pages, b"")[: 3 * BLOCK + 24])  # one descriptor of two
    with pytest.raises(UserError, match="truncated"):
        kdump_to_elf(src, tmp_path / "out.elf")


def _prstatus(pid: int, rip: int) -> bytes:
    desc = bytearray(112 + 27 * 8 + 8)
    struct.pack_into("<i", desc, 32, pid)
    struct.pack_into("<Q", desc, 112 + 16 * 8, rip)  # pr_reg.rip
    name = b"CORE\0"
    note = struct.pack("<III", len(name), len(desc), 1) + name + b"\0" * (-len(name) % 4)
    return note + bytes(desc)


def test_header_names_machine_and_notes_give_each_cpu(tmp_path: Path) -> None:
    """What drgn is told to read a kdump file in place: its architecture and registers."""
    from reprolab.triage import kdump

    src = tmp_path / "dump.kdump"
    src.write_bytes(_kdump({1: b"\xaa" * BLOCK}, _prstatus(7, 0xFFFF1) + _prstatus(8, 0xFFFF2)))
    assert kdump.machine(src) == "x86_64"
    cpus = rawdump.prstatus_notes(src)
    assert [(c.cpu, c.pid, c.ip) for c in cpus] == [(0, 7, 0xFFFF1), (1, 8, 0xFFFF2)]
    src.write_bytes(b"KDUMP   " + bytes(600))  # a bad layout: no notes, no exception
    assert kdump.notes(src) == b"" and rawdump.prstatus_notes(src) == []


def test_dump_drgn_cannot_open_in_place_is_rewritten_as_elf(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No VMCOREINFO: drgn refuses the kdump file as it is, so the ELF rewrite is tried
    next (and refused the same way: the dossier's error names the dump)."""
    from reprolab.triage import kdump
    from reprolab.triage.vmcore import build_dossier

    rewritten: list[Path] = []

    def spy(src: Path, dst: Path) -> None:
        rewritten.append(dst)
        kdump_to_elf(src, dst)

    monkeypatch.setattr(kdump, "kdump_to_elf", spy)
    src = tmp_path / "dump.kdump"
    src.write_bytes(_kdump({1: b"\xaa" * BLOCK}, _prstatus(7, 0xFFFF1)))
    with pytest.raises(UserError, match="not of a Linux kernel"):
        build_dossier(src, None, lookup=False)
    assert len(rewritten) == 1 and not rewritten[0].exists()  # tried, and not left behind

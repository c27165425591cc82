"""kdump files written from guest pages: read back by the same reader libvirt's dumps go
through, pages compressed once per content, and the live dump's ELF head parsed."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import libvirt
import pytest

from reprolab.triage import kdump
from reprolab.triage.kdumpwrite import PageCache, note_desc_offset, write_kdump
from reprolab.virt import dump, livedump
from reprolab.virt.livedump import LiveDumpUnavailable

PAGE = 4096


def _note(name: bytes, n_type: int, desc: bytes) -> bytes:
    name += b"\0"
    out = struct.pack("<III", len(name), len(desc), n_type) + name
    out += b"\0" * (-len(out) % 4) + desc
    return out + b"\0" * (-len(out) % 4)


NOTES = (_note(b"CORE", 1, bytes(336)) + _note(b"CORE", 1, b"\1" * 336)
         + _note(b"VMCOREINFO", 0, b"OSRELEASE=6.1.0-test\nPAGESIZE=4096\n"))


def test_written_dump_reads_back_page_for_page(tmp_path: Path) -> None:
    a, b = b"\xaa" * PAGE, bytes(range(256)) * 16
    dst = tmp_path / "d.kdump"
    written = write_kdump(dst, notes=NOTES, nr_cpus=2, max_pfn=10, pages=[(1, a), (5, b)])
    assert (written.pages, written.nonzero, written.compressed) == (10, 2, 2)
    pages = dict(kdump.pages(dst))
    assert sorted(pages) == [pfn * PAGE for pfn in range(10)]
    assert pages[PAGE] == a and pages[5 * PAGE] == b
    assert all(pages[pfn * PAGE] == bytes(PAGE) for pfn in (0, 2, 3, 4, 6, 7, 8, 9))
    assert kdump.notes(dst) == NOTES
    assert kdump.machine(dst) == "x86_64"
    data = dst.read_bytes()
    assert struct.unpack_from("<i", data, 424 + 36)[0] == 2  # nr_cpus
    info_off, info_size = struct.unpack_from("<QQ", data, PAGE + 32)
    assert data[info_off : info_off + info_size].startswith(b"OSRELEASE=6.1.0-test")
    elf = tmp_path / "d.elf"
    kdump.kdump_to_elf(dst, elf)
    assert os.path.getsize(elf) > 5 * PAGE


def test_a_page_is_compressed_again_only_when_it_changed(tmp_path: Path) -> None:
    cache = PageCache()
    a, b = b"\xaa" * PAGE, b"\xbb" * PAGE
    first = write_kdump(tmp_path / "1", notes=NOTES, nr_cpus=2, max_pfn=8,
                        pages=[(2, a), (3, b)], cache=cache)
    second = write_kdump(tmp_path / "2", notes=NOTES, nr_cpus=2, max_pfn=8,
                         pages=[(2, a), (3, b)], cache=cache)
    third = write_kdump(tmp_path / "3", notes=NOTES, nr_cpus=2, max_pfn=8,
                        pages=[(2, a), (3, a), (4, b)], cache=cache)
    assert (first.compressed, second.compressed, third.compressed) == (2, 0, 2)
    assert (tmp_path / "1").read_bytes() == (tmp_path / "2").read_bytes()
    assert dict(kdump.pages(tmp_path / "3"))[3 * PAGE] == a


def test_incompressible_page_is_stored_as_it_is(tmp_path: Path) -> None:
    noise = os.urandom(PAGE)
    write_kdump(tmp_path / "d", notes=NOTES, nr_cpus=2, max_pfn=3, pages=[(2, noise)])
    assert dict(kdump.pages(tmp_path / "d"))[2 * PAGE] == noise


def test_page_outside_the_dump_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="outside"):
        write_kdump(tmp_path / "d", notes=NOTES, nr_cpus=2, max_pfn=3,
                    pages=[(3, bytes(PAGE))])


def test_note_lookup_skips_other_notes() -> None:
    found = note_desc_offset(NOTES, b"VMCOREINFO")
    assert found is not None
    off, size = found
    assert NOTES[off : off + size].startswith(b"OSRELEASE=")
    assert note_desc_offset(NOTES, b"NOPE") is None


def _elf(notes: bytes, memory: bytes, paddr: int = 0) -> bytes:
    phnum, phoff = 2, 64
    note_off = phoff + 56 * phnum
    mem_off = note_off + len(notes)
    head = bytearray(64)
    head[:4] = b"\x7fELF"
    struct.pack_into("<Q", head, 32, phoff)
    struct.pack_into("<HH", head, 54, 56, phnum)
    phdrs = struct.pack("<IIQQQQQQ", 4, 0, note_off, 0, 0, len(notes), len(notes), 0)
    phdrs += struct.pack("<IIQQQQQQ", 1, 0, mem_off, 0, paddr, len(memory), len(memory), 0)
    return bytes(head) + phdrs + notes + memory


def test_elf_head_gives_notes_cpus_and_the_first_memory() -> None:
    memory = b"\x11" * PAGE + b"\x22" * PAGE + b"\x33" * 100  # a partial page is dropped
    notes, cpus, at, got = livedump._elf_head(_elf(NOTES, memory, paddr=0x2000))
    assert (notes, cpus, at, got) == (NOTES, 2, 0x2000, memory[: 2 * PAGE])


def test_elf_head_without_cpu_notes_is_unusable() -> None:
    with pytest.raises(LiveDumpUnavailable, match="no CPU notes"):
        livedump._elf_head(_elf(_note(b"VMCOREINFO", 0, b"X=1\n"), b"\1" * PAGE))


def test_runs_of_page_indexes() -> None:
    assert list(livedump._runs([0, 1, 2, 7, 9, 10])) == [(0, 3), (7, 1), (9, 2)]
    assert list(livedump._runs([])) == []


class _RunningDomain:
    """What take_vmcore asks of a domain; running, so its memory cannot be read here."""

    def __init__(self) -> None:
        self.dumped: list[tuple[str, int]] = []

    def state(self) -> tuple[int, int]:
        return libvirt.VIR_DOMAIN_RUNNING, 0

    def coreDumpWithFormat(self, path: str, fmt: int, flags: int) -> None:
        Path(path).write_bytes(b"KDUMP   ")
        self.dumped.append((path, fmt))

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"take_vmcore asked a running guest for {name}")


def test_a_guest_that_cannot_be_read_is_dumped_by_libvirt(tmp_path: Path) -> None:
    dom = _RunningDomain()
    core = dump.take_vmcore(dom, tmp_path / "vmcore.kdump", "kdump-zlib", local=True)
    assert core.writer == "qemu"
    assert dom.dumped == [(str(tmp_path / "vmcore.kdump"),
                           libvirt.VIR_DOMAIN_CORE_DUMP_FORMAT_KDUMP_ZLIB)]


def _own_memory(pages: int) -> tuple[Any, int]:
    """An anonymous mapping of this process, of a size nothing else here has."""
    import mmap

    region = mmap.mmap(-1, pages * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return region, livedump._address_of(region)


def test_pages_never_written_are_skipped_unread_and_written_ones_read() -> None:
    """The page map of a real process (this one): pages written are candidates, pages only
    read (on the zero page) or never touched are not."""
    region, base = _own_memory(37)
    try:
        region[1 * PAGE] = 7
        region[5 * PAGE + 100] = 9
        _ = region[9 * PAGE]  # read only: the zero page (or the huge zero page)
        assert livedump.ram_mapping(os.getpid(), 37 * PAGE) == base
        written = livedump._written_pages(os.getpid(), base, 37)
        assert written == [1, 5]
        got = dict(livedump._read_pages(os.getpid(), base, written))
        assert got[1][0] == 7 and got[5][100] == 9 and sorted(got) == [1, 5]
    finally:
        region.close()


def test_the_mapping_is_checked_against_qemus_bytes() -> None:
    region, base = _own_memory(41)
    try:
        region[: 2 * PAGE] = b"\x5a" * (2 * PAGE)
        livedump._check_mapping(os.getpid(), base, 41 * PAGE, 0, b"\x5a" * (2 * PAGE))
        with pytest.raises(LiveDumpUnavailable, match="differs"):
            livedump._check_mapping(os.getpid(), base, 41 * PAGE, 0, b"\x5b" * (2 * PAGE))
        with pytest.raises(LiveDumpUnavailable, match="cannot check"):  # zeros match anything
            livedump._check_mapping(os.getpid(), base, 41 * PAGE, 2 * PAGE, bytes(PAGE))
    finally:
        region.close()

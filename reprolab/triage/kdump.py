"""kdump-compressed dumps (libvirt's ``kdump-zlib``): their header, notes and an ELF rewrite.

drgn reads kdump files through libkdumpfile, which cannot name the architecture of the dumps
QEMU writes (its header carries only ``utsname.machine``), and QEMU writes them in
makedumpfile's flattened stream format besides. Once unflattened, drgn opens them when told
the platform (:func:`machine` gives what the header says), decompressing only the pages it
reads: 0.04 s against 0.5 s to rewrite a 512 MiB guest's dump. When that fails, the pages
are decompressed into a sparse ELF core laid out like QEMU's own ELF dumps (physical
PT_LOADs, the dump's notes, VMCOREINFO included), which every other reader here handles.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from reprolab.errors import UserError

_KDUMP_SIGS = (b"KDUMP   ", b"DISKDUMP")
_ZLIB, _LZO, _SNAPPY, _ZSTD = 0x1, 0x2, 0x4, 0x20
_PAGE_DESC = struct.Struct("<QIIQ")  # offset, size, flags, page_flags
_PHDR = struct.Struct("<IIQQQQQQ")
_EHDR_SIZE = 64
#: The set bits of each byte value, low bit first: the dump bitmap read a byte at a time.
_BITS = tuple(tuple(i for i in range(8) if value >> i & 1) for value in range(256))


def is_kdump(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(8) in _KDUMP_SIGS
    except OSError:
        return False


#: Offset of ``utsname.machine`` in the kdump header: signature, version, then utsname's
#: sysname, nodename, release and version (65 bytes each).
_MACHINE_OFF, _UTS_LEN = 12 + 4 * 65, 65


def machine(path: Path) -> str:
    """The architecture the header names (``x86_64``), or "" when it names none."""
    with path.open("rb") as f:
        head = f.read(_MACHINE_OFF + _UTS_LEN)
    return head[_MACHINE_OFF:].split(b"\0", 1)[0].decode("ascii", errors="replace")


def notes(path: Path) -> bytes:
    """The ELF notes the dump carries (NT_PRSTATUS per CPU, VMCOREINFO); b"" if unreadable."""
    try:
        with path.open("rb") as f:
            block, sub_blocks, _bitmaps, _max = _layout(f.read(4096), path)
            return _read_notes(f, block, sub_blocks)
    except (OSError, struct.error, UserError):
        return b""


def _read_notes(f: BinaryIO, block: int, sub_blocks: int) -> bytes:
    """The note area the sub-header points at (none when it claims 16 MiB or more)."""
    f.seek(block)
    note_off, note_size = struct.unpack_from("<QQ", f.read(block * max(sub_blocks, 1)), 48)
    if note_size >= 1 << 24:
        return b""
    f.seek(note_off)
    return f.read(note_size)


def _layout(head: bytes, src: Path) -> tuple[int, int, int, int]:
    block, sub_blocks, bitmap_blocks, max_mapnr = struct.unpack_from("<IIII", head, 428)
    if (block not in (4096, 8192, 16384, 65536) or not bitmap_blocks
            or bitmap_blocks * block > 1 << 30 or sub_blocks > 64):
        raise UserError(f"{src}: kdump header has an unexpected layout")
    return block, sub_blocks, bitmap_blocks, max_mapnr


def _runs(pfns: list[int]) -> list[tuple[int, int]]:
    """Consecutive page frame numbers as (first, count) runs: one PT_LOAD each."""
    runs: list[tuple[int, int]] = []
    for pfn in pfns:
        if runs and runs[-1][0] + runs[-1][1] == pfn:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((pfn, 1))
    return runs


def _page(data: bytes, flags: int, block: int, src: Path) -> bytes:
    if flags & _ZLIB:
        page = zlib.decompress(data)
    elif flags & (_LZO | _SNAPPY | _ZSTD):
        raise UserError(f"{src}: pages are LZO/snappy/zstd-compressed; take the dump as "
                        "'elf' or 'kdump-zlib'")
    else:
        page = data
    if len(page) != block:
        raise UserError(f"{src}: a page decompresses to {len(page)} bytes, not {block}")
    return page


def kdump_to_elf(src: Path, dst: Path) -> None:
    """Write ``src`` (a kdump-compressed dump, not flattened) as an ELF core at ``dst``."""
    try:
        _convert(src, dst)
    except (struct.error, zlib.error, OSError, ValueError) as exc:
        raise UserError(f"{src}: unreadable kdump-compressed dump ({exc})") from None


def _index(f: BinaryIO, src: Path) -> tuple[int, bytes, list[int], bytes]:
    """Page size, notes, the dumped page frame numbers and their page descriptors."""
    block, sub_blocks, bitmap_blocks, max_mapnr = _layout(f.read(4096), src)
    note_data = _read_notes(f, block, sub_blocks)
    f.seek(block * (1 + sub_blocks))
    bitmaps = f.read(block * bitmap_blocks)
    dumped_map = bitmaps[len(bitmaps) // 2 :]
    nbits = min(max_mapnr or len(dumped_map) * 8, len(dumped_map) * 8)
    pfns = [(j << 3) + i for j, byte in enumerate(dumped_map[: (nbits + 7) >> 3])
            for i in _BITS[byte] if (j << 3) + i < nbits]
    f.seek(block * (1 + sub_blocks + bitmap_blocks))
    descs = f.read(_PAGE_DESC.size * len(pfns))
    if len(descs) != _PAGE_DESC.size * len(pfns):
        raise UserError(f"{src}: truncated: {len(pfns)} pages in its bitmap, "
                        f"{len(descs) // _PAGE_DESC.size} page descriptors")
    return block, note_data, pfns, descs


def pages(src: Path) -> Iterator[tuple[int, bytes]]:
    """Every page the dump holds, as (physical address, contents), zero pages included:
    for measuring what a dump is made of (bench/attempt_cpu.py), not for triage."""
    try:
        with src.open("rb") as f:
            block, _notes, pfns, descs = _index(f, src)
            for pfn, (off, size, flags, _pf) in zip(pfns, _PAGE_DESC.iter_unpack(descs),
                                                    strict=True):
                f.seek(off)
                yield pfn * block, _page(f.read(size), flags, block, src)
    except (struct.error, zlib.error, OSError, ValueError) as exc:
        raise UserError(f"{src}: unreadable kdump-compressed dump ({exc})") from None


def _convert(src: Path, dst: Path) -> None:
    with src.open("rb") as f:
        block, note_data, pfns, descs = _index(f, src)
        runs = _runs(pfns)
        phnum = 1 + len(runs)
        data_off = _EHDR_SIZE + _PHDR.size * phnum + len(note_data)
        data_off += -data_off % block
        with dst.open("wb") as out:
            ehdr = bytearray(_EHDR_SIZE)
            ehdr[:7] = b"\x7fELF\x02\x01\x01"
            struct.pack_into("<HHIQQQIHHHHHH", ehdr, 16, 4, 62, 1, 0, _EHDR_SIZE, 0, 0,
                             _EHDR_SIZE, _PHDR.size, phnum, 0, 0, 0)
            out.write(ehdr)
            out.write(_PHDR.pack(4, 0, _EHDR_SIZE + _PHDR.size * phnum, 0, 0, len(note_data),
                                 len(note_data), 0))
            offset = data_off
            for first, count in runs:
                size = count * block
                out.write(_PHDR.pack(1, 0, offset, 0, first * block, size, size, 0))
                offset += size
            out.write(note_data)
            zero = bytes(block)
            # QEMU writes the zero page once and points every zero page's descriptor at it:
            # a descriptor seen to hold zeros is skipped without a read (most of a guest).
            zero_descs: set[tuple[int, int, int]] = set()
            pos = data_off
            for off, size, flags, _pf in _PAGE_DESC.iter_unpack(descs):
                if (off, size, flags) not in zero_descs:
                    f.seek(off)
                    page = _page(f.read(size), flags, block, src)
                    if page == zero:  # leave zero pages as holes: the ELF stays sparse
                        zero_descs.add((off, size, flags))
                    else:
                        out.seek(pos)
                        out.write(page)
                pos += block
            out.truncate(pos)

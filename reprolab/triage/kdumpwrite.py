"""Writing kdump-compressed dumps (the layout QEMU's ``kdump-zlib`` writes), page by page.

QEMU 7.2 compresses every nonzero page of a dump with zlib in one thread: 0.8 CPU seconds for
a 512 MiB guest here, most of it the kernel image's own pages, the same in every dump of one
kernel. A dump written here from the guest's memory (:mod:`reprolab.virt.livedump`) keeps the
file format that ``crash``, drgn (through :mod:`reprolab.triage.kdump`) and every reader of
libvirt's dumps already handle, and compresses a page only when it differs from the page at
the same address in the previous dump written by this process: a restored guest's kernel,
memmap and most of its slab are what they were a minute ago.

The layout, as QEMU writes it: a header block, the sub-header (104 bytes) with the ELF notes
after it, the two page bitmaps (every page valid and dumped), one descriptor per page, the
zero page once (every zero page's descriptor points at it), then the pages.
"""

from __future__ import annotations

import struct
import threading
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

BLOCK = 4096
_ZLIB = 0x1
_SUB_HEADER = struct.Struct("<QIIQQQQQQQQQQQ")
_PAGE_DESC = struct.Struct("<QIIQ")
_UTS_LEN = 65
#: Where ``status`` starts: signature, version, utsname (6 x 65), pad to 8, timestamp.
_STATUS_OFF = 424


@dataclass(frozen=True)
class Written:
    path: Path
    pages: int
    #: Nonzero pages, and how many of them had to be compressed (the rest were reused).
    nonzero: int
    compressed: int


class PageCache:
    """The last dump's nonzero pages (raw, compressed) by frame number: shared by the
    threads that write dumps, each of which replaces it with its own when done."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pages: dict[int, tuple[bytes, bytes]] = {}

    def get(self) -> dict[int, tuple[bytes, bytes]]:
        with self._lock:
            return self._pages

    def put(self, pages: dict[int, tuple[bytes, bytes]]) -> None:
        with self._lock:
            self._pages = pages


def note_desc_offset(notes: bytes, wanted: bytes) -> tuple[int, int] | None:
    """(offset, size) of the descriptor of the first note named ``wanted`` in ``notes``."""
    off = 0
    while off + 12 <= len(notes):
        namesz, descsz, _type = struct.unpack_from("<III", notes, off)
        name_at = off + 12
        desc_at = name_at + (namesz + 3) // 4 * 4
        if notes[name_at : name_at + namesz].rstrip(b"\0") == wanted:
            return desc_at, descsz
        off = desc_at + (descsz + 3) // 4 * 4
    return None


def write_kdump(dst: Path, *, notes: bytes, nr_cpus: int, max_pfn: int,
                pages: Iterable[tuple[int, bytes]], cache: PageCache | None = None
                ) -> Written:
    """Write ``dst`` holding frames 0..``max_pfn``-1; ``pages`` gives the nonzero ones
    (frame number, contents), in increasing order; every other frame is zero."""
    previous = cache.get() if cache is not None else {}
    kept: dict[int, tuple[bytes, bytes]] = {}
    compressed = 0
    for pfn, raw in pages:
        if not 0 <= pfn < max_pfn or len(raw) != BLOCK:
            raise ValueError(f"page {pfn:#x} outside the dump or not {BLOCK} bytes")
        old = previous.get(pfn)
        if old is not None and old[0] == raw:
            kept[pfn] = old
            continue
        packed = zlib.compress(raw, 1)
        kept[pfn] = (raw, packed if len(packed) < BLOCK else raw)
        compressed += 1
    sub_blocks = -(-(_SUB_HEADER.size + len(notes)) // BLOCK)
    bitmap_bytes = -(-max_pfn // 8)
    half = -(-bitmap_bytes // BLOCK) * BLOCK
    bitmap_blocks = 2 * half // BLOCK
    desc_off = BLOCK * (1 + sub_blocks + bitmap_blocks)
    zero_off = desc_off + _PAGE_DESC.size * max_pfn

    header = bytearray(BLOCK)
    header[:8] = b"KDUMP   "
    struct.pack_into("<i", header, 8, 6)
    machine_at = 12 + 4 * _UTS_LEN
    header[machine_at : machine_at + 6] = b"x86_64"
    struct.pack_into("<iiiii", header, _STATUS_OFF, _ZLIB, BLOCK, sub_blocks, bitmap_blocks,
                     min(max_pfn, 0x7FFFFFFF))
    struct.pack_into("<i", header, _STATUS_OFF + 36, nr_cpus)

    note_off = BLOCK + _SUB_HEADER.size
    vmcoreinfo = note_desc_offset(notes, b"VMCOREINFO")
    info_off, info_size = ((note_off + vmcoreinfo[0], vmcoreinfo[1]) if vmcoreinfo
                           else (0, 0))
    sub = bytearray(BLOCK * sub_blocks)
    _SUB_HEADER.pack_into(sub, 0, 0, 1, 0, 0, 0, info_off, info_size, note_off, len(notes),
                          0, 0, 0, 0, max_pfn)
    sub[_SUB_HEADER.size : _SUB_HEADER.size + len(notes)] = notes

    bitmap = bytearray(half)
    bitmap[: max_pfn // 8] = b"\xff" * (max_pfn // 8)
    if max_pfn % 8:
        bitmap[max_pfn // 8] = (1 << (max_pfn % 8)) - 1

    descs = bytearray(_PAGE_DESC.size * max_pfn)
    zero_desc = _PAGE_DESC.pack(zero_off, BLOCK, 0, 0)
    descs[:] = zero_desc * max_pfn
    data_off = zero_off + BLOCK
    chunks: list[bytes] = []
    for pfn, (_raw, stored) in kept.items():
        flags = _ZLIB if len(stored) < BLOCK else 0
        _PAGE_DESC.pack_into(descs, pfn * _PAGE_DESC.size, data_off, len(stored), flags, 0)
        chunks.append(stored)
        data_off += len(stored)
    with dst.open("wb") as out:
        out.write(header)
        out.write(sub)
        out.write(bitmap)
        out.write(bitmap)
        out.write(descs)
        out.write(bytes(BLOCK))
        out.writelines(chunks)
    if cache is not None:
        cache.put(kept)
    return Written(path=dst, pages=max_pfn, nonzero=len(kept), compressed=compressed)

"""The ELF notes reprolab reads: a vmlinux's build id, a vmcore's per-CPU registers.

One program-header walk for both (:func:`note_segments`), stdlib only: the kernel cache
matches a vmlinux to its image by build id, triage reads NT_PRSTATUS notes from a vmcore
without debug info. Every size read from a file is bounded: a dump handed in may be hostile.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

_ELF_MAGIC = b"\x7fELF"
_PT_NOTE = 4
_NT_GNU_BUILD_ID = 3


def note_segments(path: Path, *, max_size: int) -> Iterator[bytes]:
    """The PT_NOTE segments of a 64-bit little-endian ELF file, each at most ``max_size``
    bytes (a larger one is skipped: a hostile file must not make us read gigabytes).

    The one program-header walk: vmcores (registers) and vmlinux files (build id) both use
    it. Nothing for a file that is not ELF64; OSError and struct.error reach the caller.
    """
    with path.open("rb") as f:
        ehdr = f.read(64)
        if ehdr[:4] != _ELF_MAGIC or ehdr[4] != 2:  # ELFCLASS64 only
            return
        phoff, = struct.unpack_from("<Q", ehdr, 32)
        phentsize, phnum = struct.unpack_from("<HH", ehdr, 54)
        f.seek(phoff)
        phdrs = f.read(phentsize * phnum)
        for i in range(phnum):
            p_type, _flags, p_offset, _va, _pa, p_filesz = struct.unpack_from(
                "<IIQQQQ", phdrs, i * phentsize
            )
            if p_type != _PT_NOTE or p_filesz > max_size:
                continue
            f.seek(p_offset)
            yield f.read(p_filesz)


def iter_notes(data: bytes) -> Iterator[tuple[bytes, int, bytes]]:
    """(name, type, descriptor) of each ELF note in a PT_NOTE segment's bytes."""
    pos = 0
    while pos + 12 <= len(data):
        namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
        pos += 12
        name = data[pos : pos + namesz].rstrip(b"\0")
        pos += (namesz + 3) & ~3
        desc = data[pos : pos + descsz]
        pos += (descsz + 3) & ~3
        yield name, ntype, desc


def elf_build_id(path: Path) -> str | None:
    """The GNU build id of an ELF file (from its note segments), or None."""
    try:
        for data in note_segments(path, max_size=1 << 20):
            for name, ntype, desc in iter_notes(data):
                if ntype == _NT_GNU_BUILD_ID and name == b"GNU":
                    return desc.hex()
    except (OSError, struct.error):
        return None
    return None

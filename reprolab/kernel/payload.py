"""The vmlinux inside a bzImage: its compressed payload, unpacked without running it.

A bzImage is setup code, a decompressor and the kernel's own stripped vmlinux compressed
(``arch/x86/boot/compressed``: ``objcopy -S vmlinux``, relocations appended, the size in its
last four bytes). The setup header says exactly where that payload is (boot protocol 2.08+:
``payload_offset``, ``payload_length``), so no magic scanning (``extract-vmlinux``) is
needed, and what comes out is by construction the build the bzImage boots: the stock kernel
gets a PVH-bootable vmlinux on a host without its 600 MB -dbg package.

Only the compressions Python reads (xz, Debian's and tinyconfig's; gzip, the Kconfig
default; legacy lzma) are unpacked; any other answers why not and the caller boots the
bzImage. The bzImage may be a user's build, so the output is bounded by the size the
payload announces and by :data:`MAX_VMLINUX`.
"""

from __future__ import annotations

import lzma
import struct
import zlib
from pathlib import Path
from typing import Protocol

#: No x86 vmlinux comes near this; a payload announcing more is not a kernel.
MAX_VMLINUX = 1 << 30
_CHUNK = 1 << 22


class _Decompressor(Protocol):
    @property
    def eof(self) -> bool: ...

    def decompress(self, data: bytes, max_length: int = ..., /) -> bytes: ...


def _decompressor(magic: bytes) -> tuple[str, _Decompressor] | None:
    if magic.startswith(b"\xfd7zXZ\x00"):
        return "xz", lzma.LZMADecompressor(lzma.FORMAT_XZ)
    if magic.startswith(b"\x1f\x8b"):
        return "gzip", zlib.decompressobj(wbits=31)
    if magic.startswith(b"\x5d\x00\x00"):
        return "lzma", lzma.LZMADecompressor(lzma.FORMAT_ALONE)
    return None


def payload_span(image: Path) -> tuple[int, int] | str:
    """(offset, length) of the compressed payload in ``image``, or why there is none."""
    try:
        with image.open("rb") as f:
            head = f.read(0x250)
            size = f.seek(0, 2)
    except OSError as exc:
        return f"cannot read {image}: {exc.strerror}"
    if len(head) < 0x250 or head[0x202:0x206] != b"HdrS":
        return f"{image} has no x86 boot setup header"
    version, = struct.unpack_from("<H", head, 0x206)
    if version < 0x208:
        return f"{image} uses boot protocol {version >> 8}.{version & 0xff} (no payload field)"
    setup_sects = head[0x1F1] or 4
    offset, length = struct.unpack_from("<II", head, 0x248)
    start = (setup_sects + 1) * 512 + offset
    if length < 8 or start + length > size:
        return f"{image}'s payload field points outside the file"
    return start, length


def unpack_vmlinux(image: Path, out: Path) -> str | None:
    """Write the vmlinux inside ``image`` to ``out``; None when done, else why not."""
    span = payload_span(image)
    if isinstance(span, str):
        return span
    start, length = span
    with image.open("rb") as f:
        f.seek(start)
        data = f.read(length)
    announced, = struct.unpack_from("<I", data, length - 4)
    found = _decompressor(data[:6])
    if found is None:
        return f"{image}'s payload is in a compression reprolab does not unpack " \
               f"(magic {data[:4].hex()})"
    kind, dec = found
    if announced > MAX_VMLINUX:
        return f"{image}'s payload announces {announced} bytes: not a kernel"
    written = 0
    try:
        with out.open("wb") as fh:
            pending = data
            while not dec.eof:
                chunk = dec.decompress(pending, _CHUNK)
                pending = _left_over(dec)
                written += len(chunk)
                if written > announced:
                    return f"{image}'s {kind} payload unpacks past the {announced} bytes " \
                           "it announces"
                fh.write(chunk)
                if not chunk and not pending:
                    break
    except (lzma.LZMAError, zlib.error, EOFError) as exc:
        return f"{image}'s {kind} payload does not unpack: {exc}"
    if written != announced:
        return f"{image}'s {kind} payload unpacked to {written} bytes, not the {announced} " \
               "it announces"
    return None


def _left_over(dec: _Decompressor) -> bytes:
    """Input the decompressor holds back for the next call: zlib hands it back; lzma keeps
    it inside and wants empty input until it needs more."""
    tail: bytes = getattr(dec, "unconsumed_tail", b"")
    return tail

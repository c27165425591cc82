"""A stopped local guest's dump read straight from its QEMU process, not written by QEMU.

QEMU 7.2 writes ``kdump-zlib`` dumps in one thread, compressing every nonzero page: 0.8 CPU
seconds for a 512 MiB guest on this machine, the largest single cost of a snapshot-restored
attempt (bench/attempt_cpu.py), though most of those pages are the same in every dump of a
kernel. Here the guest's RAM is read from the QEMU process (``/proc/PID/pagemap`` says which
pages were ever written; pages never written or mapped to the zero page are skipped
unread), and :func:`reprolab.triage.kdumpwrite.write_kdump` writes the same file format,
compressing only pages that changed since the last dump this process wrote.

The CPU state and VMCOREINFO still come from QEMU: libvirt's own ELF dump is started into a
FIFO and read only as far as its notes (what QEMU's kdump would carry) and the first megabyte
of memory, which must equal what is read here at the same addresses before anything is
written (a wrong mapping is refused, never dumped); then the FIFO is closed and that dump
job fails on the broken pipe, about 20 ms after it started. (QEMU's one-page dump asked for
through libvirt's monitor passthrough would be tidier, but libvirtd 9.0 dies of a segfault
on the DUMP_COMPLETED event of a dump it did not start: seen here.)

Only for what this can read exactly: a guest of this host, stopped (crashed or paused, so
its memory cannot change while it is read), whose RAM is one block below 2.75 GiB (guest
physical address = offset in the block on the pc and q35 machines). Anything else raises
:class:`LiveDumpUnavailable` and the caller takes libvirt's dump.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt

from reprolab.triage.kdumpwrite import PageCache, Written, write_kdump
from reprolab.virt.localqemu import qemu_pid

PAGE = 4096
#: Above this much RAM the q35 machine splits it around the PCI hole: no longer one block.
MAX_RAM = 0xB0000000
_PRESENT = 1 << 63
_SWAPPED = 1 << 62
_PFN_MASK = (1 << 55) - 1


class LiveDumpUnavailable(Exception):
    """This guest cannot be dumped from its process; libvirt's dump can still be taken."""


_cache = PageCache()
_zero_frames: tuple[int, int, int] | None = None
HUGE = 2 << 20


def zero_frames() -> tuple[int, int, int]:
    """(the zero page's frame, the huge zero page's first frame, its frame count): the
    frames a read-only fault maps into anonymous memory, so the guest pages on them hold
    zeros (QEMU's RAM is anonymous memory advised for huge pages; a guest page never
    written but read, by QEMU's restore for one, sits on either). Found by faulting both in
    here; a frame of 0 means not found (frame numbers need CAP_SYS_ADMIN). Kept for the
    process's life: once mapped here the huge zero page is held until this process exits,
    so it cannot be freed and its frames handed out as ordinary memory."""
    global _zero_frames
    if _zero_frames is None:
        with mmap.mmap(-1, 2 * HUGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS) as probe:
            start = _address_of(probe)
            aligned = -start % HUGE
            with contextlib.suppress(OSError, AttributeError):
                probe.madvise(mmap.MADV_HUGEPAGE, aligned, HUGE)
            small_at = 0 if aligned else HUGE + PAGE  # outside the advised range
            _ = probe[aligned]
            _ = probe[small_at]
            huge = _frame(start + aligned)
            small = _frame(start + small_at)
        huge_count = HUGE // PAGE if huge and huge != small else 0
        _zero_frames = (small, huge if huge_count else 0, huge_count)
    return _zero_frames


def _frame(address: int) -> int:
    with open("/proc/self/pagemap", "rb") as pagemap:
        pagemap.seek(address // PAGE * 8)
        entry, = struct.unpack("<Q", pagemap.read(8))
    return entry & _PFN_MASK if entry & _PRESENT else 0


def _address_of(mapped: mmap.mmap) -> int:
    import ctypes

    return ctypes.addressof(ctypes.c_char.from_buffer(mapped))


def ram_mapping(pid: int, ram: int) -> int:
    """Host address of the guest's RAM in QEMU: its one anonymous read-write mapping of
    exactly the guest's size (the TCG code buffer, the other large one, is executable)."""
    found = []
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            fields = line.split()
            span, perms, inode = fields[0], fields[1], fields[4]
            start, end = (int(x, 16) for x in span.split("-"))
            if end - start == ram and perms == "rw-p" and inode == "0" and len(fields) == 5:
                found.append(start)
    if len(found) != 1:
        raise LiveDumpUnavailable(f"{len(found)} mappings of {ram} bytes in QEMU {pid}")
    return found[0]


def _written_pages(pid: int, base: int, npages: int) -> list[int]:
    """Indexes of the pages of [base, base + npages pages) that may hold data."""
    small, huge, count = zero_frames()
    with open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        pagemap.seek(base // PAGE * 8)
        raw = pagemap.read(8 * npages)
    if len(raw) != 8 * npages:
        raise LiveDumpUnavailable("short read of QEMU's page map")
    entries = memoryview(raw).cast("Q")
    if not small:  # frame numbers hidden: every present page may hold data
        return [i for i, entry in enumerate(entries) if entry & (_SWAPPED | _PRESENT)]
    return [i for i, entry in enumerate(entries)
            if entry & _SWAPPED or (entry & _PRESENT and (entry & _PFN_MASK) != small
                                    and not 0 <= (entry & _PFN_MASK) - huge < count)]


def _runs(indexes: list[int]) -> Iterator[tuple[int, int]]:
    start = prev = None
    for i in indexes:
        if prev is not None and i == prev + 1:
            prev = i
            continue
        if start is not None and prev is not None:
            yield start, prev - start + 1
        start = prev = i
    if start is not None and prev is not None:
        yield start, prev - start + 1


def _read_pages(pid: int, base: int, indexes: list[int]) -> Iterator[tuple[int, bytes]]:
    zero = bytes(PAGE)
    fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
    try:
        for first, count in _runs(indexes):
            data = os.pread(fd, count * PAGE, base + first * PAGE)
            if len(data) != count * PAGE:
                raise LiveDumpUnavailable(f"short read of QEMU {pid}'s memory")
            view = memoryview(data)
            for k in range(count):
                page = view[k * PAGE : (k + 1) * PAGE]
                if page != zero:
                    yield first + k, bytes(page)
    finally:
        os.close(fd)


#: How much of the start of guest memory QEMU's stream is read for, to check the mapping.
CHECK_BYTES = 1 << 20


def _qemu_head(dom: Any, workdir: Path) -> tuple[bytes, int, int, bytes]:
    """The start of libvirt's ELF dump of ``dom``: (notes, CPU count, guest physical address
    of the first memory bytes, those bytes, up to :data:`CHECK_BYTES`).

    The stream goes through a FIFO read here; once the notes and the first megabyte of
    memory are in, the FIFO is closed and libvirt's dump job fails on the broken pipe (its
    I/O helper dies of SIGPIPE), as it would on a full disk: the guest stays as it was."""
    fifo = Path(tempfile.mkdtemp(prefix="rl-head-", dir=workdir)) / "elf"
    os.mkfifo(fifo, 0o600)
    head: list[bytes] = []
    failure: list[BaseException] = []

    def read() -> None:
        try:
            with fifo.open("rb", buffering=0) as stream:
                head.append(_read_head(stream))
        except (OSError, LiveDumpUnavailable) as exc:
            failure.append(exc)

    reader = threading.Thread(target=read, daemon=True, name="live-dump-head")
    reader.start()
    try:
        dom.coreDumpWithFormat(str(fifo), libvirt.VIR_DOMAIN_CORE_DUMP_FORMAT_RAW,
                               libvirt.VIR_DUMP_MEMORY_ONLY)
    except libvirt.libvirtError as exc:
        if not head:
            failure.append(exc)
    finally:
        with contextlib.suppress(OSError):  # a reader still waiting for a writer
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(5)
        fifo.unlink(missing_ok=True)
        fifo.parent.rmdir()
    if not head:
        raise LiveDumpUnavailable(f"no ELF head from libvirt's dump: {failure[:1]}")
    return _elf_head(head[0])


def _read_head(stream: Any) -> bytes:
    buf = bytearray()

    def upto(n: int) -> None:
        while len(buf) < n:
            chunk = stream.read(n - len(buf))
            if not chunk:
                raise LiveDumpUnavailable("libvirt's ELF dump ended early")
            buf.extend(chunk)

    upto(64)
    if bytes(buf[:4]) != b"\x7fELF":
        raise LiveDumpUnavailable("libvirt's dump is not an ELF stream")
    phoff, = struct.unpack_from("<Q", buf, 32)
    phentsize, phnum = struct.unpack_from("<HH", buf, 54)
    if not 0 < phnum < 4096 or phentsize != 56 or phoff > 1 << 16:
        raise LiveDumpUnavailable("libvirt's ELF dump has odd program headers")
    upto(phoff + phentsize * phnum)
    loads = [struct.unpack_from("<IIQQQQQQ", buf, phoff + i * phentsize)
             for i in range(phnum)]
    first = min((ph for ph in loads if ph[0] == 1), key=lambda ph: ph[2], default=None)
    if first is None:
        raise LiveDumpUnavailable("libvirt's ELF dump has no memory")
    upto(first[2] + min(CHECK_BYTES, first[5]))
    return bytes(buf)


def _elf_head(elf: bytes) -> tuple[bytes, int, int, bytes]:
    phoff, = struct.unpack_from("<Q", elf, 32)
    phentsize, phnum = struct.unpack_from("<HH", elf, 54)
    notes, paddr, memory = b"", -1, b""
    first_off = None
    for i in range(phnum):
        p_type, _fl, off, _va, addr, filesz, _m, _al = struct.unpack_from(
            "<IIQQQQQQ", elf, phoff + i * phentsize)
        if p_type == 4:
            notes = elf[off : off + filesz]
        elif p_type == 1 and (first_off is None or off < first_off):
            first_off, paddr = off, addr
            memory = elf[off : off + filesz]
    cpus = 0
    pos = 0
    while pos + 12 <= len(notes):
        namesz, descsz, n_type = struct.unpack_from("<III", notes, pos)
        name = notes[pos + 12 : pos + 12 + namesz].rstrip(b"\0")
        cpus += name == b"CORE" and n_type == 1
        pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    usable = len(memory) // PAGE * PAGE
    if not cpus or paddr % PAGE or not usable:
        raise LiveDumpUnavailable("libvirt's ELF dump has no CPU notes or no memory")
    return notes, cpus, paddr, memory[:usable]


def take_live_dump(dom: Any, path: Path) -> Written:
    """Write a kdump-zlib dump of the stopped guest ``dom`` to ``path`` from its memory."""
    state, _reason = dom.state()
    if state not in (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_CRASHED):
        raise LiveDumpUnavailable("the guest is not stopped")
    ram = dom.maxMemory() * 1024
    if not 0 < ram <= MAX_RAM or ram % PAGE:
        raise LiveDumpUnavailable(f"{ram} bytes of RAM: not one block below 2.75 GiB")
    pid = qemu_pid(dom.name())
    if pid is None:
        raise LiveDumpUnavailable(f"no QEMU process of {dom.name()} on this host")
    try:
        base = ram_mapping(pid, ram)
        indexes = _written_pages(pid, base, ram // PAGE)
        notes, cpus, at, theirs = _qemu_head(dom, path.parent)
        _check_mapping(pid, base, ram, at, theirs)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return write_kdump(path, notes=notes, nr_cpus=cpus, max_pfn=ram // PAGE,
                           pages=_read_pages(pid, base, indexes), cache=_cache)
    except OSError as exc:
        raise LiveDumpUnavailable(f"cannot read QEMU {pid}: {exc}") from None


def _check_mapping(pid: int, base: int, ram: int, at: int, theirs: bytes) -> None:
    """The memory QEMU's stream starts with must be what this process reads at the same
    guest address, and not all zeros (zeros match any untouched mapping)."""
    if at + len(theirs) > ram or theirs.count(0) == len(theirs):
        raise LiveDumpUnavailable("QEMU's first dumped megabyte cannot check the mapping")
    fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
    try:
        ours = os.pread(fd, len(theirs), base + at)
    finally:
        os.close(fd)
    if ours != theirs:
        raise LiveDumpUnavailable("the memory read from QEMU differs from QEMU's own dump")

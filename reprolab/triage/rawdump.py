"""What a vmcore says without debug info: VMCOREINFO, CPU registers, the printk ring.

A stock distribution kernel rarely has its debug info at hand, yet its dump still carries
a VMCOREINFO note (release, build id, kallsyms and the printk ring's layout) and one
NT_PRSTATUS note per CPU. That is enough to recover the kernel log (and so the panic
message) and each CPU's instruction pointer, named through kallsyms, so the dossier can
still say what crashed and where.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reprolab.errors import UserError
from reprolab.kernel.elf import iter_notes, note_segments
from reprolab.triage import kdump

Reader = Callable[[int, int], bytes]  # (virtual address, size) -> bytes

_ELF_MAGIC = b"\x7fELF"
_NT_PRSTATUS = 1
# x86_64 struct elf_prstatus: pr_pid at 32, pr_reg (27 longs) at 112.
_PRSTATUS_PID = 32
_PRSTATUS_REGS = 112
_X86_64_REGS = (
    "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx",
    "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds",
    "es", "fs", "gs",
)


@dataclass(frozen=True)
class CpuRegs:
    cpu: int
    pid: int
    regs: dict[str, int]

    @property
    def ip(self) -> int:
        return self.regs.get("rip", 0)

    @property
    def sp(self) -> int:
        return self.regs.get("rsp", 0)


_FLAT_SIGNATURE = b"makedumpfile\0"
_FLAT_HEADER_SIZE = 4096


def is_flattened(path: Path) -> bool:
    """QEMU writes kdump-compressed dumps to a pipe in makedumpfile's "flattened" format."""
    try:
        with path.open("rb") as f:
            return f.read(len(_FLAT_SIGNATURE)) == _FLAT_SIGNATURE
    except OSError:
        return False


def unflatten(src: Path, dst: Path) -> None:
    """Rearrange a flattened dump into a plain kdump file (what ``makedumpfile -R`` does).

    The stream is a 4 KiB header, then (offset, size) big-endian records each followed by
    ``size`` bytes to place at ``offset``, ended by offset -1. Holes stay sparse.
    """
    with src.open("rb") as fin, dst.open("wb") as fout:
        fin.seek(_FLAT_HEADER_SIZE)
        while True:
            head = fin.read(16)
            if len(head) < 16:
                raise UserError(f"{src}: flattened dump is truncated (no end marker)")
            offset, size = struct.unpack(">qq", head)
            if offset == -1:
                return
            if not 0 <= offset < 1 << 44 or not 0 <= size <= 1 << 30:
                raise UserError(f"{src}: flattened dump is corrupted at byte {fin.tell() - 16}")
            data = fin.read(size)
            if len(data) != size:
                raise UserError(f"{src}: flattened dump is truncated")
            fout.seek(offset)
            fout.write(data)


class NotAVmcore(UserError):
    """The file handed in is no dump at all (or cannot be read): no fallback can help."""


def check_elf(path: Path) -> None:
    """Refuse early, with a sentence, what is not an ELF core (a kdump-compressed file is
    handled by drgn itself, so only reject files that are neither)."""
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise NotAVmcore(f"cannot read vmcore {path}: {exc.strerror}") from None
    if head[:4] == _ELF_MAGIC or head[:8] in (b"KDUMP   ", b"DISKDUMP") or head.startswith(
            _FLAT_SIGNATURE):
        return
    raise NotAVmcore(f"{path} is not a vmcore (neither an ELF core nor a kdump-compressed file)")


def prstatus_notes(path: Path) -> list[CpuRegs]:
    """Per-CPU registers from the NT_PRSTATUS notes of an ELF core or a (plain) kdump file,
    in CPU order."""
    if kdump.is_kdump(path):
        return _parse_notes(kdump.notes(path), 0)
    out: list[CpuRegs] = []
    try:
        for data in note_segments(path, max_size=64 * 1024 * 1024):
            out.extend(_parse_notes(data, len(out)))
    except (OSError, struct.error):
        return out
    return out


def _parse_notes(data: bytes, first_cpu: int) -> list[CpuRegs]:
    out: list[CpuRegs] = []
    for name, ntype, desc in iter_notes(data):
        if ntype == _NT_PRSTATUS and name == b"CORE" and len(desc) >= _PRSTATUS_REGS + 27 * 8:
            pid, = struct.unpack_from("<i", desc, _PRSTATUS_PID)
            values = struct.unpack_from("<27Q", desc, _PRSTATUS_REGS)
            out.append(CpuRegs(first_cpu + len(out), pid, dict(zip(_X86_64_REGS, values,
                                                                   strict=True))))
    return out


def parse_vmcoreinfo(text: str) -> dict[str, str]:
    info: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            info[key.strip()] = value.strip()
    return info


@dataclass(frozen=True)
class PrintkRecord:
    seq: int
    ts_nsec: int
    caller_id: int
    text: str

    def console_line(self) -> str:
        """The record as the console printed it, so the console parser can read it."""
        secs, nsec = divmod(self.ts_nsec, 1_000_000_000)
        return f"[{secs:5d}.{nsec // 1000:06d}] {self.text}"


class _Layout:
    """VMCOREINFO's SYMBOL/OFFSET/SIZE entries, read as integers."""

    def __init__(self, info: dict[str, str]) -> None:
        self.info = info

    def sym(self, name: str) -> int:
        return int(self._get(f"SYMBOL({name})"), 16)

    def off(self, name: str) -> int:
        return int(self._get(f"OFFSET({name})"))

    def size(self, name: str) -> int:
        return int(self._get(f"SIZE({name})"))

    def _get(self, key: str) -> str:
        if key not in self.info:
            raise KeyError(key)
        return self.info[key]


def _u64(read: Reader, addr: int) -> int:
    return int.from_bytes(read(addr, 8), "little")


def read_printk(read: Reader, info: dict[str, str], limit: int = 100_000) -> list[PrintkRecord]:
    """Records of the lockless printk ring (Linux 5.10+), oldest first.

    Walks descriptors from tail to head as makedumpfile and crash do, keeping committed and
    finalized ones whose id still matches (the ring may have been overwritten meanwhile).
    Raises KeyError when VMCOREINFO lacks the layout (an older kernel).
    """
    lay = _Layout(info)
    rb = _u64(read, lay.sym("prb"))
    desc_ring = rb + lay.off("printk_ringbuffer.desc_ring")
    data_ring = rb + lay.off("printk_ringbuffer.text_data_ring")
    count_bits = int.from_bytes(read(desc_ring + lay.off("prb_desc_ring.count_bits"), 4), "little")
    descs = _u64(read, desc_ring + lay.off("prb_desc_ring.descs"))
    infos = _u64(read, desc_ring + lay.off("prb_desc_ring.infos"))
    counter = lay.off("atomic_long_t.counter")
    head = _u64(read, desc_ring + lay.off("prb_desc_ring.head_id") + counter)
    tail = _u64(read, desc_ring + lay.off("prb_desc_ring.tail_id") + counter)
    size_bits = int.from_bytes(read(data_ring + lay.off("prb_data_ring.size_bits"), 4), "little")
    data = _u64(read, data_ring + lay.off("prb_data_ring.data"))
    if not 0 < count_bits < 32 or not 0 < size_bits < 40:
        raise KeyError("printk ring layout looks corrupted")
    desc_size, info_size = lay.size("prb_desc"), lay.size("printk_info")
    sv_off = lay.off("prb_desc.state_var") + counter
    lpos_off = lay.off("prb_desc.text_blk_lpos")
    begin_off, next_off = lay.off("prb_data_blk_lpos.begin"), lay.off("prb_data_blk_lpos.next")
    seq_off, ts_off = lay.off("printk_info.seq"), lay.off("printk_info.ts_nsec")
    len_off, caller_off = lay.off("printk_info.text_len"), lay.off("printk_info.caller_id")
    count, dsize = 1 << count_bits, 1 << size_bits
    id_mask = (1 << 62) - 1
    records: list[PrintkRecord] = []
    rid = tail
    while len(records) < limit:
        idx = rid & (count - 1)
        desc = descs + idx * desc_size
        state_var = _u64(read, desc + sv_off)
        state = state_var >> 62
        if (state_var & id_mask) == (rid & id_mask) and state in (1, 2):
            begin = _u64(read, desc + lpos_off + begin_off)
            nxt = _u64(read, desc + lpos_off + next_off)
            inf = infos + idx * info_size
            text_len = int.from_bytes(read(inf + len_off, 2), "little")
            if not begin & 1 and text_len:
                start = begin & (dsize - 1)
                if begin // dsize != nxt // dsize:
                    start = 0  # the block wrapped: its data sits at the ring's start
                raw = read(data + start + 8, min(text_len, dsize - start - 8))
                records.append(PrintkRecord(
                    seq=_u64(read, inf + seq_off),
                    ts_nsec=_u64(read, inf + ts_off),
                    caller_id=int.from_bytes(read(inf + caller_off, 4), "little"),
                    text=raw.decode("utf-8", errors="replace"),
                ))
        if (rid & id_mask) == (head & id_mask):
            break
        rid = (rid + 1) & id_mask
    return records


def scan_stack(read: Reader, sp: int, is_text: Callable[[int], bool],
               words: int = 512) -> list[int]:
    """Kernel text addresses found on a stack, top first: a guess, not an unwind.

    Without debug info (and so without ORC data) the stack cannot be unwound; return
    addresses still sit on it, and naming them is what crash's "bt -t" does.
    """
    if not sp:
        return []
    raw = b""
    addr, end = sp, sp + words * 8
    while addr < end:
        chunk = min(end, (addr | 4095) + 1) - addr  # page by page: stop at the first hole
        try:
            raw += read(addr, chunk)
        except Exception:
            break
        addr += chunk
    raw = raw[: len(raw) // 8 * 8]
    return [v for (v,) in struct.iter_unpack("<Q", raw) if is_text(v)]

"""The no-debug-info readers on synthetic dumps: ELF notes and the printk ring layout."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reprolab.errors import UserError
from reprolab.triage import rawdump
from reprolab.triage.vmcore import build_dossier, elf_build_id

# Layout as a Debian 6.1 kernel publishes it in VMCOREINFO.
INFO = rawdump.parse_vmcoreinfo("""OSRELEASE=6.1.0-test
SYMBOL(prb)=10000000
OFFSET(printk_ringbuffer.desc_ring)=0
OFFSET(printk_ringbuffer.text_data_ring)=48
OFFSET(prb_desc_ring.count_bits)=0
OFFSET(prb_desc_ring.descs)=8
OFFSET(prb_desc_ring.infos)=16
OFFSET(prb_desc_ring.head_id)=24
OFFSET(prb_desc_ring.tail_id)=32
SIZE(prb_desc)=24
OFFSET(prb_desc.state_var)=0
OFFSET(prb_desc.text_blk_lpos)=8
OFFSET(prb_data_blk_lpos.begin)=0
OFFSET(prb_data_blk_lpos.next)=8
SIZE(printk_info)=88
OFFSET(printk_info.seq)=0
OFFSET(printk_info.ts_nsec)=8
OFFSET(printk_info.text_len)=16
OFFSET(printk_info.caller_id)=20
OFFSET(prb_data_ring.size_bits)=0
OFFSET(prb_data_ring.data)=8
OFFSET(atomic_long_t.counter)=0
""")
BASE = 0x10000000
RB, DESCS, INFOS, DATA = BASE + 0x100, BASE + 0x200, BASE + 0x400, BASE + 0x800


class Memory:
    def __init__(self) -> None:
        self.buf = bytearray(0x1000)

    def put(self, addr: int, data: bytes) -> None:
        self.buf[addr - BASE : addr - BASE + len(data)] = data

    def read(self, addr: int, size: int) -> bytes:
        if not BASE <= addr <= addr + size <= BASE + len(self.buf):
            raise ValueError(f"fault at {addr:#x}")
        return bytes(self.buf[addr - BASE : addr - BASE + size])


def ring(records: list[tuple[int, int, int, bytes | None]], tail: int, head: int) -> Memory:
    """records: (id, state, begin_lpos, text or None for data-less)."""
    mem = Memory()
    mem.put(BASE, struct.pack("<Q", RB))
    mem.put(RB, struct.pack("<IIQQQQ", 2, 0, DESCS, INFOS, head, tail))
    mem.put(RB + 48, struct.pack("<IIQ", 8, 0, DATA))
    for seq, (rid, state, begin, text) in enumerate(records):
        idx = rid & 3
        length = len(text) if text else 0
        nxt = begin + 8 + length if text else begin
        if text and (begin & 255) + 8 + length > 256:  # wraps: data restarts at 0
            nxt = (begin // 256 + 1) * 256 + 8 + length
        mem.put(DESCS + idx * 24, struct.pack("<QQQ", (state << 62) | rid, begin, nxt))
        mem.put(INFOS + idx * 88, struct.pack("<QQHxxI", seq, 1_500_000_000 * (seq + 1),
                                              length, 7))
        if text:
            start = 0 if nxt // 256 != begin // 256 else begin & 255
            mem.put(DATA + start, struct.pack("<Q", rid) + text)
    return mem


def test_printk_ring_in_order_skipping_reserved_and_dataless() -> None:
    mem = ring([(4, 2, 64, b"first line"), (5, 0, 100, b"reserved"), (6, 2, 1, None),
                (7, 1, 240, b"Kernel panic - not syncing: wrapped")], tail=4, head=7)
    recs = rawdump.read_printk(mem.read, INFO)
    assert [r.text for r in recs] == ["first line", "Kernel panic - not syncing: wrapped"]
    assert recs[0].console_line() == "[    1.500000] first line"


def test_printk_missing_layout_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        rawdump.read_printk(Memory().read, {"OSRELEASE": "2.6.32"})


def test_stack_scan_stops_at_unmapped_memory() -> None:
    mem = Memory()
    mem.put(BASE + 0xFF0, struct.pack("<QQ", 0xFFFFFFFF81000010, 5))
    found = rawdump.scan_stack(mem.read, BASE + 0xFF0, lambda v: v >> 63 == 1, words=512)
    assert found == [0xFFFFFFFF81000010]


def _elf_with_notes(notes: bytes) -> bytes:
    ehdr = bytearray(64)
    ehdr[:5] = b"\x7fELF\x02"
    struct.pack_into("<Q", ehdr, 32, 64)  # e_phoff
    struct.pack_into("<HH", ehdr, 54, 56, 1)  # e_phentsize, e_phnum
    phdr = struct.pack("<IIQQQQQQ", 4, 0, 64 + 56, 0, 0, len(notes), len(notes), 4)
    return bytes(ehdr) + phdr + notes


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _note(name: bytes, ntype: int, desc: bytes) -> bytes:
    name += b"\0"
    return struct.pack("<III", len(name), len(desc), ntype) + _pad(name) + _pad(desc)


def test_prstatus_notes_give_each_cpu_registers(tmp_path: Path) -> None:
    notes = b""
    for cpu in range(2):
        desc = bytearray(336)
        struct.pack_into("<i", desc, 32, cpu + 1)
        regs = [0] * 27
        regs[16], regs[19] = 0xFFFFFFFF81000000 + cpu, 0xFFFFC90000000000 + cpu
        struct.pack_into("<27Q", desc, 112, *regs)
        notes += _note(b"CORE", 1, bytes(desc))
    notes += _note(b"GNU", 3, bytes.fromhex("deadbeef"))
    path = tmp_path / "core"
    path.write_bytes(_elf_with_notes(notes))
    cpus = rawdump.prstatus_notes(path)
    assert [(c.cpu, c.pid, c.ip & 0xF, c.sp & 0xF) for c in cpus] == [(0, 1, 0, 0), (1, 2, 1, 1)]
    assert elf_build_id(path) == "deadbeef"


def test_check_elf_rejects_other_files(tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    with pytest.raises(UserError, match="is not a vmcore"):
        rawdump.check_elf(bad)
    with pytest.raises(UserError, match="cannot read vmcore"):
        rawdump.check_elf(tmp_path / "missing")
    assert rawdump.prstatus_notes(bad) == []


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([b"", b"\x7fELF\x02\x01\x01", b"KDUMP   ", b"DISKDUMP",
                        b"makedumpfile\0" + bytes(4083)]),
       st.binary(max_size=512))
def test_garbage_dumps_give_user_errors(tmp_path_factory: pytest.TempPathFactory, magic: bytes,
                                        body: bytes) -> None:
    path = tmp_path_factory.mktemp("dump") / "vmcore"
    path.write_bytes(magic + body)
    try:
        build_dossier(path, None)
    except UserError as exc:
        assert "\n" not in str(exc)

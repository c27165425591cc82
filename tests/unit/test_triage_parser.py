"""Streaming console detector: any chunking, odd bytes, one event per marker line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reprolab.detect import kinds
from reprolab.detect.parser import MAX_LINE, ConsoleParser, Event

DATA = Path(__file__).resolve().parents[1] / "data" / "console"

SYSRQ = (
    b"[    4.031525] sysrq: Trigger a crash\r\n"
    b"[    4.032776] Kernel panic - not syncing: sysrq triggered crash\r\n"
    b"[    4.032900] CPU: 0 PID: 1 Comm: sh Not tainted 6.1.0-56-amd64 #1 Debian\r\n"
)


def feed_all(data: bytes, sizes: list[int]) -> list[Event]:
    p = ConsoleParser()
    events: list[Event] = []
    pos = 0
    for n in sizes:
        events += p.feed(data[pos : pos + n])
        pos += n
    events += p.feed(data[pos:])
    return events + p.close()


def kinds_of(line: str) -> list[tuple[str, bool]]:
    return [(e.kind, e.fatal) for e in feed_all(line.encode() + b"\n", [])]


def test_sysrq_panic_event_has_offset_and_no_cr() -> None:
    events = feed_all(SYSRQ, [])
    assert [(e.kind, e.fatal) for e in events] == [(kinds.PANIC, True)]
    (ev,) = events
    assert ev.line.endswith("Kernel panic - not syncing: sysrq triggered crash")
    assert "\r" not in ev.line
    assert SYSRQ[ev.offset :].startswith(b"[    4.032776] Kernel panic")


def test_first_boot_decompressor_line_is_not_a_reboot() -> None:
    """x86's decompressor prints "Booting the kernel." on every boot: only after a kernel
    has been running in the log does it mean the machine reset."""
    first_boot = b"Decompressing Linux... Parsing ELF... done.\nBooting the kernel.\n"
    assert feed_all(first_boot, []) == []
    second = first_boot + b"[    0.000000] Linux version 6.12.0\n[  5.1] x\n" + first_boot
    assert [e.kind for e in feed_all(second, [7, 50])] == [kinds.REBOOT]


def test_partial_line_waits_for_newline_then_close_flushes() -> None:
    p = ConsoleParser()
    assert p.feed(b"[ 1.0] Kernel panic - not syn") == []
    assert p.feed(b"cing: boom") == []
    (ev,) = p.close()
    assert ev.kind == kinds.PANIC and ev.offset == 0
    assert p.close() == [] and p.feed(b"BUG: soft lockup\n") == []


@pytest.mark.parametrize(
    ("line", "kind", "fatal"),
    [
        ("[  36.26][ C1] watchdog: Watchdog detected hard LOCKUP on cpu 0", kinds.HARD_LOCKUP,
         True),
        ("[ 9120.22] NMI watchdog: Watchdog detected hard LOCKUP on cpu 50", kinds.HARD_LOCKUP,
         True),
        ("[    4.15] sched: RT throttling activated", kinds.RT_THROTTLING, False),
        ("[   22.0] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [sh:1]", kinds.SOFT_LOCKUP,
         True),
        ("[   23.3] rcu: INFO: rcu_sched detected stalls on CPUs/tasks:", kinds.RCU_STALL, True),
        ("[   10.9] INFO: task init:98 blocked for more than 5 seconds.", kinds.HUNG_TASK, True),
        ("[   50.0] BUG: workqueue lockup - pool cpus=0 node=0 flags=0x0 nice=0 stuck for 31s!",
         kinds.WORKQUEUE_LOCKUP, True),
        ("[    5.0] BUG: spinlock lockup suspected on CPU#0, sh/1", kinds.SPINLOCK_LOCKUP, True),
        ("[    5.0] general protection fault, probably for non-canonical address 0xdead: 0000",
         kinds.GPF, True),
        ("[    5.0] BUG: kernel NULL pointer dereference, address: 0000000000000000",
         kinds.PAGE_FAULT, True),
        ("[    5.0] BUG: KASAN: slab-use-after-free in foo+0x1/0x2", kinds.KASAN, False),
        ("[    5.0] BUG: KFENCE: use-after-free read in foo+0x1/0x2", kinds.KFENCE, False),
        ("[    5.0] UBSAN: array-index-out-of-bounds in net/foo.c:12:3", kinds.UBSAN, False),
        ("[    5.0] WARNING: possible circular locking dependency detected", kinds.LOCKDEP,
         False),
        ("[    5.0] WARNING: CPU: 0 PID: 1 at kernel/foo.c:12 bar+0x1/0x2", kinds.WARNING, False),
        ("[    5.0] kernel BUG at mm/slub.c:123!", kinds.BUG, True),
        ("[    5.0] Oops: general protection fault, probably for non-canonical address",
         kinds.GPF, True),
        ("[    5.0] Oops: 0002 [#1] PREEMPT SMP NOPTI", kinds.OOPS, True),
        ("[    0.9] clocksource: timekeeping watchdog on CPU0: Marking clocksource 'tsc' as "
         "unstable because the skew is too large:", kinds.CLOCKSOURCE_UNSTABLE, False),
        ("[    1.0] Kernel panic - not syncing: VFS: Unable to mount root fs on "
         "unknown-block(0,0)", kinds.BOOT_FAILURE, True),
        ("[   12.5] reboot: Restarting system\nBooting the kernel.", kinds.REBOOT, False),
        ("[   12.5] sd 0:0:0:0: [sda] Stopping disk\nBooting the kernel.", kinds.REBOOT, True),
    ],
)
def test_line_kinds(line: str, kind: str, fatal: bool) -> None:
    assert kinds_of(line) == [(kind, fatal)]


@pytest.mark.parametrize(
    "line",
    [
        "[    0.00] Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org)",
        "[   72.15] WARNING: /etc/ssh/moduli does not exist, using fixed modulus",
        "[  901.96] INFO: lockdep is turned off.",
        "[    2.58] clocksource: Switched to clocksource tsc",
        "INFO: NMI handler (perf_event_nmi_handler) took too long to run: 2.277 msecs",
        "[    1.0] rcu: Hierarchical RCU implementation.",
    ],
)
def test_look_alikes_are_not_events(line: str) -> None:
    assert kinds_of(line) == []


def test_report_trailer_is_not_a_second_event() -> None:
    log = (b"[ 4.03] Kernel panic - not syncing: sysrq triggered crash\n"
           b"[ 4.05] ---[ end Kernel panic - not syncing: sysrq triggered crash ]---\n")
    assert [e.kind for e in feed_all(log, [])] == [kinds.PANIC]


def test_second_boot_banner_is_a_reboot() -> None:
    log = b"[ 0.0] Linux version 6.1.0 (x)\n[ 5.0] hello\n[ 0.0] Linux version 6.1.0 (x)\n"
    assert [(e.kind, e.fatal) for e in feed_all(log, [3, 7])] == [(kinds.REBOOT, True)]


def test_a_reboot_asked_for_is_seen_but_not_a_failure() -> None:
    """kernel_restart() prints the restart line; a panic's or a reset's reboot does not.
    The boot after it is expected (a test body rebooted the guest); one after that with
    no restart line again is a reset."""
    log = (b"[ 0.0] Linux version 6.1.0 (x)\n[ 9.1] reboot: Restarting system\n"
           b"[ 0.0] Linux version 6.1.0 (x)\n[ 4.0] hello\n[ 0.0] Linux version 6.1.0 (x)\n")
    events = feed_all(log, [5, 40])
    assert [(e.kind, e.fatal) for e in events] == [(kinds.REBOOT, False), (kinds.REBOOT, True)]
    from reprolab.detect.report import parse_log

    report = parse_log(log)
    assert report is not None and report.title == "unexpected kernel reboot"
    assert report.start == log.rindex(b"[ 0.0] Linux")  # the reset, not the reboot asked for
    asked = log[: log.index(b"[ 4.0]")]
    assert parse_log(asked) is None


def test_caller_id_gives_cpu_for_interleaved_output() -> None:
    log = (b"[   23.33][    C1] rcu: INFO: rcu_sched detected stalls on CPUs/tasks:\n"
           b"[   23.34][    T7] WARNING: CPU: 3 PID: 7 at kernel/x.c:1 f+0x1/0x2\n")
    events = feed_all(log, [])
    assert [(e.kind, e.caller, e.cpu) for e in events] == [
        (kinds.RCU_STALL, "C1", 1), (kinds.WARNING, "T7", 3)]


def test_flood_without_newline_is_bounded_and_still_detected() -> None:
    p = ConsoleParser()
    events = p.feed(b"x" * (3 * MAX_LINE))
    events += p.feed(b"\nKernel panic - not syncing: late\n")
    assert [e.kind for e in events] == [kinds.PANIC]
    assert events[0].offset == 3 * MAX_LINE + 1
    assert len(p._pending) == 0


def test_binary_garbage_does_not_raise() -> None:
    blob = bytes(range(256)) * 64 + b"\xff\xfeKernel panic - not syncing: \xc3\x28 bad utf8\n"
    events = feed_all(blob, [1, 2, 3, 4096])
    assert [e.kind for e in events] == [kinds.PANIC]


def _fixture_bytes() -> list[bytes]:
    expected = json.loads((DATA / "expected.json").read_text())
    return [(DATA / name).read_bytes() for name in expected if not name.startswith("_")]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=4096), max_size=40), st.integers(0, 5))
def test_chunking_never_changes_events(sizes: list[int], which: int) -> None:
    data = _fixture_bytes()[which % len(_fixture_bytes())]
    assert feed_all(data, sizes) == feed_all(data, [])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_fuzz_never_raises(chunks: list[bytes]) -> None:
    p = ConsoleParser()
    for c in chunks:
        for ev in p.feed(c):
            assert ev.kind in kinds.ALL_KINDS
    p.close()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([
    b"Kernel panic - not syncing: x", b"BUG: soft lockup - CPU#1 stuck", b"\r", b"\n", b"\x00",
    b"WARNING:", b"INFO: task a:1 blocked for more than 1 seconds.", b"[ 1.0][ C1] ", b"\xff",
    b"Watchdog detected hard LOCKUP on cpu 1", b"Linux version 6", b"Call Trace:\n",
]), max_size=60))
def test_fuzz_marker_soup_never_raises(parts: list[bytes]) -> None:
    data = b"".join(parts)
    assert feed_all(data, [5] * (len(data) // 5)) == feed_all(data, [])

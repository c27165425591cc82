"""Logs from real machines: firmware noise, syslog/journal/dmesg -T shapes, old kernels, crash.

The fixtures under tests/data/field are real public logs (README.md there names each source);
the shape tests take one real report and render it the ways a field log arrives, so what is
checked is the normalisation, not one file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reprolab.detect import kinds
from reprolab.detect.parser import ConsoleParser
from reprolab.detect.report import crash_bt, parse_log

DATA = Path(__file__).resolve().parents[1] / "data"
FIELD = DATA / "field"
EXPECTED = {k: v for k, v in json.loads((FIELD / "expected.json").read_text()).items()
            if not k.startswith("_")}
EL7 = FIELD / "el7-3.10-hard-lockup-cpu50-with-crash-bt.log"


def events(data: bytes) -> list[tuple[str, bool]]:
    p = ConsoleParser()
    return [(e.kind, e.fatal) for e in p.feed(data) + p.close()]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_field_logs(name: str) -> None:
    want = EXPECTED[name]
    rep = parse_log((FIELD / name).read_bytes())
    if want is None:
        assert rep is None
        assert events((FIELD / name).read_bytes()) == []
        return
    assert rep is not None
    got = {"title": rep.title, "kind": rep.kind, "stuck_in": rep.stuck_in,
           "fatal_kind": rep.fatal_kind}
    assert got == {k: want[k] for k in got}
    if "cpu" in want:
        assert rep.cpu == want["cpu"]
    for frame in want.get("frames_include", ()):
        assert frame in rep.frames


def test_el7_field_report_names_the_exception_rip() -> None:
    """Issue 12/13's field report: the console's NMI stack shows tg_unthrottle_up only as a
    "?" frame; crash's bt of cpu 50 has it as the exception RIP."""
    rep = parse_log(EL7.read_bytes())
    assert rep is not None
    assert (rep.title, rep.kind, rep.frame) == (
        "BUG: hard lockup in tg_unthrottle_up", kinds.HARD_LOCKUP, "tg_unthrottle_up")
    assert rep.signature.key == "hard-lockup:tg_unthrottle_up"
    assert not rep.corrupted
    (bt,) = crash_bt(EL7.read_text().splitlines())
    assert bt.cpu == 50 and bt.exception_rip == "tg_unthrottle_up"
    assert bt.frames[12:14] == ("tg_unthrottle_up", "walk_tg_tree_from")
    # Without crash's bt the console alone names the first reliable frame, as before.
    console_only = EL7.read_text().split("crash> bt")[0]
    rep2 = parse_log(console_only)
    assert rep2 is not None and rep2.title == "BUG: hard lockup in walk_tg_tree_from"


def _shapes() -> dict[str, str]:
    """The el7 report as the ways field logs arrive."""
    text = EL7.read_text()
    console, bt = text.split("crash> bt")
    lines = console.rstrip("\n").split("\n")
    bare = [ln.split("] ", 1)[1] if ln.startswith("[") else ln for ln in lines]
    stamps = [ln[1:ln.index("]")] for ln in lines if ln.startswith("[")]
    return {
        "no-timestamps": "\n".join(bare) + "\ncrash> bt" + bt,
        "syslog": "\n".join(f"Nov 30 12:00:01 node17 kernel: {ln}" for ln in lines)
        + "\nNov 30 12:00:02 node17 systemd[1]: WARNING: unit failed at x.c:3 foo+0x1\n"
        + "crash> bt" + bt,
        "journal-iso": "\n".join(f"2026-11-30T12:00:01.123456+0000 node17 kernel: {ln}"
                                 for ln in bare) + "\ncrash> bt" + bt,
        "openwrt-logread": "\n".join(f"Thu Sep  1 19:19:48 2022 kern.warn kernel: {ln}"
                                     for ln in lines) + "\ncrash> bt" + bt,
        "dmesg-T": "\n".join(f"[Mon Nov 30 12:00:{i % 60:02d} 2026] {ln}"
                             for i, ln in enumerate(bare)) + "\ncrash> bt" + bt,
        "kmsg": "\n".join(f"4,{i},{int(float(s) * 1e6)},-;{ln}"
                          for i, (s, ln) in enumerate(zip(stamps, bare, strict=True)))
        + "\ncrash> bt" + bt,
        "caller-ids": "\n".join(ln.replace("] ", "][    C50] ", 1) for ln in lines)
        + "\ncrash> bt" + bt,
        "crlf": (console + "crash> bt" + bt).replace("\n", "\r\n"),
        "ipmi-sol-garbage": "\x1b[0m\x1b[2J\x00\x00" + "\n".join(
            ("\x1b[1;37m" if i % 3 == 0 else "") + ln + ("\x00" if i % 5 == 0 else "")
            + ("\r\x00" if i % 2 else "\r")
            for i, ln in enumerate(lines)) + "\ncrash> bt" + bt,
        "pasted-indented": "\n".join("    " + ln for ln in lines) + "\ncrash> bt" + bt,
        "crash-log-m": "crash> log -m\n" + "\n".join(f"<4>{ln}" for ln in lines)
        + "\ncrash> bt" + bt,
    }


@pytest.mark.parametrize("shape", sorted(_shapes()))
def test_field_report_in_every_real_machine_shape(shape: str) -> None:
    data = _shapes()[shape].encode()
    assert (kinds.HARD_LOCKUP, True) in events(data)
    rep = parse_log(data)
    assert rep is not None
    assert (rep.title, rep.kind, rep.stuck_in) == (
        "BUG: hard lockup in tg_unthrottle_up", kinds.HARD_LOCKUP, "tg_unthrottle_up")


FIRMWARE_NOISE = [
    # coreboot
    "coreboot-4.12 Tue Jan 5 10:00:00 UTC 2021 ramstage starting...",
    "WARNING: RO_VPD is uninitialized or empty.",
    "WARNING: RW_VPD is uninitialized or empty.",
    # U-Boot
    "U-Boot 2021.07 (Oct 05 2021 - 12:00:00 +0000)",
    "WARNING: Caches not enabled",
    "BUG at drivers/core/device.c:100/device_bind_common()!",
    # Arm Trusted Firmware
    "NOTICE:  BL31: v2.5(release):v2.5",
    "INFO:    BL31: Initializing runtime services",
    "INFO:    rk3399 bl31_setup",
    "WARNING: BL31: cortex_a53: CPU workaround for 855873 was missing!",
    "INFO:    BL31: Preparing for EL3 exit to normal world",
    # GRUB / UEFI / init
    "error: no such device: 5b2e.",
    "WARNING: no console will be available to OS",
    "EFI stub: WARNING: Could not determine firmware memory map",
    "Nov 30 12:00:01 node17 systemd[1]: WARNING: something in user space at foo.c:12 bar+0x1",
    "Nov 30 12:00:01 node17 mdadm[321]: INFO: task foo blocked for more than 1 seconds",
    "Decompressing Linux... Parsing ELF... done.",
    "Booting the kernel.",
]
BOOT = [
    "[    0.000000] Linux version 6.1.0-57-amd64 (debian-kernel@lists.debian.org)",
    "[    0.000000] Command line: console=ttyS0",
    "[    1.234567] Run /init as init process",
]
PANIC = [
    "[    2.736699] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100",
    "[    2.745841] CPU: 0 PID: 1 Comm: init Not tainted 6.1.0-57-amd64 #1 Debian",
]


def test_firmware_bootloader_and_user_space_words_are_not_kernel_reports() -> None:
    clean = "\n".join(FIRMWARE_NOISE + BOOT) + "\n"
    assert parse_log(clean) is None
    assert events(clean.encode()) == []
    rep = parse_log("\n".join(FIRMWARE_NOISE + BOOT + PANIC) + "\n")
    assert rep is not None
    assert (rep.title, rep.kind) == ("kernel panic: Attempted to kill init!", kinds.PANIC)
    assert events("\n".join(FIRMWARE_NOISE + BOOT + PANIC).encode() + b"\n") == [
        (kinds.PANIC, True)]


@pytest.mark.parametrize(
    ("line", "title"),
    [
        # 2.6/3.x wording, no printk timestamp (a serial console with printk.time=0).
        ("WARNING: at kernel/sched/fair.c:1234 update_cfs_shares+0x50/0x60()",
         "WARNING in update_cfs_shares"),
        ("WARNING: CPU: 3 PID: 1 at kernel/sched/fair.c:1234 update_cfs_shares+0x50/0x60",
         "WARNING in update_cfs_shares"),
        ("INFO: task kworker/1:1:123 blocked for more than 120 seconds.",
         "INFO: task hung in update_cfs_shares"),
        ("NMI watchdog: BUG: soft lockup - CPU#3 stuck for 22s! [kworker/3:1:99]",
         "BUG: soft lockup in update_cfs_shares"),
    ],
)
def test_kernel_shaped_lines_without_timestamps_are_reports(line: str, title: str) -> None:
    log = "\n".join([
        line,
        "RIP: 0010:[<ffffffff810c9658>]  [<ffffffff810c9658>] update_cfs_shares+0x18/0x50",
        "Call Trace:",
        " [<ffffffff810c9658>] update_cfs_shares+0x18/0x50",
        " [<ffffffff810c9700>] ? stale_word+0x10/0x20",
        " [<ffffffff810ca000>] process_one_work+0x10/0x20",
    ])
    rep = parse_log(log)
    assert rep is not None and rep.title == title


def test_questionable_frames_are_skipped_without_timestamps_too() -> None:
    log = ("BUG: soft lockup - CPU#0 stuck for 22s! [sh:1]\nRIP: 0010:spin_here+0x6/0x8\n"
           "Call Trace:\n ? stale_func+0x10/0x20\n spin_here+0x6/0x8\n caller_fn+0x1/0x2\n"
           " vfs_write+0x1/0x2\n")
    rep = parse_log(log)
    assert rep is not None
    assert rep.title == "BUG: soft lockup in caller_fn"
    assert "stale_func" not in rep.frames and rep.stuck_in == "spin_here"


def test_arm_frames_of_every_era() -> None:
    new_arm = ("[   10.0] Internal error: Oops: 5 [#1] ARM\n"
               "[   10.0] PC is at bad_func+0x10/0x20\n"
               "[   10.0] Backtrace:\n"
               "[   10.0]  bad_func from caller_func+0x10/0x14\n"
               "[   10.0]  caller_func from ret_fast_syscall+0x0/0x48\n")
    rep = parse_log(new_arm)
    assert rep is not None
    assert rep.title == "Internal error in bad_func"
    assert {"bad_func", "caller_func"} <= set(rep.frames)


def test_line_cut_by_a_reboot_is_two_lines() -> None:
    log = ("[   50.1] Kernel panic - not syncing: Fatal hardware err"
           "[    0.000000] Linux version 6.1.0-57-amd64 (x)\n[    0.1] ok\n")
    rep = parse_log(log)
    assert rep is not None and rep.title == "kernel panic: Fatal hardware err"


SLAB_DOUBLE_FREE = """\
[   12.000000][   T77] lkdtm: Performing direct entry SLAB_FREE_DOUBLE
[   12.000100][   T77] ------------[ cut here ]------------
[   12.000200][   T77] WARNING: CPU: 1 PID: 77 at mm/slub.c:4655 free_to_partial_list+0x1a0/0x1f0
[   12.000300][   T77] Modules linked in:
[   12.000400][   T77] CPU: 1 UID: 0 PID: 77 Comm: sh Not tainted 6.12.117 #1
[   12.000500][   T77] RIP: 0010:free_to_partial_list+0x1a0/0x1f0
[   12.000600][   T77] Call Trace:
[   12.000700][   T77]  <TASK>
[   12.000800][   T77]  kfree+0x120/0x200
[   12.000900][   T77]  lkdtm_SLAB_FREE_DOUBLE+0x40/0x60
[   12.001000][   T77]  lkdtm_do_action+0x18/0x1b
[   12.001100][   T77]  direct_entry+0xa9/0xc8
[   12.001200][   T77]  full_proxy_write+0x42/0x5d
[   12.001300][   T77]  vfs_write+0x91/0x175
[   12.001400][   T77]  </TASK>
[   12.001500][   T77] ---[ end trace 0000000000000000 ]---
[   12.001900][   T77] kernel BUG at mm/slub.c:432!
[   12.002000][   T77] Oops: invalid opcode: 0000 [#1] PREEMPT SMP
[   12.002100][   T77] CPU: 1 UID: 0 PID: 77 Comm: sh Tainted: G        W          6.12.117 #1
[   12.002200][   T77] RIP: 0010:__slab_free+0x2f0/0x300
[   12.002300][   T77] Call Trace:
[   12.002400][   T77]  <TASK>
[   12.002500][   T77]  kmem_cache_free+0x1d0/0x200
[   12.002600][   T77]  lkdtm_SLAB_FREE_DOUBLE+0x50/0x60
[   12.002700][   T77]  lkdtm_do_action+0x18/0x1b
[   12.002800][   T77]  </TASK>
[   12.003000][   T77] Kernel panic - not syncing: Fatal exception
"""


def test_warning_then_fatal_oops_carries_both_titles() -> None:
    rep = parse_log(SLAB_DOUBLE_FREE)
    assert rep is not None
    assert (rep.title, rep.kind, rep.fatal) == (
        "WARNING in free_to_partial_list", kinds.WARNING, False)
    assert (rep.fatal_title, rep.fatal_kind) == (
        "kernel BUG in lkdtm_SLAB_FREE_DOUBLE", kinds.BUG)
    js = rep.to_json()
    assert (js["fatal_title"], js["fatal_kind"]) == ("kernel BUG in lkdtm_SLAB_FREE_DOUBLE", "bug")


def test_stuck_in_names_where_the_cpu_spun() -> None:
    """Issue 18: syzkaller titles a stall after the entry point's caller; the report also
    says where the CPU was."""
    rep = parse_log((DATA / "console" / "reprolab-6.12-lkdtm-softlockup.log").read_bytes(),
                    questionable_frames=True)
    assert rep is not None
    assert rep.title == "BUG: soft lockup in full_proxy_write"
    assert rep.stuck_in == "lkdtm_SOFTLOCKUP"
    rcu = parse_log(
        (DATA / "console" / "synthetic-rcu-self-detected-stall-6.12.log").read_bytes(),
        questionable_frames=True)
    assert rcu is not None and rcu.stuck_in == "lkdtm_REFCOUNT_TIMING"
    hard = parse_log((DATA / "console" / "hardlockup-buddy-6.12.log").read_bytes())
    assert hard is not None and hard.stuck_in == "lkdtm_HARDLOCKUP"
    panic = parse_log((DATA / "console" / "debian-6.1-sysrq-crash.log").read_bytes())
    assert panic is not None and panic.stuck_in is None


def test_attempt_result_carries_stuck_in_and_fatal_report(tmp_path: Path) -> None:
    from reprolab.run.attempt import AttemptResult
    from reprolab.run.verdict import Outcome

    rep = parse_log(SLAB_DOUBLE_FREE)
    hard = parse_log(EL7.read_bytes())
    assert rep is not None and hard is not None
    res = AttemptResult("case", 0, Outcome.REPRODUCED, tmp_path, "tcg", title=hard.title,
                        stuck_in=hard.stuck_in, fatal_title=rep.fatal_title,
                        fatal_kind=rep.fatal_kind)
    js = json.loads((res.write()).read_text())
    assert (js["stuck_in"], js["fatal_title"], js["fatal_kind"]) == (
        "tg_unthrottle_up", "kernel BUG in lkdtm_SLAB_FREE_DOUBLE", "bug")

"""Whole-log reports: saved real logs, title conventions, JSON shape, odd input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reprolab.detect.report import parse_log
from reprolab.detect.signature import Signature
from reprolab.detect.titles import sanitize_title
from reprolab.errors import UserError

DATA = Path(__file__).resolve().parents[1] / "data" / "console"
EXPECTED = {k: v for k, v in json.loads((DATA / "expected.json").read_text()).items()
            if not k.startswith("_")}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_saved_console_logs(name: str) -> None:
    want = EXPECTED[name]
    rep = parse_log((DATA / name).read_bytes(),
                    questionable_frames=want.get("questionable_frames", False))
    assert rep is not None
    got = {"title": rep.title, "kind": rep.kind, "frame": rep.frame,
           "signature": rep.signature.key, "corrupted": rep.corrupted}
    assert got == {k: want[k] for k in got}


def test_sysrq_crash_as_debian_61_prints_it() -> None:
    log = (
        "sysrq: Trigger a crash\nKernel panic - not syncing: sysrq triggered crash\n"
        "CPU: 0 PID: 1 Comm: sh Not tainted 6.1.0-56-amd64 #1 Debian 6.1.140-1\nCall Trace:\n"
        " <TASK>\n dump_stack_lvl+0x44/0x5c\n panic+0x118/0x2ed\n sysrq_handle_crash+0x16/0x20\n"
    )
    rep = parse_log(log)
    assert rep is not None
    assert rep.title == "kernel panic: sysrq triggered crash"
    assert (rep.kind, rep.cpu, rep.task) == ("panic", 0, "sh:1")
    assert "sysrq_handle_crash" in rep.frames


def test_to_json_leading_keys_in_order() -> None:
    rep = parse_log((DATA / "debian-6.1-hung-task.log").read_bytes())
    assert rep is not None
    keys = list(rep.to_json())
    assert keys[:7] == ["crashed", "title", "alt_titles", "kind", "frame", "corrupted", "report"]
    assert rep.to_json()["crashed"] is True
    assert "INFO: task init:98 blocked for more than 5 seconds." in rep.report


def test_hard_lockup_without_rip_has_no_frame() -> None:
    rep = parse_log("watchdog: Watchdog detected hard LOCKUP on cpu 2\nModules linked in:\n")
    assert rep is not None
    assert (rep.title, rep.frame, rep.cpu, rep.corrupted) == ("BUG: hard lockup", None, 2, True)


def test_rcu_stall_followed_by_hard_lockup_is_titled_as_the_lockup() -> None:
    rep = parse_log((DATA / "hardlockup-buddy-6.12.log").read_bytes())
    assert rep is not None and rep.title == "BUG: hard lockup in lkdtm_HARDLOCKUP"


@pytest.mark.parametrize(
    ("raw", "title"),
    [
        ("kernel panic: Out of memory on CPU#3 pid 1234 at 0xffff88800abc1234",
         "kernel panic: Out of memory on CPU pid NUM at ADDR"),
        ("WARNING in foo+0x12/0x40 at fs/x.c:123", "WARNING in foo at fs/x.c:LINE"),
        ("a\tb   c" + "x" * 200, "a b c" + "x" * 113),  # cut counts input characters
    ],
)
def test_sanitize_title_placeholders_and_cut(raw: str, title: str) -> None:
    assert sanitize_title(raw) == title


def test_second_boot_without_a_crash_is_an_unexpected_reboot() -> None:
    boot = "[    0.000000] Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org)\n"
    rep = parse_log(boot + "[    5.1] i6300ESB timer: heartbeat=10 sec\n" + boot)
    assert rep is not None
    assert (rep.title, rep.kind, rep.signature.key) == ("unexpected kernel reboot", "reboot",
                                                        "reboot")
    assert parse_log(boot) is None


def test_no_crash_is_none() -> None:
    assert parse_log(b"") is None
    assert parse_log("[ 72.1] WARNING: /etc/ssh/moduli does not exist, using fixed modulus") is None


def test_guess_unwinder_logs_need_questionable_frames() -> None:
    data = (DATA / "reprolab-6.12-lkdtm-softlockup.log").read_bytes()
    plain = parse_log(data)
    assert plain is not None and plain.title == "BUG: soft lockup in corrupted"
    assert plain.signature.key == "soft-lockup"
    guessed = parse_log(data, questionable_frames=True)
    assert guessed is not None and guessed.title == "BUG: soft lockup in full_proxy_write"


def test_corrupted_frame_gives_a_frameless_signature() -> None:
    rep = parse_log("[ 1.0] INFO: rcu_sched self-detected stall on CPU\n[ 1.1] nothing else\n")
    assert rep is not None and rep.title == "INFO: rcu detected stall in corrupted"
    assert rep.signature.key == "rcu-stall"


def test_signature_round_trip_and_matching() -> None:
    sig = Signature.parse("hard-lockup:tg_unthrottle_up")
    assert sig == Signature("hard-lockup", "tg_unthrottle_up") and sig.key == str(sig)
    assert Signature.parse("panic") == Signature("panic", None)
    assert Signature("hard-lockup").matches(sig) and not Signature("soft-lockup").matches(sig)
    assert not Signature("hard-lockup", "x").matches(sig)
    for bad in ("", ":x", "kind:"):
        with pytest.raises(UserError):
            Signature.parse(bad)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_fuzz_parse_log_never_raises_on_bytes(data: bytes) -> None:
    parse_log(data)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([
    "BUG: KASAN: use-after-free in f+0x1/0x2\n", "Call Trace:\n", " f+0x1/0x2\n", "? g+0x1/0x2\n",
    "WARNING: CPU: 0 PID: 1 at a.c:1 f+0x1/0x2\n", "RIP: 0010:h+0x1/0x2\n", "Read of size 8\n",
    "INFO: rcu_sched self-detected stall on CPU\n", "Kernel panic - not syncing: x\n",
    "[ 1.0][ T1] ", "[ 2.0][ C1] ", "Sending NMI from CPU 0 to CPUs 1:\n", "\x00\xff",
    "Watchdog detected hard LOCKUP on cpu 1\n", "BUG: soft lockup - CPU#0 stuck\n", "\n",
    "INFO: task a:1 blocked for more than 1 seconds.\n", "apic_timer_interrupt+0x1/0x2\n",
]), max_size=80))
def test_fuzz_marker_soup_gives_a_title(parts: list[str]) -> None:
    rep = parse_log("".join(parts))
    if rep is not None:
        assert rep.title and len(rep.title) <= 120
        json.dumps(rep.to_json())

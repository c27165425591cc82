"""in_stack/frame are found in the vmcore's stacks too, and the result says where."""


from reprolab.run.verdict import Expectation, Observed, Outcome, classify
from reprolab.triage.stacks import VMCORE_LOG, Stack, frame_name, guilty_frame, vmcore_stacks

#: The shape write_dossier gives a silent all-CPU wedge with debug info (drgn-unwound).
DOSSIER = {
    "debug_info": True,
    "cpus": [
        {"cpu": 0, "pid": 0, "stack_reliable": True, "stack": [
            "nmi_panic_self_stop+0x20/0x30 arch/x86/kernel/nmi.c:10",
            "default_do_nmi+0x90/0x120 arch/x86/kernel/nmi.c:400",
            "exc_nmi+0xd0/0x100", "asm_exc_nmi+0xb0/0x10c",
            "native_queued_spin_lock_slowpath+0x60/0x2a0",
            "_raw_spin_lock_irq+0x20/0x30", "rl_spin_all [inline] rl_spin.c:20",
            "rl_spin_init+0x10/0x20", "do_one_initcall+0x40/0x200"]},
        {"cpu": 1, "pid": 1, "stack_reliable": True,
         "stack": ["panic+0x100/0x2c0", "nmi_panic+0x30/0x40", "lkdtm_SPINLOCKUP+0x20/0x30",
                   "0xffffffff81000000"]},
    ],
    "d_state_tasks": [{"pid": 42, "stack": ["__schedule+0x1/0x2", "schedule+0x1/0x2",
                                            "tg_unthrottle_up+0x1/0x2"]}],
}


def test_frames_are_read_from_drgn_lines() -> None:
    assert frame_name("rl_spin_all [inline] rl_spin.c:20") is None  # never a frame of its own
    assert frame_name("panic+0x100/0x2c0") == "panic"
    assert frame_name("0xffffffff81000000") is None
    stacks = vmcore_stacks(DOSSIER)
    assert [s.where for s in stacks] == ["cpu 0 in vmcore", "cpu 1 in vmcore",
                                         "task 42 in vmcore"]
    assert stacks[0].guilty == "rl_spin_init"
    assert stacks[1].guilty == "lkdtm_SPINLOCKUP"
    assert guilty_frame(("nmi_handle", "panic")) is None


def test_no_debug_info_means_no_vmcore_stacks() -> None:
    # Real dossier of a stock-kernel dump (no -dbg vmlinux): stacks are memory scans.
    raw = {**DOSSIER, "debug_info": False}
    assert vmcore_stacks(raw) == ()


def test_expected_frame_found_in_the_vmcore_when_the_console_has_none() -> None:
    hang = Observed(crashed=True, title="no console output for 30 s", kind="no-output",
                    hung=True, stacks=vmcore_stacks(DOSSIER))
    exp = Expectation.from_mapping({"in_stack": "tg_unthrottle_up"}, where="t")
    assert classify(exp, hang) is Outcome.REPRODUCED
    assert exp.found_in(hang) == "task 42 in vmcore"
    frame = Expectation.from_mapping({"frame": "lkdtm_SPINLOCKUP"}, where="t")
    assert frame.found_in(hang) == "cpu 1 in vmcore"
    # Frame and in_stack must hold in one stack, not one each.
    both = Expectation.from_mapping({"frame": "rl_spin_all", "in_stack": "tg_unthrottle_up"},
                                    where="t")
    assert both.found_in(hang) is None
    assert classify(both, hang) is Outcome.HANG


def test_console_is_named_first() -> None:
    seen = Observed(crashed=True, title="t", kind="panic", frame="f", frames=("f", "g"),
                    stacks=(Stack("cpu 0 in vmcore", ("g",)),))
    assert Expectation.from_mapping({"in_stack": "g"}, where="t").found_in(seen) == "console"
    logged = Observed(crashed=True, title="t", kind="panic", frames=("g",),
                      report_source=VMCORE_LOG)
    assert Expectation.from_mapping({"in_stack": "g"}, where="t").found_in(logged) == VMCORE_LOG

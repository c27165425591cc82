"""What counts as reproduced, and how a test case's marker is validated."""

import pytest

from reprolab.case import CaseSpec
from reprolab.errors import UserError
from reprolab.run.verdict import Expectation, Observed, Outcome, classify

PANIC = Observed(crashed=True, title="kernel panic: sysrq triggered crash", kind="panic",
                 frames=("panic", "sysrq_handle_crash"), events=("panic", "pvpanic"))


def _exp(**kw: object) -> Expectation:
    return Expectation.from_mapping(kw, where="t")


def test_title_is_a_full_regex_match() -> None:
    assert classify(_exp(title="kernel panic: sysrq triggered crash"), PANIC) is Outcome.REPRODUCED
    assert classify(_exp(title="kernel panic: .*"), PANIC) is Outcome.REPRODUCED
    assert classify(_exp(title="kernel panic"), PANIC) is Outcome.OTHER_CRASH


def test_other_crash_is_not_a_hit() -> None:
    assert classify(_exp(kind="hard-lockup"), PANIC) is Outcome.OTHER_CRASH
    assert classify(_exp(in_stack="tg_unthrottle_up"), PANIC) is Outcome.OTHER_CRASH
    assert classify(_exp(in_stack="sysrq_handle_crash"), PANIC) is Outcome.REPRODUCED


def test_no_crash_is_not_reproduced() -> None:
    assert classify(_exp(kind="panic"), Observed(crashed=False)) is Outcome.NOT_REPRODUCED
    warning = Observed(crashed=False, title="sched: RT throttling activated", kind="rt-throttling")
    assert classify(_exp(kind="panic"), warning) is Outcome.NOT_REPRODUCED
    assert classify(_exp(kind="rt-throttling"), warning) is Outcome.REPRODUCED


def test_events_must_come_in_order() -> None:
    seen = Observed(crashed=False, events=("rt-throttling", "watchdog-fire"))
    assert classify(_exp(events=["rt-throttling", "watchdog-fire"]), seen) is Outcome.REPRODUCED
    assert classify(_exp(events=["watchdog-fire", "rt-throttling"]), seen) is not Outcome.REPRODUCED


def test_expectation_errors_name_the_problem() -> None:
    with pytest.raises(UserError, match="unknown expect key 'titel'"):
        _exp(titel="x")
    with pytest.raises(UserError, match="is not a regex"):
        _exp(title="(")
    with pytest.raises(UserError, match="at least one"):
        _exp()


def test_marker_validation() -> None:
    ok = CaseSpec.from_marker("t", {"expect": {"kind": "panic"}, "attempts": 3,
                                    "guest": {"memory": "1G"}})
    assert (ok.attempts, ok.guest.memory_mib, ok.mode) == (3, 1024, "regression")
    for bad, msg in [
        ({"expect": {"kind": "panic"}, "atempts": 3}, "unknown reprolab marker argument 'atempts'"),
        ({"mode": "reproduce"}, "mode='reproduce' needs expect="),
        ({"expect": {"kind": "panic"}, "mode": "explore"}, "for cases without expect"),
        ({"expect": {"kind": "panic"}, "mode": "hunt"}, "mode must be"),
        ({"expect": {"kind": "panic"}, "attempts": 0}, "attempts must be a positive integer"),
        ({"expect": {"kind": "panic"}, "cmdline": ["panic=0"]}, "cmdline must be a mapping"),
    ]:
        with pytest.raises(UserError, match=msg):
            CaseSpec.from_marker("t", bad)


def test_overrides_ignore_unset_options() -> None:
    case = CaseSpec.from_marker("t", {"expect": {"kind": "panic"}, "attempts": 3})
    assert case.with_overrides(attempts=None, mode="reproduce").attempts == 3
    assert case.with_overrides(attempts=5).attempts == 5


def test_dumps_are_compressed_unless_asked_for_raw() -> None:
    case = CaseSpec.from_marker("t", {"expect": {"kind": "panic"}})
    assert case.dump == "kdump-zlib"
    assert case.with_dump(None).dump == "kdump-zlib"
    assert case.with_dump("elf").dump == "elf"
    raw = CaseSpec.from_marker("t", {"expect": {"kind": "panic"}, "dump": "elf"})
    assert raw.dump == "elf"
    # --reprolab-dump picks a format; it never turns dumps on for a case that takes none.
    none = CaseSpec.from_marker("t", {"expect": {"kind": "panic"}, "dump": None})
    assert none.with_dump("elf").dump is None
    with pytest.raises(UserError, match="dump must be 'kdump-zlib', 'elf' or None"):
        CaseSpec.from_marker("t", {"expect": {"kind": "panic"}, "dump": "lzo"})
    with pytest.raises(UserError, match="dump format must be one of kdump-zlib, elf"):
        case.with_dump("snappy")

"""Regression mode can fail: any kernel death or hang fails it, body failures are kept."""

from pathlib import Path

import pytest

from reprolab.case import CaseSpec
from reprolab.errors import Failure, InfraError
from reprolab.pytest_plugin import _judge
from reprolab.run.attempt import AttemptResult
from reprolab.run.record import CaseResult
from reprolab.run.verdict import Expectation, Observed, Outcome, classify

EXPECT = Expectation.from_mapping({"kind": "hard-lockup"}, where="t")


def _case(mode: str) -> CaseSpec:
    return CaseSpec.from_marker("t.py::test_x", {"expect": {"kind": "hard-lockup"},
                                                 "mode": mode})


def _attempt(tmp_path: Path, outcome: Outcome, index: int = 1, **kw: object) -> AttemptResult:
    d = tmp_path / f"attempt-{index:03d}"
    d.mkdir(exist_ok=True)
    return AttemptResult("t.py::test_x", index, outcome, d, "tcg", **kw)  # type: ignore[arg-type]


def _fail_message(result: CaseResult, errors: list[BaseException] | None = None) -> str:
    with pytest.raises(pytest.fail.Exception) as info:
        _judge(result, errors)
    return str(info.value)


def test_silent_hang_is_its_own_outcome() -> None:
    hung = Observed(crashed=True, title="no console output for 30 s", kind="no-output",
                    events=("no-output",), hung=True)
    assert classify(EXPECT, hung) is Outcome.HANG
    # A hang that matches the expectation (here by its event) is still a hit.
    assert classify(Expectation.from_mapping({"events": ["no-output"]}, where="t"),
                    hung) is Outcome.REPRODUCED
    crash = Observed(crashed=True, title="kernel panic: x", kind="panic")
    assert classify(EXPECT, crash) is Outcome.OTHER_CRASH


@pytest.mark.parametrize(("outcome", "kw", "words"), [
    (Outcome.REPRODUCED, {"title": "watchdog: Watchdog detected hard LOCKUP on cpu 1"},
     "regression: reproduced: watchdog: Watchdog detected hard LOCKUP on cpu 1"),
    (Outcome.OTHER_CRASH, {"title": "BUG: stack guard page was hit in f"},
     "regression: other crash: BUG: stack guard page was hit in f"),
    (Outcome.HANG, {"title": "no console output for 30 s", "hang_seconds": 31.4},
     "regression: hang: no progress for 31 s"),
])
def test_regression_fails_on_every_kernel_failure(tmp_path: Path, outcome: Outcome,
                                                  kw: dict[str, object], words: str) -> None:
    result = CaseResult(_case("regression"), (_attempt(tmp_path, outcome, **kw),))
    assert words in _fail_message(result)


def test_regression_passes_only_a_quiet_kernel(tmp_path: Path) -> None:
    result = CaseResult(_case("regression"), (_attempt(tmp_path, Outcome.NOT_REPRODUCED),))
    _judge(result, [])


def test_body_failure_is_reported_with_the_fatal_event(tmp_path: Path) -> None:
    """An assertion that failed after the kernel died is not discarded."""
    attempt = _attempt(tmp_path, Outcome.OTHER_CRASH, title="kernel panic: x",
                       body_error="AssertionError: counter is 3")
    msg = _fail_message(CaseResult(_case("regression"), (attempt,)))
    assert "other crash: kernel panic: x" in msg
    assert "AssertionError: counter is 3" in msg
    assert attempt.to_json()["body_error"] == "AssertionError: counter is 3"


def test_body_failure_without_crash_fails_regression(tmp_path: Path) -> None:
    result = CaseResult(_case("regression"), (_attempt(tmp_path, Outcome.NOT_REPRODUCED),))
    with pytest.raises(AssertionError, match="counter"):
        _judge(result, [AssertionError("counter is 3")])


def test_later_hang_fails_regression_after_a_quiet_attempt(tmp_path: Path) -> None:
    result = CaseResult(_case("regression"), (
        _attempt(tmp_path, Outcome.NOT_REPRODUCED, 1),
        _attempt(tmp_path, Outcome.HANG, 2, hang_seconds=60.0)))
    msg = _fail_message(result)
    assert "hang: no progress for 60 s (attempt 2" in msg
    assert result.verdict == "hang"


def test_infra_error_is_never_a_pass(tmp_path: Path) -> None:
    for mode in ("regression", "reproduce"):
        result = CaseResult(_case(mode), (
            _attempt(tmp_path, Outcome.INFRA_ERROR,
                     failure=Failure.of(InfraError("SSH never answered"))),))
        assert "infrastructure error, no kernel verdict: SSH never answered" in (
            _fail_message(result))


def test_infra_error_names_its_artifacts_and_how_the_console_ended(tmp_path: Path) -> None:
    attempt = _attempt(tmp_path, Outcome.INFRA_ERROR,
                       failure=Failure.of(InfraError("console closed while waiting")))
    (attempt.directory / "console.log").write_bytes(
        b"x" * 9000 + b"\r\n[  OK  ] Reached target Basic System.\r\n"
        b"\x1b[0;1;31mFAILED\x1b[0m fsck\x07\r\n\r\nreboot: Restarting system\r\n\n")
    msg = _fail_message(CaseResult(_case("reproduce"), (attempt,)))
    assert f"(artifacts: {attempt.directory}; console ended: " in msg
    assert msg.endswith("console ended: [  OK  ] Reached target Basic System. | "
                        "[0;1;31mFAILED[0m fsck | reboot: Restarting system)")
    assert "\x1b" not in msg and "\x07" not in msg and "xxxx" not in msg
    empty = _attempt(tmp_path, Outcome.INFRA_ERROR, 2,
                     failure=Failure.of(InfraError("boot timeout")))
    assert "console empty)" in _fail_message(CaseResult(_case("reproduce"), (empty,)))


def test_reproduce_mode_says_what_it_saw_instead(tmp_path: Path) -> None:
    result = CaseResult(_case("reproduce"), (
        _attempt(tmp_path, Outcome.HANG, hang_seconds=45.0),))
    msg = _fail_message(result)
    assert "not reproduced in 1 attempt(s)" in msg
    assert "seen hang: no progress for 45 s" in msg
    hit = CaseResult(_case("reproduce"), (
        _attempt(tmp_path, Outcome.REPRODUCED, title="t", body_error="EOFError: gone"),))
    _judge(hit, [])

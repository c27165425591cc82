"""An attempt lost to the harness is run again once; what a retry cannot help is not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reprolab.case import CaseSpec
from reprolab.errors import BootTimeout, Failure, GuestDied, HostError
from reprolab.run.attempt import AttemptResult
from reprolab.run.loop import run_case
from reprolab.run.verdict import Outcome


class _Runner:
    """Scripted attempts: an exception instance is that infrastructure failure."""

    def __init__(self, tmp_path: Path, script: list[Any]) -> None:
        self.tmp_path, self.script, self.indexes = tmp_path, script, []  # type: list[int]

    def run_attempt(self, case: CaseSpec, index: int, body: Any
                    ) -> tuple[AttemptResult, BaseException | None]:
        self.indexes.append(index)
        word = self.script[len(self.indexes) - 1]
        directory = self.tmp_path / f"attempt-{index:03d}"
        if isinstance(word, Exception):
            return AttemptResult(case.name, index, Outcome.INFRA_ERROR, directory, "null",
                                 failure=Failure.of(word)), None
        return AttemptResult(case.name, index, word, directory, "null"), None


def _run(tmp_path: Path, script: list[Any], attempts: int = 1) -> tuple[_Runner, str]:
    runner = _Runner(tmp_path, script)
    case = CaseSpec.from_marker("t.py::t", {"attempts": attempts, "until": "all",
                                            "expect": {"kind": "panic"}})
    return runner, run_case(runner, case, lambda g: None).result.verdict


def test_a_crashed_qemu_is_retried_and_the_retry_decides(tmp_path: Path) -> None:
    runner, verdict = _run(tmp_path, [GuestDied("QEMU exited"), Outcome.REPRODUCED])
    assert runner.indexes == [1, 2] and verdict == "reproduced"


@pytest.mark.parametrize("failure", [BootTimeout("no ready marker in 300 s"),
                                     HostError("disk full")], ids=["boot-timeout", "host"])
def test_what_a_retry_cannot_help_is_not_retried(tmp_path: Path, failure: Exception) -> None:
    runner, verdict = _run(tmp_path, [failure, Outcome.REPRODUCED])
    assert runner.indexes == [1] and verdict == "infra-error"


def test_a_lost_retry_ends_the_retries(tmp_path: Path) -> None:
    """Attempt 1 lost, its retry lost too: the harness is broken, attempts 2 and 3 of
    the case run once each."""
    lost = GuestDied("QEMU exited")
    runner, verdict = _run(tmp_path, [lost, lost, lost, Outcome.NOT_REPRODUCED], attempts=3)
    assert runner.indexes == [1, 2, 3, 4] and verdict == "not-reproduced"

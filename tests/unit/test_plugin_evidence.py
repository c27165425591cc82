"""The plugin waits for evidence written after a verdict, and records what it finally says."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from reprolab.case import CaseSpec
from reprolab.pytest_plugin import _with_evidence
from reprolab.run.attempt import AttemptResult
from reprolab.run.loop import CaseRun
from reprolab.run.record import CaseResult
from reprolab.run.verdict import Outcome


class _Session:
    """A session whose first attempt's dump finished after its verdict."""

    def __init__(self, first: AttemptResult) -> None:
        self.finished = False
        self.first = first

    def finish_evidence(self) -> None:
        self.finished = True

    def final(self, attempt: AttemptResult) -> AttemptResult:
        assert self.finished, "final() before the evidence was waited for"
        if attempt.directory == self.first.directory:
            return replace(attempt, vmcore_seconds=1.2, dump_error=None)
        return attempt


def test_the_case_records_its_attempts_as_their_files_finally_say(tmp_path: Path) -> None:
    case = CaseSpec.from_marker("t", {"expect": {"kind": "panic"}, "attempts": 2,
                                      "until": "all"})
    first = AttemptResult("t", 1, Outcome.REPRODUCED, tmp_path / "a1", "tcg",
                          vmcore=tmp_path / "a1" / "vmcore.kdump")
    second = AttemptResult("t", 2, Outcome.REPRODUCED, tmp_path / "a2", "tcg",
                           vmcore_seconds=1.1)
    run = CaseRun(CaseResult(case, (first, second)), ())
    session = _Session(first)
    done = _with_evidence(session, run)
    assert session.finished
    assert [a.vmcore_seconds for a in done.result.attempts] == [1.2, 1.1]
    # A backend that writes everything before returning is left as it is.
    assert _with_evidence(object(), run) is run

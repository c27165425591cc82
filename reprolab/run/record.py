"""What a run leaves on disk: each attempt's files, per-test verdicts, the results file.

The file is JSON lines appended under a lock, so pytest-xdist workers sharing one artifact
tree write one file the main command can print as a table.
"""

from __future__ import annotations

import fcntl
import json
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from reprolab.case import CaseSpec
from reprolab.run.attempt import AttemptResult
from reprolab.run.verdict import KERNEL_FAILURES, Outcome
from reprolab.stats import ReproRate

RESULTS_FILE = "results.jsonl"


def record_attempt(result: AttemptResult) -> AttemptResult:
    """Write what an attempt that ran a guest leaves: tidy console logs, ``result.json``,
    and the verdict in its replay bundle. Returns the result with the tidying's notes."""
    from reprolab.consolelog import tidy_attempt_logs
    from reprolab.replay import record_attempt_verdict

    try:
        notes = tidy_attempt_logs(result.directory)
    except OSError as exc:
        notes = [f"console logs left as they were: {exc}"]
    if notes:
        result = replace(result, notes=(*result.notes, *notes))
    result.write()
    record_attempt_verdict(result.directory, result.to_json())
    return result


@dataclass(frozen=True)
class CaseResult:
    case: CaseSpec
    attempts: tuple[AttemptResult, ...]

    @property
    def hits(self) -> int:
        return sum(a.hit for a in self.attempts)

    @property
    def kernel_attempts(self) -> tuple[AttemptResult, ...]:
        """Attempts that said something about the kernel (infrastructure failures do not)."""
        return tuple(a for a in self.attempts if a.outcome is not Outcome.INFRA_ERROR)

    @property
    def verdict(self) -> str:
        if self.hits:
            return "reproduced"
        if not self.kernel_attempts:
            return "infra-error"
        if self.case.mode == "explore":
            return "explored"
        if any(a.outcome is Outcome.OTHER_CRASH for a in self.attempts):
            return "other-crash"
        if any(a.outcome is Outcome.HANG for a in self.attempts):
            return "hang"
        return "not-reproduced"

    @property
    def kernel_failure(self) -> AttemptResult | None:
        """The attempt that fails a regression test: the first hit, else the first other
        crash or hang (a hung kernel is no pass)."""
        return self.first_hit or next(
            (a for a in self.attempts if a.outcome in KERNEL_FAILURES), None)

    @property
    def first_hit(self) -> AttemptResult | None:
        return next((a for a in self.attempts if a.hit), None)

    @property
    def time_to_first_hit(self) -> float | None:
        total = 0.0
        for a in self.attempts:
            total += a.duration
            if a.hit:
                return total
        return None

    @property
    def signatures(self) -> dict[str, int]:
        return dict(Counter(a.signature for a in self.attempts if a.signature))

    @property
    def stop_note(self) -> str:
        """How the attempt count came about, so a 1/1 after "--attempts 3" explains itself."""
        ran, planned = len(self.attempts), self.case.attempts
        if ran < planned and self.case.until == "first-hit" and self.hits:
            return (f"stopped at the first hit after {ran} of {planned} attempts "
                    "(until=first-hit)")
        return self.case.stop_rule()

    def rate(self) -> ReproRate:
        """Repro rate with its 95% interval, over the attempts that tested the kernel."""
        return ReproRate.measure(self.hits, len(self.kernel_attempts))

    def headline(self) -> AttemptResult | None:
        """The attempt whose evidence represents the test: first hit, else first crash."""
        return self.first_hit or next(
            (a for a in self.attempts if a.title), self.attempts[-1] if self.attempts else None
        )

    def to_json(self) -> dict[str, Any]:
        head = self.headline()
        n = len(self.kernel_attempts)
        rate = self.rate() if n else None
        return {
            "case": self.case.name,
            "verdict": self.verdict,
            "mode": self.case.mode,
            "expect": self.case.expect.describe(),
            "attempts": len(self.attempts),
            "planned_attempts": self.case.attempts,
            "until": self.case.until,
            "stop_rule": self.stop_note,
            "kernel_attempts": n,
            "hits": self.hits,
            "rate": str(rate) if rate is not None else None,
            "time_to_first_hit": self.time_to_first_hit,
            "title": head.title if head else None,
            "accel": head.accel if head else None,
            "vmcore": str(head.vmcore) if head and head.vmcore else None,
            "boot_seconds": head.boot_seconds if head else None,
            "signatures": self.signatures,
            "events": sorted({e.kind for a in self.attempts for e in a.events}),
            "errors": [a.error for a in self.attempts if a.error],
            "artifacts": str(self.attempts[0].directory.parent) if self.attempts else None,
        }


def append_result(artifacts: Path, result: CaseResult, **extra: Any) -> None:
    artifacts.mkdir(parents=True, exist_ok=True)
    path = artifacts / RESULTS_FILE
    # flock on the file itself: no .lock file left beside every run's results.
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write(json.dumps({**result.to_json(), **extra}) + "\n")


def read_results(artifacts: Path) -> list[dict[str, Any]]:
    path = artifacts / RESULTS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

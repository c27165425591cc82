"""The final word of a bisection: which commit, how sure, and the evidence per step.

A flaky bisection's answer is only as good as its weakest step, so the report keeps every
step's decision and confidence next to the culprit, and states the overall confidence as
the product of them with the confidence in the bad commit's rate (see
:func:`reprolab.bisect.sequential.overall_confidence`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprolab.bisect.driver import BisectResult
from reprolab.bisect.sequential import StepPolicy, overall_confidence
from reprolab.stats import ReproRate


@dataclass(frozen=True)
class BisectReport:
    culprit: str | None
    subject: str | None
    candidates: tuple[str, ...]
    fix: bool
    #: The bad commit's measured rate the steps were planned on.
    calibration: ReproRate | None
    policy: StepPolicy | None
    #: Checks before the bisection (the good commit's verification), then every step.
    steps: tuple[dict[str, Any], ...]
    overall_confidence: float | None
    log: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "culprit": self.culprit, "subject": self.subject,
            "candidates": list(self.candidates), "fix": self.fix,
            "calibration": self.calibration.as_dict() if self.calibration else None,
            "policy": self.policy.as_dict() if self.policy else None,
            "steps": list(self.steps), "overall_confidence": self.overall_confidence,
            "log": self.log,
        }

    def write(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "report.json"
        path.write_text(json.dumps(self.as_dict(), indent=2, sort_keys=True) + "\n")
        (directory / "bisect.log").write_text(self.log)
        return path

    def render(self) -> str:
        what = "fixing commit" if self.fix else "first bad commit"
        lines = []
        if self.calibration is not None:
            lines.append(f"bad commit rate: {self.calibration}")
        if self.policy is not None:
            lines.append(
                f"step policy: bad rate >= {self.policy.bad_rate:.1%}, "
                f"error <= {self.policy.beta:.2%} per step, "
                f"good after {self.policy.misses_to_good()} straight misses, "
                f"cap {self.policy.max_attempts}"
            )
        for step in self.steps:
            others = sum(step.get("other_crashes", {}).values())
            check = f"  [{step['check']} commit check]" if step.get("check") else ""
            lines.append(
                f"  {str(step.get('commit', '?'))[:12]}  {step.get('status')}/"
                f"{step.get('verdict')}  hits {step.get('hits')}/{step.get('attempts')}"
                f"{f' (+{others} other crashes)' if others else ''}"
                f"  confidence {float(step.get('confidence', 0.0)):.1%}"
                f"{_duration(step)}"
                f"{'  (capped)' if step.get('capped') else ''}"
                f"{check}"
            )
        if self.culprit:
            conf = (
                f" (overall confidence {self.overall_confidence:.1%})"
                if self.overall_confidence is not None else ""
            )
            lines.append(f"{what}: {self.culprit} {self.subject or ''}{conf}".rstrip())
        elif self.candidates:
            lines.append(f"{what} could be any of: {' '.join(c[:12] for c in self.candidates)}")
        else:
            lines.append(f"no {what} found")
        return "\n".join(lines)


def _duration(step: dict[str, Any]) -> str:
    """A step's wall time (its build, boots and attempts), when the step log has it."""
    duration = step.get("duration")
    return f"  {float(duration):.0f} s" if isinstance(duration, int | float) else ""


def _counts(step: dict[str, Any]) -> bool:
    return step.get("status") == "decided" and step.get("verdict") in ("bad", "good")


def build_report(
    result: BisectResult,
    *,
    calibration: ReproRate | None = None,
    policy: StepPolicy | None = None,
    rate_confidence: float = 1.0,
    checks: Sequence[dict[str, Any]] = (),
) -> BisectReport:
    """Combine git's answer with the step evidence into the report."""
    steps = (*checks, *result.steps)
    confidence = None
    if result.culprit is not None:
        confidence = overall_confidence(
            [float(s["confidence"]) for s in steps if _counts(s)],
            rate_confidence=rate_confidence,
        )
    return BisectReport(
        culprit=result.culprit, subject=result.subject, candidates=result.candidates,
        fix=result.fix, calibration=calibration, policy=policy, steps=steps,
        overall_confidence=confidence, log=result.log,
    )

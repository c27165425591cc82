"""How many attempts a bisection step needs: Wald's sequential probability ratio test.

A bisection step asks one question of a commit: does it carry the bug? For a flaky bug a
fixed number of attempts is the wrong tool. A single hit settles "bad" at once, and a commit
that reproduces at 90% needs two or three misses fewer than one at 10% to be called "good".
The SPRT stops as soon as the evidence reaches the error targets, so clear steps are short
and only the ambiguous ones run long.

Model (two simple hypotheses per attempt, attempts independent):

* bad:  the commit reproduces at rate ``p`` = the bad commit's *conservative* rate, the lower
  bound of its measured interval (:func:`policy_for_bisection`). Using a lower bound keeps the
  error targets valid for any true rate at or above it: the SPRT's probability of accepting
  "good" falls monotonically as the true rate rises (monotone likelihood ratio), so a bug
  that really reproduces more often than ``p`` is only called good less often.
* good: the commit reproduces at rate ``epsilon`` (``false_hit_rate``, default 0): the chance
  that a commit without the bug still shows the target signature.

Each hit adds ``log(p/epsilon)`` to the log-likelihood ratio, each miss ``log((1-p)/(1-eps))``.
The step says "bad" when the ratio reaches ``log((1-beta)/alpha)`` and "good" when it falls
to ``log(beta/(1-alpha))`` (Wald's boundaries), where ``alpha`` = P(call bad | commit good)
and ``beta`` = P(call good | commit bad).

With ``epsilon = 0`` the test degenerates to the obvious rule, exactly: a hit has infinite
ratio (impossible under "good"), so one hit proves "bad"; and since "bad" can then never be
called wrongly, the true alpha is 0 and the lower boundary is ``log(beta)``, reached after
``k = ceil(log(beta) / log(1 - p))`` straight misses — the smallest run a bad commit shows
with probability at most ``beta``. :meth:`StepPolicy.misses_to_good` gives that ``k``.

Per-step confidence is ``1 - exp(-|LLR|)``. By Ville's inequality the likelihood ratio is a
martingale under the rejected hypothesis, so the chance that the wrong hypothesis produced
evidence this strong is at most ``exp(-|LLR|)``. It is what was *achieved*, not the target:
a hit under ``epsilon = 0`` gives 1.0, a run of ``k`` misses gives ``1 - (1-p)^k >= 1 - beta``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, cast

from reprolab.errors import UserError
from reprolab.stats import ReproRate, wilson_interval

OnCap = Literal["lean", "skip"]

#: Overall confidence a bisection aims for unless told otherwise. 90% rather than 95%: the
#: per-step error then stays around 1% for a typical 7–12-step bisection, which already costs
#: ``log(0.01)/log(1-p)`` misses per good commit; asking for more doubles the bill of a
#: low-rate bug for little practical gain.
DEFAULT_OVERALL_CONFIDENCE = 0.90
#: One-sided confidence of the lower bound taken on the bad commit's measured rate.
DEFAULT_RATE_CONFIDENCE = 0.95
DEFAULT_MAX_ATTEMPTS = 100
#: Slack for float rounding at the boundaries (so ``k`` misses land on the boundary exactly).
_EDGE = 1e-9


class Verdict(StrEnum):
    BAD = "bad"
    GOOD = "good"
    UNDECIDED = "undecided"


@dataclass(frozen=True)
class StepPolicy:
    """Error targets and budget of one bisection step."""

    #: Repro rate assumed for a bad commit (already conservative: a lower bound).
    bad_rate: float
    #: Chance that a good commit still shows the target signature.
    false_hit_rate: float = 0.0
    #: P(call "bad" | commit is good).
    alpha: float = 0.05
    #: P(call "good" | commit is bad).
    beta: float = 0.05
    #: Attempts (including uninformative ones such as other crashes) before the step gives up.
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    #: At the cap, "lean" calls the side the evidence favours (with its lower confidence);
    #: "skip" leaves the step undecided, which bisection maps to "untestable" (125).
    on_cap: OnCap = "lean"

    def __post_init__(self) -> None:
        if not 0.0 < self.bad_rate <= 1.0:
            raise UserError(f"bad_rate must be in (0, 1], got {self.bad_rate}")
        if not 0.0 <= self.false_hit_rate < self.bad_rate:
            raise UserError(
                f"false_hit_rate must be in [0, bad_rate={self.bad_rate:.3g}), "
                f"got {self.false_hit_rate}"
            )
        for name in ("alpha", "beta"):
            value = getattr(self, name)
            if not 0.0 < value < 0.5:
                raise UserError(f"{name} must be in (0, 0.5), got {value}")
        if self.max_attempts < 1:
            raise UserError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.on_cap not in ("lean", "skip"):
            raise UserError(f"on_cap must be lean or skip, got {self.on_cap!r}")

    @property
    def llr_hit(self) -> float:
        if self.false_hit_rate == 0.0:
            return math.inf
        return math.log(self.bad_rate / self.false_hit_rate)

    @property
    def llr_miss(self) -> float:
        if self.bad_rate == 1.0:
            return -math.inf
        return math.log1p(-self.bad_rate) - math.log1p(-self.false_hit_rate)

    @property
    def upper(self) -> float:
        """LLR at which the step calls "bad"."""
        return math.log((1.0 - self.beta) / self.alpha)

    @property
    def lower(self) -> float:
        """LLR at which the step calls "good" (``log(beta)`` when a false "bad" is impossible)."""
        effective_alpha = 0.0 if self.false_hit_rate == 0.0 else self.alpha
        return math.log(self.beta / (1.0 - effective_alpha))

    def misses_to_good(self) -> int:
        """Straight misses that settle "good" (``ceil(log(beta)/log(1-p))`` when epsilon is 0)."""
        if self.llr_miss == -math.inf:
            return 1
        return max(1, math.ceil(self.lower / self.llr_miss - _EDGE))

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "bad_rate": self.bad_rate, "false_hit_rate": self.false_hit_rate,
            "alpha": self.alpha, "beta": self.beta, "max_attempts": self.max_attempts,
            "on_cap": self.on_cap,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StepPolicy:
        """Inverse of :meth:`as_dict` (the policy travels to ``bisect-step`` as JSON)."""
        try:
            on_cap = data.get("on_cap", "lean")
            if on_cap not in ("lean", "skip"):
                raise ValueError(f"on_cap {on_cap!r}")
            return cls(
                bad_rate=float(data["bad_rate"]),
                false_hit_rate=float(data.get("false_hit_rate", 0.0)),
                alpha=float(data.get("alpha", 0.05)),
                beta=float(data.get("beta", 0.05)),
                max_attempts=int(data.get("max_attempts", DEFAULT_MAX_ATTEMPTS)),
                on_cap=cast(OnCap, on_cap),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"invalid step policy {dict(data)!r}: {exc}") from exc


@dataclass(frozen=True)
class StepDecision:
    """What one step concluded about one commit, and how sure it is."""

    verdict: Verdict
    #: Informative attempts (hits + misses); other crashes are not counted here.
    attempts: int
    hits: int
    #: Log-likelihood ratio of "bad" over "good" after the last attempt (may be +-inf).
    llr: float
    #: ``1 - exp(-|llr|)`` for a verdict; 0 when undecided.
    confidence: float
    #: True when the verdict came from the attempts cap rather than a boundary.
    capped: bool = False

    @property
    def misses(self) -> int:
        return self.attempts - self.hits

    def as_dict(self) -> dict[str, object]:
        return {
            "verdict": self.verdict.value, "attempts": self.attempts, "hits": self.hits,
            "llr": _json_float(self.llr), "confidence": self.confidence, "capped": self.capped,
        }


def _json_float(value: float) -> float | str:
    """JSON has no infinity; keep it readable instead of emitting the non-standard token."""
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _confidence(llr: float) -> float:
    if math.isinf(llr):
        return 1.0
    return max(0.0, -math.expm1(-abs(llr)))


class SequentialTest:
    """The running SPRT of one step: feed it hits and misses until it decides."""

    def __init__(self, policy: StepPolicy) -> None:
        self.policy = policy
        self.hits = 0
        self.misses = 0
        self.llr = 0.0

    @property
    def attempts(self) -> int:
        return self.hits + self.misses

    @property
    def verdict(self) -> Verdict:
        if self.llr >= self.policy.upper - _EDGE:
            return Verdict.BAD
        if self.llr <= self.policy.lower + _EDGE:
            return Verdict.GOOD
        return Verdict.UNDECIDED

    @property
    def done(self) -> bool:
        return self.verdict is not Verdict.UNDECIDED

    def record(self, hit: bool) -> Verdict:
        if self.done:
            raise RuntimeError("the step has already decided; start a new SequentialTest")
        if hit:
            self.hits += 1
            self.llr += self.policy.llr_hit
        else:
            self.misses += 1
            self.llr += self.policy.llr_miss
        return self.verdict

    def decision(self, *, capped: bool = False) -> StepDecision:
        """The step's outcome now; ``capped`` says the attempt budget ran out first."""
        verdict = self.verdict
        if verdict is Verdict.UNDECIDED and capped and self.policy.on_cap == "lean":
            if self.llr > 0:
                verdict = Verdict.BAD
            elif self.llr < 0:
                verdict = Verdict.GOOD
        confidence = 0.0 if verdict is Verdict.UNDECIDED else _confidence(self.llr)
        return StepDecision(
            verdict=verdict, attempts=self.attempts, hits=self.hits, llr=self.llr,
            confidence=confidence, capped=capped and not self.done,
        )


def expected_steps(candidates: int) -> int:
    """Steps a bisection over ``candidates`` commits takes: ``ceil(log2(candidates + 1))``.

    Counted generously (a range of n commits needs ceil(log2 n) steps, plus one where git
    cannot halve exactly), because the error budget is split across them.
    """
    return max(1, math.ceil(math.log2(max(candidates, 1) + 1)))


def per_step_error(overall_confidence: float, steps: int) -> float:
    """Error allowed per step so ``steps`` independent steps keep ``overall_confidence``.

    Šidák's split, ``1 - overall^(1/steps)``: a bisection names the right commit when every
    step is right, and steps are independent (fresh attempts each), so the probability of an
    all-correct run is the product of per-step ones. It is marginally looser than Bonferroni's
    ``(1 - overall)/steps`` and exact under independence.
    """
    if not 0.0 < overall_confidence < 1.0:
        raise UserError(f"overall confidence must be in (0, 1), got {overall_confidence}")
    return 1.0 - math.pow(overall_confidence, 1.0 / max(steps, 1))


def conservative_rate(measured: ReproRate, confidence: float = DEFAULT_RATE_CONFIDENCE) -> float:
    """One-sided lower bound of the bad commit's rate (Wilson, at ``confidence``)."""
    low, _ = wilson_interval(measured.hits, measured.attempts, 2 * confidence - 1)
    return low


def policy_for_bisection(
    measured: ReproRate,
    *,
    candidates: int,
    overall_confidence: float = DEFAULT_OVERALL_CONFIDENCE,
    rate_confidence: float = DEFAULT_RATE_CONFIDENCE,
    false_hit_rate: float = 0.0,
    max_attempts: int | None = None,
    on_cap: OnCap = "lean",
) -> StepPolicy:
    """The step policy for bisecting ``candidates`` commits after measuring the bad commit.

    The overall target is shared between the rate's lower bound (right with probability
    ``rate_confidence``) and the steps, so that
    ``rate_confidence * (1 - err)^steps = overall_confidence``. With the defaults (0.90
    overall, 0.95 on the rate) and 100 candidates (7 steps), that is 0.8% error per step.
    ``max_attempts`` defaults to the larger of :data:`DEFAULT_MAX_ATTEMPTS` and twice the
    misses needed to call "good", so the cap only bites when ``epsilon > 0`` makes a step
    genuinely ambiguous.
    """
    if measured.hits == 0:
        raise UserError(
            f"the bad commit did not reproduce ({measured}): there is no rate to bisect on"
        )
    if not overall_confidence < rate_confidence < 1.0:
        raise UserError(
            f"rate confidence ({rate_confidence}) must lie between the overall target "
            f"({overall_confidence}) and 1"
        )
    steps = expected_steps(candidates)
    err = per_step_error(overall_confidence / rate_confidence, steps)
    rate = conservative_rate(measured, rate_confidence)
    draft = StepPolicy(
        bad_rate=rate, false_hit_rate=false_hit_rate, alpha=err, beta=err, on_cap=on_cap,
    )
    cap = max_attempts or max(DEFAULT_MAX_ATTEMPTS, 2 * draft.misses_to_good())
    return StepPolicy(
        bad_rate=rate, false_hit_rate=false_hit_rate, alpha=err, beta=err,
        max_attempts=cap, on_cap=on_cap,
    )


def overall_confidence(confidences: list[float], *, rate_confidence: float = 1.0) -> float:
    """Confidence that a finished bisection named the right commit.

    The product of the per-step achieved confidences (steps are independent, and the culprit
    is right when every step is), times the confidence in the bad rate's lower bound the
    steps were planned on. Skipped steps contribute nothing: they did not move the range.
    """
    product = rate_confidence
    for value in confidences:
        product *= value
    return product

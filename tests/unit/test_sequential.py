"""The sequential step test, simulated against flaky oracles with known repro rates.

No VMs and no timing: each check counts attempts and wrong verdicts over many simulated
steps and compares them with the targets, allowing binomial sampling slack (4 sigma).
"""

from __future__ import annotations

import math

import pytest
from flaky_oracle import FlakyOracle

from reprolab.bisect.driver import StepOracle, StepStatus, run_step
from reprolab.bisect.sequential import (
    SequentialTest,
    StepPolicy,
    Verdict,
    expected_steps,
    overall_confidence,
    per_step_error,
    policy_for_bisection,
)
from reprolab.errors import UserError
from reprolab.stats import ReproRate

RATES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
FIXED = 10


def _slack(target: float, trials: int) -> float:
    return 4 * math.sqrt(max(target * (1 - target), 1e-4) / trials)


def _verdicts(oracle: StepOracle, policy: StepPolicy, trials: int) -> tuple[int, int]:
    """(number of "bad" verdicts, total informative attempts) over ``trials`` steps."""
    bad = attempts = 0
    for i in range(trials):
        result = run_step(oracle, f"c{i}", policy)
        assert result.status is StepStatus.DECIDED
        bad += result.decision.verdict is Verdict.BAD
        attempts += result.decision.attempts
    return bad, attempts


@pytest.mark.parametrize("p", RATES)
@pytest.mark.parametrize("beta", [0.05, 0.01, 0.001])
def test_epsilon_zero_reduces_to_the_miss_run_rule(p: float, beta: float) -> None:
    policy = StepPolicy(bad_rate=p, alpha=0.05, beta=beta)
    k = math.ceil(math.log(beta) / math.log(1 - p))
    assert policy.misses_to_good() == k
    test = SequentialTest(policy)
    for _ in range(k - 1):
        assert test.record(False) is Verdict.UNDECIDED
    assert test.record(False) is Verdict.GOOD
    decision = test.decision()
    assert decision.attempts == k
    assert decision.confidence == pytest.approx(1 - (1 - p) ** k)
    assert decision.confidence >= 1 - beta

    # One hit before that settles "bad" outright, with certainty.
    test = SequentialTest(policy)
    for _ in range(k - 1):
        test.record(False)
    assert test.record(True) is Verdict.BAD
    assert test.decision().confidence == 1.0
    with pytest.raises(RuntimeError):
        test.record(False)


@pytest.mark.parametrize("p", RATES)
def test_fewer_attempts_than_fixed_ten_at_the_same_error(p: float) -> None:
    """Against fixed 10 attempts per commit, whose miss probability is (1-p)^10."""
    target = (1 - p) ** FIXED
    policy = StepPolicy(bad_rate=p, alpha=0.05, beta=target)
    trials = 3000
    bad_calls, bad_attempts = _verdicts(FlakyOracle(p, seed=int(p * 100)), policy, trials)
    good_calls, good_attempts = _verdicts(FlakyOracle(0.0, seed=1), policy, trials)

    missed = (trials - bad_calls) / trials
    assert missed <= target + _slack(target, trials), f"p={p}: missed {missed:.3f} > {target:.3f}"
    assert good_calls == 0  # epsilon = 0: a good commit can never be called bad
    mean = (bad_attempts + good_attempts) / (2 * trials)
    assert mean < FIXED, f"p={p}: mean {mean:.2f} attempts per step"
    assert good_attempts / trials <= FIXED  # never worse, even on a good commit


@pytest.mark.parametrize("p", [0.3, 0.5, 0.8])
def test_false_hits_keep_both_error_rates(p: float) -> None:
    eps = 0.05
    policy = StepPolicy(bad_rate=p, false_hit_rate=eps, alpha=0.05, beta=0.05, max_attempts=10_000)
    trials = 2000
    bad_calls, _ = _verdicts(FlakyOracle(p, seed=3), policy, trials)
    good_calls, _ = _verdicts(FlakyOracle(eps, seed=4), policy, trials)
    missed = 1 - bad_calls / trials
    false_alarm = good_calls / trials
    # Wald: actual errors are at most alpha/(1-beta) and beta/(1-alpha).
    bound = 0.05 / 0.95
    assert missed <= bound + _slack(bound, trials)
    assert false_alarm <= bound + _slack(bound, trials)


@pytest.mark.parametrize("true_rate", [0.2, 0.5, 0.8])
def test_higher_true_rate_only_lowers_the_miss_rate(true_rate: float) -> None:
    """Planning on a lower bound keeps the error target when the bug is more frequent."""
    policy = StepPolicy(bad_rate=0.15, beta=0.05)
    trials = 3000
    bad_calls, _ = _verdicts(FlakyOracle(true_rate, seed=5), policy, trials)
    assert 1 - bad_calls / trials <= 0.05 + _slack(0.05, trials)


def test_cap_lean_and_skip() -> None:
    eps = 0.2
    lean = StepPolicy(bad_rate=0.4, false_hit_rate=eps, max_attempts=3)
    oracle = FlakyOracle(0.3, seed=9)
    outcomes = [run_step(oracle, "c", lean) for _ in range(200)]
    capped = [r for r in outcomes if r.decision.capped]
    assert capped, "a 3-attempt cap at these rates must bite"
    for result in capped:
        assert result.decision.attempts == 3
        if result.decision.llr != 0:
            assert result.decision.verdict is not Verdict.UNDECIDED
            assert result.decision.confidence < 1 - lean.alpha
    skip = StepPolicy(bad_rate=0.4, false_hit_rate=eps, max_attempts=3, on_cap="skip")
    outcomes = [run_step(oracle, "c", skip) for _ in range(200)]
    assert any(r.decision.verdict is Verdict.UNDECIDED for r in outcomes)
    for result in outcomes:
        if result.decision.verdict is Verdict.UNDECIDED:
            assert result.decision.confidence == 0.0


def test_simulated_bisection_keeps_overall_confidence() -> None:
    """Whole bisections (binary search as git does it) over 64 commits at p = 0.3."""
    commits = 64
    measured = ReproRate.measure(6, 20)
    policy = policy_for_bisection(measured, candidates=commits, overall_confidence=0.9)
    trials = 300
    right = 0
    confidences = []
    for seed in range(trials):
        culprit = (seed * 37) % commits + 1
        oracle = FlakyOracle(0.3, seed=seed)
        oracle.bad = {f"c{i}" for i in range(culprit, commits + 1)}
        good, bad = 0, commits
        step_conf = []
        while bad - good > 1:
            mid = (good + bad) // 2
            result = run_step(oracle, f"c{mid}", policy)
            step_conf.append(result.decision.confidence)
            if result.decision.verdict is Verdict.BAD:
                bad = mid
            else:
                good = mid
        right += bad == culprit
        confidences.append(overall_confidence(step_conf, rate_confidence=0.95))
    assert right / trials >= 0.9 - _slack(0.1, trials)
    assert min(confidences) >= 0.9 - 1e-9


def test_error_budget_arithmetic() -> None:
    assert expected_steps(1) == 1
    assert expected_steps(7) == 3
    assert expected_steps(8) == 4
    assert expected_steps(1000) == 10
    err = per_step_error(0.9, 7)
    assert (1 - err) ** 7 == pytest.approx(0.9)
    assert overall_confidence([0.99, 0.98], rate_confidence=0.95) == pytest.approx(
        0.95 * 0.99 * 0.98
    )
    policy = policy_for_bisection(ReproRate.measure(5, 10), candidates=100)
    assert policy.alpha == policy.beta == pytest.approx(per_step_error(0.9 / 0.95, 7))
    assert 0 < policy.bad_rate < 0.5
    assert policy.max_attempts >= 2 * policy.misses_to_good()


def test_policy_validation() -> None:
    with pytest.raises(UserError, match="did not reproduce"):
        policy_for_bisection(ReproRate.measure(0, 10), candidates=10)
    with pytest.raises(UserError, match="bad_rate"):
        StepPolicy(bad_rate=0.0)
    with pytest.raises(UserError, match="false_hit_rate"):
        StepPolicy(bad_rate=0.2, false_hit_rate=0.3)
    with pytest.raises(UserError, match="alpha"):
        StepPolicy(bad_rate=0.2, alpha=0.7)
    with pytest.raises(UserError, match="invalid step policy"):
        StepPolicy.from_dict({"alpha": 0.1})
    policy = StepPolicy(bad_rate=0.3, false_hit_rate=0.01, max_attempts=7, on_cap="skip")
    assert StepPolicy.from_dict(policy.as_dict()) == policy

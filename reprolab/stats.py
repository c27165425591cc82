"""Repro rates and their confidence intervals.

A flaky kernel bug is described by a rate, and a rate measured from ten attempts is a wide
guess: "3/10" is compatible with anything from about 10% to 60%. Every figure reprolab
reports therefore carries an interval, and bisection plans its attempts from the interval's
lower bound rather than from the point estimate.

Two intervals are offered. Wilson's score interval is the default: it behaves well at 0 and
N hits (where the textbook normal interval collapses to a point) and its coverage is close to
nominal on average. Clopper–Pearson is the exact, conservative one (coverage is never below
nominal); it needs beta-distribution quantiles, computed here from the regularized incomplete
beta function so that scipy — a large compiled dependency used for nothing else — is not
needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

from reprolab.errors import UserError

Method = Literal["wilson", "clopper-pearson"]

_CF_EPS = 1e-15
_CF_TINY = 1e-300
_CF_MAX_ITER = 10_000


def _check_counts(hits: int, attempts: int) -> None:
    if attempts < 0 or hits < 0 or hits > attempts:
        raise UserError(f"invalid repro counts: {hits} hits out of {attempts} attempts")


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise UserError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")


def wilson_interval(hits: int, attempts: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Wilson score interval for a binomial proportion.

    With no attempts nothing is known, so the interval is the whole of [0, 1].
    """
    _check_counts(hits, attempts)
    _check_confidence(confidence)
    if attempts == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    n = attempts
    p = hits / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # The exact endpoints at 0 and n hits are 0 and 1; rounding would otherwise leave 1e-17.
    low = 0.0 if hits == 0 else max(0.0, centre - half)
    high = 1.0 if hits == n else min(1.0, centre + half)
    return low, high


def _beta_cf(a: float, b: float, x: float) -> float:
    """Continued fraction for I_x(a, b) by the modified Lentz method (Numerical Recipes 6.4)."""
    qab = a + b
    qap = a + 1.0
    qam = a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    if abs(d) < _CF_TINY:
        d = _CF_TINY
    d = 1.0 / d
    h = d
    for m in range(1, _CF_MAX_ITER + 1):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        if abs(d) < _CF_TINY:
            d = _CF_TINY
        c = 1.0 + aa / c
        if abs(c) < _CF_TINY:
            c = _CF_TINY
        d = 1.0 / d
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        if abs(d) < _CF_TINY:
            d = _CF_TINY
        c = 1.0 + aa / c
        if abs(c) < _CF_TINY:
            c = _CF_TINY
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _CF_EPS:
            return h
    raise ArithmeticError(f"incomplete beta did not converge for a={a}, b={b}, x={x}")


def regularized_incomplete_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), the CDF of Beta(a, b) at x.

    The continued fraction converges fast only for x < (a+1)/(a+b+2); beyond that the
    symmetry I_x(a, b) = 1 - I_{1-x}(b, a) is used instead.
    """
    if a <= 0 or b <= 0:
        raise ValueError(f"beta parameters must be positive, got a={a}, b={b}")
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
        + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_cf(a, b, x) / a
    return 1.0 - front * _beta_cf(b, a, 1.0 - x) / b


def beta_quantile(q: float, a: float, b: float) -> float:
    """The x with I_x(a, b) = q, found by bisection.

    Bisection rather than Newton: the CDF is monotone on [0, 1], so bisection cannot diverge
    or leave the interval, and 200 halvings are far below any cost that matters here.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile level must be in [0, 1], got {q}")
    if q == 0.0:
        return 0.0
    if q == 1.0:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        if regularized_incomplete_beta(mid, a, b) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def clopper_pearson_interval(
    hits: int, attempts: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Exact (Clopper–Pearson) two-sided interval for a binomial proportion."""
    _check_counts(hits, attempts)
    _check_confidence(confidence)
    if attempts == 0:
        return 0.0, 1.0
    tail = (1.0 - confidence) / 2
    low = 0.0 if hits == 0 else beta_quantile(tail, hits, attempts - hits + 1)
    high = 1.0 if hits == attempts else beta_quantile(1.0 - tail, hits + 1, attempts - hits)
    return low, high


def interval(
    hits: int, attempts: int, confidence: float = 0.95, method: Method = "wilson"
) -> tuple[float, float]:
    if method == "wilson":
        return wilson_interval(hits, attempts, confidence)
    if method == "clopper-pearson":
        return clopper_pearson_interval(hits, attempts, confidence)
    raise UserError(f"unknown interval method {method!r} (use wilson or clopper-pearson)")


def _pct(value: float) -> str:
    return f"{value * 100:.0f}"


@dataclass(frozen=True)
class ReproRate:
    """How often a test case reproduced, with the uncertainty that goes with it."""

    attempts: int
    hits: int
    rate: float
    low: float
    high: float
    confidence: float
    method: Method = "wilson"

    @classmethod
    def measure(
        cls, hits: int, attempts: int, *, confidence: float = 0.95, method: Method = "wilson"
    ) -> ReproRate:
        low, high = interval(hits, attempts, confidence, method)
        rate = hits / attempts if attempts else 0.0
        return cls(
            attempts=attempts, hits=hits, rate=rate, low=low, high=high,
            confidence=confidence, method=method,
        )

    def __str__(self) -> str:
        if self.attempts == 0:
            return "0/0 (no attempts)"
        return (
            f"{self.hits}/{self.attempts} = {_pct(self.rate)}% "
            f"({_pct(self.confidence)}% CI {_pct(self.low)}–{_pct(self.high)}%)"
        )

    def as_dict(self) -> dict[str, float | int | str]:
        """Plain form for JSON reports and JUnit properties."""
        return {
            "attempts": self.attempts, "hits": self.hits, "rate": self.rate,
            "low": self.low, "high": self.high, "confidence": self.confidence,
            "method": self.method,
        }

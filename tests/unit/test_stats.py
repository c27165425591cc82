"""Repro-rate intervals against closed forms, published values and an exact binomial sum."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reprolab.errors import UserError
from reprolab.stats import (
    ReproRate,
    beta_quantile,
    clopper_pearson_interval,
    regularized_incomplete_beta,
    wilson_interval,
)


@pytest.mark.parametrize(
    ("hits", "attempts", "low", "high"),
    [
        # Closed form at 0 and n hits: z^2/(n+z^2) and n/(n+z^2).
        (0, 10, 0.0, 0.277533),
        (5, 10, 0.236593, 0.763407),
        (10, 10, 0.722467, 1.0),
        (3, 10, 0.107791, 0.603222),
        # Newcombe (1998), Table I, example 81/263: 0.2553–0.3662.
        (81, 263, 0.2553, 0.3662),
    ],
)
def test_wilson_known_values(hits: int, attempts: int, low: float, high: float) -> None:
    got = wilson_interval(hits, attempts, 0.95)
    assert got == pytest.approx((low, high), abs=1e-4)


@pytest.mark.parametrize(
    ("hits", "attempts", "low", "high"),
    [
        # Published exact intervals (e.g. Clopper & Pearson tables, Newcombe 1998 Table I).
        (0, 10, 0.0, 0.308497),
        (1, 10, 0.002529, 0.445016),
        (5, 10, 0.187086, 0.812914),
        (10, 10, 0.691503, 1.0),
        (81, 263, 0.2527, 0.3676),
        (15, 148, 0.0578, 0.1617),
    ],
)
def test_clopper_pearson_published(hits: int, attempts: int, low: float, high: float) -> None:
    got = clopper_pearson_interval(hits, attempts, 0.95)
    assert got == pytest.approx((low, high), abs=1e-4)


@pytest.mark.parametrize("n", [1, 2, 5, 10, 37, 200])
def test_clopper_pearson_edges_match_closed_form(n: int) -> None:
    tail = 0.025
    assert clopper_pearson_interval(0, n)[1] == pytest.approx(1 - tail ** (1 / n), abs=1e-10)
    assert clopper_pearson_interval(n, n)[0] == pytest.approx(tail ** (1 / n), abs=1e-10)
    assert clopper_pearson_interval(1, n)[0] == pytest.approx(
        1 - (1 - tail) ** (1 / n), abs=1e-10
    )


def _binomial_tail(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


@given(
    n=st.integers(min_value=1, max_value=60),
    data=st.data(),
    p=st.floats(min_value=0.001, max_value=0.999),
)
def test_incomplete_beta_is_binomial_tail(n: int, data: st.DataObject, p: float) -> None:
    # I_p(k, n-k+1) = P(Binomial(n, p) >= k): an identity independent of the continued fraction.
    k = data.draw(st.integers(min_value=1, max_value=n))
    assert regularized_incomplete_beta(p, k, n - k + 1) == pytest.approx(
        _binomial_tail(k, n, p), abs=1e-10
    )


@given(
    a=st.floats(min_value=0.2, max_value=400),
    b=st.floats(min_value=0.2, max_value=400),
    q=st.floats(min_value=1e-6, max_value=1 - 1e-6),
)
def test_beta_quantile_inverts_cdf(a: float, b: float, q: float) -> None:
    x = beta_quantile(q, a, b)
    assert 0.0 <= x <= 1.0
    # Where the CDF is steeper than float spacing in x (a < 1 near 0), the best answer is the
    # float whose neighbours bracket q, so that is what is checked.
    below = regularized_incomplete_beta(math.nextafter(x, 0.0), a, b)
    above = regularized_incomplete_beta(math.nextafter(x, 1.0), a, b)
    assert below - 1e-9 <= q <= above + 1e-9


@given(n=st.integers(min_value=1, max_value=300), data=st.data())
def test_intervals_are_ordered_and_symmetric(n: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(min_value=0, max_value=n))
    for method in (wilson_interval, clopper_pearson_interval):
        low, high = method(k, n)
        assert 0.0 <= low <= k / n <= high <= 1.0
        mirror_low, mirror_high = method(n - k, n)
        assert low == pytest.approx(1 - mirror_high, abs=1e-9)
        assert high == pytest.approx(1 - mirror_low, abs=1e-9)


def test_repro_rate_str_and_fields() -> None:
    rate = ReproRate.measure(3, 10)
    assert str(rate) == "3/10 = 30% (95% CI 11–60%)"
    assert (rate.attempts, rate.hits, rate.rate, rate.confidence) == (10, 3, 0.3, 0.95)
    assert rate.as_dict()["method"] == "wilson"
    exact = ReproRate.measure(0, 10, method="clopper-pearson")
    assert str(exact) == "0/10 = 0% (95% CI 0–31%)"
    assert str(ReproRate.measure(0, 0)) == "0/0 (no attempts)"


@pytest.mark.parametrize(("hits", "attempts"), [(-1, 3), (4, 3), (0, -1)])
def test_bad_counts_are_user_errors(hits: int, attempts: int) -> None:
    with pytest.raises(UserError, match="invalid repro counts"):
        ReproRate.measure(hits, attempts)


def test_bad_confidence_and_method() -> None:
    with pytest.raises(UserError, match="confidence"):
        wilson_interval(1, 2, 1.0)
    with pytest.raises(UserError, match="unknown interval method"):
        ReproRate.measure(1, 2, method="normal")  # type: ignore[arg-type]

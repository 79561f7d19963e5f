"""The gate's statistics against values found another way: exact fractions from math.comb, closed forms where the
binomial tail has one (k = n, k = n - 1), and bisection on those closed forms."""
from __future__ import annotations

import math
from fractions import Fraction

import pytest

from cnnedge.export.gate import (agreement_decision, binom_cdf, binom_sf, clopper_pearson, drop_decision,
                                 mcnemar_exact)


def _exact_cdf(k: int, n: int, p: Fraction) -> Fraction:
    return sum((math.comb(n, j) * p ** j * (1 - p) ** (n - j) for j in range(k + 1)), Fraction(0))


def _root(f, lo: float = 0.0, hi: float = 1.0) -> float:
    """Bisection for an increasing f crossing 0 on [lo, hi]."""
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
    return (lo + hi) / 2


@pytest.mark.parametrize("k,n,p", [(0, 7, Fraction(1, 3)), (12, 50, Fraction(3, 10)), (49, 50, Fraction(49, 50)),
                                   (3, 40, Fraction(98, 100))])
def test_binomial_tails_are_the_exact_sums(k: int, n: int, p: Fraction) -> None:
    exact = _exact_cdf(k, n, p)
    assert binom_cdf(k, n, float(p)) == pytest.approx(float(exact), rel=1e-10, abs=1e-300)
    assert binom_sf(k + 1, n, float(p)) == pytest.approx(float(1 - exact), rel=1e-10, abs=1e-15)


def test_far_tail_keeps_its_digits() -> None:
    """P(X <= 3; 40, 0.98) is about 1e-53: summed from its own terms, not as 1 minus the rest."""
    exact = float(_exact_cdf(3, 40, Fraction(98, 100)))
    assert exact < 1e-50 and binom_cdf(3, 40, 0.98) == pytest.approx(exact, rel=1e-9)


def test_clopper_pearson_39_of_40() -> None:
    lower, upper = clopper_pearson(39, 40)
    assert upper == pytest.approx(0.95 ** (1 / 40), abs=1e-10)  # P(X <= 39) = 1 - p^40 = 0.05
    # P(X >= 39) = 40 p^39 - 39 p^40 = 0.05
    assert lower == pytest.approx(_root(lambda p: 40 * p ** 39 - 39 * p ** 40 - 0.05), abs=1e-10)
    assert lower == pytest.approx(0.8868116, abs=1e-7) and upper == pytest.approx(0.9987185, abs=1e-7)


def test_clopper_pearson_at_the_edges() -> None:
    assert clopper_pearson(0, 10) == pytest.approx((0.0, 1 - 0.05 ** (1 / 10)), abs=1e-10)
    assert clopper_pearson(40, 40) == pytest.approx((0.05 ** (1 / 40), 1.0), abs=1e-10)
    with pytest.raises(ValueError):
        clopper_pearson(3, 2)


def test_exact_mcnemar() -> None:
    assert mcnemar_exact(6, 4) == pytest.approx(386 / 1024, rel=1e-12)  # 6 against 4: nothing shown
    assert mcnemar_exact(6, 4) > 0.001
    assert mcnemar_exact(40, 0) == pytest.approx(2.0 ** -40, rel=1e-9) and mcnemar_exact(40, 0) < 0.001
    assert mcnemar_exact(10, 0) < 0.001 < mcnemar_exact(9, 0)  # 2^-10 = 0.00098, 2^-9 = 0.002
    assert mcnemar_exact(0, 0) == 1.0


def test_agreement_39_of_40_at_98_is_undecided_not_failed() -> None:
    d = agreement_decision(39, 40, 0.98)
    assert d.verdict == "undecided" and d.lower < 0.98 < d.upper
    assert d.p_fail == pytest.approx(1 - 0.98 ** 40, rel=1e-9)  # P(X <= 39; 40, 0.98)


def test_agreement_decides_where_the_images_show_it() -> None:
    assert agreement_decision(900, 1000, 0.98).verdict == "fail"
    assert agreement_decision(1000, 1000, 0.995).verdict == "pass"  # 0.05^(1/1000) = 0.99701 >= 0.995
    assert agreement_decision(300, 300, 0.995).verdict == "undecided"  # 0.05^(1/300) = 0.9901
    assert agreement_decision(10, 10, 0.98).verdict == "undecided"


def test_agreement_threshold_one_is_a_plain_rule() -> None:
    assert agreement_decision(269, 269, 1.0).verdict == "pass"
    assert agreement_decision(268, 269, 1.0).verdict == "fail"


def test_accuracy_drop() -> None:
    assert drop_decision(30, 5, 1000, 0.01).verdict == "fail"  # 2.5 points on 35 discordant images
    assert drop_decision(40, 2, 200, 0.01).verdict == "fail"
    assert drop_decision(3, 2, 1000, 0.01).verdict == "pass"
    assert drop_decision(0, 0, 1000, 0.01).verdict == "pass"  # no discordant image in 1000: the rate < 0.3%
    assert drop_decision(0, 0, 10, 0.01).verdict == "undecided"  # none in 10 shows nothing
    assert drop_decision(1, 0, 100, 0.01).verdict == "undecided"
    assert drop_decision(0, 5, 10, 0.01).verdict == "pass"  # better on 5 of 10, worse on none
    d = drop_decision(2, 1, 40, 0.01)
    assert d.verdict == "undecided" and d.lower < 0.01 < d.upper


def test_drop_at_threshold_zero_is_exact_mcnemar() -> None:
    assert drop_decision(12, 3, 500, 0.0).p_fail == pytest.approx(mcnemar_exact(12, 3), rel=1e-12)

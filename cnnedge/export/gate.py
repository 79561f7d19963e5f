"""Exact binomial statistics for the parity gate: verdicts that say what the images at hand can show.

A gate that compares point estimates with thresholds lets one image decide (39 of 40 agree: 97.5% < 98%, fail)
and convicts on noise (6 against 4 right answers). Here every verdict is a one-sided exact test on the counts,
and where the images are too few to show either way the verdict is ``undecided``, not a guess.

numpy and math only: binomial tails are sums of exact log-probabilities (log-factorials), bounds are found by
bisection on those tails (Clopper-Pearson by definition, not through a Beta quantile).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05  # one-sided level of the threshold tests
PASS, FAIL, UNDECIDED = "pass", "fail", "undecided"


def _logpmf(n: int, p: float, lo: int, hi: int) -> np.ndarray:
    """log P(X = k) for k in lo..hi, X ~ Binomial(n, p), 0 < p < 1."""
    k = np.arange(lo, hi + 1, dtype=np.float64)
    logfact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1, dtype=np.float64)))])
    ks = np.arange(lo, hi + 1)
    return logfact[n] - logfact[ks] - logfact[n - ks] + k * math.log(p) + (n - k) * math.log1p(-p)


def _sum_exp(logs: np.ndarray) -> float:
    if logs.size == 0:
        return 0.0
    top = float(np.max(logs))
    return min(1.0, math.exp(top) * float(np.sum(np.exp(logs - top))))


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed from its own terms (accurate far into the tail)."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    return _sum_exp(_logpmf(n, p, 0, k))


def binom_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed from its own terms."""
    if k <= 0:
        return 1.0
    if k > n or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    return _sum_exp(_logpmf(n, p, k, n))


def _bisect(f, target: float, increasing: bool) -> float:
    """The p in [0, 1] where the monotone ``f`` crosses ``target``."""
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if (f(mid) < target) == increasing:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13:
            break
    return (lo + hi) / 2


def clopper_pearson(k: int, n: int, alpha: float = ALPHA) -> tuple[float, float]:
    """One-sided exact (Clopper-Pearson) bounds for a proportion seen k times in n: ``(lower, upper)``, each a
    1 - ``alpha`` confidence bound on its own (so together a 1 - 2 ``alpha`` interval)."""
    if not 0 <= k <= n or n == 0:
        raise ValueError(f"need 0 <= k <= n and n > 0, got k={k}, n={n}")
    lower = 0.0 if k == 0 else _bisect(lambda p: binom_sf(k, n, p), alpha, increasing=True)
    upper = 1.0 if k == n else _bisect(lambda p: binom_cdf(k, n, p), alpha, increasing=False)
    return lower, upper


def mcnemar_exact(b: int, c: int) -> float:
    """One-sided exact McNemar p-value that the ``b`` side is the better one: P(X >= b), X ~ Binomial(b + c, 1/2),
    on the discordant pairs only (``b``: images only the first feeding gets right, ``c``: only the second)."""
    return binom_sf(b, b + c, 0.5)


@dataclass(frozen=True)
class Decision:
    """A three-way verdict with the evidence behind it: one-sided 1 - alpha bounds on the quantity, and the
    p-values of the test that it misses the threshold (``p_fail``) and that it meets it (``p_meet``)."""

    verdict: str  # pass | fail | undecided
    lower: float
    upper: float
    p_fail: float
    p_meet: float


def agreement_decision(k: int, n: int, threshold: float, alpha: float = ALPHA) -> Decision:
    """Top-1 agreement seen on k of n images against a minimum rate. Fails when the images show the rate is below
    the threshold (H0 "rate >= threshold" rejected: P(X <= k; n, threshold) < alpha, i.e. the upper one-sided
    Clopper-Pearson bound is below it); passes when they show it is at least the threshold (the lower bound
    reaches it); undecided otherwise. A threshold of 1 asks that every image agrees, which no sample can show for
    the population: there it is a plain rule on the images at hand (pass when k == n)."""
    if n == 0:
        return Decision(UNDECIDED, 0.0, 1.0, 1.0, 1.0)
    lower, upper = clopper_pearson(k, n, alpha)
    if threshold >= 1.0:
        return Decision(PASS if k == n else FAIL, lower, upper, float(k < n), float(k < n))
    if threshold <= 0.0:
        return Decision(PASS, lower, upper, 1.0, 0.0)
    p_fail = binom_cdf(k, n, threshold)
    p_meet = binom_sf(k, n, threshold)
    verdict = FAIL if p_fail < alpha else PASS if p_meet < alpha else UNDECIDED
    return Decision(verdict, lower, upper, p_fail, p_meet)


def drop_decision(losses: int, gains: int, n: int, threshold: float, alpha: float = ALPHA) -> Decision:
    """Accuracy drop of an artifact against its source on n paired images, against a maximum drop ``threshold``
    (a fraction). ``losses``: images the source gets right and the artifact wrong; ``gains``: the reverse. The
    drop is (losses - gains) / n: only the m = losses + gains discordant images carry evidence.

    Given m, losses ~ Binomial(m, q) and the drop is r (2q - 1), r the discordance rate. Fail: with r taken as
    seen (m / n), "drop <= threshold" is "q <= q0 = (1 + threshold * n / m) / 2", rejected when
    P(X >= losses; m, q0) < alpha: an exact one-sided test on the discordant images (for threshold 0, the exact
    McNemar test). Meet: the same test the other way, P(X <= losses; m, q0') < alpha, but with r at its exact
    upper bound (q0' = (1 + threshold / r_upper) / 2), so that a few discordant images, or none, on few images do
    not pass as evidence; when r_upper itself is within the threshold the drop is shown to be. Otherwise
    undecided. The bounds reported are those two, on the drop: (m / n)(2 q_lower - 1), r_upper (2 q_upper - 1)."""
    if n == 0:
        return Decision(UNDECIDED, -1.0, 1.0, 1.0, 1.0)
    m = losses + gains
    r_upper = clopper_pearson(m, n, alpha)[1]
    q_lo, q_hi = clopper_pearson(losses, m, alpha) if m else (0.0, 1.0)
    lower = m / n * (2 * q_lo - 1) + 0.0
    upper = (r_upper if q_hi > 0.5 else m / n) * (2 * q_hi - 1)
    p_fail = binom_sf(losses, m, (1 + threshold * n / m) / 2) if m else 1.0
    q_meet = (1 + threshold / r_upper) / 2
    p_meet = 0.0 if q_meet >= 1.0 else binom_cdf(losses, m, q_meet) if m else 1.0
    verdict = FAIL if p_fail < alpha else PASS if p_meet < alpha else UNDECIDED
    return Decision(verdict, lower, upper, p_fail, p_meet)

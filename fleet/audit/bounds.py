"""From attack scores to epsilon: a Clopper-Pearson lower bound and a Gaussian-fit estimate.

Scores come in two samples: `absent` (the world without the contribution, or directions that were
never inserted) and `present`. A threshold test "score > t" has rates a0 = P(score > t | absent)
and a1 = P(score > t | present); (epsilon, delta)-DP forces, for both orders of the pair,

    a1 <= e^eps a0 + delta        and        1 - a0 <= e^eps (1 - a1) + delta

so with Clopper-Pearson bounds (a1 from below, a0 from above, and the mirrored pair)

    eps >= log((a1_lo - delta) / a0_hi),   eps >= log((1 - a0_hi - delta) / (1 - a1_lo)),  ...

maximised over every threshold between two observed scores (Jagielski et al. 2020, Nasr et al.
2021). That maximum's confidence is per threshold (the threshold is chosen on the same scores);
`held_out_epsilon` chooses statistic and threshold on half the scores and tests once on the
other half, so its 95% holds for the audit as a whole: the verdict uses it.

The Gaussian fit (Andrew et al. 2024, arXiv 2302.03098) models both samples as normals and
returns the epsilon of telling N(mu0, s0^2) from N(mu1, s1^2) at delta: an estimate, not a bound.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import beta, norm

__all__ = [
    "clopper_pearson_epsilon",
    "gaussian_fit_epsilon",
    "gaussian_pair_epsilon",
    "held_out_epsilon",
    "pooled_gaussian_epsilon",
]


def _cp_interval(hits: np.ndarray, n: int, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Clopper-Pearson interval of a binomial rate, vectorised over `hits`."""
    tail = (1.0 - confidence) / 2.0
    h = hits.astype(np.float64)
    with np.errstate(invalid="ignore"):
        lo = np.where(h > 0, beta.ppf(tail, h, n - h + 1), 0.0)
        hi = np.where(h < n, beta.ppf(1.0 - tail, h + 1, n - h), 1.0)
    return lo, hi


def _log_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log(num / den)
    return np.where((num > 0) & (den > 0), out, -np.inf)


def _candidates(
    x0: np.ndarray, x1: np.ndarray, cuts: np.ndarray, delta: float, confidence: float
) -> np.ndarray:
    """(4, t) epsilons the four DP inequalities prove at each cut (x0, x1 sorted)."""
    n0, n1 = x0.size, x1.size
    above0 = n0 - np.searchsorted(x0, cuts, side="right")  # (t,) counts of score > cut
    above1 = n1 - np.searchsorted(x1, cuts, side="right")
    a0_lo, a0_hi = _cp_interval(above0, n0, confidence)
    a1_lo, a1_hi = _cp_interval(above1, n1, confidence)
    return np.stack(
        [
            _log_ratio(a1_lo - delta, a0_hi),  # present scores high
            _log_ratio(1.0 - a0_hi - delta, 1.0 - a1_lo),
            _log_ratio(a0_lo - delta, a1_hi),  # present scores low
            _log_ratio(1.0 - a1_hi - delta, 1.0 - a0_lo),
        ]
    )


def _cuts(x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
    """Thresholds between consecutive distinct scores, and one below everything."""
    values = np.unique(np.concatenate([x0, x1]))
    return np.concatenate([[values[0] - 1.0], (values[:-1] + values[1:]) / 2.0])


def _sorted_pair(
    absent: Sequence[float] | np.ndarray, present: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    x0 = np.sort(np.asarray(absent, np.float64))  # (n0,)
    x1 = np.sort(np.asarray(present, np.float64))  # (n1,)
    if x0.size == 0 or x1.size == 0:
        raise ValueError("need scores from both worlds")
    return x0, x1


def clopper_pearson_epsilon(
    absent: Sequence[float] | np.ndarray,
    present: Sequence[float] | np.ndarray,
    delta: float,
    confidence: float = 0.95,
) -> float:
    """The largest epsilon any threshold test on the scores proves (0 when none proves more).
    Per-threshold confidence: on identical distributions it is slightly above 0 by chance."""
    x0, x1 = _sorted_pair(absent, present)
    return max(0.0, float(np.max(_candidates(x0, x1, _cuts(x0, x1), delta, confidence))))


def held_out_epsilon(
    absent: Mapping[str, np.ndarray],
    present: Mapping[str, np.ndarray],
    delta: float,
    confidence: float = 0.95,
) -> tuple[float, str]:
    """A lower bound with the stated confidence for the whole audit: the statistic, threshold
    and inequality are chosen on the even-numbered scores, then tested once on the odd ones.
    Returns (epsilon, the statistic chosen)."""
    best = (-np.inf, "", 0.0, 0)  # (epsilon on the first half, statistic, cut, inequality)
    for name, scores in absent.items():
        x0, x1 = _sorted_pair(scores[::2], present[name][::2])
        cuts = _cuts(x0, x1)
        found = _candidates(x0, x1, cuts, delta, confidence)  # (4, t)
        at = np.unravel_index(int(np.argmax(found)), found.shape)
        if found[at] > best[0]:
            best = (float(found[at]), name, float(cuts[at[1]]), int(at[0]))
    _, chosen, cut, inequality = best
    if not chosen:
        return 0.0, ""
    x0, x1 = _sorted_pair(absent[chosen][1::2], present[chosen][1::2])
    tested = _candidates(x0, x1, np.array([cut]), delta, confidence)[inequality, 0]
    return max(0.0, float(tested)), chosen


def _tail_mass(mu_p: float, s_p: float, mu_q: float, s_q: float, eps: float) -> tuple[float, float]:
    """P(A), Q(A) for A = {x : log p(x)/q(x) > eps}, p = N(mu_p, s_p^2), q = N(mu_q, s_q^2)."""
    # log p/q = a x^2 + b x + c
    a = 1.0 / (2 * s_q**2) - 1.0 / (2 * s_p**2)
    b = mu_p / s_p**2 - mu_q / s_q**2
    c = math.log(s_q / s_p) - mu_p**2 / (2 * s_p**2) + mu_q**2 / (2 * s_q**2) - eps

    def mass(lo: float, hi: float) -> tuple[float, float]:  # P and Q of the interval (lo, hi)
        p = norm.cdf(hi, mu_p, s_p) - norm.cdf(lo, mu_p, s_p)
        q = norm.cdf(hi, mu_q, s_q) - norm.cdf(lo, mu_q, s_q)
        return float(p), float(q)

    inf = math.inf
    if abs(a) < 1e-12 * (abs(b) + 1e-300) or a == 0.0:  # equal variances: a half-line
        if b == 0.0:
            return (1.0, 1.0) if c > 0 else (0.0, 0.0)
        root = -c / b
        return mass(root, inf) if b > 0 else mass(-inf, root)
    disc = b * b - 4 * a * c
    if disc <= 0:  # the quadratic never crosses zero: A is everything or nothing
        return (1.0, 1.0) if a > 0 else (0.0, 0.0)
    r1, r2 = sorted(((-b - math.sqrt(disc)) / (2 * a), (-b + math.sqrt(disc)) / (2 * a)))
    if a < 0:  # positive between the roots
        return mass(r1, r2)
    left, right = mass(-inf, r1), mass(r2, inf)  # positive outside the roots
    return left[0] + right[0], left[1] + right[1]


def _hockey_stick(mu_p: float, s_p: float, mu_q: float, s_q: float, eps: float) -> float:
    p, q = _tail_mass(mu_p, s_p, mu_q, s_q, eps)
    return max(0.0, p - math.exp(eps) * q)


def gaussian_pair_epsilon(mu0: float, s0: float, mu1: float, s1: float, delta: float) -> float:
    """The smallest eps with delta(eps) <= delta for the pair N(mu0, s0^2), N(mu1, s1^2), both
    orders (bisection on the hockey-stick divergence, which falls as eps grows)."""
    if not (s0 > 0 and s1 > 0) or not 0 < delta < 1:
        raise ValueError(f"need s0, s1 > 0 and 0 < delta < 1; got {s0}, {s1}, {delta}")

    def excess(eps: float) -> float:
        return max(_hockey_stick(mu1, s1, mu0, s0, eps), _hockey_stick(mu0, s0, mu1, s1, eps))

    if excess(0.0) <= delta:
        return 0.0
    lo, hi = 0.0, 1.0
    while excess(hi) > delta:
        lo, hi = hi, hi * 2
        if hi > 500:  # the pair is (numerically) perfectly separated
            return math.inf
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if excess(mid) > delta else (lo, mid)
    return hi


def gaussian_fit_epsilon(
    absent: Sequence[float] | np.ndarray, present: Sequence[float] | np.ndarray, delta: float
) -> float:
    """Andrew et al.'s estimate: fit a normal to each sample, the epsilon of the pair."""
    x0, x1 = np.asarray(absent, np.float64), np.asarray(present, np.float64)
    if x0.size < 2 or x1.size < 2:
        raise ValueError("need at least two scores per world for a fit")
    s0, s1 = float(np.std(x0, ddof=1)), float(np.std(x1, ddof=1))
    if s0 == 0.0 or s1 == 0.0:
        return math.inf if float(np.mean(x0)) != float(np.mean(x1)) else 0.0
    return gaussian_pair_epsilon(float(np.mean(x0)), s0, float(np.mean(x1)), s1, delta)


def pooled_gaussian_epsilon(
    absent: Sequence[float] | np.ndarray, present: Sequence[float] | np.ndarray, delta: float
) -> float:
    """The same fit with one pooled variance: the Gaussian mechanism with mu = gap / s. Steadier
    than the two-variance fit on a few hundred scores (unequal fitted variances make the privacy
    loss unbounded, and their sampling error alone can add whole units of epsilon)."""
    x0, x1 = np.asarray(absent, np.float64), np.asarray(present, np.float64)
    if x0.size < 2 or x1.size < 2:
        raise ValueError("need at least two scores per world for a fit")
    pooled = math.sqrt(
        ((x0.size - 1) * np.var(x0, ddof=1) + (x1.size - 1) * np.var(x1, ddof=1))
        / (x0.size + x1.size - 2)
    )
    gap = abs(float(np.mean(x1)) - float(np.mean(x0)))
    if pooled == 0.0:
        return math.inf if gap > 0 else 0.0
    return gaussian_pair_epsilon(0.0, 1.0, gap / pooled, 1.0, delta)

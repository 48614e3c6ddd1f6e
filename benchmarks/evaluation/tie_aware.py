"""Exact tie-aware expectations: AP sums over a bucket of tied items and the hypergeometric helpers.

Source: He, Liu & Sclaroff, "Hashing as Tie-Aware Learning to Rank", CVPR 2018. For a bucket of ``n`` tied
items, ``r`` of them relevant, ranked after ``N`` items of which ``R`` relevant, a relevant item at bucket
position ``j`` has expected precision ``(R + 1 + (j-1)(r-1)/(n-1)) / (N + j)``; the sums over ``j`` have closed
forms in the digamma function (:func:`tie_aware_ap_sum`). Truncated variants need the hypergeometric number of
relevant items among the first positions of a bucket (:func:`hypergeom_pmf`, :func:`hypergeom_cdf_over_draws`,
:func:`first_q_relevant_sum`). How the metrics use them: :mod:`benchmarks.evaluation.metrics`.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.special import digamma, gammaln

__all__ = ["first_q_relevant_sum", "hypergeom_cdf_over_draws", "hypergeom_pmf", "tie_aware_ap_sum"]


def tie_aware_ap_sum(n: np.ndarray, r: np.ndarray, before: np.ndarray, rel_before: np.ndarray, upto: np.ndarray | None = None) -> np.ndarray:
    """Expected sum of precisions at the relevant items among the first ``upto`` positions of a bucket.

    Parameters
    ----------
    n, r : np.ndarray (broadcastable, int)
        Items and relevant items in the bucket.
    before, rel_before : np.ndarray (broadcastable, int)
        Items ``N`` and relevant items ``R`` ranked before the bucket.
    upto : np.ndarray, optional
        Number ``J`` of leading bucket positions summed over (default ``n``).

    Returns
    -------
    np.ndarray, float64
        ``sum_{j=1..J} (r/n) (R + 1 + (j-1)(r-1)/(n-1)) / (N + j)``
        ``= (r/n) [(A - B(N+1)) (psi(N+J+1) - psi(N+1)) + B J]``, ``A = R+1``, ``B = (r-1)/(n-1)``
        (He et al. CVPR 2018, tie-aware AP); 0 where ``n = 0`` or ``r = 0``.
    """
    n = np.asarray(n, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64)
    big_n = np.asarray(before, dtype=np.float64)
    a = np.asarray(rel_before, dtype=np.float64) + 1.0
    j = n if upto is None else np.asarray(upto, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        b = np.where(n > 1, (r - 1.0) / (n - 1.0), 0.0)
        harm = digamma(big_n + j + 1.0) - digamma(big_n + 1.0)
        val = (r / n) * ((a - b * (big_n + 1.0)) * harm + b * j)
    return np.where((n > 0) & (r > 0) & (j > 0), val, 0.0)


@lru_cache(maxsize=4)
def _log_factorials(n_max: int) -> np.ndarray:
    """``log(m!)`` for m = 0..n_max (float64 table, computed once per size)."""
    return gammaln(np.arange(n_max + 1, dtype=np.float64) + 1.0)


def hypergeom_pmf(x: np.ndarray, population: np.ndarray, successes: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """P(X = x) for X ~ Hypergeom(population, successes, draws), 0 outside the support (all broadcast, integers).

    ``C(K, x) C(M - K, d - x) / C(M, d)`` evaluated with a table of log-factorials.
    """
    x, m, k, d = np.broadcast_arrays(*(np.asarray(v, dtype=np.int64) for v in (x, population, successes, draws)))
    ok = (x >= 0) & (x <= k) & (d - x >= 0) & (d - x <= m - k) & (d >= 0) & (d <= m)
    x, m, k, d = (np.where(ok, v, 0) for v in (x, m, k, d))
    lf = _log_factorials(int(m.max(initial=0)))
    logp = (lf[k] - lf[x] - lf[k - x]) + (lf[m - k] - lf[d - x] - lf[m - k - d + x]) - (lf[m] - lf[d] - lf[m - d])
    return np.where(ok, np.exp(logp), 0.0)


def hypergeom_cdf_over_draws(a: int, population: int, successes: int, n_draws: int) -> np.ndarray:
    """``P(Y_d <= a)`` for ``d = 0..n_draws-1``, ``Y_d`` = successes among the first d of a random permutation.

    Uses ``P(Y_{d+1} <= a) = P(Y_d <= a) - P(Y_d = a) (K - a) / (M - d)`` (the (d+1)-th draw is a success with
    probability ``(K - a)/(M - d)`` given ``a`` successes so far), so all ``n_draws`` values cost O(n_draws).
    """
    if a < 0:
        return np.zeros(n_draws)
    d = np.arange(max(n_draws - 1, 0))
    pmf = hypergeom_pmf(a, population, successes, d)
    with np.errstate(divide="ignore", invalid="ignore"):
        step = np.where(population - d > 0, pmf * (successes - a) / (population - d), 0.0)
    out = np.empty(n_draws)
    out[0] = 1.0
    np.subtract(1.0, np.cumsum(step), out=out[1:])
    return np.clip(out, 0.0, 1.0)


@lru_cache(maxsize=8192)
def first_q_relevant_sum(n: int, r: int, before: int, rel_before: int, q: int) -> float:
    """Expected sum of precisions at the first ``q`` (< r) relevant items of a bucket (``n``, ``r``).

    ``sum_j (r/n) E[(R + 1 + Y_j) 1{Y_j <= q-1}] / (N + j)`` with ``Y_j ~ Hypergeom(n-1, r-1, j-1)``, using
    ``E[Y 1{Y <= a}] = E[Y] P(Y' <= a - 1)``, ``Y' ~ Hypergeom(n-2, r-2, j-2)``.
    """
    j = np.arange(1, n + 1, dtype=np.float64)
    f1 = hypergeom_cdf_over_draws(q - 1, n - 1, r - 1, n)  # d = j - 1
    f2 = np.zeros(n)
    if n >= 2 and r >= 2:
        f2[1:] = hypergeom_cdf_over_draws(q - 2, n - 2, r - 2, n - 1)  # d = j - 2 for j >= 2
    mean_y = (j - 1.0) * (r - 1.0) / (n - 1.0) if n > 1 else np.zeros(n)
    terms = ((rel_before + 1.0) * f1 + mean_y * f2) / (before + j)
    return float(r / n * terms.sum())

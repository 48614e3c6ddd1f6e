"""Retrieval metrics over Hamming or real-valued rankings, with index or tie-aware tie handling.

Definitions (``../shared/spec/evaluation.md``, "Metrics"); relevance of query i and item j is
``y_i . y_j > 0`` (multi-hot labels), graded relevance ``s_ij = y_i . y_j`` (number of shared labels).
For one query with ``R`` relevant items among ``N_d``, relevant items at ranks ``t_1 < t_2 < ...``:

- ``map`` (mAP@all): ``AP = (1/R) sum_m m / t_m`` (DCMH evaluation code, Jiang & Li CVPR 2017, ``calc_map``).
- ``map@k``: the list cut to its first k; ``AP@k = (1/R_k) sum_{t_m <= k} m / t_m`` with ``R_k`` relevant
  in the top k, 0 if none (DCMH ``CalcTopMap``, used by UCMFH with k = 50).
- ``map_first_k_relevant@k``: ``(1/min(k, R)) sum_{m <= min(k, R)} m / t_m`` over the first min(k, R) relevant
  items wherever they are (the DCMHT/DScPH ``calc_map_k``); equals ``map`` when k >= R.
- ``p@n``: ``(relevant in top n) / n`` (curve; points ``n > N_d`` are replaced by ``N_d``).
- ``ndcg@k``: ``DCG@k / IDCG@k`` with ``DCG@k = sum_{t<=k} (2**s_t - 1) / log2(t + 1)`` (Järvelin & Kekäläinen,
  TOIS 2002, exponential gain as in Burges et al. ICML 2005); IDCG from the ideal ordering of the whole
  database; 0 when the query has no relevant item.
- ``pr_radius_precision`` / ``pr_radius_recall`` at radius r = 0..K (Hamming only), micro-averaged over all
  (query, item) pairs: precision = relevant pairs within r / pairs within r (0 when no pair is within r),
  recall = relevant pairs within r / all relevant pairs (DCMH ``calcPreRecRadiusLabel``).
- ``p@r2`` (Hamming only): per query, precision of the items within Hamming radius 2 (0 when none), averaged
  over queries (the hash-lookup precision of Liu et al., "Supervised hashing with kernels", CVPR 2012).

Every per-query metric is averaged over **all** queries; a query without relevant items scores 0 and is
counted in ``n_queries_without_relevant``. No query and no database item is dropped.

Ties (``tie``):

- ``"index"``: the database is permuted once with ``np.random.default_rng(shuffle_seed).permutation``, then
  ties are broken by position in that order (a stable sort) -- what published code computes on a shuffled
  database.
- ``"aware"``: the expectation of each metric over all orderings inside every bucket of equal distance/score,
  computed exactly (He, Liu & Sclaroff, "Hashing as Tie-Aware Learning to Rank", CVPR 2018). For a bucket of
  ``n`` items, ``r`` relevant, after ``N`` items of which ``R`` relevant, a relevant item at bucket position
  ``j`` has expected precision ``(R + 1 + (j-1)(r-1)/(n-1)) / (N + j)`` and each position holds a relevant item
  with probability ``r/n``; summing over ``j = 1..J`` gives
  ``(r/n) [(A - B(N+1)) (psi(N+J+1) - psi(N+1)) + B J]`` with ``A = R + 1``, ``B = (r-1)/(n-1)`` (``B = 0`` for
  ``n = 1``) and ``psi`` the digamma function (harmonic numbers). ``p@n`` and ``ndcg@k`` are linear in the
  arrangement, so their expectation only needs the fraction of the straddling bucket inside the cut.
  ``map@k`` divides by the random count ``R_k``: it is computed exactly as a mixture over the hypergeometric
  number ``x`` of relevant items of the straddling bucket that fall inside the cut (given ``x`` those ``k'``
  positions are a uniform arrangement, so the closed form applies with ``n = k'``, ``r = x``).
  ``map_first_k_relevant@k`` with ``k < R`` stops inside a bucket after its first ``q`` relevant items; the
  expectation there is ``(r/n) sum_j E[(R + 1 + Y_j) 1{Y_j <= q - 1}] / (N + j)`` with
  ``Y_j ~ Hypergeom(n-1, r-1, j-1)``, evaluated with exact hypergeometric CDFs (O(n) per such query).

Chance levels (``MetricValue.chance``): the exact expected value of the metric under a uniformly random
ranking of the whole database, i.e. the tie-aware value with all items in one bucket. For ``p@n`` this is
``mean_i R_i / N_d``; for ``map`` it is ``mean_i (1/N_d)[H_{N_d} + (R_i-1)/(N_d-1) (N_d - H_{N_d})]``, which is
``mean_i R_i / N_d`` plus ``O(log N_d / N_d)``. For the radius metrics (tie-independent, Hamming only) the
chance is that of retrieving the same number of pairs at random: precision = overall fraction of relevant
pairs, recall = fraction of all pairs within radius r, ``p@r2`` = mean over queries with a non-empty radius-2
ball of ``R_i / N_d``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

import numpy as np
from scipy.special import digamma, gammaln

from benchmarks.evaluation.codes import _popcount_u64, binarize, code_bytes, hamming_distances, packed_words
from benchmarks.evaluation.ranking import (
    BucketStats,
    bucket_stats,
    gather_rows,
    rows_per_chunk,
    score_buckets,
    stable_order,
)

__all__ = [
    "DEFAULT_P_AT_N",
    "TIES",
    "MetricSpec",
    "MetricValue",
    "RetrievalResult",
    "evaluate_hamming",
    "evaluate_scores",
    "tie_aware_ap_sum",
    "validate_labels",
]

TIES = ("index", "aware")
DEFAULT_P_AT_N = (1, 5, 10, 20, 50, 100, 500, 1000)


@dataclass(frozen=True)
class MetricSpec:
    """Which metrics to compute (names fixed by the evaluation spec).

    Attributes
    ----------
    map : bool
        ``map`` (mAP@all).
    map_at_k : tuple of int
        Cut-offs of ``map@k`` (default 50, UCMFH).
    map_first_k_relevant : tuple of int
        ``k`` of ``map_first_k_relevant@k`` (default 5000, DScPH/DDBH).
    p_at_n : tuple of int
        Points of the ``p@n`` curve (values above ``N_d`` become ``N_d``; duplicates dropped).
    pr_radius : bool
        ``pr_radius_precision``/``pr_radius_recall`` for r = 0..K (Hamming only).
    p_at_r2 : bool
        ``p@r2`` (Hamming only).
    ndcg_at_k : tuple of int
        Cut-offs of ``ndcg@k``.
    """

    map: bool = True
    map_at_k: tuple[int, ...] = (50,)
    map_first_k_relevant: tuple[int, ...] = (5000,)
    p_at_n: tuple[int, ...] = DEFAULT_P_AT_N
    pr_radius: bool = True
    p_at_r2: bool = True
    ndcg_at_k: tuple[int, ...] = (10, 50)

    def __post_init__(self) -> None:
        for name in ("map_at_k", "map_first_k_relevant", "p_at_n", "ndcg_at_k"):
            values = tuple(int(v) for v in getattr(self, name))
            if any(v < 1 for v in values):
                raise ValueError(f"MetricSpec.{name}: cut-offs must be >= 1, got {values}")
            object.__setattr__(self, name, values)

    @classmethod
    def map_only(cls) -> MetricSpec:
        """Only ``map`` (for speed comparisons)."""
        return cls(map=True, map_at_k=(), map_first_k_relevant=(), p_at_n=(), pr_radius=False, p_at_r2=False, ndcg_at_k=())


class MetricValue(NamedTuple):
    """One metric value: ``metric`` name, cut-off/point ``k`` (None if none), ``value``, ``chance`` level."""

    metric: str
    k: int | None
    value: float
    chance: float | None


@dataclass
class RetrievalResult:
    """All metric values of one evaluation.

    Attributes
    ----------
    values : list of MetricValue
        Curves give one value per point (``p@n``: k = n; ``pr_radius_*``: k = radius r).
    tie : str
        ``"index"`` or ``"aware"``.
    n_queries, n_database, n_queries_without_relevant : int
    shuffle_seed : int or None
        Seed of the database permutation (``tie="index"``); None for ``"aware"`` (no permutation needed).
    per_query : dict
        ``(metric, k) -> (n_queries,)`` float64 values for every per-query metric (not the micro-averaged
        radius curves).
    """

    values: list[MetricValue]
    tie: str
    n_queries: int
    n_database: int
    n_queries_without_relevant: int
    shuffle_seed: int | None
    per_query: dict[tuple[str, int | None], np.ndarray] = field(default_factory=dict, repr=False)

    def get(self, metric: str, k: int | None = None) -> float:
        """Value of ``metric`` at ``k``.

        Raises
        ------
        KeyError
            If that (metric, k) was not computed (the message lists what was).
        """
        for v in self.values:
            if v.metric == metric and v.k == k:
                return v.value
        have = sorted({(v.metric, v.k) for v in self.values}, key=str)
        raise KeyError(f"metric {metric!r} at k={k} not computed; available: {have}")

    def chance(self, metric: str, k: int | None = None) -> float | None:
        """Chance level of ``metric`` at ``k`` (KeyError like :meth:`get`)."""
        for v in self.values:
            if v.metric == metric and v.k == k:
                return v.chance
        raise KeyError(f"metric {metric!r} at k={k} not computed")

    def as_dicts(self) -> list[dict]:
        """One plain dict per value (metric, k, value, chance, tie, counts, shuffle_seed)."""
        common = {
            "tie": self.tie,
            "n_queries": self.n_queries,
            "n_database": self.n_database,
            "n_queries_without_relevant": self.n_queries_without_relevant,
            "shuffle_seed": self.shuffle_seed,
        }
        return [{"metric": v.metric, "k": v.k, "value": v.value, "chance": v.chance, **common} for v in self.values]


# --------------------------------------------------------------------------------------------- validation


def validate_labels(q_labels: np.ndarray, db_labels: np.ndarray, n_queries: int, n_database: int) -> tuple[np.ndarray, np.ndarray]:
    """Check multi-hot labels and return them as bool ``(n, L)`` arrays.

    Raises
    ------
    ValueError
        If a label matrix is not 2-D, has NaN or values outside {0, 1}, the widths differ, or the row counts do
        not match the codes (message names the array and shapes).
    """
    out = []
    for name, lab, n in (("query labels", q_labels, n_queries), ("database labels", db_labels, n_database)):
        lab = np.asarray(lab)
        if lab.ndim != 2:
            raise ValueError(f"{name}: expected a 2-D (n, L) multi-hot matrix, got shape {lab.shape}")
        if lab.shape[0] != n:
            raise ValueError(f"{name}: {lab.shape[0]} rows (shape {lab.shape}) but {n} codes/features")
        if lab.dtype.kind == "f" and np.isnan(lab).any():
            raise ValueError(f"{name}: labels contain NaN (shape {lab.shape})")
        if lab.dtype != np.bool_ and not np.isin(lab, (0, 1)).all():
            raise ValueError(f"{name}: labels must be multi-hot 0/1, found other values (shape {lab.shape})")
        out.append(lab.astype(bool))
    if out[0].shape[1] != out[1].shape[1]:
        raise ValueError(f"query labels {out[0].shape} and database labels {out[1].shape} have different widths")
    return out[0], out[1]


def _check_tie(tie: str) -> None:
    if tie not in TIES:
        raise ValueError(f"tie must be one of {TIES}, got {tie!r}")


# ------------------------------------------------------------------------------------------ tie-aware math


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


def _hypergeom_pmf(x: np.ndarray, population: np.ndarray, successes: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """P(X = x) for X ~ Hypergeom(population, successes, draws), 0 outside the support (all broadcast, integers).

    ``C(K, x) C(M - K, d - x) / C(M, d)`` evaluated with a table of log-factorials.
    """
    x, m, k, d = np.broadcast_arrays(*(np.asarray(v, dtype=np.int64) for v in (x, population, successes, draws)))
    ok = (x >= 0) & (x <= k) & (d - x >= 0) & (d - x <= m - k) & (d >= 0) & (d <= m)
    x, m, k, d = (np.where(ok, v, 0) for v in (x, m, k, d))
    lf = _log_factorials(int(m.max(initial=0)))
    logp = (lf[k] - lf[x] - lf[k - x]) + (lf[m - k] - lf[d - x] - lf[m - k - d + x]) - (lf[m] - lf[d] - lf[m - d])
    return np.where(ok, np.exp(logp), 0.0)


def _hypergeom_cdf_over_draws(a: int, population: int, successes: int, n_draws: int) -> np.ndarray:
    """``P(Y_d <= a)`` for ``d = 0..n_draws-1``, ``Y_d`` = successes among the first d of a random permutation.

    Uses ``P(Y_{d+1} <= a) = P(Y_d <= a) - P(Y_d = a) (K - a) / (M - d)`` (the (d+1)-th draw is a success with
    probability ``(K - a)/(M - d)`` given ``a`` successes so far), so all ``n_draws`` values cost O(n_draws).
    """
    if a < 0:
        return np.zeros(n_draws)
    d = np.arange(max(n_draws - 1, 0))
    pmf = _hypergeom_pmf(a, population, successes, d)
    with np.errstate(divide="ignore", invalid="ignore"):
        step = np.where(population - d > 0, pmf * (successes - a) / (population - d), 0.0)
    out = np.empty(n_draws)
    out[0] = 1.0
    np.subtract(1.0, np.cumsum(step), out=out[1:])
    return np.clip(out, 0.0, 1.0)


@lru_cache(maxsize=8192)
def _first_q_relevant_sum(n: int, r: int, before: int, rel_before: int, q: int) -> float:
    """Expected sum of precisions at the first ``q`` (< r) relevant items of a bucket (``n``, ``r``).

    ``sum_j (r/n) E[(R + 1 + Y_j) 1{Y_j <= q-1}] / (N + j)`` with ``Y_j ~ Hypergeom(n-1, r-1, j-1)``, using
    ``E[Y 1{Y <= a}] = E[Y] P(Y' <= a - 1)``, ``Y' ~ Hypergeom(n-2, r-2, j-2)``.
    """
    j = np.arange(1, n + 1, dtype=np.float64)
    f1 = _hypergeom_cdf_over_draws(q - 1, n - 1, r - 1, n)  # d = j - 1
    f2 = np.zeros(n)
    if n >= 2 and r >= 2:
        f2[1:] = _hypergeom_cdf_over_draws(q - 2, n - 2, r - 2, n - 1)  # d = j - 2 for j >= 2
    mean_y = (j - 1.0) * (r - 1.0) / (n - 1.0) if n > 1 else np.zeros(n)
    terms = ((rel_before + 1.0) * f1 + mean_y * f2) / (before + j)
    return float(r / n * terms.sum())


def _discounts(k_max: int) -> np.ndarray:
    """``D[t] = sum_{s=1..t} 1/log2(s+1)`` for t = 0..k_max (``D[0] = 0``)."""
    out = np.zeros(k_max + 1)
    if k_max:
        out[1:] = np.cumsum(1.0 / np.log2(np.arange(2, k_max + 2, dtype=np.float64)))
    return out


# ----------------------------------------------------------------------------------------- chunk metrics


@dataclass
class _Plan:
    spec: MetricSpec
    n_database: int
    p_at_n: tuple[int, ...]
    hamming_bits: int | None

    @property
    def need_gains(self) -> bool:
        return bool(self.spec.ndcg_at_k)

    @property
    def k_top(self) -> int:
        """Longest prefix of the ranking an index-tie metric reads (p@n, ndcg@k)."""
        return min(self.n_database, max((*self.p_at_n, *self.spec.ndcg_at_k, 0)))


def _ideal_dcg(gain_hist: np.ndarray, ks: Sequence[int], disc: np.ndarray) -> dict[int, np.ndarray]:
    """IDCG@k per row from the histogram of graded relevance ``s`` (``gain_hist[i, s]`` items with s shared)."""
    c, n_levels = gain_hist.shape
    gain = np.exp2(np.arange(n_levels, dtype=np.float64)) - 1.0
    # items with a strictly larger grade come first in the ideal order
    above = np.cumsum(gain_hist[:, ::-1], axis=1)[:, ::-1] - gain_hist
    out = {}
    for k in ks:
        lo = np.minimum(above, k)
        hi = np.minimum(above + gain_hist, k)
        out[k] = ((disc[hi] - disc[lo]) * gain[None, :]).sum(axis=1)
    return out


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def _index_chunk(plan: _Plan, rs: np.ndarray, gains_top: np.ndarray | None, ideal: dict[int, np.ndarray], disc: np.ndarray) -> dict:
    """Per-query metrics from relevance in rank order (``rs`` (c, nd) bool; ``gains_top`` (c, k_top) float)."""
    spec = plan.spec
    c, nd = rs.shape
    big_r = np.count_nonzero(rs, axis=1)
    out: dict[tuple[str, int | None], np.ndarray] = {}
    if spec.map or spec.map_at_k or spec.map_first_k_relevant:
        idx = np.flatnonzero(rs)  # row-major: relevant items of each query in rank order
        rows = np.repeat(np.arange(c), big_r)
        t = (idx - rows * nd + 1).astype(np.float64)  # rank of each relevant item
        start = np.cumsum(big_r) - big_r
        m = (np.arange(idx.size) - np.repeat(start, big_r) + 1).astype(np.float64)  # its index among relevant
        ratio = m / t
        if spec.map:
            out[("map", None)] = _safe_div(np.bincount(rows, ratio, minlength=c), big_r)
        for k in spec.map_at_k:
            sel = t <= k
            out[("map@k", k)] = _safe_div(np.bincount(rows[sel], ratio[sel], minlength=c), np.bincount(rows[sel], minlength=c))
        for k in spec.map_first_k_relevant:
            sel = m <= k
            out[("map_first_k_relevant@k", k)] = _safe_div(np.bincount(rows[sel], ratio[sel], minlength=c), np.minimum(big_r, k))
    if plan.p_at_n:
        cum = np.cumsum(rs[:, : max(plan.p_at_n)], axis=1)
        for n in plan.p_at_n:
            out[("p@n", n)] = cum[:, n - 1] / n
    if spec.ndcg_at_k:
        w = min(max(spec.ndcg_at_k), nd)
        dcg = np.cumsum(gains_top[:, :w] * (disc[1 : w + 1] - disc[:w]), axis=1)
        for k in spec.ndcg_at_k:
            kk = min(k, nd)
            out[("ndcg@k", k)] = _safe_div(dcg[:, kk - 1], ideal[k])
    return out


def _aware_chunk(plan: _Plan, st: BucketStats, ideal: dict[int, np.ndarray], disc: np.ndarray) -> dict:
    """Per-query expected metrics over tie orders from bucket counts (buckets in rank order)."""
    spec = plan.spec
    n, r = st.n, st.r
    c = n.shape[0]
    big_r = r.sum(axis=1)
    before = np.cumsum(n, axis=1) - n
    rel_before = np.cumsum(r, axis=1) - r
    s_full = tie_aware_ap_sum(n, r, before, rel_before)
    out: dict[tuple[str, int | None], np.ndarray] = {}
    if spec.map:
        out[("map", None)] = _safe_div(s_full.sum(axis=1), big_r)
    for k in spec.map_at_k:
        out[("map@k", k)] = _aware_map_at_k(n, r, before, rel_before, s_full, k)
    for k in spec.map_first_k_relevant:
        vals = np.zeros(c)
        for i in range(c):
            m = min(k, int(big_r[i]))
            if m == 0:
                continue
            full = rel_before[i] + r[i] <= m
            total = s_full[i, full].sum()
            part = np.flatnonzero((rel_before[i] < m) & (rel_before[i] + r[i] > m))
            if part.size:
                b = int(part[0])
                total += _first_q_relevant_sum(int(n[i, b]), int(r[i, b]), int(before[i, b]), int(rel_before[i, b]), m - int(rel_before[i, b]))
            vals[i] = total / m
        out[("map_first_k_relevant@k", k)] = vals
    with np.errstate(divide="ignore", invalid="ignore"):
        for p in plan.p_at_n:
            inside = np.clip(p - before, 0, n)
            out[("p@n", p)] = np.where(n > 0, r * inside / n, 0.0).sum(axis=1) / p
        if spec.ndcg_at_k:
            mean_gain = np.where(n > 0, st.g / n, 0.0)
            for k in spec.ndcg_at_k:
                lo = np.minimum(before, k)
                hi = np.minimum(before + n, k)
                out[("ndcg@k", k)] = _safe_div((mean_gain * (disc[hi] - disc[lo])).sum(axis=1), ideal[k])
    return out


def _aware_map_at_k(n: np.ndarray, r: np.ndarray, before: np.ndarray, rel_before: np.ndarray, s_full: np.ndarray, k: int) -> np.ndarray:
    """Exact expected truncated AP (DCMH ``CalcTopMap``) over tie orders: a hypergeometric mixture."""
    full = before + n <= k
    s_in = np.where(full, s_full, 0.0).sum(axis=1)
    r_in = np.where(full, r, 0).sum(axis=1)
    part = (before < k) & (before + n > k)
    has = part.any(axis=1)
    out = _safe_div(s_in, r_in)
    if has.any():
        rows = np.flatnonzero(has)
        b = part[rows].argmax(axis=1)
        nb, rb = n[rows, b], r[rows, b]
        nb_before, rb_before = before[rows, b], rel_before[rows, b]
        kp = k - nb_before  # positions of the bucket inside the cut, 1 <= kp < nb
        x = np.arange(int(np.minimum(rb, kp).max()) + 1)[None, :]
        pmf = _hypergeom_pmf(x, nb[:, None], rb[:, None], kp[:, None])
        t = tie_aware_ap_sum(kp[:, None], x, nb_before[:, None], rb_before[:, None])
        den = r_in[rows, None] + x
        out[rows] = (pmf * _safe_div(s_in[rows, None] + t, den)).sum(axis=1)
    return out


def _radius_chunk(st: BucketStats, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs and relevant pairs within distance ``radius`` per query (Hamming buckets = distances)."""
    return st.n[:, : radius + 1].sum(axis=1), st.r[:, : radius + 1].sum(axis=1)


# ------------------------------------------------------------------------------------------------ driver


def _p_at_n_points(points: Iterable[int], n_database: int) -> tuple[int, ...]:
    return tuple(sorted({min(int(p), n_database) for p in points}))


class _Accumulator:
    """Collects per-query values, radius counts and chance levels over chunks; builds the result."""

    def __init__(self, plan: _Plan, n_queries: int):
        self.plan = plan
        self.per_query: dict[tuple[str, int | None], np.ndarray] = {}
        self.chance: dict[tuple[str, int | None], np.ndarray] = {}
        self.big_r = np.zeros(n_queries, dtype=np.int64)
        bits = plan.hamming_bits
        self.radius_n = np.zeros(bits + 1) if bits is not None else None
        self.radius_r = np.zeros(bits + 1) if bits is not None else None
        self.p_r2: np.ndarray | None = None
        self.p_r2_chance: np.ndarray | None = None
        self.n_queries = n_queries

    def add(self, s: int, e: int, values: dict, chance: dict) -> None:
        for key, v in values.items():
            self.per_query.setdefault(key, np.zeros(self.n_queries))[s:e] = v
        for key, v in chance.items():
            self.chance.setdefault(key, np.zeros(self.n_queries))[s:e] = v

    def add_radius(self, s: int, e: int, st: BucketStats, big_r: np.ndarray, nd: int) -> None:
        spec = self.plan.spec
        if spec.pr_radius:
            self.radius_n += st.n.sum(axis=0)
            self.radius_r += st.r.sum(axis=0)
        if spec.p_at_r2:
            if self.p_r2 is None:
                self.p_r2, self.p_r2_chance = np.zeros(self.n_queries), np.zeros(self.n_queries)
            within, rel_within = _radius_chunk(st, 2)
            self.p_r2[s:e] = _safe_div(rel_within, within)
            self.p_r2_chance[s:e] = np.where(within > 0, big_r / nd, 0.0)

    def result(self, tie: str, n_database: int, shuffle_seed: int | None) -> RetrievalResult:
        values: list[MetricValue] = []
        order = ["map", "map@k", "map_first_k_relevant@k", "p@n", "ndcg@k"]
        for key in sorted(self.per_query, key=lambda kk: (order.index(kk[0]), kk[1] or 0)):
            values.append(MetricValue(key[0], key[1], float(self.per_query[key].mean()), float(self.chance[key].mean())))
        if self.p_r2 is not None:
            self.per_query[("p@r2", None)] = self.p_r2
            values.append(MetricValue("p@r2", None, float(self.p_r2.mean()), float(self.p_r2_chance.mean())))
        if self.plan.spec.pr_radius and self.radius_n is not None:
            total_pairs = self.n_queries * n_database
            total_rel = float(self.big_r.sum())
            cum_n, cum_r = np.cumsum(self.radius_n), np.cumsum(self.radius_r)
            for rad in range(len(cum_n)):
                prec = cum_r[rad] / cum_n[rad] if cum_n[rad] > 0 else 0.0
                values.append(MetricValue("pr_radius_precision", rad, float(prec), total_rel / total_pairs))
            for rad in range(len(cum_n)):
                rec = cum_r[rad] / total_rel if total_rel > 0 else 0.0
                values.append(MetricValue("pr_radius_recall", rad, float(rec), float(cum_n[rad] / total_pairs)))
        return RetrievalResult(
            values=values,
            tie=tie,
            n_queries=self.n_queries,
            n_database=n_database,
            n_queries_without_relevant=int((self.big_r == 0).sum()),
            shuffle_seed=shuffle_seed,
            per_query=self.per_query,
        )


def _chance_chunk(plan: _Plan, big_r: np.ndarray, gain_total: np.ndarray | None, ideal: dict, disc: np.ndarray) -> dict:
    """Exact expected metric values under a uniformly random ranking: one bucket holding the whole database."""
    nd = plan.n_database
    c = big_r.shape[0]
    st = BucketStats(
        n=np.full((c, 1), nd, dtype=np.int64),
        r=big_r.astype(np.int64)[:, None],
        g=None if gain_total is None else gain_total[:, None],
    )
    return _aware_chunk(plan, st, ideal, disc)


def _evaluate(
    chunks: Iterable[tuple[int, int, dict]],
    plan: _Plan,
    tie: str,
    n_queries: int,
    shuffle_seed: int | None,
) -> RetrievalResult:
    acc = _Accumulator(plan, n_queries)
    disc = _discounts(max((*plan.spec.ndcg_at_k, 0)) if plan.spec.ndcg_at_k else 0)
    nd = plan.n_database
    for s, e, ch in chunks:
        rel: np.ndarray = ch["rel"]
        big_r = np.count_nonzero(rel, axis=1)
        acc.big_r[s:e] = big_r
        ideal: dict[int, np.ndarray] = {}
        gain_total = None
        if plan.need_gains:
            shared = ch["shared"]
            n_levels = int(shared.max(initial=0)) + 1
            c = shared.shape[0]
            flat = shared + (np.arange(c, dtype=np.intp) * n_levels)[:, None]
            hist = np.bincount(flat.ravel(), minlength=c * n_levels).reshape(c, n_levels)
            ideal = _ideal_dcg(hist, [min(k, nd) for k in plan.spec.ndcg_at_k], disc)
            ideal = {k: ideal[min(k, nd)] for k in plan.spec.ndcg_at_k}
            gain_total = (hist * (np.exp2(np.arange(n_levels)) - 1.0)).sum(axis=1)
        if tie == "index":
            values = _index_chunk(plan, ch["rel_sorted"], ch.get("gains_top"), ideal, disc)
        else:
            values = _aware_chunk(plan, ch["stats"], ideal, disc)
        acc.add(s, e, values, _chance_chunk(plan, big_r, gain_total, ideal, disc))
        if plan.hamming_bits is not None and (plan.spec.pr_radius or plan.spec.p_at_r2):
            acc.add_radius(s, e, ch["stats"], big_r, nd)
    return acc.result(tie, nd, shuffle_seed)


def _as_words(codes: np.ndarray, bits: int | None, name: str) -> tuple[np.ndarray, int]:
    codes = np.asarray(codes)
    if bits is not None:
        if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] != code_bytes(bits):
            raise ValueError(f"{name}: with bits={bits} expected packed uint8 codes of shape (n, {code_bytes(bits)}), got {codes.dtype} {codes.shape}")
        return packed_words(codes, bits), bits
    b = binarize(codes, name)
    return packed_words(np.packbits(b, axis=1, bitorder="little"), b.shape[1]), b.shape[1]


def _label_words(labels: np.ndarray) -> np.ndarray:
    """Multi-hot bool labels ``(n, L)`` as ``(n, ceil(L/64))`` uint64 words (bit l = label l)."""
    return packed_words(np.packbits(labels, axis=1, bitorder="little"), labels.shape[1])


def _label_products(q_words: np.ndarray, db_words: np.ndarray, need_gains: bool) -> dict:
    """Relevance ``y_q . y_d > 0`` (and shared-label counts ``y_q . y_d``) by AND + popcount of label words.

    Returns ``{"rel": (c, nd) bool, "shared": (c, nd) intp}`` (``shared`` only when ``need_gains``).
    """
    rel = None
    shared = None
    for w in range(q_words.shape[1]):
        both = q_words[:, None, w] & db_words[None, :, w]
        hit = both != 0
        rel = hit if rel is None else rel | hit
        if need_gains:
            cnt = _popcount_u64(both)
            shared = cnt.astype(np.intp) if shared is None else shared + cnt
    out = {"rel": rel}
    if need_gains:
        out["shared"] = shared
    return out


def evaluate_hamming(
    q_bits: np.ndarray,
    db_bits: np.ndarray,
    q_labels: np.ndarray,
    db_labels: np.ndarray,
    *,
    tie: str = "index",
    metrics: MetricSpec | None = None,
    shuffle_seed: int = 0,
    memory_budget_mb: float = 256.0,
    bits: int | None = None,
) -> RetrievalResult:
    """Evaluate Hamming ranking of database codes for every query code.

    Parameters
    ----------
    q_bits : np.ndarray, shape (nq, K)
        Query codes: bool bits, relaxed float codes (bit = ``h >= 0``) or ±1 / 0-1 integers; or, when ``bits``
        is given, packed uint8 codes of shape ``(nq, ceil(K/8))`` (:func:`~benchmarks.evaluation.codes.pack_bits`).
    db_bits : np.ndarray, shape (nd, K)
        Database codes, same form as ``q_bits``.
    q_labels : np.ndarray, shape (nq, L)
        Multi-hot query labels (0/1, any numeric dtype or bool).
    db_labels : np.ndarray, shape (nd, L)
        Multi-hot database labels.
    tie : {"index", "aware"}
        Tie policy (module docstring).
    metrics : MetricSpec, optional
        Metrics to compute (default ``MetricSpec()``).
    shuffle_seed : int
        Seed of the database permutation for ``tie="index"``.
    memory_budget_mb : float
        Upper bound for the per-chunk temporaries (about 64 bytes per query-item pair; chunks are further
        capped at :data:`~benchmarks.evaluation.ranking.CACHE_PAIRS` pairs for speed). The database codes and
        label words and the per-query outputs come on top; no ``(nq, nd)`` matrix is ever built.
    bits : int, optional
        Code length when the codes are given packed.

    Returns
    -------
    RetrievalResult

    Raises
    ------
    ValueError
        On mismatched code lengths, row counts or label widths, NaN, non-binary codes or labels, or an empty
        query/database set (messages name the array and its shape).
    """
    spec = metrics or MetricSpec()
    _check_tie(tie)
    qw, kq = _as_words(q_bits, bits, "query codes")
    dw, kd = _as_words(db_bits, bits, "database codes")
    if kq != kd:
        raise ValueError(f"query codes have {kq} bits but database codes have {kd} bits")
    nq, nd = qw.shape[0], dw.shape[0]
    if nq == 0 or nd == 0:
        raise ValueError(f"need at least one query and one database item, got {nq} queries and {nd} items")
    ql, dbl = validate_labels(q_labels, db_labels, nq, nd)
    ql, dbl = _label_words(ql), _label_words(dbl)
    seed: int | None = None
    if tie == "index":
        seed = int(shuffle_seed)
        perm = np.random.default_rng(seed).permutation(nd)
        dw, dbl = dw[perm], dbl[perm]
    plan = _Plan(spec, nd, _p_at_n_points(spec.p_at_n, nd), kq)
    step = rows_per_chunk(nd, memory_budget_mb)
    need_stats = tie == "aware" or spec.pr_radius or spec.p_at_r2

    def chunks():
        for s in range(0, nq, step):
            e = min(nq, s + step)
            dist = hamming_distances(qw[s:e], dw, bits=kq)
            ch = _label_products(ql[s:e], dbl, plan.need_gains)
            gains = np.exp2(ch["shared"]) - 1.0 if plan.need_gains else None
            if need_stats:
                ch["stats"] = bucket_stats(dist, kq + 1, ch["rel"], gains if tie == "aware" else None)
            if tie == "index":
                order = stable_order(dist)
                del dist
                ch["rel_sorted"] = gather_rows(ch["rel"], order)
                if gains is not None:
                    ch["gains_top"] = gather_rows(gains, order[:, : plan.k_top])
            yield s, e, ch

    return _evaluate(chunks(), plan, tie, nq, seed)


def evaluate_scores(
    q_feats: np.ndarray,
    db_feats: np.ndarray,
    q_labels: np.ndarray,
    db_labels: np.ndarray,
    *,
    tie: str = "index",
    metrics: MetricSpec | None = None,
    shuffle_seed: int = 0,
    memory_budget_mb: float = 256.0,
) -> RetrievalResult:
    """Evaluate cosine-similarity ranking of float features (higher is better) with the same metric code.

    Parameters
    ----------
    q_feats : np.ndarray, shape (nq, d), float
    db_feats : np.ndarray, shape (nd, d), float
        Features; rows are L2-normalised here and scored by inner product in float64. Ties are exactly
        equal scores.
    q_labels, db_labels, tie, metrics, shuffle_seed, memory_budget_mb
        As in :func:`evaluate_hamming`. ``pr_radius`` and ``p@r2`` do not apply and are omitted.

    Returns
    -------
    RetrievalResult

    Raises
    ------
    ValueError
        On non-2-D or NaN/inf features, an all-zero row, different widths, or label problems (as
        :func:`evaluate_hamming`).
    """
    spec = metrics or MetricSpec()
    _check_tie(tie)
    feats = []
    for name, f in (("query features", q_feats), ("database features", db_feats)):
        f = np.asarray(f, dtype=np.float64)
        if f.ndim != 2 or f.shape[0] == 0 or f.shape[1] == 0:
            raise ValueError(f"{name}: expected a non-empty 2-D (n, d) array, got shape {f.shape}")
        if not np.isfinite(f).all():
            raise ValueError(f"{name}: features contain NaN or inf (shape {f.shape})")
        norms = np.linalg.norm(f, axis=1, keepdims=True)
        if (norms == 0).any():
            raise ValueError(f"{name}: row {int(np.flatnonzero(norms == 0)[0])} is all zeros (shape {f.shape}); cosine undefined")
        feats.append(f / norms)
    qf, df = feats
    if qf.shape[1] != df.shape[1]:
        raise ValueError(f"query features {qf.shape} and database features {df.shape} have different widths")
    nq, nd = qf.shape[0], df.shape[0]
    ql, dbl = validate_labels(q_labels, db_labels, nq, nd)
    ql, dbl = _label_words(ql), _label_words(dbl)
    seed: int | None = None
    if tie == "index":
        seed = int(shuffle_seed)
        perm = np.random.default_rng(seed).permutation(nd)
        df, dbl = df[perm], dbl[perm]
    spec = MetricSpec(
        map=spec.map,
        map_at_k=spec.map_at_k,
        map_first_k_relevant=spec.map_first_k_relevant,
        p_at_n=spec.p_at_n,
        pr_radius=False,
        p_at_r2=False,
        ndcg_at_k=spec.ndcg_at_k,
    )
    plan = _Plan(spec, nd, _p_at_n_points(spec.p_at_n, nd), None)
    step = rows_per_chunk(nd, memory_budget_mb)

    def chunks():
        for s in range(0, nq, step):
            e = min(nq, s + step)
            scores = qf[s:e] @ df.T
            ch = _label_products(ql[s:e], dbl, plan.need_gains)
            gains = np.exp2(ch["shared"]) - 1.0 if plan.need_gains else None
            order, sorted_bucket = score_buckets(scores)
            del scores
            rel_sorted = gather_rows(ch["rel"], order)
            if tie == "index":
                ch["rel_sorted"] = rel_sorted
                if gains is not None:
                    ch["gains_top"] = gather_rows(gains, order[:, : plan.k_top])
            else:
                g_sorted = gather_rows(gains, order) if gains is not None else None
                ch["stats"] = bucket_stats(sorted_bucket, nd, rel_sorted, g_sorted)
            yield s, e, ch

    return _evaluate(chunks(), plan, tie, nq, seed)


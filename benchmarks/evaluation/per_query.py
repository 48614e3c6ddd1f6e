"""Per-query metric values of one chunk of queries, and their accumulation into a :class:`RetrievalResult`.

Two paths compute the same metrics (definitions: :mod:`benchmarks.evaluation.metrics`):

- index ties: from the relevance sequence in rank order (:func:`_index_chunk`);
- tie-aware: from per-bucket counts, exactly (:func:`_aware_chunk`, closed forms of
  :mod:`benchmarks.evaluation.tie_aware`); the chance level of every metric is the tie-aware value with the
  whole database in one bucket (:func:`_chance_chunk`).

:func:`evaluate_chunks` drives both over the chunks produced by the evaluators and builds the result.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from benchmarks.evaluation.ranking import BucketStats
from benchmarks.evaluation.result import MetricSpec, MetricValue, RetrievalResult
from benchmarks.evaluation.tie_aware import first_q_relevant_sum, hypergeom_pmf, tie_aware_ap_sum

__all__ = ["Plan", "evaluate_chunks", "p_at_n_points"]


def _discounts(k_max: int) -> np.ndarray:
    """``D[t] = sum_{s=1..t} 1/log2(s+1)`` for t = 0..k_max (``D[0] = 0``)."""
    out = np.zeros(k_max + 1)
    if k_max:
        out[1:] = np.cumsum(1.0 / np.log2(np.arange(2, k_max + 2, dtype=np.float64)))
    return out


@dataclass
class Plan:
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


def _index_chunk(plan: Plan, rs: np.ndarray, gains_top: np.ndarray | None, ideal: dict[int, np.ndarray], disc: np.ndarray) -> dict:
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


def _aware_chunk(plan: Plan, st: BucketStats, ideal: dict[int, np.ndarray], disc: np.ndarray) -> dict:
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
                total += first_q_relevant_sum(int(n[i, b]), int(r[i, b]), int(before[i, b]), int(rel_before[i, b]), m - int(rel_before[i, b]))
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
        pmf = hypergeom_pmf(x, nb[:, None], rb[:, None], kp[:, None])
        t = tie_aware_ap_sum(kp[:, None], x, nb_before[:, None], rb_before[:, None])
        den = r_in[rows, None] + x
        out[rows] = (pmf * _safe_div(s_in[rows, None] + t, den)).sum(axis=1)
    return out


def _radius_chunk(st: BucketStats, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs and relevant pairs within distance ``radius`` per query (Hamming buckets = distances)."""
    return st.n[:, : radius + 1].sum(axis=1), st.r[:, : radius + 1].sum(axis=1)


def p_at_n_points(points: Iterable[int], n_database: int) -> tuple[int, ...]:
    return tuple(sorted({min(int(p), n_database) for p in points}))


class _Accumulator:
    """Collects per-query values, radius counts and chance levels over chunks; builds the result."""

    def __init__(self, plan: Plan, n_queries: int):
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


def _chance_chunk(plan: Plan, big_r: np.ndarray, gain_total: np.ndarray | None, ideal: dict, disc: np.ndarray) -> dict:
    """Exact expected metric values under a uniformly random ranking: one bucket holding the whole database."""
    nd = plan.n_database
    c = big_r.shape[0]
    st = BucketStats(
        n=np.full((c, 1), nd, dtype=np.int64),
        r=big_r.astype(np.int64)[:, None],
        g=None if gain_total is None else gain_total[:, None],
    )
    return _aware_chunk(plan, st, ideal, disc)


def evaluate_chunks(
    chunks: Iterable[tuple[int, int, dict]],
    plan: Plan,
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

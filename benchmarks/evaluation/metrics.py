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

Codes become bits under one convention for query and database together (:mod:`.convention`), and every
result records the distinct codes, per-bit balance and constant bits of both sides with a degenerate-code flag
(:mod:`.diagnostics`). Module layout: result types in :mod:`.result`, per-chunk metric values and their
accumulation in :mod:`.per_query`, tie-aware closed forms in :mod:`.tie_aware`, ranking in :mod:`.ranking`.

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

import numpy as np

from benchmarks.evaluation.codes import _popcount_u64, code_bytes, hamming_distances, packed_words
from benchmarks.evaluation.convention import binarize_together
from benchmarks.evaluation.diagnostics import packed_diagnostics
from benchmarks.evaluation.per_query import Plan, evaluate_chunks, p_at_n_points
from benchmarks.evaluation.ranking import bucket_stats, gather_rows, rows_per_chunk, score_buckets, stable_order
from benchmarks.evaluation.result import TIES, MetricSpec, RetrievalResult
from medhash_datasets.base import unit_rows

__all__ = ["evaluate_hamming", "evaluate_scores", "validate_labels"]


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


def _packed_codes(q_codes: np.ndarray, db_codes: np.ndarray, bits: int | None, convention: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Query and database codes as packed uint8 rows, binarised together under one ``convention``."""
    if bits is not None:
        out = []
        for name, codes in (("query codes", q_codes), ("database codes", db_codes)):
            codes = np.asarray(codes)
            if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] != code_bytes(bits):
                raise ValueError(f"{name}: with bits={bits} expected packed uint8 codes of shape (n, {code_bytes(bits)}), got {codes.dtype} {codes.shape}")
            out.append(codes)
        return out[0], out[1], bits
    b, _ = binarize_together({"query codes": q_codes, "database codes": db_codes}, convention)
    qb, db = b["query codes"], b["database codes"]
    if qb.shape[1] != db.shape[1]:
        raise ValueError(f"query codes have {qb.shape[1]} bits but database codes have {db.shape[1]} bits")
    return np.packbits(qb, axis=1, bitorder="little"), np.packbits(db, axis=1, bitorder="little"), qb.shape[1]


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
    convention: str = "auto",
) -> RetrievalResult:
    """Evaluate Hamming ranking of database codes for every query code.

    Parameters
    ----------
    q_bits : np.ndarray, shape (nq, K)
        Query codes: bool bits, ±1 or 0/1 codes, or relaxed real codes (bit = ``h >= 0``), read under one
        ``convention`` together with ``db_bits``; or, when ``bits`` is given, packed uint8 codes of shape
        ``(nq, ceil(K/8))`` (:func:`~benchmarks.evaluation.codes.pack_bits`).
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
    convention : {"auto", "pm1", "01", "relaxed"}
        How unpacked non-boolean codes become bits, decided over query AND database codes together
        (:mod:`benchmarks.evaluation.convention`; method outputs are ``"relaxed"``).

    Returns
    -------
    RetrievalResult
        With ``query_codes`` / ``database_codes`` diagnostics (distinct codes, per-bit balance, constant bits,
        degenerate flag; :mod:`benchmarks.evaluation.diagnostics`).

    Raises
    ------
    ValueError
        On mismatched code lengths, row counts or label widths, NaN, codes that are not binary under the
        convention (or whose convention is ambiguous), non-binary labels, or an empty query/database set
        (messages name the array and its shape).
    """
    spec = metrics or MetricSpec()
    _check_tie(tie)
    q_packed, db_packed, kq = _packed_codes(q_bits, db_bits, bits, convention)
    qw, dw = packed_words(q_packed, kq), packed_words(db_packed, kq)
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
    plan = Plan(spec, nd, p_at_n_points(spec.p_at_n, nd), kq)
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

    result = evaluate_chunks(chunks(), plan, tie, nq, seed)
    result.query_codes = packed_diagnostics(q_packed, kq)
    result.database_codes = packed_diagnostics(db_packed, kq)
    return result


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
        Without code diagnostics (``query_codes`` / ``database_codes`` are None).

    Raises
    ------
    ValueError
        On non-2-D or NaN/inf features, an all-zero row, different widths, or label problems (as
        :func:`evaluate_hamming`).
    """
    spec = metrics or MetricSpec()
    _check_tie(tie)
    qf, df = unit_rows(q_feats, "query features"), unit_rows(db_feats, "database features")
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
    plan = Plan(spec, nd, p_at_n_points(spec.p_at_n, nd), None)
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

    return evaluate_chunks(chunks(), plan, tie, nq, seed)

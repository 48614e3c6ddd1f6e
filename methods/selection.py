"""Validation-split model selection: the retrieval score every method selects on (methods spec, "Common ground").

Model selection reads the validation split only, and scores a candidate (an epoch, a ridge, a dimension) by
the quantity the method is judged by: **tie-aware mAP@all**, validation queries against the **training**
database, image→text and text→image, relevance ``y_i · y_j > 0`` (evaluation spec, "Ranking and ties" and
"Metrics"). It is a small, self-contained re-computation (methods never import ``benchmarks``); the tests
check it against ``benchmarks.evaluation`` value for value.

Tie-aware AP (He, Liu & Sclaroff, "Hashing as Tie-Aware Learning to Rank", CVPR 2018): for a bucket of
equal distance holding ``n`` items, ``r`` of them relevant, ranked after ``N`` items of which ``R`` are
relevant, the expected sum of the precisions at its relevant items is::

    Σ_{j=1..n} (r/n) (R + 1 + (j − 1)(r − 1)/(n − 1)) / (N + j)
        = (r/n) [(A − B(N + 1)) (ψ(N + n + 1) − ψ(N + 1)) + B n],   A = R + 1,  B = (r − 1)/(n − 1)

(``B = 0`` for ``n = 1``; ψ the digamma function), and ``AP = (1/R_total) Σ_buckets``. A query without a
relevant item scores 0 and is counted, as in the evaluator. Binary codes are bucketed by Hamming distance
(``K + 1`` buckets, a counting pass, no sort); float features by exactly equal cosine similarity.

Unlabelled data. When the validation split carries no labels (``labels`` is ``None``, has no columns or has
no label set anywhere), label relevance is undefined; the score falls back to **instance-level relevance**:
validation queries against the validation split's own other modality, the paired item being the only
relevant one (the usual unsupervised cross-modal protocol). :class:`ValidationScore.relevance` records which
rule was used.

Costs: one ``(chunk, n_db)`` block of temporaries at a time (``chunk_pairs`` query–item pairs). Codes: one
matrix product and two bincounts per chunk (no sort); float features: one argsort per chunk, the plain AP
formula on rows without equal scores and the bucket counts only on rows with ties.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from scipy.special import digamma

from medhash_datasets.base import unit_rows

__all__ = [
    "CHUNK_PAIRS",
    "PROTOCOLS",
    "ValidationScore",
    "has_labels",
    "tie_aware_ap",
    "validation_map_codes",
    "validation_map_scores",
    "validation_score",
]

#: Query–item pairs per block of temporaries (about 20 bytes each).
CHUNK_PAIRS = 1 << 20

#: Encoding protocols (evaluation spec): ``unimodal`` encodes each side from its own modality only;
#: ``paired`` encodes every item from its full pair and compares the image half with the text half.
PROTOCOLS = ("unimodal", "paired")

Labels = np.ndarray | None


# ---- relevance ---------------------------------------------------------------------------------------------
def has_labels(labels: Labels) -> bool:
    """Whether ``labels`` can define relevance: a 2-D matrix with at least one column and one label set."""
    return labels is not None and np.ndim(labels) == 2 and np.shape(labels)[1] > 0 and bool(np.any(labels))


def _label_matrix(labels: Labels, n: int, name: str) -> np.ndarray | None:
    """``labels`` as float32 (n, C) (``None`` for instance relevance); ``ValueError`` on a shape mismatch."""
    if labels is None:
        return None
    lab = np.asarray(labels)
    if lab.ndim != 2 or lab.shape[0] != n:
        raise ValueError(f"{name}: expected shape ({n}, C) to match the codes, got {lab.shape}")
    if lab.dtype.kind == "f" and not np.isfinite(lab).all():
        raise ValueError(f"{name}: labels contain NaN or inf (shape {lab.shape})")
    return (lab != 0).astype(np.float32)


def _relevance(q_lab: np.ndarray | None, db_lab: np.ndarray | None, start: int, stop: int, n_db: int) -> np.ndarray:
    """Bool (stop − start, n_db): ``y_i · y_j > 0``, or the identity (item i ↔ item i) without labels."""
    if q_lab is None or db_lab is None:
        rel = np.zeros((stop - start, n_db), dtype=bool)
        rows = np.arange(start, stop)
        inside = rows < n_db
        rel[np.flatnonzero(inside), rows[inside]] = True
        return rel
    return (q_lab[start:stop] @ db_lab.T) > 0


# ---- tie-aware AP from bucket counts -----------------------------------------------------------------------
def tie_aware_ap(n: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Tie-aware AP per row from bucket counts in rank order (He et al., CVPR 2018; module docstring).

    Parameters
    ----------
    n : np.ndarray, shape (q, B), int
        Items per bucket, best bucket first (empty buckets allowed).
    r : np.ndarray, shape (q, B), int
        Relevant items per bucket (``0 <= r <= n``).

    Returns
    -------
    np.ndarray, shape (q,), float64 in [0, 1]
        0 for a row without relevant items.
    """
    n = np.asarray(n, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64)
    before = np.cumsum(n, axis=1) - n
    rel_before = np.cumsum(r, axis=1) - r
    hit = r > 0
    nb, rb, big_n, a = n[hit], r[hit], before[hit], rel_before[hit] + 1.0
    b = np.where(nb > 1, (rb - 1.0) / np.maximum(nb - 1.0, 1.0), 0.0)
    harm = digamma(big_n + nb + 1.0) - digamma(big_n + 1.0)
    sums = np.zeros_like(n)
    sums[hit] = (rb / nb) * ((a - b * (big_n + 1.0)) * harm + b * nb)
    total_rel = r.sum(axis=1)
    return np.where(total_rel > 0, sums.sum(axis=1) / np.maximum(total_rel, 1.0), 0.0)


def _bucket_counts(keys: np.ndarray, rel: np.ndarray, n_buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """Items and relevant items per bucket for each row of ``keys`` (c, nd) in ``0..n_buckets−1`` (bincounts).

    ``keys`` is modified in place (row offsets added).
    """
    c = keys.shape[0]
    keys += (np.arange(c, dtype=keys.dtype) * n_buckets)[:, None]
    n = np.bincount(keys.ravel(), minlength=c * n_buckets).reshape(c, n_buckets)
    r = np.bincount(keys[rel], minlength=c * n_buckets).reshape(c, n_buckets)
    return n, r


def _rows_per_chunk(n_db: int, chunk_pairs: int) -> int:
    return max(1, int(chunk_pairs) // max(1, n_db))


# ---- one direction -----------------------------------------------------------------------------------------
def _pm1(codes: np.ndarray, name: str) -> np.ndarray:
    """±1 float32 (n, K) from bool bits, or relaxed / ±1 codes with bit = ``h >= 0`` (methods spec)."""
    arr = np.asarray(codes)
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(f"{name}: expected a 2-D (n, K) code matrix, got shape {arr.shape}")
    if arr.dtype == np.bool_:
        return np.where(arr, 1.0, -1.0).astype(np.float32)
    if arr.dtype.kind == "u":
        raise ValueError(f"{name}: unsigned {arr.dtype} codes are ambiguous (0/1 bits read as h >= 0 are all 1); pass bool bits or relaxed/±1 codes")
    if arr.dtype.kind not in "fi":
        raise ValueError(f"{name}: codes must be bool or numeric, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise ValueError(f"{name}: codes contain NaN (shape {arr.shape})")
    return np.where(arr >= 0, 1.0, -1.0).astype(np.float32)


def validation_map_codes(
    q_codes: np.ndarray,
    db_codes: np.ndarray,
    q_labels: Labels,
    db_labels: Labels,
    *,
    chunk_pairs: int = CHUNK_PAIRS,
) -> float:
    """Tie-aware mAP@all of a Hamming ranking (bit = ``h >= 0``).

    Parameters
    ----------
    q_codes : np.ndarray, shape (nq, K)
        Query codes: relaxed float codes in [-1, 1], ±1 integers, or bool bits.
    db_codes : np.ndarray, shape (nd, K)
        Database codes, same form.
    q_labels, db_labels : np.ndarray, shapes (nq, C) and (nd, C), or None
        Multi-hot labels (nonzero = present); relevance ``y_i · y_j > 0``. ``None`` for either means
        instance relevance: query i's only relevant item is database item i (needs ``nq <= nd`` rows paired
        by position).
    chunk_pairs : int
        Query–item pairs per block of temporaries.

    Returns
    -------
    float in [0, 1]
        Mean over all queries (a query without a relevant item counts as 0).

    Raises
    ------
    ValueError
        Non-2-D or NaN codes, unsigned integer codes, different code lengths, empty sets, label rows that do not
        match the codes.
    """
    q, d = _pm1(q_codes, "query codes"), _pm1(db_codes, "database codes")
    if q.shape[1] != d.shape[1]:
        raise ValueError(f"query codes have {q.shape[1]} bits, database codes {d.shape[1]}")
    nq, nd, bits = q.shape[0], d.shape[0], q.shape[1]
    if nq == 0 or nd == 0:
        raise ValueError(f"need at least one query and one database item, got {nq} and {nd}")
    ql, dl = _pair_labels(q_labels, db_labels, nq, nd)
    step = _rows_per_chunk(nd, chunk_pairs)
    aps = np.empty(nq)
    for s in range(0, nq, step):
        e = min(nq, s + step)
        # Hamming distance (K − a·b)/2: a·b is an exact integer in float32 (|a·b| <= K < 2**24)
        dist = (bits - (q[s:e] @ d.T).astype(np.int64)) >> 1
        n, r = _bucket_counts(dist, _relevance(ql, dl, s, e, nd), bits + 1)
        aps[s:e] = tie_aware_ap(n, r)
    return float(aps.mean())


def validation_map_scores(
    q_feats: np.ndarray,
    db_feats: np.ndarray,
    q_labels: Labels,
    db_labels: Labels,
    *,
    chunk_pairs: int = CHUNK_PAIRS,
) -> float:
    """Tie-aware mAP@all of a cosine-similarity ranking of float features (higher first; ties = equal scores).

    Parameters
    ----------
    q_feats : np.ndarray, shape (nq, d), float
    db_feats : np.ndarray, shape (nd, d), float
        Rows are L2-normalised here and scored in float64.
    q_labels, db_labels, chunk_pairs
        As in :func:`validation_map_codes`.

    Returns
    -------
    float in [0, 1]

    Raises
    ------
    ValueError
        Non-2-D, non-finite or all-zero rows (cosine undefined), different widths, empty sets, label mismatch.
    """
    q, d = unit_rows(q_feats, "query features"), unit_rows(db_feats, "database features")
    if q.shape[1] != d.shape[1]:
        raise ValueError(f"query features {q.shape} and database features {d.shape} have different widths")
    nq, nd = q.shape[0], d.shape[0]
    ql, dl = _pair_labels(q_labels, db_labels, nq, nd)
    step = _rows_per_chunk(nd, chunk_pairs)
    aps = np.empty(nq)
    for s in range(0, nq, step):
        e = min(nq, s + step)
        scores = q[s:e] @ d.T
        order = np.argsort(-scores, axis=1)  # bucket counts do not depend on the order inside a tie
        ranked = np.take_along_axis(scores, order, axis=1)
        rel = np.take_along_axis(_relevance(ql, dl, s, e, nd), order, axis=1)
        aps[s:e] = _ranked_ap(ranked, rel)
    return float(aps.mean())


def _ranked_ap(ranked: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """Tie-aware AP per row of scores sorted descending (c, nd) with their relevance (c, nd) bool.

    Rows without equal scores (the usual case for float features) take the plain formula
    ``(1/R) Σ_m m / t_m`` over their relevant items only; rows with ties go through the bucket counts.
    """
    c, nd = ranked.shape
    same = ranked[:, 1:] == ranked[:, :-1]
    tied = same.any(axis=1)
    rows, cols = np.nonzero(rel)
    hits = np.cumsum(rel, axis=1, dtype=np.int64)[rows, cols]
    total = np.bincount(rows, minlength=c)
    aps = np.bincount(rows, weights=hits / (cols + 1.0), minlength=c) / np.maximum(total, 1)
    if tied.any():
        sub = np.flatnonzero(tied)
        keys = np.zeros((sub.size, nd), dtype=np.int64)  # bucket id in rank order: +1 at every change of score
        np.cumsum(~same[sub], axis=1, out=keys[:, 1:])
        n, r = _bucket_counts(keys, rel[sub], nd)
        aps[sub] = tie_aware_ap(n, r)
    return aps


def _pair_labels(q_labels: Labels, db_labels: Labels, nq: int, nd: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Float label matrices for both sides, or ``(None, None)`` for instance relevance."""
    ql, dl = _label_matrix(q_labels, nq, "query labels"), _label_matrix(db_labels, nd, "database labels")
    if ql is None or dl is None:
        if nq > nd:
            raise ValueError(f"instance relevance pairs query i with database item i: need nq <= nd, got {nq} > {nd}")
        return None, None
    if ql.shape[1] != dl.shape[1]:
        raise ValueError(f"query labels {ql.shape} and database labels {dl.shape} have different widths")
    return ql, dl


# ---- both directions, from an encoder ----------------------------------------------------------------------
class ValidationScore(NamedTuple):
    """Cross-modal validation mAP of one candidate model.

    Attributes
    ----------
    i2t, t2i : float
        Tie-aware mAP@all, image queries → text database and text queries → image database.
    relevance : str
        ``"labels"`` (validation queries vs the training database, ``y_i · y_j > 0``) or ``"instance"``
        (no validation labels: validation queries vs the validation split, the paired item relevant).
    """

    i2t: float
    t2i: float
    relevance: str

    @property
    def mean(self) -> float:
        """``(i2t + t2i) / 2``, the selection criterion."""
        return 0.5 * (self.i2t + self.t2i)


Encoder = Callable[..., Any]  # encode(image=..., text=...) -> object with .image / .text (e.g. EncodedBatch)


def _encode(encode: Encoder, split: Any, protocol: str) -> tuple[np.ndarray, np.ndarray]:
    if protocol == "paired":
        both = encode(image=split.image, text=split.text)
        return np.asarray(both.image), np.asarray(both.text)
    return np.asarray(encode(image=split.image, text=None).image), np.asarray(encode(image=None, text=split.text).text)


def validation_score(
    encode: Encoder,
    train: Any,
    validation: Any,
    *,
    binary: bool = True,
    protocol: str = "unimodal",
    chunk_pairs: int = CHUNK_PAIRS,
) -> ValidationScore:
    """Score a fitted candidate on the validation split (the one entry point for model selection).

    Parameters
    ----------
    encode : callable
        ``encode(image=..., text=...)`` returning an object with ``.image`` and ``.text`` arrays (the
        :meth:`~methods.base.HashingMethod.encode` signature): relaxed codes (n, K) when ``binary``, float
        embeddings (n, d) otherwise. Called with one modality at a time (``unimodal``) or both (``paired``).
    train : FeatureSplit
        The training split: the database (image (n, d_img), text (n, d_txt), labels (n, C)).
    validation : FeatureSplit
        The validation split: the queries. Never pass the query split here.
    binary : bool
        Hamming ranking of ``h >= 0`` bits (True) or cosine ranking of float features (False).
    protocol : {"unimodal", "paired"}
        How items are encoded (evaluation spec, "Retrieval tasks").
    chunk_pairs : int
        Query–item pairs per block of temporaries.

    Returns
    -------
    ValidationScore

    Raises
    ------
    ValueError
        Unknown protocol, an empty validation split, or shape problems (see :func:`validation_map_codes`).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if len(validation.image) == 0:
        raise ValueError("validation split is empty: nothing to select on")
    labelled = has_labels(validation.labels) and has_labels(train.labels)
    database = train if labelled else validation
    q_img, q_txt = _encode(encode, validation, protocol)
    db_img, db_txt = _encode(encode, database, protocol)
    ql = validation.labels if labelled else None
    dl = database.labels if labelled else None
    score = validation_map_codes if binary else validation_map_scores
    return ValidationScore(
        i2t=score(q_img, db_txt, ql, dl, chunk_pairs=chunk_pairs),
        t2i=score(q_txt, db_img, ql, dl, chunk_pairs=chunk_pairs),
        relevance="labels" if labelled else "instance",
    )

"""Ranking by counting sort over distance buckets, in query chunks under a memory budget.

A K-bit Hamming distance takes only K + 1 values, so a ranking is a sequence of *buckets* (all items at
distance 0, then 1, ...). Everything the metrics need is obtained in O(Nd) per query, without a comparison
sort:

- tie-aware metrics need only per-bucket counts (items ``n``, relevant ``r``, summed gains ``g``), obtained
  with one :func:`numpy.bincount` over ``row * n_buckets + key`` (a counting pass);
- index-tie metrics need the relevance sequence in rank order with ties in database order. That is a stable
  counting sort by bucket: :func:`stable_order` uses NumPy's stable sort, which for keys of 16 bits or less is
  an LSD radix sort (one counting pass per byte, O(Nd)); the database has been shuffled once beforehand by the
  caller, so database order inside a bucket is a seeded random order.

Real-valued scores (cosine similarities) are turned into the same representation by :func:`score_buckets`:
a descending stable sort, then runs of exactly equal scores are buckets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "BucketStats",
    "bucket_stats",
    "gather_rows",
    "rows_per_chunk",
    "score_buckets",
    "stable_order",
]

#: bytes of temporaries per (query, database item) pair in a chunk; sized from the index-tie path
#: (distances 1-2, label products 4, relevance 1, order 8, bincount keys 8, gathered relevance 1, and up to
#: 40 bytes per relevant pair for rank arithmetic) with margin.
BYTES_PER_PAIR = 64

#: pairs per chunk beyond which larger chunks only cost cache misses and page faults (measured: 2**18 pairs,
#: ~16 MiB of temporaries, is as fast as any larger chunk); the memory budget can only lower this.
CACHE_PAIRS = 1 << 18


def rows_per_chunk(n_database: int, memory_budget_mb: float, bytes_per_pair: int = BYTES_PER_PAIR) -> int:
    """Queries per chunk: ``rows * n_database * bytes_per_pair`` within the budget and ``rows * n_database``
    at most :data:`CACHE_PAIRS` (at least 1 row).

    Raises
    ------
    ValueError
        If ``memory_budget_mb`` is not positive.
    """
    if not memory_budget_mb > 0:
        raise ValueError(f"memory_budget_mb must be > 0, got {memory_budget_mb}")
    by_budget = int(memory_budget_mb * 2**20) // max(1, n_database * bytes_per_pair)
    return max(1, min(by_budget, CACHE_PAIRS // max(1, n_database)))


@dataclass(frozen=True)
class BucketStats:
    """Per-bucket counts of one chunk of queries, buckets in rank order (best first).

    Attributes
    ----------
    n : np.ndarray, shape (c, B), int64
        Items per bucket (may be 0).
    r : np.ndarray, shape (c, B), int64
        Relevant items per bucket.
    g : np.ndarray or None, shape (c, B), float64
        Sum of exponential gains ``2**s - 1`` per bucket (``s`` = shared labels), when requested.
    """

    n: np.ndarray
    r: np.ndarray
    g: np.ndarray | None = None


def bucket_stats(keys: np.ndarray, n_buckets: int, rel: np.ndarray, gains: np.ndarray | None = None) -> BucketStats:
    """Count items, relevant items (and gains) per bucket for each row, by one counting pass.

    Parameters
    ----------
    keys : np.ndarray, shape (c, nd), unsigned or non-negative int
        Bucket of each item (Hamming distance, or dense rank of the score); values in ``0..n_buckets-1``.
    n_buckets : int
        Number of buckets B (K + 1 for K-bit codes).
    rel : np.ndarray, shape (c, nd), bool
        Binary relevance.
    gains : np.ndarray, shape (c, nd), float64, optional
        Per-item gain to sum per bucket.

    Returns
    -------
    BucketStats
    """
    c, _ = keys.shape
    flat = keys.astype(np.intp)
    flat += (np.arange(c, dtype=np.intp) * n_buckets)[:, None]
    both = np.bincount((flat * 2 + rel).ravel(), minlength=2 * c * n_buckets).reshape(c, n_buckets, 2)
    n = both.sum(axis=2)
    r = both[:, :, 1].astype(np.int64)
    g = None
    if gains is not None:
        g = np.bincount(flat.ravel(), weights=gains.ravel(), minlength=c * n_buckets).reshape(c, n_buckets)
    return BucketStats(n=n.astype(np.int64), r=r, g=g)


def stable_order(keys: np.ndarray) -> np.ndarray:
    """Rank order per row: ascending key, ties by position (a stable counting sort).

    Parameters
    ----------
    keys : np.ndarray, shape (c, nd), uint8/uint16 (Hamming distances) or any integer dtype

    Returns
    -------
    np.ndarray, shape (c, nd), intp
        ``order[i, t]`` = database index at rank ``t + 1`` for query ``i``.

    Notes
    -----
    For integer keys of at most 16 bits NumPy's ``kind="stable"`` sort is an LSD radix sort (a counting sort per
    byte), i.e. O(nd) per row; wider keys fall back to timsort (used only for real-valued scores).
    """
    return np.argsort(keys, axis=1, kind="stable")


def gather_rows(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``values[i, order[i, t]]`` for every row ``i`` (``(c, nd)`` values, ``(c, m)`` order -> ``(c, m)``)."""
    c, nd = values.shape
    flat = order + (np.arange(c, dtype=np.intp) * nd)[:, None]
    return values.ravel()[flat]


def score_buckets(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rank real-valued scores (higher first) and group exactly equal scores into buckets.

    Parameters
    ----------
    scores : np.ndarray, shape (c, nd), float

    Returns
    -------
    order : np.ndarray, shape (c, nd), intp
        Descending score, ties by database position (stable sort).
    sorted_bucket : np.ndarray, shape (c, nd), intp
        Bucket id of the item at each rank (0 for the best score, +1 at every change of score), so buckets
        are in rank order and at most ``nd`` per row.
    """
    order = np.argsort(-scores, axis=1, kind="stable")
    s = np.take_along_axis(scores, order, axis=1)
    change = s[:, 1:] != s[:, :-1]
    sorted_bucket = np.zeros(scores.shape, dtype=np.intp)
    np.cumsum(change, axis=1, out=sorted_bucket[:, 1:])
    return order, sorted_bucket

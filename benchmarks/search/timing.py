"""Timing engines fairly in one process (alternating blocks of queries) and recall of approximate engines."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmarks.search.base import SearchEngine


@dataclass
class EngineTiming:
    """What :func:`time_engine` measured (times in ms unless named ``_s``)."""

    latencies_ms: np.ndarray  # (n_queries,) one query per call
    batch_ms: np.ndarray  # (repeats,) one call with batch_size queries
    batch_size: int
    build_s: float
    index_bytes: int
    batch_ids: np.ndarray  # (batch_size, k) results of the last batch call
    batch_distances: np.ndarray
    db_size: int

    @property
    def bytes_per_item(self) -> float:
        return self.index_bytes / self.db_size

    @property
    def latency_ms_median(self) -> float:
        return float(np.median(self.latencies_ms))

    @property
    def latency_ms_p95(self) -> float:
        return float(np.percentile(self.latencies_ms, 95))

    @property
    def batch_latency_ms_median(self) -> float:
        return float(np.median(self.batch_ms))

    @property
    def throughput_qps(self) -> float:
        return self.batch_size / (self.batch_latency_ms_median / 1e3)


@dataclass
class Contender:
    """One engine to time at one database size, with its data (see :func:`time_engines`)."""

    label: str
    engine: SearchEngine
    database: np.ndarray  # (N, B) uint8 or (N, d) float32
    single_queries: np.ndarray  # one timed call per row
    batch_queries: np.ndarray  # searched together in each timed batch call
    meta: dict[str, Any] = field(default_factory=dict)


def time_engines(
    contenders: Sequence[Contender],
    *,
    k: int,
    repeats: int,
    block: int = 10,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, EngineTiming]:
    """Build every engine, then time them in alternating blocks so that load changes hit all of them alike.

    Each engine is built (timed) and warmed up (one single and one batch call: thread pools, scratch
    buffers, caches). Single queries are then timed in blocks: engine after engine answers its next
    ``block`` queries (one call each, after one untimed warm-up call on the block's first query, since the
    previous engine may have evicted its data from the caches), until every query is done; then, ``repeats``
    times, every engine answers its whole batch in turn. Alternating matters on a shared machine: engines
    timed minutes apart would see different loads from other processes, and their ratios would mix that in.

    Parameters
    ----------
    contenders : sequence of Contender
        Fresh engines with their database and queries; labels must be unique.
    k : int
        Neighbours per query (>= 1).
    repeats : int
        Timed batch calls per engine.
    block : int
        Single queries an engine answers before the next engine's turn (>= 1).
    clock : callable
        Seconds counter (``time.perf_counter`` for wall-clock, ``time.process_time`` for CPU time).

    Returns
    -------
    dict[str, EngineTiming]
        By contender label.

    Raises
    ------
    ValueError
        For duplicate labels, contenders with different numbers of single queries, or ``block < 1``.
    """
    labels = [c.label for c in contenders]
    if len(set(labels)) != len(labels):
        raise ValueError(f"time_engines: duplicate contender labels in {labels}")
    n_single = {c.single_queries.shape[0] for c in contenders}
    if len(n_single) > 1:
        raise ValueError(f"time_engines: contenders have different single-query counts {sorted(n_single)}")
    if block < 1:
        raise ValueError(f"time_engines: block must be >= 1, got {block}")
    build: dict[str, float] = {}
    memory: dict[str, int] = {}
    for c in contenders:
        t0 = clock()
        c.engine.build(c.database)
        build[c.label] = clock() - t0
        memory[c.label] = c.engine.memory_bytes()
        c.engine.search(c.single_queries[:1], k)  # warm-up
        c.engine.search(c.batch_queries, k)
    n = n_single.pop() if n_single else 0
    lat = {c.label: np.empty(n) for c in contenders}
    for start in range(0, n, block):
        for c in contenders:
            c.engine.search(c.single_queries[start : start + 1], k)  # untimed: warm this engine's caches
            for i in range(start, min(n, start + block)):
                q = c.single_queries[i : i + 1]
                t0 = clock()
                c.engine.search(q, k)
                lat[c.label][i] = (clock() - t0) * 1e3
    batch = {c.label: np.empty(repeats) for c in contenders}
    last: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for r in range(repeats):
        for c in contenders:
            t0 = clock()
            last[c.label] = c.engine.search(c.batch_queries, k)
            batch[c.label][r] = (clock() - t0) * 1e3
    return {
        c.label: EngineTiming(lat[c.label], batch[c.label], int(c.batch_queries.shape[0]), build[c.label],
                              memory[c.label], last[c.label][0], last[c.label][1], int(c.database.shape[0]))
        for c in contenders
    }


def time_engine(
    engine: SearchEngine,
    database: np.ndarray,
    single_queries: np.ndarray,
    batch_queries: np.ndarray,
    *,
    k: int,
    repeats: int,
    clock: Callable[[], float] = time.perf_counter,
) -> EngineTiming:
    """Build one ``engine`` on ``database`` and time it (:func:`time_engines` with a single contender)."""
    c = Contender(engine.name, engine, database, single_queries, batch_queries)
    return time_engines([c], k=k, repeats=repeats, clock=clock)[engine.name]


def hamming_to(queries: np.ndarray, database: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Hamming distances between each query and the database items it names (``-1`` ids give -1).

    Parameters
    ----------
    queries : (nq, B) uint8; database : (N, B) uint8; ids : (nq, k) int64

    Returns
    -------
    np.ndarray, shape (nq, k), int64
    """
    valid = ids >= 0
    picked = database[np.where(valid, ids, 0)]  # (nq, k, B)
    d = np.bitwise_count(picked ^ queries[:, None, :]).sum(axis=2, dtype=np.int64)
    return np.where(valid, d, -1)


def recall_at_k(approx_dist: np.ndarray, approx_ids: np.ndarray, exact_dist: np.ndarray, k: int) -> float:
    """Tie-aware recall@k of an approximate engine against exact search.

    A returned item counts as a true neighbour when its true distance is no larger than the exact k-th
    neighbour's distance (with Hamming ties any of the tied items is a correct answer; the ann-benchmarks
    convention of counting items within the k-th true distance). Recall = mean over queries of
    (true neighbours returned) / k.

    Parameters
    ----------
    approx_dist : np.ndarray, shape (nq, k)
        True distances of the returned items (see :func:`hamming_to`); ignored where ``approx_ids < 0``.
    approx_ids : np.ndarray, shape (nq, k), int64
    exact_dist : np.ndarray, shape (nq, k)
        Exact top-k distances, ascending.
    k : int

    Returns
    -------
    float in [0, 1]
    """
    kth = exact_dist[:, k - 1 : k]
    hits = (approx_ids >= 0) & (approx_dist <= kth)
    return float(np.mean(np.minimum(hits.sum(axis=1), k) / k))


# ================================================================================================
# The whole measurement
# ================================================================================================

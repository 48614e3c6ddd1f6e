"""Efficiency measurements: query latency, throughput, build time and memory of search engines, hash codes
against real-valued features, from 10³ to 10⁶ database items (evaluation spec, "Efficiency").

One call of :func:`run_efficiency` measures, in one process and with one thread setting (default 1), every
engine of :mod:`benchmarks.engines` at every database size, engines alternating in blocks of queries so that
the load of other processes hits all of them alike (:func:`time_engines`); times are wall-clock, or with
``clock="cpu"`` the CPU time of the process (robust on a shared machine):

* ``latency_ms_median`` / ``latency_ms_p95``: time to return the top-k for ONE query (batch size 1), over
  ``n_queries`` different queries after a warm-up (ms per query);
* ``batch_latency_ms_median``: time for one call with ``batch_size`` queries, median over ``repeats`` calls
  (ms per batch), and ``throughput_qps = batch_size / that time``;
* ``build_s`` (index construction, s), ``index_bytes`` (measured: the arrays kept, or the serialised faiss
  index), ``bytes_per_item = index_bytes / db_size``;
* ``recall@k`` of approximate engines against exact search (tie-aware, :func:`recall_at_k`);
* ``encode_ms_per_item``: a trained method's time to turn one query's features into a code.

Database codes beyond the dataset's own database are drawn independently per bit with the bit frequencies of
the trained database codes (:func:`extend_codes`), or uniformly with ``random``; float features beyond the
dataset are drawn from a Gaussian with the real features' per-dimension mean and std and L2-normalised
(exact search costs the same for any values). Smaller databases are prefixes of the largest, so every size
holds the real items first. The paper figures these reproduce are MCMFH's "1.73× faster than real-valued
retrieval" and "16-bit codes take a quarter of 64-bit memory"; ratios, not absolute times, are comparable
across machines.
"""

from __future__ import annotations

import datetime as _dt
import math
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.engines import SearchEngine, create_engine
from benchmarks.results import ROW_FIELDS, config_hash, git_commit, package_versions, write_cell

DEFAULT_ENGINES = ("popcount", "BFlat", "BHash4", "numpy-ip", "FlatIP")
DEFAULT_DB_SIZES = (1_000, 10_000, 100_000, 1_000_000)
#: Width of BiomedCLIP image/text embeddings, the real-valued reference dimension.
BIOMEDCLIP_DIM = 512
#: (query modality, database modality) per task, as in the runner.
TASK_SIDES = {"i2t": ("image", "text"), "t2i": ("text", "image"), "i2i": ("image", "image"), "t2t": ("text", "text")}
_DRAW_CHUNK = 1 << 16
#: Timers selectable with ``--clock``: wall-clock latency, or the CPU time of this process.
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


@dataclass
class EfficiencySpec:
    """What one ``efficiency`` invocation measures.

    Attributes
    ----------
    bits : list[int]
        Code lengths K (each >= 8).
    db_sizes : list[int]
        Database sizes N (each >= 1).
    k : int
        Neighbours returned per query (clipped to N).
    engines : list[str]
        Engine spec strings (:func:`benchmarks.engines.create_engine`); binary and float engines mixed.
    feature_dims : list[int] | None
        Dimensions of the real-valued features; ``None``: the database modality's encoder dimension and
        512 (BiomedCLIP) with a method, 512 alone with ``random``.
    method, dataset : str | None
        Trained codes of ``method`` on ``dataset``; both ``None`` for uniformly random codes.
    task : str
        Which side is the query and which the database (``i2t`` default) for trained codes.
    n_queries : int
        Single-query latency samples (different queries, batch size 1).
    batch_size, repeats : int
        Queries per batch call and number of timed batch calls.
    threads : int
        Threads for faiss (OpenMP), BLAS, torch and the popcount engine's batches. Default 1: every engine
        then runs on one core, which keeps ratios meaningful on a shared machine (with more threads than
        idle cores, OpenMP and BLAS pools wait on descheduled threads and single-query times of faiss rise
        from ~0.05 ms to tens of ms).
    clock : {"wall", "cpu"}
        ``wall`` (``time.perf_counter``, default) times latency as a user sees it; ``cpu``
        (``time.process_time``, the CPU time this process used) leaves out the time the process waits while
        other processes run, the robust figure on a shared machine. ``cpu`` needs ``threads == 1`` (it sums
        over threads).
    seed : int
        Seeds drawn codes/features and method training.
    """

    bits: list[int] = field(default_factory=lambda: [16, 32, 64])
    db_sizes: list[int] = field(default_factory=lambda: list(DEFAULT_DB_SIZES))
    k: int = 100
    engines: list[str] = field(default_factory=lambda: list(DEFAULT_ENGINES))
    feature_dims: list[int] | None = None
    method: str | None = None
    dataset: str | None = None
    task: str = "i2t"
    n_queries: int = 50
    batch_size: int = 100
    repeats: int = 5
    threads: int = 1
    clock: str = "wall"
    seed: int = 0
    out: Path = Path("results")
    data_root: Path | None = None
    encoder: str = "auto"
    cache_dir: Path | None = None
    device: str = "cpu"
    dataset_options: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    command: str = ""

    @property
    def random(self) -> bool:
        """Whether codes and features are drawn uniformly (no trained method)."""
        return self.method is None

    @property
    def source_name(self) -> str:
        """``OUT/efficiency/<source_name>/``: the dataset name, or ``random``."""
        return self.dataset if self.dataset else "random"

    def validate(self) -> None:
        """Check the values a user can get wrong.

        Raises
        ------
        ValueError
            Naming the field and the allowed values.
        """
        if (self.method is None) != (self.dataset is None):
            raise ValueError("efficiency: give both a method and a dataset, or neither (random codes)")
        if not self.bits or any(b < 8 for b in self.bits):
            raise ValueError(f"efficiency: bits must be integers >= 8, got {self.bits}")
        if not self.db_sizes or any(n < 1 for n in self.db_sizes):
            raise ValueError(f"efficiency: db sizes must be >= 1, got {self.db_sizes}")
        if self.feature_dims is not None and any(d < 1 for d in self.feature_dims):
            raise ValueError(f"efficiency: feature dims must be >= 1, got {self.feature_dims}")
        for name in ("k", "n_queries", "batch_size", "repeats", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"efficiency: {name} must be >= 1, got {getattr(self, name)}")
        if self.clock not in CLOCKS:
            raise ValueError(f"efficiency: unknown clock {self.clock!r}; valid: {', '.join(CLOCKS)}")
        if self.clock == "cpu" and self.threads != 1:
            raise ValueError("efficiency: clock 'cpu' sums the CPU time of all threads; use it with threads=1")
        if self.task not in TASK_SIDES:
            raise ValueError(f"efficiency: unknown task {self.task!r}; valid: {', '.join(TASK_SIDES)}")
        if not self.engines:
            raise ValueError("efficiency: no engines given")
        for spec in self.engines:
            create_engine(spec)  # raises RegistryError with the valid names


# ================================================================================================
# Codes and features: drawn, or trained and extended to any size
# ================================================================================================
def pack_codes(bits: np.ndarray) -> np.ndarray:
    """Pack 0/1 (or bool) bits ``(n, K)`` into ``(n, ceil(K/8))`` uint8, little-endian within each byte
    (evaluation spec, "Codes and distances"; the faiss binary layout)."""
    return np.packbits(np.asarray(bits, dtype=bool), axis=1, bitorder="little")


def bit_frequencies(packed: np.ndarray, bits: int) -> np.ndarray:
    """Fraction of ones of every bit position.

    Parameters
    ----------
    packed : np.ndarray, shape (n, ceil(bits/8)), uint8
    bits : int

    Returns
    -------
    np.ndarray, shape (bits,), float64 in [0, 1]
    """
    unpacked = np.unpackbits(packed, axis=1, count=bits, bitorder="little")
    return unpacked.mean(axis=0, dtype=np.float64)


def draw_codes(n: int, bits: int, rng: np.random.Generator, p_one: np.ndarray | None = None) -> np.ndarray:
    """Draw ``n`` packed ``bits``-bit codes, each bit independently 1 with probability ``p_one[j]``.

    Parameters
    ----------
    n, bits : int
    rng : np.random.Generator
    p_one : np.ndarray | None, shape (bits,)
        Per-bit probability of a one; ``None`` draws uniform codes (every byte uniform).

    Returns
    -------
    np.ndarray, shape (n, ceil(bits/8)), uint8
        Packed little-endian; padding bits (beyond ``bits``) are zero.
    """
    n_bytes = (bits + 7) // 8
    out = np.empty((n, n_bytes), dtype=np.uint8)
    for start in range(0, n, _DRAW_CHUNK):
        stop = min(n, start + _DRAW_CHUNK)
        if p_one is None and bits % 8 == 0:
            out[start:stop] = rng.integers(0, 256, size=(stop - start, n_bytes), dtype=np.uint8)
        else:
            p = np.full(bits, 0.5) if p_one is None else np.asarray(p_one, dtype=np.float64)
            out[start:stop] = pack_codes(rng.random((stop - start, bits), dtype=np.float32) < p)
    return out


def extend_codes(real: np.ndarray, n: int, bits: int, rng: np.random.Generator) -> np.ndarray:
    """A database of ``n`` codes: the real codes first, then codes drawn with their per-bit frequencies.

    Parameters
    ----------
    real : np.ndarray, shape (n_real, ceil(bits/8)), uint8
        Packed trained database codes.
    n : int
        Wanted size; when ``n <= n_real`` the first ``n`` real codes are returned.

    Returns
    -------
    np.ndarray, shape (n, ceil(bits/8)), uint8
    """
    if n <= real.shape[0]:
        return np.ascontiguousarray(real[:n])
    drawn = draw_codes(n - real.shape[0], bits, rng, bit_frequencies(real, bits))
    return np.concatenate([real, drawn], axis=0)


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """L2-normalise the rows of ``x`` in place (zero rows stay zero) and return it; float32 ``(n, d)``."""
    for start in range(0, x.shape[0], _DRAW_CHUNK):
        block = x[start : start + _DRAW_CHUNK]
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        np.divide(block, np.maximum(norms, np.float32(1e-12)), out=block)
    return x


def draw_features(
    n: int, dim: int, rng: np.random.Generator, mean: np.ndarray | None = None, std: np.ndarray | None = None
) -> np.ndarray:
    """``n`` L2-normalised float32 features of dimension ``dim``: Gaussian with per-dimension ``mean`` and
    ``std`` (standard normal when ``None``), drawn in chunks. Returns shape ``(n, dim)`` float32."""
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, _DRAW_CHUNK):
        stop = min(n, start + _DRAW_CHUNK)
        block = rng.standard_normal((stop - start, dim), dtype=np.float32)
        if std is not None:
            block *= std.astype(np.float32)
        if mean is not None:
            block += mean.astype(np.float32)
        out[start:stop] = block
    return normalize_rows(out)


def extend_features(real: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """The L2-normalised real features first, then Gaussian draws matching their per-dimension mean and std.

    Returns shape ``(n, d)`` float32 (``d = real.shape[1]``)."""
    real = normalize_rows(np.array(real, dtype=np.float32))
    if n <= real.shape[0]:
        return np.ascontiguousarray(real[:n])
    mean, std = real.mean(axis=0), real.std(axis=0)
    return np.concatenate([real, draw_features(n - real.shape[0], real.shape[1], rng, mean, std)], axis=0)


def _cycle_rows(x: np.ndarray, n: int) -> np.ndarray:
    """``n`` rows of ``x`` (repeated cyclically when ``x`` has fewer)."""
    reps = -(-n // x.shape[0])
    return np.ascontiguousarray(np.concatenate([x] * reps, axis=0)[:n]) if reps > 1 else np.ascontiguousarray(x[:n])


@dataclass
class CodeSet:
    """Packed query codes and the largest database of one code length (smaller databases are prefixes)."""

    bits: int
    queries: np.ndarray  # (nq, B) uint8
    database: np.ndarray  # (N_max, B) uint8
    db_source: str  # "uniform" or "bit-frequencies" (+ real codes first)
    n_real: int = 0
    encode_ms: dict[str, float] = field(default_factory=dict)  # task -> ms per item
    method_info: dict[str, Any] = field(default_factory=dict)


@dataclass
class FeatureSet:
    """Float32 L2-normalised query features and the largest database at one dimension."""

    dim: int
    queries: np.ndarray  # (nq, d) float32
    database: np.ndarray  # (N_max, d) float32
    db_source: str  # "gaussian" or "encoder-features"
    n_real: int = 0


# ================================================================================================
# Measuring one engine
# ================================================================================================
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
@dataclass
class EfficiencyResult:
    """Rows written, tables and figures made by :func:`run_efficiency`."""

    rows: list[dict[str, Any]]
    out_dir: Path
    cell_paths: list[Path]
    ratio_table: Any  # pandas DataFrame
    targets: list[dict[str, Any]]
    figures: list[Path]


class ThreadSettings:
    """Apply ``threads`` to faiss (OpenMP), BLAS (threadpoolctl, when installed) and torch; restore after."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._restore: list[Callable[[], None]] = []

    def __enter__(self) -> ThreadSettings:
        import faiss

        prev = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(self.threads)
        self._restore.append(lambda: faiss.omp_set_num_threads(prev))
        try:
            import torch

            prev_t = torch.get_num_threads()
            torch.set_num_threads(self.threads)
            self._restore.append(lambda: torch.set_num_threads(prev_t))
        except ImportError:  # pragma: no cover
            pass
        try:
            from threadpoolctl import threadpool_limits

            limiter = threadpool_limits(limits=self.threads, user_api="blas")
            self._restore.append(limiter.restore_original_limits)
        except ImportError:  # pragma: no cover - BLAS then uses its own default
            pass
        return self

    def __exit__(self, *exc: object) -> None:
        for undo in reversed(self._restore):
            undo()


def _n_query_rows(spec: EfficiencySpec) -> int:
    return max(spec.n_queries, spec.batch_size)


def random_code_sets(spec: EfficiencySpec) -> list[CodeSet]:
    """Uniform packed codes per code length: queries and the largest database (seeded by ``spec.seed``)."""
    out = []
    n_max = max(spec.db_sizes)
    for bits in spec.bits:
        rng = np.random.default_rng([spec.seed, bits])
        queries = draw_codes(_n_query_rows(spec), bits, rng)
        out.append(CodeSet(bits, queries, draw_codes(n_max, bits, rng), "uniform"))
    return out


def trained_code_sets(spec: EfficiencySpec, echo: Callable[[str], None]) -> tuple[list[CodeSet], dict[str, Any]]:
    """Train ``spec.method`` on ``spec.dataset`` at each code length and build query/database codes.

    Query codes are the query split's codes of the task's query modality (repeated when fewer than needed);
    the database holds the database split's codes of the other modality, extended to the largest size by
    :func:`extend_codes`. Also times encoding one query item per modality (``encode_ms_per_item``; task
    ``i2t`` = image encoder, ``t2i`` = text encoder), median of single-item calls.

    Returns
    -------
    (code sets, context) where context holds the dataset, features, splits and method metadata.

    Raises
    ------
    ValueError
        If the method is not a hashing method (its ``binary`` flag is false).
    """
    from benchmarks.runner import prepare_features
    from medhash_datasets.base import feature_split
    from methods import METHODS, create_method, method_config

    assert spec.method is not None and spec.dataset is not None
    entry = METHODS.get(spec.method)
    if not entry.cls.binary:
        raise ValueError(
            f"efficiency: method {spec.method!r} is real-valued; give a hashing method (the float engines "
            "already measure real-valued search)"
        )
    dataset, features = prepare_features(
        spec.dataset, data_root=spec.data_root, encoder=spec.encoder, device=spec.device,
        dataset_options=spec.dataset_options, cache_dir=spec.cache_dir, progress=False,
    )
    splits = {s: feature_split(dataset, features, s) for s in ("train", "validation", "query", "database")}
    q_side, db_side = TASK_SIDES[spec.task]
    n_max = max(spec.db_sizes)
    sets = []
    for bits in spec.bits:
        t0 = time.perf_counter()
        method = create_method(spec.method, spec.params, device=spec.device)
        method.fit(splits["train"], splits["validation"], bits, spec.seed)
        q_codes = getattr(method.encode(**{q_side: getattr(splits["query"], q_side)}), q_side)
        db_codes = getattr(method.encode(**{db_side: getattr(splits["database"], db_side)}), db_side)
        q_packed, db_packed = pack_codes(q_codes >= 0), pack_codes(db_codes >= 0)
        rng = np.random.default_rng([spec.seed, bits, 1])
        database = extend_codes(db_packed, n_max, bits, rng)
        encode_ms = {}
        for task, modality in (("i2t", "image"), ("t2i", "text")):
            x = getattr(splits["query"], modality)
            encode_ms[task] = _median_single_call_ms(lambda row, m=modality, enc=method.encode: enc(**{m: row}), x,
                                                     spec.n_queries, CLOCKS[spec.clock])
        info = {k: v for k, v in method.info().items() if k != "expert_load"}
        sets.append(CodeSet(bits, _cycle_rows(q_packed, _n_query_rows(spec)), database, "bit-frequencies",
                            n_real=int(db_packed.shape[0]), encode_ms=encode_ms, method_info=info))
        echo(f"trained {spec.method} on {spec.dataset} at {bits} bits ({time.perf_counter() - t0:.1f} s); "
             f"encode {encode_ms['i2t']:.3f} ms/image, {encode_ms['t2i']:.3f} ms/text")
    context = {
        "dataset": dataset,
        "features": features,
        "splits": splits,
        "method_name": entry.base or spec.method,
        "variant": spec.method,
        "method_config": method_config(spec.method, spec.params).to_dict(),
    }
    return sets, context


def _median_single_call_ms(
    fn: Callable[[np.ndarray], object], x: np.ndarray, n: int, clock: Callable[[], float] = time.perf_counter
) -> float:
    """Median ms of ``fn(x[i:i+1])`` over up to ``n`` rows (timed with ``clock``), after one warm-up call."""
    rows = min(n, x.shape[0])
    fn(x[:1])
    times = []
    for i in range(rows):
        t0 = clock()
        fn(x[i : i + 1])
        times.append((clock() - t0) * 1e3)
    return float(np.median(times))


def feature_sets(spec: EfficiencySpec, context: dict[str, Any] | None) -> list[FeatureSet]:
    """Float32 query/database features per dimension (see :attr:`EfficiencySpec.feature_dims`).

    At the database modality's encoder dimension the real database features come first (then Gaussian
    draws matching them) and the queries are the query split's features of the query modality (of the
    database modality when the two widths differ, e.g. synthetic data); other dimensions are standard
    Gaussian, L2-normalised.
    """
    n_max = max(spec.db_sizes)
    nq = _n_query_rows(spec)
    real_db = real_q = None
    dims = list(spec.feature_dims) if spec.feature_dims is not None else [BIOMEDCLIP_DIM]
    if context is not None:
        q_side, db_side = TASK_SIDES[spec.task]
        real_db = getattr(context["splits"]["database"], db_side)
        real_q = getattr(context["splits"]["query"], q_side)
        if real_q.shape[1] != real_db.shape[1]:
            real_q = getattr(context["splits"]["query"], db_side)
        if spec.feature_dims is None:
            dims = sorted({int(real_db.shape[1]), BIOMEDCLIP_DIM})
    out = []
    for dim in dims:
        rng = np.random.default_rng([spec.seed, dim, 2])
        if real_db is not None and real_db.shape[1] == dim:
            db = extend_features(real_db, n_max, rng)
            q = _cycle_rows(normalize_rows(np.array(real_q, dtype=np.float32)), nq)
            out.append(FeatureSet(dim, q, db, "encoder-features", n_real=int(real_db.shape[0])))
        else:
            q = draw_features(nq, dim, rng)
            out.append(FeatureSet(dim, q, draw_features(n_max, dim, rng), "gaussian"))
    return out


def run_efficiency(spec: EfficiencySpec, *, echo: Callable[[str], None] = print) -> EfficiencyResult:
    """Measure every engine at every size and code length / feature dimension; write rows, tables, figure.

    Rows go to ``OUT/efficiency/<dataset-or-random>/<config_hash>.jsonl`` (one atomic file per engine ×
    code length or dimension × database size, plus one per code length for encoding times); the ratio
    table (``ratios.md``, ``ratios.csv``), the target check (``summary.md``) and the log-log latency figure
    (``latency_vs_db_size.png`` / ``.pdf``) go beside them.

    Raises
    ------
    ValueError
        For an invalid spec (see :meth:`EfficiencySpec.validate`).
    RegistryError, DatasetError, ConfigError
        From the method/dataset/engine registries.
    """
    spec.validate()
    out_dir = Path(spec.out) / "efficiency" / spec.source_name
    run_id = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)
    binary_specs = [s for s in spec.engines if create_engine(s).binary]
    float_specs = [s for s in spec.engines if not create_engine(s).binary]
    rows: list[dict[str, Any]] = []
    cell_paths: list[Path] = []

    with ThreadSettings(spec.threads):
        context = None
        if spec.random:
            code_sets = random_code_sets(spec) if binary_specs else []
        else:
            code_sets, context = trained_code_sets(spec, echo)
        feats = feature_sets(spec, context) if float_specs else []
        common = _common_fields(spec, run_id, context)
        task = "-" if spec.random else spec.task

        def emit(cell: dict[str, Any], metrics: list[tuple[str, float, int | None]], extra: dict[str, Any],
                 seconds: float) -> None:
            cid = config_hash({**cell, "method_config": common["method_config"], "encoder": common["encoder"],
                               "dataset_options": dict(sorted(spec.dataset_options.items()))})
            stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            cell_rows = []
            for metric, value, k in metrics:
                row = {f: None for f in ROW_FIELDS}
                row.update(common)
                row.update(extra)
                row.update(cell_id=cid, config_hash=cid, metric=metric, value=float(value), k=k,
                           wall_time_s=round(seconds, 3), timestamp=stamp)
                cell_rows.append(row)
            path = out_dir / f"{cid}.jsonl"
            write_cell(path, cell_rows)
            cell_paths.append(path)
            rows.extend(cell_rows)

        for cs in code_sets:
            for enc_task, ms in cs.encode_ms.items():
                cell = {"protocol": "efficiency", "kind": "encode", "bits": cs.bits, "task": enc_task,
                        "seed": spec.seed, "source": spec.source_name, "method": spec.method,
                        "n_queries": spec.n_queries, "threads": spec.threads, "clock": spec.clock}
                emit(cell, [("encode_ms_per_item", ms, None)],
                     {"bits": cs.bits, "task": enc_task, "engine": None, "db_size": None, "batch_size": 1,
                      "feature_dim": None, "n_queries": spec.n_queries, "method_info": cs.method_info}, 0.0)

        for n in spec.db_sizes:
            k = min(spec.k, n)
            t_size = time.perf_counter()
            contenders: list[Contender] = []
            for cs in code_sets:
                for espec in binary_specs:
                    engine = create_engine(espec, **({"threads": spec.threads} if espec == "popcount" else {}))
                    contenders.append(Contender(
                        f"{espec}/{cs.bits}b", engine, cs.database[:n], cs.queries[: spec.n_queries],
                        cs.queries[: spec.batch_size],
                        {"bits": cs.bits, "dim": None, "db_source": cs.db_source, "n_real": cs.n_real, "what": f"{cs.bits} bits"}))
            for fs in feats:
                for espec in float_specs:
                    contenders.append(Contender(
                        f"{espec}/d{fs.dim}", create_engine(espec), fs.database[:n], fs.queries[: spec.n_queries],
                        fs.queries[: spec.batch_size],
                        {"bits": None, "dim": fs.dim, "db_source": fs.db_source, "n_real": fs.n_real, "what": f"d={fs.dim}"}))
            timings = time_engines(contenders, k=k, repeats=spec.repeats, clock=CLOCKS[spec.clock])
            seconds = time.perf_counter() - t_size
            exact_by_bits: dict[int, np.ndarray] = {}
            for c in contenders:
                if c.engine.binary and c.engine.exact:
                    exact_by_bits.setdefault(c.meta["bits"], timings[c.label].batch_distances)
            for c in contenders:
                timing, meta = timings[c.label], c.meta
                metrics = _timing_metrics(timing, k)
                if not c.engine.exact and c.engine.binary:
                    exact = exact_by_bits.get(meta["bits"])
                    if exact is None:
                        ref = create_engine("popcount", threads=spec.threads)
                        ref.build(c.database)
                        exact = ref.search(c.batch_queries, k)[1]
                    true_d = hamming_to(c.batch_queries, c.database, timing.batch_ids)
                    metrics.append(("recall@k", recall_at_k(true_d, timing.batch_ids, exact, k), k))
                cell = _cell(spec, "search", c.engine.name, n, k, bits=meta["bits"], feature_dim=meta["dim"],
                             task=task, db_source=meta["db_source"])
                emit(cell, metrics, _row_extra(spec, cell, n, c.single_queries, meta["bits"], meta["dim"], meta["n_real"]),
                     seconds)
                echo(_progress_line(c.engine.name, meta["what"], n, timing, metrics))
            del contenders, timings

    table = ratio_table(rows)
    targets = target_checks(rows)
    figures = plot_latency(rows, out_dir, title=_figure_title(spec)) if rows else []
    _write_tables(out_dir, spec, table, targets)
    return EfficiencyResult(rows, out_dir, cell_paths, table, targets, figures)


def _common_fields(spec: EfficiencySpec, run_id: str, context: dict[str, Any] | None) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "run_id": run_id,
        "method": context["method_name"] if context else None,
        "variant": spec.method,
        "method_config": context["method_config"] if context else None,
        "dataset": spec.source_name,
        "label_scheme": None,
        "encoder": None,
        "seed": spec.seed,
        "protocol": "efficiency",
        "chance": None,
        "n_queries_without_relevant": None,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "threads": spec.threads,
        "clock": spec.clock,
        "search_k": spec.k,
    }
    if context is not None:
        dataset, features = context["dataset"], context["features"]
        sizes = dataset.split_sizes()
        fields.update(label_scheme=dataset.label_scheme, encoder=features.encoder, n_train=sizes["train"],
                      n_validation=sizes["validation"], n_query=sizes["query"],
                      db_includes_train=dataset.db_includes_train)
    return fields


def _cell(spec: EfficiencySpec, kind: str, engine: str, n: int, k: int, *, bits: int | None,
          feature_dim: int | None, task: str, db_source: str) -> dict[str, Any]:
    return {
        "protocol": "efficiency", "kind": kind, "engine": engine, "db_size": n, "k": k, "bits": bits,
        "feature_dim": feature_dim, "task": task, "db_source": db_source, "source": spec.source_name,
        "method": spec.method, "seed": spec.seed, "n_queries": spec.n_queries, "batch_size": spec.batch_size,
        "repeats": spec.repeats, "threads": spec.threads, "clock": spec.clock,
    }


def _row_extra(spec: EfficiencySpec, cell: dict[str, Any], n: int, single: np.ndarray, bits: int | None,
               dim: int | None, n_real: int) -> dict[str, Any]:
    return {
        "engine": cell["engine"], "db_size": n, "n_database": n, "batch_size": spec.batch_size,
        "feature_dim": dim, "bits": bits, "task": cell["task"], "tie": "index",
        "n_queries": int(single.shape[0]), "db_source": cell["db_source"], "n_real_items": min(n, n_real),
    }


def _timing_metrics(t: EngineTiming, k: int) -> list[tuple[str, float, int | None]]:
    return [
        ("latency_ms_median", t.latency_ms_median, k),
        ("latency_ms_p95", t.latency_ms_p95, k),
        ("batch_latency_ms_median", t.batch_latency_ms_median, k),
        ("throughput_qps", t.throughput_qps, k),
        ("build_s", t.build_s, None),
        ("bytes_per_item", t.bytes_per_item, None),
        ("index_bytes", float(t.index_bytes), None),
    ]


def _progress_line(engine: str, what: str, n: int, t: EngineTiming, metrics: list[tuple[str, float, Any]]) -> str:
    recall = next((f", recall@k {v:.3f}" for m, v, _ in metrics if m == "recall@k"), "")
    return (f"{engine:>9} {what:>8} N={n:>9,}: {t.latency_ms_median:8.3f} ms/query (p95 {t.latency_ms_p95:.3f}), "
            f"batch {t.batch_latency_ms_median:9.2f} ms/{t.batch_size} = {t.throughput_qps:9.0f} q/s, "
            f"build {t.build_s:.3f} s, {t.index_bytes / n:.2f} B/item{recall}")


def _figure_title(spec: EfficiencySpec) -> str:
    src = "uniform random codes" if spec.random else f"{spec.method} on {spec.dataset} ({spec.task})"
    clock = "wall-clock" if spec.clock == "wall" else "CPU time"
    return f"Top-{spec.k} search latency ({clock}), {src}, {spec.threads} thread(s)"


# ================================================================================================
# Ratio table, targets, figure
# ================================================================================================
def _search_frame(rows: Sequence[dict[str, Any]]):
    import pandas as pd

    df = pd.DataFrame([r for r in rows if r.get("engine") and r["metric"] != "encode_ms_per_item"])
    if df.empty:
        return df
    wide = df.pivot_table(index=["engine", "bits", "feature_dim", "db_size"], columns="metric", values="value",
                          aggfunc="first", dropna=False).reset_index()
    return wide.dropna(subset=["latency_ms_median"])


def ratio_table(rows: Sequence[dict[str, Any]]):
    """Hash engine vs real-valued engine at the same database size.

    One line per (bits, db_size, hash engine), with its per-query latency (batch size 1), throughput and
    bytes per item, and for each float engine and dimension: ``speedup`` = float latency / hash latency
    (batch size 1; > 1 means hashing is faster), and ``memory`` = float bytes per item / hash bytes per item.

    Returns
    -------
    pandas.DataFrame
        Empty when the rows lack either binary or float engines.
    """
    import pandas as pd

    wide = _search_frame(rows)
    if wide.empty:
        return pd.DataFrame()
    hashes = wide[wide["bits"].notna()]
    floats = wide[wide["feature_dim"].notna()]
    out = []
    for _, h in hashes.sort_values(["bits", "db_size", "engine"]).iterrows():
        line: dict[str, Any] = {
            "bits": int(h["bits"]), "db_size": int(h["db_size"]), "engine": h["engine"],
            "ms/query": h["latency_ms_median"], "q/s (batch)": h["throughput_qps"],
            "B/item": h["bytes_per_item"],
        }
        if "recall@k" in h and not pd.isna(h.get("recall@k")):
            line["recall@k"] = h["recall@k"]
        for _, f in floats[floats["db_size"] == h["db_size"]].sort_values(["feature_dim", "engine"]).iterrows():
            tag = f"{f['engine']} d={int(f['feature_dim'])}"
            line[f"speedup vs {tag}"] = f["latency_ms_median"] / h["latency_ms_median"]
            line[f"batch speedup vs {tag}"] = h["throughput_qps"] / f["throughput_qps"]
            line[f"memory vs {tag}"] = f["bytes_per_item"] / h["bytes_per_item"]
        out.append(line)
    if not floats.empty and not out:
        return pd.DataFrame()
    return pd.DataFrame(out)


def _lookup(wide, engine: str, db_size: int, metric: str, *, bits: int | None = None, dim: int | None = None):
    sel = (wide["engine"] == engine) & (wide["db_size"] == db_size)
    sel &= (wide["bits"] == bits) if bits is not None else wide["bits"].isna()
    sel &= (wide["feature_dim"] == dim) if dim is not None else True
    hit = wide[sel]
    if hit.empty or metric not in hit:
        return None
    value = hit[metric].iloc[0]
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def target_checks(rows: Sequence[dict[str, Any]], *, db_size: int = 1_000_000) -> list[dict[str, Any]]:
    """The issue's three efficiency targets, evaluated on measured rows (``status`` = pass/fail/not measured).

    1. 16-bit exact top-k (``popcount``) over ``db_size`` codes >= 10x faster per query (batch size 1) than
       float32 512-d exact search (the faster of ``numpy-ip`` and ``FlatIP``), same process.
    2. ``popcount`` no slower than 1.5x faiss ``BFlat`` at 64 bits, per query (batch size 1) and per batch.
    3. ``db_size`` 16-bit codes occupy ``2 * db_size`` bytes (ids are implicit row positions), measured as
       the popcount engine's ``index_bytes``.
    """
    wide = _search_frame(rows)
    checks: list[dict[str, Any]] = []

    def add(name: str, value: float | None, threshold: str, ok: bool | None, detail: str) -> None:
        status = "not measured" if ok is None else ("pass" if ok else "FAIL")
        checks.append({"target": name, "value": value, "threshold": threshold, "status": status, "detail": detail})

    if wide.empty:
        wide = None
    hash16 = _lookup(wide, "popcount", db_size, "latency_ms_median", bits=16) if wide is not None else None
    floats = [(e, _lookup(wide, e, db_size, "latency_ms_median", dim=BIOMEDCLIP_DIM)) for e in ("numpy-ip", "FlatIP")] \
        if wide is not None else []
    floats = [(e, v) for e, v in floats if v is not None]
    if hash16 is not None and floats:
        best_e, best_v = min(floats, key=lambda ev: ev[1])
        ratio = best_v / hash16
        add("16-bit popcount vs float32 512-d exact (speedup per query)", ratio, ">= 10", ratio >= 10,
            f"popcount {hash16:.3f} ms vs {best_e} {best_v:.3f} ms at N={db_size:,}")
    else:
        add("16-bit popcount vs float32 512-d exact (speedup per query)", None, ">= 10", None, "cells missing")
    for metric, label in (("latency_ms_median", "per query"), ("batch_latency_ms_median", "per batch")):
        p = _lookup(wide, "popcount", db_size, metric, bits=64) if wide is not None else None
        f = _lookup(wide, "BFlat", db_size, metric, bits=64) if wide is not None else None
        if p is not None and f is not None:
            add(f"64-bit popcount / BFlat time ({label})", p / f, "<= 1.5", p / f <= 1.5,
                f"popcount {p:.3f} ms vs BFlat {f:.3f} ms at N={db_size:,}")
        else:
            add(f"64-bit popcount / BFlat time ({label})", None, "<= 1.5", None, "cells missing")
    mem = _lookup(wide, "popcount", db_size, "index_bytes", bits=16) if wide is not None else None
    want = db_size * 2
    if mem is not None:
        add("memory of 16-bit codes (bytes, ids implicit)", mem, f"== {want:,}", mem == want,
            f"popcount index {int(mem):,} bytes for {db_size:,} codes")
    else:
        add("memory of 16-bit codes (bytes, ids implicit)", None, f"== {want:,}", None, "cells missing")
    return checks


def plot_latency(rows: Sequence[dict[str, Any]], out_dir: Path, *, title: str = "") -> list[Path]:
    """Log-log figure of latency against database size, one line per engine and code length/dimension.

    Left panel: median time per query at batch size 1; right panel: time per query inside a batch
    (``batch_latency_ms_median / batch_size``). Saved as ``latency_vs_db_size.png`` (150 dpi) and ``.pdf``.

    Returns
    -------
    list[Path]
        The two files written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wide = _search_frame(rows)
    batch_sizes = {r["engine"]: r.get("batch_size") for r in rows if r.get("engine")}
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    markers = {"popcount": "o", "BFlat": "s", "numpy-ip": "D", "FlatIP": "v"}
    bits_list = sorted({int(b) for b in wide["bits"].dropna()}) if not wide.empty else []
    cmap = plt.get_cmap("viridis")
    colors = {b: cmap(i / max(1, len(bits_list) - 1) * 0.85) for i, b in enumerate(bits_list)}
    for (engine, bits, dim), g in wide.groupby(["engine", "bits", "feature_dim"], dropna=False):
        g = g.sort_values("db_size")
        if not (isinstance(bits, float) and math.isnan(bits)):
            approx = "recall@k" in g and g["recall@k"].notna().any()
            label = f"{engine}, {int(bits)} bits" + (" (approximate)" if approx else "")
            style = {"color": colors[int(bits)],
                     "linestyle": "-" if engine == "popcount" else ("-." if approx else "--")}
        else:
            label = f"{engine}, float32 d={int(dim)}"
            style = {"color": "tab:red" if engine == "numpy-ip" else "tab:orange",
                     "linestyle": ":" if int(dim) == BIOMEDCLIP_DIM else "-."}
        marker = markers.get(engine, "^")
        bs = batch_sizes.get(engine) or 1
        axes[0].plot(g["db_size"], g["latency_ms_median"], marker=marker, label=label, **style)
        axes[1].plot(g["db_size"], g["batch_latency_ms_median"] / bs, marker=marker, label=label, **style)
    bs_any = next(iter(batch_sizes.values()), None)
    for ax, sub in zip(axes, ("one query per call (median)", f"per query in batches of {bs_any} (median)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("database size N (items)")
        ax.set_title(sub, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("latency per query (ms)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 0.8, 0.95))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "latency_vs_db_size.png", out_dir / "latency_vs_db_size.pdf"]
    fig.savefig(paths[0], dpi=150)
    fig.savefig(paths[1])
    plt.close(fig)
    return paths


def format_ratio_table(table) -> str:
    """The ratio table as GitHub markdown (tabulate via pandas), numbers to 3 significant digits."""
    if table is None or len(table) == 0:
        return "(no ratio table: needs at least one binary and one float engine)"
    return table.to_markdown(index=False, floatfmt=".3g")


def format_targets(targets: Sequence[dict[str, Any]]) -> str:
    """The target checks as a markdown table."""
    import pandas as pd

    return pd.DataFrame(targets).to_markdown(index=False, floatfmt=".3g")


def _write_tables(out_dir: Path, spec: EfficiencySpec, table, targets: Sequence[dict[str, Any]]) -> None:
    from medhash_datasets.cache_io import atomic_write_text

    if table is not None and len(table):
        atomic_write_text(out_dir / "ratios.csv", table.to_csv(index=False))
    text = [
        "# Efficiency summary",
        "",
        f"Command: `{spec.command or ' '.join(sys.argv)}`",
        f"Threads: {spec.threads}; clock: {spec.clock}; k = {spec.k}; batch size {spec.batch_size}; "
        f"{spec.n_queries} single-query samples; {spec.repeats} batch repeats.",
        "",
        "## Hash engine vs real-valued search (speedup = float time / hash time, memory = float B / hash B)",
        "",
        format_ratio_table(table),
        "",
        "## Targets",
        "",
        format_targets(targets),
        "",
    ]
    atomic_write_text(out_dir / "summary.md", "\n".join(text))
    atomic_write_text(out_dir / "ratios.md", format_ratio_table(table) + "\n")

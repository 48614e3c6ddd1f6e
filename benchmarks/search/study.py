"""Efficiency measurements: query latency, throughput, build time and memory of search engines, hash codes
against real-valued features, from 10³ to 10⁶ database items (evaluation spec, "Efficiency"). The end-to-end
query latency (encoder + encode + search) is :mod:`benchmarks.search.end_to_end`.

One call of :func:`run_efficiency` measures, in one process and with one thread setting (default 1), every
engine of :mod:`benchmarks.search.registry` at every database size, engines alternating in blocks of queries
so that the load of other processes hits all of them alike (:func:`time_engines`); times are wall-clock, or
with ``clock="cpu"`` the CPU time of the process (robust on a shared machine):

* ``latency_ms_median`` / ``latency_ms_p95``: time to return the top-k for ONE query (batch size 1), over
  ``n_queries`` different queries after a warm-up (ms per query);
* ``batch_latency_ms_median``: time for one call with ``batch_size`` queries, median over ``repeats`` calls
  (ms per batch), and ``throughput_qps = batch_size / that time``;
* ``build_s`` (index construction, s), ``index_bytes`` (measured: the arrays kept, or the serialised faiss
  index: codes + ids + tables), ``bytes_per_item = index_bytes / db_size``;
* ``recall@k`` of approximate engines against exact search (tie-aware, :func:`recall_at_k`); ``same_ids`` of
  exact engines: 1 when the batch results equal the reference exact engine's (``popcount`` when measured),
  id for id;
* ``scan_limit_ms`` of exhaustive engines: the time the bytes scanned per query take at this machine's
  sequential read bandwidth, measured first (:mod:`benchmarks.search.bandwidth`), beside the measured time;
* ``encode_ms_per_item``: a trained method's time to turn one query's features into a code.

With ``random``, codes are uniform and float features Gaussian. With a trained method the database holds the
method's real database codes, grown to the largest size by replication (each copy a new item with a fresh
id; ``growth="replicate"``, default) or by draws from the real codes' bit frequencies
(``"bit-frequencies"``); the float reference is the ``real-valued`` method fitted on the same features (its
L2-normalised embeddings, grown the same way) plus Gaussian features at 512-d (BiomedCLIP's width).
Smaller databases are prefixes of the largest, so every size holds the real items first. The paper figures
these test are MCMFH's "1.73× faster than real-valued retrieval" and "16-bit codes take a quarter of 64-bit
memory"; ratios, not absolute times, are comparable across machines.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.search.bandwidth import (
    DEFAULT_BANDWIDTH_BYTES,
    Bandwidth,
    measure_read_bandwidth,
    scanned_bytes_per_query,
)
from benchmarks.search.plots import figure_title, plot_latency
from benchmarks.search.registry import create_engine
from benchmarks.search.rows import RowWriter, common_fields, new_run_id
from benchmarks.search.summary import ratio_table, target_checks, write_tables
from benchmarks.search.timing import Contender, EngineTiming, hamming_to, recall_at_k, time_engines
from benchmarks.search.trained import (
    REAL_VALUED,
    REAL_VALUED_BITS,
    DataContext,
    encode_query,
    fit_or_load,
    load_context,
    median_call_ms,
)
from benchmarks.search.workload import (
    BIOMEDCLIP_DIM,
    CLOCKS,
    DEFAULT_DB_SIZES,
    DEFAULT_ENGINES,
    GROWTH,
    TASK_SIDES,
    CodeSet,
    FeatureSet,
    cycle_rows,
    draw_codes,
    draw_features,
    grow_codes,
    grow_features,
)
from benchmarks.threads import ThreadSettings

__all__ = ["DEFAULT_DB_SIZES", "DEFAULT_ENGINES", "EfficiencyResult", "EfficiencySpec", "run_efficiency"]



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
        Engine spec strings (:func:`benchmarks.search.registry.create_engine`); binary and float engines mixed.
        An engine that cannot index a code length (``hash-ball`` beyond 64 bits) is skipped at that length.
    feature_dims : list[int] | None
        Dimensions of Gaussian float features; ``None``: 512 (BiomedCLIP). With a method the ``real-valued``
        embeddings of the dataset are always measured too.
    method, dataset : str | None
        Trained codes of ``method`` on ``dataset``; both ``None`` for uniformly random codes.
    task : str
        Which side is the query and which the database (``i2t`` default) for trained codes.
    growth : {"replicate", "bit-frequencies"}
        How trained codes and embeddings are grown to the largest database size (:data:`GROWTH`).
    n_queries : int
        Single-query latency samples (different queries, batch size 1).
    batch_size, repeats : int
        Queries per batch call and number of timed batch calls.
    threads : int
        Threads for faiss (OpenMP), BLAS, torch and the popcount engine's batches. Default 1: every engine
        then runs on one core, which keeps ratios meaningful on a shared machine.
    clock : {"wall", "cpu"}
        ``wall`` (``time.perf_counter``, default) or ``cpu`` (``time.process_time``, needs ``threads == 1``).
    bandwidth_bytes : int
        Bytes read to measure the sequential read bandwidth (0: not measured, no ``scan_limit_ms`` rows).
    model_dir : Path | None
        Folder where fitted models are saved and loaded from (:func:`benchmarks.search.trained.fit_or_load`).
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
    growth: str = "replicate"
    n_queries: int = 50
    batch_size: int = 100
    repeats: int = 5
    threads: int = 1
    clock: str = "wall"
    bandwidth_bytes: int = DEFAULT_BANDWIDTH_BYTES
    model_dir: Path | None = None
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
        if self.bandwidth_bytes < 0:
            raise ValueError(f"efficiency: bandwidth bytes must be >= 0, got {self.bandwidth_bytes}")
        if self.clock not in CLOCKS:
            raise ValueError(f"efficiency: unknown clock {self.clock!r}; valid: {', '.join(CLOCKS)}")
        if self.clock == "cpu" and self.threads != 1:
            raise ValueError("efficiency: clock 'cpu' sums the CPU time of all threads; use it with threads=1")
        if self.task not in TASK_SIDES:
            raise ValueError(f"efficiency: unknown task {self.task!r}; valid: {', '.join(TASK_SIDES)}")
        if self.growth not in GROWTH:
            raise ValueError(f"efficiency: unknown growth {self.growth!r}; valid: {', '.join(GROWTH)}")
        if not self.engines:
            raise ValueError("efficiency: no engines given")
        for spec in self.engines:
            create_engine(spec)  # raises RegistryError with the valid names


@dataclass
class EfficiencyResult:
    """Rows written, tables and figures made by :func:`run_efficiency`."""

    rows: list[dict[str, Any]]
    out_dir: Path
    cell_paths: list[Path]
    ratio_table: Any  # pandas DataFrame
    targets: list[dict[str, Any]]
    figures: list[Path]
    bandwidth: Bandwidth | None = None


def _n_query_rows(spec: EfficiencySpec) -> int:
    return max(spec.n_queries, spec.batch_size)


# ================================================================================================
# Codes and features: drawn, or trained and grown to any size
# ================================================================================================
def random_code_sets(spec: EfficiencySpec) -> list[CodeSet]:
    """Uniform packed codes per code length: queries and the largest database (seeded by ``spec.seed``)."""
    out = []
    n_max = max(spec.db_sizes)
    for bits in spec.bits:
        rng = np.random.default_rng([spec.seed, bits])
        queries = draw_codes(_n_query_rows(spec), bits, rng)
        out.append(CodeSet(bits, queries, draw_codes(n_max, bits, rng), "uniform"))
    return out


def _db_source(spec: EfficiencySpec) -> str:
    return "replicated" if spec.growth == "replicate" else "bit-frequencies"


def trained_code_sets(spec: EfficiencySpec, ctx: DataContext, echo: Callable[[str], None]) -> list[CodeSet]:
    """Fit (or load) ``spec.method`` at each code length and build its query/database codes.

    Query codes are the query split's codes of the task's query modality (repeated when fewer than needed);
    the database holds the database split's codes of the other modality, grown to the largest size by
    ``spec.growth``. Also times encoding one query item per modality (``encode_ms_per_item``, task ``i2t`` =
    image, ``t2i`` = text), median of single-item calls, packing included.

    Raises
    ------
    ValueError
        If the method is not a hashing method (its ``binary`` flag is false).
    """
    from methods import METHODS

    assert spec.method is not None
    if not METHODS.get(spec.method).cls.binary:
        raise ValueError(f"efficiency: method {spec.method!r} is real-valued; give a hashing method (the float "
                         "engines already measure real-valued search)")
    q_side, db_side = TASK_SIDES[spec.task]
    sets = []
    for bits in spec.bits:
        fitted = fit_or_load(spec.method, ctx, bits, spec.seed, params=spec.params, device=spec.device,
                             model_dir=spec.model_dir, echo=echo)
        q_packed = encode_query(fitted, q_side, getattr(ctx.splits["query"], q_side))
        db_packed = encode_query(fitted, db_side, getattr(ctx.splits["database"], db_side))
        database = grow_codes(db_packed, max(spec.db_sizes), bits, np.random.default_rng([spec.seed, bits, 1]),
                              spec.growth)
        encode_ms = {}
        for task, modality in (("i2t", "image"), ("t2i", "text")):
            x = getattr(ctx.splits["query"], modality)
            encode_ms[task] = median_call_ms(lambda row, m=modality, f=fitted: encode_query(f, m, row), x,
                                             min(spec.n_queries, x.shape[0]), clock=CLOCKS[spec.clock])
        info = {k: v for k, v in fitted.model.info().items() if k != "expert_load"}
        sets.append(CodeSet(bits, cycle_rows(q_packed, _n_query_rows(spec)), database, _db_source(spec),
                            n_real=int(db_packed.shape[0]), encode_ms=encode_ms, method_info=info))
        echo(f"{spec.method} {bits} bits: {len(np.unique(db_packed, axis=0)):,} distinct database codes of "
             f"{db_packed.shape[0]:,}; encode {encode_ms['i2t']:.3f} ms/image, {encode_ms['t2i']:.3f} ms/text")
    return sets


def feature_sets(spec: EfficiencySpec, ctx: DataContext | None, echo: Callable[[str], None]) -> list[FeatureSet]:
    """Float32 query/database features: Gaussian at each of ``spec.feature_dims`` (default 512), and with a
    dataset the ``real-valued`` method's L2-normalised embeddings (queries of the query modality, database of
    the other, grown by ``spec.growth``)."""
    n_max, nq = max(spec.db_sizes), _n_query_rows(spec)
    out = []
    if ctx is not None:
        q_side, db_side = TASK_SIDES[spec.task]
        fitted = fit_or_load(REAL_VALUED, ctx, REAL_VALUED_BITS, spec.seed, device=spec.device,
                             model_dir=spec.model_dir, echo=echo)
        q = encode_query(fitted, q_side, getattr(ctx.splits["query"], q_side))
        db = encode_query(fitted, db_side, getattr(ctx.splits["database"], db_side))
        grown = grow_features(db, n_max, np.random.default_rng([spec.seed, db.shape[1], 2]), spec.growth)
        out.append(FeatureSet(int(db.shape[1]), cycle_rows(q, nq), grown, _db_source(spec), space=REAL_VALUED,
                              n_real=int(db.shape[0])))
    for dim in spec.feature_dims if spec.feature_dims is not None else [BIOMEDCLIP_DIM]:
        rng = np.random.default_rng([spec.seed, dim, 2])
        out.append(FeatureSet(dim, draw_features(nq, dim, rng), draw_features(n_max, dim, rng), "gaussian"))
    return out


# ================================================================================================
# The whole measurement
# ================================================================================================
def run_efficiency(spec: EfficiencySpec, *, echo: Callable[[str], None] = print) -> EfficiencyResult:
    """Measure every engine at every size and code length / feature set; write rows, tables, figure.

    Rows go to ``OUT/efficiency/<dataset-or-random>/<config_hash>.jsonl`` (one atomic file per engine × code
    length or feature set × database size, one per code length for encoding times, one for the bandwidth);
    the tables (``summary.md``, ``ratios.md``, ``ratios.csv``) and the log-log latency figure
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
    binary_specs = [s for s in spec.engines if create_engine(s).binary]
    float_specs = [s for s in spec.engines if not create_engine(s).binary]
    task = "-" if spec.random else spec.task

    with ThreadSettings(spec.threads):
        bandwidth = (measure_read_bandwidth(spec.bandwidth_bytes, clock=CLOCKS[spec.clock])
                     if spec.bandwidth_bytes else None)
        ctx = None
        if not spec.random:
            assert spec.dataset is not None
            ctx = load_context(spec.dataset, data_root=spec.data_root, encoder=spec.encoder, device=spec.device,
                               cache_dir=spec.cache_dir, dataset_options=spec.dataset_options)
            code_sets = trained_code_sets(spec, ctx, echo)
        else:
            code_sets = random_code_sets(spec) if binary_specs else []
        feats = feature_sets(spec, ctx, echo) if float_specs else []
        writer = RowWriter(out_dir, common_fields(
            new_run_id(), source=spec.source_name, seed=spec.seed, threads=spec.threads, clock=spec.clock, k=spec.k,
            method=spec.method, method_name=_base_name(spec.method), method_config=_config(spec), context=ctx),
            key_extra={"dataset_options": dict(sorted(spec.dataset_options.items())),
                                                         "growth": None if spec.random else spec.growth})
        if bandwidth is not None:
            echo(f"sequential read bandwidth: {bandwidth.gb_per_s:.2f} GB/s (median of {bandwidth.repeats} reads of "
                 f"{bandwidth.n_bytes >> 20} MiB)")
            writer.emit({"protocol": "efficiency", "kind": "bandwidth", "n_bytes": bandwidth.n_bytes},
                        [("read_bandwidth_bytes_per_s", bandwidth.bytes_per_s, None)],
                        {"kind": "bandwidth", "task": "-", "n_queries": bandwidth.repeats, "engine": None,
                         "db_size": None, "bits": None, "feature_dim": None, "batch_size": None,
                         "bandwidth_bytes": bandwidth.n_bytes}, sum(bandwidth.samples_s))
        for cs in code_sets:
            for enc_task, ms in cs.encode_ms.items():
                cell = {"protocol": "efficiency", "kind": "encode", "bits": cs.bits, "task": enc_task,
                        "seed": spec.seed, "source": spec.source_name, "method": spec.method,
                        "n_queries": spec.n_queries, "threads": spec.threads, "clock": spec.clock}
                writer.emit(cell, [("encode_ms_per_item", ms, None)],
                            {"kind": "encode", "bits": cs.bits, "task": enc_task, "engine": None, "db_size": None,
                             "batch_size": 1, "feature_dim": None, "n_queries": spec.n_queries,
                             "method_info": cs.method_info}, 0.0)
        for n in spec.db_sizes:
            _measure_size(spec, n, code_sets, feats, binary_specs, float_specs, task, bandwidth, writer, echo)

    rows = writer.rows
    table = ratio_table(rows)
    targets = target_checks(rows)
    figures = plot_latency(rows, out_dir, title=figure_title(spec)) if rows else []
    write_tables(out_dir, spec, rows, table, targets)
    return EfficiencyResult(rows, out_dir, writer.paths, table, targets, figures, bandwidth)


def _base_name(method: str | None) -> str | None:
    from methods import METHODS

    return None if method is None else (METHODS.get(method).base or method)


def _config(spec: EfficiencySpec) -> dict[str, Any] | None:
    from methods import method_config

    return None if spec.method is None else method_config(spec.method, spec.params).to_dict()


def _contenders(spec: EfficiencySpec, n: int, code_sets: list[CodeSet], feats: list[FeatureSet],
                binary_specs: list[str], float_specs: list[str], echo: Callable[[str], None]) -> list[Contender]:
    out: list[Contender] = []
    for cs in code_sets:
        for espec in binary_specs:
            engine = create_engine(espec, **({"threads": spec.threads} if espec == "popcount" else {}))
            if not engine.supports(cs.database.shape[1]):
                if n == spec.db_sizes[0]:
                    echo(f"{espec} skipped at {cs.bits} bits: it indexes codes of up to 64 bits")
                continue
            out.append(Contender(f"{espec}/{cs.bits}b", engine, cs.database[:n], cs.queries[: spec.n_queries],
                                 cs.queries[: spec.batch_size],
                                 {"bits": cs.bits, "dim": None, "db_source": cs.db_source, "n_real": cs.n_real,
                                  "what": f"{cs.bits} bits", "space": None}))
    for fs in feats:
        for espec in float_specs:
            out.append(Contender(f"{espec}/d{fs.dim}/{fs.space}", create_engine(espec), fs.database[:n],
                                 fs.queries[: spec.n_queries], fs.queries[: spec.batch_size],
                                 {"bits": None, "dim": fs.dim, "db_source": fs.db_source, "n_real": fs.n_real,
                                  "what": f"d={fs.dim}" + (f" {fs.space}" if fs.space else ""),
                                  "space": fs.space or None}))
    return out


def _measure_size(spec: EfficiencySpec, n: int, code_sets: list[CodeSet], feats: list[FeatureSet],
                  binary_specs: list[str], float_specs: list[str], task: str, bandwidth: Bandwidth | None,
                  writer: RowWriter, echo: Callable[[str], None]) -> None:
    """Time every contender at database size ``n`` and write its rows."""
    k = min(spec.k, n)
    t_size = time.perf_counter()
    contenders = _contenders(spec, n, code_sets, feats, binary_specs, float_specs, echo)
    timings = time_engines(contenders, k=k, repeats=spec.repeats, clock=CLOCKS[spec.clock])
    seconds = time.perf_counter() - t_size
    reference: dict[Any, Contender] = {}  # exact reference per code length / feature set: popcount first
    for c in sorted(contenders, key=lambda c: c.engine.family != "popcount"):
        if c.engine.exact:
            reference.setdefault((c.meta["bits"], c.meta["dim"], c.meta["space"]), c)
    for c in contenders:
        timing, meta = timings[c.label], c.meta
        metrics = _timing_metrics(timing, k)
        ref = reference.get((meta["bits"], meta["dim"], meta["space"]))
        if c.engine.exact and ref is not None:
            same = np.array_equal(timing.batch_ids, timings[ref.label].batch_ids)
            metrics.append(("same_ids", float(same), k))
        if not c.engine.exact and c.engine.binary:
            exact = timings[ref.label].batch_distances if ref is not None else _exact_distances(spec, c, k)
            true_d = hamming_to(c.batch_queries, c.database, timing.batch_ids)
            metrics.append(("recall@k", recall_at_k(true_d, timing.batch_ids, exact, k), k))
        scanned = scanned_bytes_per_query(c.engine.family, n, c.database.shape[1])
        if bandwidth is not None and scanned is not None:
            metrics += [("scan_limit_ms", bandwidth.limit_ms(scanned), k), ("scanned_bytes_per_query", scanned, k)]
        cell = {"protocol": "efficiency", "kind": "search", "engine": c.engine.name, "db_size": n, "k": k,
                "bits": meta["bits"], "feature_dim": meta["dim"], "feature_space": meta["space"], "task": task,
                "db_source": meta["db_source"], "source": spec.source_name, "method": spec.method, "seed": spec.seed,
                "n_queries": spec.n_queries, "batch_size": spec.batch_size, "repeats": spec.repeats,
                "threads": spec.threads, "clock": spec.clock}
        extra = {"kind": "search", "engine": c.engine.name, "db_size": n, "n_database": n,
                 "batch_size": spec.batch_size, "feature_dim": meta["dim"], "feature_space": meta["space"],
                 "bits": meta["bits"], "task": task, "tie": "index", "n_queries": int(c.single_queries.shape[0]),
                 "db_source": meta["db_source"], "n_real_items": min(n, meta["n_real"])}
        writer.emit(cell, metrics, extra, seconds)
        echo(_progress_line(c.engine.name, meta["what"], n, timing, metrics))


def _exact_distances(spec: EfficiencySpec, c: Contender, k: int) -> np.ndarray:
    ref = create_engine("popcount", threads=spec.threads)
    ref.build(c.database)
    return ref.search(c.batch_queries, k)[1]


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
    extra = {m: v for m, v, _ in metrics}
    recall = f", recall@k {extra['recall@k']:.3f}" if "recall@k" in extra else ""
    limit = f", {t.latency_ms_median / extra['scan_limit_ms']:.1f}x the bandwidth limit" if extra.get("scan_limit_ms") else ""
    return (f"{engine:>10} {what:>8} N={n:>9,}: {t.latency_ms_median:8.3f} ms/query (p95 {t.latency_ms_p95:.3f}), "
            f"batch {t.batch_latency_ms_median:9.2f} ms/{t.batch_size} = {t.throughput_qps:9,.0f} q/s, "
            f"build {t.build_s:.3f} s, {t.index_bytes:,} bytes ({t.index_bytes / n:.2f} B/item){recall}{limit}")

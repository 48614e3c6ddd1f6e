"""Efficiency measurements: query latency, throughput, build time and memory of search engines, hash codes
against real-valued features, from 10³ to 10⁶ database items (evaluation spec, "Efficiency").

One call of :func:`run_efficiency` measures, in one process and with one thread setting (default 1), every
engine of :mod:`benchmarks.search.registry` at every database size, engines alternating in blocks of queries so that
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
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.results import ROW_FIELDS, config_hash, git_commit, package_versions, write_cell
from benchmarks.search.registry import create_engine
from benchmarks.search.summary import figure_title, plot_latency, ratio_table, target_checks, write_tables
from benchmarks.search.timing import Contender, EngineTiming, hamming_to, recall_at_k, time_engines
from benchmarks.search.workload import (
    CodeSet,
    FeatureSet,
    cycle_rows,
    draw_codes,
    draw_features,
    extend_codes,
    extend_features,
    normalize_rows,
    pack_codes,
)
from benchmarks.threads import ThreadSettings

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
        Engine spec strings (:func:`benchmarks.search.registry.create_engine`); binary and float engines mixed.
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
@dataclass
class EfficiencyResult:
    """Rows written, tables and figures made by :func:`run_efficiency`."""

    rows: list[dict[str, Any]]
    out_dir: Path
    cell_paths: list[Path]
    ratio_table: Any  # pandas DataFrame
    targets: list[dict[str, Any]]
    figures: list[Path]


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
    from benchmarks.cell import prepare_features
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
        sets.append(CodeSet(bits, cycle_rows(q_packed, _n_query_rows(spec)), database, "bit-frequencies",
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
            q = cycle_rows(normalize_rows(np.array(real_q, dtype=np.float32)), nq)
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
    figures = plot_latency(rows, out_dir, title=figure_title(spec)) if rows else []
    write_tables(out_dir, spec, table, targets)
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

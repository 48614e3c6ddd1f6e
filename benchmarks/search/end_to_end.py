"""End-to-end query latency: from a raw image or report text to a ranked list, hashing against real-valued.

The seed paper's efficiency claim (MCMFH: "1.73× faster than real-valued retrieval") is about what a user's
query costs. One query goes through three stages, each timed here per modality:

1. **frozen encoder**: raw image file → feature (read, decode, resize, network) or caption → feature, with
   the dataset's own encoder (:func:`medhash_datasets.encoders.create_encoder`); median over single queries
   (batch size 1) and, as a second figure, per item inside batches of ``encoder_batch``;
2. **method encode**: feature → packed code (hashing methods: relaxed codes, ``h >= 0``, packed) or
   L2-normalised embedding (``real-valued``); median over single queries;
3. **top-k search** over a database of N items of the other modality, N = 10³ … 10⁶: the database is the
   method's own database codes (embeddings), grown by replication with fresh ids where the dataset is smaller
   (:func:`benchmarks.search.workload.cycle_rows`); engines timed in alternating blocks in one process
   (:func:`benchmarks.search.timing.time_engines`).

Total = encoder (batch size 1) + encode + search; speed-up = the fastest ``real-valued`` total at the same task
and N / the total. The same ratio without the encoder stage isolates what hashing changes. Every method is
fitted once on the dataset's cached features (or loaded from ``model_dir``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.search.registry import create_engine
from benchmarks.search.rows import RowWriter, common_fields, new_run_id
from benchmarks.search.timing import Contender, time_engines
from benchmarks.search.trained import (
    REAL_VALUED,
    REAL_VALUED_BITS,
    DataContext,
    FittedMethod,
    encode_query,
    fit_or_load,
    load_context,
    median_call_ms,
)
from benchmarks.search.workload import CLOCKS, DEFAULT_DB_SIZES, TASK_SIDES, cycle_rows
from benchmarks.threads import ThreadSettings

#: Stages of one query, in order, and the row metric of each (ms per query).
STAGE_METRICS = {"encoder": "e2e_encoder_ms", "encode": "e2e_encode_ms", "search": "e2e_search_ms"}


@dataclass
class EndToEndSpec:
    """What one ``efficiency --end-to-end`` invocation measures.

    Attributes
    ----------
    methods : list[str]
        Hashing methods (``real-valued`` is always added as the reference).
    dataset : str
        A dataset with raw images and texts (not one that ships features).
    bits : list[int]
        Code lengths (each >= 8).
    db_sizes : list[int]
        Database sizes N (the dataset's database replicated with fresh ids beyond its size).
    k : int
        Neighbours per query.
    tasks : list[str]
        ``i2t`` (image query, text database) and/or ``t2i``.
    engines : list[str]
        Binary engines for the hashing methods (engines that cannot index a code length are skipped).
    float_engines : list[str]
        Float engines for ``real-valued``; the speed-up uses the fastest at each (task, N).
    n_queries : int
        Single-query samples per stage (encoder, encode, search).
    encoder_batch : int
        Batch size of the batched encoder figure (>= 1); ``encoder_batches`` batches are timed.
    threads, clock, seed, out, data_root, encoder, cache_dir, device, dataset_options, params, model_dir
        As in :class:`benchmarks.search.study.EfficiencySpec`.
    """

    methods: list[str]
    dataset: str
    bits: list[int] = field(default_factory=lambda: [16])
    db_sizes: list[int] = field(default_factory=lambda: list(DEFAULT_DB_SIZES))
    k: int = 100
    tasks: list[str] = field(default_factory=lambda: ["i2t", "t2i"])
    engines: list[str] = field(default_factory=lambda: ["popcount", "hash-ball"])
    float_engines: list[str] = field(default_factory=lambda: ["numpy-ip", "FlatIP"])
    n_queries: int = 30
    encoder_batch: int = 32
    encoder_batches: int = 3
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
    model_dir: Path | None = None
    command: str = ""

    def validate(self) -> None:
        """Raises ``ValueError`` naming the field for values a user can get wrong (``RegistryError`` for
        unknown engines)."""
        if not self.methods:
            raise ValueError("end-to-end: give at least one hashing method")
        if not self.bits or any(b < 8 for b in self.bits):
            raise ValueError(f"end-to-end: bits must be integers >= 8, got {self.bits}")
        if not self.db_sizes or any(n < 1 for n in self.db_sizes):
            raise ValueError(f"end-to-end: db sizes must be >= 1, got {self.db_sizes}")
        for name in ("k", "n_queries", "encoder_batch", "encoder_batches", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"end-to-end: {name} must be >= 1, got {getattr(self, name)}")
        bad = [t for t in self.tasks if t not in ("i2t", "t2i")]
        if not self.tasks or bad:
            raise ValueError(f"end-to-end: tasks must be i2t and/or t2i (cross-modal queries), got {self.tasks}")
        if self.clock not in CLOCKS:
            raise ValueError(f"end-to-end: unknown clock {self.clock!r}; valid: {', '.join(CLOCKS)}")
        if self.clock == "cpu" and self.threads != 1:
            raise ValueError("end-to-end: clock 'cpu' sums the CPU time of all threads; use it with threads=1")
        for spec, want in [(s, True) for s in self.engines] + [(s, False) for s in self.float_engines]:
            if create_engine(spec).binary != want:
                kind = "binary (for hashing methods)" if want else "float (for real-valued)"
                raise ValueError(f"end-to-end: engine {spec!r} is not a {kind} engine")
        if not self.engines or not self.float_engines:
            raise ValueError("end-to-end: needs at least one binary and one float engine")


@dataclass
class EndToEndResult:
    """Rows, table and figures of :func:`run_end_to_end`."""

    rows: list[dict[str, Any]]
    out_dir: Path
    frame: Any  # pandas DataFrame, see end_to_end_frame
    figures: list[Path]
    encoder: str


def raw_queries(ctx: DataContext) -> dict[str, np.ndarray]:
    """The query split's raw inputs: ``{"image": paths, "text": captions}`` as object arrays (n_query,).

    Raises
    ------
    DatasetError
        If the dataset ships features instead of raw images or texts (nothing for an encoder to read).
    """
    from medhash_datasets.base import DatasetError

    ds = ctx.dataset
    if ds.image_paths is None or ds.texts is None or ctx.features.encoder == "precomputed":
        raise DatasetError(f"end-to-end: dataset {ds.name!r} has no raw images and texts (it ships features), so "
                         "there is no encoder stage to time; use a dataset with image files and captions (e.g. medpix)")
    idx = ctx.dataset.splits["query"]
    paths = np.empty(len(idx), dtype=object)
    paths[:] = [ds.image_paths[i] for i in idx]
    texts = np.empty(len(idx), dtype=object)
    texts[:] = [ds.texts[i] for i in idx]
    return {"image": paths, "text": texts}


def time_encoder(encoder: Any, raw: dict[str, np.ndarray], spec: EndToEndSpec) -> dict[str, dict[str, float]]:
    """Median ms per query of the frozen encoder per modality: ``{"image": {"single": ..., "batched": ...}, ...}``.

    ``single``: one raw item per call (batch size 1), ``spec.n_queries`` calls; ``batched``: per item inside
    calls of ``spec.encoder_batch`` items, ``spec.encoder_batches`` calls. A warm-up call (network loaded,
    caches warm) precedes each.
    """
    clock = CLOCKS[spec.clock]
    calls = {"image": lambda chunk: encoder.encode_images(list(chunk), len(chunk)),
             "text": lambda chunk: encoder.encode_texts(list(chunk), len(chunk))}
    out = {}
    for modality, fn in calls.items():
        x = raw[modality]
        out[modality] = {
            "single": median_call_ms(fn, x, spec.n_queries, clock=clock),
            "batched": median_call_ms(fn, x, spec.encoder_batches, batch=min(spec.encoder_batch, len(x)), clock=clock),
        }
    return out


def run_end_to_end(spec: EndToEndSpec, *, echo: Callable[[str], None] = print) -> EndToEndResult:
    """Measure the three stages of a query for every method, task, code length and database size.

    Rows go to ``OUT/efficiency/<dataset>/end-to-end/<config_hash>.jsonl`` (kind ``"end-to-end"``, one cell per
    (method, bits, task, engine, N)); the table (``end_to_end.md``, ``end_to_end.csv``) and the stacked bar
    figure (``end_to_end_latency.png`` / ``.pdf``) go beside them.

    Raises
    ------
    ValueError
        For an invalid spec.
    DatasetError
        For a dataset without raw images and texts, and from the loader or the encoder.
    RegistryError, ConfigError
        From the registries.
    """
    from benchmarks.search.e2e_table import end_to_end_frame, write_end_to_end
    from benchmarks.search.plots import plot_end_to_end
    from medhash_datasets.encoders import create_encoder

    spec.validate()
    out_dir = Path(spec.out) / "efficiency" / spec.dataset / "end-to-end"
    with ThreadSettings(spec.threads):
        ctx = load_context(spec.dataset, data_root=spec.data_root, encoder=spec.encoder, device=spec.device,
                           cache_dir=spec.cache_dir, dataset_options=spec.dataset_options)
        raw = raw_queries(ctx)
        encoder = create_encoder(ctx.features.encoder, device=spec.device)
        enc_ms = time_encoder(encoder, raw, spec)
        echo(f"encoder {ctx.features.encoder}: image {enc_ms['image']['single']:.1f} ms (batch 1), "
             f"{enc_ms['image']['batched']:.1f} ms/item (batch {spec.encoder_batch}); text "
             f"{enc_ms['text']['single']:.1f} ms, {enc_ms['text']['batched']:.1f} ms/item")
        writer = RowWriter(out_dir, common_fields(new_run_id(), source=spec.dataset, seed=spec.seed,
                                                  threads=spec.threads, clock=spec.clock, k=spec.k, context=ctx),
                           key_extra={"dataset_options": dict(sorted(spec.dataset_options.items()))})
        fitted = [fit_or_load(m, ctx, b, spec.seed, params=spec.params, device=spec.device, model_dir=spec.model_dir,
                              echo=echo) for b in spec.bits for m in spec.methods]
        fitted.append(fit_or_load(REAL_VALUED, ctx, REAL_VALUED_BITS, spec.seed, device=spec.device,
                                  model_dir=spec.model_dir, echo=echo))
        for task in spec.tasks:
            _measure_task(spec, ctx, task, fitted, enc_ms, writer, echo)
    frame = end_to_end_frame(writer.rows)
    write_end_to_end(out_dir, spec, frame, ctx.features.encoder)
    title = f"{spec.dataset}: one query from raw input to top-{spec.k} ({ctx.features.encoder} encoder)"
    figures = plot_end_to_end(frame, out_dir, title=title) if len(frame) else []
    return EndToEndResult(writer.rows, out_dir, frame, figures, ctx.features.encoder)


def _measure_task(spec: EndToEndSpec, ctx: DataContext, task: str, fitted: list[FittedMethod],
                  enc_ms: dict[str, dict[str, float]], writer: RowWriter, echo: Callable[[str], None]) -> None:
    """Encode and search for one task: every method's database grown once, then every size timed."""
    q_side, db_side = TASK_SIDES[task]
    n_max = max(spec.db_sizes)
    prepared = []
    for f in fitted:
        x_q = getattr(ctx.splits["query"], q_side)
        encode_ms = median_call_ms(lambda row, f=f: encode_query(f, q_side, row), x_q, spec.n_queries,
                                   clock=CLOCKS[spec.clock])
        queries = cycle_rows(encode_query(f, q_side, x_q), spec.n_queries)
        real_db = encode_query(f, db_side, getattr(ctx.splits["database"], db_side))
        prepared.append((f, encode_ms, queries, cycle_rows(real_db, n_max), int(real_db.shape[0])))
    for n in spec.db_sizes:
        contenders = []
        for f, encode_ms, queries, database, n_real in prepared:
            for espec in spec.engines if f.binary else spec.float_engines:
                engine = create_engine(espec, **({"threads": spec.threads} if espec == "popcount" else {}))
                if not engine.supports(database.shape[1]):
                    continue
                contenders.append(Contender(f"{f.name}/{f.bits}/{espec}", engine, database[:n], queries, queries,
                                            {"fitted": f, "encode_ms": encode_ms, "n_real": n_real}))
        t0 = time.perf_counter()
        timings = time_engines(contenders, k=min(spec.k, n), repeats=1, clock=CLOCKS[spec.clock])
        seconds = time.perf_counter() - t0
        totals = {}
        for c in contenders:
            stages = {"encoder": enc_ms[q_side]["single"], "encode": c.meta["encode_ms"],
                      "search": timings[c.label].latency_ms_median}
            totals[c.label] = stages
        real = [st for c, st in ((c, totals[c.label]) for c in contenders) if not c.meta["fitted"].binary]
        best_real = min(real, key=lambda st: sum(st.values())) if real else None
        for c in contenders:
            f, stages = c.meta["fitted"], totals[c.label]
            total = sum(stages.values())
            metrics = [(STAGE_METRICS[s], v, None) for s, v in stages.items()]
            metrics += [("e2e_encoder_batched_ms", enc_ms[q_side]["batched"], None), ("e2e_total_ms", total, None)]
            if best_real is not None:
                metrics += [("e2e_speedup_vs_real_valued", sum(best_real.values()) / total, None),
                            ("e2e_speedup_vs_real_valued_without_encoder",
                             (best_real["encode"] + best_real["search"]) / (stages["encode"] + stages["search"]), None)]
            bits = None if not f.binary else f.bits
            cell = {"protocol": "efficiency", "kind": "end-to-end", "method": f.name, "bits": bits, "task": task,
                    "engine": c.engine.name, "db_size": n, "k": min(spec.k, n), "seed": spec.seed,
                    "n_queries": spec.n_queries, "encoder_batch": spec.encoder_batch, "threads": spec.threads,
                    "clock": spec.clock, "method_config": f.method_config}
            writer.emit(cell, metrics, {
                "kind": "end-to-end", "method": f.name, "variant": f.name, "method_config": f.method_config,
                "bits": bits, "task": task, "engine": c.engine.name, "db_size": n, "n_database": n,
                "n_queries": spec.n_queries, "batch_size": 1, "encoder_batch": spec.encoder_batch,
                "db_source": "replicated", "n_real_items": min(n, c.meta["n_real"]),
                "feature_dim": None if f.binary else int(c.database.shape[1]), "tie": "index"}, seconds)
            echo(f"{task} N={n:>9,} {f.name:>12} {'' if bits is None else f'{bits} bits':>8} {c.engine.name:>9}: "
                 f"encoder {stages['encoder']:.2f} + encode {stages['encode']:.3f} + search {stages['search']:.3f} "
                 f"= {total:.2f} ms")
        del contenders, timings

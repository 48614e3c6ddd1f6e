"""Trained models for the efficiency studies: a dataset's cached features, methods fitted once (or loaded from a
model folder), their query/database codes or embeddings, and the time to encode one query.

Shared by the engine study (:mod:`benchmarks.search.study`) and the end-to-end latency study
(:mod:`benchmarks.search.end_to_end`); the one place that trains, so both use the same models.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.results import config_hash
from benchmarks.search.workload import normalize_rows, pack_codes

#: The float reference fitted beside the hashing methods, and the ``bits`` it is fitted (and saved) with: it
#: ignores code length, so one fixed value lets every study reuse one saved model.
REAL_VALUED = "real-valued"
REAL_VALUED_BITS = 16


@dataclass
class DataContext:
    """A dataset, its frozen-encoder features and the four feature splits."""

    dataset: Any  # medhash_datasets.base.PairedDataset
    features: Any  # medhash_datasets.base.Features
    splits: dict[str, Any]  # split name -> FeatureSplit
    options: dict[str, str] = field(default_factory=dict)


def load_context(dataset: str, *, data_root: Path | None, encoder: str, device: str, cache_dir: Path | None,
                 dataset_options: dict[str, str] | None = None) -> DataContext:
    """Load ``dataset`` and its cached features (extracted on first use) and cut the four splits.

    Raises
    ------
    DatasetError, RegistryError
        From the loader, the encoder or the feature cache.
    """
    from benchmarks.cell import prepare_features
    from medhash_datasets.base import feature_split

    ds, feats = prepare_features(dataset, data_root=data_root, encoder=encoder, device=device,
                                 dataset_options=dataset_options, cache_dir=cache_dir, progress=False)
    splits = {s: feature_split(ds, feats, s) for s in ("train", "validation", "query", "database")}
    return DataContext(ds, feats, splits, dict(dataset_options or {}))


def _train_digest(ctx: DataContext) -> str:
    """SHA-256 (16 hex digits) of the training and validation features and labels a model is fitted on."""
    h = hashlib.sha256()
    for name in ("train", "validation"):
        split = ctx.splits[name]
        for arr in (split.image, split.text, split.labels):
            h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]


@dataclass
class FittedMethod:
    """A fitted method and how it was obtained."""

    name: str  # registry name (variant)
    bits: int
    model: Any  # methods.base.HashingMethod
    fit_s: float  # seconds spent fitting (0 when loaded)
    loaded_from: Path | None
    method_config: dict[str, Any]

    @property
    def binary(self) -> bool:
        return bool(self.model.binary)


def fit_or_load(name: str, ctx: DataContext, bits: int, seed: int, *, params: dict[str, Any] | None = None,
                device: str = "cpu", model_dir: Path | None = None,
                echo: Callable[[str], None] = print) -> FittedMethod:
    """Fit method ``name`` on the training split (selection on validation), or load it from ``model_dir``.

    A model is saved as ``model_dir/<name>-<bits>b-seed<seed>-<key>.pt`` where ``key`` hashes the dataset, its
    options, the encoder, the method config, bits, seed and the bytes of the training and validation features,
    so a saved model is reused only for exactly the data and config it was fitted on.

    Raises
    ------
    RegistryError, ConfigError
        Unknown method or bad parameters.
    """
    from methods import create_method, method_config

    cfg = method_config(name, params or {}).to_dict()
    key = config_hash({"dataset": ctx.dataset.name, "options": dict(sorted(ctx.options.items())),
                       "encoder": ctx.features.encoder, "method": name, "config": cfg, "bits": bits, "seed": seed,
                       "train": _train_digest(ctx)})
    path = None if model_dir is None else Path(model_dir) / f"{name}-{bits}b-seed{seed}-{key}.pt"
    model = create_method(name, params or {}, device=device)
    if path is not None and path.is_file():
        model = type(model).load(path, device=device)
        echo(f"loaded {name} ({bits} bits) from {path}")
        return FittedMethod(name, bits, model, 0.0, path, cfg)
    t0 = time.perf_counter()
    model.fit(ctx.splits["train"], ctx.splits["validation"], bits, seed)
    fit_s = time.perf_counter() - t0
    echo(f"fitted {name} on {ctx.dataset.name} at {bits} bits in {fit_s:.1f} s")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save(path)
    return FittedMethod(name, bits, model, fit_s, None, cfg)


def encode_query(fitted: FittedMethod, modality: str, x: np.ndarray) -> np.ndarray:
    """What a query becomes before search: packed codes (binary methods: relaxed codes ``h >= 0`` packed
    little-endian) or L2-normalised float32 embeddings (real-valued methods; cosine = inner product).

    Parameters
    ----------
    modality : {"image", "text"}
    x : np.ndarray, shape (n, d_modality), float32 features

    Returns
    -------
    np.ndarray, shape (n, ceil(K/8)) uint8, or (n, d_embedding) float32
    """
    h = getattr(fitted.model.encode(**{modality: x}), modality)
    if fitted.binary:
        return pack_codes(np.asarray(h) >= 0)
    return normalize_rows(np.array(h, dtype=np.float32))


def median_call_ms(fn: Callable[[np.ndarray], object], x: np.ndarray, n: int, *, batch: int = 1,
                   clock: Callable[[], float] = time.perf_counter) -> float:
    """Median milliseconds per item of ``fn(x[i : i + batch])`` over up to ``n`` calls, after one warm-up call.

    Parameters
    ----------
    fn : callable
        Called with ``batch`` consecutive rows of ``x`` (rows cycle when ``x`` runs out).
    x : np.ndarray, shape (m, ...)
    n : int
        Timed calls (>= 1).
    batch : int
        Rows per call; the result is divided by it (ms per item).
    clock : callable
        Seconds counter.
    """
    rows = x.shape[0]
    fn(x[:batch])
    times = []
    for i in range(max(1, n)):
        start = (i * batch) % rows
        chunk = x[start : start + batch] if start + batch <= rows else np.concatenate([x[start:], x[: batch - (rows - start)]])
        t0 = clock()
        fn(chunk)
        times.append((clock() - t0) * 1e3 / batch)
    return float(np.median(times))

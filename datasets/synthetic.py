"""The embedded ``synthetic`` dataset: seeded, no files, always available (the default of ``run``).

Each item gets 1–3 labels drawn with Zipf-like label frequencies. A shared latent ``z`` is the normalised
sum of the items' label prototypes plus item noise; the image and text features are *different* noisy
non-linear views of ``z`` (two-layer random maps with ReLU for images, tanh for texts), so a method must
learn a cross-modal mapping: the raw image and text spaces are unrelated.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medhash_datasets.base import DatasetError, PairedDataset
from medhash_datasets.registry import DATASETS

_INT_OPTIONS = ("n_train", "n_validation", "n_query", "n_labels", "latent_dim", "image_dim", "text_dim")
_FLOAT_OPTIONS = ("noise", "item_noise")


def _parse_options(options: dict[str, object]) -> dict[str, float | int]:
    params: dict[str, float | int] = {
        "n_train": 800,
        "n_validation": 200,
        "n_query": 200,
        "n_labels": 10,
        "latent_dim": 32,
        "image_dim": 128,
        "text_dim": 64,
        "noise": 0.8,
        "item_noise": 0.5,
    }
    for key, raw in options.items():
        if key not in params:
            raise DatasetError(f"synthetic: unknown option {key!r}; valid options: {sorted(params)}")
        try:
            value = int(raw) if key in _INT_OPTIONS else float(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise DatasetError(f"synthetic: option {key}={raw!r} is not a number") from None
        if value < (0 if key in _FLOAT_OPTIONS else 1):
            raise DatasetError(f"synthetic: option {key}={value} must be {'>= 0' if key in _FLOAT_OPTIONS else '>= 1'}")
        params[key] = value
    if params["n_labels"] < 2:
        raise DatasetError("synthetic: option n_labels must be >= 2")
    return params


def _random_view(z: np.ndarray, out_dim: int, hidden: int, act, rng: np.random.Generator) -> np.ndarray:
    """A fixed random two-layer map ``W2 · act(W1 · z)`` of shape (N, out_dim)."""
    w1 = rng.standard_normal((z.shape[1], hidden)) / np.sqrt(z.shape[1])
    w2 = rng.standard_normal((hidden, out_dim)) / np.sqrt(hidden)
    return act(z @ w1 * 2.0) @ w2


@DATASETS.register("synthetic")
def load_synthetic(data_root: Path | None = None, *, label_scheme: str | None = None, seed: int = 0, **options: object) -> PairedDataset:
    """Generate the seeded synthetic paired dataset.

    Parameters
    ----------
    data_root : ignored (the dataset needs no files).
    label_scheme : ``None`` or ``"multi-label"`` (the only scheme).
    seed : int
        Seeds labels, latents, views and noise: the same seed gives the same arrays.
    **options
        ``n_train`` (800), ``n_validation`` (200), ``n_query`` (200), ``n_labels`` (10), ``latent_dim`` (32),
        ``image_dim`` (128), ``text_dim`` (64), ``noise`` (0.8, feature noise std relative to the view's std),
        ``item_noise`` (0.5, latent noise); strings are accepted (CLI ``--dataset-option k=v``).

    Returns
    -------
    PairedDataset
        ``image_features`` (N, image_dim) and ``text_features`` (N, text_dim) float32, labels (N, n_labels)
        uint8 with 1–3 labels per item; splits train / validation / query, database = train + validation.

    Raises
    ------
    DatasetError
        For an unknown option, a non-numeric or out-of-range value, or an unknown label scheme.
    """
    if label_scheme not in (None, "multi-label"):
        raise DatasetError(f"synthetic: unknown label scheme {label_scheme!r}; valid: multi-label")
    p = _parse_options(options)
    rng = np.random.default_rng(seed)
    n_train, n_val, n_query = int(p["n_train"]), int(p["n_validation"]), int(p["n_query"])
    n, c, dz = n_train + n_val + n_query, int(p["n_labels"]), int(p["latent_dim"])

    freq = 1.0 / np.arange(1, c + 1) ** 0.7
    freq /= freq.sum()
    counts = rng.choice([1, 2, 3], size=n, p=[0.5, 0.35, 0.15])
    labels = np.zeros((n, c), dtype=np.uint8)
    for i, m in enumerate(counts):
        labels[i, rng.choice(c, size=min(int(m), c), replace=False, p=freq)] = 1

    prototypes = rng.standard_normal((c, dz))
    z = labels @ prototypes / np.sqrt(labels.sum(1, keepdims=True)) + p["item_noise"] * rng.standard_normal((n, dz))
    z /= np.linalg.norm(z, axis=1, keepdims=True)

    image = _random_view(z, int(p["image_dim"]), 256, lambda a: np.maximum(a, 0.0), rng)
    text = _random_view(z, int(p["text_dim"]), 256, np.tanh, rng)
    image += p["noise"] * image.std() * rng.standard_normal(image.shape)
    text += p["noise"] * text.std() * rng.standard_normal(text.shape)

    order = rng.permutation(n)  # items are not class-ordered
    train, val, query = order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]
    return PairedDataset(
        name="synthetic",
        ids=[f"syn{i:06d}" for i in range(n)],
        labels=labels,
        label_names=[f"label{j}" for j in range(c)],
        splits={
            "train": np.sort(train).astype(np.int64),
            "validation": np.sort(val).astype(np.int64),
            "query": np.sort(query).astype(np.int64),
            "database": np.sort(np.concatenate([train, val])).astype(np.int64),
        },
        label_scheme="multi-label",
        db_includes_train=True,
        image_features=image.astype(np.float32),
        text_features=text.astype(np.float32),
        info={"seed": seed, **p},
    )

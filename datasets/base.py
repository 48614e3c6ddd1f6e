"""Data containers shared by every loader, the feature cache and the methods.

Flow (see ``DEVELOPERS.md``): a loader returns a :class:`PairedDataset` (pairs, labels, splits); the feature
cache turns it into :class:`Features`; :func:`feature_split` cuts those into the :class:`FeatureSplit` a method
trains on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SPLIT_NAMES = ("train", "validation", "query", "database")


class DatasetError(ValueError):
    """Bad or missing dataset input; the message names the file, field or shape at fault."""


@dataclass
class PairedDataset:
    """An image–text pair collection with multi-hot labels and named splits.

    Attributes
    ----------
    name : str
        Registry name of the loader (``"medpix"``, ``"synthetic"``, ...).
    ids : list[str], length N
        Unique item ids (e.g. MedPix image name ``MPX1009_synpic46283``).
    labels : np.ndarray, shape (N, C), dtype uint8
        Multi-hot labels; every kept item has at least one label.
    label_names : list[str], length C
    splits : dict[str, np.ndarray]
        Keys ``train``, ``validation``, ``query``, ``database``; values int64 indices into the N items.
        Query and database are disjoint; train/validation/query are disjoint.
    label_scheme : str
        Which labels were built (recorded in every result row).
    db_includes_train : bool
        Whether the database split contains the training items.
    texts : list[str] | None, length N
        Caption/report per item; ``None`` when the dataset ships text features instead.
    image_paths : list[Path] | None, length N
        Image file per item; ``None`` when the dataset ships image features instead.
    image_features, text_features : np.ndarray | None, shapes (N, d_img), (N, d_txt), float32
        Pre-computed features (synthetic data, DCMH ``.mat`` files); used instead of an encoder.
    skipped : dict[str, int]
        Reason → number of source records the loader skipped (never silent).
    info : dict
        Free-form facts worth recording (source files, option values).
    """

    name: str
    ids: list[str]
    labels: np.ndarray
    label_names: list[str]
    splits: dict[str, np.ndarray]
    label_scheme: str
    db_includes_train: bool
    texts: list[str] | None = None
    image_paths: list[Path] | None = None
    image_features: np.ndarray | None = None
    text_features: np.ndarray | None = None
    skipped: dict[str, int] = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def __len__(self) -> int:
        return len(self.ids)

    def validate(self) -> None:
        """Check shapes and split invariants.

        Raises
        ------
        DatasetError
            Naming the field whose shape or content is wrong.
        """
        n = len(self.ids)
        if len(set(self.ids)) != n:
            raise DatasetError(f"{self.name}: duplicate ids in ids ({n - len(set(self.ids))} duplicates)")
        if self.labels.ndim != 2 or self.labels.shape[0] != n:
            raise DatasetError(f"{self.name}: labels has shape {self.labels.shape}, expected ({n}, C)")
        if self.labels.shape[1] != len(self.label_names):
            raise DatasetError(
                f"{self.name}: labels has {self.labels.shape[1]} columns but label_names has {len(self.label_names)}"
            )
        for key, arr in (("image_features", self.image_features), ("text_features", self.text_features)):
            if arr is not None and (arr.ndim != 2 or arr.shape[0] != n):
                raise DatasetError(f"{self.name}: {key} has shape {arr.shape}, expected ({n}, d)")
        for key, seq in (("texts", self.texts), ("image_paths", self.image_paths)):
            if seq is not None and len(seq) != n:
                raise DatasetError(f"{self.name}: {key} has length {len(seq)}, expected {n}")
        missing = [s for s in SPLIT_NAMES if s not in self.splits]
        if missing:
            raise DatasetError(f"{self.name}: splits lacks {missing}")
        for s in SPLIT_NAMES:
            idx = self.splits[s]
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                raise DatasetError(f"{self.name}: split {s!r} has indices outside [0, {n})")
            if len(np.unique(idx)) != len(idx):
                raise DatasetError(f"{self.name}: split {s!r} repeats items")
        if np.intersect1d(self.splits["query"], self.splits["database"]).size:
            raise DatasetError(f"{self.name}: query and database splits overlap")
        for a, b in (("train", "query"), ("validation", "query"), ("train", "validation")):
            if np.intersect1d(self.splits[a], self.splits[b]).size:
                raise DatasetError(f"{self.name}: {a} and {b} splits overlap")

    def split_sizes(self) -> dict[str, int]:
        """Number of items per split, e.g. ``{"train": 1653, ...}``."""
        return {s: int(len(self.splits[s])) for s in SPLIT_NAMES}


@dataclass(frozen=True)
class Features:
    """Frozen-encoder features for every item of a :class:`PairedDataset` (same order as ``ids``).

    Attributes
    ----------
    image : np.ndarray, shape (N, d_img), float32
    text : np.ndarray, shape (N, d_txt), float32
    encoder : str
        Encoder registry name, or ``"precomputed"`` for features shipped with the dataset.
    """

    image: np.ndarray
    text: np.ndarray
    encoder: str


@dataclass(frozen=True)
class FeatureSplit:
    """What a method sees of one split: paired features and labels.

    Attributes
    ----------
    image : np.ndarray, shape (n, d_img), float32
    text : np.ndarray, shape (n, d_txt), float32
    labels : np.ndarray, shape (n, C), uint8 (multi-hot; supervised methods may read train labels only)
    """

    image: np.ndarray
    text: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.image.shape[0])


def feature_split(dataset: PairedDataset, features: Features, split: str) -> FeatureSplit:
    """Cut ``features`` down to one split of ``dataset``.

    Raises
    ------
    DatasetError
        If the feature row count differs from the dataset size.
    """
    n = len(dataset)
    if features.image.shape[0] != n or features.text.shape[0] != n:
        raise DatasetError(
            f"{dataset.name}: features have {features.image.shape[0]} image / {features.text.shape[0]} text rows, "
            f"dataset has {n} items"
        )
    idx = dataset.splits[split]
    return FeatureSplit(
        image=np.ascontiguousarray(features.image[idx], dtype=np.float32),
        text=np.ascontiguousarray(features.text[idx], dtype=np.float32),
        labels=dataset.labels[idx],
    )


def resolve_data_root(flag: str | Path | None) -> Path | None:
    """Data root from the ``--data-root`` flag, else the ``MEDHASH_DATA_ROOT`` environment variable.

    Returns ``None`` when neither is set (only the synthetic dataset then works).
    """
    import os

    value = flag if flag not in (None, "") else os.environ.get("MEDHASH_DATA_ROOT") or None
    return Path(value).expanduser() if value else None


def require_dir(root: Path | None, sub: str, dataset: str, how_to_get: str) -> Path:
    """Return ``root / sub`` or raise a :class:`DatasetError` naming the path searched and how to get the data."""
    if root is None:
        raise DatasetError(
            f"dataset {dataset!r} needs a data root: pass --data-root DIR or set MEDHASH_DATA_ROOT "
            f"(expected layout DIR/{sub}/). {how_to_get}"
        )
    path = Path(root) / sub
    if not path.is_dir():
        raise DatasetError(f"dataset {dataset!r} not found: searched {path}. {how_to_get}")
    return path

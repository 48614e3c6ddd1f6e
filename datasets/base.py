"""Data containers shared by every loader, the feature cache and the methods.

Flow (see ``DEVELOPERS.md``): a loader returns a :class:`PairedDataset` (pairs, labels, splits); the feature
cache turns it into :class:`Features`; :func:`feature_split` cuts those into the :class:`FeatureSplit` a method
trains on.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    skipped_items : list[dict]
        One dict (keys :data:`medhash_datasets.audit.SKIPPED_ITEM_KEYS`) per skipped record, in the order met: ``reason``, ``id``, ``split``,
        ``path`` (image file), ``source`` (``"descriptions_train.jsonl:12"``), ``detail``; values are ``str`` or
        ``None``. When given, its per-reason counts equal ``skipped`` (checked by :meth:`validate`).
    leakage : dict
        Findings of the loader's leakage check between splits (:mod:`medhash_datasets.leakage`):
        ``case_overlap``, ``duplicate_images``, ``caption_duplicates``; ``{}`` when the loader has no such check.
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
    skipped_items: list[dict[str, str | None]] = field(default_factory=list)
    leakage: dict[str, Any] = field(default_factory=dict)

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
        if self.skipped_items:
            named = Counter(str(item.get("reason")) for item in self.skipped_items)
            if dict(named) != {k: v for k, v in self.skipped.items() if v}:
                raise DatasetError(
                    f"{self.name}: skipped_items count {dict(sorted(named.items()))} but skipped says {self.skipped}"
                )

    def audit(self, first: int | None = None) -> dict[str, Any]:
        """What was loaded, what was dropped and why, and the leakage findings, as a JSON-able dict.

        Recorded with every result row and printed by ``data info``.

        Parameters
        ----------
        first : int | None
            ``None`` keeps every skipped item and finding; an int keeps the first ``first`` skipped items per
            reason and the first ``first`` entries of each findings list (the dicts then carry
            ``"truncated": true``; counts stay complete).

        Returns
        -------
        dict
            ``dataset``, ``label_scheme``, ``n_items``, ``split_sizes``, ``skipped`` (reason → count),
            ``skipped_items`` (list of dicts, see the class docstring), ``leakage`` (see the class docstring)
            and ``info`` (the loader's ``info`` without the ``source_files`` list).
        """
        from medhash_datasets.audit import audit_dict

        return audit_dict(self, first)

    def format_skipped(self, first: int | None = 5) -> str:
        """Console summary of the skipped records: counts, then up to ``first`` named items per reason
        (``None``: all).

        Returns ``""`` when nothing was skipped. Example::

            skipped 2 source records: empty caption=1, missing image file=1
              empty caption: MPX1_b (train, descriptions_train.jsonl:2)
              missing image file: MPX1_c (train, descriptions_train.jsonl:3) .../images/MPX1_c.png
        """
        from medhash_datasets.audit import format_skipped

        return format_skipped(self, first)

    def format_leakage(self, first: int | None = 5) -> str:
        """Console summary of the leakage findings (one line per kind, then up to ``first`` examples each;
        ``None``: all); ``""`` when the loader ran no leakage check."""
        from medhash_datasets.audit import format_leakage

        return format_leakage(self, first)

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


def unit_rows(features: np.ndarray, name: str) -> np.ndarray:
    """Rows of a float feature matrix scaled to unit L2 norm (for cosine similarity), checked on the way.

    Parameters
    ----------
    features : (n, d) array
        Any real dtype; returned as float64.
    name : str
        What the matrix is (``"query features"``), named in errors.

    Raises
    ------
    ValueError
        Not a non-empty 2-D array, NaN/inf values, or an all-zero row (cosine undefined; the row is named).
    """
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] == 0 or f.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty 2-D (n, d) array, got shape {f.shape}")
    if not np.isfinite(f).all():
        raise ValueError(f"{name}: features contain NaN or inf (shape {f.shape})")
    norms = np.linalg.norm(f, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{name}: row {int(np.flatnonzero(norms == 0)[0])} is all zeros (shape {f.shape}); cosine undefined")
    return f / norms


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

    Surrounding white space is ignored and ``~`` is expanded. Returns ``None`` when neither is set (only the
    synthetic dataset then works).
    """
    import os

    value = str(flag).strip() if flag not in (None, "") else (os.environ.get("MEDHASH_DATA_ROOT") or "").strip()
    return Path(value).expanduser() if value else None


def _squash(name: str) -> str:
    """Folder name reduced to lower-case letters and digits, for near-miss matching (``MedPix-2-0`` → ``medpix20``)."""
    return "".join(ch for ch in name.casefold() if ch.isalnum())


def _diagnose_root(root: Path, subs: tuple[str, ...], markers: tuple[str, ...]) -> str | None:
    """Why ``root`` holds none of ``subs``, when it looks like a common mistake; ``None`` otherwise."""
    import difflib

    shown = " or ".join(f"{root / s}" for s in subs)
    for s in subs:
        if (root.parent / s).is_dir() and root.parent != root:
            return f"searched {shown}, but found {root.parent / s}: pass the parent, --data-root {root.parent}"
    if _squash(root.name) in {_squash(s) for s in subs} or any((root / m).exists() for m in markers):
        fix = "" if root.name in subs else f"name it {subs[0]} (or link {root.parent / subs[0]} to it) and "
        return (
            f"--data-root {root} is the dataset folder itself, one level too deep: {fix}pass its parent, "
            f"--data-root {root.parent} (searched {shown})"
        )
    try:
        children = sorted(c for c in root.iterdir() if c.is_dir())
    except OSError:
        children = []
    for child in children:
        for s in subs:
            if (child / s).is_dir():
                return f"searched {shown}, but found {child / s}: pass --data-root {child}"
    squashed = {_squash(c.name): c for c in children}
    for s in subs:
        close = difflib.get_close_matches(_squash(s), list(squashed), n=1, cutoff=0.75)
        if close:
            found = squashed[close[0]]
            return f"searched {shown}, but found {found}: rename or link it to {root / s}"
    return None


def require_dir(
    root: Path | None,
    sub: str | tuple[str, ...],
    dataset: str,
    how_to_get: str,
    *,
    markers: tuple[str, ...] = (),
) -> Path:
    """The dataset folder ``root / sub`` (the first of several candidate ``sub`` names that exists).

    Parameters
    ----------
    root : Path | None
        The data root (:func:`resolve_data_root`).
    sub : str or tuple of str
        The dataset's fixed sub-folder name(s), tried in order (``"medpix-2.0"``; ``("iu-xray", "openi")``).
    dataset : str
        Registry name, for messages.
    how_to_get : str
        One or two sentences saying how to obtain the data, appended to "not found" messages.
    markers : tuple of str
        Relative paths found inside the dataset folder (``"Case_topic.json"``): a data root holding one of
        them is the dataset folder itself.

    Returns
    -------
    Path
        The existing dataset folder.

    Raises
    ------
    DatasetError
        One line naming the path searched and the likely mistake: no data root given; a data root that does
        not exist or is a file; a data root one level too deep (the dataset folder itself: the message names
        the parent to pass); one level too high (a sub-folder holds the dataset: it names that folder); a
        near-miss folder name (``MedPix-2-0`` for ``medpix-2.0``); a dataset path that is a file. Otherwise
        "not found" with ``how_to_get``.
    """
    subs = (sub,) if isinstance(sub, str) else tuple(sub)
    layout = " or ".join(f"DIR/{s}/" for s in subs)
    if root is None:
        raise DatasetError(
            f"dataset {dataset!r} needs a data root: pass --data-root DIR or set MEDHASH_DATA_ROOT "
            f"(expected layout {layout}). {how_to_get}"
        )
    root = Path(root)
    if not root.exists():
        raise DatasetError(
            f"dataset {dataset!r}: data root {root} (from --data-root or MEDHASH_DATA_ROOT) does not exist; "
            f"expected layout {layout}"
        )
    if not root.is_dir():
        raise DatasetError(f"dataset {dataset!r}: data root {root} is a file, not a folder; expected layout {layout}")
    for s in subs:
        path = root / s
        if path.is_dir():
            return path
        if path.exists():
            raise DatasetError(f"dataset {dataset!r}: {path} is a file, not the dataset folder")
    hint = _diagnose_root(root, subs, markers)
    if hint is not None:
        raise DatasetError(f"dataset {dataset!r} not found: {hint}")
    raise DatasetError(
        f"dataset {dataset!r} not found: searched {' and '.join(str(root / s) for s in subs)}. {how_to_get}"
    )

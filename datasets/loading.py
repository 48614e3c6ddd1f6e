"""Helpers shared by the real-data loaders: option parsing, label vocabularies, image checks, skip records.

Used by ``medpix``, ``roco``, ``openi`` and ``mirflickr25k``; each loader declares its options as
:class:`OptionSpec` values and reports what it skipped through :class:`SkipCounter`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medhash_datasets.base import DatasetError

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})

#: How a loader checks an image file: ``exists`` (a non-empty regular file), ``open`` (PIL parses the header:
#: format and size; milliseconds per image), ``verify`` (PIL ``Image.verify()``: the whole file, PNG CRCs).
IMAGE_CHECKS = ("exists", "open", "verify")


@dataclass(frozen=True)
class OptionSpec:
    """One loader option: its kind, default and allowed values.

    Attributes
    ----------
    kind : str
        ``"bool"`` (true/false/1/0/yes/no/on/off), ``"int"``, ``"choice"`` or ``"str"``.
    default : Any
        Value used when the option is not given.
    choices : tuple[str, ...]
        Allowed values of a ``"choice"`` option.
    low : int | None
        Smallest allowed value of an ``"int"`` option.
    help : str
        One line shown in error messages and ``data info``.
    """

    kind: str
    default: Any
    choices: tuple[str, ...] = ()
    low: int | None = None
    help: str = ""


def parse_options(dataset: str, options: Mapping[str, object], spec: Mapping[str, OptionSpec]) -> dict[str, Any]:
    """Validate a loader's ``**options`` (strings from ``--dataset-option key=value``, or Python values).

    Parameters
    ----------
    dataset : str
        Loader name, used in error messages.
    options : mapping of str to object
        What the caller passed.
    spec : mapping of str to OptionSpec
        The options the loader accepts.

    Returns
    -------
    dict
        Every option of ``spec`` with its parsed value (defaults filled in).

    Raises
    ------
    DatasetError
        For an unknown option (listing the valid ones) or a value of the wrong kind, naming the option.
    """
    unknown = sorted(set(options) - set(spec))
    if unknown:
        raise DatasetError(f"{dataset}: unknown option(s) {unknown}; valid options: {sorted(spec)}")
    out: dict[str, Any] = {}
    for key, sp in spec.items():
        if key not in options or options[key] is None:
            out[key] = sp.default
            continue
        raw = options[key]
        text = str(raw).strip()
        if sp.kind == "bool":
            if isinstance(raw, bool):
                out[key] = raw
            elif text.lower() in _TRUE:
                out[key] = True
            elif text.lower() in _FALSE:
                out[key] = False
            else:
                raise DatasetError(f"{dataset}: option {key}={raw!r} is not a boolean (use true or false)")
        elif sp.kind == "int":
            try:
                value = int(text)
            except ValueError:
                raise DatasetError(f"{dataset}: option {key}={raw!r} is not an integer") from None
            if sp.low is not None and value < sp.low:
                raise DatasetError(f"{dataset}: option {key}={value} must be >= {sp.low}")
            out[key] = value
        elif sp.kind == "choice":
            if text not in sp.choices:
                raise DatasetError(f"{dataset}: option {key}={raw!r} is not one of {list(sp.choices)}")
            out[key] = text
        elif sp.kind == "str":
            if not text:
                raise DatasetError(f"{dataset}: option {key} is empty")
            out[key] = text
        else:  # pragma: no cover - programming error in a loader's spec
            raise ValueError(f"unknown option kind {sp.kind!r}")
    return out


class SkipCounter:
    """Record skipped source records by reason, each named (id, split, image path, source line, detail).

    Feeds :attr:`PairedDataset.skipped` (counts) and :attr:`PairedDataset.skipped_items` (the records), so
    nothing a loader drops is silent or anonymous.
    """

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.items: list[dict[str, str | None]] = []

    def add(
        self,
        reason: str,
        item_id: str | None = None,
        *,
        path: Path | str | None = None,
        source: str | None = None,
        split: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Record one skipped record.

        Parameters
        ----------
        reason : str
            Why it was skipped (``"empty caption"``, ``"missing image file"``, ...).
        item_id : str | None
            Its id (image name, ROCO id, report uid, row id).
        path : Path | str | None
            Its image file, when it has one.
        source : str | None
            Where it was read, ``"<file name>:<line>"`` or ``"<file name>"``.
        split : str | None
            The split it would have joined.
        detail : str | None
            Anything else that explains the skip (e.g. where the first copy of a duplicate id is).
        """
        self.counts[reason] += 1
        self.items.append({
            "reason": reason, "id": item_id, "split": split, "path": None if path is None else str(path),
            "source": source, "detail": detail,
        })  # fmt: skip

    def add_many(self, reason: str, item_ids: Iterable[str], **fields: str | None) -> None:
        """Record several records skipped for the same reason (same ``fields`` for each; see :meth:`add`)."""
        for item_id in item_ids:
            self.add(reason, item_id, **fields)

    def as_dict(self) -> dict[str, int]:
        """Reason → count, reasons sorted."""
        return {k: int(self.counts[k]) for k in sorted(self.counts) if self.counts[k]}


def check_image(path: Path, mode: str) -> str | None:
    """Check one image file cheaply.

    Parameters
    ----------
    path : Path
        The image file.
    mode : str
        One of :data:`IMAGE_CHECKS`: ``exists`` (regular non-empty file), ``open`` (PIL reads the header; the
        pixels are not decoded), ``verify`` (PIL ``Image.verify()`` reads the whole file and checks PNG CRCs).

    Returns
    -------
    str | None
        ``None`` when the image passes, else the skip reason ``"missing image file"`` or
        ``"unreadable image"``.
    """
    try:
        st = path.stat()
    except OSError:
        return "missing image file"
    if not path.is_file():
        return "missing image file"
    if st.st_size == 0:
        return "unreadable image"
    if mode == "exists":
        return None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.size[0] <= 0 or im.size[1] <= 0:
                return "unreadable image"
            if mode == "verify":
                im.verify()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        return "unreadable image"
    return None


def top_n_vocabulary(label_sets: Iterable[Iterable[str]], n: int) -> list[str]:
    """The ``n`` most frequent labels (each set counted once per label), ties broken by name.

    Parameters
    ----------
    label_sets : iterable of iterables of str
        One collection of labels per record.
    n : int
        How many labels to keep; ``0`` keeps every label.

    Returns
    -------
    list[str]
        Labels sorted by decreasing frequency, then name (deterministic).
    """
    counts: Counter[str] = Counter()
    for labels in label_sets:
        counts.update(set(labels))
    ranked = sorted(counts, key=lambda name: (-counts[name], name))
    return ranked if n == 0 else ranked[:n]


def multi_hot(label_sets: Sequence[Iterable[str]], vocabulary: Sequence[str]) -> np.ndarray:
    """Multi-hot matrix of ``label_sets`` over ``vocabulary`` (labels outside the vocabulary are ignored).

    Returns
    -------
    np.ndarray, shape (len(label_sets), len(vocabulary)), dtype uint8
    """
    col = {name: j for j, name in enumerate(vocabulary)}
    out = np.zeros((len(label_sets), len(vocabulary)), dtype=np.uint8)
    for i, labels in enumerate(label_sets):
        for name in labels:
            j = col.get(name)
            if j is not None:
                out[i, j] = 1
    return out


def split_indices(
    groups: Sequence[str], names: Sequence[str] = ("train", "validation", "query")
) -> dict[str, np.ndarray]:
    """Index arrays per split from a per-item split name, plus ``database`` = train + validation.

    Parameters
    ----------
    groups : sequence of str, length N
        The split name of every item (``"train"``, ``"validation"`` or ``"query"``).

    Returns
    -------
    dict[str, np.ndarray]
        int64 index arrays for ``train``, ``validation``, ``query`` and ``database`` (sorted).
    """
    arr = np.asarray(groups, dtype=object)
    out = {s: np.flatnonzero(arr == s).astype(np.int64) for s in names}
    out["database"] = np.sort(np.concatenate([out["train"], out["validation"]])).astype(np.int64)
    return out


def clean_text(text: object) -> str:
    """Collapse runs of white space to one space and strip; ``None``/NaN give ``""``."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return ""
    return " ".join(str(text).split())

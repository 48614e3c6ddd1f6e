"""ROCO loader (``roco``): Radiology Objects in COntext in its original layout.

ROCO (Pelka et al., LABELS@MICCAI 2018, doi 10.1007/978-3-030-01364-6_20; github.com/razorx89/roco-dataset)
lists PubMed Central figures with their captions, UMLS concepts (CUIs) and UMLS semantic types. Expected
layout under the data root (the repository's ``data/`` folder)::

    roco/<split>/<subset>/captions.txt    ROCO_ID \\t caption
    roco/<split>/<subset>/cuis.txt        ROCO_ID \\t \\t CUI \\t CUI ...
    roco/<split>/<subset>/semtypes.txt    ROCO_ID \\t \\t TUI \\t name \\t TUI \\t name ...
    roco/<split>/<subset>/dlinks.txt      ROCO_ID \\t wget -r ftp://.../PMCxxxxxxx.tar.gz -P /path/to/Dir \\t file.jpg
    roco/<split>/<subset>/images/<PMCID>_<file>    written by the repository's scripts/fetch.py

with ``<split>`` in ``train``, ``validation``, ``test`` and ``<subset>`` in ``radiology``, ``non-radiology``.
The image file name follows ``scripts/fetch.py``: the PMC id (the archive name without ``.tar.gz``) and the
figure file name of ``dlinks.txt`` joined by ``_`` (e.g. ``PMC4705725_IJOrtho-49-602-g006.jpg``). The ROCO
repository ships no images; they are downloaded from PubMed Central by that script.
"""

from __future__ import annotations

import re
from pathlib import Path

from medhash_datasets import DATASETS
from medhash_datasets.base import DatasetError, PairedDataset, require_dir
from medhash_datasets.loading import (
    IMAGE_CHECKS,
    OptionSpec,
    SkipCounter,
    check_image,
    clean_text,
    multi_hot,
    parse_options,
    split_indices,
    top_n_vocabulary,
)

ROCO_SUBDIR = "roco"
ROCO_HOW_TO_GET = (
    "ROCO ships captions, concepts and download links only (github.com/razorx89/roco-dataset): clone it, "
    "copy its data/ folder to DIR/roco/ and run its scripts/fetch.py to download the images from PubMed Central."
)
ROCO_SCHEMES = ("semtypes", "cuis")
ROCO_SPLITS = (("train", "train"), ("validation", "validation"), ("test", "query"))
_TUI = re.compile(r"^T\d{3}$")

ROCO_OPTIONS: dict[str, OptionSpec] = {
    "subset": OptionSpec("choice", "non-radiology", ("non-radiology", "radiology"), help="ROCO subset"),
    "top_n": OptionSpec(
        "int", None, low=0, help="keep the N most frequent labels (default: 20 for cuis, 0 = all for semtypes)"
    ),
    "image_check": OptionSpec("choice", "open", IMAGE_CHECKS, help="how each image file is checked"),
    "require_images": OptionSpec(
        "bool", True, help="false keeps items whose image is absent (text and label statistics only)"
    ),
}


def _read_tsv(path: Path) -> dict[str, list[str]]:
    """ROCO id → the remaining tab-separated fields of its line (first occurrence wins)."""
    if not path.is_file():
        raise DatasetError(f"roco: {path} not found. {ROCO_HOW_TO_GET}")
    out: dict[str, list[str]] = {}
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            out.setdefault(fields[0].strip(), fields[1:])
    return out


def _semtypes(fields: list[str]) -> list[str]:
    """``["", "T061", "Therapeutic or Preventive Procedure", ...]`` → ``["T061 Therapeutic or Preventive Procedure"]``."""
    tokens = [t.strip() for t in fields if t.strip()]
    out = []
    for k, tok in enumerate(tokens):
        if _TUI.match(tok):
            name = tokens[k + 1] if k + 1 < len(tokens) and not _TUI.match(tokens[k + 1]) else ""
            out.append(f"{tok} {name}".strip())
    return out


def _image_name(fields: list[str], path: Path, roco_id: str) -> str:
    """Target file name written by ROCO's ``scripts/fetch.py``: ``<PMCID>_<figure file>``."""
    if len(fields) < 2:
        raise DatasetError(f"roco: {path}: line of {roco_id} has {len(fields) + 1} fields, expected 3")
    words = fields[0].split()
    url = next((w for w in words if w.endswith(".tar.gz")), "")
    if not url:
        raise DatasetError(f"roco: {path}: line of {roco_id} has no .tar.gz archive URL")
    pmc_id = url.rsplit("/", 1)[-1][: -len(".tar.gz")]
    return f"{pmc_id}_{fields[-1].strip()}"


@DATASETS.register("roco")
def load_roco(
    data_root: Path | None, *, label_scheme: str | None = None, seed: int = 0, **options: object
) -> PairedDataset:
    """Load ROCO caption–image pairs with UMLS semantic-type or CUI labels and the official split.

    Parameters
    ----------
    data_root : Path | None
        Folder holding ``roco/`` (layout in the module docstring).
    label_scheme : str | None
        ``semtypes`` (default): multi-hot over UMLS semantic types (label names ``"T061 Therapeutic or
        Preventive Procedure"``); ``cuis``: the ``top_n`` most frequent UMLS CUIs.
    seed : int
        Unused (the split is official).
    **options
        ``subset`` (``non-radiology`` default, as in the MCMFH paper, or ``radiology``); ``top_n`` (int; default
        20 for ``cuis``, 0 = every label for ``semtypes``; frequencies are counted once per item over all three
        splits, ties broken by name); ``image_check`` (``exists`` | ``open`` default | ``verify``);
        ``require_images`` (bool, default true; false keeps items whose image is absent, for text and label
        statistics: ``image_paths`` then point where ``scripts/fetch.py`` would write the images and
        ``info["missing_images"]`` counts the absent ones).

    Returns
    -------
    PairedDataset
        ``ids`` = ROCO ids, ``texts`` = captions, ``image_paths`` = ``<split>/<subset>/images/<PMCID>_<file>``.
        Splits: train, validation, query = test; database = train + validation. ``skipped`` counts: ``duplicate
        id``, ``empty caption``, ``no download link``, ``no label`` (no semantic type / CUI, or none in the
        top N), ``missing image file``, ``unreadable image``.

    Raises
    ------
    DatasetError
        If a required file is absent (e.g. ``train/radiology/captions.txt``, which the public ROCO release
        lacks here), for a bad option or label scheme, or — with ``require_images`` true — when no image of
        the subset is present (the message says how to download them).
    """
    del seed
    scheme = label_scheme or "semtypes"
    if scheme not in ROCO_SCHEMES:
        raise DatasetError(f"roco: unknown label scheme {scheme!r}; valid: {', '.join(ROCO_SCHEMES)}")
    opts = parse_options("roco", options, ROCO_OPTIONS)
    top_n = opts["top_n"] if opts["top_n"] is not None else (20 if scheme == "cuis" else 0)
    opts["top_n"] = top_n
    root = require_dir(data_root, ROCO_SUBDIR, "roco", ROCO_HOW_TO_GET)
    subset = opts["subset"]

    skipped = SkipCounter()
    seen: set[str] = set()
    records: list[tuple[str, str, Path, str, list[str]]] = []  # id, caption, image, split, labels
    source_files: list[Path] = []
    for folder, split in ROCO_SPLITS:
        base = root / folder / subset
        captions = _read_tsv(base / "captions.txt")
        labels_file = base / ("semtypes.txt" if scheme == "semtypes" else "cuis.txt")
        raw_labels = _read_tsv(labels_file)
        links = _read_tsv(base / "dlinks.txt")
        source_files += [base / "captions.txt", labels_file, base / "dlinks.txt"]
        for roco_id, fields in captions.items():
            if roco_id in seen:
                skipped.add("duplicate id")
                continue
            seen.add(roco_id)
            caption = clean_text(fields[0] if fields else "")
            if not caption:
                skipped.add("empty caption")
                continue
            if roco_id not in links:
                skipped.add("no download link")
                continue
            image = base / "images" / _image_name(links[roco_id], base / "dlinks.txt", roco_id)
            fields_l = raw_labels.get(roco_id, [])
            labels = _semtypes(fields_l) if scheme == "semtypes" else [t.strip() for t in fields_l if t.strip()]
            records.append((roco_id, caption, image, split, labels))

    vocabulary = top_n_vocabulary((r[4] for r in records), top_n)
    keep_labels = set(vocabulary)
    kept = []
    missing_images = 0
    n_with_label = 0
    for rec in records:
        if not keep_labels.intersection(rec[4]):
            skipped.add("no label")
            continue
        n_with_label += 1
        problem = check_image(rec[2], opts["image_check"])
        if problem is not None:
            if opts["require_images"]:
                skipped.add(problem)
                continue
            missing_images += 1
        kept.append(rec)

    if opts["require_images"] and n_with_label and skipped.counts["missing image file"] == n_with_label:
        raise DatasetError(
            f"roco: none of the {n_with_label} {subset} images is present (looked in "
            f"{root}/<split>/{subset}/images/, e.g. {records[0][2]}). {ROCO_HOW_TO_GET} Pass --dataset-option "
            "require_images=false to load captions and labels only (statistics, no image features)."
        )
    if not kept:
        raise DatasetError(f"roco: no usable {subset} item under {root} (skipped: {skipped.as_dict()})")
    vocabulary = sorted(vocabulary) if scheme == "semtypes" else vocabulary
    return PairedDataset(
        name="roco",
        ids=[r[0] for r in kept],
        labels=multi_hot([r[4] for r in kept], vocabulary),
        label_names=list(vocabulary),
        splits=split_indices([r[3] for r in kept]),
        label_scheme=scheme if scheme == "semtypes" and top_n == 0 else f"{scheme}-top{top_n}",
        db_includes_train=True,
        texts=[r[1] for r in kept],
        image_paths=[r[2] for r in kept],
        skipped=skipped.as_dict(),
        info={
            **opts,
            "source": str(root),
            "text_field": "caption",
            "source_files": [str(p) for p in source_files],
            "split": "official (train/validation/test folders)",
            "missing_images": missing_images,
        },
    )

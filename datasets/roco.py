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

import numpy as np

from medhash_datasets.base import DatasetError, PairedDataset, require_dir
from medhash_datasets.leakage import ItemRecords, audit_splits, leakage_options
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
from medhash_datasets.registry import DATASETS

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
    # ROCO's official split is by figure: 262 of the 5,175 non-radiology articles have figures in two splits,
    # so straddling articles are flagged (recorded), not refused, by default.
    **leakage_options("flag", "PMC article"),
}
ROCO_CASE_KIND = "PMC article"
#: Sub-paths of a ROCO folder, used to tell a data root that points at the dataset folder itself.
ROCO_MARKERS = ("test/non-radiology", "test/radiology", "validation/non-radiology")


def _read_tsv(path: Path) -> dict[str, tuple[int, list[str]]]:
    """ROCO id → (line number, the remaining tab-separated fields of its line); first occurrence wins."""
    if not path.is_file():
        raise DatasetError(f"roco: {path} not found. {ROCO_HOW_TO_GET}")
    out: dict[str, tuple[int, list[str]]] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            out.setdefault(fields[0].strip(), (lineno, fields[1:]))
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


def _image_name(fields: list[str], path: Path, roco_id: str) -> tuple[str, str]:
    """PMC id (the article) and the target file name written by ROCO's ``scripts/fetch.py``,
    ``<PMCID>_<figure file>``."""
    if len(fields) < 2:
        raise DatasetError(f"roco: {path}: line of {roco_id} has {len(fields) + 1} fields, expected 3")
    words = fields[0].split()
    url = next((w for w in words if w.endswith(".tar.gz")), "")
    if not url:
        raise DatasetError(f"roco: {path}: line of {roco_id} has no .tar.gz archive URL")
    pmc_id = url.rsplit("/", 1)[-1][: -len(".tar.gz")]
    return pmc_id, f"{pmc_id}_{fields[-1].strip()}"


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
        ``info["missing_images"]`` counts the absent ones); ``case_overlap`` (``flag`` default | ``error`` |
        ``merge``): figures of one PMC article in two splits (ROCO's official split is by figure, so its
        articles straddle splits; ``merge`` moves each article's figures to its majority split);
        ``duplicate_images`` (``flag`` default | ``drop`` | ``error`` | ``off``; see
        :mod:`medhash_datasets.leakage`).

    Returns
    -------
    PairedDataset
        ``ids`` = ROCO ids, ``texts`` = captions, ``image_paths`` = ``<split>/<subset>/images/<PMCID>_<file>``.
        Splits: train, validation, query = test; database = train + validation. ``skipped`` counts: ``duplicate
        id``, ``empty caption``, ``no download link``, ``no label`` (no semantic type / CUI, or none in the
        top N), ``missing image file``, ``unreadable image``, ``duplicate image across splits``;
        ``skipped_items`` names each (ROCO id, split, ``<split>/<subset>/captions.txt:<line>``, image path).
        ``leakage`` holds the leakage findings (articles in two splits, identical images, equal captions).

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
    root = require_dir(data_root, ROCO_SUBDIR, "roco", ROCO_HOW_TO_GET, markers=ROCO_MARKERS)
    subset = opts["subset"]

    skipped = SkipCounter()
    first_seen: dict[str, str] = {}
    candidates = ItemRecords()  # every captioned, linked record; labels filtered below
    source_files: list[Path] = []
    for folder, split in ROCO_SPLITS:
        base = root / folder / subset
        captions = _read_tsv(base / "captions.txt")
        labels_file = base / ("semtypes.txt" if scheme == "semtypes" else "cuis.txt")
        raw_labels = _read_tsv(labels_file)
        links = _read_tsv(base / "dlinks.txt")
        source_files += [base / "captions.txt", labels_file, base / "dlinks.txt"]
        for roco_id, (lineno, fields) in captions.items():
            source = f"{folder}/{subset}/captions.txt:{lineno}"
            where = {"split": split, "source": source}
            if roco_id in first_seen:
                skipped.add("duplicate id", roco_id, **where, detail=f"first listed at {first_seen[roco_id]}")
                continue
            first_seen[roco_id] = source
            caption = clean_text(fields[0] if fields else "")
            if not caption:
                skipped.add("empty caption", roco_id, **where)
                continue
            if roco_id not in links:
                skipped.add("no download link", roco_id, **where, detail=f"no line in {folder}/{subset}/dlinks.txt")
                continue
            article, name = _image_name(links[roco_id][1], base / "dlinks.txt", roco_id)
            fields_l = raw_labels.get(roco_id, (0, []))[1]
            labels = _semtypes(fields_l) if scheme == "semtypes" else [t.strip() for t in fields_l if t.strip()]
            candidates.add(roco_id, caption, base / "images" / name, split, labels, article, source)

    vocabulary = top_n_vocabulary(candidates.label_sets, top_n)
    keep_labels = set(vocabulary)
    keep = []
    missing_images = 0
    n_with_label = 0
    for i, roco_id in enumerate(candidates.ids):
        item = {"path": candidates.paths[i], "split": candidates.groups[i], "source": candidates.sources[i]}
        if not keep_labels.intersection(candidates.label_sets[i]):
            what = "semantic type" if scheme == "semtypes" else "CUI"
            detail = f"no {what}" if not candidates.label_sets[i] else f"no {what} among the top {top_n}"
            skipped.add("no label", roco_id, **item, detail=detail)
            keep.append(False)
            continue
        n_with_label += 1
        problem = check_image(candidates.paths[i], opts["image_check"])
        if problem is not None:
            if opts["require_images"]:
                skipped.add(problem, roco_id, **item)
                keep.append(False)
                continue
            missing_images += 1
        keep.append(True)

    if opts["require_images"] and n_with_label and skipped.counts["missing image file"] == n_with_label:
        raise DatasetError(
            f"roco: none of the {n_with_label} {subset} images is present (looked in "
            f"{root}/<split>/{subset}/images/, e.g. {candidates.paths[0]}). {ROCO_HOW_TO_GET} Pass --dataset-option "
            "require_images=false to load captions and labels only (statistics, no image features)."
        )
    records = candidates.subset(np.asarray(keep, dtype=bool))
    if not records:
        raise DatasetError(f"roco: no usable {subset} item under {root} (skipped: {skipped.as_dict()})")
    records, leakage = audit_splits(records, opts, skipped, dataset="roco", case_kind=ROCO_CASE_KIND)
    vocabulary = sorted(vocabulary) if scheme == "semtypes" else vocabulary
    return PairedDataset(
        name="roco",
        ids=records.ids,
        labels=multi_hot(records.label_sets, vocabulary),
        label_names=list(vocabulary),
        splits=split_indices(records.groups),
        label_scheme=scheme if scheme == "semtypes" and top_n == 0 else f"{scheme}-top{top_n}",
        db_includes_train=True,
        texts=records.texts,
        image_paths=records.paths,
        skipped=skipped.as_dict(),
        skipped_items=skipped.items,
        leakage=leakage,
        info={
            **opts,
            "source": str(root),
            "text_field": "caption",
            "source_files": [str(p) for p in source_files],
            "split": "official (train/validation/test folders)",
            "missing_images": missing_images,
        },
    )

"""MedPix 2.0 loader (``medpix``).

MedPix 2.0 (Siragusa et al., *Data Science and Engineering*, 2025, doi 10.1007/s41019-025-00297-8;
github.com/CHILab1/MedPix-2.0) pairs 2,050 CT and MR images of 671 clinical cases with per-image captions.
Expected layout under the data root::

    medpix-2.0/
        Case_topic.json                         one record per case (U_id, Case.Findings, Topic.Category, ...)
        Descriptions.json                       one record per image (cross-checked against the splits)
        images/<image>.png                      any size, mode L or RGB
        splitted_dataset/descriptions_{train,dev,test}.jsonl   the official case-level split

An item is one image with its own caption (``Description.Caption``). Splits are the official ones:
train = ``descriptions_train.jsonl`` (1,653), validation = ``descriptions_dev.jsonl`` (197),
query = ``descriptions_test.jsonl`` (200), database = train + validation (``db_includes_train=True``).

Option parsing, label and image-check helpers live in :mod:`medhash_datasets.loading` (shared by every real loader).
"""

from __future__ import annotations

import json
from pathlib import Path

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
)
from medhash_datasets.registry import DATASETS

MEDPIX_SUBDIR = "medpix-2.0"
MEDPIX_HOW_TO_GET = (
    "Get MedPix 2.0 from github.com/CHILab1/MedPix-2.0 (folder MedPix-2-0/) or run "
    "`python -m benchmarks data fetch medpix --data-root DIR`."
)
#: Label schemes; ``location+topic`` is the default (fine Location plus the case topic Category).
MEDPIX_SCHEMES = ("location+topic", "location", "location_category", "acr", "modality", "topic")
#: Official split files → harness split names.
MEDPIX_SPLIT_FILES = (("train", "train"), ("dev", "validation"), ("test", "query"))

MEDPIX_OPTIONS: dict[str, OptionSpec] = {
    "append_findings": OptionSpec("bool", False, help="append the case Findings (Case_topic.json) to each caption"),
    "image_check": OptionSpec("choice", "open", IMAGE_CHECKS, help="how each image file is checked"),
    "require_images": OptionSpec(
        "bool", True, help="false keeps items whose image is missing or unreadable (label/text statistics only)"
    ),
    **leakage_options("error", "case (U_id)"),
}
#: Files in a MedPix 2.0 folder, used to tell a data root that points at the dataset folder itself.
MEDPIX_MARKERS = ("Case_topic.json", "splitted_dataset")


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """``(line number, record)`` per non-blank line of a JSON-lines file."""
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append((lineno, json.loads(line)))
            except json.JSONDecodeError as err:
                raise DatasetError(f"medpix: {path}:{lineno}: not valid JSON ({err.msg})") from None
    return rows


def _read_json_list(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DatasetError(f"medpix: {path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(data, list):
        raise DatasetError(f"medpix: {path}: expected a JSON list of records, got {type(data).__name__}")
    return data


def _acr_labels(code: object) -> list[str]:
    """ACR index code ``"<anatomy>.<pathology>"`` → ``["anatomy:<d>", "pathology:<d>"]`` (first digits).

    The American College of Radiology index codes a finding as anatomic field and pathology, each a digit
    string whose first digit is the major class (e.g. ``"8.3"``: genitourinary, inflammation; ``"562.1521"``:
    major classes 5 and 1). ``-1`` marks an unspecified part and gives no label.
    """
    if not isinstance(code, str) or "." not in code:
        return []
    out = []
    for prefix, part in zip(("anatomy", "pathology"), code.strip().split(".", 1)):
        part = part.strip()
        if part and part[0].isdigit():
            out.append(f"{prefix}:{part[0]}")
    return out


def _medpix_labels(scheme: str, rec: dict, topic: dict | None) -> list[str]:
    desc = rec.get("Description") or {}
    location = clean_text(rec.get("Location"))
    category = clean_text((topic or {}).get("Category"))
    if scheme == "location":
        return [location] if location else []
    if scheme == "location_category":
        value = clean_text(rec.get("Location Category"))
        return [value] if value else []
    if scheme == "acr":
        return _acr_labels(desc.get("ACR Codes"))
    if scheme == "modality":
        value = clean_text(desc.get("Modality"))
        return [value] if value else []
    if scheme == "topic":
        return [category] if category else []
    # location+topic: prefixed, since several names occur in both fields ("Vascular", "Pathology", ...)
    out = [f"location:{location}"] if location else []
    if category:
        out.append(f"topic:{category}")
    return out


@DATASETS.register("medpix")
def load_medpix(
    data_root: Path | None, *, label_scheme: str | None = None, seed: int = 0, **options: object
) -> PairedDataset:
    """Load MedPix 2.0 image–caption pairs with the official case-level split.

    Parameters
    ----------
    data_root : Path | None
        Folder holding ``medpix-2.0/`` (see the module docstring for the layout).
    label_scheme : str | None
        ``location+topic`` (default: multi-hot over the 22 fine ``Location`` values plus the case topic
        ``Category`` of ``Case_topic.json`` joined by ``U_id``; label names ``location:<v>`` / ``topic:<v>``),
        ``location`` (22), ``location_category`` (5), ``acr`` (ACR index code of the image: its anatomy and
        pathology major classes, ``anatomy:<d>`` / ``pathology:<d>``; ``-1`` parts give no label),
        ``modality`` (``Description.Modality``, e.g. ``"MR - T2 weighted"``) or ``topic`` (Category only).
        Label vocabularies are the values seen on the kept items, sorted by name.
    seed : int
        Unused (the split is official); accepted for the common loader signature.
    **options
        ``append_findings`` (bool, default false): caption + " " + the case ``Findings``.
        ``image_check`` (``exists`` | ``open`` (default) | ``verify``): how each PNG is checked; ``open`` has PIL
        parse the header only (about 0.1 s for all 2,050 images), ``verify`` reads whole files.
        ``require_images`` (bool, default true): false keeps items whose image fails the check (for text and
        label statistics only; ``info["missing_images"]`` counts them).
        ``case_overlap`` (``error`` default | ``merge`` | ``flag``): what to do when a case (``U_id``) has images
        in two split files (the official split is by case, so this means altered split files).
        ``duplicate_images`` (``flag`` default | ``drop`` | ``error`` | ``off``): byte-identical PNGs in two
        splits (see :mod:`medhash_datasets.leakage`).

    Returns
    -------
    PairedDataset
        ``ids`` = image names (``MPX1009_synpic46283``), ``texts`` = captions (white space collapsed),
        ``image_paths`` = ``images/<id>.png``; labels (N, C) uint8. ``skipped`` counts records dropped for:
        ``duplicate id``, ``empty caption``, ``missing image file``, ``unreadable image``, ``no label``,
        ``not in any official split`` (records of ``Descriptions.json`` absent from the split files),
        ``duplicate image across splits`` (with ``duplicate_images=drop``); ``skipped_items`` names each one
        (id, split, image path, ``<split file>:<line>``). ``leakage`` holds the leakage findings.

    Raises
    ------
    DatasetError
        If the folder or a required file is missing or malformed, for a bad option or label scheme, if no
        item is left, or for leakage refused by ``case_overlap=error`` / ``duplicate_images=error``.
    """
    del seed
    scheme = label_scheme or "location+topic"
    if scheme not in MEDPIX_SCHEMES:
        raise DatasetError(f"medpix: unknown label scheme {scheme!r}; valid: {', '.join(MEDPIX_SCHEMES)}")
    opts = parse_options("medpix", options, MEDPIX_OPTIONS)
    root = require_dir(data_root, MEDPIX_SUBDIR, "medpix", MEDPIX_HOW_TO_GET, markers=MEDPIX_MARKERS)
    split_dir = root / "splitted_dataset"
    image_dir = root / "images"
    topics_path = root / "Case_topic.json"
    for path in [topics_path, image_dir] + [split_dir / f"descriptions_{f}.jsonl" for f, _ in MEDPIX_SPLIT_FILES]:
        if not path.exists():
            raise DatasetError(f"medpix: {path} not found. {MEDPIX_HOW_TO_GET}")

    topics: dict[str, dict] = {}
    findings: dict[str, str] = {}
    for case in _read_json_list(topics_path):
        uid = case.get("U_id")
        if uid:
            topics[uid] = case.get("Topic") or {}
            findings[uid] = clean_text((case.get("Case") or {}).get("Findings"))

    skipped = SkipCounter()
    first_seen: dict[str, str] = {}
    records = ItemRecords()
    missing_images = 0
    for file_key, split in MEDPIX_SPLIT_FILES:
        path = split_dir / f"descriptions_{file_key}.jsonl"
        for lineno, rec in _read_jsonl(path):
            image = clean_text(rec.get("image"))
            source = f"{path.name}:{lineno}"
            if not image:
                raise DatasetError(f"medpix: {path}:{lineno}: a record has no 'image' field")
            where = {"split": split, "source": source}
            if image in first_seen:
                skipped.add("duplicate id", image, **where, detail=f"first listed at {first_seen[image]}")
                continue
            first_seen[image] = source
            image_path = image_dir / f"{image}.png"
            caption = clean_text((rec.get("Description") or {}).get("Caption"))
            if not caption:
                skipped.add("empty caption", image, path=image_path, **where)
                continue
            labels = _medpix_labels(scheme, rec, topics.get(rec.get("U_id", "")))
            if not labels:
                skipped.add("no label", image, path=image_path, **where, detail=f"label scheme {scheme}")
                continue
            problem = check_image(image_path, opts["image_check"])
            if problem is not None:
                if opts["require_images"]:
                    skipped.add(problem, image, path=image_path, **where)
                    continue
                missing_images += 1
            if opts["append_findings"]:
                extra = findings.get(rec.get("U_id", ""), "")
                if extra:
                    caption = f"{caption} {extra}"
            case = clean_text(rec.get("U_id")) or image.split("_")[0]
            records.add(image, caption, image_path, split, labels, case, source)

    source_files = [topics_path] + [split_dir / f"descriptions_{f}.jsonl" for f, _ in MEDPIX_SPLIT_FILES]
    descriptions = root / "Descriptions.json"
    if descriptions.is_file():
        source_files.append(descriptions)
        listed = {clean_text(r.get("image")) for r in _read_json_list(descriptions)}
        unsplit = sorted(listed - set(first_seen) - {""})
        skipped.add_many("not in any official split", unsplit, source=descriptions.name)

    if not records:
        raise DatasetError(f"medpix: no usable item under {root} (skipped: {skipped.as_dict()})")
    records, leakage = audit_splits(records, opts, skipped, dataset="medpix", case_kind="case (U_id)")
    vocabulary = sorted({name for labels in records.label_sets for name in labels})
    return PairedDataset(
        name="medpix",
        ids=records.ids,
        labels=multi_hot(records.label_sets, vocabulary),
        label_names=vocabulary,
        splits=split_indices(records.groups),
        label_scheme=scheme,
        db_includes_train=True,
        texts=records.texts,
        image_paths=records.paths,
        skipped=skipped.as_dict(),
        skipped_items=skipped.items,
        leakage=leakage,
        info={
            **opts,
            "source": str(root),
            "text_field": "caption+findings" if opts["append_findings"] else "caption",
            "source_files": [str(p) for p in source_files],
            "split": "official (splitted_dataset/descriptions_{train,dev,test}.jsonl)",
            "n_cases": len(set(records.cases)),
            "missing_images": missing_images,
        },
    )

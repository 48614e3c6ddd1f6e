"""Leakage checks between splits: cases in two splits, byte-identical images, duplicate captions.

A loader with splits collects its items as :class:`ItemRecords` and calls :func:`audit_splits` before it
builds the :class:`~medhash_datasets.base.PairedDataset`. Three kinds of leakage are checked, each with its
own policy (loader options, recorded in ``PairedDataset.leakage`` and shown by ``data info``):

* **case overlap** (``case_overlap``): one case / study / article (MedPix ``U_id``, Open-i report uid, ROCO
  PMC article) with items in two of train / validation / query. ``error`` refuses the data, naming the case,
  its items and their splits; ``merge`` moves every item of the case to the split that holds most of them
  (ties go to the more held-out split: query before validation before train); ``flag`` keeps them and records
  every such case.
* **byte-identical images** (``duplicate_images``): image files with equal SHA-1 of their bytes in two
  different splits. Only files whose byte size is shared with another file are hashed (equal content needs
  equal size), so the check reads a small fraction of the images. ``flag`` (default) records every group,
  ``drop`` removes the copies outside the most held-out split of the group (the official query set stays
  whole; dropped items are listed as skipped, reason ``duplicate image across splits``), ``error`` refuses,
  ``off`` skips the check.
* **caption duplicates** (always reported, never acted on; short texts such as "Normal chest." recur
  legitimately): query items whose normalised text (:func:`normalise_text`) equals that of a database item.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medhash_datasets.base import DatasetError
from medhash_datasets.loading import OptionSpec, SkipCounter

#: Splits a loader assigns items to, from least to most held out (``database`` = train + validation).
HELD_OUT_ORDER = ("train", "validation", "query")
CASE_POLICIES = ("error", "merge", "flag")
IMAGE_POLICIES = ("flag", "drop", "error", "off")
DROP_REASON = "duplicate image across splits"
_CHUNK = 1 << 20


def leakage_options(case_default: str, case_kind: str) -> dict[str, OptionSpec]:
    """The ``case_overlap`` and ``duplicate_images`` loader options (merged into a loader's option spec).

    Parameters
    ----------
    case_default : str
        Default ``case_overlap`` policy of the loader (one of :data:`CASE_POLICIES`).
    case_kind : str
        What a case is for this loader (shown in the help line), e.g. ``"case (U_id)"``.
    """
    return {
        "case_overlap": OptionSpec(
            "choice", case_default, CASE_POLICIES,
            help=f"a {case_kind} with items in two splits: error, merge (move to one split) or flag (record)",
        ),
        "duplicate_images": OptionSpec(
            "choice", "flag", IMAGE_POLICIES,
            help="byte-identical image files in two splits: flag (record), drop (keep the held-out copy), error, off",
        ),
    }  # fmt: skip


@dataclass
class ItemRecords:
    """Per-item columns a loader collects before building its dataset (all lists of equal length).

    Attributes
    ----------
    ids : list[str]
    texts : list[str]
    paths : list[Path]
        Image file per item (may not exist when the loader keeps absent images for statistics).
    groups : list[str]
        Split per item, one of :data:`HELD_OUT_ORDER`.
    label_sets : list[list[str]]
    cases : list[str]
        Case / study / article id per item.
    sources : list[str]
        Where the item was read (``"descriptions_train.jsonl:12"``), for messages.
    """

    ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    label_sets: list[list[str]] = field(default_factory=list)
    cases: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def add(self, item_id: str, text: str, path: Path, group: str, labels: list[str], case: str, source: str) -> None:
        """Append one item."""
        self.ids.append(item_id)
        self.texts.append(text)
        self.paths.append(path)
        self.groups.append(group)
        self.label_sets.append(labels)
        self.cases.append(case)
        self.sources.append(source)

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, keep: np.ndarray) -> ItemRecords:
        """The items where ``keep`` (bool, length N) is true, order kept."""
        idx = np.flatnonzero(keep)
        return ItemRecords(*([col[i] for i in idx] for col in (
            self.ids, self.texts, self.paths, self.groups, self.label_sets, self.cases, self.sources)))  # fmt: skip


def normalise_text(text: str) -> str:
    """Caption key for duplicate detection: Unicode NFKC, case-folded, every run of non-alphanumeric
    characters replaced by one space, stripped (``"Normal  chest-X-ray."`` → ``"normal chest x ray"``)."""
    import re
    import unicodedata

    return " ".join(re.sub(r"[\W_]+", " ", unicodedata.normalize("NFKC", text).casefold()).split())


def sha1_file(path: Path) -> str:
    """Hex SHA-1 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha1(usedforsecurity=False)
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _rank(split: str) -> int:
    return HELD_OUT_ORDER.index(split)


def find_case_overlap(records: ItemRecords) -> list[dict[str, Any]]:
    """Cases with items in more than one split.

    Returns
    -------
    list of dict
        ``{"case": id, "splits": {split: [item ids]}}`` per case, cases in first-seen order, splits in
        :data:`HELD_OUT_ORDER` order.
    """
    per_case: dict[str, dict[str, list[str]]] = {}
    for item_id, group, case in zip(records.ids, records.groups, records.cases):
        per_case.setdefault(case, {}).setdefault(group, []).append(item_id)
    return [
        {"case": case, "splits": {s: splits[s] for s in HELD_OUT_ORDER if s in splits}}
        for case, splits in per_case.items()
        if case and len(splits) > 1
    ]


def cross_split_groups(by_key: dict[str, list[int]], groups: Sequence[str]) -> tuple[list[tuple[str, list[int]]], int]:
    """Split key groups (key → item indices) into those spanning several splits and those within one.

    Returns
    -------
    spanning : list of (key, indices)
        Groups of two or more items in more than one split, ordered by their first item.
    within : int
        Number of groups of two or more items that all sit in one split (not leakage; counted only).
    """
    spanning, within = [], 0
    for key, members in sorted(by_key.items(), key=lambda kv: kv[1][0]):
        if len(members) < 2:
            continue
        if len({groups[i] for i in members}) == 1:
            within += 1
        else:
            spanning.append((key, members))
    return spanning, within


def find_duplicate_images(records: ItemRecords) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Groups of byte-identical image files (SHA-1), hashing only files whose size another file shares.

    Returns
    -------
    groups : list of dict
        ``{"sha1": hex, "size_bytes": n, "items": [{"id", "split", "path"}]}`` for each group of two or more
        files spanning more than one split; items in record order.
    stats : dict
        ``files`` (present image files), ``hashed`` (files read), ``within_split_groups`` (groups of identical
        files that all sit in one split: not leakage, counted only), ``missing`` (absent files, not checked).
    """
    by_size: dict[int, list[int]] = defaultdict(list)
    missing = 0
    for i, path in enumerate(records.paths):
        try:
            by_size[path.stat().st_size].append(i)
        except OSError:
            missing += 1
    by_hash: dict[str, list[int]] = defaultdict(list)
    hashed = 0
    for members in by_size.values():
        if len(members) < 2:
            continue
        for i in members:
            try:
                by_hash[sha1_file(records.paths[i])].append(i)
            except OSError:
                continue
            hashed += 1
    groups: list[dict[str, Any]] = []
    spanning, within = cross_split_groups(by_hash, records.groups)
    for digest, members in spanning:
        groups.append({
            "sha1": digest,
            "size_bytes": int(records.paths[members[0]].stat().st_size),
            "items": [{"id": records.ids[i], "split": records.groups[i], "path": str(records.paths[i])} for i in members],
        })  # fmt: skip
    stats = {"files": len(records) - missing, "hashed": hashed, "within_split_groups": within, "missing": missing}
    return groups, stats


def find_caption_duplicates(
    ids: Sequence[str],
    texts: Sequence[str],
    groups: Sequence[str],
    *,
    keys: Sequence[str] | None = None,
    normalisation: str = "NFKC, case-folded, non-alphanumeric runs as one space",
) -> dict[str, Any]:
    """Query items whose text equals a database item's (every group other than ``query`` is database).

    Parameters
    ----------
    ids, texts, groups : sequences of str, length N
        Item ids, texts and split names.
    keys : sequence of str | None
        Comparison key per item; default :func:`normalise_text` of each text.
    normalisation : str
        How the keys were made (recorded).

    Returns
    -------
    dict
        ``normalisation``, ``n_query``, ``n_query_with_duplicate``, ``items``: one ``{"query": id, "text": query
        text, "database": [first 3 ids], "n_database": count}`` per such query, in item order.
    """
    keys = [normalise_text(t) for t in texts] if keys is None else keys
    database: dict[str, list[str]] = defaultdict(list)
    for item_id, key, group in zip(ids, keys, groups):
        if group != "query":
            database[key].append(item_id)
    items, n_query = [], 0
    for item_id, text, key, group in zip(ids, texts, keys, groups):
        if group != "query":
            continue
        n_query += 1
        twins = database.get(key)
        if twins:
            items.append({"query": item_id, "text": text, "database": twins[:3], "n_database": len(twins)})
    return {
        "normalisation": normalisation,
        "n_query": n_query,
        "n_query_with_duplicate": len(items),
        "items": items,
    }


def feature_row_leakage(
    ids: Sequence[str], query: np.ndarray, image: np.ndarray | None, text: np.ndarray
) -> dict[str, Any]:
    """Leakage findings for datasets shipped as feature matrices (DCMH ``.mat``), query vs database.

    No case ids exist and nothing is acted on: identical image-feature rows (the same photo twice) and
    identical text rows (the same tag set) shared by a query and a database item are reported.

    Parameters
    ----------
    ids : sequence of str, length N
    query : np.ndarray, shape (N,), bool
        Whether each item is a query item (every other item is database).
    image : np.ndarray | None, shape (N, d_img)
    text : np.ndarray, shape (N, d_txt)

    Returns
    -------
    dict
        ``case_overlap`` (``checked: false``), ``duplicate_images`` (groups of byte-identical image rows
        spanning query and database, same layout as for image files, without ``path``) and
        ``caption_duplicates`` (query items whose text row equals a database item's).
    """
    groups = ["query" if q else "database" for q in query]

    def row_keys(arr: np.ndarray) -> list[str]:
        arr = np.ascontiguousarray(arr)
        return [hashlib.sha1(row.tobytes(), usedforsecurity=False).hexdigest() for row in arr]

    out: dict[str, Any] = {"case_overlap": {"checked": False, "reason": "items are single photos without case ids"}}
    if image is None:
        out["duplicate_images"] = {
            "policy": "flag", "checked": False, "reason": "no image features loaded", "n_groups": 0, "groups": []
        }  # fmt: skip
    else:
        by_key: dict[str, list[int]] = defaultdict(list)
        for i, key in enumerate(row_keys(image)):
            by_key[key].append(i)
        spanning, within = cross_split_groups(by_key, groups)
        out["duplicate_images"] = {
            "policy": "flag", "checked": True, "compared": "image-feature rows (bytes)", "files": len(ids),
            "hashed": len(ids), "within_split_groups": within, "missing": 0, "n_groups": len(spanning),
            "n_dropped": 0,
            "groups": [{"sha1": key, "items": [{"id": ids[i], "split": groups[i]} for i in members]}
                       for key, members in spanning],
        }  # fmt: skip
    out["caption_duplicates"] = find_caption_duplicates(
        ids, [""] * len(ids), groups, keys=row_keys(text), normalisation="identical text-feature rows (bytes)"
    )
    return out


def _merge(records: ItemRecords, overlaps: list[dict[str, Any]]) -> None:
    """Move every item of each overlapping case to its majority split (ties: the more held-out split)."""
    target_of: dict[str, str] = {}
    for finding in overlaps:
        splits = finding["splits"]
        target = max(splits, key=lambda s: (len(splits[s]), _rank(s)))
        finding["moved_to"] = target
        finding["moved_items"] = sum(len(v) for s, v in splits.items() if s != target)
        target_of[finding["case"]] = target
    records.groups = [target_of.get(case, group) for case, group in zip(records.cases, records.groups)]


def _case_policy(records: ItemRecords, policy: str, dataset: str, case_kind: str) -> dict[str, Any]:
    """Find cases in two splits and apply ``policy`` (``error`` raises, ``merge`` moves, ``flag`` records)."""
    overlaps = find_case_overlap(records)
    if overlaps and policy == "error":
        first = overlaps[0]
        where = "; ".join(f"{s}: {', '.join(ids[:3])}" for s, ids in first["splits"].items())
        more = f" and {len(overlaps) - 1} more such cases" if len(overlaps) > 1 else ""
        raise DatasetError(
            f"{dataset}: {case_kind} {first['case']} has items in {len(first['splits'])} splits ({where}){more}; "
            "the split must keep each case whole: fix the split files, or pass --dataset-option "
            "case_overlap=merge (move each such case to its majority split) or case_overlap=flag (keep, recorded)"
        )
    if overlaps and policy == "merge":
        _merge(records, overlaps)
    return {"case_kind": case_kind, "policy": policy, "n_cases": len(overlaps), "cases": overlaps}


def _image_policy(
    records: ItemRecords, policy: str, dataset: str, skipped: SkipCounter
) -> tuple[ItemRecords, dict[str, Any]]:
    """Find byte-identical images in two splits and apply ``policy`` (``error``, ``drop``, ``flag``, ``off``)."""
    if policy == "off":
        return records, {
            "policy": "off",
            "checked": False,
            "reason": "duplicate_images=off",
            "n_groups": 0,
            "groups": [],
        }
    groups, stats = find_duplicate_images(records)
    if groups and policy == "error":
        pair = " = ".join(f"{it['path']} ({it['split']})" for it in groups[0]["items"][:2])
        more = f" and {len(groups) - 1} more groups" if len(groups) > 1 else ""
        raise DatasetError(
            f"{dataset}: byte-identical image files in different splits: {pair}{more}; pass --dataset-option "
            "duplicate_images=drop (keep the held-out copy) or duplicate_images=flag (keep, recorded)"
        )
    keep = np.ones(len(records), dtype=bool)
    if policy == "drop":
        index = {item_id: i for i, item_id in enumerate(records.ids)}
        for group in groups:
            top = max(_rank(it["split"]) for it in group["items"])
            kept = next(it for it in group["items"] if _rank(it["split"]) == top)
            group["kept"] = [it["id"] for it in group["items"] if _rank(it["split"]) == top]
            group["dropped"] = [it["id"] for it in group["items"] if _rank(it["split"]) < top]
            for item_id in group["dropped"]:
                i = index[item_id]
                keep[i] = False
                detail = f"same bytes as {kept['id']} ({kept['split']})"
                where = {"path": records.paths[i], "source": records.sources[i], "split": records.groups[i]}
                skipped.add(DROP_REASON, item_id, **where, detail=detail)
    findings = {"policy": policy, "checked": True, **stats, "n_groups": len(groups)}
    findings.update(n_dropped=int((~keep).sum()), groups=groups)
    return (records if keep.all() else records.subset(keep)), findings


def audit_splits(
    records: ItemRecords, opts: dict[str, Any], skipped: SkipCounter, *, dataset: str, case_kind: str
) -> tuple[ItemRecords, dict[str, Any]]:
    """Check ``records`` for leakage between splits and apply the policies in ``opts``.

    Parameters
    ----------
    records : ItemRecords
        The loader's kept items with their splits (modified in place by ``case_overlap=merge``).
    opts : dict
        Parsed loader options holding ``case_overlap`` and ``duplicate_images`` (see :func:`leakage_options`).
    skipped : SkipCounter
        Receives the items dropped by ``duplicate_images=drop`` (reason :data:`DROP_REASON`).
    dataset : str
        Loader name, for messages.
    case_kind : str
        What a case is (``"case (U_id)"``, ``"report (uid)"``, ``"PMC article"``), recorded and shown.

    Returns
    -------
    (ItemRecords, dict)
        The records after the policies (items moved or dropped) and the findings, JSON-able:
        ``{"case_overlap": {...}, "duplicate_images": {...}, "caption_duplicates": {...}}``. Cases are merged
        before images are compared, and captions are compared on what is left.

    Raises
    ------
    DatasetError
        ``case_overlap=error`` and a case in two splits, or ``duplicate_images=error`` and a byte-identical
        image in two splits; the message names the first case or files and the option that changes it.
    """
    leakage: dict[str, Any] = {"case_overlap": _case_policy(records, opts["case_overlap"], dataset, case_kind)}
    records, leakage["duplicate_images"] = _image_policy(records, opts["duplicate_images"], dataset, skipped)
    leakage["caption_duplicates"] = find_caption_duplicates(records.ids, records.texts, records.groups)
    return records, leakage

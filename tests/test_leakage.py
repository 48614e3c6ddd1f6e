"""Leakage between splits (issue 13 item 4) for MedPix, ROCO, Open-i and DCMH feature files.

Small stand-in folders are written to ``tmp_path``; expected findings are worked by hand or recomputed here
independently (SHA-1 of the file bytes with ``hashlib``, file sizes with ``os.stat``).
"""

from __future__ import annotations

import collections
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from medhash_datasets.base import DatasetError
from medhash_datasets.leakage import feature_row_leakage, normalise_text
from medhash_datasets.loaders import DATASETS
from tests.dataset_trees import medpix_record, medpix_tree, png, roco_tree


def _issue_tree(tmp_path: Path) -> Path:
    """The issue's input: MPX3_b (test) is a byte-identical copy of MPX1_a (train) under another id and case."""
    train = [
        medpix_record("MPX1_a", "MPX1", "Disc herniation at L4-L5."),
        medpix_record("MPX2_a", "MPX2", "Cord edema."),
        medpix_record("MPX2_b", "MPX2", "Cord edema, sagittal."),
    ]
    dev = [medpix_record("MPX4_a", "MPX4", "Syrinx.")]
    test = [
        medpix_record("MPX3_a", "MPX3", "Vertebral fracture."),
        medpix_record("MPX3_b", "MPX3", "disc herniation at L4/L5"),  # same caption after normalisation
    ]
    root = medpix_tree(tmp_path, train, dev, test)
    for value, name in enumerate(("MPX1_a", "MPX2_a", "MPX4_a", "MPX3_a"), 1):
        png(root / "images" / f"{name}.png", value=40 * value, size=(8 + value, 6))
    png(root / "images" / "MPX2_b.png", value=80, size=(10, 6))  # = MPX2_a (same split: not leakage)
    shutil.copyfile(root / "images" / "MPX1_a.png", root / "images" / "MPX3_b.png")
    return root


def test_normalise_text_hand_examples():
    assert normalise_text("Normal  chest-X-ray.") == "normal chest x ray"
    assert (
        normalise_text("Disc herniation at L4-L5.")
        == normalise_text("disc HERNIATION at l4/l5")
        == ("disc herniation at l4 l5")
    )
    assert normalise_text("ﬁbrosis_ (Ⅱ)") == "fibrosis ii"  # NFKC: ligature and Roman numeral


def test_medpix_byte_identical_image_across_splits_is_flagged(tmp_path):
    root = _issue_tree(tmp_path)
    ds = DATASETS.get("medpix")(tmp_path)
    images = ds.leakage["duplicate_images"]
    digest = hashlib.sha1((root / "images" / "MPX1_a.png").read_bytes()).hexdigest()
    assert images["policy"] == "flag" and images["n_groups"] == 1 and images["n_dropped"] == 0
    assert images["groups"] == [{
        "sha1": digest,
        "size_bytes": (root / "images" / "MPX1_a.png").stat().st_size,
        "items": [
            {"id": "MPX1_a", "split": "train", "path": str(root / "images" / "MPX1_a.png")},
            {"id": "MPX3_b", "split": "query", "path": str(root / "images" / "MPX3_b.png")},
        ],
    }]  # fmt: skip
    assert images["within_split_groups"] == 1  # MPX2_a = MPX2_b, both train
    # Only files whose size another file shares are hashed: recount independently.
    sizes = collections.Counter(p.stat().st_size for p in ds.image_paths)
    assert images["hashed"] == sum(c for c in sizes.values() if c > 1) and images["files"] == 6
    assert ds.ids == ["MPX1_a", "MPX2_a", "MPX2_b", "MPX4_a", "MPX3_a", "MPX3_b"]  # flag keeps every item
    # Captions: MPX3_b's normalised caption equals MPX1_a's; reported, nothing dropped.
    caps = ds.leakage["caption_duplicates"]
    assert caps["n_query"] == 2 and caps["n_query_with_duplicate"] == 1
    assert caps["items"] == [
        {"query": "MPX3_b", "text": "disc herniation at L4/L5", "database": ["MPX1_a"], "n_database": 1}
    ]
    text = ds.format_leakage()
    assert "leakage: 1 group of byte-identical images across splits" in text and "[duplicate_images=flag]" in text
    assert "    MPX1_a (train) = MPX3_b (query)" in text
    assert "leakage: 1 of 2 query texts equal a database text" in text
    assert "    MPX3_b = MPX1_a: 'disc herniation at L4/L5'" in text


def test_medpix_duplicate_image_drop_and_error(tmp_path):
    root = _issue_tree(tmp_path)
    load = DATASETS.get("medpix")
    dropped = load(tmp_path, duplicate_images="drop")
    # The held-out (query) copy stays, so the official test set is whole; the train copy goes, named.
    assert "MPX1_a" not in dropped.ids and "MPX3_b" in dropped.ids
    assert [dropped.ids[i] for i in dropped.splits["query"]] == ["MPX3_a", "MPX3_b"]
    assert dropped.skipped == {"duplicate image across splits": 1}
    assert dropped.skipped_items == [{
        "reason": "duplicate image across splits", "id": "MPX1_a", "split": "train",
        "path": str(root / "images" / "MPX1_a.png"), "source": "descriptions_train.jsonl:1",
        "detail": "same bytes as MPX3_b (query)",
    }]  # fmt: skip
    group = dropped.leakage["duplicate_images"]["groups"][0]
    assert group["kept"] == ["MPX3_b"] and group["dropped"] == ["MPX1_a"]
    assert dropped.leakage["caption_duplicates"]["n_query_with_duplicate"] == 0  # its caption twin went too
    with pytest.raises(DatasetError, match=(
        r"^medpix: byte-identical image files in different splits: .*MPX1_a\.png \(train\) = .*MPX3_b\.png "
        r"\(query\); pass --dataset-option duplicate_images=drop")):  # fmt: skip
        load(tmp_path, duplicate_images="error")
    off = load(tmp_path, duplicate_images="off")
    assert off.leakage["duplicate_images"]["checked"] is False and len(off) == 6
    assert "not checked (duplicate_images=off)" in off.format_leakage()


def _case_tree(tmp_path: Path) -> Path:
    """Case MPX1 has images in train (2) and test (1); case MPX4 in train (1) and dev (1)."""
    train = [
        medpix_record("MPX1_a", "MPX1", "Disc herniation."),
        medpix_record("MPX1_b", "MPX1", "Disc herniation, sagittal."),
        medpix_record("MPX4_a", "MPX4", "Syrinx."),
        medpix_record("MPX2_a", "MPX2", "Cord edema."),
    ]
    dev = [medpix_record("MPX4_b", "MPX4", "Syrinx, axial.")]
    test = [medpix_record("MPX1_x", "MPX1", "Disc herniation, axial."), medpix_record("MPX3_a", "MPX3", "Fracture.")]
    root = medpix_tree(tmp_path, train, dev, test)
    for k, rec in enumerate(train + dev + test):
        png(root / "images" / f"{rec['image']}.png", value=20 * k + 5)
    return root


def test_medpix_case_in_two_split_files_is_refused_by_default(tmp_path):
    _case_tree(tmp_path)
    with pytest.raises(DatasetError, match=(
        r"^medpix: case \(U_id\) MPX1 has items in 2 splits \(train: MPX1_a, MPX1_b; query: MPX1_x\) and 1 more "
        r"such cases; the split must keep each case whole: .*case_overlap=merge .*case_overlap=flag")):  # fmt: skip
        DATASETS.get("medpix")(tmp_path)


def test_medpix_case_overlap_merge_and_flag(tmp_path):
    _case_tree(tmp_path)
    load = DATASETS.get("medpix")
    merged = load(tmp_path, case_overlap="merge")
    split_of = {merged.ids[i]: s for s in ("train", "validation", "query") for i in merged.splits[s]}
    # MPX1: 2 train vs 1 query → all train. MPX4: 1 train vs 1 validation (tie) → the more held-out split.
    assert split_of == {"MPX1_a": "train", "MPX1_b": "train", "MPX1_x": "train", "MPX4_a": "validation",
                        "MPX4_b": "validation", "MPX2_a": "train", "MPX3_a": "query"}  # fmt: skip
    cases = merged.leakage["case_overlap"]
    assert cases["policy"] == "merge" and cases["n_cases"] == 2
    assert cases["cases"] == [
        {"case": "MPX1", "splits": {"train": ["MPX1_a", "MPX1_b"], "query": ["MPX1_x"]}, "moved_to": "train",
         "moved_items": 1},
        {"case": "MPX4", "splits": {"train": ["MPX4_a"], "validation": ["MPX4_b"]}, "moved_to": "validation",
         "moved_items": 1},
    ]  # fmt: skip
    assert merged.split_sizes() == {"train": 4, "validation": 2, "query": 1, "database": 6}
    assert "MPX1 (train: MPX1_a, MPX1_b; query: MPX1_x) -> moved to train" in merged.format_leakage()
    flagged = load(tmp_path, case_overlap="flag")
    assert flagged.split_sizes() == {"train": 4, "validation": 1, "query": 2, "database": 5}
    assert [c["case"] for c in flagged.leakage["case_overlap"]["cases"]] == ["MPX1", "MPX4"]
    assert "leakage by case (U_id): 2 with items in two or more splits [case_overlap=flag]" in flagged.format_leakage()


def test_audit_dict_is_strict_json_and_truncates(tmp_path):
    _case_tree(tmp_path)
    ds = DATASETS.get("medpix")(tmp_path, case_overlap="flag")
    full = ds.audit()
    assert json.loads(json.dumps(full, allow_nan=False)) == full
    assert set(full) == {"dataset", "label_scheme", "n_items", "split_sizes", "skipped", "skipped_items", "leakage",
                         "info"}  # fmt: skip
    assert full["leakage"]["case_overlap"]["n_cases"] == 2 and "source_files" not in full["info"]
    short = ds.audit(first=1)
    assert short["leakage"]["case_overlap"]["cases"] == full["leakage"]["case_overlap"]["cases"][:1]
    assert short["leakage"]["case_overlap"]["truncated"] is True and short["leakage"]["case_overlap"]["n_cases"] == 2


def test_medpix_real_split_has_no_leakage(data_root):
    from tests.conftest import require_dataset

    require_dataset(data_root, "medpix-2.0")
    ds = DATASETS.get("medpix")(data_root, image_check="exists")
    leak = ds.leakage
    assert leak["case_overlap"]["n_cases"] == 0 and leak["duplicate_images"]["n_groups"] == 0
    assert leak["caption_duplicates"] == {**leak["caption_duplicates"], "n_query": 200, "n_query_with_duplicate": 0}
    sizes = collections.Counter(p.stat().st_size for p in ds.image_paths)
    assert leak["duplicate_images"]["hashed"] == sum(c for c in sizes.values() if c > 1) < len(ds) // 10


def _roco_rows() -> dict[str, list[tuple[str, str, str, str]]]:
    return {
        "train": [("ROCO_1", "Petri dish.", "PMC11", "f1.jpg"), ("ROCO_2", "Trocar placement.", "PMC11", "f2.jpg"),
                  ("ROCO_3", "Graph.", "PMC12", "f1.jpg")],
        "validation": [("ROCO_4", "Gel.", "PMC13", "f1.jpg")],
        "test": [("ROCO_5", "trocar  placement", "PMC11", "f3.jpg"), ("ROCO_6", "Map.", "PMC14", "f1.jpg")],
    }  # fmt: skip


def test_roco_article_in_two_splits_flagged_by_default(tmp_path):
    root = roco_tree(tmp_path, _roco_rows())
    load = DATASETS.get("roco")
    ds = load(tmp_path)
    cases = ds.leakage["case_overlap"]
    assert cases["case_kind"] == "PMC article" and cases["policy"] == "flag"
    assert cases["cases"] == [{"case": "PMC11", "splits": {"train": ["ROCO_1", "ROCO_2"], "query": ["ROCO_5"]}}]
    assert ds.leakage["caption_duplicates"]["items"] == [
        {"query": "ROCO_5", "text": "trocar placement", "database": ["ROCO_2"], "n_database": 1}
    ]
    assert ds.leakage["duplicate_images"]["n_groups"] == 0
    with pytest.raises(DatasetError, match=r"^roco: PMC article PMC11 has items in 2 splits \(train: ROCO_1, ROCO_2;"):
        load(tmp_path, case_overlap="error")
    merged = load(tmp_path, case_overlap="merge")
    assert [merged.ids[i] for i in merged.splits["query"]] == ["ROCO_6"]
    # A byte-identical figure in validation and test: flagged, and dropped from validation with drop.
    shutil.copyfile(root / "test" / "non-radiology" / "images" / "PMC14_f1.jpg",
                    root / "validation" / "non-radiology" / "images" / "PMC13_f1.jpg")  # fmt: skip
    dropped = load(tmp_path, duplicate_images="drop")
    assert "ROCO_4" not in dropped.ids and dropped.skipped_items[0]["detail"] == "same bytes as ROCO_6 (query)"
    assert dropped.skipped_items[0]["source"] == "validation/non-radiology/captions.txt:1"


def test_openi_identical_images_of_different_reports(tmp_path):
    base = tmp_path / "iu-xray"
    base.mkdir()
    uids = range(1, 11)
    (base / "indiana_reports.csv").write_text(
        "uid,MeSH,Problems,image,indication,comparison,findings,impression\n"
        + "".join(f"{u},normal,normal,x,,,,Report {u} no acute disease.\n" for u in uids)
    )
    (base / "indiana_projections.csv").write_text(
        "uid,filename,projection\n" + "".join(f"{u},{u}_IM-000{u}-1001.dcm.png,Frontal\n" for u in uids)
    )
    for u in uids:  # every stand-in image has the same bytes
        png(base / "images" / "images_normalized" / f"{u}_IM-000{u}-1001.dcm.png")
    load = DATASETS.get("openi")
    ds = load(tmp_path, seed=1, split="50,20,30")
    images = ds.leakage["duplicate_images"]
    assert images["n_groups"] == 1 and [it["id"] for it in images["groups"][0]["items"]] == ds.ids
    assert ds.leakage["case_overlap"]["n_cases"] == 0 and ds.leakage["case_overlap"]["case_kind"] == "report (uid)"
    # Report texts differ only by number: no caption duplicate after normalisation.
    assert ds.leakage["caption_duplicates"]["n_query_with_duplicate"] == 0
    dropped = load(tmp_path, seed=1, split="50,20,30", duplicate_images="drop")
    query_ids = [ds.ids[i] for i in ds.splits["query"]]
    assert dropped.ids == query_ids and dropped.skipped["duplicate image across splits"] == len(ds) - len(query_ids)
    assert dropped.info["reports_per_split"] == {"train": 0, "validation": 0, "query": len(query_ids)}


def test_feature_row_leakage_hand_example():
    ids = ["a", "b", "c", "d"]
    query = np.array([True, False, False, True])
    image = np.array([[1.0, 2.0], [3.0, 4.0], [1.0, 2.0], [5.0, 6.0]], dtype=np.float32)  # a = c
    text = np.array([[1, 0], [1, 0], [0, 1], [1, 1]], dtype=np.float32)  # a = b
    out = feature_row_leakage(ids, query, image, text)
    assert out["case_overlap"]["checked"] is False
    digest = hashlib.sha1(image[0].tobytes()).hexdigest()
    assert out["duplicate_images"]["groups"] == [
        {"sha1": digest, "items": [{"id": "a", "split": "query"}, {"id": "c", "split": "database"}]}
    ]
    caps = out["caption_duplicates"]
    assert caps["n_query"] == 2 and caps["n_query_with_duplicate"] == 1
    assert caps["items"] == [{"query": "a", "text": "", "database": ["b"], "n_database": 1}]
    assert feature_row_leakage(ids, query, None, text)["duplicate_images"]["checked"] is False

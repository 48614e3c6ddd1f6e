"""Skipped items are named, not only counted (issue 13 item 12), for every loader; and ``data info`` lists
them all together with the leakage findings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medhash_datasets.base import DatasetError, PairedDataset
from medhash_datasets.loaders import DATASETS
from tests.dataset_trees import medpix_record, medpix_tree, png


def _damaged_medpix(tmp_path: Path) -> Path:
    """The issue's input: one image file missing, one PNG that is not an image, one empty caption."""
    train = [
        medpix_record("MPX1_a", "MPX1", "Disc herniation at L4-L5."),
        medpix_record("MPX1_b", "MPX1", "Image file absent."),  # missing image
        medpix_record("MPX1_c", "MPX1", "Corrupt file."),  # not an image
    ]
    dev = [medpix_record("MPX2_a", "MPX2", "Cord edema.")]
    test = [medpix_record("MPX3_a", "MPX3", "Vertebral fracture."), medpix_record("MPX3_b", "MPX3", "  ")]
    root = medpix_tree(tmp_path, train, dev, test)
    for k, name in enumerate(("MPX1_a", "MPX2_a", "MPX3_a", "MPX3_b"), 1):
        png(root / "images" / f"{name}.png", value=30 * k)
    (root / "images" / "MPX1_c.png").write_bytes(b"\x89PNG\r\n\x1a\n but not really an image")
    return root


def test_medpix_skipped_items_name_id_split_path_and_line(tmp_path):
    root = _damaged_medpix(tmp_path)
    ds = DATASETS.get("medpix")(tmp_path)
    img = root / "images"
    assert ds.ids == ["MPX1_a", "MPX2_a", "MPX3_a"]
    assert ds.skipped == {"empty caption": 1, "missing image file": 1, "unreadable image": 1}
    assert ds.skipped_items == [
        {"reason": "missing image file", "id": "MPX1_b", "split": "train", "path": str(img / "MPX1_b.png"),
         "source": "descriptions_train.jsonl:2", "detail": None},
        {"reason": "unreadable image", "id": "MPX1_c", "split": "train", "path": str(img / "MPX1_c.png"),
         "source": "descriptions_train.jsonl:3", "detail": None},
        {"reason": "empty caption", "id": "MPX3_b", "split": "query", "path": str(img / "MPX3_b.png"),
         "source": "descriptions_test.jsonl:2", "detail": None},
    ]  # fmt: skip
    assert ds.format_skipped(first=5) == "\n".join([
        "skipped 3 source records: empty caption=1, missing image file=1, unreadable image=1",
        f"  empty caption: MPX3_b (query, descriptions_test.jsonl:2) {img / 'MPX3_b.png'}",
        f"  missing image file: MPX1_b (train, descriptions_train.jsonl:2) {img / 'MPX1_b.png'}",
        f"  unreadable image: MPX1_c (train, descriptions_train.jsonl:3) {img / 'MPX1_c.png'}",
    ])  # fmt: skip
    audit = ds.audit()
    assert json.loads(json.dumps(audit, allow_nan=False))["skipped_items"] == ds.skipped_items
    # require_images=false keeps the two image failures as items: only the empty caption is named.
    loose = DATASETS.get("medpix")(tmp_path, require_images="false")
    assert [(i["reason"], i["id"]) for i in loose.skipped_items] == [("empty caption", "MPX3_b")]


def test_format_skipped_first_n_per_reason_and_duplicates(tmp_path):
    train = [medpix_record(f"MPX1_{c}", "MPX1", f"Caption {c}.") for c in "abcd"]
    test = [medpix_record("MPX3_a", "MPX3", "Fracture."), medpix_record("MPX1_a", "MPX1", "Listed twice.")]
    root = medpix_tree(tmp_path, train, [medpix_record("MPX2_a", "MPX2", "Edema.")], test)
    png(root / "images" / "MPX1_a.png", 10)
    png(root / "images" / "MPX2_a.png", 20)
    png(root / "images" / "MPX3_a.png", 30)
    (root / "Descriptions.json").write_text(json.dumps(train + test + [medpix_record("MPX9_z", "MPX9", "x")]))
    ds = DATASETS.get("medpix")(tmp_path)  # MPX1_b..d: missing images
    text = ds.format_skipped(first=2).splitlines()
    assert text[0] == "skipped 5 source records: duplicate id=1, missing image file=3, not in any official split=1"
    assert (
        text[1]
        == "  duplicate id: MPX1_a (query, descriptions_test.jsonl:2): first listed at descriptions_train.jsonl:1"
    )
    assert [line.split(" (")[0] for line in text[2:4]] == [
        "  missing image file: MPX1_b",
        "  missing image file: MPX1_c",
    ]
    assert text[4] == "  missing image file: ... and 1 more (all listed by `data info` and in the run record)"
    assert text[5] == "  not in any official split: MPX9_z (Descriptions.json)"
    assert len(ds.audit(first=2)["skipped_items"]) == 4 and len(ds.audit()["skipped_items"]) == 5


def test_data_info_lists_every_skipped_item_and_the_leakage(tmp_path, capsys):
    from benchmarks.cli import main

    root = _damaged_medpix(tmp_path)
    assert main(["data", "info", "medpix", "--data-root", str(tmp_path), "--check-images"]) == 0
    out = capsys.readouterr().out
    assert "skipped records (3, every one):" in out
    for name, reason, source in (("MPX1_b", "missing image file", "descriptions_train.jsonl:2"),
                                 ("MPX1_c", "unreadable image", "descriptions_train.jsonl:3"),
                                 ("MPX3_b", "empty caption", "descriptions_test.jsonl:2")):  # fmt: skip
        line = next(x for x in out.splitlines() if f"| {name} " in x)
        assert reason in line and source in line and str(root / "images" / f"{name}.png") in line
    assert "leakage by case (U_id): 0 with items in two or more splits" in out
    assert "leakage: 0 groups of byte-identical images across splits" in out
    assert "leakage: 0 of 1 query texts equal a database text" in out


def test_roco_and_openi_skipped_items_are_named(tmp_path):
    from tests.dataset_trees import roco_tree

    rows = {
        "train": [("ROCO_1", "Petri dish.", "PMC11", "f1.jpg"), ("ROCO_2", " ", "PMC12", "f1.jpg")],
        "validation": [("ROCO_3", "Gel.", "PMC13", "f1.jpg")],
        "test": [("ROCO_4", "Map.", "PMC14", "f1.jpg")],
    }
    root = roco_tree(tmp_path, rows)
    (root / "test" / "non-radiology" / "images" / "PMC14_f1.jpg").unlink()
    ds = DATASETS.get("roco")(tmp_path)
    assert [(i["reason"], i["id"], i["split"], i["source"]) for i in ds.skipped_items] == [
        ("empty caption", "ROCO_2", "train", "train/non-radiology/captions.txt:2"),
        ("missing image file", "ROCO_4", "query", "test/non-radiology/captions.txt:1"),
    ]
    assert ds.skipped_items[1]["path"] == str(root / "test" / "non-radiology" / "images" / "PMC14_f1.jpg")

    base = tmp_path / "iu-xray"
    base.mkdir()
    (base / "indiana_reports.csv").write_text(
        "uid,MeSH,Problems,image,indication,comparison,findings,impression\n"
        "1,normal,normal,x,,,,No acute disease.\n"
        "2,normal,normal,x,,,,\n"  # empty report text
        "3,No Indexing,normal,x,,,,Limited study.\n"  # no label
        "4,normal,normal,x,,,,Clear lungs.\n"  # lateral view only
    )
    (base / "indiana_projections.csv").write_text(
        "uid,filename,projection\n1,1_IM-0001-1001.dcm.png,Frontal\n1,1_IM-0001-2001.dcm.png,Frontal\n"
        "4,4_IM-0004-1001.dcm.png,Lateral\n"
    )
    for name in ("1_IM-0001-1001.dcm.png", "1_IM-0001-2001.dcm.png", "4_IM-0004-1001.dcm.png"):
        png(base / "images" / "images_normalized" / name)
    op = DATASETS.get("openi")(tmp_path, split="100,0,0.0001")
    assert [(i["reason"], i["id"], i["source"]) for i in op.skipped_items] == [
        ("empty report text", "2", "indiana_reports.csv row 2"),
        ("no label", "3", "indiana_reports.csv row 3"),
        ("extra frontal view", "1_IM-0001-2001", "indiana_reports.csv row 1"),
        ("no frontal image", "4", "indiana_reports.csv row 4"),
    ]
    assert op.skipped_items[2]["detail"] == "report 1 keeps 1_IM-0001-1001"
    assert op.skipped_items[3]["detail"] == "views: Lateral"


def test_dcmh_rows_skipped_are_named(tmp_path):
    import scipy.io

    folder = tmp_path / "mirflickr25k"
    folder.mkdir()
    labels = np.eye(3, dtype=np.uint8)[np.arange(12) % 3]
    labels[4] = 0
    text = np.ones((12, 5), dtype=np.float32)
    text[7] = 0
    scipy.io.savemat(folder / "mirflickr25k-lall.mat", {"LAll": labels})
    scipy.io.savemat(folder / "mirflickr25k-yall.mat", {"YAll": text})
    ds = DATASETS.get("mirflickr25k")(tmp_path, require_images="false", n_query="2", n_train="4", n_validation="1")
    assert [(i["reason"], i["id"], i["source"]) for i in ds.skipped_items] == [
        ("no label", "mirflickr25k_00004", "mirflickr25k-lall.mat"),
        ("empty text", "mirflickr25k_00007", "mirflickr25k-yall.mat"),
    ]
    # every text row is identical: each query's text equals a database text (reported)
    assert ds.leakage["caption_duplicates"]["n_query_with_duplicate"] == 2


def test_validate_refuses_skip_counts_that_disagree_with_the_named_items():
    kwargs = dict(name="x", ids=["a"], labels=np.ones((1, 1), np.uint8), label_names=["l"], label_scheme="s",
                  splits={s: np.array([0] if s == "train" else [], np.int64) for s in
                          ("train", "validation", "query", "database")}, db_includes_train=True)  # fmt: skip
    item = {"reason": "empty caption", "id": "b", "split": None, "path": None, "source": None, "detail": None}
    ok = PairedDataset(**kwargs, skipped={"empty caption": 1}, skipped_items=[item])
    assert ok.format_skipped() == "skipped 1 source record: empty caption=1\n  empty caption: b"
    with pytest.raises(DatasetError, match=r"x: skipped_items count \{'empty caption': 1\} but skipped says"):
        PairedDataset(**kwargs, skipped={"empty caption": 2}, skipped_items=[item])
    assert PairedDataset(**kwargs).format_skipped() == "" and PairedDataset(**kwargs).format_leakage() == ""

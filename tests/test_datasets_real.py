"""Real-data loaders: MedPix 2.0, ROCO, Open-i (CSV and XML layouts) and MIRFlickr-25K (DCMH ``.mat``).

Tests marked ``realdata`` read ``../shared/data`` (or ``MEDHASH_DATA_ROOT``) and skip when it is absent.
Expected values are recomputed here independently from the raw files (json / csv / scipy), or worked by
hand on small stand-in trees written to ``tmp_path``. MedPix images are opened (header only) once, in the
module-scoped ``medpix_default`` fixture; every other MedPix load uses ``image_check=exists``.
"""

from __future__ import annotations

import collections
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medhash_datasets.base import DatasetError
from medhash_datasets.loaders import DATASETS
from medhash_datasets.loading import check_image, parse_options, top_n_vocabulary
from medhash_datasets.mirflickr import MIRFLICKR_LABELS, read_mat_array
from medhash_datasets.openi import normalise_heading, parse_openi_xml
from tests.conftest import require_dataset
from tests.dataset_trees import medpix_record as _medpix_record
from tests.dataset_trees import png as _png
from tests.dataset_trees import write_jsonl as _write_jsonl

realdata = pytest.mark.realdata


# ------------------------------------------------------------------------------------------------ helpers


def test_parse_options_kinds_and_errors():
    from medhash_datasets.loading import OptionSpec

    spec = {
        "flag": OptionSpec("bool", False),
        "n": OptionSpec("int", 20, low=1),
        "view": OptionSpec("choice", "frontal", ("frontal", "all")),
    }
    assert parse_options("x", {}, spec) == {"flag": False, "n": 20, "view": "frontal"}
    assert parse_options("x", {"flag": "YES", "n": "7", "view": "all"}, spec) == {"flag": True, "n": 7, "view": "all"}
    with pytest.raises(DatasetError, match=r"x: option flag='maybe' is not a boolean"):
        parse_options("x", {"flag": "maybe"}, spec)
    with pytest.raises(DatasetError, match=r"option n=0 must be >= 1"):
        parse_options("x", {"n": "0"}, spec)
    with pytest.raises(DatasetError, match=r"option n='2.5' is not an integer"):
        parse_options("x", {"n": "2.5"}, spec)
    with pytest.raises(DatasetError, match=r"option view='side' is not one of \['frontal', 'all'\]"):
        parse_options("x", {"view": "side"}, spec)
    with pytest.raises(DatasetError, match=r"unknown option\(s\) \['colour'\]; valid options: \['flag', 'n', 'view'\]"):
        parse_options("x", {"colour": "red"}, spec)


def test_top_n_vocabulary_counts_once_per_item_and_breaks_ties_by_name():
    sets = [["b", "b", "a"], ["c", "a"], ["c"], ["d"]]
    # counts: a=2, c=2, b=1 (duplicate in one item counted once), d=1
    assert top_n_vocabulary(sets, 0) == ["a", "c", "b", "d"]
    assert top_n_vocabulary(sets, 3) == ["a", "c", "b"]


def test_check_image_modes(tmp_path):
    good = _png(tmp_path / "good.png")
    rgb = _png(tmp_path / "rgb.png", mode="RGB", size=(300, 200))
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"this is not an image at all")
    truncated = tmp_path / "trunc.png"
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) - 12])  # header intact, IEND chunk cut
    for mode in ("exists", "open", "verify"):
        assert check_image(good, mode) is None
        assert check_image(rgb, mode) is None
        assert check_image(tmp_path / "absent.png", mode) == "missing image file"
        assert check_image(empty, mode) == "unreadable image"
    assert check_image(junk, "exists") is None
    assert check_image(junk, "open") == "unreadable image"
    assert check_image(truncated, "open") is None  # header only
    assert check_image(truncated, "verify") == "unreadable image"


# ------------------------------------------------------------------------------------------------ MedPix


def _medpix_root(data_root: Path) -> Path:
    return require_dataset(data_root, "medpix-2.0")


def _medpix_split_records(root: Path) -> dict[str, list[dict]]:
    out = {}
    for name in ("train", "dev", "test"):
        lines = (root / "splitted_dataset" / f"descriptions_{name}.jsonl").read_text(encoding="utf-8").splitlines()
        out[name] = [json.loads(x) for x in lines if x.strip()]
    return out


@pytest.fixture(scope="module")
def medpix_default(data_root):
    _medpix_root(data_root)
    return DATASETS.get("medpix")(data_root)  # the one load that opens every image header


@realdata
def test_medpix_official_split_and_pairs(medpix_default, data_root):
    ds = medpix_default
    root = _medpix_root(data_root)
    recs = _medpix_split_records(root)
    assert ds.split_sizes() == {"train": 1653, "validation": 197, "query": 200, "database": 1850}
    assert ds.skipped == {}
    assert ds.db_includes_train is True
    assert ds.label_scheme == "location+topic"
    for split, name in (("train", "train"), ("validation", "dev"), ("query", "test")):
        assert [ds.ids[i] for i in ds.splits[split]] == [r["image"] for r in recs[name]]
    # The official split is by case: no case (U_id, the id prefix) in two of train / validation / query.
    case_sets = [{ds.ids[i].split("_")[0] for i in ds.splits[s]} for s in ("train", "validation", "query")]
    assert not (case_sets[0] & case_sets[1] or case_sets[0] & case_sets[2] or case_sets[1] & case_sets[2])
    first = recs["train"][0]
    k = ds.ids.index(first["image"])
    assert ds.texts[k] == " ".join(first["Description"]["Caption"].split())
    assert ds.image_paths[k] == root / "images" / f"{first['image']}.png"
    assert all(p.is_file() for p in ds.image_paths)
    assert ds.info["n_cases"] == 671


@realdata
def test_medpix_location_topic_labels_match_raw_json(medpix_default, data_root):
    ds = medpix_default
    root = _medpix_root(data_root)
    topics = {c["U_id"]: c["Topic"]["Category"] for c in json.loads((root / "Case_topic.json").read_text())}
    descs = json.loads((root / "Descriptions.json").read_text())
    n_loc = len({d["Location"] for d in descs})
    n_cat = len({topics[d["U_id"]] for d in descs})
    assert n_loc == 22
    assert ds.labels.shape == (2050, n_loc + n_cat)
    assert ds.labels.dtype == np.uint8
    assert (ds.labels.sum(1) == 2).all()  # one location + one topic per image
    col = {n: j for j, n in enumerate(ds.label_names)}
    for d in descs[::97]:
        row = ds.labels[ds.ids.index(d["image"])]
        expected = {col[f"location:{d['Location']}"], col[f"topic:{topics[d['U_id']]}"]}
        assert set(np.flatnonzero(row)) == expected
    # "Vascular" is both a Location and a Category: the prefixes keep the two labels apart.
    assert "location:Vascular" in col and "topic:Vascular" in col
    counts = collections.Counter(d["Location"] for d in descs)
    assert int(ds.labels[:, col["location:Brain and Neuro"]].sum()) == counts["Brain and Neuro"] == 631


@realdata
def test_medpix_other_label_schemes(data_root):
    root = _medpix_root(data_root)
    descs = json.loads((root / "Descriptions.json").read_text())
    load = DATASETS.get("medpix")
    loc_cat = load(data_root, label_scheme="location_category", image_check="exists")
    assert sorted(loc_cat.label_names) == sorted({d["Location Category"] for d in descs})
    assert len(loc_cat.label_names) == 5 and (loc_cat.labels.sum(1) == 1).all()

    acr = load(data_root, label_scheme="acr", image_check="exists")
    unspecified = sum(1 for d in descs if d["Description"]["ACR Codes"] == "-1.-1")
    assert acr.skipped == {"no label": unspecified} and unspecified == 99
    assert len(acr) == 2050 - unspecified
    k = acr.ids.index("MPX1009_synpic46283")  # ACR code "8.-1": anatomy 8, pathology unspecified
    assert [acr.label_names[j] for j in np.flatnonzero(acr.labels[k])] == ["anatomy:8"]

    modality = load(data_root, label_scheme="modality", image_check="exists")
    assert len(modality.label_names) == len({d["Description"]["Modality"].strip() for d in descs})
    with pytest.raises(DatasetError, match=r"medpix: unknown label scheme 'organ'"):
        load(data_root, label_scheme="organ")


@realdata
def test_medpix_append_findings(data_root):
    root = _medpix_root(data_root)
    case = next(c for c in json.loads((root / "Case_topic.json").read_text()) if c["U_id"] == "MPX1009")
    ds = DATASETS.get("medpix")(data_root, append_findings="true", image_check="exists")
    records = [r for rows in _medpix_split_records(root).values() for r in rows]
    caption = next(r for r in records if r["image"] == "MPX1009_synpic46283")["Description"]["Caption"]
    expected = " ".join(caption.split()) + " " + " ".join(case["Case"]["Findings"].split())
    assert ds.texts[ds.ids.index("MPX1009_synpic46283")] == expected
    assert ds.info["append_findings"] is True
    with pytest.raises(DatasetError, match=r"medpix: option append_findings='sometimes' is not a boolean"):
        DATASETS.get("medpix")(data_root, append_findings="sometimes")


def test_medpix_skips_and_counts_bad_records(tmp_path):
    root = tmp_path / "medpix-2.0"
    recs_train = [
        _medpix_record("MPX1_a", "MPX1", "Disc herniation at L4-L5."),
        _medpix_record("MPX1_b", "MPX1", "   "),  # empty caption
        _medpix_record("MPX1_c", "MPX1", "Image file absent."),  # missing image
        _medpix_record("MPX1_d", "MPX1", "Corrupt file.", acr="-1.-1"),  # unreadable image
    ]
    recs_dev = [_medpix_record("MPX2_a", "MPX2", "Cord edema.", location="Nerve, central")]
    recs_test = [
        _medpix_record("MPX3_a", "MPX3", "Vertebral fracture.", acr="-1.-1"),
        _medpix_record("MPX1_a", "MPX1", "Duplicate of a train image."),  # duplicate id
    ]
    _write_jsonl(root / "splitted_dataset" / "descriptions_train.jsonl", recs_train)
    _write_jsonl(root / "splitted_dataset" / "descriptions_dev.jsonl", recs_dev)
    _write_jsonl(root / "splitted_dataset" / "descriptions_test.jsonl", recs_test)
    cases = [
        {"U_id": u, "Case": {"Findings": f"Findings of {u}."}, "Topic": {"Category": cat}}
        for u, cat in (("MPX1", "Trauma"), ("MPX2", "Vascular"), ("MPX3", "Trauma"))
    ]
    (root / "Case_topic.json").write_text(json.dumps(cases))
    extra = _medpix_record("MPX9_z", "MPX9", "Listed but in no split.")
    (root / "Descriptions.json").write_text(json.dumps(recs_train + recs_dev + recs_test[:1] + [extra]))
    for name in ("MPX1_a", "MPX1_b", "MPX2_a", "MPX9_z"):
        _png(root / "images" / f"{name}.png")
    _png(root / "images" / "MPX3_a.png", mode="RGB", size=(40, 30))
    (root / "images" / "MPX1_d.png").write_bytes(b"\x89PNG but not really")

    ds = DATASETS.get("medpix")(tmp_path)
    assert ds.ids == ["MPX1_a", "MPX2_a", "MPX3_a"]
    assert ds.skipped == {
        "duplicate id": 1,
        "empty caption": 1,
        "missing image file": 1,
        "not in any official split": 1,
        "unreadable image": 1,
    }
    assert ds.label_names == ["location:Nerve, central", "location:Spine", "topic:Trauma", "topic:Vascular"]
    np.testing.assert_array_equal(ds.labels, [[0, 1, 1, 0], [1, 0, 0, 1], [0, 1, 1, 0]])
    assert {k: v.tolist() for k, v in ds.splits.items()} == {
        "train": [0],
        "validation": [1],
        "query": [2],
        "database": [0, 1],
    }
    assert sorted(Path(p).name for p in ds.info["source_files"]) == [
        "Case_topic.json",
        "Descriptions.json",
        "descriptions_dev.jsonl",
        "descriptions_test.jsonl",
        "descriptions_train.jsonl",
    ]
    assert ds.info["text_field"] == "caption"
    # acr: MPX1_d and MPX3_a have code "-1.-1" → no label (labels are checked before the image).
    acr = DATASETS.get("medpix")(tmp_path, label_scheme="acr")
    assert acr.ids == ["MPX1_a", "MPX2_a"]
    assert acr.skipped["no label"] == 2 and "unreadable image" not in acr.skipped
    assert acr.label_names == ["anatomy:3", "pathology:3"]
    # require_images=false keeps the items whose image fails, and counts them.
    loose = DATASETS.get("medpix")(tmp_path, require_images="false")
    assert loose.ids == ["MPX1_a", "MPX1_c", "MPX1_d", "MPX2_a", "MPX3_a"]
    assert loose.info["missing_images"] == 2


def test_medpix_missing_folder_message(tmp_path):
    with pytest.raises(DatasetError, match=r"dataset 'medpix' not found: searched .*medpix-2.0\. Get MedPix 2.0"):
        DATASETS.get("medpix")(tmp_path)
    with pytest.raises(DatasetError, match=r"needs a data root"):
        DATASETS.get("medpix")(None)


# ------------------------------------------------------------------------------------------------ ROCO


def _roco_independent(root: Path, split: str, subset: str = "non-radiology") -> dict[str, dict]:
    """Per ROCO id: caption, semantic-type codes and CUIs, parsed here without the loader."""
    base = root / split / subset
    out: dict[str, dict] = {}
    for line in (base / "captions.txt").read_text(encoding="utf-8").splitlines():
        rid, cap = line.split("\t", 1)
        out[rid] = {"caption": cap.strip()}
    for line in (base / "semtypes.txt").read_text(encoding="utf-8").splitlines():
        fields = line.split("\t")
        out[fields[0]]["tuis"] = {f for f in fields[1:] if len(f) == 4 and f[0] == "T" and f[1:].isdigit()}
    for line in (base / "cuis.txt").read_text(encoding="utf-8").splitlines():
        fields = line.split("\t")
        out[fields[0]]["cuis"] = {f for f in fields[1:] if f}
    for line in (base / "dlinks.txt").read_text(encoding="utf-8").splitlines():
        rid, cmd, fname = line.split("\t")
        pmc = cmd.split()[2].split("/")[-1].replace(".tar.gz", "")
        out[rid]["image"] = f"{pmc}_{fname.strip()}"
    return out


@realdata
def test_roco_without_images_is_a_clear_error(data_root):
    require_dataset(data_root, "roco")
    with pytest.raises(DatasetError) as err:
        DATASETS.get("roco")(data_root)
    msg = str(err.value)
    assert "none of the" in msg and "scripts/fetch.py" in msg and "require_images=false" in msg
    assert "\n" not in msg


@realdata
def test_roco_semtypes_text_only_match_raw_files(data_root):
    root = require_dataset(data_root, "roco")
    ds = DATASETS.get("roco")(data_root, require_images="false")
    raw = {s: _roco_independent(root, s) for s in ("train", "validation", "test")}
    labelled = {s: [r for r, v in raw[s].items() if v["tuis"]] for s in raw}
    assert ds.split_sizes() == {
        "train": len(labelled["train"]),
        "validation": len(labelled["validation"]),
        "query": len(labelled["test"]),
        "database": len(labelled["train"]) + len(labelled["validation"]),
    }
    n_unlabelled = sum(len(raw[s]) - len(labelled[s]) for s in raw)
    assert ds.skipped == {"no label": n_unlabelled} and n_unlabelled == 429
    assert ds.label_scheme == "semtypes"
    all_tuis = sorted({t for s in raw for v in raw[s].values() for t in v["tuis"]})
    assert [n.split()[0] for n in ds.label_names] == all_tuis
    rid = labelled["validation"][3]
    k = ds.ids.index(rid)
    assert {ds.label_names[j].split()[0] for j in np.flatnonzero(ds.labels[k])} == raw["validation"][rid]["tuis"]
    assert ds.texts[k] == " ".join(raw["validation"][rid]["caption"].split())
    assert ds.image_paths[k] == root / "validation" / "non-radiology" / "images" / raw["validation"][rid]["image"]
    assert ds.info["missing_images"] == len(ds)
    assert "T061 Therapeutic or Preventive Procedure" in ds.label_names


@realdata
def test_roco_top_cuis_match_independent_count(data_root):
    root = require_dataset(data_root, "roco")
    raw = {s: _roco_independent(root, s) for s in ("train", "validation", "test")}
    counts = collections.Counter(c for s in raw for v in raw[s].values() for c in v["cuis"])
    top10 = [c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]]
    ds = DATASETS.get("roco")(data_root, label_scheme="cuis", top_n="10", require_images="false")
    assert ds.label_names == top10
    assert ds.label_scheme == "cuis-top10"
    n_kept = sum(1 for s in raw for v in raw[s].values() if v["cuis"] & set(top10))
    assert len(ds) == n_kept
    np.testing.assert_array_equal(ds.labels.sum(0), [counts[c] for c in top10])


@realdata
def test_roco_radiology_train_is_absent_here(data_root):
    require_dataset(data_root, "roco")
    with pytest.raises(DatasetError, match=r"train/radiology/captions.txt not found"):
        DATASETS.get("roco")(data_root, subset="radiology", require_images="false")


@realdata
def test_roco_with_stand_in_images(data_root, tmp_path):
    """Real metadata (first lines of each file) plus stand-in images named as ROCO's scripts/fetch.py names them."""
    src = require_dataset(data_root, "roco")
    dst = tmp_path / "roco"
    n_lines = 12
    for split in ("train", "validation", "test"):
        for name in ("captions", "cuis", "semtypes", "dlinks"):
            lines = (src / split / "non-radiology" / f"{name}.txt").read_text(encoding="utf-8").splitlines()
            out = dst / split / "non-radiology" / f"{name}.txt"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("\n".join(lines[:n_lines]) + "\n", encoding="utf-8")
    raw = {s: _roco_independent(dst, s) for s in ("train", "validation", "test")}
    expected_ids = []
    absent = corrupt = None
    for split in ("train", "validation", "test"):
        for i, (rid, v) in enumerate(raw[split].items()):
            path = dst / split / "non-radiology" / "images" / v["image"]
            if split == "train" and i == 1:
                absent = rid  # not written
            elif split == "validation" and i == 2:
                corrupt = rid
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"not a jpeg")
            else:
                _png(path)  # content is PNG whatever the extension: PIL reads the header
                if v["tuis"]:
                    expected_ids.append(rid)
    ds = DATASETS.get("roco")(tmp_path)
    assert ds.ids == expected_ids
    assert ds.skipped.get("missing image file", 0) == (1 if raw["train"][absent]["tuis"] else 0)
    assert ds.skipped.get("unreadable image", 0) == (1 if raw["validation"][corrupt]["tuis"] else 0)
    assert all(p.is_file() for p in ds.image_paths)


# ------------------------------------------------------------------------------------------------ Open-i


def test_normalise_heading():
    assert normalise_heading("Opacity/lung/apex/left/irregular") == "Opacity"
    assert normalise_heading("  Pulmonary  Disease, Chronic Obstructive ") == "Pulmonary Disease, Chronic Obstructive"
    assert normalise_heading("normal") == "normal"


OPENI_XML_1 = """<?xml version="1.0" encoding="utf-8"?>
<eCitation>
   <meta type="rr"/>
   <uId id="CXR1"/>
   <pmcId id="1"/>
   <docSource>CXR</docSource>
   <IUXRId id="1"/>
   <MedlineCitation Owner="Indiana University" Status="supplied by publisher">
      <Article PubModel="Electronic">
         <ArticleTitle>Indiana University Chest X-ray Collection</ArticleTitle>
         <Abstract>
            <AbstractText Label="COMPARISON">None.</AbstractText>
            <AbstractText Label="INDICATION">Positive TB test</AbstractText>
            <AbstractText Label="FINDINGS">The cardiac silhouette and mediastinum size are within normal limits.
               There is no pulmonary edema.</AbstractText>
            <AbstractText Label="IMPRESSION">Normal chest x-XXXX.</AbstractText>
         </Abstract>
      </Article>
   </MedlineCitation>
   <MeSH>
      <major>normal</major>
   </MeSH>
   <parentImage id="CXR1_1_IM-0001-3001">
      <figureId>F1</figureId>
      <caption>Xray Chest PA and Lateral</caption>
      <panel type="single"><url>/hadoop/storage/radiology/extract/CXR1_1_IM-0001-3001.png</url></panel>
   </parentImage>
   <parentImage id="CXR1_1_IM-0001-4001">
      <figureId>F2</figureId>
      <caption>Xray Chest PA and Lateral</caption>
      <panel type="single"><url>/hadoop/storage/radiology/extract/CXR1_1_IM-0001-4001.png</url></panel>
   </parentImage>
</eCitation>
"""

OPENI_XML_2 = """<?xml version="1.0" encoding="utf-8"?>
<eCitation>
   <uId id="CXR2"/>
   <MedlineCitation><Article><Abstract>
      <AbstractText Label="FINDINGS">Borderline cardiomegaly. Midline sternotomy XXXX.</AbstractText>
      <AbstractText Label="IMPRESSION"/>
   </Abstract></Article></MedlineCitation>
   <MeSH>
      <major>Cardiomegaly/borderline</major>
      <major>Pulmonary Artery/enlarged</major>
      <major>cardiomegaly/mild</major>
      <automatic>sternotomy</automatic>
   </MeSH>
   <parentImage id="CXR2_IM-0652-1001"><caption>Chest, 2 views</caption></parentImage>
   <parentImage id="CXR2_IM-0652-2001"><caption>Chest, 2 views</caption></parentImage>
</eCitation>
"""

OPENI_XML_3 = """<?xml version="1.0" encoding="utf-8"?>
<eCitation>
   <uId id="CXR3"/>
   <MedlineCitation><Article><Abstract>
      <AbstractText Label="FINDINGS"></AbstractText>
      <AbstractText Label="IMPRESSION">No Indexing case.</AbstractText>
   </Abstract></Article></MedlineCitation>
   <MeSH><major>No Indexing</major></MeSH>
   <parentImage id="CXR3_IM-1384-1001"><caption>PA</caption></parentImage>
</eCitation>
"""


def _openi_xml_tree(tmp_path: Path, with_projections: bool = True) -> Path:
    base = tmp_path / "openi"
    xml_dir = base / "ecgen-radiology"
    xml_dir.mkdir(parents=True)
    for i, text in enumerate((OPENI_XML_1, OPENI_XML_2, OPENI_XML_3), 1):
        (xml_dir / f"{i}.xml").write_text(text, encoding="utf-8")
    for name in (
        "CXR1_1_IM-0001-3001",
        "CXR1_1_IM-0001-4001",
        "CXR2_IM-0652-1001",
        "CXR2_IM-0652-2001",
        "CXR3_IM-1384-1001",
    ):
        _png(base / "NLMCXR_png" / f"{name}.png")
    if with_projections:  # as in indiana_projections.csv: uid 1's frontal view is 4001
        (base / "indiana_projections.csv").write_text(
            "uid,filename,projection\n"
            "1,1_IM-0001-4001.dcm.png,Frontal\n"
            "1,1_IM-0001-3001.dcm.png,Lateral\n"
            "2,2_IM-0652-1001.dcm.png,Frontal\n"
            "2,2_IM-0652-2001.dcm.png,Lateral\n"
            "3,3_IM-1384-1001.dcm.png,Frontal\n"
        )
    return base


def test_parse_openi_xml_original_schema(tmp_path):
    base = _openi_xml_tree(tmp_path)
    rep = parse_openi_xml(base / "ecgen-radiology" / "1.xml")
    assert rep.uid == "1"
    assert (
        rep.findings
        == "The cardiac silhouette and mediastinum size are within normal limits. There is no pulmonary edema."
    )
    assert rep.impression == "Normal chest x-XXXX."
    assert rep.mesh_major == ["normal"] and rep.mesh_automatic == []
    assert rep.images == [("CXR1_1_IM-0001-3001.png", ""), ("CXR1_1_IM-0001-4001.png", "")]
    rep2 = parse_openi_xml(base / "ecgen-radiology" / "2.xml")
    assert rep2.impression == "" and rep2.findings.startswith("Borderline cardiomegaly")
    assert rep2.mesh_major == ["Cardiomegaly/borderline", "Pulmonary Artery/enlarged", "cardiomegaly/mild"]
    assert rep2.mesh_automatic == ["sternotomy"]
    bad = tmp_path / "bad.xml"
    bad.write_text("<eCitation><MeSH></eCitation>")
    with pytest.raises(DatasetError, match=r"openi: .*bad.xml: not well-formed XML"):
        parse_openi_xml(bad)


def test_openi_xml_layout_views_labels_and_text(tmp_path):
    _openi_xml_tree(tmp_path)
    load = DATASETS.get("openi")
    ds = load(tmp_path, seed=0, split="50,0,50")
    # Report 3's only heading is "No Indexing" → no label. Frontal views: 1 → 4001, 2 → 1001.
    assert ds.ids == ["CXR1_1_IM-0001-4001", "CXR2_IM-0652-1001"]
    assert ds.skipped == {"no label": 1}
    assert ds.info["layout"] == "xml"
    assert sorted(Path(p).name for p in ds.info["source_files"]) == [
        "1.xml",
        "2.xml",
        "3.xml",
        "indiana_projections.csv",
    ]
    # Headings merged case-insensitively, most frequent spelling shown; ties by name: all three have count 1.
    assert ds.label_names == ["Cardiomegaly", "normal", "Pulmonary Artery"]
    np.testing.assert_array_equal(ds.labels, [[0, 1, 0], [1, 0, 1]])
    # Text: impression, falling back to findings when the impression is empty.
    assert ds.texts == ["Normal chest x-XXXX.", "Borderline cardiomegaly. Midline sternotomy XXXX."]
    both = load(tmp_path, text_field="both", split="50,0,50")
    assert both.texts[0].endswith("There is no pulmonary edema. Normal chest x-XXXX.")
    every = load(tmp_path, views="all", split="50,0,50")
    assert every.ids == ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001", "CXR2_IM-0652-1001", "CXR2_IM-0652-2001"]
    # a report's images never straddle splits
    split_of = {i: s for s in ("train", "query") for i in every.splits[s]}
    assert split_of[0] == split_of[1] and split_of[2] == split_of[3] and split_of[0] != split_of[2]
    auto = load(tmp_path, mesh="major+automatic", top_n="4", split="50,0,50")
    assert auto.label_names == ["Cardiomegaly", "normal", "Pulmonary Artery", "sternotomy"]
    assert auto.label_scheme == "mesh-major-top4"


def test_openi_xml_without_projections_needs_views_all(tmp_path):
    base = _openi_xml_tree(tmp_path, with_projections=False)
    with pytest.raises(DatasetError, match=r"views=frontal needs each image's projection.*views=all"):
        DATASETS.get("openi")(tmp_path)
    ds = DATASETS.get("openi")(tmp_path, views="all", split="50,0,50")
    assert len(ds) == 4
    (base / "NLMCXR_png" / "CXR2_IM-0652-2001.png").unlink()
    ds = DATASETS.get("openi")(tmp_path, views="all", split="50,0,50")
    assert len(ds) == 3 and ds.skipped["missing image file"] == 1


def _openi_csv_subset(data_root: Path, tmp_path: Path, n_reports: int = 40) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    src = require_dataset(data_root, "iu-xray")
    reports = pd.read_csv(src / "indiana_reports.csv").head(n_reports)
    proj = pd.read_csv(src / "indiana_projections.csv")
    proj = proj[proj.uid.isin(reports.uid)]
    base = tmp_path / "iu-xray"
    base.mkdir()
    reports.to_csv(base / "indiana_reports.csv", index=False)
    proj.to_csv(base / "indiana_projections.csv", index=False)
    return base, reports, proj


@realdata
def test_openi_csv_real_reports_text_only(data_root):
    src = require_dataset(data_root, "iu-xray")
    reports = pd.read_csv(src / "indiana_reports.csv")
    ds = DATASETS.get("openi")(data_root, require_images="false", views="all")
    # independent label vocabulary: headings of reports that have an impression or findings
    has_text = reports.impression.fillna("").str.strip().ne("") | reports.findings.fillna("").str.strip().ne("")
    assert ds.skipped["empty report text"] == int((~has_text).sum()) == 25
    counts: collections.Counter[str] = collections.Counter()
    for mesh in reports.MeSH[has_text]:
        counts.update({t.split("/")[0].strip().casefold() for t in mesh.split(";")} - {"no indexing"})
    top = [k for k, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:20]]
    assert [n.casefold() for n in ds.label_names] == top
    assert ds.label_names[0] == "normal" and "No Indexing" not in ds.label_names
    assert "Thoracic Vertebrae" in ds.label_names  # 256 × "Thoracic Vertebrae" + 1 × "Thoracic vertebrae" merged
    # views=all: every image of a labelled report with text is an item
    proj = pd.read_csv(src / "indiana_projections.csv")
    uids = set(
        reports.uid[
            has_text
            & reports.MeSH.map(lambda m: bool({t.split("/")[0].strip().casefold() for t in m.split(";")} & set(top)))
        ]
    )
    assert len(ds) == int(proj.uid.isin(uids).sum())
    assert ds.info["missing_images"] == len(ds)
    frontal = DATASETS.get("openi")(data_root, require_images="false")
    n_frontal_reports = proj[proj.uid.isin(uids) & (proj.projection == "Frontal")].uid.nunique()
    assert len(frontal) == n_frontal_reports
    assert frontal.skipped["no frontal image"] == len(uids) - n_frontal_reports


@realdata
def test_openi_csv_with_stand_in_images_and_seeded_split(data_root, tmp_path):
    base, reports, proj = _openi_csv_subset(data_root, tmp_path)
    for name in proj.filename:
        _png(base / "images" / "images_normalized" / name)
    load = DATASETS.get("openi")
    ds = load(tmp_path, seed=3, top_n="5")
    frontal = proj[proj.projection == "Frontal"].groupby("uid").filename.first()
    assert all(p.parent == base / "images" / "images_normalized" for p in ds.image_paths)
    for item_id, path in zip(ds.ids, ds.image_paths):
        uid = int(item_id.split("_")[0])
        assert path.name == frontal[uid] and item_id == frontal[uid][: -len(".dcm.png")]
    sizes = ds.split_sizes()
    assert sizes["database"] == sizes["train"] + sizes["validation"]
    assert sizes["train"] + sizes["validation"] + sizes["query"] == len(ds)
    assert ds.info["reports_per_split"] == {k: sizes[k] for k in ("train", "validation", "query")}  # 1 image/report
    again = load(tmp_path, seed=3, top_n="5")
    other = load(tmp_path, seed=4, top_n="5")
    for s in ("train", "validation", "query"):
        np.testing.assert_array_equal(ds.splits[s], again.splits[s])
    assert any(not np.array_equal(ds.splits[s], other.splits[s]) for s in ("train", "query"))
    # delete one frontal image: that item is skipped and counted
    victim = ds.image_paths[0]
    victim.unlink()
    fewer = load(tmp_path, seed=3, top_n="5")
    assert len(fewer) == len(ds) - 1 and fewer.skipped["missing image file"] == 1
    shutil.rmtree(base / "images")
    with pytest.raises(DatasetError, match=r"openi: none of the .* images is present"):
        load(tmp_path, top_n="5")


def test_openi_bad_options_and_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match=r"searched .*iu-xray and .*openi"):
        DATASETS.get("openi")(tmp_path)
    _openi_xml_tree(tmp_path)
    with pytest.raises(DatasetError, match=r"openi: option split='80,20' must be three percentages"):
        DATASETS.get("openi")(tmp_path, split="80,20")
    with pytest.raises(DatasetError, match=r"openi: option text_field='title' is not one of"):
        DATASETS.get("openi")(tmp_path, text_field="title")


# ------------------------------------------------------------------------------------------------ MIRFlickr


@realdata
def test_mirflickr_real_labels_text_and_dcmh_split(data_root):
    import scipy.io

    folder = require_dataset(data_root, "mirflickr25k")
    lall = scipy.io.loadmat(folder / "mirflickr25k-lall.mat")["LAll"]
    yall = scipy.io.loadmat(folder / "mirflickr25k-yall.mat")["YAll"]
    with pytest.raises(DatasetError, match=r"no image features.*image_features=PATH.*require_images=false"):
        DATASETS.get("mirflickr25k")(data_root)
    ds = DATASETS.get("mirflickr25k")(data_root, require_images="false", seed=0)
    assert len(ds) == lall.shape[0] == 20015
    assert ds.label_names == list(MIRFLICKR_LABELS) and len(MIRFLICKR_LABELS) == 24
    np.testing.assert_array_equal(ds.labels, lall)
    np.testing.assert_array_equal(ds.text_features, yall.astype(np.float32))
    assert ds.texts is None and ds.image_paths is None and ds.image_features is None
    assert ds.split_sizes() == {"train": 9000, "validation": 1000, "query": 2000, "database": 18015}
    db = set(ds.splits["database"].tolist())
    assert set(ds.splits["train"].tolist()) <= db and set(ds.splits["validation"].tolist()) <= db
    assert len(db | set(ds.splits["query"].tolist())) == 20015
    again = DATASETS.get("mirflickr25k")(data_root, require_images="false", seed=0)
    other = DATASETS.get("mirflickr25k")(data_root, require_images="false", seed=1)
    np.testing.assert_array_equal(ds.splits["query"], again.splits["query"])
    assert not np.array_equal(ds.splits["query"], other.splits["query"])


@realdata
def test_mirflickr_image_features_file_rows_align(data_root, tmp_path):
    require_dataset(data_root, "mirflickr25k")
    feats = np.stack([np.arange(20015), -np.arange(20015)], axis=1).astype(np.float32)
    np.save(tmp_path / "feats.npy", feats)
    ds = DATASETS.get("mirflickr25k")(data_root, image_features=str(tmp_path / "feats.npy"))
    rows = np.array([int(i.split("_")[1]) for i in ds.ids])
    np.testing.assert_array_equal(ds.image_features[:, 0], rows)
    np.save(tmp_path / "short.npy", feats[:10])
    with pytest.raises(DatasetError, match=r"have 10 rows, labels have 20015"):
        DATASETS.get("mirflickr25k")(data_root, image_features=str(tmp_path / "short.npy"))


def _write_dcmh(folder: Path, labels: np.ndarray, text: np.ndarray, image: np.ndarray | None, v73: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"LAll": labels, "YAll": text} | ({"IAll": image} if image is not None else {})
    for key, arr in arrays.items():
        path = folder / f"mirflickr25k-{key[0].lower()}all.mat"
        if v73:
            import h5py

            with h5py.File(path, "w", userblock_size=512) as f:
                f.create_dataset(key, data=np.ascontiguousarray(arr.T))  # MATLAB stores column-major
            with path.open("r+b") as fh:
                fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test HDF5 schema 1.00 .".ljust(116))
        else:
            import scipy.io

            scipy.io.savemat(path, {key: arr})


@pytest.mark.parametrize("v73", [False, True], ids=["v5", "v7.3"])
def test_dcmh_mat_formats_and_filtering(tmp_path, v73):
    if v73:
        pytest.importorskip("h5py", reason="h5py is needed to write and read MATLAB v7.3 files")
    rng = np.random.default_rng(0)
    n = 30
    labels = (rng.random((n, 4)) < 0.4).astype(np.uint8)
    labels[0] = 0  # no label → skipped
    labels[1] = [1, 0, 0, 0]
    text = (rng.random((n, 7)) < 0.5).astype(np.uint8)
    text[1] = 0  # empty text → skipped
    text[0, 0] = 1
    labels[2:, 0] = 1  # everyone else has a label
    image = rng.standard_normal((n, 5))
    _write_dcmh(tmp_path / "mirflickr25k", labels, text, image, v73)
    name, arr = read_mat_array(tmp_path / "mirflickr25k" / "mirflickr25k-lall.mat")
    assert name == "LAll"
    np.testing.assert_array_equal(arr, labels)
    ds = DATASETS.get("mirflickr25k")(tmp_path, n_query="5", n_train="10", n_validation="2", seed=7)
    assert ds.skipped == {"empty text": 1, "no label": 1}
    assert ds.ids[0] == "mirflickr25k_00002" and len(ds) == n - 2
    np.testing.assert_allclose(ds.image_features, image[2:].astype(np.float32))
    np.testing.assert_array_equal(ds.text_features, text[2:])
    assert ds.split_sizes() == {"train": 8, "validation": 2, "query": 5, "database": 23}
    assert ds.label_names == ["label0", "label1", "label2", "label3"]  # 4 columns ≠ the 24 concept names
    with pytest.raises(DatasetError, match=r"n_query \+ n_train = 40 exceeds the 28 usable items"):
        DATASETS.get("mirflickr25k")(tmp_path, n_query="30", n_train="10", n_validation="2")


def test_dcmh_raw_image_iall_is_rejected(tmp_path):
    n = 6
    labels = np.ones((n, 2), dtype=np.uint8)
    text = np.ones((n, 3), dtype=np.uint8)
    _write_dcmh(tmp_path / "mirflickr25k", labels, text, np.zeros((n, 4, 4, 3), dtype=np.uint8), v73=False)
    with pytest.raises(DatasetError, match=r"expected \(N, d\) features — raw images"):
        DATASETS.get("mirflickr25k")(tmp_path)

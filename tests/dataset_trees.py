"""Small stand-in dataset folders written to ``tmp_path`` (MedPix 2.0, ROCO layouts) for loader tests."""

from __future__ import annotations

import json
from pathlib import Path


def png(path: Path, value: int = 128, size: tuple[int, int] = (8, 6), mode: str = "L") -> Path:
    """Write a uniform PNG of ``size`` (width, height) and grey ``value`` to ``path``."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, value, value)).save(path)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """One JSON object per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def medpix_record(image: str, uid: str, caption: str, location: str = "Spine", acr: str = "3.3") -> dict:
    """One record of a MedPix 2.0 ``descriptions_*.jsonl`` split file."""
    return {
        "Type": "MR",
        "U_id": uid,
        "image": image,
        "Description": {"ACR Codes": acr, "Caption": caption, "Modality": "MR - T2 weighted", "Plane": "Axial"},
        "Location": location,
        "Location Category": "Spine and Muscles",
    }


def medpix_tree(data_root: Path, train: list[dict], dev: list[dict], test: list[dict]) -> Path:
    """Write ``data_root/medpix-2.0`` with the three split files and ``Case_topic.json`` (every ``U_id``, topic
    ``Trauma``); images are left to the caller (``images/<image>.png``). Returns the dataset folder."""
    root = data_root / "medpix-2.0"
    for key, rows in (("train", train), ("dev", dev), ("test", test)):
        write_jsonl(root / "splitted_dataset" / f"descriptions_{key}.jsonl", rows)
    uids = sorted({r["U_id"] for r in train + dev + test})
    cases = [{"U_id": u, "Case": {"Findings": f"Findings of {u}."}, "Topic": {"Category": "Trauma"}} for u in uids]
    (root / "Case_topic.json").write_text(json.dumps(cases), encoding="utf-8")
    (root / "images").mkdir(parents=True, exist_ok=True)
    return root


def roco_tree(data_root: Path, rows: dict[str, list[tuple[str, str, str, str]]]) -> Path:
    """Write ``data_root/roco/<split>/non-radiology/`` from ``(roco_id, caption, pmc_id, figure file)`` rows per
    split (``train``, ``validation``, ``test``); every item gets semantic type T033 Finding and a stand-in
    image ``images/<pmc_id>_<figure file>`` of grey value = its row number. Returns the ``roco`` folder."""
    root = data_root / "roco"
    k = 0
    for split, items in rows.items():
        base = root / split / "non-radiology"
        base.mkdir(parents=True)
        caps, sems, links = [], [], []
        for roco_id, caption, pmc, fig in items:
            caps.append(f"{roco_id}\t {caption}\n")
            sems.append(f"{roco_id}\t\tT033\tFinding\n")
            links.append(f"{roco_id}\twget -r ftp://ftp.ncbi.nlm.nih.gov/pub/pmc/x/{pmc}.tar.gz -P /Dir\t{fig}\n")
            k += 1
            png(base / "images" / f"{pmc}_{fig}", value=10 * k)
        (base / "captions.txt").write_text("".join(caps), encoding="utf-8")
        (base / "semtypes.txt").write_text("".join(sems), encoding="utf-8")
        (base / "dlinks.txt").write_text("".join(links), encoding="utf-8")
    return root

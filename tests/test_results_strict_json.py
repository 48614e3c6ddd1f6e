"""Every JSON file the harness writes is strict JSON: never bare NaN/Infinity (issue 13 item 9)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks.cli import main
from benchmarks.results import ROW_FIELDS, dumps_strict, iter_rows, strict_row, write_cell
from medhash_datasets.cache_io import atomic_write_json


def _refuse(constant: str):
    raise ValueError(f"non-standard JSON constant {constant}")


def strict_load_lines(path: Path) -> list:
    """Parse a .json or .jsonl file, refusing NaN/Infinity/-Infinity (what jq and browsers do)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return [json.loads(text, parse_constant=_refuse)]
    return [json.loads(line, parse_constant=_refuse) for line in text.splitlines() if line.strip()]


def _row(**fields):
    row = dict.fromkeys(ROW_FIELDS)
    row.update(metric="map", value=0.5)
    row.update(fields)
    return row


def test_strict_parser_refuses_what_json_dumps_writes_by_default():
    with pytest.raises(ValueError, match="NaN"):
        json.loads(json.dumps({"value": float("nan")}), parse_constant=_refuse)


def test_non_finite_values_become_null_with_the_reason(tmp_path):
    rows = [
        _row(value=float("nan")),
        _row(metric="search_ms_per_query", value=np.float32("inf"), method_info={"loss": [1.0, -np.inf]}),
        _row(value=0.25),
    ]
    path = tmp_path / "cell.jsonl"
    write_cell(path, rows)
    got = strict_load_lines(path)
    assert got[0]["value"] is None and got[0]["non_finite"] == {"value": "NaN"}
    assert got[1]["value"] is None and got[1]["method_info"] == {"loss": [1.0, None]}
    assert got[1]["non_finite"] == {"value": "Infinity", "method_info.loss[1]": "-Infinity"}
    assert got[2]["value"] == 0.25 and "non_finite" not in got[2]
    assert [r["metric"] for r in iter_rows(path)] == ["map", "search_ms_per_query", "map"]


def test_strict_row_keeps_finite_values_and_numpy_scalars_exactly():
    row = strict_row({"a": np.float64(0.1), "b": np.int64(3), "c": np.array([0.5, 1.0]), "d": True})
    assert json.loads(dumps_strict(row), parse_constant=_refuse) == {"a": 0.1, "b": 3, "c": [0.5, 1.0], "d": True}
    with pytest.raises(ValueError, match="Out of range float"):
        dumps_strict({"value": math.inf})


def test_atomic_write_json_refuses_non_finite_naming_the_file(tmp_path):
    path = tmp_path / "runs" / "x.json"
    with pytest.raises(ValueError, match=rf"^{path}: not written: Out of range float"):
        atomic_write_json(path, {"seconds": float("nan")})
    assert not path.exists()
    atomic_write_json(path, {"seconds": 1.5})
    assert strict_load_lines(path) == [{"seconds": 1.5}]


def test_evaluate_json_is_strict(tmp_path, capsys):
    path = tmp_path / "codes.npz"
    rng = np.random.default_rng(0)
    np.savez(path, q_img=np.sign(rng.normal(size=(5, 8))), r_txt=np.sign(rng.normal(size=(9, 8))),
             q_l=np.eye(5, 3), r_l=np.eye(9, 3))
    assert main(["evaluate", str(path), "--tasks", "i2t", "--json"]) == 0
    blob = json.loads(capsys.readouterr().out, parse_constant=_refuse)
    assert blob["results"] and blob["codes"]["q_img"]["n_codes"] == 5


def test_every_file_a_run_writes_is_strict_json(tmp_path, capsys):
    args = ["run", "--methods", "random", "--bits", "8", "--seeds", "0", "--protocols", "unimodal",
            "--out", str(tmp_path), "--no-progress", "--device", "cpu",
            "--dataset-option", "n_train=60", "--dataset-option", "n_validation=20", "--dataset-option", "n_query=20"]
    assert main(args) == 0
    capsys.readouterr()
    files = [p for p in tmp_path.rglob("*") if p.suffix in (".json", ".jsonl")]
    assert any(p.suffix == ".jsonl" for p in files) and any(p.suffix == ".json" for p in files)
    for path in files:
        assert strict_load_lines(path), path

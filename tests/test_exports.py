"""``run`` exports (issue 16.10): codes in the ``evaluate`` layout, models, per-query AP; rows carry the code
diagnostics (issue 13.2), the dataset audit (13.12) and the real-valued reference space (16.7)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.cell import RunSpec, describe_inputs, prepare_features
from benchmarks.evaluation import code_diagnostics, evaluate_code_file
from benchmarks.runner import run
from methods import METHODS

OPTS = {"n_train": "120", "n_validation": "40", "n_query": "40"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    spec = RunSpec(methods=["cca-itq"], datasets=["synthetic"], bits=[16], seeds=[0], out=out, progress=False,
                   dataset_options=OPTS, exports=["codes", "model", "per-query"])
    run(spec, echo=lambda _: None)
    return out


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for p in sorted((out / "cells").rglob("*.jsonl")) for line in p.read_text().splitlines()]


def test_exported_codes_evaluate_to_the_rows_values(exported: Path) -> None:
    rows = _rows(exported)
    folder = next((exported / "exports" / "synthetic" / "cca-itq").iterdir())
    for protocol in ("unimodal", "paired"):
        results = evaluate_code_file(folder / f"codes_{protocol}.npz", ties=("aware",), shuffle_seed=0)
        for task in ("i2t", "t2i"):
            row = next(r for r in rows if r["protocol"] == protocol and r["task"] == task and r["metric"] == "map"
                       and r["tie"] == "aware")
            assert results[(task, "aware")].get("map") == pytest.approx(row["value"], abs=1e-12)


def test_rows_carry_code_diagnostics_equal_to_an_independent_count(exported: Path) -> None:
    folder = next((exported / "exports" / "synthetic" / "cca-itq").iterdir())
    codes = np.load(folder / "codes_unimodal.npz")
    row = next(r for r in _rows(exported) if r["protocol"] == "unimodal" and r["task"] == "i2t" and r["metric"] == "map")
    q_bits = codes["q_img"] > 0
    assert row["n_distinct_codes_query"] == len({b.tobytes() for b in q_bits})
    assert row["n_distinct_codes_query"] == code_diagnostics(q_bits)["n_distinct_codes"]
    assert row["degenerate_codes"] is False


def test_model_reloads_to_identical_codes(exported: Path) -> None:
    folder = next((exported / "exports" / "synthetic" / "cca-itq").iterdir())
    model = METHODS.get("cca-itq").cls.load(folder / "model.pt")
    dataset, features = prepare_features("synthetic", data_root=None, dataset_options=OPTS, progress=False)
    query = features.image[dataset.splits["query"]]
    codes = np.load(folder / "codes_unimodal.npz")
    assert np.array_equal(np.where(model.encode(image=query).image >= 0, 1, -1), codes["q_img"])


def test_per_query_ap_averages_to_the_row(exported: Path) -> None:
    folder = next((exported / "exports" / "synthetic" / "cca-itq").iterdir())
    with gzip.open(folder / "per_query.csv.gz", "rt") as fh:
        table = pd.read_csv(fh)
    part = table[(table.protocol == "paired") & (table.task == "t2i") & (table.tie == "index") & (table.metric == "map")]
    assert len(part) == 40 and sorted(part["query"]) == list(range(40))
    row = next(r for r in _rows(exported) if r["protocol"] == "paired" and r["task"] == "t2i" and r["metric"] == "map"
               and r["tie"] == "index")
    assert part["value"].mean() == pytest.approx(row["value"], abs=1e-12)


def test_rows_record_the_dataset_audit_and_reference_space(exported: Path) -> None:
    rows = _rows(exported)
    assert all(r["dataset_audit"]["split_sizes"]["query"] == 40 for r in rows)
    real = next(r for r in rows if r["metric"] == "search_ms_per_query_real")
    assert real["feature_dim"] == 64 and real["real_space"].startswith("text space (64-d")


def test_inputs_name_the_encoder_and_why() -> None:
    dataset, features = prepare_features("synthetic", data_root=None, dataset_options=OPTS, progress=False)
    line = describe_inputs(dataset, features, "auto")[0]
    assert line.startswith("synthetic: encoder precomputed (features shipped with the dataset)")
    assert "does not apply" in describe_inputs(dataset, features, "offline")[0]


def test_auto_encoder_fallback_is_said_out_loud() -> None:
    import dataclasses

    dataset, features = prepare_features("synthetic", data_root=None, dataset_options=OPTS, progress=False)
    offline = dataclasses.replace(features, encoder="offline")
    line = describe_inputs(dataset, offline, "auto")[0]
    assert "encoder offline (auto: no local BiomedCLIP weights" in line and "--encoder-option path=DIR" in line
    assert "BiomedCLIP weights found" in describe_inputs(dataset, dataclasses.replace(features, encoder="biomedclip"), "auto")[0]

"""Per-epoch progress lines of the fusion methods (issue 16.5): one INFO line per epoch and stage."""

from __future__ import annotations

import logging
import re

import pytest

from medhash_datasets.base import feature_split
from medhash_datasets.loaders import DATASETS
from methods import create_method


def test_ucmfh_logs_one_line_per_epoch(caplog: pytest.LogCaptureFixture) -> None:
    ds = DATASETS.get("synthetic")(None, n_train="64", n_validation="16", n_query="16")
    from benchmarks.cell import prepare_features

    dataset, features = prepare_features("synthetic", data_root=None, progress=False,
                                         dataset_options={"n_train": "64", "n_validation": "16", "n_query": "16"})
    assert len(ds) == len(dataset)
    method = create_method("ucmfh", {"epochs": 2, "patience": 5})
    with caplog.at_level(logging.INFO, logger="methods"):
        method.fit(feature_split(dataset, features, "train"), feature_split(dataset, features, "validation"), 16, 0)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("methods.")]
    epochs = [m for line in lines if (m := re.search(r" epoch (\d+/\d+): (.*)", line))]
    assert [m.group(1) for m in epochs] == ["1/2", "2/2"]
    epochs = [m.group(2) for m in epochs]
    assert all("loss " in line and "validation mAP " in line for line in epochs)

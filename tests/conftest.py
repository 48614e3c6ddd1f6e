"""Shared fixtures: the real-data root (skips with a reason when absent) and CPU determinism settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# `run` defaults to one worker process per core (`--workers auto`); tests run serially in this process unless a
# test asks for workers (tests register plugins that other processes would not see). Subprocesses inherit it.
os.environ.setdefault("MEDHASH_WORKERS", "1")


def _data_root() -> Path | None:
    value = os.environ.get("MEDHASH_DATA_ROOT")
    if value:
        return Path(value)
    default = PROJECT_ROOT.parent / "shared" / "data"
    return default if default.is_dir() else None


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The folder holding the real datasets (``MEDHASH_DATA_ROOT``, else ``../shared/data``)."""
    root = _data_root()
    if root is None or not root.is_dir():
        pytest.skip("real data root absent: set MEDHASH_DATA_ROOT to the folder holding medpix-2.0/, roco/, ...")
    return root


def require_dataset(root: Path, sub: str) -> Path:
    """``root / sub``, or skip the test naming the missing folder."""
    path = root / sub
    if not path.is_dir():
        pytest.skip(f"dataset folder {path} absent")
    return path


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    try:
        import torch

        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    except ImportError:
        pass
    yield


@pytest.fixture(scope="session")
def cross_modal_map():
    """``f(method_name, bits, seed=0) -> float``: mean of i2t and t2i tie-aware mAP@all of a method fitted on the
    default synthetic dataset (query split against the database split, unimodal encodes)."""
    from benchmarks.evaluation import MetricSpec, evaluate_hamming
    from medhash_datasets.base import Features, feature_split
    from medhash_datasets.loaders import DATASETS
    from methods import create_method

    ds = DATASETS.get("synthetic")(None, seed=0)
    feats = Features(ds.image_features, ds.text_features, "precomputed")
    train, val, query, db = (feature_split(ds, feats, s) for s in ("train", "validation", "query", "database"))

    def score(name: str, bits: int, seed: int = 0) -> float:
        m = create_method(name).fit(train, val, bits, seed)
        q, d = m.encode(query.image, query.text), m.encode(db.image, db.text)
        spec = MetricSpec.map_only()
        i2t = evaluate_hamming(q.image, d.text, query.labels, db.labels, tie="aware", metrics=spec).get("map")
        t2i = evaluate_hamming(q.text, d.image, query.labels, db.labels, tie="aware", metrics=spec).get("map")
        return 0.5 * (i2t + t2i)

    return score

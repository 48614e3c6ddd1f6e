"""End-to-end query latency (``efficiency --end-to-end``): encoder + method encode + search per task and size.

A tiny dataset of real PNG files and captions with a cheap registered test encoder stands in for MedPix (the
real run is in the README); the test checks the stages each row sums, the speed-up against the fastest
real-valued engine (re-computed from the rows), the replication count, which encoder calls were timed, the
written table and figure, and the one-line error for a dataset that ships features. No timing is asserted.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.search.e2e_table import crossing, findings, format_end_to_end
from benchmarks.search.end_to_end import EndToEndSpec, run_end_to_end
from medhash_datasets.base import DatasetError, PairedDataset
from medhash_datasets.encoders import ENCODERS
from medhash_datasets.encoders.base import Encoder, load_rgb
from medhash_datasets.loaders import DATASETS

N_ITEMS = 40
DIM = 12


class CountingEncoder(Encoder):
    """Deterministic 12-d features from pixels and characters; records the size of every encode call."""

    name = "test-e2e"
    calls: list[tuple[str, int]] = []
    weights_id = "counting-1"  # type: ignore[assignment]
    preprocess_id = "pixels-and-letters"  # type: ignore[assignment]
    image_dim = DIM  # type: ignore[assignment]
    text_dim = DIM  # type: ignore[assignment]

    def __init__(self, *, device: str = "cpu", **options: str) -> None:
        super().__init__(device=device)

    def encode_images(self, paths, batch_size):
        CountingEncoder.calls.append(("image", len(paths)))
        rows = [np.asarray(load_rgb(p), dtype=np.float32).reshape(-1)[:DIM] / 255 for p in paths]
        return np.stack(rows).astype(np.float32)

    def encode_texts(self, texts, batch_size):
        CountingEncoder.calls.append(("text", len(texts)))
        return np.array([[t.count(c) for c in "abcdefghijkl"] for t in texts], dtype=np.float32) + 0.1


def _tiny_loader(root: Path, tmp: Path):
    def load(data_root, *, label_scheme=None, seed=0, **options) -> PairedDataset:
        rng = np.random.default_rng(3)
        paths = []
        for i in range(N_ITEMS):
            p = tmp / f"img{i:02d}.png"
            if not p.exists():
                Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).save(p)
            paths.append(p)
        labels = np.zeros((N_ITEMS, 3), dtype=np.uint8)
        labels[np.arange(N_ITEMS), np.arange(N_ITEMS) % 3] = 1
        splits = {"train": np.arange(0, 24), "validation": np.arange(24, 30), "query": np.arange(30, 40),
                  "database": np.arange(0, 30)}
        texts = ["".join(rng.choice(list("abcdefghijkl "), size=30)) for _ in range(N_ITEMS)]
        return PairedDataset(name="test-e2e-pairs", ids=[p.stem for p in paths], labels=labels,
                             label_names=["a", "b", "c"], splits=splits, label_scheme="test", db_includes_train=True,
                             texts=texts, image_paths=paths)

    return load


@pytest.fixture()
def tiny(monkeypatch, tmp_path):
    CountingEncoder.calls = []
    for registry, name, obj in ((ENCODERS, "test-e2e", CountingEncoder),
                                (DATASETS, "test-e2e-pairs", _tiny_loader(tmp_path, tmp_path))):
        monkeypatch.setitem(registry._items, name, obj)
        monkeypatch.setitem(registry._tags, name, frozenset({"test"}))
    return tmp_path


def test_end_to_end_stages_sum_and_speedup_against_fastest_real_valued(tiny) -> None:
    spec = EndToEndSpec(methods=["random"], dataset="test-e2e-pairs", bits=[16], db_sizes=[20, 100], k=5,
                        n_queries=3, encoder_batch=4, encoder_batches=2, encoder="test-e2e", out=tiny / "out",
                        cache_dir=tiny / "cache", model_dir=tiny / "models", command="test")
    res = run_end_to_end(spec, echo=lambda s: None)
    assert res.encoder == "test-e2e"
    # encoder timing: per modality one warm-up + 3 single calls, then one warm-up + 2 batched calls of 4
    timed = [c for c in CountingEncoder.calls if c[1] in (1, 4)]
    for modality in ("image", "text"):
        assert [n for m, n in timed if m == modality][-(4 + 3):] == [1, 1, 1, 1, 4, 4, 4]
    rows = [r for r in res.rows if r["kind"] == "end-to-end"]
    cells = {}
    for r in rows:
        cells.setdefault((r["task"], r["db_size"], r["variant"], r["engine"]), {})[r["metric"]] = r["value"]
    # random: popcount + hash-ball; real-valued: numpy-ip + FlatIP; two tasks, two sizes
    assert len(cells) == 2 * 2 * 4
    for (task, n, _method, _engine), m in cells.items():
        assert m["e2e_total_ms"] == pytest.approx(m["e2e_encoder_ms"] + m["e2e_encode_ms"] + m["e2e_search_ms"])
        real = [cells[(task, n, "real-valued", e)] for e in ("numpy-ip", "FlatIP")]
        best = min(real, key=lambda x: x["e2e_total_ms"])
        assert m["e2e_speedup_vs_real_valued"] == pytest.approx(best["e2e_total_ms"] / m["e2e_total_ms"])
        assert m["e2e_speedup_vs_real_valued_without_encoder"] == pytest.approx(
            (best["e2e_encode_ms"] + best["e2e_search_ms"]) / (m["e2e_encode_ms"] + m["e2e_search_ms"]))
    # the same encoder figure for every method of a task: i2t times the image encoder, t2i the text encoder
    for task in ("i2t", "t2i"):
        assert len({m["e2e_encoder_ms"] for (t, *_), m in cells.items() if t == task}) == 1
    by = {(r["task"], r["db_size"], r["variant"], r["engine"]): r for r in rows if r["metric"] == "e2e_total_ms"}
    assert by[("i2t", 100, "random", "popcount")]["n_real_items"] == 30  # database split: 30 real items
    assert by[("i2t", 20, "random", "popcount")]["n_real_items"] == 20
    assert by[("t2i", 100, "real-valued", "FlatIP")]["feature_dim"] == DIM  # equal dims: raw space
    assert {r["db_source"] for r in rows} == {"replicated"} and {r["protocol"] for r in rows} == {"efficiency"}
    # table, findings, figure
    table = format_end_to_end(res.frame)
    assert "100 (30 × 3)" in table and "| reference " in table and not re.search(r"\d[eE][+-]\d", table)
    lines = findings(res.frame)  # one per (task, hashing method), one per task for real-valued
    assert len(lines) == 4 and all("encoder > 50 %" in line for line in lines)
    assert sum(line.startswith(("i2t, Real-valued", "t2i, Real-valued")) for line in lines) == 2
    out = tiny / "out" / "efficiency" / "test-e2e-pairs" / "end-to-end"
    for f in ("end_to_end.md", "end_to_end.csv", "end_to_end_latency.png", "end_to_end_latency.pdf"):
        assert (out / f).stat().st_size > 0
    assert len(list((tiny / "models").glob("*.pt"))) == 2  # random and real-valued saved; a rerun loads them


def test_end_to_end_refuses_a_dataset_without_raw_inputs(tmp_path) -> None:
    spec = EndToEndSpec(methods=["random"], dataset="synthetic", db_sizes=[10], out=tmp_path, n_queries=1,
                        dataset_options={"n_train": "60", "n_validation": "20", "n_query": "10"})
    with pytest.raises(DatasetError, match="no raw images and texts"):
        run_end_to_end(spec, echo=lambda s: None)


def test_end_to_end_spec_validation() -> None:
    with pytest.raises(ValueError, match="at least one hashing method"):
        EndToEndSpec(methods=[], dataset="medpix").validate()
    with pytest.raises(ValueError, match="i2t and/or t2i"):
        EndToEndSpec(methods=["ddbh"], dataset="medpix", tasks=["i2i"]).validate()
    with pytest.raises(ValueError, match="not a binary"):
        EndToEndSpec(methods=["ddbh"], dataset="medpix", engines=["FlatIP"]).validate()


def test_crossing_interpolates_linearly_in_n() -> None:
    # speed-up 1.0 at N = 1e4 and 3.0 at N = 1e5: 1.73 is reached 36.5 % of the way, at N = 42,850
    assert crossing([1e3, 1e4, 1e5], [0.9, 1.0, 3.0], 1.73) == pytest.approx(1e4 + 0.365 * 9e4)
    assert crossing([1e3, 1e4], [2.0, 3.0], 1.73) == 1e3  # already reached at the first size
    assert crossing([1e3, 1e4], [1.0, 1.2], 1.73) is None

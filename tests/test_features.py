"""Feature cache: keys, cache hits, atomic files, resume after interruption, precomputed datasets, the
``extract`` command, and one real MedPix extraction with the ``offline`` encoder."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks import cli
from medhash_datasets.base import DatasetError, PairedDataset
from medhash_datasets.encoders import ENCODERS, EncoderError
from medhash_datasets.encoders import biomedclip as bmc
from medhash_datasets.encoders.base import Encoder, load_rgb
from medhash_datasets.features import (
    CachedFeatures,
    default_cache_dir,
    extract_features,
    load_or_extract_features,
)
from medhash_datasets.loaders import DATASETS

N_ITEMS = 10


class FakeEncoder(Encoder):
    """Cheap deterministic encoder: image → per-channel mean / 255 (3-d), text → (length, vowel count).

    Class attributes record every encoded image path and can make the k-th image batch fail.
    """

    name = "test-fake"
    encoded: list[str] = []
    fail_at_call: int | None = None
    calls = 0

    def __init__(self, *, device: str = "cpu", **options: str) -> None:
        super().__init__(device=device)

    weights_id = "fake-weights-1"  # type: ignore[assignment]
    preprocess_id = "fake-mean-rgb"  # type: ignore[assignment]
    image_dim = 3  # type: ignore[assignment]
    text_dim = 2  # type: ignore[assignment]

    def encode_images(self, paths, batch_size):
        FakeEncoder.calls += 1
        if FakeEncoder.fail_at_call is not None and FakeEncoder.calls >= FakeEncoder.fail_at_call:
            raise RuntimeError("simulated crash")
        FakeEncoder.encoded.extend(Path(p).name for p in paths)
        return np.stack([np.asarray(load_rgb(p), dtype=np.float64).mean(axis=(0, 1)) / 255 for p in paths]).astype(np.float32)

    def encode_texts(self, texts, batch_size):
        return np.array([[len(t), sum(c in "aeiou" for c in t)] for t in texts], dtype=np.float32)


def _register_temporarily(monkeypatch, registry, name: str, obj) -> None:
    """Register ``obj`` for one test only (the registry has no public removal; monkeypatch restores it)."""
    monkeypatch.setitem(registry._items, name, obj)
    monkeypatch.setitem(registry._tags, name, frozenset({"test"}))


@pytest.fixture(autouse=True)
def _fake_plugins(monkeypatch):
    FakeEncoder.encoded, FakeEncoder.fail_at_call, FakeEncoder.calls = [], None, 0
    _register_temporarily(monkeypatch, ENCODERS, "test-fake", FakeEncoder)
    _register_temporarily(monkeypatch, DATASETS, "test-tiny-pairs", _tiny_loader)
    yield


def _expected_image(path: Path) -> np.ndarray:
    """Independent re-computation of the fake image feature (numpy on the decoded pixels)."""
    with Image.open(path) as img:
        arr = np.asarray(img.convert("RGB"), dtype=np.float64)
    return (arr.reshape(-1, 3).mean(axis=0) / 255).astype(np.float32)


def make_images(folder: Path, n: int = N_ITEMS) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    paths = []
    for i in range(n):
        p = folder / f"item{i:02d}.png"
        if i % 3 == 0:  # grayscale, like the MedPix copy
            Image.fromarray(rng.integers(0, 256, (12, 9), dtype=np.uint8), mode="L").save(p)
        else:
            Image.fromarray(rng.integers(0, 256, (8, 11, 3), dtype=np.uint8), mode="RGB").save(p)
        paths.append(p)
    return paths


def make_dataset(paths: list[Path], texts: list[str] | None = None, *, name: str = "tiny",
                 source_files: list[Path] | None = None) -> PairedDataset:
    n = len(paths)
    labels = np.zeros((n, 2), dtype=np.uint8)
    labels[np.arange(n), np.arange(n) % 2] = 1
    splits = {
        "train": np.arange(0, n - 4), "validation": np.array([n - 4]),
        "query": np.arange(n - 3, n), "database": np.arange(0, n - 3),
    }
    return PairedDataset(
        name=name, ids=[p.stem for p in paths], labels=labels, label_names=["a", "b"], splits=splits,
        label_scheme="test", db_includes_train=True,
        texts=texts if texts is not None else [f"caption number {i} of a chest image" for i in range(n)],
        image_paths=list(paths), info={"source_files": [str(s) for s in source_files or []]},
    )


def run(ds, cache, **kw) -> CachedFeatures:
    kw.setdefault("batch_size", 2)
    kw.setdefault("shard_size", 4)
    return extract_features(ds, "test-fake", cache_dir=cache, progress=False, **kw)


# ------------------------------------------------------------------------------------------- cache hits
def test_extract_writes_atomic_cache_then_hits(tmp_path):
    paths = make_images(tmp_path / "img")
    ds, cache = make_dataset(paths), tmp_path / "cache"
    first = run(ds, cache, batch_size=3)
    assert not first.from_cache and first.computed_shards == 3 and first.reused_shards == 0
    np.testing.assert_array_equal(first.features.image, np.stack([_expected_image(p) for p in paths]))
    np.testing.assert_array_equal(first.features.text[:, 0], [len(t) for t in ds.texts])
    assert sorted(FakeEncoder.encoded) == [p.name for p in paths]
    assert first.path == cache / f"{first.meta['key']}.npz" and first.path.name.startswith("tiny-test-fake-")
    assert sorted(f.name for f in cache.iterdir()) == sorted([first.path.name, first.path.with_suffix(".json").name])
    meta = json.loads(first.path.with_suffix(".json").read_text())
    assert meta == first.meta
    assert (meta["encoder"], meta["n"], meta["image_dim"], meta["text_dim"]) == ("test-fake", N_ITEMS, 3, 2)
    assert meta["text_field"] == "caption" and meta["weights_id"] == "fake-weights-1"
    assert set(meta["timings"]) == {"image_s", "text_s"} and all(v >= 0 for v in meta["timings"].values())
    assert datetime.fromisoformat(meta["created"]).tzinfo is not None
    assert set(meta["source_digest"]) == {"ids", "texts", "images", "source_files"}

    FakeEncoder.encoded = []
    second = run(ds, cache)
    assert second.from_cache and FakeEncoder.encoded == []
    np.testing.assert_array_equal(second.features.image, first.features.image)
    np.testing.assert_array_equal(second.features.text, first.features.text)
    feats = load_or_extract_features(ds, "test-fake", cache_dir=cache, progress=False)
    assert feats.encoder == "test-fake" and feats.image.dtype == np.float32 and FakeEncoder.encoded == []


def test_key_follows_inputs(tmp_path):
    paths = make_images(tmp_path / "img")
    meta_file = tmp_path / "captions.json"
    meta_file.write_text("{}")
    cache = tmp_path / "cache"
    base = run(make_dataset(paths, source_files=[meta_file]), cache).path
    assert run(make_dataset(paths, source_files=[meta_file]), cache).path == base  # same inputs → same key
    other_splits = make_dataset(paths, source_files=[meta_file])
    other_splits.splits["train"], other_splits.splits["validation"] = np.arange(0, 5), np.array([5])
    assert run(other_splits, cache).path == base  # splits only select rows

    texts = [f"caption number {i} of a chest image" for i in range(N_ITEMS)]
    texts[4] = "an edited caption"
    changed = {
        "caption": run(make_dataset(paths, texts, source_files=[meta_file]), cache).path,
        "text_field": run(make_dataset(paths, source_files=[meta_file]), cache, text_field="caption+findings").path,
        "name": run(make_dataset(paths, name="tiny2", source_files=[meta_file]), cache).path,
        "ids order": run(make_dataset(paths[::-1], source_files=[meta_file]), cache).path,
    }
    st = paths[2].stat()
    os.utime(paths[2], ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    changed["image mtime"] = run(make_dataset(paths, source_files=[meta_file]), cache).path
    st = meta_file.stat()
    os.utime(meta_file, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    changed["source file mtime"] = run(make_dataset(paths, source_files=[meta_file]), cache).path
    assert len({base, *changed.values()}) == 1 + len(changed), changed


def test_key_ignores_how_the_data_root_is_spelled(tmp_path, monkeypatch):
    paths = make_images(tmp_path / "data" / "img")
    cache = tmp_path / "cache"
    base = run(make_dataset(paths), cache)
    (tmp_path / "link").symlink_to(tmp_path / "data")
    monkeypatch.chdir(tmp_path / "cache")
    spellings = {
        "relative with ..": [Path("..") / "data" / "img" / p.name for p in paths],
        "dot-dot inside": [tmp_path / "data" / "img" / ".." / "img" / p.name for p in paths],
        "symlinked root": [tmp_path / "link" / "img" / p.name for p in paths],
    }
    for how, other in spellings.items():
        FakeEncoder.encoded = []
        hit = run(make_dataset(other), cache)
        assert hit.path == base.path and hit.from_cache and FakeEncoder.encoded == [], how


# ------------------------------------------------------------------------------------------------ resume
def test_interrupted_extraction_resumes_missing_shards_only(tmp_path):
    paths = make_images(tmp_path / "img")
    ds, cache = make_dataset(paths), tmp_path / "cache"
    FakeEncoder.fail_at_call = 4  # calls 1-2 finish shard 0 (items 0-3), call 3 = items 4-5, call 4 crashes
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(ds, cache)
    partials = list(cache.glob("*.partial"))
    assert len(partials) == 1 and not list(cache.glob("*.npz"))
    assert sorted(f.name for f in partials[0].iterdir()) == ["manifest.json", "shard-00000.npz"]

    FakeEncoder.fail_at_call, FakeEncoder.encoded = None, []
    resumed = run(ds, cache)
    assert FakeEncoder.encoded == [p.name for p in paths[4:]]  # only shards 1 and 2 were computed
    assert (resumed.reused_shards, resumed.computed_shards, resumed.meta["resumed_shards"]) == (1, 2, 1)
    assert not partials[0].exists()
    fresh = run(ds, tmp_path / "fresh")
    np.testing.assert_array_equal(resumed.features.image, fresh.features.image)
    np.testing.assert_array_equal(resumed.features.text, fresh.features.text)
    assert resumed.path.name == fresh.path.name


def test_partial_from_other_settings_or_corrupt_shard_is_recomputed(tmp_path):
    paths = make_images(tmp_path / "img")
    ds, cache = make_dataset(paths), tmp_path / "cache"
    FakeEncoder.fail_at_call = 4
    with pytest.raises(RuntimeError):
        run(ds, cache)
    FakeEncoder.fail_at_call, FakeEncoder.encoded = None, []
    partial = next(cache.glob("*.partial"))
    (partial / "shard-00000.npz").write_bytes(b"garbage")
    run(ds, cache)
    assert FakeEncoder.encoded == [p.name for p in paths]  # corrupt shard recomputed

    FakeEncoder.fail_at_call, FakeEncoder.calls = 4, 0
    with pytest.raises(RuntimeError):
        run(make_dataset(paths, name="tiny3"), cache)
    FakeEncoder.fail_at_call, FakeEncoder.encoded = None, []
    run(make_dataset(paths, name="tiny3"), cache, shard_size=5)  # other shard size: start over
    assert FakeEncoder.encoded == [p.name for p in paths]


def test_corrupt_final_cache_is_rebuilt(tmp_path):
    paths = make_images(tmp_path / "img")
    ds, cache = make_dataset(paths), tmp_path / "cache"
    first = run(ds, cache)
    first.path.write_bytes(b"broken")
    FakeEncoder.encoded = []
    with pytest.warns(UserWarning, match="unreadable"):
        again = run(ds, cache)
    assert not again.from_cache and len(FakeEncoder.encoded) == N_ITEMS
    np.testing.assert_array_equal(again.features.image, first.features.image)


# ----------------------------------------------------------------------------------------------- errors
def test_precomputed_dataset_bypasses_cache(tmp_path):
    rng = np.random.default_rng(0)
    n = 6
    ds = PairedDataset(
        name="featonly", ids=[str(i) for i in range(n)], labels=np.eye(n, 2, dtype=np.uint8) + np.eye(n, 2, -2, dtype=np.uint8),
        label_names=["a", "b"], splits={"train": np.arange(3), "validation": np.array([3]), "query": np.array([4, 5]),
                                        "database": np.arange(4)},
        label_scheme="x", db_includes_train=True,
        image_features=rng.standard_normal((n, 5)), text_features=rng.standard_normal((n, 4)).astype(np.float32),
    )
    for name in ("auto", "precomputed"):
        feats = load_or_extract_features(ds, name, cache_dir=tmp_path / "cache")
        assert feats.encoder == "precomputed" and feats.image.dtype == np.float32
        np.testing.assert_allclose(feats.image, ds.image_features.astype(np.float32))
    assert not (tmp_path / "cache").exists()
    with pytest.raises(DatasetError, match="'featonly' ships precomputed features"):
        load_or_extract_features(ds, "offline", cache_dir=tmp_path)
    raw = make_dataset(make_images(tmp_path / "img", 6))
    with pytest.raises(DatasetError, match="'tiny' has no precomputed features"):
        load_or_extract_features(raw, "precomputed", cache_dir=tmp_path)


def test_missing_or_broken_image_is_named(tmp_path):
    paths = make_images(tmp_path / "img")
    paths[3].unlink()
    with pytest.raises(DatasetError, match="item03.png"):
        run(make_dataset(paths), tmp_path / "cache")
    paths[3].write_bytes(b"\x89PNG not really")
    with pytest.raises(EncoderError, match="item03.png"):
        run(make_dataset(paths), tmp_path / "cache")
    with pytest.raises(DatasetError, match="batch_size"):
        run(make_dataset(paths), tmp_path / "cache", batch_size=0)


def test_default_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDHASH_CACHE_DIR", str(tmp_path / "envcache"))
    assert default_cache_dir() == tmp_path / "envcache"
    result = extract_features(make_dataset(make_images(tmp_path / "img", 5)), "test-fake", progress=False)
    assert result.path.parent == tmp_path / "envcache"
    monkeypatch.delenv("MEDHASH_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "medhash-bench" / "features"


# ------------------------------------------------------------------------------------------- the command
def _tiny_loader(data_root: Path | None, *, label_scheme: str | None = None, seed: int = 0, **options: str):
    if data_root is None:
        raise DatasetError("test-tiny-pairs needs a data root")
    paths = sorted((Path(data_root) / "tiny").glob("*.png"))
    return make_dataset(paths, name="test-tiny-pairs")


def test_extract_command(tmp_path, capsys, monkeypatch):
    make_images(tmp_path / "data" / "tiny")
    base = ["extract", "--dataset", "test-tiny-pairs", "--data-root", str(tmp_path / "data"),
            "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--device", "cpu"]
    assert cli.main([*base, "--encoder", "test-fake", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "items: 10" in out and "encoder: test-fake" in out and "3-d" in out and "2-d" in out
    npz = next((tmp_path / "cache").glob("*.npz"))
    assert "extracted in" in out and str(npz) in out
    assert cli.main([*base, "--encoder", "test-fake"]) == 0
    assert "cache hit" in capsys.readouterr().out

    assert cli.main([*base, "--encoder", "test-fake", "--encoder-option", "novalue"]) == 2
    assert "--encoder-option expects KEY=VALUE" in capsys.readouterr().err
    assert cli.main([*base, "--encoder", "nope"]) == 2
    assert "valid encoders:" in capsys.readouterr().err
    monkeypatch.delenv(bmc.ENV_DIR, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(bmc, "cached_hub_dir", lambda: None)
    assert cli.main([*base, "--encoder", "biomedclip"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: biomedclip:") and bmc.ENV_DIR in err and err.count("\n") == 1


# ------------------------------------------------------------------------------------------ real MedPix
@pytest.mark.realdata
def test_offline_extraction_on_real_medpix(data_root, tmp_path):
    folder = data_root / "medpix-2.0"
    if not (folder / "Descriptions.json").is_file():
        pytest.skip(f"dataset folder {folder} absent")
    records = json.loads((folder / "Descriptions.json").read_text(encoding="utf-8"))
    picked = [r for r in records if (folder / "images" / f"{r['image']}.png").is_file()][:5]
    paths = [folder / "images" / f"{r['image']}.png" for r in picked]
    ds = make_dataset(paths, [r["Description"]["Caption"] for r in picked], name="medpix-sample",
                      source_files=[folder / "Descriptions.json"])
    first = extract_features(ds, "offline", cache_dir=tmp_path, batch_size=4, progress=False, shard_size=3)
    f = first.features
    assert f.encoder == "offline" and f.image.shape == (5, 1280) and f.text.shape == (5, 384)
    np.testing.assert_allclose(np.linalg.norm(f.text, axis=1), 1.0, atol=1e-5)
    assert first.meta["timings"]["image_s"] > 0 and first.meta["timings"]["text_s"] > 0
    assert f.image.min() >= 0 and not np.allclose(f.image[0], f.image[1])
    for i in range(5):  # different captions → different rows; equal captions → equal rows
        for j in range(i + 1, 5):
            assert np.allclose(f.text[i], f.text[j], atol=1e-6) == (ds.texts[i] == ds.texts[j])
    assert extract_features(ds, "offline", cache_dir=tmp_path, progress=False).from_cache


# ------------------------------------------------------------------------------- review fixes (text field, cache dir)
def test_text_field_defaults_to_loader_and_other_value_is_refused(tmp_path):
    paths = make_images(tmp_path / "img", 5)
    ds = make_dataset(paths)
    ds.info["text_field"] = "caption+findings"
    result = run(ds, tmp_path / "cache")
    assert result.meta["text_field"] == "caption+findings"  # the loader's field, not "caption"
    assert run(ds, tmp_path / "cache", text_field="caption+findings").from_cache
    with pytest.raises(DatasetError, match=r"provides text field 'caption\+findings', not 'bogus'.*append_findings"):
        run(ds, tmp_path / "cache", text_field="bogus")
    with pytest.raises(DatasetError, match="not 'caption'"):
        load_or_extract_features(ds, "test-fake", cache_dir=tmp_path / "cache", progress=False, text_field="caption")
    # a loader that records no text field: the given name is kept (part of the key), default caption
    plain = make_dataset(paths)
    assert run(plain, tmp_path / "cache2").meta["text_field"] == "caption"


def test_cache_dir_that_is_a_file_is_one_line_error(tmp_path, capsys):
    paths = make_images(tmp_path / "img", 5)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(DatasetError, match="is not a folder"):
        run(make_dataset(paths), blocker)
    with pytest.raises(DatasetError, match="cannot create cache folder"):
        run(make_dataset(paths), blocker / "sub")
    make_images(tmp_path / "data" / "tiny", 5)
    assert cli.main(["extract", "--dataset", "test-tiny-pairs", "--data-root", str(tmp_path / "data"),
                     "--encoder", "test-fake", "--cache-dir", str(blocker), "--no-progress", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cache folder") and err.count("\n") == 1


def test_extract_command_label_scheme_flag_text_field_flag_gone_and_reserved_options(tmp_path, capsys, monkeypatch):
    seen = {}

    def loader(data_root, *, label_scheme=None, seed=0, **options):
        seen.update(label_scheme=label_scheme, seed=seed, options=options)
        return _tiny_loader(data_root, label_scheme=label_scheme, seed=seed)

    _register_temporarily(monkeypatch, DATASETS, "test-tiny-pairs", loader)
    make_images(tmp_path / "data" / "tiny", 5)
    base = ["extract", "--dataset", "test-tiny-pairs", "--data-root", str(tmp_path / "data"), "--encoder", "test-fake",
            "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--device", "cpu"]
    assert cli.main([*base, "--label-scheme", "location", "--dataset-seed", "3", "--dataset-option", "views=all"]) == 0
    assert seen == {"label_scheme": "location", "seed": 3, "options": {"views": "all"}}
    capsys.readouterr()
    for option, flag in (("label_scheme=location", "--label-scheme"), ("seed=1", "--dataset-seed")):
        assert cli.main([*base, "--dataset-option", option]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --dataset-option") and flag in err and err.count("\n") == 1
    with pytest.raises(SystemExit) as exc:
        cli.main([*base, "--text-field", "bogus"])  # text is chosen by loader options, not by this flag
    assert exc.value.code == 2
    assert "--text-field" in capsys.readouterr().err
    help_text = cli.build_parser()._subparsers._group_actions[0].choices["extract"].format_help()
    assert "label_scheme=location" not in help_text and "--label-scheme" in help_text
    assert "MEDHASH_CACHE_DIR or ~/.cache/medhash-bench/features" in " ".join(help_text.split())

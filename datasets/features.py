"""The feature cache: run a frozen encoder over a dataset once, keep the features on disk, reuse them.

Layout under the cache folder (``cache_dir`` argument, else ``$MEDHASH_CACHE_DIR``, else
``~/.cache/medhash-bench/features``), with ``STEM = <dataset>-<encoder>-<key>``:

``STEM.npz``
    ``image`` (N, d_img) float32, ``text`` (N, d_txt) float32, ``meta`` (0-d str, the JSON below). Written
    atomically (:func:`medhash_datasets.cache_io.atomic_save_npz`), so it is either complete or absent.
``STEM.json``
    The same metadata, human-readable: encoder, weights id, preprocessing id, text field, dims, n,
    ``created`` (UTC ISO time), ``timings`` (seconds spent encoding images and texts, summed over shards,
    including shards computed by an interrupted earlier run; model loading falls in the first shard),
    ``source_digest`` and the key fields.
``STEM.partial/``
    While extracting: ``shard-00000.npz``, ... (``shard_size`` items each, written atomically) plus
    ``manifest.json``. A restart reuses finished shards and computes only the missing ones; the folder is
    removed once ``STEM.npz`` exists.

The key is the SHA-256 of: dataset name; a digest of the item ids (their order fixes the rows; splits only
select rows, so they are not part of the key); encoder name, weights id and preprocessing id; the text
field; a digest of the texts themselves (an edited caption changes the key); and the path, size and
modification time of every image file and of every metadata file the loader lists in
``dataset.info["source_files"]``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from medhash_datasets.base import DatasetError, Features, PairedDataset
from medhash_datasets.cache_io import atomic_save_npz, atomic_write_json
from medhash_datasets.encoders import Encoder, EncoderError, create_encoder, resolve_encoder_name

CACHE_ENV = "MEDHASH_CACHE_DIR"
DEFAULT_SHARD_SIZE = 256
PRECOMPUTED = "precomputed"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class CachedFeatures:
    """What :func:`extract_features` returns: the features plus where they came from.

    Attributes
    ----------
    features : Features
        ``image`` (N, d_img) and ``text`` (N, d_txt) float32, rows in ``dataset.ids`` order.
    path : Path | None
        The cache ``.npz`` file; ``None`` for features shipped with the dataset.
    meta : dict
        The cache metadata (see the module docstring); ``{}`` for precomputed features.
    from_cache : bool
        ``True`` when the finished cache file was read and nothing was encoded.
    computed_shards, reused_shards : int
        Shards encoded by this call, and shards taken from an interrupted earlier run.
    """

    features: Features
    path: Path | None
    meta: dict
    from_cache: bool
    computed_shards: int = 0
    reused_shards: int = 0


def default_cache_dir() -> Path:
    """``$MEDHASH_CACHE_DIR`` if set, else ``~/.cache/medhash-bench/features``."""
    env = os.environ.get(CACHE_ENV, "")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "medhash-bench" / "features"


def _sha256_json(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def _stat_entries(paths: list[Path], what: str, dataset: str) -> list[list[object]]:
    entries: list[list[object]] = []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError as err:
            raise DatasetError(f"{dataset}: {what} {p} cannot be read: {err.strerror or err}") from None
        # The resolved path: one file reached through another spelling of the data root (relative, with
        # ``..``, through a symlink) is the same input and must hit the same cache entry.
        entries.append([os.path.realpath(p), st.st_size, st.st_mtime_ns])
    return entries


def source_digest(dataset: PairedDataset) -> dict[str, str]:
    """Digests of what the features are computed from.

    Returns
    -------
    dict
        ``ids``, ``texts``: SHA-256 of the JSON list; ``images``, ``source_files``: SHA-256 of the JSON list
        of ``[resolved path, size_bytes, mtime_ns]`` per file (image files; ``dataset.info["source_files"]``),
        so ``../data``, ``/abs/data`` and a symlink to it give the same digest.

    Raises
    ------
    DatasetError
        If an image or listed source file is missing or unreadable (the message names it).
    """
    images = [Path(p) for p in dataset.image_paths] if dataset.image_paths is not None else []
    sources = [Path(p) for p in dataset.info.get("source_files", [])]
    return {
        "ids": _sha256_json(list(dataset.ids)),
        "texts": _sha256_json(list(dataset.texts) if dataset.texts is not None else None),
        "images": _sha256_json(_stat_entries(images, "image file", dataset.name)),
        "source_files": _sha256_json(_stat_entries(sources, "source file", dataset.name)),
    }


def cache_key(dataset: PairedDataset, encoder: Encoder, *, text_field: str = "caption") -> tuple[str, dict]:
    """The cache file stem and the fields it hashes.

    Returns
    -------
    stem : str
        ``<dataset>-<encoder>-<20 hex chars>`` (names sanitised to ``[A-Za-z0-9_.-]``).
    fields : dict
        Everything hashed into the key (recorded in the metadata).

    Raises
    ------
    DatasetError
        If a source file cannot be read.
    """
    fields = {
        "format": FORMAT_VERSION,
        "dataset": dataset.name,
        "n": len(dataset),
        "encoder": encoder.name,
        "weights_id": encoder.weights_id,
        "preprocess_id": encoder.preprocess_id,
        "text_field": text_field,
        "source_digest": source_digest(dataset),
    }
    digest = _sha256_json(fields)[:20]
    safe = lambda s: re.sub(r"[^A-Za-z0-9_.-]+", "_", s)  # noqa: E731
    return f"{safe(dataset.name)}-{safe(encoder.name)}-{digest}", fields


def _precomputed(dataset: PairedDataset, encoder: str) -> CachedFeatures | None:
    has_img, has_txt = dataset.image_features is not None, dataset.text_features is not None
    if has_img and has_txt:
        if encoder not in (PRECOMPUTED, "auto"):
            raise DatasetError(
                f"dataset {dataset.name!r} ships precomputed features (no image files/texts to encode); "
                f"use --encoder auto or {PRECOMPUTED}, not {encoder!r}"
            )
        features = Features(
            image=np.ascontiguousarray(dataset.image_features, dtype=np.float32),
            text=np.ascontiguousarray(dataset.text_features, dtype=np.float32),
            encoder=PRECOMPUTED,
        )
        return CachedFeatures(features, None, {}, from_cache=True)
    if encoder == PRECOMPUTED:
        raise DatasetError(
            f"dataset {dataset.name!r} has no precomputed features; choose an encoder (offline, biomedclip, auto)"
        )
    if has_img or has_txt:
        raise DatasetError(
            f"dataset {dataset.name!r} ships {'image' if has_img else 'text'} features only; mixing precomputed "
            "and encoded modalities is not supported"
        )
    if dataset.image_paths is None or dataset.texts is None:
        missing = "image_paths" if dataset.image_paths is None else "texts"
        raise DatasetError(f"dataset {dataset.name!r} has neither precomputed features nor {missing} to encode")
    return None


def _load_final(path: Path, key: str, n: int, image_dim: int, text_dim: int) -> tuple[Features, dict] | None:
    """Read a finished cache file; ``None`` (with a warning) if it is unreadable or does not match."""
    try:
        with np.load(path, allow_pickle=False) as z:
            image, text, meta = z["image"], z["text"], json.loads(str(z["meta"]))
    except (OSError, ValueError, KeyError) as err:
        warnings.warn(f"feature cache {path} is unreadable ({err}); extracting again", stacklevel=3)
        return None
    if meta.get("key") != key or image.shape != (n, image_dim) or text.shape != (n, text_dim):
        warnings.warn(
            f"feature cache {path} does not match (shapes {image.shape}/{text.shape}, expected ({n}, {image_dim})/"
            f"({n}, {text_dim})); extracting again",
            stacklevel=3,
        )
        return None
    return Features(
        image=image.astype(np.float32, copy=False), text=text.astype(np.float32, copy=False), encoder=meta["encoder"]
    ), meta


def _load_shard(path: Path, rows: int, image_dim: int, text_dim: int) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            shard = {k: z[k] for k in ("image", "text", "image_s", "text_s")}
    except (OSError, ValueError, KeyError):
        return None
    if shard["image"].shape != (rows, image_dim) or shard["text"].shape != (rows, text_dim):
        return None
    return shard


def resolve_text_field(dataset: PairedDataset, text_field: str | None) -> str:
    """The text field recorded in the cache key: ``text_field`` if given, else the loader's, else ``caption``.

    Raises
    ------
    DatasetError
        If ``text_field`` differs from the field the loader recorded in ``dataset.info["text_field"]``: the
        text is selected by the loader's options, not by this name.
    """
    loader_field = dataset.info.get("text_field")
    if text_field is None:
        return str(loader_field) if loader_field is not None else "caption"
    if loader_field is not None and str(text_field) != str(loader_field):
        raise DatasetError(
            f"dataset {dataset.name!r} provides text field {loader_field!r}, not {text_field!r}; the text is "
            "chosen by the loader's options (e.g. --dataset-option append_findings=true for medpix, "
            "--dataset-option text_field=impression for openi)"
        )
    return str(text_field)


def _check_cache_dir(root: Path) -> None:
    """Create the cache folder ``root``; a file in its place or an unwritable parent raises :class:`DatasetError`."""
    if root.exists() and not root.is_dir():
        raise DatasetError(f"cache folder {root} exists but is not a folder; give --cache-dir a folder path")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DatasetError(f"cannot create cache folder {root}: {err.strerror or err}") from None


def _prepare_partial(partial: Path, manifest: dict) -> None:
    """Create ``partial`` or, if it was made with other settings (shard size, key), empty it."""
    mpath = partial / "manifest.json"
    if partial.is_dir():
        try:
            old = json.loads(mpath.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if old == manifest:
            return
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    atomic_write_json(mpath, manifest)


def extract_features(
    dataset: PairedDataset,
    encoder: str = "auto",
    *,
    cache_dir: Path | None = None,
    device: str = "cpu",
    batch_size: int = 32,
    progress: bool = True,
    text_field: str | None = None,
    encoder_options: Mapping[str, str] | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
) -> CachedFeatures:
    """Return cached features for ``dataset``, encoding (resumably) whatever is missing.

    Parameters
    ----------
    dataset : PairedDataset
    encoder : str
        Registered encoder name, ``"auto"`` (``biomedclip`` when its weights are local, else ``offline``) or
        ``"precomputed"`` (features shipped with the dataset).
    cache_dir : Path, optional
        Cache folder (default :func:`default_cache_dir`).
    device : str
        Torch device for the encoder.
    batch_size : int
        Items per encoder call (>= 1).
    progress : bool
        Show a tqdm progress bar (items).
    text_field : str, optional
        Which text the loader put in ``dataset.texts`` (e.g. ``"caption"``, ``"caption+findings"``); part of
        the key and metadata. Default: the loader's ``dataset.info["text_field"]``, else ``"caption"``. The
        text is chosen by the loader's own options (e.g. medpix ``append_findings=true``, openi
        ``text_field=impression``); a value different from the loader's recorded field is an error.
    encoder_options : mapping, optional
        Options for :func:`medhash_datasets.encoders.create_encoder` (e.g. ``{"path": DIR}`` for ``biomedclip``).
    shard_size : int
        Items per resumable shard (>= 1).

    Returns
    -------
    CachedFeatures
        Features (``encoder`` = resolved encoder name or ``"precomputed"``), cache path and metadata.

    Raises
    ------
    DatasetError
        Features-only dataset with a real encoder (names the dataset), missing/unreadable image file (names
        the file), bad ``batch_size``/``shard_size``, a ``text_field`` that is not the loader's, a cache
        folder that is a file or cannot be created.
    RegistryError
        Unknown encoder name.
    EncoderError
        Encoder cannot be built (e.g. BiomedCLIP weights absent; the message says how to supply them).
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise DatasetError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(shard_size, int) or shard_size < 1:
        raise DatasetError(f"shard_size must be a positive integer, got {shard_size!r}")
    text_field = resolve_text_field(dataset, text_field)
    pre = _precomputed(dataset, encoder)
    if pre is not None:
        return pre
    options = dict(encoder_options or {})
    name = resolve_encoder_name(encoder, **options)
    if encoder == "auto" and name == "offline":
        options.pop("path", None)
    enc = create_encoder(name, device=device, **options)
    key, fields = cache_key(dataset, enc, text_field=text_field)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    _check_cache_dir(root)
    final, meta_path, partial = root / f"{key}.npz", root / f"{key}.json", root / f"{key}.partial"
    n, d_img, d_txt = len(dataset), enc.image_dim, enc.text_dim

    if final.is_file():
        loaded = _load_final(final, key, n, d_img, d_txt)
        if loaded is not None:
            if partial.exists():
                shutil.rmtree(partial, ignore_errors=True)
            return CachedFeatures(loaded[0], final, loaded[1], from_cache=True)

    from tqdm.auto import tqdm

    n_shards = max(1, math.ceil(n / shard_size))
    _prepare_partial(partial, {"key": key, "n": n, "shard_size": shard_size, "format": FORMAT_VERSION})
    assert dataset.image_paths is not None and dataset.texts is not None  # checked by _precomputed
    paths, texts = [Path(p) for p in dataset.image_paths], list(dataset.texts)

    shards: list[dict[str, np.ndarray] | None] = []
    for i in range(n_shards):
        rows = min(n, (i + 1) * shard_size) - i * shard_size
        f = partial / f"shard-{i:05d}.npz"
        shards.append(_load_shard(f, rows, d_img, d_txt) if f.is_file() else None)
    reused = sum(s is not None for s in shards)
    done_items = sum(s["image"].shape[0] for s in shards if s is not None)
    computed = 0
    with tqdm(
        total=n,
        initial=done_items,
        desc=f"extract {dataset.name} [{enc.name}]",
        unit="item",
        disable=not progress,
        dynamic_ncols=True,
    ) as bar:
        for i in range(n_shards):
            if shards[i] is not None:
                continue
            lo, hi = i * shard_size, min(n, (i + 1) * shard_size)
            image = np.empty((hi - lo, d_img), dtype=np.float32)
            text = np.empty((hi - lo, d_txt), dtype=np.float32)
            t_img = t_txt = 0.0
            for b in range(lo, hi, batch_size):
                e = min(hi, b + batch_size)
                t0 = time.perf_counter()
                image[b - lo : e - lo] = _checked(enc.encode_images(paths[b:e], batch_size), e - b, d_img, enc, "image")
                t1 = time.perf_counter()
                text[b - lo : e - lo] = _checked(enc.encode_texts(texts[b:e], batch_size), e - b, d_txt, enc, "text")
                t2 = time.perf_counter()
                t_img, t_txt = t_img + t1 - t0, t_txt + t2 - t1
                bar.update(e - b)
            shard = {"image": image, "text": text, "image_s": np.float64(t_img), "text_s": np.float64(t_txt)}
            atomic_save_npz(partial / f"shard-{i:05d}.npz", **shard)
            shards[i] = shard
            computed += 1

    image = np.concatenate([s["image"] for s in shards if s is not None], axis=0)
    text = np.concatenate([s["text"] for s in shards if s is not None], axis=0)
    meta = {
        "key": key,
        "dataset": dataset.name,
        "n": n,
        "encoder": enc.name,
        "weights_id": enc.weights_id,
        "preprocess_id": enc.preprocess_id,
        "text_field": text_field,
        "image_dim": d_img,
        "text_dim": d_txt,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "timings": {
            "image_s": round(float(sum(float(s["image_s"]) for s in shards if s is not None)), 3),
            "text_s": round(float(sum(float(s["text_s"]) for s in shards if s is not None)), 3),
        },
        "source_digest": fields["source_digest"],
        "shard_size": shard_size,
        "shards": n_shards,
        "resumed_shards": reused,
        "batch_size": batch_size,
        "device": device,
    }
    atomic_save_npz(final, image=image, text=text, meta=np.array(json.dumps(meta, sort_keys=True, allow_nan=False)))
    atomic_write_json(meta_path, meta)
    shutil.rmtree(partial, ignore_errors=True)
    return CachedFeatures(
        Features(image=image, text=text, encoder=enc.name),
        final,
        meta,
        from_cache=False,
        computed_shards=computed,
        reused_shards=reused,
    )


def _checked(arr: np.ndarray, rows: int, dim: int, enc: Encoder, what: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.shape != (rows, dim):
        raise EncoderError(
            f"encoder {enc.name!r} returned {what} features of shape {arr.shape}, expected ({rows}, {dim})"
        )
    if not np.isfinite(arr).all():
        raise EncoderError(f"encoder {enc.name!r} returned non-finite {what} features")
    return arr


def load_or_extract_features(
    dataset: PairedDataset,
    encoder: str,
    *,
    cache_dir: Path | None = None,
    device: str = "cpu",
    batch_size: int = 32,
    progress: bool = True,
    text_field: str | None = None,
    encoder_options: Mapping[str, str] | None = None,
) -> Features:
    """Features for every item of ``dataset`` (rows in ``dataset.ids`` order), from the cache or extracted now.

    Precomputed features shipped with the dataset are returned as ``Features(..., encoder="precomputed")``
    without touching the cache. See :func:`extract_features` for the parameters and errors.

    Returns
    -------
    Features
        ``image`` (N, d_img) float32, ``text`` (N, d_txt) float32, ``encoder`` = the resolved encoder name.
    """
    return extract_features(
        dataset,
        encoder,
        cache_dir=cache_dir,
        device=device,
        batch_size=batch_size,
        progress=progress,
        text_field=text_field,
        encoder_options=encoder_options,
    ).features

"""MIRFlickr-25K in the DCMH ``.mat`` layout (``mirflickr25k``), and a reader for any DCMH-layout dataset.

The DCMH release (Jiang & Li, "Deep Cross-Modal Hashing", CVPR 2017; MIRFlickr-25K: Huiskes & Lew, MIR 2008)
keeps the 20,015 images that have at least one of the 24 concepts and at least 20 frequent tags, as matrices::

    mirflickr25k/mirflickr25k-lall.mat   LAll (20015, 24)    multi-hot labels
    mirflickr25k/mirflickr25k-yall.mat   YAll (20015, 1386)  bag-of-words text (the 1,386 most frequent tags)
    mirflickr25k/mirflickr25k-iall.mat   IAll                image features (N, d); absent here

The files may be MATLAB v5 (read with ``scipy.io.loadmat``) or v7.3 (HDF5, read with ``h5py``; MATLAB stores
arrays column-major, so every 2-D array read from HDF5 is transposed back to (N, d)). The DCMH ``IAll``
holds raw 224×224 images in some releases: those are rejected with a message, since this harness encodes
images from files; supply features through ``image_features=PATH`` instead.

Split (DCMH protocol): 2,000 random query items, the rest is the database; 10,000 database items are the
training sample, of which ``n_validation`` (1,000) are held out for validation (seeded).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medhash_datasets.base import DatasetError, PairedDataset, require_dir
from medhash_datasets.leakage import feature_row_leakage
from medhash_datasets.loading import OptionSpec, SkipCounter, parse_options
from medhash_datasets.registry import DATASETS

MIRFLICKR_SUBDIR = "mirflickr25k"
MIRFLICKR_HOW_TO_GET = (
    "Get the DCMH release of MIRFlickr-25K (mirflickr25k-lall.mat, mirflickr25k-yall.mat and image features "
    "mirflickr25k-iall.mat, from the DCMH authors' page linked at github.com/jiangqy/DCMH-CVPR2017) and place "
    "it under DIR/mirflickr25k/."
)
#: The 24 MIRFlickr-25K "potential" concepts in the column order of ``LAll`` (alphabetical annotation files
#: without the ``_r1`` relevant-only duplicates), as in the DCMH release.
MIRFLICKR_LABELS = (
    "animals", "baby", "bird", "car", "clouds", "dog", "female", "flower", "food", "indoor", "lake", "male",
    "night", "people", "plant_life", "portrait", "river", "sea", "sky", "structures", "sunset", "transport",
    "tree", "water",
)  # fmt: skip

MIRFLICKR_OPTIONS: dict[str, OptionSpec] = {
    "image_features": OptionSpec("str", None, help="image features file (.npy, .npz or .mat), shape (N, d)"),
    "n_query": OptionSpec("int", 2000, low=1, help="query items (DCMH: 2,000)"),
    "n_train": OptionSpec("int", 10000, low=2, help="training sample drawn from the database, validation included"),
    "n_validation": OptionSpec("int", 1000, low=1, help="validation items carved from the training sample"),
    "require_images": OptionSpec(
        "bool", True, help="false loads labels and text without image features (label statistics only)"
    ),
}


def _is_hdf5(path: Path) -> bool:
    """MATLAB v7.3 files are HDF5 files with a 512-byte user block: the signature sits at offset 512 (or 0)."""
    sig = b"\x89HDF\r\n\x1a\n"
    with path.open("rb") as fh:
        head = fh.read(520)
    return head[:8] == sig or head[512:520] == sig


def read_mat_array(path: Path, key: str | None = None) -> tuple[str, np.ndarray]:
    """Read one array from a MATLAB ``.mat`` file of either format.

    Parameters
    ----------
    path : Path
        A MATLAB v4/v5/v7 file (``scipy.io.loadmat``) or v7.3 / HDF5 file (``h5py``).
    key : str | None
        Variable name; ``None`` takes the only non-private variable.

    Returns
    -------
    (str, np.ndarray)
        The variable name and its array, oriented as MATLAB shows it (HDF5 arrays transposed back).

    Raises
    ------
    DatasetError
        If the file is unreadable, ``key`` is absent (listing the variables), ``key`` is ``None`` and the file
        holds several variables, or a v7.3 file is given and ``h5py`` is not installed.
    """
    if _is_hdf5(path):
        try:
            import h5py
        except ImportError:
            raise DatasetError(
                f"{path} is a MATLAB v7.3 (HDF5) file: install h5py to read it (pip install h5py)"
            ) from None
        with h5py.File(path, "r") as f:
            names = [k for k in f.keys() if not k.startswith("#")]
            name = _pick(path, names, key)
            arr = np.asarray(f[name][()])
        return name, arr.T if arr.ndim >= 2 else arr
    import scipy.io

    try:
        data = scipy.io.loadmat(path)
    except (ValueError, OSError, NotImplementedError) as err:
        raise DatasetError(f"cannot read {path} as a MATLAB file: {err}") from None
    names = [k for k in data if not k.startswith("__")]
    name = _pick(path, names, key)
    return name, np.asarray(data[name])


def _pick(path: Path, names: list[str], key: str | None) -> str:
    if key is not None:
        if key not in names:
            raise DatasetError(f"{path}: no variable {key!r}; it holds {names}")
        return key
    if len(names) != 1:
        raise DatasetError(f"{path}: holds variables {names}; expected exactly one")
    return names[0]


def _load_features(path: Path, n: int, dataset: str) -> np.ndarray:
    """Image features from ``.npy``, ``.npz`` (key ``image``, ``features``, ``IAll`` or the only array) or ``.mat``."""
    if not path.is_file():
        raise DatasetError(f"{dataset}: image features file {path} not found")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            key = next((k for k in ("image", "features", "IAll") if k in keys), keys[0] if len(keys) == 1 else None)
            if key is None:
                raise DatasetError(f"{dataset}: {path} holds {keys}; name the array 'image', 'features' or 'IAll'")
            arr = z[key]
    elif suffix == ".mat":
        try:
            arr = read_mat_array(path, "IAll")[1]
        except DatasetError:
            arr = read_mat_array(path)[1]
    else:
        raise DatasetError(f"{dataset}: image features file {path} must be .npy, .npz or .mat")
    if arr.ndim != 2:
        raise DatasetError(
            f"{dataset}: image features in {path} have shape {arr.shape}; expected (N, d) features — raw images "
            "(e.g. the DCMH IAll of shape (N, 224, 224, 3)) must be encoded first"
        )
    if arr.shape[0] != n:
        raise DatasetError(f"{dataset}: image features in {path} have {arr.shape[0]} rows, labels have {n}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def load_dcmh(
    folder: Path,
    prefix: str,
    dataset: str,
    *,
    seed: int,
    options: dict,
    label_names: tuple[str, ...] | None = None,
) -> PairedDataset:
    """Load a DCMH-layout dataset ``<prefix>-{lall,yall,iall}.mat`` from ``folder``.

    Parameters
    ----------
    folder : Path
        Folder holding the ``.mat`` files.
    prefix : str
        File-name prefix (``"mirflickr25k"``).
    dataset : str
        Registry name used in messages and in the result.
    seed : int
        Seeds the query / train / validation draw (``numpy.random.default_rng(seed)``).
    options : dict
        Raw loader options (see :data:`MIRFLICKR_OPTIONS`).
    label_names : tuple of str | None
        Names of the ``LAll`` columns (``label0``... when ``None`` or of the wrong length).

    Returns
    -------
    PairedDataset
        ``text_features`` = ``YAll`` (N, d_txt) float32, ``image_features`` (N, d_img) float32 or ``None``
        (with ``require_images=false``), labels ``LAll`` as uint8; ``texts`` and ``image_paths`` are ``None``.
        Rows without a label or with an all-zero text vector are dropped (``skipped``: ``no label``,
        ``empty text``; ``skipped_items`` names the rows). ``leakage`` reports identical image-feature rows and
        identical text rows shared by query and database items (:func:`~medhash_datasets.leakage.feature_row_leakage`).
        Splits: query ``n_query`` random items, database the rest; train + validation
        (``n_train`` items) drawn from the database, ``n_validation`` of them for validation.

    Raises
    ------
    DatasetError
        For missing files, mismatched row counts, bad options, sizes that do not fit, or missing image
        features (unless ``require_images=false``).
    """
    opts = parse_options(dataset, options, MIRFLICKR_OPTIONS)
    paths = {k: folder / f"{prefix}-{k.lower()}all.mat" for k in ("L", "Y", "I")}
    for k in ("L", "Y"):
        if not paths[k].is_file():
            raise DatasetError(f"{dataset}: {paths[k]} not found. {MIRFLICKR_HOW_TO_GET}")
    labels = read_mat_array(paths["L"], "LAll")[1]
    text = read_mat_array(paths["Y"], "YAll")[1]
    n = labels.shape[0]
    if labels.ndim != 2 or text.ndim != 2 or text.shape[0] != n:
        raise DatasetError(
            f"{dataset}: LAll has shape {labels.shape} and YAll {text.shape}; expected (N, C) and (N, d)"
        )

    image = None
    source = None
    if opts["image_features"]:
        given = Path(opts["image_features"]).expanduser()
        feat_path = given if given.is_absolute() or given.is_file() else folder / given
        image, source = _load_features(feat_path, n, dataset), str(feat_path)
    elif paths["I"].is_file():
        image, source = _load_features(paths["I"], n, dataset), str(paths["I"])
    elif opts["require_images"]:
        raise DatasetError(
            f"{dataset}: no image features: {paths['I']} not found and no image_features option given. Pass "
            f"--dataset-option image_features=PATH (.npy/.npz/.mat of shape ({n}, d)), or require_images=false to "
            "load labels and text only (label statistics)."
        )

    skipped = SkipCounter()
    keep = labels.sum(1) > 0
    source = {"source": paths["L"].name}
    skipped.add_many(
        "no label", (f"{prefix}_{i:05d}" for i in np.flatnonzero(~keep)), **source, detail="LAll row all 0"
    )
    empty_text = (np.abs(text).sum(1) == 0) & keep
    source = {"source": paths["Y"].name}
    skipped.add_many("empty text", (f"{prefix}_{i:05d}" for i in np.flatnonzero(empty_text)), **source,
                     detail="YAll row all 0")  # fmt: skip
    keep &= ~empty_text
    idx = np.flatnonzero(keep)
    m = len(idx)
    n_query, n_train, n_val = opts["n_query"], opts["n_train"], opts["n_validation"]
    if n_val >= n_train:
        raise DatasetError(f"{dataset}: option n_validation={n_val} must be smaller than n_train={n_train}")
    if n_query + n_train > m:
        raise DatasetError(f"{dataset}: n_query + n_train = {n_query + n_train} exceeds the {m} usable items")

    rng = np.random.default_rng(seed)
    perm = rng.permutation(m)
    query = perm[:n_query]
    database = perm[n_query:]
    sample = database[rng.permutation(len(database))[:n_train]]
    ids = [f"{prefix}_{i:05d}" for i in idx]
    is_query = np.zeros(m, dtype=bool)
    is_query[query] = True
    image_kept = None if image is None else image[idx]
    text_kept = np.ascontiguousarray(text[idx], dtype=np.float32)
    names = (
        list(label_names)
        if label_names and len(label_names) == labels.shape[1]
        else [f"label{j}" for j in range(labels.shape[1])]
    )
    return PairedDataset(
        name=dataset,
        ids=ids,
        labels=(labels[idx] > 0).astype(np.uint8),
        label_names=names,
        splits={
            "train": np.sort(sample[n_val:]).astype(np.int64),
            "validation": np.sort(sample[:n_val]).astype(np.int64),
            "query": np.sort(query).astype(np.int64),
            "database": np.sort(database).astype(np.int64),
        },
        label_scheme="concepts",
        db_includes_train=True,
        image_features=image_kept,
        text_features=text_kept,
        skipped=skipped.as_dict(),
        skipped_items=skipped.items,
        leakage=feature_row_leakage(ids, is_query, image_kept, text_kept),
        info={
            **opts,
            "source": str(folder),
            "text_field": "bag-of-words (YAll)",
            "source_files": [str(paths["L"]), str(paths["Y"])] + ([source] if source else []),
            "image_features_source": source,
            "split": f"DCMH: {n_query} query, rest database, {n_train} train+validation from the database (seed {seed})",
        },
    )


@DATASETS.register("mirflickr25k")
def load_mirflickr25k(
    data_root: Path | None, *, label_scheme: str | None = None, seed: int = 0, **options: object
) -> PairedDataset:
    """Load MIRFlickr-25K (DCMH ``.mat`` layout) as precomputed features; see :func:`load_dcmh`.

    Parameters
    ----------
    data_root : Path | None
        Folder holding ``mirflickr25k/``.
    label_scheme : str | None
        ``concepts`` (the only scheme: the 24 concepts of ``LAll``).
    seed : int
        Seeds the split.
    **options
        ``image_features`` (path; relative paths are tried from the working directory, then the dataset
        folder), ``n_query`` (2000), ``n_train`` (10000, validation included), ``n_validation`` (1000),
        ``require_images`` (bool, default true).

    Raises
    ------
    DatasetError
        See :func:`load_dcmh`; also for an unknown label scheme or a missing folder.
    """
    if label_scheme not in (None, "concepts"):
        raise DatasetError(f"mirflickr25k: unknown label scheme {label_scheme!r}; valid: concepts")
    folder = require_dir(
        data_root, MIRFLICKR_SUBDIR, "mirflickr25k", MIRFLICKR_HOW_TO_GET, markers=("mirflickr25k-lall.mat",)
    )
    return load_dcmh(
        folder, "mirflickr25k", "mirflickr25k", seed=seed, options=dict(options), label_names=MIRFLICKR_LABELS
    )

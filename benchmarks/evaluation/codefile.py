"""Read and validate code files produced elsewhere (``.mat`` or ``.npz``) and evaluate them.

The widely used layout (DCMH/DJSRH/UCMFH release scripts) stores, per file::

    q_img, q_txt   query codes       (nq, K), ±1 or 0/1
    r_img, r_txt   database codes    (nd, K), ±1 or 0/1
    q_l, r_l       multi-hot labels  (nq, L), (nd, L)

Tasks: ``i2t`` = ``q_img`` against ``r_txt``; ``t2i`` = ``q_txt`` against ``r_img``; ``i2i`` = ``q_img`` against
``r_img``; ``t2t`` = ``q_txt`` against ``r_txt``. Only the keys the requested tasks need are required.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.evaluation.metrics import MetricSpec, RetrievalResult, evaluate_hamming

__all__ = ["TASKS", "CodeFile", "evaluate_code_file", "load_code_file"]

#: task -> (query code key, database code key)
TASKS: dict[str, tuple[str, str]] = {
    "i2t": ("q_img", "r_txt"),
    "t2i": ("q_txt", "r_img"),
    "i2i": ("q_img", "r_img"),
    "t2t": ("q_txt", "r_txt"),
}
_LABEL_FOR = {"q_img": "q_l", "q_txt": "q_l", "r_img": "r_l", "r_txt": "r_l"}


@dataclass(frozen=True)
class CodeFile:
    """Validated contents of a code file.

    Attributes
    ----------
    path : Path
    codes : dict of str -> np.ndarray
        Code arrays present among ``q_img, q_txt, r_img, r_txt`` as bool ``(n, K)`` bits.
    q_labels, r_labels : np.ndarray, shape (nq, L) / (nd, L), bool
    bits : int
        Code length K.
    """

    path: Path
    codes: dict[str, np.ndarray]
    q_labels: np.ndarray
    r_labels: np.ndarray
    bits: int


def _read_raw(path: Path) -> dict[str, np.ndarray]:
    """Arrays of a ``.npz``/``.mat`` file; an unreadable or malformed file raises ``ValueError`` naming it."""
    suffix = path.suffix.lower()
    if suffix == ".npz":
        if not zipfile.is_zipfile(path):
            raise ValueError(f"{path}: not a readable .npz code file (not a zip archive as written by numpy.savez)")
        try:
            with np.load(path, allow_pickle=False) as z:
                if not hasattr(z, "files"):  # a plain .npy saved under a .npz name
                    raise ValueError("it holds a single array, not named arrays")
                return {k: np.asarray(z[k]) for k in z.files}
        except ValueError as err:
            msg = str(err).splitlines()[0] if str(err) else type(err).__name__
            if "pickle" in msg.lower():
                msg = "it holds object (pickled) arrays, which are not loaded for safety; save numeric arrays"
            raise ValueError(f"{path}: not a readable .npz code file ({msg})") from None
        except (OSError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(f"{path}: not a readable .npz code file ({type(err).__name__}: {err})") from None
    if suffix == ".mat":
        import scipy.io

        try:
            raw = scipy.io.loadmat(path)
        except NotImplementedError:
            raise ValueError(f"{path}: MATLAB v7.3 (HDF5) files are not supported; re-save with save(..., '-v7')") from None
        except Exception as err:  # MatReadError, IndexError, ValueError, ...: scipy's errors on junk input vary
            msg = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ValueError(f"{path}: not a readable MATLAB .mat code file ({msg})") from None
        return {k: np.asarray(v) for k, v in raw.items() if not k.startswith("__")}
    raise ValueError(f"{path}: unsupported code file type {suffix!r} (expected .mat or .npz)")


def _to_bits(name: str, arr: np.ndarray) -> np.ndarray:
    if arr.ndim != 2 or 0 in arr.shape:
        raise ValueError(f"key {name!r}: expected a non-empty 2-D (n, K) code matrix, got shape {arr.shape}")
    if arr.dtype == np.bool_:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):  # object, str, ...
        raise ValueError(f"key {name!r}: codes must be numeric, got dtype {arr.dtype} (shape {arr.shape})")
    if np.issubdtype(arr.dtype, np.floating) and np.isnan(arr).any():
        raise ValueError(f"key {name!r}: codes contain NaN (shape {arr.shape})")
    values = set(np.unique(arr).tolist())
    if not (values <= {-1, 1} or values <= {0, 1}):
        shown = sorted(values)[:6]
        raise ValueError(f"key {name!r}: codes must be ±1 or 0/1, found values {shown} (shape {arr.shape})")
    return arr > 0


def _to_labels(name: str, arr: np.ndarray) -> np.ndarray:
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(f"key {name!r}: expected a 2-D (n, L) multi-hot label matrix, got shape {arr.shape}")
    if arr.dtype != np.bool_ and not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"key {name!r}: labels must be numeric multi-hot 0/1, got dtype {arr.dtype} (shape {arr.shape})")
    if np.issubdtype(arr.dtype, np.floating) and np.isnan(arr).any():
        raise ValueError(f"key {name!r}: labels contain NaN (shape {arr.shape})")
    if arr.dtype != np.bool_ and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"key {name!r}: labels must be multi-hot 0/1 (shape {arr.shape})")
    return arr.astype(bool)


def load_code_file(path: str | Path, tasks: tuple[str, ...] = ("i2t", "t2i")) -> CodeFile:
    """Read and validate a ``.mat``/``.npz`` code file for the given tasks.

    Parameters
    ----------
    path : str or Path
    tasks : tuple of str
        Subset of :data:`TASKS`; decides which code keys are required.

    Returns
    -------
    CodeFile

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        ``path`` is a folder or not a readable ``.mat``/``.npz`` file (object arrays included); unknown task; missing key (the message lists the keys found); codes that are not ±1/0-1 or hold NaN;
        code/label row counts that differ; code lengths that differ; label matrices of different widths.
        Every message names the key(s) and shape(s).
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"code file {path} is a folder; give a .mat or .npz file")
    if not path.is_file():
        raise FileNotFoundError(f"code file {path} does not exist")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"unknown task(s) {unknown or list(tasks)}; choose from {sorted(TASKS)}")
    raw = _read_raw(path)
    needed = sorted({key for t in tasks for key in TASKS[t]} | {"q_l", "r_l"})
    missing = [k for k in needed if k not in raw]
    if missing:
        raise ValueError(f"{path}: missing key(s) {missing} needed for tasks {list(tasks)}; file has {sorted(raw)}")
    q_l, r_l = _to_labels("q_l", raw["q_l"]), _to_labels("r_l", raw["r_l"])
    if q_l.shape[1] != r_l.shape[1]:
        raise ValueError(f"{path}: label widths differ: 'q_l' {q_l.shape} vs 'r_l' {r_l.shape}")
    codes: dict[str, np.ndarray] = {}
    for key in needed:
        if key in ("q_l", "r_l"):
            continue
        bits = _to_bits(key, raw[key])
        lab_key = _LABEL_FOR[key]
        lab = q_l if lab_key == "q_l" else r_l
        if bits.shape[0] != lab.shape[0]:
            raise ValueError(f"{path}: key {key!r} has {bits.shape[0]} rows (shape {bits.shape}) but {lab_key!r} has {lab.shape[0]} (shape {lab.shape})")
        codes[key] = bits
    widths = {k: v.shape[1] for k, v in codes.items()}
    if len(set(widths.values())) != 1:
        raise ValueError(f"{path}: code lengths differ between keys: { {k: codes[k].shape for k in codes} }")
    return CodeFile(path=path, codes=codes, q_labels=q_l, r_labels=r_l, bits=next(iter(widths.values())))


def evaluate_code_file(
    path: str | Path,
    tasks: tuple[str, ...] = ("i2t", "t2i"),
    ties: tuple[str, ...] = ("index", "aware"),
    metrics: MetricSpec | None = None,
    shuffle_seed: int = 0,
    memory_budget_mb: float = 256.0,
) -> dict[tuple[str, str], RetrievalResult]:
    """Evaluate every (task, tie) of a code file with :func:`~benchmarks.evaluation.metrics.evaluate_hamming`.

    Returns
    -------
    dict
        ``(task, tie) -> RetrievalResult``, in the order of ``tasks`` then ``ties``.

    Raises
    ------
    FileNotFoundError, ValueError
        As :func:`load_code_file` and :func:`~benchmarks.evaluation.metrics.evaluate_hamming`.
    """
    cf = load_code_file(path, tasks)
    out = {}
    for task in tasks:
        q_key, r_key = TASKS[task]
        for tie in ties:
            out[(task, tie)] = evaluate_hamming(
                cf.codes[q_key],
                cf.codes[r_key],
                cf.q_labels,
                cf.r_labels,
                tie=tie,
                metrics=metrics,
                shuffle_seed=shuffle_seed,
                memory_budget_mb=memory_budget_mb,
            )
    return out

"""Read and validate code files produced elsewhere (``.mat`` or ``.npz``) and evaluate them.

The widely used layout (DCMH/DJSRH/UCMFH release scripts) stores, per file::

    q_img, q_txt   query codes       (nq, K), ±1 or 0/1 (or relaxed reals, when stated)
    r_img, r_txt   database codes    (nd, K)
    q_l, r_l       multi-hot labels  (nq, L), (nd, L)  -- items × classes, never classes × items

Tasks: ``i2t`` = ``q_img`` against ``r_txt``; ``t2i`` = ``q_txt`` against ``r_img``; ``i2i`` = ``q_img`` against
``r_img``; ``t2t`` = ``q_txt`` against ``r_txt``. Only the keys the requested tasks need are required.

One binary convention holds for the whole file: it is decided over every code key present, or stated
(``convention`` / ``--code-convention``), never per key (:mod:`benchmarks.evaluation.convention`). Reading the
files (``.npz``, ``.mat`` v5/v7 and v7.3 HDF5) is :mod:`benchmarks.evaluation.code_io`; :func:`write_code_file`
writes the same layout, so the harness's own codes can be fed to ``evaluate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.evaluation.code_io import read_arrays, write_arrays
from benchmarks.evaluation.convention import binarize_together
from benchmarks.evaluation.metrics import evaluate_hamming
from benchmarks.evaluation.result import MetricSpec, RetrievalResult

__all__ = ["CODE_KEYS", "TASKS", "CodeFile", "evaluate_code_file", "load_code_file", "validate_code_arrays",
           "write_code_file"]

#: task -> (query code key, database code key)
TASKS: dict[str, tuple[str, str]] = {
    "i2t": ("q_img", "r_txt"),
    "t2i": ("q_txt", "r_img"),
    "i2i": ("q_img", "r_img"),
    "t2t": ("q_txt", "r_txt"),
}
#: the code keys of the layout (query/database x image/text)
CODE_KEYS = ("q_img", "q_txt", "r_img", "r_txt")
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
    convention : str
        Binary convention applied to every code key (``"pm1"``, ``"01"``, ``"relaxed"`` or ``"bits"``).
    """

    path: Path
    codes: dict[str, np.ndarray]
    q_labels: np.ndarray
    r_labels: np.ndarray
    bits: int
    convention: str = "pm1"


def _code_matrix(key: str, arr: np.ndarray) -> np.ndarray:
    if arr.ndim != 2 or 0 in arr.shape:
        raise ValueError(f"key {key!r}: expected a non-empty 2-D (n, K) code matrix, got shape {arr.shape}")
    return arr


def _to_labels(key: str, arr: np.ndarray, side_rows: dict[str, int], other: np.ndarray) -> np.ndarray:
    """Validated bool labels; ``side_rows`` maps the code keys of this side to their row counts, ``other`` is
    the other side's label matrix.

    Labels are taken as stored (classes × items) when their rows match no code key of their side, their
    columns do, and their row count (the classes) is a dimension of the other label matrix.
    """
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(f"key {key!r}: expected a 2-D (n, L) multi-hot label matrix, got shape {arr.shape}")
    if arr.dtype != np.bool_ and not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"key {key!r}: labels must be numeric multi-hot 0/1, got dtype {arr.dtype} (shape {arr.shape})")
    rows = set(side_rows.values())
    if rows and arr.shape[0] not in rows and arr.shape[1] in rows and arr.shape[0] in np.shape(other):
        code_key = next(k for k, n in side_rows.items() if n == arr.shape[1])
        raise ValueError(
            f"key {key!r}: labels of shape {arr.shape} look stored as (classes × items), i.e. transposed: its "
            f"{arr.shape[1]} columns match the {arr.shape[1]} rows of {code_key!r}; store the transpose, "
            f"(items × classes) = {arr.shape[::-1]}"
        )
    if np.issubdtype(arr.dtype, np.floating) and np.isnan(arr).any():
        raise ValueError(f"key {key!r}: labels contain NaN (shape {arr.shape})")
    if arr.dtype != np.bool_ and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"key {key!r}: labels must be multi-hot 0/1 (shape {arr.shape})")
    return arr.astype(bool)


def validate_code_arrays(
    raw: dict[str, np.ndarray], tasks: tuple[str, ...] = ("i2t", "t2i"), convention: str = "auto", source: str = "code file"
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, str]:
    """Check the arrays of a code file and turn its codes into bits under one convention.

    Parameters
    ----------
    raw : dict of str -> np.ndarray
        Arrays by key (:data:`CODE_KEYS`, ``q_l``, ``r_l``; other keys are ignored).
    tasks : tuple of str
        Subset of :data:`TASKS`; decides which code keys are required.
    convention : {"auto", "pm1", "01", "relaxed"}
        Decided over **every** code key present (:mod:`benchmarks.evaluation.convention`), not per key.
    source : str
        Names the file in error messages.

    Returns
    -------
    codes : dict of str -> np.ndarray
        Bool ``(n, K)`` bits of the code keys the tasks need.
    q_labels, r_labels : np.ndarray, shape (nq, L) / (nd, L), bool
    convention : str
        The convention applied (``"pm1"``, ``"01"``, ``"relaxed"`` or ``"bits"``).

    Raises
    ------
    ValueError
        Unknown task; missing key (the message lists the keys found); a code matrix that is not 2-D numeric,
        holds NaN, or is not binary under the convention (or whose convention is ambiguous: the message names
        the key and its values); code/label row counts that differ; labels (or codes) stored transposed
        (named as such, with both shapes); code lengths or label widths that differ.
    """
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"unknown task(s) {unknown or list(tasks)}; choose from {sorted(TASKS)}")
    needed = sorted({key for t in tasks for key in TASKS[t]} | {"q_l", "r_l"})
    missing = [k for k in needed if k not in raw]
    if missing:
        raise ValueError(f"{source}: missing key(s) {missing} needed for tasks {list(tasks)}; file has {sorted(raw)}")
    present = {k: _code_matrix(k, np.asarray(raw[k])) for k in CODE_KEYS if k in raw}
    bits, used = binarize_together({f"key {k!r}": v for k, v in present.items()}, convention)
    side_rows = {lab: {k: v.shape[0] for k, v in present.items() if _LABEL_FOR[k] == lab} for lab in ("q_l", "r_l")}
    q_l = _to_labels("q_l", np.asarray(raw["q_l"]), side_rows["q_l"], raw["r_l"])
    r_l = _to_labels("r_l", np.asarray(raw["r_l"]), side_rows["r_l"], raw["q_l"])
    codes: dict[str, np.ndarray] = {}
    for key in needed:
        if key in ("q_l", "r_l"):
            continue
        b = bits[f"key {key!r}"]
        lab_key = _LABEL_FOR[key]
        lab = q_l if lab_key == "q_l" else r_l
        if b.shape[0] != lab.shape[0]:
            hint = ""
            if b.shape[1] == lab.shape[0]:
                hint = f"; it looks stored as (bits × items), i.e. transposed: save the transpose, shape {b.shape[::-1]}"
            raise ValueError(f"{source}: key {key!r} has {b.shape[0]} rows (shape {b.shape}) but {lab_key!r} has "
                             f"{lab.shape[0]} (shape {lab.shape}){hint}")
        codes[key] = b
    if q_l.shape[1] != r_l.shape[1]:
        raise ValueError(f"{source}: label widths differ: 'q_l' {q_l.shape} vs 'r_l' {r_l.shape}")
    widths = {k: v.shape[1] for k, v in codes.items()}
    if len(set(widths.values())) != 1:
        raise ValueError(f"{source}: code lengths differ between keys: { {k: codes[k].shape for k in codes} }")
    return codes, q_l, r_l, used


def load_code_file(path: str | Path, tasks: tuple[str, ...] = ("i2t", "t2i"), convention: str = "auto") -> CodeFile:
    """Read and validate a ``.mat``/``.npz`` code file for the given tasks.

    Parameters
    ----------
    path : str or Path
        ``.npz``, or ``.mat`` v5/v7 (scipy) or v7.3 (HDF5, h5py; arrays transposed from column-major).
    tasks : tuple of str
        Subset of :data:`TASKS`; decides which code keys are required.
    convention : {"auto", "pm1", "01", "relaxed"}
        One binary convention for all code keys of the file (:func:`validate_code_arrays`).

    Returns
    -------
    CodeFile

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        ``path`` is a folder or not a readable ``.mat``/``.npz`` file (object arrays included), or the arrays
        fail :func:`validate_code_arrays`. Every message names the file or key(s) and shape(s).
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"code file {path} is a folder; give a .mat or .npz file")
    if not path.is_file():
        raise FileNotFoundError(f"code file {path} does not exist")
    codes, q_l, r_l, used = validate_code_arrays(read_arrays(path), tasks, convention, source=str(path))
    return CodeFile(path=path, codes=codes, q_labels=q_l, r_labels=r_l, bits=next(iter(codes.values())).shape[1],
                    convention=used)


def write_code_file(
    path: str | Path,
    *,
    q_l: np.ndarray,
    r_l: np.ndarray,
    q_img: np.ndarray | None = None,
    q_txt: np.ndarray | None = None,
    r_img: np.ndarray | None = None,
    r_txt: np.ndarray | None = None,
    convention: str = "auto",
) -> Path:
    """Write codes and labels in exactly the layout :func:`load_code_file` (and ``evaluate``) reads, atomically.

    Codes are stored as int8 ±1 (the DCMH/UCMFH release layout, read back unambiguously as ``pm1``), labels as
    uint8 0/1. The arrays are validated as :func:`load_code_file` would before anything is written.

    Parameters
    ----------
    path : str or Path
        Target ``.npz`` or ``.mat`` (MATLAB v5) file; parent folders are created.
    q_l, r_l : np.ndarray, shape (nq, L) / (nd, L)
        Multi-hot query and database labels.
    q_img, q_txt, r_img, r_txt : np.ndarray, shape (nq, K) / (nd, K), optional
        Query and database codes of each modality (bool bits, ±1, 0/1, or relaxed codes); at least one query
        and one database key, forming at least one task of :data:`TASKS`.
    convention : {"auto", "pm1", "01", "relaxed"}
        How the given codes become bits, decided over all of them together; method outputs
        (``HashingMethod.encode``) are ``"relaxed"``.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    ValueError
        No complete task among the given keys, an unsupported suffix, or arrays failing
        :func:`validate_code_arrays`.
    OSError
        If the file cannot be written.
    """
    path = Path(path)
    given = {k: v for k, v in {"q_img": q_img, "q_txt": q_txt, "r_img": r_img, "r_txt": r_txt}.items() if v is not None}
    tasks = tuple(t for t, keys in TASKS.items() if all(k in given for k in keys))
    if not tasks:
        raise ValueError(f"{path}: codes {sorted(given)} form no task; give a query and a database key of "
                         f"{sorted(TASKS.items())}")
    codes, q_bool, r_bool, _ = validate_code_arrays({**given, "q_l": q_l, "r_l": r_l}, tasks, convention, source=str(path))
    arrays = {k: np.where(codes[k], 1, -1).astype(np.int8) for k in given}
    write_arrays(path, {**arrays, "q_l": q_bool.astype(np.uint8), "r_l": r_bool.astype(np.uint8)})
    return path


def evaluate_code_file(
    path: str | Path | CodeFile,
    tasks: tuple[str, ...] = ("i2t", "t2i"),
    ties: tuple[str, ...] = ("index", "aware"),
    metrics: MetricSpec | None = None,
    shuffle_seed: int = 0,
    memory_budget_mb: float = 256.0,
    convention: str = "auto",
) -> dict[tuple[str, str], RetrievalResult]:
    """Evaluate every (task, tie) of a code file with :func:`~benchmarks.evaluation.metrics.evaluate_hamming`.

    Parameters
    ----------
    path : str, Path or CodeFile
        A code file, or one already read with :func:`load_code_file` (it must hold the tasks' keys).
    tasks, ties, metrics, shuffle_seed, memory_budget_mb
        As :func:`~benchmarks.evaluation.metrics.evaluate_hamming`, per task and tie policy.
    convention : {"auto", "pm1", "01", "relaxed"}
        The file's binary convention (:func:`load_code_file`); ignored for a ``CodeFile``.

    Returns
    -------
    dict
        ``(task, tie) -> RetrievalResult``, in the order of ``tasks`` then ``ties``; each carries the code
        diagnostics of its query and database keys (distinct codes, bit balance, degenerate flag).

    Raises
    ------
    FileNotFoundError, ValueError
        As :func:`load_code_file` and :func:`~benchmarks.evaluation.metrics.evaluate_hamming`.
    """
    cf = path if isinstance(path, CodeFile) else load_code_file(path, tasks, convention)
    out = {}
    for task in tasks:
        q_key, r_key = TASKS[task]
        if q_key not in cf.codes or r_key not in cf.codes:
            raise ValueError(f"{cf.path}: task {task!r} needs keys {q_key!r} and {r_key!r}; loaded {sorted(cf.codes)}")
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

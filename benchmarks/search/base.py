"""The search-engine interface shared by every engine (ann-benchmarks style) and the helpers of its
conventions: finite inputs, (distance, id) tie order, missing slots. See :mod:`benchmarks.search.registry`
for the engine table and the conventions."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

#: Distance returned in a missing result slot of a binary engine (faiss uses the same value).
MISSING_HAMMING = int(np.iinfo(np.int32).max)

#: Database chunk (items) processed at once by the popcount kernel, bounding its scratch memory.
POPCOUNT_CHUNK = 1 << 18

#: Items sampled to estimate the Hamming threshold of the k-th neighbour before the exact selection.
THRESHOLD_SAMPLE = 1 << 16


class SearchEngine(ABC):
    """Interface of a search engine: ``build`` once, ``search`` many times, ``memory_bytes`` measured.

    Class attributes
    ----------------
    family : str
        Registry family (``"popcount"``, ``"BFlat"``, ``"BHash"``, ``"numpy-ip"``, ``"FlatIP"``).
    exact : bool
        Whether results equal brute-force search (ties by database id).
    binary : bool
        ``True`` for engines over packed codes (Hamming distance), ``False`` for float32 inner product.

    Attributes
    ----------
    name : str
        Spec string that recreates the engine through :func:`create_engine` (e.g. ``"BHash4"``).
    n_items : int
        Database size after :meth:`build` (0 before).
    dim : int | None
        Code bytes ``B`` (binary) or feature dimension ``d`` (float) after :meth:`build`.
    """

    family: ClassVar[str] = ""
    exact: ClassVar[bool] = True
    binary: ClassVar[bool] = True

    def __init__(self) -> None:
        self.name = self.family
        self.n_items = 0
        self.dim: int | None = None

    @abstractmethod
    def build(self, db: np.ndarray) -> None:
        """Index the database ``db`` (binary: ``(N, B)`` uint8 packed codes; float: ``(N, d)`` float32).

        Raises
        ------
        ValueError
            For a wrong dtype, a non-2-D array, an empty database or (float) non-finite values.
        """

    @abstractmethod
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` database items for each query.

        Parameters
        ----------
        queries : np.ndarray
            ``(nq, B)`` uint8 packed codes (binary engines) or ``(nq, d)`` float32 (float engines).
        k : int
            Number of neighbours, >= 1.

        Returns
        -------
        ids : np.ndarray, shape (nq, k), int64
            Database row indices, best first; ties in (distance, id) order for exact engines; ``-1`` where
            nothing was found.
        distances : np.ndarray, shape (nq, k)
            int32 Hamming distances (ascending) or float32 inner products (descending).

        Raises
        ------
        RuntimeError
            If called before :meth:`build`.
        ValueError
            If ``queries`` has the wrong dtype or width, or ``k < 1``.
        """

    @abstractmethod
    def memory_bytes(self) -> int:
        """Measured size of the index in bytes: the arrays the engine keeps, or the length of the serialised
        faiss index (``faiss.serialize_index_binary`` / ``faiss.write_index``)."""

    @staticmethod
    def supports(n_bytes: int) -> bool:
        """Whether the engine can index codes of ``n_bytes`` bytes (binary) or features of that dimension
        (float); engines with a width limit (``hash-ball``, ``BHashTable``: 64 bits) override this."""
        return n_bytes >= 1

    def set_threads(self, threads: int) -> None:  # noqa: B027 - optional hook, default does nothing
        """Limit the engine's own worker threads (faiss and BLAS threads are set process-wide by the caller)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, n_items={self.n_items}, dim={self.dim})"

    # ---- validation shared by the engines -----------------------------------------------------------
    def _check_db(self, db: np.ndarray) -> np.ndarray:
        if not isinstance(db, np.ndarray) or db.ndim != 2:
            raise ValueError(f"{self.name}.build: database must be a 2-D array, got {describe_array(db)}")
        if db.shape[0] == 0 or db.shape[1] == 0:
            raise ValueError(f"{self.name}.build: database is empty, shape {db.shape}")
        want = np.uint8 if self.binary else np.float32
        if db.dtype != want:
            kind = "packed codes (np.packbits(bitorder='little'))" if self.binary else "features"
            raise ValueError(f"{self.name}.build: database must be {np.dtype(want).name} {kind}, got dtype {db.dtype}")
        if not self.binary:
            _check_finite(db, f"{self.name}.build: database")
        return np.ascontiguousarray(db)

    def _check_queries(self, queries: np.ndarray, k: int) -> np.ndarray:
        if self.dim is None:
            raise RuntimeError(f"{self.name}.search called before build")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"{self.name}.search: k must be an integer >= 1, got {k!r}")
        if not isinstance(queries, np.ndarray) or queries.ndim != 2 or queries.shape[1] != self.dim:
            what = "code bytes" if self.binary else "feature dimension"
            raise ValueError(
                f"{self.name}.search: queries must have shape (nq, {self.dim}) ({what} of the database), "
                f"got {describe_array(queries)}"
            )
        want = np.uint8 if self.binary else np.float32
        if queries.dtype != want:
            raise ValueError(f"{self.name}.search: queries must be {np.dtype(want).name}, got dtype {queries.dtype}")
        if not self.binary:
            _check_finite(queries, f"{self.name}.search: queries")
        return np.ascontiguousarray(queries)


def describe_array(arr: Any) -> str:
    if isinstance(arr, np.ndarray):
        return f"shape {arr.shape} dtype {arr.dtype}"
    return f"a {type(arr).__name__}"


def _check_finite(arr: np.ndarray, what: str, chunk: int = 1 << 16) -> None:
    """Raise ``ValueError`` naming ``what`` if ``arr`` holds NaN or infinity (checked in row chunks)."""
    for start in range(0, arr.shape[0], chunk):
        if not np.isfinite(arr[start : start + chunk]).all():
            raise ValueError(f"{what} holds NaN or infinite values (first bad row block starts at {start})")


def sort_rows_by_distance_then_id(
    ids: np.ndarray, distances: np.ndarray, *, descending: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Reorder each row of a top-k result by (distance, id), missing slots (id ``-1``) last.

    Parameters
    ----------
    ids : np.ndarray, shape (nq, k), int64
    distances : np.ndarray, shape (nq, k)
    descending : bool
        ``True`` for similarities (larger first).

    Returns
    -------
    ids, distances : np.ndarray
        Same shapes and dtypes, rows reordered.
    """
    missing = ids < 0
    primary = -distances.astype(np.float64) if descending else distances.astype(np.float64)
    key_ids = np.where(missing, np.iinfo(np.int64).max, ids)
    order = np.lexsort((key_ids, primary, missing), axis=-1)
    return np.take_along_axis(ids, order, axis=-1), np.take_along_axis(distances, order, axis=-1)


# ================================================================================================
# The project's exact popcount engine
# ================================================================================================

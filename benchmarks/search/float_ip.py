"""float32 inner-product engines, the real-valued reference: numpy/BLAS and faiss ``IndexFlatIP``."""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.search.base import SearchEngine


# ================================================================================================
# float32 inner-product engines (the real-valued reference)
# ================================================================================================
def topk_inner_product(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` of each row of ``scores`` (largest first), ties by column id.

    The k-th largest value ``s_k`` of a row comes from ``np.partition`` (introselect, O(N)); every item with
    score >= ``s_k`` is a candidate (in id order) and a stable sort on the negated score orders them, so
    equal scores keep id order and the cut at ``k`` is the one a full stable sort would make.

    Parameters
    ----------
    scores : np.ndarray, shape (nq, N), float32
    k : int
        ``1 <= k``; clipped to ``N``.

    Returns
    -------
    ids : np.ndarray, shape (nq, min(k, N)), int64
    values : np.ndarray, shape (nq, min(k, N)), float32
    """
    nq, n = scores.shape
    k = min(k, n)
    kth = np.partition(scores, n - k, axis=1)[:, n - k]
    ids = np.empty((nq, k), dtype=np.int64)
    vals = np.empty((nq, k), dtype=scores.dtype)
    for i in range(nq):
        cand = np.flatnonzero(scores[i] >= kth[i])
        order = np.argsort(-scores[i, cand], kind="stable")[:k]
        ids[i] = cand[order]
        vals[i] = scores[i, ids[i]]
    return ids, vals


class NumpyInnerProductEngine(SearchEngine):
    """Exact float32 inner-product search: BLAS ``queries @ db.T`` in query blocks + :func:`topk_inner_product`.

    Parameters
    ----------
    block_bytes : int
        Memory budget of one block of scores (``block_queries * N * 4`` bytes; default 256 MiB).
    """

    family = "numpy-ip"
    exact = True
    binary = False

    def __init__(self, block_bytes: int = 256 << 20) -> None:
        super().__init__()
        self.block_bytes = int(block_bytes)
        self._db: np.ndarray | None = None

    def build(self, db: np.ndarray) -> None:
        self._db = self._check_db(db)
        self.n_items, self.dim = self._db.shape

    def memory_bytes(self) -> int:
        """Bytes of the stored float32 matrix (``4 * d * N``)."""
        return 0 if self._db is None else int(self._db.nbytes)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = self._check_queries(queries, k)
        assert self._db is not None
        nq, n = queries.shape[0], self.n_items
        ids = np.full((nq, k), -1, dtype=np.int64)
        vals = np.full((nq, k), -np.inf, dtype=np.float32)
        block = max(1, self.block_bytes // (4 * n))
        kk = min(k, n)
        for start in range(0, nq, block):
            stop = min(nq, start + block)
            scores = queries[start:stop] @ self._db.T
            ids[start:stop, :kk], vals[start:stop, :kk] = topk_inner_product(scores, kk)
        return ids, vals


class FaissFlatIPEngine(SearchEngine):
    """faiss ``IndexFlatIP``: exhaustive inner-product search (BLAS for batches of >= 20 queries)."""

    family = "FlatIP"
    exact = True
    binary = False

    def __init__(self) -> None:
        super().__init__()
        self._index: Any = None

    def build(self, db: np.ndarray) -> None:
        import faiss

        db = self._check_db(db)
        self._index = faiss.IndexFlatIP(db.shape[1])
        self._index.add(db)
        self.n_items, self.dim = db.shape

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by inner product, ties by id (see :meth:`SearchEngine.search`).

        faiss's heaps do not keep the lowest ids among equal scores, so one extra neighbour is requested: when
        the (k+1)-th score equals the k-th, the row is searched again with twice as many neighbours until the
        last returned score is below the k-th (then every item tied at the boundary is in hand), and the
        first ``k`` in (score desc, id) order are kept.
        """
        queries = self._check_queries(queries, k)
        k = int(k)
        n = self.n_items
        kk = min(k + 1, n)
        vals, ids = self._index.search(queries, kk)
        out_ids = np.full((queries.shape[0], k), -1, dtype=np.int64)
        out_vals = np.full((queries.shape[0], k), -np.inf, dtype=np.float32)
        m = min(k, n)
        for i in range(queries.shape[0]):
            row_ids, row_vals, width = ids[i], vals[i], kk
            while width < n and row_vals[m - 1] == row_vals[width - 1]:
                width = min(n, 2 * width)
                row_vals, row_ids = (a[0] for a in self._index.search(queries[i : i + 1], width))
            order = np.lexsort((row_ids, -row_vals.astype(np.float64)))[:m]
            out_ids[i, :m], out_vals[i, :m] = row_ids[order], row_vals[order]
        return out_ids, out_vals

    def memory_bytes(self) -> int:
        """Length of ``faiss.write_index`` output, counted by a callback writer (no copy of the index)."""
        import faiss

        if self._index is None:
            return 0
        total = 0

        def count(chunk: bytes) -> int:
            nonlocal total
            total += len(chunk)
            return len(chunk)

        faiss.write_index(self._index, faiss.PyCallbackIOWriter(count))
        return int(total)

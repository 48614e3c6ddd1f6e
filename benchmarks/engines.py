"""Search engines behind one tiny interface (ann-benchmarks style), in a registry of faiss-style spec strings.

Every engine is built once on a database and then answers batches of queries with the top-k database ids
and their distances:

>>> engine = create_engine("popcount")
>>> engine.build(db_codes)                    # (N, B) uint8 packed codes   # doctest: +SKIP
>>> ids, dist = engine.search(query_codes, 100)  # (nq, 100) int64, (nq, 100) int32   # doctest: +SKIP

Engines (``ENGINES.names()``; the ``exact`` flag says whether results equal brute-force search):

============  =========  =======  =====================================================================
spec          input      exact    what
============  =========  =======  =====================================================================
``popcount``  binary     yes      the project's numpy kernel: XOR + ``np.bitwise_count`` + counting top-k
``BFlat``     binary     yes      faiss ``IndexBinaryFlat`` (brute force, heap top-k)
``BHash<m>``  binary     no       faiss ``IndexBinaryMultiHash``: multi-index hashing (Norouzi, Punjani and
                                  Fleet, "Fast Search in Hamming Space with Multi-Index Hashing", CVPR 2012)
                                  with ``m`` sub-tables of ``K // m`` bits; ``BHash<m>x<b>f<r>`` sets the bits
                                  per sub-table ``b`` and the flip radius ``r`` per sub-table (default 0)
``numpy-ip``  float32    yes      exact inner product by BLAS matrix product + exact top-k
``FlatIP``    float32    yes      faiss ``IndexFlatIP``
============  =========  =======  =====================================================================

Note that ``BHash4`` here names a *multi*-hash index with 4 sub-tables (this project's issue 7); faiss's own
``index_binary_factory`` reads ``BHash4`` as a single hash table on 4 bits and ``BHash4x16`` as 4 tables.

Conventions shared by all engines (the evaluation spec, "Codes and distances" and "Ranking and ties"):

* Binary codes are packed little-endian within each byte (``np.packbits(bitorder="little")``, the faiss
  layout), shape ``(n, B)`` uint8 with ``B = ceil(K / 8)``; padding bits must be equal (zero) in queries and
  database. Distances are Hamming distances ``popcount(a XOR b)``, int32, ascending.
* Float engines take float32 ``(n, d)`` features and return inner products (float32), descending; pass
  L2-normalised features for cosine similarity.
* Ties are resolved by database id: exact engines return, per query, the first ``k`` items in the order
  (distance, id), so all exact engines return identical id lists (the faiss heaps keep the first-seen item
  among equal distances; their rows are re-sorted by (distance, id)).
* When fewer than ``k`` items are found (``k > N`` or an approximate engine's candidate set is small), the
  missing slots hold id ``-1`` and distance ``MISSING_HAMMING`` (binary) or ``-inf`` (float).
"""

from __future__ import annotations

import functools
import math
import os
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np

from medhash_datasets.registry import Registry, RegistryError

#: Distance returned in a missing result slot of a binary engine (faiss uses the same value).
MISSING_HAMMING = int(np.iinfo(np.int32).max)

#: Database chunk (items) processed at once by the popcount kernel, bounding its scratch memory.
POPCOUNT_CHUNK = 1 << 18

#: Items sampled to estimate the Hamming threshold of the k-th neighbour before the exact selection.
THRESHOLD_SAMPLE = 1 << 16


def default_threads() -> int:
    """Number of CPU cores this process may run on (``os.sched_getaffinity`` where available)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


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

    def set_threads(self, threads: int) -> None:  # noqa: B027 - optional hook, default does nothing
        """Limit the engine's own worker threads (faiss and BLAS threads are set process-wide by the caller)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, n_items={self.n_items}, dim={self.dim})"

    # ---- validation shared by the engines -----------------------------------------------------------
    def _check_db(self, db: np.ndarray) -> np.ndarray:
        if not isinstance(db, np.ndarray) or db.ndim != 2:
            raise ValueError(f"{self.name}.build: database must be a 2-D array, got {_describe(db)}")
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
                f"got {_describe(queries)}"
            )
        want = np.uint8 if self.binary else np.float32
        if queries.dtype != want:
            raise ValueError(f"{self.name}.search: queries must be {np.dtype(want).name}, got dtype {queries.dtype}")
        if not self.binary:
            _check_finite(queries, f"{self.name}.search: queries")
        return np.ascontiguousarray(queries)


def _describe(arr: Any) -> str:
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
def _word_dtype(n_bytes: int) -> np.dtype:
    """Widest unsigned integer type whose size divides the code width ``n_bytes``."""
    for size, dtype in ((8, np.uint64), (4, np.uint32), (2, np.uint16)):
        if n_bytes % size == 0:
            return np.dtype(dtype)
    return np.dtype(np.uint8)


def topk_from_hamming(
    dist: np.ndarray, k: int, *, max_distance: int, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` of one query's Hamming distances, ties by database id, without a full sort.

    A Hamming distance takes only ``K + 1`` values, so the k-th smallest distance (the threshold ``t``) is
    found by counting rather than sorting (counting sort, Knuth TAOCP vol. 3, 5.2): ``t`` is estimated from
    the histogram of a strided sample, the candidates ``d <= t`` are gathered in id order in one pass (``t``
    is raised until at least ``k`` are found), then the exact threshold comes from the candidates'
    histogram. Items below the threshold are ordered by a stable (radix) sort on distance, so ties stay in
    id order; the remaining slots take the first items at the threshold, in id order.

    Parameters
    ----------
    dist : np.ndarray, shape (N,), uint8 or uint16
        Hamming distances of one query to every database item.
    k : int
        Number of neighbours (``1 <= k``); if ``k > N`` the result has ``N`` entries.
    max_distance : int
        Largest possible distance ``K`` (the code length in bits).
    mask : np.ndarray | None, shape (N,), bool
        Optional scratch buffer (reusing one avoids page faults on a fresh N-byte array per query).

    Returns
    -------
    ids : np.ndarray, shape (min(k, N),), int64
    distances : np.ndarray, shape (min(k, N),), same dtype as ``dist``
    """
    n = dist.shape[0]
    k = min(k, n)
    stride = -(-n // THRESHOLD_SAMPLE)  # ceil: a sample of at most THRESHOLD_SAMPLE items
    sample = dist[::stride] if stride > 1 else dist
    cum = np.cumsum(np.bincount(sample, minlength=max_distance + 1))
    if stride == 1:
        t = int(np.searchsorted(cum, k))  # exact: first t with count(d <= t) >= k
    else:
        # expected count of d <= t over the whole database, with a margin against sampling error
        want = (k + 3.0 * math.sqrt(k) + 8.0) * sample.shape[0] / n
        t = int(min(np.searchsorted(cum, want), max_distance))
    if mask is None:
        mask = np.empty(n, dtype=bool)
    while True:
        cand = np.flatnonzero(np.less_equal(dist, t, out=mask))
        if cand.shape[0] >= k or t >= max_distance:
            break
        # jump to where the sample predicts enough items, at least one step
        t = max(t + 1, int(np.searchsorted(cum, k * sample.shape[0] / n * 2.0)))
        t = min(t, max_distance)
    cd = dist[cand]
    if cand.shape[0] == k:
        order = np.argsort(cd, kind="stable")
        return cand[order], cd[order]
    ccum = np.cumsum(np.bincount(cd, minlength=max_distance + 1))
    t_exact = int(np.searchsorted(ccum, k))
    below = cd < t_exact
    less_ids, less_d = cand[below], cd[below]
    order = np.argsort(less_d, kind="stable")
    n_eq = k - less_ids.shape[0]
    eq_ids = cand[cd == t_exact][:n_eq]
    ids = np.concatenate([less_ids[order], eq_ids])
    dists = np.concatenate([less_d[order], np.full(n_eq, t_exact, dtype=dist.dtype)])
    return ids, dists


class PopcountEngine(SearchEngine):
    """Exact Hamming search in numpy: XOR, ``np.bitwise_count`` and a counting top-k (no sort of N items).

    The database is stored word-transposed: the ``(N, B)`` packed codes are viewed as ``W = B / w`` machine
    words of ``w`` bytes (the widest of 8, 4, 2, 1 dividing ``B``) and kept as a ``(W, N)`` array, so each
    word of every item is one contiguous vector: a query costs ``W`` vectorised XOR + popcount passes
    (distance = popcount(a XOR b), summed over words) and then :func:`topk_from_hamming`. Batches of queries
    are split over ``threads`` worker threads (numpy releases the GIL in these loops); one query runs on one
    thread.

    Parameters
    ----------
    threads : int | None
        Worker threads for batches (default: the cores this process may use).
    """

    family = "popcount"
    exact = True
    binary = True

    def __init__(self, threads: int | None = None) -> None:
        super().__init__()
        self.threads = threads or default_threads()
        self._words: np.ndarray | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._scratch = threading.local()
        self._generation = 0
        self.bits = 0

    def set_threads(self, threads: int) -> None:
        self.threads = max(1, int(threads))
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def build(self, db: np.ndarray) -> None:
        db = self._check_db(db)
        n, n_bytes = db.shape
        self._word = _word_dtype(n_bytes)
        self._words = np.ascontiguousarray(db.view(self._word).T)  # (W, N)
        self.n_items, self.dim = n, n_bytes
        self.bits = 8 * n_bytes
        self._acc = np.dtype(np.uint8) if self.bits <= 255 else np.dtype(np.uint16)
        self._generation += 1  # invalidates every thread's scratch buffers

    def memory_bytes(self) -> int:
        """Bytes of the stored code words (``N * B``); ids are implicit row positions, so none are stored."""
        return 0 if self._words is None else int(self._words.nbytes)

    def _buffers(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """This thread's scratch arrays (distances, XOR chunk, popcount chunk, mask), reused across queries.

        Fresh N-sized arrays per query would cost a page fault per 4 KiB page, about as much as the search.
        """
        scratch = self._scratch
        if getattr(scratch, "generation", None) != self._generation:
            chunk = min(self.n_items, POPCOUNT_CHUNK)
            scratch.dist = np.empty(self.n_items, dtype=self._acc)
            scratch.xor = np.empty(chunk, dtype=self._word)
            scratch.cnt = np.empty(chunk, dtype=self._acc)
            scratch.mask = np.empty(self.n_items, dtype=bool)
            scratch.generation = self._generation
        return scratch.dist, scratch.xor, scratch.cnt, scratch.mask

    def distances(self, query: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Hamming distances of one packed query to every database item.

        Parameters
        ----------
        query : np.ndarray, shape (B,), uint8
        out : np.ndarray | None, shape (N,), uint8 (uint16 when K > 255)
            Optional output buffer.

        Returns
        -------
        np.ndarray, shape (N,), uint8 (uint16 when K > 255)

        Raises
        ------
        RuntimeError
            If called before :meth:`build`.
        ValueError
            If ``query`` is not a ``(B,)`` uint8 code.
        """
        if self._words is None:
            raise RuntimeError(f"{self.name}.distances called before build")
        if not isinstance(query, np.ndarray) or query.dtype != np.uint8 or query.shape != (self.dim,):
            raise ValueError(f"{self.name}.distances: query must be a ({self.dim},) uint8 code, got {_describe(query)}")
        words = self._words
        qw = np.ascontiguousarray(query).view(self._word)
        n = self.n_items
        if out is None:
            out = np.empty(n, dtype=self._acc)
        _, xor, cnt, _ = self._buffers()
        chunk = xor.shape[0]
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            x = xor[: stop - start]
            d = out[start:stop]
            np.bitwise_xor(words[0, start:stop], qw[0], out=x)
            np.bitwise_count(x, out=d)
            for w in range(1, words.shape[0]):
                c = cnt[: stop - start]
                np.bitwise_xor(words[w, start:stop], qw[w], out=x)
                np.bitwise_count(x, out=c)
                np.add(d, c, out=d)
        return out

    def _search_block(self, queries: np.ndarray, k: int, ids: np.ndarray, dist: np.ndarray) -> None:
        buf, _, _, mask = self._buffers()
        for i in range(queries.shape[0]):
            self.distances(queries[i], out=buf)
            top_ids, top_d = topk_from_hamming(buf, k, max_distance=self.bits, mask=mask)
            ids[i, : top_ids.shape[0]] = top_ids
            dist[i, : top_d.shape[0]] = top_d

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = self._check_queries(queries, k)
        nq = queries.shape[0]
        ids = np.full((nq, k), -1, dtype=np.int64)
        dist = np.full((nq, k), MISSING_HAMMING, dtype=np.int32)
        n_workers = min(self.threads, nq)
        if n_workers <= 1:
            self._search_block(queries, k, ids, dist)
            return ids, dist
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="popcount")
        bounds = np.linspace(0, nq, n_workers + 1).astype(int)
        futures = [
            self._pool.submit(self._search_block, queries[a:b], k, ids[a:b], dist[a:b])
            for a, b in zip(bounds[:-1], bounds[1:])
            if b > a
        ]
        for f in futures:
            f.result()
        return ids, dist

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)


# ================================================================================================
# faiss binary engines
# ================================================================================================
class FaissBinaryFlatEngine(SearchEngine):
    """faiss ``IndexBinaryFlat``: exhaustive Hamming search with a per-query heap (Johnson, Douze and
    Jégou, "Billion-scale similarity search with GPUs", IEEE TBD 2019; faiss wiki "Binary indexes")."""

    family = "BFlat"
    exact = True
    binary = True

    def __init__(self) -> None:
        super().__init__()
        self._index: Any = None

    def build(self, db: np.ndarray) -> None:
        import faiss

        db = self._check_db(db)
        self._index = faiss.IndexBinaryFlat(8 * db.shape[1])
        self._index.add(db)
        self.n_items, self.dim = db.shape

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = self._check_queries(queries, k)
        dist, ids = self._index.search(queries, int(k))
        ids = ids.astype(np.int64, copy=False)
        dist = np.where(ids < 0, MISSING_HAMMING, dist).astype(np.int32, copy=False)
        return sort_rows_by_distance_then_id(ids, dist)

    def memory_bytes(self) -> int:
        import faiss

        return 0 if self._index is None else int(faiss.serialize_index_binary(self._index).size)


class FaissMultiHashEngine(SearchEngine):
    """faiss ``IndexBinaryMultiHash``: multi-index hashing (Norouzi, Punjani and Fleet, CVPR 2012).

    The K-bit code is cut into ``nhash`` substrings of ``b`` bits, each indexing a hash table; a query looks
    up the buckets within Hamming radius ``nflip`` of each of its substrings and ranks the union of the
    candidates by their full Hamming distance. Approximate: a neighbour whose every substring differs by
    more than ``nflip`` bits is missed (with ``nflip = 0`` only items at full distance < ``nhash`` are
    guaranteed, by the pigeonhole principle).

    Parameters
    ----------
    nhash : int
        Number of sub-tables ``m`` (>= 1).
    b : int | None
        Bits per sub-table (default ``K // nhash``); ``nhash * b <= K`` and ``b <= 64`` (faiss limit).
    nflip : int
        Hamming radius searched in each sub-table (default 0, as in faiss).
    """

    family = "BHash"
    exact = False
    binary = True

    def __init__(self, nhash: int = 4, b: int | None = None, nflip: int = 0) -> None:
        super().__init__()
        if nhash < 1 or (b is not None and b < 1) or nflip < 0:
            raise ValueError(f"BHash: need nhash >= 1, b >= 1, nflip >= 0; got nhash={nhash}, b={b}, nflip={nflip}")
        self.nhash, self.b, self.nflip = int(nhash), b, int(nflip)
        self.name = f"BHash{self.nhash}" + (f"x{b}" if b is not None else "") + (f"f{nflip}" if nflip else "")
        self._index: Any = None

    def build(self, db: np.ndarray) -> None:
        import faiss

        db = self._check_db(db)
        bits = 8 * db.shape[1]
        b = self.b if self.b is not None else bits // self.nhash
        if b < 1 or b > 64 or self.nhash * b > bits:
            raise ValueError(
                f"{self.name}: {self.nhash} sub-tables of {b} bits do not fit {bits}-bit codes "
                "(need 1 <= b <= 64 and nhash * b <= K)"
            )
        self._index = faiss.IndexBinaryMultiHash(bits, self.nhash, b)
        self._index.nflip = self.nflip
        self._index.add(db)
        self.n_items, self.dim = db.shape
        self.bits_per_table = b

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = self._check_queries(queries, k)
        dist, ids = self._index.search(queries, int(k))
        ids = ids.astype(np.int64, copy=False)
        dist = np.where(ids < 0, MISSING_HAMMING, dist).astype(np.int32, copy=False)
        return sort_rows_by_distance_then_id(ids, dist)

    def memory_bytes(self) -> int:
        """Length of the serialised index: the codes plus, per sub-table, bucket keys and the item ids
        bit-packed in ``ceil(log2 N)`` bits each. faiss holds ids as 8-byte integers in hash maps in RAM,
        so the resident size is larger than this figure."""
        import faiss

        return 0 if self._index is None else int(faiss.serialize_index_binary(self._index).size)


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


# ================================================================================================
# registry and spec strings
# ================================================================================================
ENGINES: Registry[Callable[..., SearchEngine]] = Registry("engine")
ENGINES.add("popcount", PopcountEngine, tags=("binary", "exact"))
ENGINES.add("BFlat", FaissBinaryFlatEngine, tags=("binary", "exact"))
for _m in (2, 4, 8):
    ENGINES.add(f"BHash{_m}", functools.partial(FaissMultiHashEngine, nhash=_m), tags=("binary", "approximate"))
ENGINES.add("numpy-ip", NumpyInnerProductEngine, tags=("float", "exact"))
ENGINES.add("FlatIP", FaissFlatIPEngine, tags=("float", "exact"))

#: One-line description per registered engine (shown by ``list engines`` through the ``description``
#: attribute set on each registered callable below).
ENGINE_DESCRIPTIONS: dict[str, str] = {
    "popcount": "exact Hamming search in numpy: XOR + np.bitwise_count + counting top-k",
    "BFlat": "exact Hamming search with faiss IndexBinaryFlat (brute force, per-query heap)",
    **{
        f"BHash{_m}": f"approximate Hamming search with faiss IndexBinaryMultiHash, {_m} sub-tables of K/{_m} bits "
        "(multi-index hashing, Norouzi et al., CVPR 2012)"
        for _m in (2, 4, 8)
    },
    "numpy-ip": "exact float32 inner-product search: BLAS matrix product + exact top-k",
    "FlatIP": "exact float32 inner-product search with faiss IndexFlatIP",
}
for _name, _text in ENGINE_DESCRIPTIONS.items():
    ENGINES.get(_name).description = _text  # type: ignore[attr-defined]

_BHASH = re.compile(r"^BHash(\d+)(?:x(\d+))?(?:f(\d+))?$")


def create_engine(spec: str, **params: Any) -> SearchEngine:
    """Instantiate the engine named by a spec string.

    Parameters
    ----------
    spec : str
        A registered name (``ENGINES.names()``) or a parameterised multi-hash spec ``BHash<m>[x<b>][f<r>]``
        (``m`` sub-tables of ``b`` bits, flip radius ``r``), e.g. ``"BHash4x16f1"``.
    **params
        Passed to the engine constructor (e.g. ``threads=2`` for ``popcount``).

    Raises
    ------
    RegistryError
        For an unknown spec (the message lists the registered names).
    """
    if spec in ENGINES:
        engine = ENGINES.get(spec)(**params)
    else:
        match = _BHASH.match(spec)
        if match is None:
            ENGINES.get(spec)  # raises with the valid names
            raise RegistryError(spec)  # pragma: no cover
        m, b, r = match.groups()
        engine = FaissMultiHashEngine(int(m), int(b) if b else None, int(r) if r else 0, **params)
    engine.name = spec
    return engine


def is_binary_spec(spec: str) -> bool:
    """Whether the engine named by ``spec`` searches packed binary codes (``False``: float32 features)."""
    return create_engine(spec).binary


__all__ = [
    "ENGINES",
    "ENGINE_DESCRIPTIONS",
    "MISSING_HAMMING",
    "FaissBinaryFlatEngine",
    "FaissFlatIPEngine",
    "FaissMultiHashEngine",
    "NumpyInnerProductEngine",
    "PopcountEngine",
    "SearchEngine",
    "create_engine",
    "default_threads",
    "is_binary_spec",
    "sort_rows_by_distance_then_id",
    "topk_from_hamming",
    "topk_inner_product",
]

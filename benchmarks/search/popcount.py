"""The project's exact numpy Hamming engine: XOR + ``np.bitwise_count`` + a counting top-k."""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from benchmarks.search.base import MISSING_HAMMING, POPCOUNT_CHUNK, THRESHOLD_SAMPLE, SearchEngine, describe_array
from benchmarks.threads import default_threads


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
            raise ValueError(f"{self.name}.distances: query must be a ({self.dim},) uint8 code, got {describe_array(query)}")
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

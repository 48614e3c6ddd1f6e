"""faiss binary engines: exhaustive ``IndexBinaryFlat`` and multi-index hashing ``IndexBinaryMultiHash``."""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.search.base import MISSING_HAMMING, SearchEngine, sort_rows_by_distance_then_id


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


class FaissBinaryHashEngine(SearchEngine):
    """faiss ``IndexBinaryHash`` with ``b = K``: one hash table keyed by the whole code, searched by visiting
    the buckets within Hamming radius ``nflip`` of the query and ranking their items by distance.

    This is the fixed-radius form of :class:`~benchmarks.search.hash_table.HashBallEngine`: items beyond
    ``nflip`` are never seen, so it is approximate (exact only for queries whose k-th neighbour lies within
    ``nflip``), and the cost of a query grows as ``sum_{r <= nflip} C(K, r)`` bucket look-ups whatever k is.

    Parameters
    ----------
    nflip : int
        Hamming radius of the buckets visited (default 2).
    """

    family = "BHashTable"
    exact = False
    binary = True

    def __init__(self, nflip: int = 2) -> None:
        super().__init__()
        if nflip < 0:
            raise ValueError(f"BHashTable: nflip must be >= 0, got {nflip}")
        self.nflip = int(nflip)
        self.name = "BHashTable" + (f"f{nflip}" if nflip != 2 else "")
        self._index: Any = None

    @staticmethod
    def supports(n_bytes: int) -> bool:
        """faiss hashes at most 64 bits per table."""
        return 1 <= n_bytes <= 8

    def build(self, db: np.ndarray) -> None:
        import faiss

        db = self._check_db(db)
        if not self.supports(db.shape[1]):
            raise ValueError(f"{self.name}.build: faiss IndexBinaryHash hashes at most 64 bits, got {8 * db.shape[1]}")
        bits = 8 * db.shape[1]
        self._index = faiss.IndexBinaryHash(bits, bits)
        self._index.nflip = self.nflip
        self._index.add(db)
        self.n_items, self.dim = db.shape

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = self._check_queries(queries, k)
        dist, ids = self._index.search(queries, int(k))
        ids = ids.astype(np.int64, copy=False)
        dist = np.where(ids < 0, MISSING_HAMMING, dist).astype(np.int32, copy=False)
        return sort_rows_by_distance_then_id(ids, dist)

    def memory_bytes(self) -> int:
        """Length of the serialised index (per bucket: key, ids and codes)."""
        import faiss

        return 0 if self._index is None else int(faiss.serialize_index_binary(self._index).size)

"""Exact sub-linear Hamming search for short codes: a code → ids table visited by Hamming balls (``hash-ball``).

With K bits there are at most 2^K distinct codes; at K = 16 that is 65,536, far fewer than a database of
10⁶ items. Grouping the items by code (a table in CSR layout: item ids sorted by (code, id) plus bucket
offsets) turns an exact top-k into a walk over Hamming shells around the query: the buckets at radius
r = 0, 1, 2, ... are the query code XOR every mask of r set bits, and the walk stops as soon as the shells
visited hold k items ("Hamming ball" or "bucket" search, Greene, Parnas and Yao, FOCS 1994; the exact
variant of Norouzi, Punjani and Fleet, "Fast Search in Hamming Space with Multi-Index Hashing", CVPR 2012,
Sec. 2, with a single table). Items within one shell are ordered by id, and the last shell contributes its
lowest ids, so the result equals exhaustive search with ties by id, item for item.

Two refinements keep it exact and never much slower than a scan of the distinct codes:

* **Constant bits.** Bits that are equal in every database code (padding bits when K is not a multiple of 8,
  or dead bits of a trained method) add the same distance to every item, so shells enumerate only the ``v``
  varying bits; the constant part is added to the reported distance.
* **Fallback scan of distinct codes.** When the shells up to the next radius would cost more look-ups than a
  scan of the ``U`` distinct codes (``cost · sum_{j <= r} C(v, j) > U``), the remaining items are ranked by
  scanning the distinct codes once (XOR + popcount) and taking whole buckets in distance order.

Codes of up to 16 bits use a direct table of ``2^(8B) + 1`` offsets (bucket look-up = two array reads);
longer codes (up to 64 bits) look buckets up by binary search in the sorted distinct codes, which pays only
for clustered codes (few distinct codes, near neighbours at small radius).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from benchmarks.search.base import MISSING_HAMMING, SearchEngine

#: Widest code (bits) whose buckets are addressed by a direct table of ``2^K + 1`` offsets by default.
DIRECT_TABLE_BITS = 16
#: Relative cost of one bucket look-up against one distinct code scanned (direct table, binary search), measured
#: on the development machine: a direct-table read costs about half a scanned code, a binary search in 10^5 to
#: 10^6 sorted codes 34-64 scanned codes (``np.searchsorted`` misses the caches at every level).
LOOKUP_COST = {"direct": 1.0, "sorted": 48.0}
#: Largest shell (number of masks) ever enumerated; beyond it the distinct codes are scanned instead.
MAX_SHELL = 1 << 17


def code_keys(packed: np.ndarray) -> np.ndarray:
    """The packed codes as unsigned integers: bit ``j`` of the key is bit ``j`` of the code.

    Parameters
    ----------
    packed : np.ndarray, shape (n, B), uint8, ``B <= 8``
        Little-endian packed codes (``np.packbits(bitorder="little")``).

    Returns
    -------
    np.ndarray, shape (n,), uint64
    """
    n, n_bytes = packed.shape
    wide = np.zeros((n, 8), dtype=np.uint8)
    wide[:, :n_bytes] = packed
    return wide.view("<u8").reshape(n).astype(np.uint64, copy=False)


def shell_masks(positions: np.ndarray, r: int) -> np.ndarray:
    """Every mask with exactly ``r`` of the bit ``positions`` set.

    Parameters
    ----------
    positions : np.ndarray, shape (v,), int
        Bit positions (0..63) the masks may set.
    r : int
        Number of set bits, ``0 <= r <= v``.

    Returns
    -------
    np.ndarray, shape (C(v, r),), uint64
        In lexicographic order of the position combinations.
    """
    weights = np.left_shift(np.uint64(1), positions.astype(np.uint64))
    if r == 0:
        return np.zeros(1, dtype=np.uint64)
    combos = np.fromiter(itertools.chain.from_iterable(itertools.combinations(range(len(positions)), r)),
                         dtype=np.intp, count=math.comb(len(positions), r) * r).reshape(-1, r)
    return np.bitwise_or.reduce(weights[combos], axis=1)


def take_in_order(ids: np.ndarray, dist: np.ndarray, need: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``need`` items in (distance, id) order, without sorting more than the items kept.

    Parameters
    ----------
    ids : np.ndarray, shape (n,), integer
    dist : np.ndarray, shape (n,), integer
    need : int
        ``>= 1``; all items are returned (ordered) when ``n <= need``.

    Returns
    -------
    ids, dist : np.ndarray, shape (min(n, need),)
    """
    if ids.shape[0] > need:
        counts = np.cumsum(np.bincount(dist))
        t = int(np.searchsorted(counts, need))  # distance of the need-th item
        below = dist < t
        at = ids[dist == t]
        m = need - int(np.count_nonzero(below))
        at = np.sort(np.partition(at, m - 1)[:m]) if m < at.shape[0] else np.sort(at)
        ids = np.concatenate([ids[below], at])
        dist = np.concatenate([dist[below], np.full(at.shape[0], t, dtype=dist.dtype)])
    order = np.lexsort((ids, dist))
    return ids[order], dist[order]


class HashBallEngine(SearchEngine):
    """Exact top-k by Hamming balls of increasing radius over a code → ids table (module docstring).

    Single-threaded (one query at a time); results equal :class:`~benchmarks.search.popcount.PopcountEngine`'s,
    ties by id included.

    Parameters
    ----------
    table_bits : int
        Codes of up to this many bits (``8 * B``) get a direct table of ``2^(8B) + 1`` offsets; longer codes
        (up to 64 bits) a sorted array of distinct codes searched by bisection. Default 16.

    Attributes
    ----------
    n_distinct : int
        Distinct codes ``U`` in the database (after :meth:`build`).
    varying_bits : int
        Bits ``v`` that differ between database codes; shells enumerate only these.
    """

    family = "hash-ball"
    exact = True
    binary = True

    def __init__(self, table_bits: int = DIRECT_TABLE_BITS) -> None:
        super().__init__()
        if not 8 <= table_bits <= 24:
            raise ValueError(f"hash-ball: table_bits must be in 8..24, got {table_bits}")
        self.table_bits = int(table_bits)
        self._ids: np.ndarray | None = None
        self._shells: dict[int, np.ndarray] = {}

    @staticmethod
    def supports(n_bytes: int) -> bool:
        """Whether codes of ``n_bytes`` bytes can be indexed (up to 64 bits)."""
        return 1 <= n_bytes <= 8

    def build(self, db: np.ndarray) -> None:
        db = self._check_db(db)
        n, n_bytes = db.shape
        if not self.supports(n_bytes):
            raise ValueError(f"{self.name}.build: codes of up to 64 bits (8 bytes) are supported, got {8 * n_bytes} bits")
        keys = code_keys(db)
        order = np.argsort(keys, kind="stable")  # stable: ids ascending inside each bucket
        index_dtype = np.int32 if n < 2**31 else np.int64
        self._ids = order.astype(index_dtype)
        sorted_keys = keys[order]
        self._keys, first = np.unique(sorted_keys, return_index=True)
        # the narrowest unsigned type holding a code: halves or quarters the bytes a fallback scan reads
        self._key_dtype = np.dtype(np.uint16 if n_bytes <= 2 else np.uint32 if n_bytes <= 4 else np.uint64)
        self._keys = self._keys.astype(self._key_dtype)
        self.mode = "direct" if 8 * n_bytes <= self.table_bits else "sorted"
        if self.mode == "direct":
            counts = np.bincount(keys.astype(np.intp), minlength=1 << (8 * n_bytes))
            self._table = np.zeros(counts.shape[0] + 1, dtype=index_dtype)
            np.cumsum(counts, out=self._table[1:])
            self._starts = None
        else:
            self._table = None
            self._starts = np.append(first, n).astype(index_dtype)
        all_or, all_and = int(np.bitwise_or.reduce(keys)), int(np.bitwise_and.reduce(keys))
        full = (1 << (8 * n_bytes)) - 1
        self._varying, self._const = all_or & ~all_and, all_and  # Python ints: cheaper per query than numpy scalars
        self._fixed = full & ~self._varying
        self._positions = np.array([j for j in range(8 * n_bytes) if (self._varying >> j) & 1], dtype=np.intp)
        self._shells = {}
        self.n_items, self.dim = n, n_bytes
        self.n_distinct = int(self._keys.shape[0])
        self.varying_bits = int(self._positions.shape[0])
        # shells are enumerated up to the first radius where scanning the distinct codes is cheaper than the
        # look-ups of all shells so far
        self._max_shell_radius = self.varying_bits + 1
        looked_up = 0
        for r in range(self.varying_bits + 1):
            size = math.comb(self.varying_bits, r)
            looked_up += size
            if size > MAX_SHELL or looked_up * LOOKUP_COST[self.mode] > self.n_distinct:
                self._max_shell_radius = r
                break

    def memory_bytes(self) -> int:
        """Bytes of the arrays kept: item ids (sorted by code), distinct codes, and the offsets (direct table
        of ``2^(8B) + 1`` entries, or one per distinct code)."""
        if self._ids is None:
            return 0
        parts = [self._ids, self._keys, self._table if self._table is not None else self._starts]
        return int(sum(a.nbytes for a in parts))

    # ---- bucket access ------------------------------------------------------------------------------
    def _bounds(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Start and end offsets (into the sorted ids) of the buckets of ``codes`` (intp for the direct table,
        uint64 keys otherwise); an empty or absent bucket has start == end."""
        if self._table is not None:
            return self._table[codes], self._table[codes + 1]
        assert self._starts is not None
        pos = np.searchsorted(self._keys, codes)
        pos = np.minimum(pos, self._keys.shape[0] - 1)
        hit = self._keys[pos] == codes
        return np.where(hit, self._starts[pos], 0), np.where(hit, self._starts[pos + 1], 0)

    def _gather(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Item ids of the buckets ``[lo, hi)`` (concatenated)."""
        assert self._ids is not None
        lens = hi - lo
        keep = lens > 0
        lo, lens = lo[keep], lens[keep]
        if lo.shape[0] == 0:
            return self._ids[:0]
        if lo.shape[0] == 1:
            return self._ids[lo[0] : lo[0] + lens[0]]
        ends = np.cumsum(lens)
        idx = np.repeat(lo - (ends - lens), lens) + np.arange(ends[-1])
        return self._ids[idx]

    def _shell(self, r: int) -> np.ndarray:
        """Masks of radius ``r`` over the varying bits (intp for the direct table, uint64 otherwise), cached."""
        if r not in self._shells:
            masks = shell_masks(self._positions, r)
            self._shells[r] = masks.astype(np.intp if self.mode == "direct" else self._key_dtype)
        return self._shells[r]

    # ---- search -------------------------------------------------------------------------------------
    def _search_one(self, key: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ids and distances of one query key (fewer when the database is smaller)."""
        offset = ((key ^ self._const) & self._fixed).bit_count()  # distance on the constant bits
        base = (key & self._varying) | self._const
        parts_ids: list[np.ndarray] = []
        parts_d: list[np.ndarray] = []
        found = 0
        r = 0
        while found < k and r <= self.varying_bits:
            if r >= self._max_shell_radius:
                ids, d = self._scan_from(base, r, k - found)
                parts_ids.append(ids)
                parts_d.append(d)
                break
            lo, hi = self._bounds(base ^ self._shell(r))
            ids = self._gather(lo, hi)
            if ids.shape[0]:
                need = k - found
                if ids.shape[0] > need:
                    ids = np.partition(ids, need - 1)[:need]
                parts_ids.append(np.sort(ids))
                parts_d.append(np.full(ids.shape[0], r, dtype=np.int32))
                found += ids.shape[0]
            r += 1
        if not parts_ids:
            return np.empty(0, np.int64), np.empty(0, np.int32)
        return np.concatenate(parts_ids).astype(np.int64), np.concatenate(parts_d) + offset

    def _scan_from(self, base: int, r: int, need: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``need`` nearest items at distance >= ``r`` (varying bits only), by scanning the distinct codes.

        Every bucket holds at least one item, so the radius at which the buckets at distances ``r..t`` number
        ``need`` bounds the last distance needed; the item counts of those buckets alone then give the exact
        last distance, and only the buckets up to it are gathered (:func:`take_in_order` cuts the last one).
        """
        d = np.bitwise_count((self._keys ^ self._key_dtype.type(base)) & self._key_dtype.type(self._varying))
        per_distance = np.bincount(d, minlength=self.varying_bits + 1)
        per_distance[:r] = 0  # buckets within r - 1 were taken by the shells
        t = int(np.searchsorted(np.cumsum(per_distance), need))  # beyond the largest distance: all buckets
        sel = np.flatnonzero((d >= r) & (d <= t))
        if self._table is not None:
            codes = self._keys[sel].astype(np.intp)
            lo, hi = self._table[codes], self._table[codes + 1]
        else:
            assert self._starts is not None
            lo, hi = self._starts[sel], self._starts[sel + 1]
        ds = d[sel].astype(np.int32)
        items = np.cumsum(np.bincount(ds, weights=hi - lo, minlength=self.varying_bits + 1))
        keep = ds <= int(np.searchsorted(items, need))
        lo, hi, ds = lo[keep], hi[keep], ds[keep]
        return take_in_order(self._gather(lo, hi), np.repeat(ds, hi - lo), need)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = self._check_queries(queries, k)
        nq = queries.shape[0]
        ids = np.full((nq, k), -1, dtype=np.int64)
        dist = np.full((nq, k), MISSING_HAMMING, dtype=np.int32)
        for i, key in enumerate(code_keys(queries).tolist()):
            top_ids, top_d = self._search_one(key, int(k))
            ids[i, : top_ids.shape[0]] = top_ids
            dist[i, : top_d.shape[0]] = top_d
        return ids, dist

"""Search engines behind one tiny interface (ann-benchmarks style), in a registry of faiss-style spec strings.

Every engine is built once on a database and then answers batches of queries with the top-k database ids
and their distances:

>>> engine = create_engine("popcount")
>>> engine.build(db_codes)                    # (N, B) uint8 packed codes   # doctest: +SKIP
>>> ids, dist = engine.search(query_codes, 100)  # (nq, 100) int64, (nq, 100) int32   # doctest: +SKIP

Engines (``ENGINES.names()``; the ``exact`` flag says whether results equal brute-force search):

================  =========  =======  ================================================================
spec              input      exact    what
================  =========  =======  ================================================================
``popcount``      binary     yes      the project's numpy kernel: XOR + ``np.bitwise_count`` + counting
                                      top-k
``BFlat``         binary     yes      faiss ``IndexBinaryFlat`` (brute force, heap top-k)
``hash-ball``     binary     yes      code → ids table (CSR) visited by Hamming balls of increasing
                                      radius (:mod:`benchmarks.search.hash_table`); sub-linear for
                                      K <= 16 and for clustered codes; up to 64 bits
``BHashTable``    binary     no       faiss ``IndexBinaryHash`` with ``b = K``: the buckets within flip
                                      radius 2 of the query (``BHashTablef<r>``: radius ``r``); up to
                                      64 bits
``BHash<m>``      binary     no       faiss ``IndexBinaryMultiHash``: multi-index hashing (Norouzi,
                                      Punjani and Fleet, "Fast Search in Hamming Space with Multi-Index
                                      Hashing", CVPR 2012) with ``m`` sub-tables of ``K // m`` bits;
                                      ``BHash<m>x<b>f<r>`` sets the bits per sub-table ``b`` and the
                                      flip radius ``r`` per sub-table (default 0)
``numpy-ip``      float32    yes      exact inner product by BLAS matrix product + exact top-k
``FlatIP``        float32    yes      faiss ``IndexFlatIP``
================  =========  =======  ================================================================

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
import re
from collections.abc import Callable
from typing import Any

from benchmarks.search.base import SearchEngine
from benchmarks.search.faiss_binary import FaissBinaryFlatEngine, FaissBinaryHashEngine, FaissMultiHashEngine
from benchmarks.search.float_ip import FaissFlatIPEngine, NumpyInnerProductEngine
from benchmarks.search.hash_table import HashBallEngine
from benchmarks.search.popcount import PopcountEngine
from medhash_datasets.registry import Registry, RegistryError

# ================================================================================================
# registry and spec strings
# ================================================================================================
ENGINES: Registry[Callable[..., SearchEngine]] = Registry("engine")
ENGINES.add("popcount", PopcountEngine, tags=("binary", "exact"))
ENGINES.add("BFlat", FaissBinaryFlatEngine, tags=("binary", "exact"))
ENGINES.add("hash-ball", HashBallEngine, tags=("binary", "exact"))
ENGINES.add("BHashTable", FaissBinaryHashEngine, tags=("binary", "approximate"))
for _m in (2, 4, 8):
    ENGINES.add(f"BHash{_m}", functools.partial(FaissMultiHashEngine, nhash=_m), tags=("binary", "approximate"))
ENGINES.add("numpy-ip", NumpyInnerProductEngine, tags=("float", "exact"))
ENGINES.add("FlatIP", FaissFlatIPEngine, tags=("float", "exact"))

#: One-line description per registered engine (shown by ``list engines`` through the ``description``
#: attribute set on each registered callable below).
ENGINE_DESCRIPTIONS: dict[str, str] = {
    "popcount": "exact Hamming search in numpy: XOR + np.bitwise_count + counting top-k",
    "BFlat": "exact Hamming search with faiss IndexBinaryFlat (brute force, per-query heap)",
    "hash-ball": "exact Hamming search by balls of increasing radius over a code -> ids table (K <= 64; "
                 "sub-linear for K <= 16 and clustered codes)",
    "BHashTable": "approximate Hamming search with faiss IndexBinaryHash on all K bits, buckets within radius 2 "
                  "(BHashTablef<r>: radius r)",
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
_BHASH_TABLE = re.compile(r"^BHashTablef(\d+)$")


def create_engine(spec: str, **params: Any) -> SearchEngine:
    """Instantiate the engine named by a spec string.

    Parameters
    ----------
    spec : str
        A registered name (``ENGINES.names()``), a parameterised multi-hash spec ``BHash<m>[x<b>][f<r>]``
        (``m`` sub-tables of ``b`` bits, flip radius ``r``), e.g. ``"BHash4x16f1"``, or a single-table hash
        spec ``BHashTablef<r>`` (flip radius ``r``), e.g. ``"BHashTablef3"``.
    **params
        Passed to the engine constructor (e.g. ``threads=2`` for ``popcount``).

    Raises
    ------
    RegistryError
        For an unknown spec (the message lists the registered names).
    """
    if spec in ENGINES:
        engine = ENGINES.get(spec)(**params)
    elif (table := _BHASH_TABLE.match(spec)) is not None:
        engine = FaissBinaryHashEngine(int(table.group(1)), **params)
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

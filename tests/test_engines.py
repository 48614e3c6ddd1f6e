"""Search engines (``benchmarks.search``) and the efficiency measurement (``benchmarks.search.study``).

Exact engines are checked against an independent brute force (unpacked ±1 codes, Hamming = (K - a·b)/2,
ranking by a full stable sort on (distance, id)); tie order by id on hand-made examples; approximate engines
through recall; memory figures against K/8·N and 4·d·N. Sizes are tiny: no timing is asserted here (speed
targets live in ``tests/benchmarks/`` and the ``efficiency`` command).
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.search.base import MISSING_HAMMING, sort_rows_by_distance_then_id
from benchmarks.search.faiss_binary import FaissMultiHashEngine
from benchmarks.search.popcount import PopcountEngine, topk_from_hamming
from benchmarks.search.registry import ENGINES, create_engine
from benchmarks.search.timing import hamming_to, recall_at_k
from medhash_datasets.registry import RegistryError

BINARY_EXACT = ("popcount", "BFlat")
FLOAT_EXACT = ("numpy-ip", "FlatIP")


# ---- independent references ------------------------------------------------------------------------
def brute_hamming(q_packed: np.ndarray, db_packed: np.ndarray, bits: int) -> np.ndarray:
    """Hamming distances from ±1 codes: (K - a·b) / 2 (evaluation spec), int64 (nq, nd)."""
    q = np.unpackbits(q_packed, axis=1, count=bits, bitorder="little").astype(np.int64) * 2 - 1
    d = np.unpackbits(db_packed, axis=1, count=bits, bitorder="little").astype(np.int64) * 2 - 1
    return (bits - q @ d.T) // 2


def brute_topk(dist: np.ndarray, k: int, descending: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Top-k per row by a full sort on (distance, id)."""
    n = dist.shape[1]
    ids = np.arange(n)
    out_ids, out_d = [], []
    for row in dist:
        order = np.lexsort((ids, -row if descending else row))[:k]
        out_ids.append(order)
        out_d.append(row[order])
    return np.array(out_ids, dtype=np.int64), np.array(out_d)


def tied_codes(n: int, n_bytes: int, rng: np.random.Generator, n_distinct: int = 40) -> np.ndarray:
    """Codes drawn from a few distinct values, so most distances tie."""
    distinct = rng.integers(0, 256, size=(n_distinct, n_bytes), dtype=np.uint8)
    return distinct[rng.integers(0, n_distinct, size=n)]


# ---- exact binary engines ---------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [8, 16, 24, 32, 48, 64, 128, 264])
def test_exact_binary_engines_match_brute_force_with_ties_by_id(bits: int) -> None:
    rng = np.random.default_rng(bits)
    n_bytes = bits // 8
    db = tied_codes(3000, n_bytes, rng)
    queries = np.concatenate([db[:5], rng.integers(0, 256, size=(7, n_bytes), dtype=np.uint8)])
    ref_ids, ref_d = brute_topk(brute_hamming(queries, db, bits), 50)
    for spec in BINARY_EXACT + (("hash-ball",) if bits <= 64 else ()):
        engine = create_engine(spec)
        engine.build(db)
        ids, dist = engine.search(queries, 50)
        assert ids.dtype == np.int64 and dist.dtype == np.int32 and ids.shape == (12, 50)
        np.testing.assert_array_equal(dist, ref_d, err_msg=f"{spec} distances at {bits} bits")
        np.testing.assert_array_equal(ids, ref_ids, err_msg=f"{spec} ids (tie order) at {bits} bits")


def test_popcount_tie_order_hand_worked() -> None:
    # bits (LSB first): A = 0b0000_0000, B = 0b0000_0011 (distance 2 from A), C = 0b0000_0001 (distance 1)
    a, b, c = 0x00, 0x03, 0x01
    db = np.array([[b], [a], [c], [a], [b], [a]], dtype=np.uint8)
    engine = create_engine("popcount")
    engine.build(db)
    ids, dist = engine.search(np.array([[a]], dtype=np.uint8), 4)
    assert ids.tolist() == [[1, 3, 5, 2]]  # the three A's by id, then C
    assert dist.tolist() == [[0, 0, 0, 1]]
    ids, dist = engine.search(np.array([[a]], dtype=np.uint8), 5)
    assert ids.tolist() == [[1, 3, 5, 2, 0]]  # of the two B's at distance 2, the lower id first
    assert dist.tolist() == [[0, 0, 0, 1, 2]]


def test_k_larger_than_database_pads_with_missing() -> None:
    db = np.array([[0b1], [0b0]], dtype=np.uint8)
    for spec in (*BINARY_EXACT, "hash-ball"):
        engine = create_engine(spec)
        engine.build(db)
        ids, dist = engine.search(np.array([[0]], dtype=np.uint8), 4)
        assert ids.tolist() == [[1, 0, -1, -1]], spec
        assert dist.tolist() == [[0, 1, MISSING_HAMMING, MISSING_HAMMING]], spec


def test_popcount_threaded_batch_equals_single_queries() -> None:
    rng = np.random.default_rng(3)
    db = tied_codes(5000, 4, rng, n_distinct=200)
    queries = rng.integers(0, 256, size=(9, 4), dtype=np.uint8)
    threaded = create_engine("popcount", threads=2)
    threaded.build(db)
    ids2, d2 = threaded.search(queries, 30)
    single = create_engine("popcount", threads=1)
    single.build(db)
    rows = [single.search(queries[i : i + 1], 30) for i in range(9)]
    np.testing.assert_array_equal(ids2, np.concatenate([r[0] for r in rows]))
    np.testing.assert_array_equal(d2, np.concatenate([r[1] for r in rows]))


def test_popcount_distances_equal_pm1_formula() -> None:
    rng = np.random.default_rng(11)
    db = rng.integers(0, 256, size=(500, 6), dtype=np.uint8)  # 48 bits -> three uint16 words
    q = rng.integers(0, 256, size=(1, 6), dtype=np.uint8)
    engine = PopcountEngine(threads=1)
    engine.build(db)
    np.testing.assert_array_equal(engine.distances(q[0]), brute_hamming(q, db, 48)[0])


def test_topk_from_hamming_sampled_threshold_is_exact() -> None:
    # N > THRESHOLD_SAMPLE, so the threshold is estimated from a strided sample; the few small distances
    # sit at odd positions the stride-2 sample never sees, forcing the retry path.
    n = 150_001
    dist = np.full(n, 9, dtype=np.uint8)
    dist[1:40:2] = 1  # 20 items at distance 1, all off the sample
    dist[1001:1200:2] = 3  # 100 items at distance 3
    dist[::7] = np.minimum(dist[::7], 5)
    for k in (1, 15, 20, 21, 100, 130, 5000):
        ids, d = topk_from_hamming(dist, k, max_distance=16)
        order = np.argsort(dist, kind="stable")[:k]
        np.testing.assert_array_equal(ids, order, err_msg=f"k={k}")
        np.testing.assert_array_equal(d, dist[order])


def test_topk_from_hamming_random_large() -> None:
    rng = np.random.default_rng(5)
    dist = rng.binomial(64, 0.5, size=300_000).astype(np.uint8)
    ids, d = topk_from_hamming(dist, 100, max_distance=64)
    order = np.argsort(dist, kind="stable")[:100]
    np.testing.assert_array_equal(ids, order)


# ---- float engines ------------------------------------------------------------------------------------
def test_float_engines_match_brute_force_and_order_ties_by_id() -> None:
    rng = np.random.default_rng(2)
    base = rng.standard_normal((60, 16)).astype(np.float32)
    db = base[rng.integers(0, 60, size=800)]  # duplicated rows: exactly tied scores
    queries = rng.standard_normal((6, 16)).astype(np.float32)
    scores = queries.astype(np.float64) @ db.T.astype(np.float64)
    ref_ids, _ = brute_topk(scores, 25, descending=True)
    for spec in FLOAT_EXACT:
        engine = create_engine(spec)
        engine.build(db)
        ids, vals = engine.search(queries, 25)
        assert vals.dtype == np.float32 and ids.shape == (6, 25)
        # tied groups (identical rows) must come out by id: compare per-row sets of (row content, id order)
        np.testing.assert_array_equal(ids, ref_ids, err_msg=spec)
        np.testing.assert_allclose(vals, np.take_along_axis(scores, ref_ids, 1), rtol=1e-5, atol=1e-5)


def test_float_engines_pad_when_k_exceeds_database() -> None:
    db = np.eye(3, dtype=np.float32)
    for spec in FLOAT_EXACT:
        engine = create_engine(spec)
        engine.build(db)
        ids, vals = engine.search(np.array([[0.0, 1.0, 0.5]], dtype=np.float32), 5)
        assert ids.tolist() == [[1, 2, 0, -1, -1]], spec
        assert vals[0, :3].tolist() == [1.0, 0.5, 0.0] and np.isneginf(vals[0, 3:]).all(), spec


# ---- approximate engines -------------------------------------------------------------------------------
def test_multihash_finds_every_neighbour_within_pigeonhole_radius() -> None:
    # With m sub-tables and flip radius 0, an item at full distance < m shares at least one whole substring
    # with the query (pigeonhole), so it is always found.
    rng = np.random.default_rng(8)
    queries = rng.integers(0, 256, size=(5, 8), dtype=np.uint8)
    near = []
    for q in queries:
        for _ in range(10):
            bits = np.unpackbits(q, bitorder="little")
            flip = rng.choice(64, size=rng.integers(0, 4), replace=False)  # distance 0..3 < m = 4
            bits[flip] ^= 1
            near.append(np.packbits(bits, bitorder="little"))
    far = rng.integers(0, 256, size=(2000, 8), dtype=np.uint8)
    db = np.concatenate([far[:1000], np.array(near), far[1000:]])
    engine = create_engine("BHash4")
    engine.build(db)
    assert engine.bits_per_table == 16 and not engine.exact
    ids, dist = engine.search(queries, 10)
    exact = create_engine("popcount")
    exact.build(db)
    ex_ids, ex_d = exact.search(queries, 10)
    assert ex_d.max() <= 3
    true_d = hamming_to(queries, db, ids)
    np.testing.assert_array_equal(true_d, dist)  # reported distances are the true ones
    assert recall_at_k(true_d, ids, ex_d, 10) == 1.0


def test_multihash_recall_below_one_for_random_codes() -> None:
    rng = np.random.default_rng(9)
    db = rng.integers(0, 256, size=(3000, 8), dtype=np.uint8)
    queries = rng.integers(0, 256, size=(20, 8), dtype=np.uint8)
    approx = create_engine("BHash4")
    approx.build(db)
    ids, dist = approx.search(queries, 10)
    exact = create_engine("BFlat")
    exact.build(db)
    _, ex_d = exact.search(queries, 10)
    true_d = hamming_to(queries, db, ids)
    np.testing.assert_array_equal(true_d[ids >= 0], dist[ids >= 0])
    r = recall_at_k(true_d, ids, ex_d, 10)
    assert 0.0 <= r < 0.5  # random 64-bit neighbours sit ~20 bits away: a 16-bit substring rarely matches
    # a flip radius of 4 per 16-bit table covers every item within distance 4*4+3 = 19 of the query
    wide = create_engine("BHash4f4")
    wide.build(db)
    wids, _ = wide.search(queries, 10)
    assert recall_at_k(hamming_to(queries, db, wids), wids, ex_d, 10) > r


def test_recall_at_k_hand_worked() -> None:
    exact_d = np.array([[0, 1, 2, 2]])
    # returned: distance 0 (hit), 2 (hit: ties with the exact 4th), 3 (miss), missing slot
    approx_ids = np.array([[4, 7, 9, -1]])
    approx_d = np.array([[0, 2, 3, -1]])
    assert recall_at_k(approx_d, approx_ids, exact_d, 4) == pytest.approx(0.5)


# ---- memory ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [16, 64])
def test_binary_memory_is_k_over_8_per_item(bits: int) -> None:
    n = 1000
    db = np.random.default_rng(0).integers(0, 256, size=(n, bits // 8), dtype=np.uint8)
    pop = create_engine("popcount")
    pop.build(db)
    assert pop.memory_bytes() == n * bits // 8  # exactly: ids are implicit row numbers
    flat = create_engine("BFlat")
    flat.build(db)
    assert n * bits // 8 <= flat.memory_bytes() <= n * bits // 8 + 256  # + the faiss header
    mh = create_engine("BHash4")
    mh.build(db)
    # faiss serialises codes + 4 tables whose ids are bit-packed in ceil(log2 N) = 10 bits each
    id_bytes = 4 * n * 10 / 8
    assert n * bits // 8 + id_bytes <= mh.memory_bytes() <= n * bits // 8 + id_bytes + 4 * 2 ** (bits // 4) * 8 + 512


def test_float_memory_is_4d_per_item() -> None:
    n, d = 700, 24
    db = np.random.default_rng(0).standard_normal((n, d)).astype(np.float32)
    ip = create_engine("numpy-ip")
    ip.build(db)
    assert ip.memory_bytes() == 4 * d * n
    fl = create_engine("FlatIP")
    fl.build(db)
    assert 4 * d * n <= fl.memory_bytes() <= 4 * d * n + 256


# ---- interface, registry, errors -----------------------------------------------------------------------
def test_registry_and_spec_strings() -> None:
    assert {"popcount", "BFlat", "BHash4", "numpy-ip", "FlatIP"} <= set(ENGINES.names())
    assert ENGINES.names(tag="exact") == sorted(["popcount", "BFlat", "hash-ball", "numpy-ip", "FlatIP"])
    e = create_engine("BHash2x8f1")
    assert isinstance(e, FaissMultiHashEngine) and (e.nhash, e.b, e.nflip) == (2, 8, 1) and e.name == "BHash2x8f1"
    assert create_engine("BHash4").name == "BHash4"
    with pytest.raises(RegistryError, match="valid engines: .*popcount"):
        create_engine("IVF100")


def test_engine_input_errors() -> None:
    pop = create_engine("popcount")
    with pytest.raises(RuntimeError, match="before build"):
        pop.search(np.zeros((1, 2), np.uint8), 1)
    with pytest.raises(ValueError, match="uint8"):
        pop.build(np.zeros((3, 2), np.int64))
    with pytest.raises(ValueError, match="2-D"):
        pop.build(np.zeros(8, np.uint8))
    pop.build(np.zeros((3, 2), np.uint8))
    with pytest.raises(ValueError, match=r"shape \(nq, 2\)"):
        pop.search(np.zeros((1, 4), np.uint8), 1)
    with pytest.raises(ValueError, match="k must be"):
        pop.search(np.zeros((1, 2), np.uint8), 0)
    ip = create_engine("numpy-ip")
    bad = np.ones((4, 3), np.float32)
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ip.build(bad)
    with pytest.raises(ValueError, match="do not fit"):
        create_engine("BHash4x32").build(np.zeros((5, 8), np.uint8))


def test_sort_rows_puts_missing_last() -> None:
    ids = np.array([[5, -1, 2, 9]])
    d = np.array([[3, MISSING_HAMMING, 3, 1]], dtype=np.int32)
    si, sd = sort_rows_by_distance_then_id(ids, d)
    assert si.tolist() == [[9, 2, 5, -1]] and sd.tolist() == [[1, 3, 3, MISSING_HAMMING]]


# ---- registry descriptions ------------------------------------------------------------------------
def test_every_registered_engine_has_a_one_line_description() -> None:
    from benchmarks.search.registry import ENGINE_DESCRIPTIONS

    assert set(ENGINE_DESCRIPTIONS) == set(ENGINES.names())
    for name in ENGINES.names():
        text = getattr(ENGINES.get(name), "description", "")
        assert text == ENGINE_DESCRIPTIONS[name] and "\n" not in text and len(text) > 20
        assert "partial" not in text.lower() and text.count("(") == text.count(")")
    assert "IndexBinaryMultiHash, 4 sub-tables" in ENGINES.get("BHash4").description

"""The ``hash-ball`` engine (exact Hamming balls over a code → ids table) and faiss ``IndexBinaryHash``.

Every exact result is compared item for item with the exhaustive popcount engine and with an independent
brute force (full stable sort on (distance, id)); hand-worked cases pin tie order, constant bits and the
fallback scan. No timing is asserted here: where hash-ball stops paying is printed by the ``efficiency``
command (README, "Efficiency").
"""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

from benchmarks.search.hash_table import HashBallEngine, code_keys, shell_masks, take_in_order
from benchmarks.search.registry import create_engine
from benchmarks.search.timing import hamming_to, recall_at_k


def brute(queries: np.ndarray, db: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by Hamming distance from unpacked bits, ties by id, padded with -1 (independent of the engines)."""
    qb = np.unpackbits(queries, axis=1, bitorder="little").astype(np.int64)
    db_bits = np.unpackbits(db, axis=1, bitorder="little").astype(np.int64)
    dist = (qb[:, None, :] != db_bits[None, :, :]).sum(axis=2)
    ids = np.full((len(queries), k), -1)
    out_d = np.full((len(queries), k), np.iinfo(np.int32).max)
    for i, row in enumerate(dist):
        order = np.lexsort((np.arange(len(row)), row))[:k]
        ids[i, : len(order)], out_d[i, : len(order)] = order, row[order]
    return ids, out_d


def assert_same_as_popcount(db: np.ndarray, queries: np.ndarray, k: int, **params) -> HashBallEngine:
    engine = HashBallEngine(**params)
    engine.build(db)
    ids, dist = engine.search(queries, k)
    ref = create_engine("popcount", threads=1)
    ref.build(db)
    ref_ids, ref_d = ref.search(queries, k)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(dist, ref_d)
    return engine


def test_hand_worked_tie_order_and_radius() -> None:
    # 8-bit codes (LSB first). Query 0x00. Items: 0x01 (d 1), 0x00 (d 0), 0x03 (d 2), 0x00 (d 0), 0x02 (d 1)
    db = np.array([[0x01], [0x00], [0x03], [0x00], [0x02]], dtype=np.uint8)
    engine = HashBallEngine()
    engine.build(db)
    ids, dist = engine.search(np.array([[0x00]], dtype=np.uint8), 4)
    assert ids.tolist() == [[1, 3, 0, 4]]  # radius 0 by id, then radius 1 by id (0 before 4)
    assert dist.tolist() == [[0, 0, 1, 1]]
    ids, dist = engine.search(np.array([[0x00]], dtype=np.uint8), 7)  # k > N: padded
    assert ids.tolist() == [[1, 3, 0, 4, 2, -1, -1]]
    assert dist[0, :5].tolist() == [0, 0, 1, 1, 2] and (dist[0, 5:] == np.iinfo(np.int32).max).all()
    assert engine.n_distinct == 4 and engine.varying_bits == 2  # only bits 0 and 1 vary


@pytest.mark.parametrize("bits", [8, 16, 24, 64])
def test_random_codes_identical_to_popcount_and_brute_force(bits: int) -> None:
    rng = np.random.default_rng(bits)
    db = rng.integers(0, 256, size=(3000, bits // 8), dtype=np.uint8)
    queries = np.concatenate([db[:3], rng.integers(0, 256, size=(6, bits // 8), dtype=np.uint8)])
    for k in (1, 17, 120):
        assert_same_as_popcount(db, queries, k)
    engine = HashBallEngine()
    engine.build(db[:400])
    ids, dist = engine.search(queries, 30)
    ref_ids, ref_d = brute(queries, db[:400], 30)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(dist, ref_d)


@pytest.mark.parametrize("bits", [16, 32])
def test_clustered_codes_with_duplicates_k_beyond_buckets_and_database(bits: int) -> None:
    # 25 distinct codes, each repeated ~160 times: k = 500 spans several whole buckets, k = 5000 > N
    rng = np.random.default_rng(7)
    distinct = rng.integers(0, 256, size=(25, bits // 8), dtype=np.uint8)
    db = distinct[rng.integers(0, 25, size=4000)]
    queries = np.concatenate([distinct[:4], rng.integers(0, 256, size=(4, bits // 8), dtype=np.uint8)])
    for k in (1, 100, 500, 5000):
        engine = assert_same_as_popcount(db, queries, k)
    assert engine.n_distinct == 25


def test_constant_bits_add_a_fixed_distance() -> None:
    # 12-bit codes in 2 bytes: bits 12..15 are padding (0); bits 8..11 are 1 in every item (dead bits)
    rng = np.random.default_rng(3)
    db = rng.integers(0, 256, size=(2000, 2), dtype=np.uint8)
    db[:, 1] = 0x0F
    queries = rng.integers(0, 256, size=(5, 2), dtype=np.uint8)
    queries[:, 1] = [0x00, 0x0F, 0x03, 0x0C, 0x05]  # 4, 0, 2, 2, 2 differences on the dead bits
    engine = assert_same_as_popcount(db, queries, 60)
    assert engine.varying_bits == 8
    _, dist = engine.search(queries, 1)
    ref_bits = np.unpackbits(queries[:, 1:], axis=1, bitorder="little")[:, :4]
    assert (dist[:, 0] >= 4 - ref_bits.sum(axis=1)).all()


def test_far_query_takes_the_fallback_scan() -> None:
    # 16-bit database packed near 0x0000; the query 0xFFFF is 12+ bits away, beyond the shells worth visiting
    rng = np.random.default_rng(5)
    bits = rng.random((3000, 16)) < 0.15
    db = np.packbits(bits, axis=1, bitorder="little")
    engine = assert_same_as_popcount(db, np.array([[0xFF, 0xFF], [0x00, 0x00]], dtype=np.uint8), 250)
    ids, dist = engine.search(np.array([[0xFF, 0xFF]], dtype=np.uint8), 1)
    assert dist[0, 0] > engine._max_shell_radius  # the answer lies beyond the last shell enumerated


@pytest.mark.parametrize("table_bits", [8, 16])
def test_direct_table_and_sorted_lookup_agree(table_bits: int) -> None:
    rng = np.random.default_rng(11)
    distinct = rng.integers(0, 256, size=(300, 2), dtype=np.uint8)
    db = distinct[rng.integers(0, 300, size=5000)]
    engine = assert_same_as_popcount(db, rng.integers(0, 256, size=(6, 2), dtype=np.uint8), 90, table_bits=table_bits)
    assert engine.mode == ("direct" if table_bits >= 16 else "sorted")


def test_memory_is_ids_keys_and_offsets_and_matches_tracemalloc() -> None:
    rng = np.random.default_rng(0)
    n = 5000
    db = rng.integers(0, 256, size=(n, 2), dtype=np.uint8)
    engine = HashBallEngine()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    engine.build(db)
    retained = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    u = len(np.unique(code_keys(db)))
    # int32 ids (4 N) + uint16 distinct codes (2 U) + int32 direct table of 2^16 + 1 offsets
    assert engine.memory_bytes() == 4 * n + 2 * u + 4 * (65536 + 1)
    assert engine.memory_bytes() <= retained <= engine.memory_bytes() + 16_384  # + small Python objects
    sorted_engine = HashBallEngine()
    sorted_engine.build(rng.integers(0, 256, size=(n, 8), dtype=np.uint8))  # 64 bits: U = n distinct codes
    assert sorted_engine.memory_bytes() == 4 * n + 8 * n + 4 * (n + 1)


def test_shell_masks_and_take_in_order() -> None:
    positions = np.array([0, 3, 5, 9])
    for r in range(5):
        masks = shell_masks(positions, r)
        assert masks.shape == (math.comb(4, r),) and len(set(masks.tolist())) == masks.shape[0]
        assert all(bin(m).count("1") == r and m & ~0b1000101001 == 0 for m in masks.tolist())
    ids = np.array([9, 4, 7, 1, 8, 2])
    dist = np.array([2, 1, 2, 3, 1, 2])
    got_ids, got_d = take_in_order(ids, dist, 4)
    assert got_ids.tolist() == [4, 8, 2, 7] and got_d.tolist() == [1, 1, 2, 2]
    assert take_in_order(ids, dist, 10)[0].tolist() == [4, 8, 2, 7, 9, 1]


def test_hash_ball_refuses_codes_over_64_bits() -> None:
    with pytest.raises(ValueError, match="up to 64 bits"):
        HashBallEngine().build(np.zeros((3, 9), np.uint8))
    with pytest.raises(ValueError, match="table_bits"):
        HashBallEngine(table_bits=40)


def test_faiss_index_binary_hash_is_a_fixed_radius_ball() -> None:
    rng = np.random.default_rng(2)
    db = rng.integers(0, 256, size=(4000, 2), dtype=np.uint8)
    queries = rng.integers(0, 256, size=(10, 2), dtype=np.uint8)
    exact = HashBallEngine()
    exact.build(db)
    ex_ids, ex_d = exact.search(queries, 20)
    table = create_engine("BHashTable")
    assert table.nflip == 2 and not table.exact and create_engine("BHashTablef4").nflip == 4
    table.build(db)
    ids, dist = table.search(queries, 20)
    true_d = hamming_to(queries, db, ids)
    np.testing.assert_array_equal(true_d[ids >= 0], dist[ids >= 0])
    assert dist[ids >= 0].max() <= 2  # nothing beyond the flip radius
    # 4000 random 16-bit codes: the 20th neighbour sits at distance 3-4, beyond radius 2 -> recall < 1
    assert recall_at_k(true_d, ids, ex_d, 20) < 1.0
    wide = create_engine("BHashTablef16")  # radius K: every bucket, so every item is seen
    wide.build(db)
    wids, wd = wide.search(queries, 20)
    np.testing.assert_array_equal(wd, ex_d)
    assert recall_at_k(hamming_to(queries, db, wids), wids, ex_d, 20) == 1.0

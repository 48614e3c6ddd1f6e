"""Counting-sort ranking pieces: bucket counts, stable order, score buckets, chunk sizing, hypergeometric CDFs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import hypergeom

from benchmarks.evaluation import ranking, tie_aware
from benchmarks.evaluation.ranking import bucket_stats, gather_rows, rows_per_chunk, score_buckets, stable_order


def test_bucket_stats_equal_direct_counts():
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 6, size=(4, 50)).astype(np.uint8)
    rel = rng.random((4, 50)) < 0.3
    gains = rng.integers(0, 4, size=(4, 50)).astype(np.float64)
    st = bucket_stats(keys, 6, rel, gains)
    for i in range(4):
        for b in range(6):
            sel = keys[i] == b
            assert st.n[i, b] == sel.sum() and st.r[i, b] == (sel & rel[i]).sum()
            assert st.g[i, b] == pytest.approx(gains[i, sel].sum())


def test_stable_order_is_key_then_position():
    rng = np.random.default_rng(1)
    keys = rng.integers(0, 5, size=(3, 40)).astype(np.uint8)
    order = stable_order(keys)
    for i in range(3):
        expected = sorted(range(40), key=lambda j, i=i: (keys[i, j], j))
        assert order[i].tolist() == expected
    np.testing.assert_array_equal(gather_rows(keys, order), np.sort(keys, axis=1))


def test_score_buckets_group_exact_ties_descending():
    scores = np.array([[0.5, 0.9, 0.5, 0.1, 0.9]])
    order, sorted_bucket = score_buckets(scores)
    assert order.tolist() == [[1, 4, 0, 2, 3]]
    assert sorted_bucket.tolist() == [[0, 0, 1, 1, 2]]


def test_rows_per_chunk_respects_budget_and_cache_cap():
    assert rows_per_chunk(1_000_000, 256.0) == max(1, min(256 * 2**20 // (64 * 1_000_000), ranking.CACHE_PAIRS // 1_000_000))
    assert rows_per_chunk(100, 1e-9) == 1  # never zero
    assert rows_per_chunk(100, 1.0) * 100 * ranking.BYTES_PER_PAIR <= 2**20
    with pytest.raises(ValueError, match="memory_budget_mb"):
        rows_per_chunk(10, 0)


@pytest.mark.parametrize("a, population, successes", [(0, 9, 4), (2, 9, 4), (3, 12, 7), (1, 5, 5), (4, 30, 11)])
def test_hypergeom_cdf_over_draws_matches_scipy(a, population, successes):
    got = tie_aware.hypergeom_cdf_over_draws(a, population, successes, population + 1)
    expected = hypergeom.cdf(a, population, successes, np.arange(population + 1))
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_hypergeom_pmf_matches_scipy_and_is_zero_outside_support():
    x = np.arange(-1, 8)
    got = tie_aware.hypergeom_pmf(x, 15, 6, 7)
    np.testing.assert_allclose(got, hypergeom.pmf(x, 15, 6, 7), atol=1e-14)
    assert got[0] == 0.0 and got[-1] == 0.0

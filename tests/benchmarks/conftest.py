"""Fixtures of the kernel benchmark suite (pytest-benchmark); see ``bench_kernels.py`` for how to run it.

Only ``bench_*.py`` files hold benchmarks, so the default test run (``test_*.py``) never collects them; this
conftest is loaded by that run too, so it imports nothing heavy at module level.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

#: Database size of the kernel benchmarks and targets (env ``MEDHASH_BENCH_N`` overrides, e.g. 100000).
BENCH_N = int(float(os.environ.get("MEDHASH_BENCH_N", "1e6")))


@pytest.fixture(scope="session", autouse=True)
def _single_thread():
    """One thread for faiss, BLAS and torch: ratios comparable on a shared 2-core machine."""
    import faiss
    import torch

    prev = faiss.omp_get_max_threads(), torch.get_num_threads()
    faiss.omp_set_num_threads(1)
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            yield
    except ImportError:
        yield
    faiss.omp_set_num_threads(prev[0])
    torch.set_num_threads(prev[1])


@pytest.fixture(scope="session")
def packed_db():
    """``bits -> (N, bits/8)`` uint8 uniform random packed codes (N = ``BENCH_N``), built on first use."""
    cache: dict[int, np.ndarray] = {}

    def get(bits: int) -> np.ndarray:
        if bits not in cache:
            rng = np.random.default_rng(bits)
            cache[bits] = rng.integers(0, 256, size=(BENCH_N, bits // 8), dtype=np.uint8)
        return cache[bits]

    return get


@pytest.fixture(scope="session")
def packed_queries():
    """``bits -> (100, bits/8)`` uint8 random packed query codes."""
    return lambda bits: np.random.default_rng(1000 + bits).integers(0, 256, size=(100, bits // 8), dtype=np.uint8)

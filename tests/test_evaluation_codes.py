"""Codes: binarisation, little-endian packing (faiss layout) and Hamming distance kernels."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.evaluation import codes
from benchmarks.evaluation.codes import code_bytes, hamming_distances, pack_bits, packed_words, unpack_bits
from benchmarks.evaluation.convention import binarize


def test_binarize_float_int_bool():
    h = np.array([[-0.5, 0.0, 0.3], [1.0, -1.0, -0.0]])
    np.testing.assert_array_equal(binarize(h), [[False, True, True], [True, False, True]])
    np.testing.assert_array_equal(binarize(np.array([[-1, 1]])), [[False, True]])
    np.testing.assert_array_equal(binarize(np.array([[0, 1]], dtype=np.uint8)), [[False, True]])
    b = np.array([[True, False]])
    assert binarize(b) is b


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.array([[0.1, np.nan]]), "NaN"),
        (np.array([[-1, 0, 1]]), "±1 or 0/1"),
        (np.array([[2, 0]]), "±1 or 0/1"),
        (np.zeros(3), r"shape \(3,\)"),
    ],
)
def test_binarize_rejects(bad, match):
    with pytest.raises(ValueError, match=match):
        binarize(bad)


def test_pack_layout_bit_t_in_byte_t_div_8():
    bits = np.zeros((1, 13), dtype=bool)
    bits[0, 0] = True  # byte 0, position 0 -> value 1
    bits[0, 9] = True  # byte 1, position 1 -> value 2
    bits[0, 12] = True  # byte 1, position 4 -> value 16
    packed = pack_bits(bits)
    assert packed.dtype == np.uint8 and packed.shape == (1, 2)
    assert packed.tolist() == [[1, 18]]
    np.testing.assert_array_equal(unpack_bits(packed, 13), bits)
    assert code_bytes(13) == 2 and code_bytes(64) == 8


def test_packed_words_masks_padding_bits():
    packed = np.array([[0xFF, 0xFF]], dtype=np.uint8)  # padding bits set on purpose
    w = packed_words(packed, bits=12)
    assert w.dtype == np.uint64 and w.shape == (1, 1)
    assert int(w[0, 0]) == (1 << 12) - 1


@pytest.mark.parametrize("k", [1, 7, 8, 13, 16, 63, 64, 65, 130, 300])
def test_hamming_equals_pm1_inner_product_formula(k):
    rng = np.random.default_rng(k)
    q = rng.random((9, k)) < 0.5
    db = rng.random((23, k)) < 0.5
    pm_q, pm_db = np.where(q, 1, -1), np.where(db, 1, -1)
    expected = (k - pm_q @ pm_db.T) // 2
    got = hamming_distances(pack_bits(q), pack_bits(db), bits=k)
    assert got.shape == (9, 23)
    assert got.dtype == (np.uint8 if k <= 255 else np.uint16)
    np.testing.assert_array_equal(got, expected)
    # same from pre-computed 64-bit words
    np.testing.assert_array_equal(hamming_distances(packed_words(pack_bits(q), k), packed_words(pack_bits(db), k), bits=k), expected)


def test_hamming_lookup_table_fallback_matches(monkeypatch):
    rng = np.random.default_rng(0)
    q, db = rng.random((5, 70)) < 0.5, rng.random((11, 70)) < 0.5
    fast = hamming_distances(pack_bits(q), pack_bits(db), bits=70)
    monkeypatch.delattr(np, "bitwise_count")
    slow = hamming_distances(pack_bits(q), pack_bits(db), bits=70)
    np.testing.assert_array_equal(fast, slow)


def test_hamming_chunking_inside_kernel(monkeypatch):
    rng = np.random.default_rng(1)
    q, db = rng.random((17, 40)) < 0.5, rng.random((31, 40)) < 0.5
    whole = hamming_distances(pack_bits(q), pack_bits(db), bits=40)
    monkeypatch.setattr(codes, "_KERNEL_PAIRS", 40)  # forces one query row per block
    np.testing.assert_array_equal(hamming_distances(pack_bits(q), pack_bits(db), bits=40), whole)


def test_hamming_rejects_mismatched_widths():
    with pytest.raises(ValueError, match=r"\(2, 2\).*\(3, 1\)"):
        hamming_distances(np.zeros((2, 2), np.uint8), np.zeros((3, 1), np.uint8))
    with pytest.raises(ValueError, match="need 2 bytes"):
        hamming_distances(np.zeros((2, 1), np.uint8), np.zeros((3, 1), np.uint8), bits=12)
